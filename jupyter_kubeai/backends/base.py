"""``JobBackend``: the interface the hub service runs jobs through.

A backend starts, observes and stops jobs; it keeps no records of its own
(the :class:`~jupyter_kubeai.store.jobs.JobStore` does). The service picks
one by a ``Type`` trait; :func:`reconcile` brings the records in line with
what the backend sees, at start (re-attach) and whenever asked.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from traitlets.config import LoggingConfigurable
from traitlets.traitlets import MetaHasTraits

from ..jobs.spec import JobSpec
from ..jobs.status import JobStatus
from ..store.jobs import JobRecord, JobStore


class _BackendMeta(ABCMeta, MetaHasTraits):
    """Configurable and abstract: a backend missing a method cannot be created."""


class JobBackend(LoggingConfigurable, metaclass=_BackendMeta):
    """The interface: every method documents its contract; subclasses do the I/O."""

    name = "base"

    @abstractmethod
    async def submit(self, spec: JobSpec) -> None:
        """Start the job. Raise InvalidInput (nothing started) if it cannot run here."""

    @abstractmethod
    async def status(self, record: JobRecord) -> JobStatus:
        """What the job is doing now. A job the backend lost is Failed, with the reason."""

    @abstractmethod
    async def cancel(self, record: JobRecord) -> bool:
        """Stop every process/pod of the job; False if it was not running."""

    @abstractmethod
    async def replicas(self, record: JobRecord) -> list[str]:
        """The names whose logs :meth:`logs` can give (e.g. ``main``, ``rank-0``)."""

    @abstractmethod
    async def logs(self, record: JobRecord, replica: str) -> str:
        """One replica's log so far."""


async def reconcile(store: JobStore, backend: JobBackend) -> list[JobRecord]:
    """Bring every active record in line with the backend; returns the records that changed.

    Run at the service's start: running jobs are picked up again, and jobs
    that vanished while the service was away end Failed with the reason.
    """
    changed = []
    for record in store.active():
        if record.backend != backend.name:
            continue
        status = await backend.status(record)
        if status.state != record.state:
            changed.append(
                store.set_state(record.job_id, status.state, status.reason, started=status.started, finished=status.finished)
            )
    return changed
