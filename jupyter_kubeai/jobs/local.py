"""``LocalJobRunner``: jobs as local process groups, supervised from their job folder.

Two kinds of state, kept apart on purpose:

- the job folder (``state.json`` and ``logs/``, written by :mod:`.supervise`)
  says how the job went. It is in the owner's home, so the owner's code can
  rewrite it: it is read as a report, never as an order;
- the runner's own record (``<state_dir>/<job>-<hash>.json``, in the
  service's state folder) says which process supervises the job: its pid,
  start time and process group (:class:`~jupyter_kubeai.local.processes.ProcessIdentity`),
  and what the job reserved (CPUs, memory, GPU devices). Only that record is
  used to decide whether the job still runs and whom a cancel signals, and a
  process is signalled only while it still has the recorded identity.

A restarted hub service re-attaches by reading its records, and a job whose
supervisor vanished (the machine rebooted, someone killed it) is reported
Failed with that reason, never left "Running".
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import safefiles
from ..errors import InvalidInput
from ..local.environment import DEFAULT_ENV_ALLOWLIST, user_code_env
from ..local.processes import ProcessIdentity, alive, identify, read_record, signal_group, write_record
from .logfiles import LogText, read_log
from .status import JobStatus
from .supervise import CANCEL_FILE, LOG_DIR, MAIN_LOG, STATE_FILE, open_own, tail, write_state

#: A job folder's ``state.json`` bigger than this is not the supervisor's.
MAX_STATE_BYTES = 64 * 1024


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie (exited, not yet reaped) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def default_state_dir() -> Path:
    """``$KUBEAI_STATE_DIR/jobs``: the service's records of the job processes it started."""
    return Path(os.environ.get("KUBEAI_STATE_DIR", ".kubeai")) / "jobs"


def read_job_state(job_dir: Path) -> dict | None:
    """The job folder's ``state.json`` (written by the supervisor, rewritable by the job's code).

    None when it is missing, a link, not a regular file, too big or not a JSON object.
    """
    try:
        data = json.loads(safefiles.read_bytes(job_dir, STATE_FILE, limit=MAX_STATE_BYTES))
    except (safefiles.Missing, safefiles.Unsafe, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("state"), str) else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class LocalJobRunner:
    """Starts supervised jobs and keeps who supervises them in ``state_dir`` (not in the job folder)."""

    def __init__(self, state_dir: str | os.PathLike | None = None, env_allowlist=DEFAULT_ENV_ALLOWLIST):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        #: the service's environment variables that jobs inherit (:mod:`~jupyter_kubeai.local.environment`)
        self.env_allowlist = tuple(env_allowlist)
        #: record file name -> the record, for jobs started or seen by this runner
        self._records: dict[str, dict] = {}
        #: supervisor pid -> its Popen, to reap it once it exits (no zombie left behind)
        self._children: dict[int, subprocess.Popen] = {}
        #: job folders whose supervisor is being started (Pending, not recorded yet)
        self._launching: set[str] = set()

    # --- the runner's own records ------------------------------------------------------------------

    @staticmethod
    def _key(job_dir: Path) -> str:
        """The record's file name: the job id, and a hash of the whole folder path (ids of two homes may meet)."""
        folder = os.path.abspath(job_dir)
        return f"{Path(folder).name}-{hashlib.sha256(folder.encode()).hexdigest()[:16]}.json"

    def record(self, job_dir: Path) -> dict | None:
        """What this runner recorded when it started the job in ``job_dir`` (None: it did not)."""
        key = self._key(job_dir)
        if key not in self._records:
            data = read_record(self.state_dir / key)
            if data is None or data.get("job_dir") != os.path.abspath(job_dir):
                return None
            self._records[key] = data
        return self._records[key]

    def supervisor(self, job_dir: Path) -> ProcessIdentity | None:
        record = self.record(job_dir)
        return ProcessIdentity.from_json(record.get("supervisor")) if record else None

    def _supervising(self, job_dir: Path) -> bool:
        """Whether the job's recorded supervisor still runs (the same process, not a reused pid)."""
        self._reap()
        return alive(self.supervisor(job_dir))

    def records(self) -> list[dict]:
        """Every record in ``state_dir`` (a restarted service's way back to the jobs it started)."""
        try:
            names = sorted(p.name for p in self.state_dir.iterdir() if p.suffix == ".json")
        except OSError:
            return []
        out = []
        for name in names:
            data = self._records.get(name) or read_record(self.state_dir / name)
            if data is not None and isinstance(data.get("job_dir"), str):
                self._records[name] = data
                out.append(data)
        return out

    def running(self) -> list[dict]:
        """The records of jobs whose supervisor still runs: what holds this machine's resources now."""
        self._reap()
        live = []
        for data in self.records():
            if alive(ProcessIdentity.from_json(data.get("supervisor"))):
                live.append(data)
        return live

    def forget(self, job_dir: Path) -> None:
        """Remove the record of a job that has ended (its service record is being deleted)."""
        if self._supervising(job_dir):
            return
        key = self._key(job_dir)
        self._records.pop(key, None)
        (self.state_dir / key).unlink(missing_ok=True)

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    # --- jobs -----------------------------------------------------------------------------------------

    def start(self, job_dir: Path, command: list[str], env: dict[str, str] | None = None,
              reservation: dict | None = None) -> None:
        """Start ``command`` in ``job_dir`` under a detached supervisor, recorded with ``reservation``."""
        self._launching.add(os.path.abspath(job_dir))
        try:
            self._start(job_dir, command, env, reservation)
        finally:
            self._launching.discard(os.path.abspath(job_dir))

    def _start(self, job_dir: Path, command: list[str], env: dict[str, str] | None, reservation: dict | None) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        try:
            write_state(job_dir, state="Pending", started=started)
            out = os.fdopen(open_own(job_dir / "supervisor.log", append=True), "ab")
        except OSError as e:
            raise InvalidInput(f"The job folder {job_dir} cannot be written to (is supervisor.log a link, "
                               f"a FIFO or a folder?): {e.strerror or e}") from None
        with out:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "jupyter_kubeai.jobs.supervise", "--job-dir", os.path.abspath(job_dir),
                 "--", *command],
                cwd=job_dir,
                # Not the service's token or settings: the job runs the user's code.
                env=user_code_env(env, allowlist=self.env_allowlist),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session and process group: the job outlives whoever started it,
                # and the group is what identifies it as ours later.
                start_new_session=True,
            )
        self._children[supervisor.pid] = supervisor
        # Popen returns after the exec, so the new session exists; a supervisor already gone has no identity.
        identity = identify(supervisor.pid)
        record = {
            "job_dir": os.path.abspath(job_dir),
            "supervisor": identity.to_json() if identity else None,
            "started": started,
            "reservation": reservation or {},
        }
        write_record(self.state_dir / self._key(job_dir), record)
        self._records[self._key(job_dir)] = record

    def status(self, job_dir: Path) -> JobStatus:
        self._reap()  # a supervisor that ended is reaped at the next look, not left a zombie
        state = read_job_state(job_dir)
        if state is None:
            if self.record(job_dir) is None:
                return JobStatus("Failed", reason="The job folder has no state: the job never started.")
            state = {"state": "Pending"}  # rewritten or removed by the job: the supervisor decides below
        exit_code = state.get("exit_code")
        status = JobStatus(
            state=state["state"] if state["state"] in ("Pending", "Running", "Succeeded", "Failed", "Cancelled") else "Failed",
            reason=str(state.get("reason", ""))[:64 * 1024],
            exit_code=exit_code if type(exit_code) is int else None,
            started=_number(state.get("started")),
            finished=_number(state.get("finished")),
        )
        if self._supervising(job_dir):
            # The file may say it ended a moment before its supervisor exits, or because the job's code
            # rewrote it: either way the job's processes may still run and hold what they reserved.
            return status if status.active else JobStatus("Running", started=status.started)
        if not status.active or os.path.abspath(job_dir) in self._launching:
            return status  # (being started in another thread: not recorded yet)
        if self.record(job_dir) is None:
            return JobStatus("Failed", reason="This service has no record of the job's supervisor (its state "
                             "folder was lost or the job was started by an older version); it is not watched.",
                             started=status.started, finished=time.time())
        if status.state == "Pending":
            if (job_dir / CANCEL_FILE).exists():
                return JobStatus("Cancelled", reason="Cancelled by its owner before it started.",
                                 started=status.started, finished=time.time())
            return JobStatus("Failed", reason="The job's supervisor ended before the job started; see supervisor.log.",
                             started=status.started, finished=time.time())
        return JobStatus(
            "Failed",
            reason="The job's supervisor vanished (the machine restarted, or it was killed). "
            f"Last lines:\n{tail(job_dir / LOG_DIR / MAIN_LOG, root=job_dir)}",
            started=status.started,
            finished=time.time(),
        )

    def wait(self, job_dir: Path, timeout: float = 60, poll: float = 0.1) -> JobStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_dir)
            if not status.active or time.monotonic() > deadline:
                return status
            time.sleep(poll)

    def cancel(self, job_dir: Path) -> bool:
        """Ask the supervisor to stop the job's whole process group; False if it was not running.

        Only the supervisor this runner recorded is signalled, and only while it
        is still that process: nothing in the job folder names whom to signal.
        """
        active = self.status(job_dir).active
        state = read_job_state(job_dir)
        asked = False
        if state is None or state.get("state") == "Pending":
            # Maybe not running yet: the supervisor checks this file before and after starting the job.
            try:
                os.close(os.open(job_dir / CANCEL_FILE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644))
                asked = self._supervising(job_dir)  # else it ended already: nothing to stop
            except OSError:
                pass
        self._reap()
        # Signalled even if the state says it ended (the job's code may have written that): a live
        # supervisor means a live job. Its exit is what ends the job, not the file.
        signalled = signal_group(self.supervisor(job_dir), signal.SIGTERM, os.path.abspath(job_dir))
        return (signalled or asked) and active

    def log(self, job_dir: Path, root: Path | None = None, **read) -> LogText:
        """A bounded part of the job's main log (``read``: see :meth:`.logfiles.LogFiles.read`; default its tail).

        ``root`` (default: the job folder) is where it is read from with no link followed below it.
        """
        root = job_dir if root is None else root
        return read_log(root, [(*job_dir.relative_to(root).parts, LOG_DIR, MAIN_LOG)], **read)
