"""``LocalBackend``: jobs as supervised process groups on this machine (local mode)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from traitlets import Integer, Unicode, default

from ..errors import InvalidInput, NotFound
from ..jobs.local import LocalJobRunner
from ..jobs.local_commands import RANK_LOG_DIR, local_command
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.spec import JobSpec
from ..jobs.status import JobEvent, JobStatus
from ..jobs.tf_launch import ROLES as TF_ROLES
from ..local.share import LocalShare, default_share_root
from ..local.spawner import count_local_gpus
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
    """Jobs run in the owner's home on the local share, as the hub's own user."""

    name = "local"

    share_root = Unicode(
        config=True,
        help="""Root of the local share (as ``LocalKubeAISpawner.share_root``): job
        folders are ``<share_root>/users/<user>/.kubeai/jobs/<job-id>``.
        Default: ``$KUBEAI_STATE_DIR/share``.""",
    )

    @default("share_root")
    def _default_share_root(self):
        return default_share_root()

    local_gpus = Integer(
        config=True,
        help="""GPUs this machine offers to local jobs. Default: counted with ``nvidia-smi -L``.

        A job whose workers need more GPUs in all is refused with a message.
        """,
    )

    @default("local_gpus")
    def _default_local_gpus(self):
        return count_local_gpus()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runner = LocalJobRunner()

    def job_dir(self, owner: str, job_id: str) -> str:
        return str(LocalShare(self.share_root).user_dir(owner) / JOBS_FOLDER / job_id)

    async def submit(self, spec: JobSpec) -> dict:
        if spec.total_gpus > self.local_gpus:
            raise InvalidInput(
                f"This job needs {spec.total_gpus} GPU(s) but this machine has {self.local_gpus or 'none'}: "
                "pick a CPU size, or fewer workers."
            )
        command = local_command(spec)  # InvalidInput before anything starts
        if not Path(spec.script).is_file():
            raise InvalidInput(
                f"The job's snapshot {spec.script} is missing: submit from JupyterLab or with the "
                "kubeai command, which write the snapshot first."
            )
        await asyncio.to_thread(self.runner.start, Path(spec.job_dir), command, job_env(spec))
        return {"command": command}

    async def status(self, record: JobRecord) -> JobStatus:
        return await asyncio.to_thread(self.runner.status, Path(record.job_dir))

    async def cancel(self, record: JobRecord) -> bool:
        return await asyncio.to_thread(self.runner.cancel, Path(record.job_dir))

    def _rank_logs(self, record: JobRecord) -> dict[str, list[Path]]:
        """Replica -> its log files: ``rank-<n>`` (torchrun), ``chief-0``, ``worker-<n>``, ``ps-<n>`` (TensorFlow)."""
        ranks: dict[str, list[Path]] = {}
        for path in sorted((Path(record.job_dir) / RANK_LOG_DIR).rglob("std*.log")):
            if path.parent.name.isdigit():
                role = path.parent.parent.name
                role = role if role in TF_ROLES else "rank"
                ranks.setdefault(f"{role}-{path.parent.name}", []).append(path)
        return ranks

    async def replicas(self, record: JobRecord) -> list[str]:
        def order(replica: str):
            role, index = replica.rsplit("-", 1)
            return (TF_ROLES.index(role) if role in TF_ROLES else -1, int(index))

        return ["main", *sorted(self._rank_logs(record), key=order)]

    async def logs(self, record: JobRecord, replica: str) -> str:
        if replica == "main":
            return await asyncio.to_thread(self.runner.log, Path(record.job_dir))
        paths = self._rank_logs(record).get(replica)
        if not paths:
            raise NotFound(f"Job {record.job_id!r} has no replica {replica!r}.")
        return "".join(p.read_text(errors="replace") for p in paths)

    async def events(self, record: JobRecord) -> list[JobEvent]:
        """The supervisor's transitions: started, then how it ended."""
        status = await self.status(record)
        events = [JobEvent(record.created, "Normal", "Submitted", f"Submitted by {record.owner}.")]
        if status.started:
            events.append(JobEvent(status.started, "Normal", "Started", "Started on this machine."))
        if not status.active:
            kind = "Normal" if status.state == "Succeeded" else "Warning"
            message = status.reason or f"The job {status.state.lower()}."
            if status.exit_code is not None and status.state == "Failed":
                message = f"Exit code {status.exit_code}. {message}"
            events.append(JobEvent(status.finished or record.finished or record.created, kind, status.state, message))
        return events
