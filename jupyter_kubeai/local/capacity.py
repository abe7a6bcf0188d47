"""What this machine can run at once, in local mode: one accounting for CPUs, memory and GPUs.

On a cluster the scheduler (and Kueue or Volcano) keeps jobs within what the
nodes have. Locally the service does it: every running job holds a
:class:`Reservation` (the requests of its size, for each of its workers and
parameter servers, and its GPU devices), and a new job starts only when it
fits beside them and within the per-user and per-project limits.

:func:`check_fit` is a pure function of (capacity, running reservations,
request): it says whether the request fits now, and if not, why, naming what
is held and by whom. Refusing (409) is what the backend does with that today;
a queue can use the same answer to decide when a waiting job may start.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ..catalog.model import quantity_value
from ..jobs.spec import JobSpec

GI = 1024**3
#: Holders named in a refusal at most; the rest are counted.
SHOWN_HOLDERS = 8


@dataclass(frozen=True)
class Reservation:
    """What one job holds (or asks for) while it runs."""

    job_id: str
    owner: str
    project: str | None
    cpu: float  # cores
    memory: int  # bytes
    gpus: int = 0
    devices: tuple[int, ...] = ()  # the GPU devices given (running jobs only)

    def to_json(self) -> dict:
        return {**asdict(self), "devices": list(self.devices)}

    @classmethod
    def from_json(cls, data) -> Reservation | None:
        """A reservation read back from the service's own records; None when malformed."""
        try:
            devices = tuple(int(d) for d in data.get("devices", ()))
            project = data.get("project")
            return cls(job_id=str(data["job_id"]), owner=str(data["owner"]),
                       project=None if project is None else str(project), cpu=float(data["cpu"]),
                       memory=int(data["memory"]), gpus=int(data.get("gpus", 0)), devices=devices)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


@dataclass(frozen=True)
class Capacity:
    """What the machine offers, and the concurrency limits (-1: no limit)."""

    cpus: float
    memory: int
    gpus: int = 0
    max_jobs_per_user: int = -1
    max_jobs_per_project: int = -1


@dataclass(frozen=True)
class Fit:
    """The answer of :func:`check_fit`: ``ok``, else ``reason`` (and ``never``: it cannot fit even on an idle machine)."""

    ok: bool
    reason: str = ""
    never: bool = False
    holders: tuple[str, ...] = field(default=())


def request_for(spec: JobSpec) -> Reservation:
    """A job's reservation: its size's requests for each worker and parameter server, its GPUs.

    A size is what one worker gets (one pod on a cluster); the processes of a
    worker share it, as they share their pod.
    """
    replicas = spec.workers + spec.parameter_servers
    profile = spec.selection.profile
    return Reservation(
        job_id=spec.job_id, owner=spec.owner, project=spec.project,
        cpu=float(quantity_value(profile.cpu_request)) * replicas,
        memory=int(quantity_value(profile.memory_request)) * replicas,
        gpus=spec.total_gpus,
    )


def _cpus(value: float) -> str:
    return f"{value:g} CPU"


def _memory(value: int) -> str:
    return f"{value / GI:.3g} GiB"


def _holder(r: Reservation) -> str:
    held = [_cpus(r.cpu), _memory(r.memory)] + ([f"{r.gpus} GPU"] if r.gpus else [])
    return f"{r.owner}'s {r.job_id} ({', '.join(held)})"


def _named(reservations: Sequence[Reservation]) -> str:
    names = [_holder(r) for r in reservations[:SHOWN_HOLDERS]]
    if len(reservations) > SHOWN_HOLDERS:
        names.append(f"and {len(reservations) - SHOWN_HOLDERS} more")
    return "; ".join(names) or "none"


def check_fit(capacity: Capacity, running: Sequence[Reservation], request: Reservation) -> Fit:
    """Whether ``request`` fits beside ``running`` on a machine with ``capacity``; if not, why."""
    too_big = []
    if request.cpu > capacity.cpus:
        too_big.append(f"{_cpus(request.cpu)} but this machine has {capacity.cpus:g}")
    if request.memory > capacity.memory:
        too_big.append(f"{_memory(request.memory)} of memory but this machine has {_memory(capacity.memory)}")
    if request.gpus > capacity.gpus:
        too_big.append(f"{request.gpus} GPU(s) but this machine has {capacity.gpus or 'none'}")
    if too_big:
        return Fit(False, f"This job needs {'; and '.join(too_big)}: it can never run here. Pick a smaller "
                   "(or CPU) size, or fewer workers.", never=True)

    mine = [r for r in running if r.owner == request.owner]
    if 0 <= capacity.max_jobs_per_user <= len(mine):
        return Fit(False, f"{request.owner} already runs {len(mine)} job(s) on this machine, the most one user "
                   f"may run at once ({capacity.max_jobs_per_user}): {_named(mine)}. Wait for one to end, "
                   "or cancel one.", holders=tuple(r.job_id for r in mine))
    if request.project is not None:
        project = [r for r in running if r.project == request.project]
        if 0 <= capacity.max_jobs_per_project <= len(project):
            return Fit(False, f"Project {request.project!r} already runs {len(project)} job(s) on this machine, "
                       f"the most one project may run at once ({capacity.max_jobs_per_project}): "
                       f"{_named(project)}. Wait for one to end.", holders=tuple(r.job_id for r in project))

    short = []
    free_cpu = capacity.cpus - sum(r.cpu for r in running)
    if request.cpu > free_cpu + 1e-9:
        short.append(f"{_cpus(request.cpu)}, but only {max(free_cpu, 0):g} of this machine's {capacity.cpus:g} "
                     "are free")
    free_memory = capacity.memory - sum(r.memory for r in running)
    if request.memory > free_memory:
        short.append(f"{_memory(request.memory)} of memory, but only {_memory(max(free_memory, 0))} of this "
                     f"machine's {_memory(capacity.memory)} are free")
    free_gpus = capacity.gpus - sum(len(r.devices) or r.gpus for r in running)
    if request.gpus > free_gpus:
        short.append(f"{request.gpus} GPU(s), but only {max(free_gpus, 0)} of this machine's {capacity.gpus} "
                     "are free")
    if short:
        holders = sorted(running, key=lambda r: (-r.gpus if request.gpus > free_gpus else 0, -r.cpu, r.job_id))
        return Fit(False, f"This job needs {'; and '.join(short)}: running jobs (or cancelled ones still "
                   f"stopping) hold the others: {_named(holders)}. Wait for one to end, or cancel it; or pick "
                   "a smaller size.", holders=tuple(r.job_id for r in holders))
    return Fit(True)


def free_devices(gpus: int, running: Sequence[Reservation], count: int) -> tuple[int, ...]:
    """The first ``count`` GPU devices (of ``gpus``) that no running job holds."""
    held = {d for r in running for d in r.devices}
    return tuple(d for d in range(gpus) if d not in held)[:count]


def machine_memory() -> int:
    """This machine's memory in bytes (``MemTotal`` of ``/proc/meminfo``; 0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def machine_cpus() -> float:
    """CPUs this process may use (its affinity, else ``os.cpu_count()``)."""
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return float(os.cpu_count() or 1)
