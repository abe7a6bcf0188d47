"""Reading a job folder: its metrics and its files, for the Jobs panel.

Two readers use this: the lab extension (the user's own jobs, in their own
home) and the hub service (a teammate's project job, read from the owner's
folder on the share). The folder is written by the user's code, so nothing
here follows a symbolic link: a link in a job folder could otherwise point
the service, which sees the whole share, at another user's files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import InvalidInput, NotFound
from .metrics import METRICS_FILE, read_metrics

#: At most this many files are listed (a job that writes checkpoints every step).
MAX_FILES = 1000


def metric_points(folder: Path) -> list[dict]:
    """Flat points for charting: ``{"step", "time", "<metric>": value, ...}``."""
    path = folder / METRICS_FILE
    if path.is_symlink():
        return []
    return [{**r.get("values", {}), "step": r.get("step"), "time": r.get("time")} for r in read_metrics(path)]


def list_files(folder: Path, limit: int = MAX_FILES) -> list[dict]:
    """The folder's regular files (not hidden ones, not through links): name (relative), size, modified."""
    out: list[dict] = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(top) / name
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            out.append({"name": str(path.relative_to(folder)), "size": info.st_size, "modified": info.st_mtime})
            if len(out) >= limit:
                return out
    return out


def open_file(folder: Path, name: str):
    """Open ``name`` (relative to ``folder``) for reading, refusing links and paths outside it.

    Returns a binary file object; the caller closes it.
    """
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise InvalidInput(f"{name!r} is not a file of the job folder.")
    # Each step opened without following links, from the folder down.
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise NotFound("The job folder is not there.") from None
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    except OSError:  # missing, not a folder, or a link on the way (ELOOP)
        raise NotFound(f"The job folder has no file {name!r}.") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise NotFound(f"The job folder has no file {name!r}.")
    return os.fdopen(file_fd, "rb")


def inside(folder: Path, root: Path) -> bool:
    """Whether ``folder``, links resolved, is ``root`` or below it (a user's ``.kubeai`` may be a link)."""
    try:
        return folder.resolve(strict=True).is_relative_to(root.resolve(strict=True))
    except OSError:
        return False
