"""``JobBackend``: the interface the hub service runs jobs through.

A backend starts, observes and stops jobs; it keeps no records of its own
(the :class:`~jupyter_kubeai.store.jobs.JobStore` does). The service picks
one by a ``Type`` trait (``KubeAIService.backend_class``); its
``JobManager`` brings the records in line with what the backend sees, at
start (re-attach), whenever the backend sees a change
(:meth:`JobBackend.wait_for_change`) and every few seconds; after each round
the backend may clean up long-finished jobs (:meth:`JobBackend.collect_garbage`).
"""

from __future__ import annotations

import asyncio
from abc import ABCMeta, abstractmethod
from collections.abc import AsyncIterator, Collection

from traitlets.config import LoggingConfigurable
from traitlets.traitlets import MetaHasTraits

from ..jobs.logfiles import DEFAULT_TAIL_BYTES, MAX_LOG_BYTES, LogText
from ..jobs.spec import JobSpec
from ..jobs.status import JobEvent, JobStatus
from ..store.jobs import JobRecord


class _BackendMeta(ABCMeta, MetaHasTraits):
    """Configurable and abstract: a backend missing a method cannot be created."""


class JobBackend(LoggingConfigurable, metaclass=_BackendMeta):
    """The interface: every method documents its contract; subclasses do the I/O."""

    name = "base"

    async def start(self) -> None:
        """Called once when the service starts (open connections, start watches)."""

    async def stop(self) -> None:
        """Called once when the service stops."""

    @abstractmethod
    def job_dir(self, owner: str, job_id: str) -> str:
        """The job folder (``<home>/.kubeai/jobs/<job_id>``) as the job's processes or pods see it."""

    @abstractmethod
    async def submit(self, spec: JobSpec) -> dict:
        """Start the job. Raise InvalidInput (nothing started) if it cannot run here.

        Returns what the backend needs to find the job again (e.g. the kind
        it was created as); it is kept in the record's ``spec["backend"]``.
        """

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
    async def logs(self, record: JobRecord, replica: str, *, tail: int | None = DEFAULT_TAIL_BYTES,
                   offset: int | None = None, length: int | None = None) -> LogText:
        """A bounded part of one replica's log (NotFound for a replica the job does not have).

        The last ``tail`` bytes, cut at a line start; or, with ``offset``, bytes
        ``[offset, offset + length)``. Never more than :data:`MAX_LOG_BYTES`, and
        never reading the whole log into memory. The :class:`LogText` says where
        the text starts (``offset``), where it ends (``end``) and the log's size now.
        """

    @abstractmethod
    async def events(self, record: JobRecord) -> list[JobEvent]:
        """What happened to the job, oldest first (scheduling problems included)."""

    async def cleanup(self, record: JobRecord) -> None:
        """Remove what is left of a finished job (its record is being deleted). Files stay."""

    async def wait_for_change(self, timeout: float) -> None:
        """Return when a job may have changed state (the backend saw it), or after ``timeout`` seconds.

        The service's reconcile loop waits on this between rounds, so a job's end is
        stored in its record as soon as the backend sees it. This default just sleeps.
        """
        await asyncio.sleep(timeout)

    async def collect_garbage(self, active: Collection[str]) -> list[str]:
        """Delete what is left of jobs that ended longer ago than the backend keeps them
        (never their folders); return their ids. Called after every reconcile round; a
        backend sweeps as often as it likes. This default has nothing to clean.

        ``active``: ids of jobs whose records are still Pending or Running. Nothing of theirs
        may be deleted: until the record holds how the job ended, what is left in the
        backend is the only witness of it.
        """
        return []

    async def follow_logs(self, record: JobRecord, replica: str, offset: int | None = None,
                          poll: float = 0.5) -> AsyncIterator[str]:
        """One replica's log from byte ``offset`` (default: its current tail), then what is appended,
        until the job has ended.

        This default polls :meth:`logs` for the bytes after the last read only
        (never re-reading the log); a backend with a native follow (Kubernetes,
        while the pod exists) overrides it.
        """
        if offset is None:
            first = await self.logs(record, replica)
            if first:
                yield str(first)
            offset = first.end
        while True:
            active = (await self.status(record)).active
            while True:  # everything appended so far, a bounded read at a time
                chunk = await self.logs(record, replica, offset=offset, length=MAX_LOG_BYTES)
                if chunk:
                    yield str(chunk)
                if chunk.end <= offset:
                    break
                offset = chunk.end
            if not active:
                return
            await asyncio.sleep(poll)
