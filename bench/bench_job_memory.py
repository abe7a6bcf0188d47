"""Memory of the hub service with 10,000 job records in its store.

The store (SQLite, the schema migrated as the service does) is filled
through ``JobStore`` before the service starts: 10,000 records of 100
users in 10 projects, over the last 90 days, nearly all ended (as a
long-lived installation accumulates them; 20 still active, whose folders
are gone, so the service's start-up re-check marks them Failed). Then the
service process starts (``python -m jupyter_kubeai.service``, against a
fake hub API served here), and is made to serve the store: every page of
alice's list (500 per page), the state and project filters, and 50 single
jobs, three times over. Its resident memory (VmRSS) is read from /proc.
Baseline: the same service and requests with an empty job store.
Target: under 200 MB with 10,000 records.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aiohttp  # noqa: E402
from bench_job_status import ServiceProcess, fake_hub  # noqa: E402
from targets import Targets  # noqa: E402

from jupyter_kubeai.store.jobs import JobRecord, JobStore  # noqa: E402
from jupyter_kubeai.store.schema import open_engine, upgrade  # noqa: E402

RECORDS = 10_000
ACTIVE = 20
PROJECTS = ["vision", "nlp", "speech", "recsys", "robotics", "genomics", "climate", "finance", "search", "ads"]
USERS = ["alice", *(f"user{n}" for n in range(99))]
ENDED = ["Succeeded"] * 7 + ["Failed"] * 2 + ["Cancelled"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def make_record(n: int, rng: random.Random, share: Path) -> JobRecord:
    owner = USERS[n % len(USERS)]
    project = None if n % 5 == 0 else PROJECTS[rng.randrange(len(PROJECTS))]
    framework = rng.choice(["pytorch", "pytorch", "single", "tensorflow", "mpi"])
    workers = 1 if framework == "single" else rng.choice([1, 2, 4, 8])
    job_id = f"train-{n:05d}-{rng.randrange(36**6):06x}"
    job_dir = f"{share}/users/{owner}/.kubeai/jobs/{job_id}"
    created = time.time() - rng.uniform(0, 90 * 86400)
    state = "Running" if n < ACTIVE else rng.choice(ENDED)
    spec = {
        "job_id": job_id, "name": f"Train model {n}", "framework": framework, "notebook": f"projects/exp{n % 37}/train.ipynb",
        "workers": workers, "parameter_servers": 1 if framework == "tensorflow" else 0, "procs_per_worker": 1,
        "profile": "small", "gpus": 0, "image": "base", "image_ref": "python:3.11", "custom_image": "",
        "project": project, "parameters": {"epochs": rng.randrange(1, 50), "lr": rng.choice([0.1, 0.01, 0.001]),
                                           "dataset": f"s3://data/{project or owner}/set-{n % 13}"},
        "env": {"WANDB_PROJECT": project or owner}, "snapshot_dir": job_dir,
        "backend": {"command": ["python", "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={workers}",
                                "--master_addr=127.0.0.1", "--master_port=29500", "--log_dir=logs/ranks", f"{job_dir}/main.py"]},
    }
    reason = ""
    if state == "Failed":
        reason = "Exit code 1. Rank 0, last lines:\n" + "\n".join(
            f'  File "{job_dir}/main.py", line {i}, in <module>' for i in range(10)) + "\nRuntimeError: CUDA out of memory"
    return JobRecord(
        job_id=job_id, owner=owner, project=project, framework=framework, backend="local", state=state, reason=reason,
        job_dir=job_dir, spec=spec, gpus=0, created=created,
        started=created + 5 if state != "Pending" else None, finished=None if n < ACTIVE else created + rng.uniform(60, 86400),
    )


def fill(workdir: Path, records: int) -> float:
    """The service's store with ``records`` job records; seconds it took."""
    engine = open_engine(f"sqlite:///{workdir / 'kubeai.sqlite'}")
    upgrade(engine)
    store = JobStore(engine)
    rng = random.Random(7)
    t0 = time.monotonic()
    for n in range(records):
        store.add(make_record(n, rng, workdir / "share"))
    engine.dispose()
    return time.monotonic() - t0


async def exercise(service: ServiceProcess) -> tuple[int, int]:
    """Serve the store as users would; returns (jobs listed in all, single jobs read)."""
    headers = {"Authorization": "token alice-token"}
    listed = read = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        async def get(path: str):
            async with session.get(service.url + path) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    raise RuntimeError(f"GET {path}: {r.status} {body}")
                return body

        for _ in range(3):
            ids, offset = [], 0
            while True:
                page = (await get(f"api/jobs?limit=500&offset={offset}"))["jobs"]
                ids += [j["job_id"] for j in page]
                if len(page) < 500:
                    break
                offset += 500
            listed += len(ids)
            for query in ("state=Succeeded", "state=Failed&limit=500", "project=vision&limit=500", "state=Running"):
                listed += len((await get(f"api/jobs?{query}"))["jobs"])
            for job_id in ids[:: max(1, len(ids) // 50)][:50]:
                await get(f"api/jobs/{job_id}")
                read += 1
    return listed, read


async def measure(workdir: Path, hub_url: str, records: int) -> tuple[float, int, int]:
    workdir.mkdir()
    took = fill(workdir, records)
    if records:
        print(f"{records} records stored through JobStore in {took:.1f} s", flush=True)
    service = await ServiceProcess(workdir, hub_url, f"--LocalBackend.share_root={workdir / 'share'}",
                                   "--LocalBackend.local_gpus=0").start()
    try:
        listed, read = await exercise(service)
        return rss_mb(service.proc.pid), listed, read
    finally:
        service.stop()


async def run() -> None:
    _, hub_url = fake_hub(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        empty_mb, _, _ = await measure(tmp / "empty", hub_url, 0)
        full_mb, listed, read = await measure(tmp / "full", hub_url, RECORDS)
    print(f"hub service RSS with no job records (baseline): {empty_mb:.1f} MB")
    print(f"hub service RSS with {RECORDS} job records ({listed} list entries and {read} single jobs served): {full_mb:.1f} MB")
    print(f"ratio: {full_mb / empty_mb:.2f}")
    targets = Targets(__file__)
    targets.check(f"hub service RSS with {RECORDS} job records under 200 MB", full_mb < 200,
                  f"{full_mb:.1f} MB (baseline, no records: {empty_mb:.1f} MB)")
    targets.exit()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
