"""Processes local mode starts (job supervisors, model servers), known by an identity it can check.

A pid alone names a process only until it ends: the number is reused, and a
pid read from a file users' code can write (a job folder's ``state.json``)
may name anything, ``-1`` (``kill(-1)``: every process of the hub's user)
included. So the service keeps a :class:`ProcessIdentity` (pid, start time
in clock ticks since boot, process group) in its own state, written when it
starts the process, and signals only a process that still has that identity
and runs the expected program: a positive pid (never 0 or 1), the same start
time (``/proc/<pid>/stat`` field 22), the process group it was started in
(its own, ``start_new_session``), and a command line holding a marker (the
module it runs). Anything else is not ours and is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: A record bigger than this is not one we wrote.
MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_time: int  # clock ticks after boot (/proc/<pid>/stat field 22)
    pgid: int  # the process group it was started in (its own: pid == pgid)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data) -> ProcessIdentity | None:
        """The identity in ``data``, or None when it is not a well-formed one."""
        try:
            values = [data["pid"], data["start_time"], data["pgid"]]
        except (KeyError, TypeError):
            return None
        if not all(type(v) is int for v in values):
            return None
        return cls(*values)


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    # Field 2 (the command name) is in parentheses and may hold spaces or ')'.
    return text.rsplit(")", 1)[1].split()


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of live process ``pid`` (None when gone, a zombie, or not a real pid)."""
    if type(pid) is not int or pid <= 1:
        return None
    fields = _stat(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return ProcessIdentity(pid=pid, start_time=int(fields[19]), pgid=int(fields[2]))


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read(64 * 1024).decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def alive(identity: ProcessIdentity | None) -> bool:
    """Whether ``identity``'s process still runs as started: same pid and start time, in its own group.

    Enough to tell a live process from a reused pid (for status and accounting);
    :func:`is_ours` also checks the command line, before anything is signalled.
    """
    if identity is None or identity.pid <= 1 or identity.pgid <= 1 or identity.pgid != identity.pid:
        return False
    return identify(identity.pid) == identity


def is_ours(identity: ProcessIdentity | None, marker: str = "") -> bool:
    """:func:`alive`, and ``marker`` is one of the words of its command line."""
    if not alive(identity):
        return False
    if not marker:
        return True
    for _ in range(50):
        words = _cmdline(identity.pid)
        if words != [""]:
            return marker in words
        time.sleep(0.01)  # empty while the process is in the middle of its exec
    return False


def signal_group(identity: ProcessIdentity | None, sig: int, marker: str = "") -> bool:
    """Send ``sig`` to the process group of ``identity`` if it is still ours (:func:`is_ours`); whether it was sent."""
    if not is_ours(identity, marker):
        return False
    try:
        os.killpg(identity.pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group(identity: ProcessIdentity | None, marker: str = "", grace: float = 10.0, poll: float = 0.05) -> bool:
    """SIGTERM the group of a process that is ours, SIGKILL it after ``grace`` seconds; whether it was ours.

    Blocking: call it off the event loop.
    """
    if not signal_group(identity, signal.SIGTERM, marker):
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if identify(identity.pid) != identity:
            return True
        time.sleep(poll)
    try:
        os.killpg(identity.pgid, signal.SIGKILL)  # checked to be ours a moment ago, and its group is its own
    except (ProcessLookupError, PermissionError):
        pass
    return True


# --- the service's records of them ----------------------------------------------------------------

def write_record(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically (readers never see half a record), readable by the service only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_record(path: Path) -> dict | None:
    """A record written by :func:`write_record`; None when missing, not a regular file, too big or not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        try:
            data = json.loads(f.read(MAX_RECORD_BYTES + 1))
        except ValueError:
            return None
    return data if isinstance(data, dict) else None
