"""Job logs as bounded reads: a tail, a byte range, or what was appended since an offset.

A job's log can grow to gigabytes; the service must never hold one whole.
Every read here returns at most :data:`MAX_LOG_BYTES` and says where the text
starts and how big the log is now (:class:`LogText`), so the REST API
(``tail=``, ``offset=``/``length=``, ``X-Log-Offset``, ``X-Log-Size``) and a
follow (read only the bytes appended since the last read) are cheap whatever
the log's size.

A replica's log is one file or several (torchrun's per-rank ``stdout.log``
and ``stderr.log``); several are read as their concatenation, in order.
Files are opened with :mod:`jupyter_kubeai.safefiles` from a trusted root
(the owner's home): no link at any component, regular files only. The
functions block: backends run them in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import safefiles

#: Bytes a log read returns when the caller names no amount (the API's default ``tail``).
DEFAULT_TAIL_BYTES = 256 * 1024
#: The most one read returns (the API's largest ``tail`` and ``length``).
MAX_LOG_BYTES = 4 * 1024**2


class LogText(str):
    """Log text that knows where it is: ``offset`` (its first byte in the log), ``end`` (the byte after
    its last) and ``size`` (the log's size when read; None where the source cannot tell)."""

    offset: int
    end: int
    size: int | None

    def __new__(cls, text: str = "", offset: int = 0, end: int | None = None, size: int | None = None):
        self = super().__new__(cls, text)
        self.offset = offset
        self.end = offset + len(text.encode()) if end is None else end
        self.size = size
        return self


def whole_chars(data: bytes, at_end: bool) -> bytes:
    """``data`` less an incomplete UTF-8 character at its end (unless the log ends there):
    the next read starts with it, so a multi-byte character is never split across two reads."""
    if at_end:
        return data
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): how long its character is
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
            return data[:-back] if need > back else data
    return data


@dataclass(frozen=True)
class LogFiles:
    """One replica's log: files below a trusted ``root``, each as its names below it."""

    root: Path
    files: tuple[tuple[str, ...], ...]

    def sizes(self, required: bool = False) -> list[int]:
        """Each file's size now: 0 for one that is not there yet (:class:`~jupyter_kubeai.safefiles.Missing`
        when none is and ``required``), :class:`~jupyter_kubeai.safefiles.Unsafe` for a link or FIFO."""
        sizes, missing = [], None
        for parts in self.files:
            try:
                fd, info = safefiles.open_regular(self.root, parts)
            except safefiles.Missing as e:
                sizes.append(0)
                missing = e
                continue
            os.close(fd)
            sizes.append(info.st_size)
        if required and missing is not None and not any(sizes) and len(sizes) == 1:
            raise missing
        return sizes

    def _read(self, offset: int, length: int, sizes: list[int]) -> bytes:
        """Bytes ``[offset, offset + length)`` of the concatenation (sizes as measured)."""
        out, start = [], 0
        for parts, size in zip(self.files, sizes):
            if length <= 0:
                break
            if offset < start + size:
                skip = max(0, offset - start)
                want = min(length, size - skip)
                try:
                    data, _ = safefiles.read_range(self.root, parts, skip, want)
                except safefiles.Missing:
                    data = b""
                out.append(data)
                length -= len(data)
                offset += len(data)
            start += size
        return b"".join(out)

    def _tail_start(self, nbytes: int, sizes: list[int]) -> int:
        total = sum(sizes)
        start = max(0, total - nbytes)
        if start == 0 or nbytes == 0:
            return start
        head = self._read(start - 1, min(nbytes, 64 * 1024), sizes)
        newline = head.find(b"\n")
        return start + newline if newline >= 0 and start + newline < total else start

    def read(self, *, tail: int | None = DEFAULT_TAIL_BYTES, offset: int | None = None,
             length: int | None = None, required: bool = False) -> LogText:
        """The last ``tail`` bytes (cut at a line start), or with ``offset`` bytes ``[offset, offset + length)``.

        ``required``: a log that is not there is :class:`~jupyter_kubeai.safefiles.Missing`, not empty.
        """
        sizes = self.sizes(required)
        total = sum(sizes)
        if offset is None:
            start = self._tail_start(min(DEFAULT_TAIL_BYTES if tail is None else tail, MAX_LOG_BYTES), sizes)
            want = total - start
        else:
            start = min(offset, total)
            want = min(MAX_LOG_BYTES if length is None else length, MAX_LOG_BYTES, total - start)
        data = whole_chars(self._read(start, want, sizes), at_end=start + want >= total)
        return LogText(data.decode("utf-8", errors="replace"), start, start + len(data), total)


def read_log(root: Path, files: Sequence[Sequence[str]], **kwargs) -> LogText:
    """:meth:`LogFiles.read` of ``files`` below ``root``."""
    return LogFiles(root, tuple(tuple(f) for f in files)).read(**kwargs)
