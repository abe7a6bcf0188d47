"""Job status under 200 concurrent pollers, and Kubernetes API requests per poll.

The hub service runs as its own process (``python -m jupyter_kubeai.service``,
as the hub starts it) against a fake hub API served by this process. 200
users of project ``vision`` each poll every 2 s (as the Jobs panel does
while a job is active, ``POLL_MS`` in src/jobs.ts), starting at random
offsets, over keep-alive connections (aiohttp, no client-side limit), for
``--duration`` seconds per phase. Besides latencies, the service process's
CPU time per request is read from /proc (a figure that does not depend on
how busy the machine is):

1. Local backend, one running job (a sleeping notebook): latency of
   ``GET api/jobs/{id}`` (authenticated, refreshed from the backend) against
   ``GET api/health`` (no authentication, no store) under the same load,
   phases interleaved. Target: p99 < 50 ms.
2. Kubernetes backend against the HTTP-level fake API (tests/kubefake.py,
   served by this process; it records every request): a running
   PyTorchJob with 2 pods. Kubernetes API requests per status poll with 20
   and with 200 pollers (watch-cache answers: target ~0, not growing with
   pollers), and the same latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import aiohttp  # noqa: E402
import nbformat  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402

from jupyter_kubeai.jobs.local_commands import free_port  # noqa: E402
from jupyter_kubeai.jobs.submission import prepare_job_folder  # noqa: E402

from fakehub import ACCESS, SERVICE_TOKEN, FakeHubState, make_fake_hub  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import Targets, add_argument  # noqa: E402

PREFIX = "/services/kubeai/"
CATALOG = {"images": [{"name": "base", "image": "python:3.11", "default": True}],
           "profiles": [{"name": "small", "default": True}]}
POLLERS = 200
INTERVAL = 2.0  # seconds between two polls of one poller


class ServiceProcess:
    """``python -m jupyter_kubeai.service`` with its state in ``workdir``, authenticating against ``hub_url``.

    ``prefix`` goes before the command (e.g. ``taskset -c 0``).
    """

    def __init__(self, workdir: Path, hub_url: str, *args: str, env: dict | None = None, prefix: list[str] | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PREFIX}"
        (workdir / "catalog.json").write_text(json.dumps(CATALOG))
        self.env = {
            **os.environ,
            "KUBEAI_STATE_DIR": str(workdir), "KUBEAI_INITIAL_CATALOG": str(workdir / "catalog.json"),
            "JUPYTERHUB_API_URL": hub_url + "/hub/api", "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.port}", "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([ACCESS]), "JUPYTERHUB_CLIENT_ID": "service-kubeai",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": PREFIX + "oauth_callback",
            **(env or {}),
        }
        self.args = args
        self.prefix = list(prefix or [])
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout: float = 60) -> "ServiceProcess":
        log = open(self.workdir / "service.log", "ab")
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "jupyter_kubeai.service", *self.args], env=self.env,
                                     cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("the service exited:\n" + (self.workdir / "service.log").read_text()[-3000:])
                try:
                    async with session.get(self.url + "api/health") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the service did not answer:\n" + (self.workdir / "service.log").read_text()[-3000:])
                await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU time the service process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def fake_hub(users: int) -> tuple[FakeHubState, str]:
    """A fake hub API (in this process) with alice and ``users`` pollers, all in project vision."""
    state = FakeHubState()
    state.add_user("alice", groups=["vision"], token="alice-token")
    for n in range(users):
        state.add_user(f"poller{n}", groups=["vision"], token=f"poller-token-{n}")
    port = free_port()
    HTTPServer(make_fake_hub(state)).listen(port, "127.0.0.1")
    return state, f"http://127.0.0.1:{port}"


async def request(session, method, url, token, body=None):
    async with session.request(method, url, headers={"Authorization": f"token {token}"},
                               data=None if body is None else json.dumps(body)) as r:
        return r.status, await r.json(content_type=None)


async def poll(url_for, pollers: int, duration: float) -> tuple[list[float], int]:
    """``pollers`` clients, each GET once per INTERVAL for ``duration`` s; latencies (s) and errors."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration

        async def one(n: int) -> None:
            nonlocal errors
            url, headers = url_for(n)
            due = loop.time() + random.uniform(0, INTERVAL)
            while due < end:
                await asyncio.sleep(max(0.0, due - loop.time()))
                t0 = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok
                due += INTERVAL

        await asyncio.gather(*(one(n) for n in range(pollers)))
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else float("nan")


def summary(name: str, latencies: list[float], errors: int) -> str:
    return (f"{name}: {len(latencies)} polls, p50 {pct(latencies, 50):.1f} ms, p99 {pct(latencies, 99):.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms, errors {errors}")


def job_poller(service: ServiceProcess, job_id: str):
    return lambda n: (service.url + f"api/jobs/{job_id}", {"Authorization": f"token poller-token-{n}"})


def health_poller(service: ServiceProcess):
    return lambda n: (service.url + "api/health", {})


async def measured(service: ServiceProcess, url_for, pollers: int, duration: float, into: dict) -> None:
    """One phase; adds its latencies, errors and the service's CPU seconds to ``into``."""
    cpu = service.cpu_seconds()
    latencies, errors = await poll(url_for, pollers, duration)
    into["latencies"] += latencies
    into["errors"] += errors
    into["cpu"] += service.cpu_seconds() - cpu


async def compare(service: ServiceProcess, job_id: str, duration: float, label: str,
                  targets: Targets) -> tuple[float, float]:
    """Status and health phases interleaved (two each) under 200 pollers; (p99 status, p99 health) in ms."""
    # Warm-up: every poller's token is looked up in the hub once (then cached, as in production).
    await poll(job_poller(service, job_id), POLLERS, INTERVAL)
    status, health = ({"latencies": [], "errors": 0, "cpu": 0.0} for _ in range(2))
    for _ in range(2):
        await measured(service, health_poller(service), POLLERS, duration, health)
        await measured(service, job_poller(service, job_id), POLLERS, duration, status)
    for name, got in (("GET api/health (baseline)", health), ("GET api/jobs/{id}", status)):
        print(summary(f"[{label}] {name}, {POLLERS} pollers", got["latencies"], got["errors"])
              + f", service CPU {got['cpu'] / len(got['latencies']) * 1000:.2f} ms per request")
    p99_status, p99_health = pct(status["latencies"], 99), pct(health["latencies"], 99)
    print(f"[{label}] p99 ratio status/health: {p99_status / p99_health:.2f}", flush=True)
    targets.check(f"[{label}] GET api/jobs/{{id}} p99 < 50 ms with {POLLERS} pollers", p99_status < 50,
                  f"p99 {p99_status:.1f} ms (health baseline {p99_health:.1f} ms, ratio {p99_status / p99_health:.2f})")
    targets.check(f"[{label}] no failed polls", not status["errors"] and not health["errors"],
                  f"{status['errors']} status and {health['errors']} health errors")
    return p99_status, p99_health


async def local_backend(tmp: Path, hub_url: str, duration: float, targets: Targets) -> None:
    share = tmp / "share"
    service = await ServiceProcess(tmp, hub_url, f"--LocalBackend.share_root={share}", "--LocalBackend.local_gpus=0",
                                   "--KubeAIService.mode=local").start()
    try:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\nprint('up', flush=True)\ntime.sleep(3600)")])
        prepare_job_folder(share / "users" / "alice", "status-bench", nb, {}, "sleep.ipynb")
        async with aiohttp.ClientSession() as session:
            code, job = await request(session, "POST", service.url + "api/jobs", "alice-token",
                                      {"job_id": "status-bench", "name": "sleep", "framework": "single", "project": "vision"})
            assert code == 201, job
            while job["state"] != "Running":
                await asyncio.sleep(0.1)
                code, job = await request(session, "GET", service.url + "api/jobs/status-bench", "alice-token")
            await compare(service, "status-bench", duration, "local", targets)
            code, job = await request(session, "POST", service.url + "api/jobs/status-bench/cancel", "alice-token", {})
            assert job["state"] == "Cancelled", job
    finally:
        service.stop()


async def kubernetes_backend(tmp: Path, hub_url: str, duration: float, targets: Targets) -> None:
    from kubefake import FakeKube

    ns = "jobs"
    async with FakeKube() as kube:
        kube.serve_kind("kubeflow.org/v1/pytorchjobs", "PyTorchJob")
        kube.write_kubeconfig(tmp / "kubeconfig")
        env = {"KUBECONFIG": str(tmp / "kubeconfig")}
        service = await ServiceProcess(tmp, hub_url, "--KubeAIService.mode=kubernetes",
                                       f"--KubernetesBackend.namespace={ns}", env=env).start()
        try:
            async with aiohttp.ClientSession() as session:
                code, job = await request(session, "POST", service.url + "api/jobs", "alice-token",
                                          {"job_id": "kube-bench", "name": "ddp", "framework": "pytorch",
                                           "workers": 2, "project": "vision"})
                assert code == 201, job
                play_operator(kube, ns, kube.get("kubeflow.org/v1/pytorchjobs", ns, "kube-bench"))
                deadline = time.monotonic() + 30
                while job["state"] != "Running":
                    assert time.monotonic() < deadline, job
                    await asyncio.sleep(0.1)
                    code, job = await request(session, "GET", service.url + "api/jobs/kube-bench", "alice-token")
            print(f"[kubernetes] job Running with replicas; API requests so far: {len(kube.calls)} "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(kube.tally().items()))})")
            per_poll, poll_errors = {}, 0
            for pollers in (20, POLLERS):
                before = len(kube.calls)
                latencies, errors = await poll(job_poller(service, "kube-bench"), pollers, duration)
                made = kube.tally(kube.calls[before:])
                per_poll[pollers] = sum(made.values()) / len(latencies)
                poll_errors += errors
                print(f"[kubernetes] {pollers} pollers: {len(latencies)} polls, {sum(made.values())} Kubernetes API "
                      f"requests ({dict(made) or 'none'}): {per_poll[pollers]:.4f} per poll; errors {errors}", flush=True)
            grows = per_poll[POLLERS] > per_poll[20]
            print(f"[kubernetes] requests per poll, 20 -> {POLLERS} pollers: {per_poll[20]:.4f} -> {per_poll[POLLERS]:.4f}")
            targets.check(f"[kubernetes] Kubernetes API requests per poll ~0 (< 0.01) with {POLLERS} pollers",
                          per_poll[POLLERS] < 0.01, f"{per_poll[POLLERS]:.4f}")
            targets.check(f"[kubernetes] requests per poll not growing from 20 to {POLLERS} pollers", not grows,
                          f"{per_poll[20]:.4f} -> {per_poll[POLLERS]:.4f}")
            targets.check("[kubernetes] no failed polls while counting requests", not poll_errors, f"{poll_errors} errors")
            await compare(service, "kube-bench", duration, "kubernetes", targets)
        finally:
            service.stop()


def play_operator(kube, ns: str, obj: dict) -> None:
    """What the training operator does: one pod per replica (the fake kubelet then runs them)."""
    for role, replica in obj["spec"]["pytorchReplicaSpecs"].items():
        for index in range(replica["replicas"]):
            template = replica["template"]
            labels = {**template["metadata"]["labels"], "training.kubeflow.org/replica-index": str(index),
                      "training.kubeflow.org/replica-type": role.lower()}
            kube.create("pods", {"metadata": {"name": f"{obj['metadata']['name']}-{role.lower()}-{index}", "labels": labels},
                                 "spec": template["spec"]}, ns)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kube.patch("kubeflow.org/v1/pytorchjobs", ns, obj["metadata"]["name"], {"status": {"conditions": [
        {"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": now} for t in ("Created", "Running")
    ], "startTime": now}}, subresource="status")


async def run(duration: float, which: str, targets: Targets) -> None:
    _, hub_url = fake_hub(POLLERS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if which in ("all", "local"):
            (tmp / "local").mkdir()
            await local_backend(tmp / "local", hub_url, duration, targets)
        if which in ("all", "kubernetes"):
            (tmp / "kube").mkdir()
            await kubernetes_backend(tmp / "kube", hub_url, duration, targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--backend", choices=["all", "local", "kubernetes"], default="all")
    add_argument(parser)
    args = parser.parse_args()
    targets = Targets.from_args(__file__, args)
    asyncio.run(run(args.duration, args.backend, targets))
    targets.exit()


if __name__ == "__main__":
    main()
