"""Reading files a user can write, from a process that can read more than that user.

The hub service sees the whole share and the server extension runs next to the
user's own code; both read files that user code wrote (metrics, logs, outputs,
a job's state). Such a file may be swapped for something meant to hurt the
reader:

- a symbolic link, at the file or at any folder on the way, into another
  user's home: every name below a trusted root is opened with ``O_NOFOLLOW``
  through the descriptor of the folder above it, never by a path string;
- a FIFO, a device (``/dev/zero``), a socket: opened with ``O_NONBLOCK`` (a
  FIFO with no writer would otherwise block ``open`` forever) and refused
  after ``fstat`` unless it is a regular file;
- a huge (sparse) file: reads are capped, and readers of growing files
  (metrics, logs) read the tail or a range, never the whole file;
- a slow or hung filesystem (NFS): the ``a*`` wrappers run the read in a
  thread, off the event loop, so one user's folder cannot stall the service.

The root (a user's home, the share) is trusted: the service or the admin
chose it, so it is opened normally. Errors are the project's own:
:class:`Missing` (404) for a name that is not there, :class:`Unsafe` (400)
for a link, a non-regular file, a file over the cap, or a bad name.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import InvalidInput, NotFound

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Flags for every name below the root: no link, no blocking open (FIFOs), not inherited.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
DIR_FLAGS = READ_FLAGS | os.O_DIRECTORY
#: What a whole-file read takes at most unless the caller says otherwise.
DEFAULT_LIMIT = 16 * 1024**2
#: Folders below this depth are not listed.
MAX_DEPTH = 32


class Missing(NotFound):
    """The file (or a folder on its way) is not there."""

    reason = "missing"


class Unsafe(InvalidInput):
    """A link on the way, a file that is not a regular one, a file over the cap, or a bad name."""

    reason = "unsafe_file"


def parts_of(name: str | Sequence[str]) -> tuple[str, ...]:
    """The names of a relative path, checked: no absolute path, ``..``, ``.``, empty name or NUL byte."""
    if isinstance(name, str):
        if "\0" in name:
            raise Unsafe("A file path may not contain a NUL byte.")
        if name.startswith("/"):
            raise Unsafe(f"{name!r} is not a relative path.")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
    else:
        parts = tuple(name)
    for part in parts:
        if not isinstance(part, str) or part in ("", ".", "..") or "/" in part or "\0" in part:
            raise Unsafe(f"{'/'.join(map(str, parts))!r} is not a path inside its folder.")
    return parts


def _shown(parts: Sequence[str], upto: int | None = None) -> str:
    return "/".join(parts[:upto]) or "."


def _error(parts: Sequence[str], upto: int, error: OSError) -> Exception:
    shown = _shown(parts, upto)
    if error.errno == errno.ENOENT:
        return Missing(f"There is no {shown!r}.")
    if error.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):  # a link (ENOTDIR: a link opened as a folder)
        return Unsafe(f"{shown!r} is a symbolic link or not a folder; links are not followed here.")
    return Unsafe(f"{shown!r} cannot be read ({os.strerror(error.errno or 0)}).")


def open_dir(root: Path | str, name: str | Sequence[str] = ()) -> int:
    """A descriptor of the folder ``root/name``, no link below ``root``; the caller closes it."""
    parts = parts_of(name)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError as e:
        raise Missing(f"The folder {str(root)!r} is not there.") if e.errno == errno.ENOENT else _error((), 0, e) from None
    for i, part in enumerate(parts):
        try:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            os.close(fd)
            raise _error(parts, i + 1, e) from None
        os.close(fd)
        fd = child
    return fd


def open_regular(root: Path | str, name: str | Sequence[str]) -> tuple[int, os.stat_result]:
    """A blocking descriptor of the regular file ``root/name`` and its ``fstat``; the caller closes it."""
    parts = parts_of(name)
    if not parts:
        raise Unsafe("Name a file, not the folder itself.")
    fd = open_dir(root, parts[:-1])
    try:
        file_fd = os.open(parts[-1], READ_FLAGS, dir_fd=fd)
    except OSError as e:
        raise _error(parts, len(parts), e) from None
    finally:
        os.close(fd)
    info = os.fstat(file_fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(file_fd)
        raise Unsafe(f"{_shown(parts)!r} is not a regular file (a FIFO, device or socket is never read).")
    os.set_blocking(file_fd, True)  # a regular file: reads are plain reads
    return file_fd, info


def open_file(root: Path | str, name: str | Sequence[str]):
    """``open_regular`` as a binary file object; the caller closes it."""
    fd, _ = open_regular(root, name)
    return os.fdopen(fd, "rb")


def _pread_all(fd: int, offset: int, length: int) -> bytes:
    chunks, left = [], length
    while left > 0:
        chunk = os.pread(fd, min(left, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_bytes(root: Path | str, name: str | Sequence[str], *, limit: int = DEFAULT_LIMIT, tail: bool = False) -> bytes:
    """The file's bytes. Over ``limit``: its last ``limit`` bytes with ``tail``, else :class:`Unsafe`."""
    fd, info = open_regular(root, name)
    try:
        if info.st_size > limit and not tail:
            raise Unsafe(f"{_shown(parts_of(name))!r} is {info.st_size} bytes, over the {limit} this reads.")
        start = max(0, info.st_size - limit)
        return _pread_all(fd, start, limit)
    finally:
        os.close(fd)


def read_text(root: Path | str, name: str | Sequence[str], *, limit: int = DEFAULT_LIMIT) -> str:
    """The file's text (UTF-8, bad bytes replaced), at most ``limit`` bytes or :class:`Unsafe`."""
    return read_bytes(root, name, limit=limit).decode("utf-8", errors="replace")


def read_range(root: Path | str, name: str | Sequence[str], offset: int, length: int) -> tuple[bytes, int]:
    """Bytes ``[offset, offset + length)`` of the file (fewer at its end), and its size now."""
    fd, info = open_regular(root, name)
    try:
        if offset >= info.st_size:
            return b"", info.st_size
        return _pread_all(fd, offset, min(length, info.st_size - offset)), info.st_size
    finally:
        os.close(fd)


def tail_start(fd: int, size: int, nbytes: int) -> int:
    """Where the last ``nbytes`` of a file begin, moved forward to a line start when one is near."""
    start = max(0, size - nbytes)
    if start == 0:
        return 0
    head = os.pread(fd, min(nbytes, 64 * 1024), start - 1)
    newline = head.find(b"\n")
    # The byte before ``start`` is read too: a tail that starts right after a newline keeps its first line.
    return start + newline if newline >= 0 and start + newline < size else start


def read_tail(root: Path | str, name: str | Sequence[str], nbytes: int) -> tuple[bytes, int, int]:
    """The file's last ``nbytes`` at most, cut at a line start: (bytes, their start offset, the size now)."""
    fd, info = open_regular(root, name)
    try:
        start = tail_start(fd, info.st_size, nbytes)
        return _pread_all(fd, start, info.st_size - start), start, info.st_size
    finally:
        os.close(fd)


def is_dir(root: Path | str, name: str | Sequence[str]) -> bool:
    """Whether ``root/name`` is a folder reached without a link below ``root``."""
    try:
        os.close(open_dir(root, name))
    except (Missing, Unsafe):
        return False
    return True


def walk_files(root: Path | str, name: str | Sequence[str] = (),
               max_depth: int = MAX_DEPTH) -> Iterator[tuple[str, os.stat_result]]:
    """``(relative path, lstat)`` of every regular file below ``root/name``, sorted, never through a link.

    Hidden names (a leading dot) are skipped, and so is what lies more than
    ``max_depth`` folders down (a folder nested thousands deep would
    otherwise exhaust the recursion of :func:`os.fwalk`, which opens each
    folder by descriptor and checks it is the one it listed).
    """
    fd = open_dir(root, name)
    try:
        for top, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            prefix = "" if top == "." else top[2:] + "/"
            depth = prefix.count("/")
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
            for file in sorted(files):
                if file.startswith("."):
                    continue
                try:
                    info = os.stat(file, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue  # removed meanwhile
                if stat.S_ISREG(info.st_mode):
                    yield prefix + file, info
    finally:
        os.close(fd)


# --- off the event loop -------------------------------------------------------------------------


async def aread_bytes(root, name, *, limit: int = DEFAULT_LIMIT, tail: bool = False) -> bytes:
    return await asyncio.to_thread(read_bytes, root, name, limit=limit, tail=tail)


async def aread_range(root, name, offset: int, length: int) -> tuple[bytes, int]:
    return await asyncio.to_thread(read_range, root, name, offset, length)


async def aread_tail(root, name, nbytes: int) -> tuple[bytes, int, int]:
    return await asyncio.to_thread(read_tail, root, name, nbytes)


async def ais_dir(root, name) -> bool:
    return await asyncio.to_thread(is_dir, root, name)
