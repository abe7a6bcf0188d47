"""``LocalBackend``: jobs as supervised process groups on this machine (local mode)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from traitlets import Integer, Unicode, default

from .. import safefiles
from ..errors import Conflict, InvalidInput, NotFound
from ..jobs.local import LocalJobRunner
from ..jobs.local_commands import RANK_LOG_DIR, local_command
from ..jobs.logfiles import DEFAULT_TAIL_BYTES, LogText, read_log
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.spec import JobSpec
from ..jobs.status import JobEvent, JobStatus
from ..jobs.tf_launch import ROLES as TF_ROLES
from ..local.share import LocalShare, default_share_root
from ..local.spawner import count_local_gpus
from ..store.jobs import JobRecord
from .base import JobBackend

#: In a job folder: the GPUs (device numbers) the job was given, for re-attaching after a restart.
GPUS_FILE = "gpus.json"


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

        Each job gets its own devices (``CUDA_VISIBLE_DEVICES``), as a pod gets
        its GPU limit: a job whose workers need more GPUs in all than this is
        refused, and so is one needing more than running jobs leave free. A
        CPU size sees no GPU at all (``CUDA_VISIBLE_DEVICES`` empty).
        """,
    )

    @default("local_gpus")
    def _default_local_gpus(self):
        return count_local_gpus()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runner = LocalJobRunner()
        # job folder -> the devices its processes were given (while it runs)
        self._gpus: dict[str, tuple[int, ...]] = {}

    def _held_gpus(self) -> dict[int, str]:
        """Device -> the job folder of the running job holding it."""
        held = {}
        for job_dir, devices in list(self._gpus.items()):
            if not self.runner.status(Path(job_dir)).active:
                del self._gpus[job_dir]
                continue
            held.update({device: job_dir for device in devices})
        return held

    def _give_gpus(self, spec: JobSpec) -> str:
        """``CUDA_VISIBLE_DEVICES`` for the job: free devices, or Conflict when too few are free."""
        if not spec.total_gpus:
            return ""
        held = self._held_gpus()
        free = [device for device in range(self.local_gpus) if device not in held]
        if len(free) < spec.total_gpus:
            holders = sorted({Path(job_dir).name for job_dir in held.values()})
            raise Conflict(
                f"This job needs {spec.total_gpus} GPU(s), but only {len(free)} of this machine's {self.local_gpus} "
                f"are free: running jobs (or cancelled ones still stopping) hold the others ({', '.join(holders)}). "
                "Wait for one to end, or cancel it."
            )
        devices = tuple(free[:spec.total_gpus])
        self._gpus[spec.job_dir] = devices
        return ",".join(map(str, devices))

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
        env = job_env(spec)
        visible = self._give_gpus(spec)
        if self.local_gpus:
            env["CUDA_VISIBLE_DEVICES"] = visible  # the job's own devices, none for a CPU size
        try:
            if visible:
                folder = Path(spec.job_dir)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / GPUS_FILE).write_text(json.dumps([int(d) for d in visible.split(",")]))
            await asyncio.to_thread(self.runner.start, Path(spec.job_dir), command, env)
        except BaseException:
            self._gpus.pop(spec.job_dir, None)
            raise
        return {"command": command, **({"gpus": visible} if visible else {})}

    async def status(self, record: JobRecord) -> JobStatus:
        status = await asyncio.to_thread(self.runner.status, Path(record.job_dir))
        if status.active and record.job_dir not in self._gpus:
            # After a restart: the running job keeps the devices it was given.
            try:
                devices = json.loads((Path(record.job_dir) / GPUS_FILE).read_text())
                self._gpus[record.job_dir] = tuple(int(d) for d in devices)
            except (OSError, ValueError, TypeError):
                pass
        return status

    async def cancel(self, record: JobRecord) -> bool:
        return await asyncio.to_thread(self.runner.cancel, Path(record.job_dir))

    def _job_root(self, record: JobRecord) -> tuple[Path, tuple[str, ...]]:
        """The owner's home (trusted) and the job folder's names below it: logs are read from there
        with no link followed (the folder is the owner's code's to change)."""
        home = LocalShare(self.share_root).user_dir(record.owner)
        try:
            return home, Path(record.job_dir).relative_to(home).parts
        except ValueError:  # a record from before the share moved: its own folder is the root
            return Path(record.job_dir), ()

    def _rank_logs(self, record: JobRecord) -> dict[str, list[tuple[str, ...]]]:
        """Replica -> its log files (names below the home): ``rank-<n>`` (torchrun), ``chief-0``,
        ``worker-<n>``, ``ps-<n>`` (TensorFlow). Regular files only, found without following links."""
        root, job = self._job_root(record)
        ranks: dict[str, list[tuple[str, ...]]] = {}
        try:
            found = list(safefiles.walk_files(root, (*job, *RANK_LOG_DIR.split("/"))))
        except (safefiles.Missing, safefiles.Unsafe):
            return ranks
        for name, _ in found:
            parts = tuple(name.split("/"))
            if len(parts) >= 3 and parts[-1].startswith("std") and parts[-1].endswith(".log") and parts[-2].isdigit():
                role = parts[-3] if parts[-3] in TF_ROLES else "rank"
                ranks.setdefault(f"{role}-{parts[-2]}", []).append((*job, *RANK_LOG_DIR.split("/"), *parts))
        return ranks

    async def replicas(self, record: JobRecord) -> list[str]:
        def order(replica: str):
            role, index = replica.rsplit("-", 1)
            return (TF_ROLES.index(role) if role in TF_ROLES else -1, int(index))

        ranks = await asyncio.to_thread(self._rank_logs, record)
        return ["main", *sorted(ranks, key=order)]

    async def logs(self, record: JobRecord, replica: str, *, tail: int | None = DEFAULT_TAIL_BYTES,
                   offset: int | None = None, length: int | None = None) -> LogText:
        root, job = self._job_root(record)
        if replica == "main":
            return await asyncio.to_thread(self.runner.log, root.joinpath(*job), root,
                                           tail=tail, offset=offset, length=length)
        files = (await asyncio.to_thread(self._rank_logs, record)).get(replica)
        if not files:
            raise NotFound(f"Job {record.job_id!r} has no replica {replica!r}.")
        return await asyncio.to_thread(read_log, root, files, tail=tail, offset=offset, length=length)

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
