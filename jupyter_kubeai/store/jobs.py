"""``JobStore``: the service's records of training jobs.

Lists are filtered here by the access rule of
:mod:`jupyter_kubeai.service.access` (the owner's jobs and their projects',
:meth:`JobStore.visible`). Records outlive the
jobs' processes and Kubernetes objects; deleting a record is explicit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from ..errors import Conflict, NotFound
from ..jobs.status import ACTIVE_STATES, STATES
from .tables import JobRow


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    owner: str
    project: str | None
    framework: str
    backend: str
    state: str
    reason: str
    job_dir: str
    spec: dict
    gpus: int
    created: float
    started: float | None = None
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_json(self) -> dict:
        return {**self.__dict__, "active": self.active}


def _record(row: JobRow) -> JobRecord:
    return JobRecord(**{name: getattr(row, name) for name in JobRecord.__dataclass_fields__})


class JobStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def add(self, record: JobRecord) -> JobRecord:
        with self.sessions.begin() as session:
            if session.get(JobRow, record.job_id) is not None:
                raise Conflict(f"A job with id {record.job_id!r} exists already.")
            session.add(JobRow(**record.__dict__))
        return record

    def get(self, job_id: str) -> JobRecord:
        with self.sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"There is no job {job_id!r}.")
            return _record(row)

    def visible(self, user: str | None, groups: tuple[str, ...], *, project: str | None = None,
                state: str | None = None, owner: str | None = None, limit: int = 100,
                offset: int = 0) -> list[JobRecord]:
        """Jobs ``user`` may see (their own, and their projects'; every job for ``user=None``, an admin), newest first."""
        query = select(JobRow)
        if user is not None:
            query = query.where(or_(JobRow.owner == user, JobRow.project.in_(groups or ("",))))
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if project is not None:
            query = query.where(JobRow.project == project)
        if state is not None:
            query = query.where(JobRow.state == state)
        query = query.order_by(JobRow.created.desc(), JobRow.job_id).limit(limit).offset(offset)
        with self.sessions() as session:
            return [_record(row) for row in session.scalars(query)]

    def active(self) -> list[JobRecord]:
        """Jobs the backends should be watching (for re-attaching at start)."""
        with self.sessions() as session:
            return [_record(r) for r in session.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE_STATES)))]

    def project_gpus_in_use(self, project: str | None, owner: str | None = None) -> int:
        """GPUs held by the project's active jobs (for its quota).

        ``project=None`` counts personal jobs, of ``owner`` alone if given.
        """
        where = [JobRow.state.in_(ACTIVE_STATES)]
        where.append(JobRow.project.is_(None) if project is None else JobRow.project == project)
        if owner is not None:
            where.append(JobRow.owner == owner)
        with self.sessions() as session:
            return int(session.scalar(select(func.coalesce(func.sum(JobRow.gpus), 0)).where(*where)))

    def count(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(JobRow)))

    def attach(self, job_id: str, details: dict) -> JobRecord:
        """Keep what the backend needs to find the job again (``spec["backend"]``)."""
        with self.sessions.begin() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"There is no job {job_id!r}.")
            row.spec = {**row.spec, "backend": details}
            return _record(row)

    def discard(self, job_id: str) -> None:
        """Remove the record of a submission that never started (its backend refused it)."""
        with self.sessions.begin() as session:
            row = session.get(JobRow, job_id)
            if row is not None:
                session.delete(row)

    def set_state(self, job_id: str, state: str, reason: str = "", *, started: float | None = None,
                  finished: float | None = None) -> JobRecord:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        with self.sessions.begin() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"There is no job {job_id!r}.")
            row.state, row.reason = state, reason
            if started is not None:
                row.started = started
            if state not in ACTIVE_STATES:
                row.finished = finished or row.finished or time.time()
            return _record(row)

    def delete(self, job_id: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"There is no job {job_id!r}.")
            if row.state in ACTIVE_STATES:
                raise Conflict(f"Job {job_id!r} is still {row.state.lower()}; cancel it first.")
            session.delete(row)
