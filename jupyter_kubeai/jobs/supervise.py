"""``python -m jupyter_kubeai.jobs.supervise``: run one local job and record how it went.

Started detached (its own session) by :class:`~jupyter_kubeai.jobs.local.LocalJobRunner`,
so a job outlives the user's lab server and the hub service. It runs the
job's command in its own process group, sends the output to
``logs/main.log`` in the job folder, and keeps ``state.json`` there
(written atomically): ``Running`` with its pid, then ``Succeeded``,
``Failed`` (exit code and the last lines of the log) or ``Cancelled``. On
SIGTERM it stops the whole group, grandchildren included.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from .. import safefiles

STATE_FILE = "state.json"
#: Written by a cancel that came before the job was running; the supervisor then starts nothing.
CANCEL_FILE = "cancel-requested"
LOG_DIR = "logs"
MAIN_LOG = "main.log"
#: Where launchers that log per rank (torchrun --log_dir) put their rank logs.
RANK_LOGS = "logs/ranks"
TAIL_LINES = 20
GRACE_SECONDS = 10


def open_own(path: Path, *, append: bool = False) -> int:
    """A descriptor for writing the job folder's file ``path``, never through a link, never a FIFO.

    The folder is the job owner's: its code may have put a link there (into
    someone else's files) or a FIFO (a writer's open would block forever).
    A new file replaces whatever is there; ``append`` keeps a regular file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if append:
        fd = os.open(path, flags | os.O_APPEND, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{path} is not a regular file")
    else:
        try:
            os.unlink(path)  # a link or FIFO goes, not what it points to
        except FileNotFoundError:
            pass
        fd = os.open(path, flags | os.O_EXCL, 0o644)
    os.set_blocking(fd, True)
    return fd


def write_state(job_dir: Path, **state) -> None:
    tmp = job_dir / f".{STATE_FILE}.tmp"
    with os.fdopen(open_own(tmp), "w") as f:
        f.write(json.dumps(state))
    os.replace(tmp, job_dir / STATE_FILE)  # readers never see half a file


def tail(path: Path, lines: int = TAIL_LINES, root: Path | None = None) -> str:
    """The last ``lines`` lines of a log (from its last 64 KiB), "" when it is missing or not a regular file.

    Logs are written by users' code: read with no link followed (below
    ``root`` when given, else at the file itself), never a FIFO, never whole.
    """
    root = path.parent if root is None else root
    try:
        data = safefiles.read_bytes(root, path.relative_to(root).parts, limit=64 * 1024, tail=True)
    except (safefiles.Missing, safefiles.Unsafe, ValueError):
        return ""
    return b"\n".join(data.splitlines()[-lines:]).decode("utf-8", "replace")


def failure_lines(job_dir: Path, log_path: Path) -> str:
    """The failing rank's last lines where ranks log apart (torchrun), else the job's."""
    ranks = sorted(
        (job_dir / RANK_LOGS).rglob("stderr.log"),
        key=lambda p: (int(p.parent.name) if p.parent.name.isdigit() else 1 << 30, str(p)),
    )
    for path in ranks:
        text = tail(path, root=job_dir)
        if "Traceback" in text or "Error" in text:
            return f"Rank {path.parent.name}, last lines:\n{text}"
    return f"Last lines:\n{tail(log_path, root=job_dir)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_kubeai.jobs.supervise")
    parser.add_argument("--job-dir", required=True, type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    job_dir: Path = args.job_dir
    log_path = job_dir / LOG_DIR / MAIN_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    _become_subreaper()
    cancelled = False
    child: subprocess.Popen | None = None

    def on_term(signum, frame):
        nonlocal cancelled
        cancelled = True
        if child is not None:
            _signal_group(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if cancelled or (job_dir / CANCEL_FILE).exists():
        write_state(job_dir, state="Cancelled", exit_code=None, started=started, finished=time.time(),
                    reason="Cancelled by its owner before it started.")
        return 0

    try:
        log = os.fdopen(open_own(log_path, append=True), "ab", buffering=0)
    except OSError as e:
        write_state(job_dir, state="Failed", exit_code=None, started=started, finished=time.time(),
                    reason=f"The job's log {LOG_DIR}/{MAIN_LOG} cannot be written (a link or not a file?): {e}")
        return 1
    with log:
        try:
            child = subprocess.Popen(command, cwd=job_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            write_state(job_dir, state="Failed", exit_code=None, started=started, finished=time.time(),
                        reason=f"The job's command could not start: {e}")
            return 1
        write_state(job_dir, state="Running", pid=os.getpid(), pgid=child.pid, started=started)
        if cancelled or (job_dir / CANCEL_FILE).exists():  # asked while the child was starting
            cancelled = True
            _signal_group(child.pid, signal.SIGTERM)
        code = child.wait()
        # Ranks the command left behind (a crashed launcher's workers) go too.
        _stop_group(child.pid)

    finished = time.time()
    if cancelled:
        write_state(job_dir, state="Cancelled", exit_code=code, started=started, finished=finished, reason="Cancelled by its owner.")
    elif code == 0:
        write_state(job_dir, state="Succeeded", exit_code=0, started=started, finished=finished, reason="")
    else:
        write_state(job_dir, state="Failed", exit_code=code, started=started, finished=finished,
                    reason=f"Exited with code {code}. {failure_lines(job_dir, log_path)}")
    return 0


def _become_subreaper() -> None:
    """Adopt the job's orphaned processes, so they can be reaped (Linux).

    Without it, a rank whose parent died is re-parented to PID 1, which in
    some containers never reaps: its zombie would keep the group "alive".
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _stop_group(pgid: int) -> None:
    """SIGTERM the job's process group, SIGKILL what is left after the grace period."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        _reap()
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    time.sleep(0.1)
    _reap()


if __name__ == "__main__":
    sys.exit(main())
