"""``LocalBackend``: jobs as supervised process groups on this machine (local mode)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..errors import NotFound
from ..jobs.local import LocalJobRunner
from ..jobs.local_commands import RANK_LOG_DIR, local_command
from ..jobs.spec import JobSpec
from ..jobs.status import JobStatus
from ..store.jobs import JobRecord
from .base import JobBackend


def job_env(spec: JobSpec) -> dict[str, str]:
    return {
        "KUBEAI_JOB_ID": spec.job_id,
        "KUBEAI_JOB_DIR": spec.job_dir,
        "KUBEAI_OWNER": spec.owner,
        "KUBEAI_PROJECT": spec.project or "",
        "PYTHONUNBUFFERED": "1",
        **dict(spec.env),
    }


class LocalBackend(JobBackend):
    name = "local"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runner = LocalJobRunner()

    async def submit(self, spec: JobSpec) -> None:
        command = local_command(spec)  # InvalidInput before anything starts
        await asyncio.to_thread(self.runner.start, Path(spec.job_dir), command, job_env(spec))

    async def status(self, record: JobRecord) -> JobStatus:
        return await asyncio.to_thread(self.runner.status, Path(record.job_dir))

    async def cancel(self, record: JobRecord) -> bool:
        return await asyncio.to_thread(self.runner.cancel, Path(record.job_dir))

    def _rank_logs(self, record: JobRecord) -> dict[str, list[Path]]:
        ranks: dict[str, list[Path]] = {}
        for path in sorted((Path(record.job_dir) / RANK_LOG_DIR).rglob("std*.log")):
            if path.parent.name.isdigit():
                ranks.setdefault(f"rank-{path.parent.name}", []).append(path)
        return ranks

    async def replicas(self, record: JobRecord) -> list[str]:
        return ["main", *sorted(self._rank_logs(record), key=lambda r: int(r.split("-")[1]))]

    async def logs(self, record: JobRecord, replica: str) -> str:
        if replica == "main":
            return await asyncio.to_thread(self.runner.log, Path(record.job_dir))
        paths = self._rank_logs(record).get(replica)
        if not paths:
            raise NotFound(f"Job {record.job_id!r} has no replica {replica!r}.")
        return "".join(p.read_text(errors="replace") for p in paths)
