"""``LocalJobRunner``: jobs as local process groups, supervised from their job folder.

The runner keeps no state of its own: everything about a job is in its
folder (``state.json`` and ``logs/``, written by
:mod:`.supervise`), so a restarted hub service re-attaches by reading
them, and a job whose supervisor vanished (the machine rebooted, someone
killed it) is reported Failed with that reason, never left "Running".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..local.environment import user_code_env
from .logfiles import LogText, read_log
from .status import JobStatus
from .supervise import CANCEL_FILE, LOG_DIR, MAIN_LOG, STATE_FILE, tail


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


SUPERVISOR_PID_FILE = "supervisor.pid"


def _supervisor_pid(job_dir: Path) -> int | None:
    try:
        return int((job_dir / SUPERVISOR_PID_FILE).read_text())
    except (OSError, ValueError):
        return None


class LocalJobRunner:
    def start(self, job_dir: Path, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``command`` in ``job_dir`` under a detached supervisor."""
        job_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        (job_dir / STATE_FILE).write_text(json.dumps({"state": "Pending", "started": started}))
        with open(job_dir / "supervisor.log", "ab") as out:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "jupyter_kubeai.jobs.supervise", "--job-dir", str(job_dir), "--", *command],
                cwd=job_dir,
                # Not the service's token or settings: the job runs the user's code.
                env=user_code_env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: the job outlives whoever started it.
                start_new_session=True,
            )
        # For a cancel (or a vanishing) before the supervisor reports Running.
        (job_dir / SUPERVISOR_PID_FILE).write_text(str(supervisor.pid))

    def status(self, job_dir: Path) -> JobStatus:
        try:
            state = json.loads((job_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return JobStatus("Failed", reason="The job folder has no state: the job never started.")
        status = JobStatus(
            state=state["state"],
            reason=state.get("reason", ""),
            exit_code=state.get("exit_code"),
            started=state.get("started"),
            finished=state.get("finished"),
        )
        supervisor = _supervisor_pid(job_dir) if status.state == "Pending" else None
        if supervisor is not None and not pid_alive(supervisor):
            if (job_dir / CANCEL_FILE).exists():
                return JobStatus("Cancelled", reason="Cancelled by its owner before it started.",
                                 started=status.started, finished=time.time())
            return JobStatus("Failed", reason="The job's supervisor ended before the job started; see supervisor.log.",
                             started=status.started, finished=time.time())
        if status.state == "Running" and not pid_alive(state["pid"]):
            return JobStatus(
                "Failed",
                reason="The job's supervisor vanished (the machine restarted, or it was killed). "
                f"Last lines:\n{tail(job_dir / LOG_DIR / MAIN_LOG)}",
                started=status.started,
                finished=time.time(),
            )
        return status

    def wait(self, job_dir: Path, timeout: float = 60, poll: float = 0.1) -> JobStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_dir)
            if not status.active or time.monotonic() > deadline:
                return status
            time.sleep(poll)

    def cancel(self, job_dir: Path) -> bool:
        """Ask the supervisor to stop the job's whole process group; False if it was not running."""
        try:
            state = json.loads((job_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return False
        if state.get("state") == "Pending":
            # Not running yet: the supervisor checks this file before and after starting the job.
            (job_dir / CANCEL_FILE).touch()
        elif state.get("state") != "Running":
            return False
        pid = state.get("pid") or _supervisor_pid(job_dir)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return True

    def log(self, job_dir: Path, root: Path | None = None, **read) -> LogText:
        """A bounded part of the job's main log (``read``: see :meth:`.logfiles.LogFiles.read`; default its tail).

        ``root`` (default: the job folder) is where it is read from with no link followed below it.
        """
        root = job_dir if root is None else root
        return read_log(root, [(*job_dir.relative_to(root).parts, LOG_DIR, MAIN_LOG)], **read)
