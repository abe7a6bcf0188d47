"""Submit-to-first-line-of-user-code of a local PyTorch job (torchrun, 2 ranks).

A: the submission as the lab and the ``kubeai`` command do it: write the
   snapshot (notebook + converted script) into the home, ``POST api/jobs``
   to the hub service (in process, against a fake hub API), the service
   checks it and its LocalBackend starts the supervisor, which starts
   torchrun. Timed from the start of the submission until the marker
   printed by the notebook's first code line is in the logs of both ranks
   (``logs/ranks/.../<rank>/stdout.log``).
B: the baseline: the same converted script, run directly with the very
   command the service ran (taken from the job record; a fresh rendezvous
   port and folder), timed from ``Popen`` to the same marker in both ranks' logs.

Rounds are interleaved (A, B, A, B...) after one warm-up of each, so disk
caches and machine load hit both alike. Target: median A / median B <= 1.15.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import nbformat  # noqa: E402
from tornado.httpclient import AsyncHTTPClient  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from traitlets.config import Config  # noqa: E402

from jupyter_kubeai.jobs.local_commands import free_port  # noqa: E402
from jupyter_kubeai.jobs.submission import finish_submission, prepare_submission  # noqa: E402

from fakehub import ACCESS, SERVICE_TOKEN, FakeHubState, make_fake_hub  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import Targets, add_argument  # noqa: E402

MARKER = "KUBEAI-BENCH-FIRST-LINE"
RANKS = 2
NOTEBOOK = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell(f"print({MARKER!r}, flush=True)"),
    nbformat.v4.new_code_cell("import os\nprint('rank', os.environ.get('RANK'), 'of', os.environ.get('WORLD_SIZE'))"),
])
PREFIX = "/services/kubeai/"


def marker_ranks(folder: Path) -> int:
    """How many ranks' stdout logs (torchrun ``--log_dir``) show the marker."""
    seen = 0
    for path in (folder / "logs" / "ranks").rglob("stdout.log"):
        try:
            if MARKER in path.read_text(errors="replace"):
                seen += 1
        except FileNotFoundError:
            pass
    return seen


async def wait_marker(folder: Path, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while marker_ranks(folder) < RANKS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no marker from {RANKS} ranks in {folder} after {timeout}s")
        await asyncio.sleep(0.005)
    return time.monotonic()


def listen(app) -> str:
    port = free_port()
    HTTPServer(app).listen(port, "127.0.0.1")
    return f"http://127.0.0.1:{port}"


class Bench:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.share = tmp / "share"
        self.home = self.share / "users" / "alice"
        self.home.mkdir(parents=True)
        self.direct = tmp / "direct"
        self.direct.mkdir()
        self.http = AsyncHTTPClient(force_instance=True)
        self.steps: list[tuple[float, float]] = []  # per submission: (snapshot, POST answered) seconds

    def start_service(self) -> None:
        hub = FakeHubState()
        hub.add_user("alice", groups=["vision"], token="alice-token")
        hub_url = listen(make_fake_hub(hub))
        os.environ.update({
            "JUPYTERHUB_API_URL": hub_url + "/hub/api", "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
            "JUPYTERHUB_SERVICE_PREFIX": PREFIX, "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([ACCESS]),
            "JUPYTERHUB_CLIENT_ID": "service-kubeai", "JUPYTERHUB_OAUTH_CALLBACK_URL": PREFIX + "oauth_callback",
        })
        from jupyter_kubeai.service.app import KubeAIService

        self.service = KubeAIService(
            mode="local", db_url=f"sqlite:///{self.tmp / 'kubeai.sqlite'}",
            initial_catalog={"images": [{"name": "base", "image": "python:3.11", "default": True}],
                             "profiles": [{"name": "small", "default": True}]},
            config=Config({"LocalBackend": {"share_root": str(self.share), "local_gpus": 0}}),
        )
        self.service.catalog_store  # migrate and seed before timing anything
        self.url = listen(self.service.make_app()) + PREFIX

    async def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        response = await self.http.fetch(
            self.url + path, method=method, raise_error=False, headers={"Authorization": "token alice-token"},
            body=None if body is None else json.dumps(body),
        )
        return response.code, json.loads(response.body) if response.body else {}

    async def submitted(self) -> tuple[float, dict]:
        """A: seconds from the submission to the marker in both ranks' logs, and the job."""
        t0 = time.monotonic()
        content = json.loads(json.dumps(NOTEBOOK))  # as the editor sends it (sources as strings)
        job_id, body = prepare_submission(self.home, "bench.ipynb", content,
                                          {"framework": "pytorch", "workers": RANKS, "name": "bench"})
        t_snapshot = time.monotonic()
        status, job = await self.call("POST", "api/jobs", body)
        finish_submission(self.home, job_id, status, job)
        self.steps.append((t_snapshot - t0, time.monotonic() - t_snapshot))
        if status != 201:
            raise RuntimeError(f"submission refused ({status}): {job}")
        t1 = await wait_marker(Path(job["job_dir"]))
        await self.wait_ended(job_id)
        return t1 - t0, job

    async def wait_ended(self, job_id: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, job = await self.call("GET", f"api/jobs/{job_id}")
            if not job["active"]:
                if job["state"] != "Succeeded":
                    raise RuntimeError(f"job {job_id} {job['state']}: {job['reason']}")
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"job {job_id} did not end")

    async def direct_run(self, job: dict, n: int) -> float:
        """B: the same command, run by hand on a copy of the snapshot's script."""
        folder = self.direct / f"run-{n}"
        folder.mkdir()
        shutil.copy(Path(job["job_dir"]) / "main.py", folder / "main.py")
        command = [
            f"--master_port={free_port()}" if arg.startswith("--master_port=")
            else str(folder / "main.py") if arg.endswith("/main.py") else arg
            for arg in job["spec"]["backend"]["command"]
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        t0 = time.monotonic()
        proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        t1 = await wait_marker(folder)
        while proc.poll() is None:
            await asyncio.sleep(0.05)
        if proc.returncode != 0:
            raise RuntimeError(f"direct torchrun exited {proc.returncode}")
        return t1 - t0


async def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        bench.start_service()
        _, job = await bench.submitted()  # warm-up: imports, page cache of torch
        print("command:", " ".join(job["spec"]["backend"]["command"]))
        await bench.direct_run(job, 0)
        submit, direct = [], []
        for n in range(1, rounds + 1):
            a, job = await bench.submitted()
            b = await bench.direct_run(job, n)
            submit.append(a)
            direct.append(b)
            print(f"round {n}: submit {a:.2f} s, direct torchrun {b:.2f} s", flush=True)
        steps = bench.steps[1:]
    a, b = statistics.median(submit), statistics.median(direct)
    print(f"of the submission, median: snapshot (nbconvert) {statistics.median(s for s, _ in steps) * 1000:.0f} ms, "
          f"POST api/jobs answered {statistics.median(p for _, p in steps) * 1000:.0f} ms")
    print(f"submit-to-first-line, {RANKS} ranks, median of {rounds}: {a:.2f} s "
          f"(min {min(submit):.2f}, max {max(submit):.2f})")
    print(f"direct torchrun-to-first-line (baseline), median of {rounds}: {b:.2f} s "
          f"(min {min(direct):.2f}, max {max(direct):.2f})")
    print(f"ratio: {a / b:.2f}")
    targets = Targets(__file__)
    targets.check(f"submit-to-first-line / direct torchrun <= 1.15 ({RANKS} ranks, medians)", a / b <= 1.15,
                  f"{a:.2f} s / {b:.2f} s = {a / b:.2f}")
    targets.exit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    add_argument(parser)
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
