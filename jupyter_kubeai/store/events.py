"""``EventStore``: who did what to a job, a model or a service, and when.

The managers (:mod:`jupyter_kubeai.service.jobs`, :mod:`jupyter_kubeai.service.models`)
add one event per change they make, with the hub user who asked; an item's
detail shows its events oldest first. Rows are kept when the item is
deleted (an audit trail for admins); :meth:`EventStore.of` with ``since``
shows only those of the item that exists now, for names that are reused.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from .tables import EventRow

KINDS = ("job", "model", "service")
#: The most events shown in an item's detail (the newest; a busy service's history stays bounded).
SHOWN = 200
#: The longest detail kept.
DETAIL_CHARS = 1000


class EventStore:
    def __init__(self, engine: Engine):
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def add(self, kind: str, key: str, action: str, actor: str, detail: str = "") -> dict:
        """Record that ``actor`` did ``action`` to the ``kind`` item ``key``; returns the event."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind of item {kind!r}")
        row = EventRow(kind=kind, key=str(key), time=time.time(), actor=actor, action=action,
                       detail=detail[:DETAIL_CHARS])
        with self.sessions.begin() as session:
            session.add(row)
        return _event(row)

    def of(self, kind: str, key: str, since: float | None = None) -> list[dict]:
        """The item's events, oldest first (the newest :data:`SHOWN`); ``since``: from that time on."""
        query = select(EventRow).where(EventRow.kind == kind, EventRow.key == str(key))
        if since is not None:
            query = query.where(EventRow.time >= since)
        query = query.order_by(EventRow.time.desc(), EventRow.id.desc()).limit(SHOWN)
        with self.sessions() as session:
            return [_event(row) for row in reversed(session.scalars(query).all())]


def _event(row: EventRow) -> dict:
    return {"time": row.time, "actor": row.actor, "action": row.action, "detail": row.detail}
