"""``LocalBackend``: jobs as supervised process groups on this machine (local mode).

Jobs share the machine the way pods share a cluster's nodes: each running
job reserves its size's CPU and memory requests (per worker and parameter
server) and its own GPU devices, and a submission that does not fit beside
the running jobs, or beyond the per-user and per-project limits, is refused
with 409 naming what is held and by whom (:mod:`jupyter_kubeai.local.capacity`).
The reservations live in the runner's records in the service's state folder,
so a restarted service still counts the jobs that kept running.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from traitlets import Float, Integer, Unicode, default, validate

from .. import safefiles
from ..catalog.model import quantity_value
from ..errors import Conflict, InvalidInput, NotFound
from ..jobs.local import LocalJobRunner
from ..jobs.local_commands import RANK_LOG_DIR, local_command
from ..jobs.logfiles import DEFAULT_TAIL_BYTES, LogText, read_log
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.spec import JobSpec
from ..jobs.status import JobEvent, JobStatus
from ..jobs.tf_launch import ROLES as TF_ROLES
from ..local.capacity import Capacity, Reservation, check_fit, free_devices, machine_cpus, machine_memory, request_for
from ..local.environment import env_allowlist_trait
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

    state_dir = Unicode(
        config=True,
        help="""Where the service records the processes of the jobs it started (pid, start time,
        process group) and what each reserved. Never in a job folder: users' code can write
        those, and a pid read from there could name any process. Default: ``$KUBEAI_STATE_DIR/jobs``.""",
    )

    @default("state_dir")
    def _default_state_dir(self):
        return os.path.join(os.environ.get("KUBEAI_STATE_DIR", ".kubeai"), "jobs")

    env_allowlist = env_allowlist_trait("jobs")

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

    local_cpus = Float(
        config=True,
        help="""CPUs this machine offers to local jobs. Default: the CPUs this service may use.

        Each running job reserves its size's ``cpu_request`` for each worker and
        parameter server (the processes of a worker share it); a job that does
        not fit beside the running ones is refused (409) with what holds the rest.
        """,
    )

    @default("local_cpus")
    def _default_local_cpus(self):
        return machine_cpus()

    local_memory = Unicode(
        "",
        config=True,
        help="""Memory this machine offers to local jobs, a Kubernetes quantity (``"16Gi"``).
        Default (empty): ``MemTotal`` of ``/proc/meminfo``. Reserved like ``local_cpus``,
        with the sizes' ``memory_request``.""",
    )

    @validate("local_memory")
    def _validate_local_memory(self, proposal):
        value = proposal["value"].strip()
        if value:
            try:
                quantity_value(value)
            except ValueError:
                raise ValueError(f"LocalBackend.local_memory must be a quantity such as 16Gi, not {value!r}") from None
        return value

    max_jobs_per_user = Integer(
        8,
        config=True,
        help="""Jobs one user may run at once on this machine (-1: no limit). A submission beyond it is refused (409).""",
    )

    max_jobs_per_project = Integer(
        16,
        config=True,
        help="""Jobs of one project (hub group) that may run at once on this machine (-1: no limit).
        Personal jobs count only against ``max_jobs_per_user``.""",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runner = LocalJobRunner(self.state_dir, self.env_allowlist)
        #: job folder -> what a submission being started holds (until the runner has recorded it)
        self._starting: dict[str, Reservation] = {}

    @property
    def capacity(self) -> Capacity:
        memory = int(quantity_value(self.local_memory)) if self.local_memory else machine_memory()
        return Capacity(cpus=self.local_cpus, memory=memory, gpus=self.local_gpus,
                        max_jobs_per_user=self.max_jobs_per_user, max_jobs_per_project=self.max_jobs_per_project)

    def reservations(self) -> list[Reservation]:
        """What the running jobs (and the submissions being started) hold now."""
        held = dict(self._starting)
        for record in self.runner.running():
            reservation = Reservation.from_json(record.get("reservation"))
            if reservation is not None:
                held.setdefault(record["job_dir"], reservation)
        return list(held.values())

    def _reserve(self, spec: JobSpec) -> Reservation:
        """Hold what ``spec`` needs (GPU devices included), or refuse: Conflict now, InvalidInput never."""
        request = request_for(spec)
        running = self.reservations()
        fit = check_fit(self.capacity, running, request)
        if not fit.ok:
            raise (InvalidInput if fit.never else Conflict)(fit.reason)
        devices = free_devices(self.local_gpus, running, spec.total_gpus)
        reservation = Reservation(**{**request.to_json(), "devices": devices})
        self._starting[os.path.abspath(spec.job_dir)] = reservation
        return reservation

    def job_dir(self, owner: str, job_id: str) -> str:
        return str(LocalShare(self.share_root).user_dir(owner) / JOBS_FOLDER / job_id)

    async def submit(self, spec: JobSpec) -> dict:
        command = local_command(spec)  # InvalidInput before anything starts
        if not Path(spec.script).is_file():
            raise InvalidInput(
                f"The job's snapshot {spec.script} is missing: submit from JupyterLab or with the "
                "kubeai command, which write the snapshot first."
            )
        env = job_env(spec)
        # Checked and held with no await in between: two submissions cannot both take the last CPU.
        # (It reads the service's own small records and /proc, which never block.)
        reservation = self._reserve(spec)
        visible = ",".join(map(str, reservation.devices))
        if self.local_gpus:
            env["CUDA_VISIBLE_DEVICES"] = visible  # the job's own devices, none for a CPU size
        try:
            await asyncio.to_thread(self.runner.start, Path(spec.job_dir), command, env, reservation.to_json())
        finally:
            self._starting.pop(os.path.abspath(spec.job_dir), None)
        return {"command": command, **({"gpus": visible} if visible else {})}

    async def status(self, record: JobRecord) -> JobStatus:
        return await asyncio.to_thread(self.runner.status, Path(record.job_dir))

    async def cancel(self, record: JobRecord) -> bool:
        return await asyncio.to_thread(self.runner.cancel, Path(record.job_dir))

    async def cleanup(self, record: JobRecord) -> None:
        """Forget the finished job's process record (its folder stays)."""
        await asyncio.to_thread(self.runner.forget, Path(record.job_dir))

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
