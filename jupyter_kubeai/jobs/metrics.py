"""Metrics a training script reports, for the Jobs panel's chart.

``jupyter_kubeai.log_metric(step=10, loss=0.3, accuracy=0.9)`` appends one
JSON line to ``metrics.jsonl`` in the job folder (``$KUBEAI_JOB_DIR``), or
in the current folder when run outside a job. In a distributed job only
rank 0 writes, unless ``all_ranks=True`` (each line then says its rank).
One ``write`` per line in append mode, so concurrent writers never
interleave a line; a reader skips a last line still being written.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from ..safefiles import Missing, read_tail

METRICS_FILE = "metrics.jsonl"


def metrics_path() -> Path:
    return Path(os.environ.get("KUBEAI_JOB_DIR") or ".") / METRICS_FILE


def _rank() -> int:
    """This process's rank: torchrun's ``RANK``, Open MPI's, or 0 for a TensorFlow chief only."""
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if name in os.environ:
            try:
                return int(os.environ[name])
            except ValueError:
                return 0
    tf_config = os.environ.get("TF_CONFIG")
    if tf_config:
        try:
            config = json.loads(tf_config)
            task, cluster = config.get("task", {}), config.get("cluster", {})
            first = "chief" if "chief" in cluster else "worker"  # without a chief, worker 0 leads
            return 0 if (task.get("type"), int(task.get("index", 0))) == (first, 0) else 1
        except (ValueError, AttributeError, TypeError):
            return 0
    return 0


def log_metric(step: int | None = None, *, all_ranks: bool = False, **values: float) -> bool:
    """Record metric values (numbers) at ``step``; returns whether a line was written."""
    if not values:
        raise ValueError("name at least one metric, e.g. log_metric(step=1, loss=0.5)")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise ValueError(f"step must be a whole number >= 0, not {step!r}")
    clean = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)  # numpy and torch scalars
            except (TypeError, ValueError):
                raise ValueError(f"metric {name!r} must be a number, not {value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value}; only finite numbers can be charted")
        clean[name] = value
    rank = _rank()
    if rank != 0 and not all_ranks:
        return False
    record = {"time": time.time(), "step": step, "rank": rank, "values": clean}
    path = metrics_path()
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return True


#: The most of ``metrics.jsonl`` read: its last bytes, so a job that logs every step still charts quickly.
MAX_METRICS_BYTES = 8 * 1024**2


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clean(record) -> dict | None:
    """A record fit for strict JSON: only finite numeric values (a hand-written NaN or Infinity is dropped)."""
    if not isinstance(record, dict):
        return None
    values = record.get("values")
    clean = dict(record)
    clean["values"] = {str(k): v for k, v in values.items() if _finite(v)} if isinstance(values, dict) else {}
    for key in ("step", "time", "rank"):
        if key in clean and clean[key] is not None and not _finite(clean[key]):
            clean[key] = None
    return clean


def parse_metrics(data: bytes) -> list[dict]:
    """The records in ``data`` (lines of JSON), oldest first.

    A torn line (the last one, still being written; the first of a tail) is
    skipped. ``NaN`` and ``Infinity`` (which Python's json accepts, but no
    browser does) never reach an answer: such values are dropped.
    """
    records = []
    for line in data.split(b"\n"):
        try:
            record = _clean(json.loads(line, parse_constant=lambda name: None))
        except (ValueError, RecursionError):
            continue
        if record is not None:
            records.append(record)
    return records


def read_metrics(path: Path, root: Path | None = None) -> list[dict]:
    """The records in ``path``, oldest first ([] when it is missing).

    ``root`` (default: the file's folder) is the trusted folder the file is
    read from without following any link below it (:mod:`jupyter_kubeai.safefiles`);
    a FIFO, device or link there is :class:`~jupyter_kubeai.safefiles.Unsafe`.
    At most the last :data:`MAX_METRICS_BYTES` are read. Blocking: call it in a thread.
    """
    root = path.parent if root is None else root
    try:
        data, _, _ = read_tail(root, path.relative_to(root).parts, MAX_METRICS_BYTES)
    except Missing:
        return []
    return parse_metrics(data)
