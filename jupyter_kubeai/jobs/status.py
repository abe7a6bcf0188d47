"""``JobStatus``: what a job is doing, as any backend reports it."""

from __future__ import annotations

from dataclasses import dataclass

#: States in which a job still holds resources.
ACTIVE_STATES = ("Pending", "Running")
STATES = ("Pending", "Running", "Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class JobStatus:
    state: str  # one of STATES
    reason: str = ""  # for Failed: what happened, with the failing replica's last lines
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job, worth showing (e.g. ``Unschedulable``)."""

    time: float  # seconds since the epoch
    type: str  # "Normal" or "Warning", as in Kubernetes events
    reason: str  # one CamelCase word: Created, Started, Unschedulable, Failed, ...
    message: str
    source: str = ""  # the replica or object it is about ("" for the job)

    def to_json(self) -> dict:
        return dict(self.__dict__)
