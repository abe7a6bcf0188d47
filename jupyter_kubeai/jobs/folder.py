"""Reading a job folder: its metrics, its files and its model file, for the Jobs panel.

Two readers use this: the lab extension (the user's own jobs, in their own
home) and the hub service (a teammate's project job, read from the owner's
folder on the share). The folder is written by the user's code, so every
read goes through :mod:`jupyter_kubeai.safefiles`: from a trusted ``root``
(the owner's home for the service) one name at a time, no link at any
component, regular files only, size-capped. These functions block: the
handlers run them in a thread.

The files the machinery writes into a job folder (its state, the supervisor's
pid and log, the logs, the snapshot's script and parameters) are
:data:`INTERNAL_NAMES`: not outputs, so neither listed nor offered for
registration.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from .. import safefiles
from ..errors import InvalidInput, NotFound
from .metrics import METRICS_FILE, read_metrics
from .snapshot import JOBS_FOLDER, PARAMETERS_FILE, SCRIPT_FILE
from .submission import SPEC_FILE
from .supervise import CANCEL_FILE, LOG_DIR, STATE_FILE

#: At most this many files are listed (a job that writes checkpoints every step).
MAX_FILES = 1000

#: Names at the top of a job folder that the machinery writes (files, or folders with all they hold):
#: never outputs. Hidden names (``.cancel``, ``.state.json.tmp``) are skipped anyway.
INTERNAL_NAMES = frozenset({
    STATE_FILE,          # the supervisor's state (local jobs)
    "supervisor.pid",    # the supervisor's pid before the job runs (jobs/local.py)
    "supervisor.log",    # the supervisor's own output (jobs/local.py)
    "gpus.json",         # the devices a local job was given (backends/local.py)
    CANCEL_FILE,         # a cancel that came before the job ran
    SPEC_FILE,           # the submission as written by the lab (job.json)
    PARAMETERS_FILE,     # the parameters injected into the snapshot
    SCRIPT_FILE,         # the script converted from the notebook
    LOG_DIR,             # every replica's log, torchrun's logs/ranks/... included (served as logs)
})

#: Model files a job may write, by how their name ends (see :mod:`jupyter_kubeai.serving.model_dir`).
MODEL_SUFFIXES = (".joblib", ".pkl", ".pt")
#: Files that make their folder the model (a custom predictor, or the folder's own description).
MODEL_FOLDER_FILES = ("model.json", "predictor.py")


def is_internal(name: str) -> bool:
    """Whether ``name`` (relative to the job folder) is one of the machinery's files."""
    return PurePosixPath(name).parts[:1] in {(n,) for n in INTERNAL_NAMES}


def _relative(folder: Path, root: Path | None) -> tuple[Path, tuple[str, ...]]:
    """The trusted root and the folder's names below it (the folder itself is the root by default)."""
    if root is None:
        return folder, ()
    try:
        return root, folder.relative_to(root).parts
    except ValueError:
        raise NotFound("The job folder is not where it should be.") from None


def metric_points(folder: Path, root: Path | None = None) -> list[dict]:
    """Flat points for charting: ``{"step", "time", "<metric>": value, ...}``.

    ``root``: read from there without following links (default: the folder).
    A metrics file that is a link, FIFO or device is a 400 (:class:`~jupyter_kubeai.safefiles.Unsafe`).
    """
    root, parts = _relative(folder, root)
    records = read_metrics(root.joinpath(*parts, METRICS_FILE), root)
    return [{**r.get("values", {}), "step": r.get("step"), "time": r.get("time")} for r in records]


def list_files(folder: Path, root: Path | None = None, limit: int = MAX_FILES) -> list[dict]:
    """The folder's outputs: regular files, not hidden, not internal, not through links.

    Each is ``{"name": <relative path>, "size", "modified"}``, sorted by name.
    """
    root, parts = _relative(folder, root)
    out: list[dict] = []
    try:
        for name, info in safefiles.walk_files(root, parts):
            if is_internal(name):
                continue
            out.append({"name": name, "size": info.st_size, "modified": info.st_mtime})
            if len(out) >= limit:
                break
    except safefiles.Missing:
        raise NotFound("The job folder is not there.") from None
    return out


def model_file(files: list[dict]) -> str | None:
    """The path (relative to the job folder) to register by default, from :func:`list_files`'s answer.

    The folder of a ``model.json`` or ``predictor.py`` the job wrote (the one
    nearest the top; none when two are equally near, or when it is the job
    folder itself), else the only model-format file (``.joblib``, ``.pkl``,
    ``.pt``), else the only one named ``model.<format>``; None when nothing
    says which.
    """
    names = [PurePosixPath(f["name"]) for f in files]
    folders = sorted({n.parent for n in names if n.name in MODEL_FOLDER_FILES}, key=lambda p: len(p.parts))
    if folders:
        nearest = [f for f in folders if len(f.parts) == len(folders[0].parts)]
        return str(nearest[0]) if len(nearest) == 1 and nearest[0].parts else None
    models = [n for n in names if n.suffix in MODEL_SUFFIXES]
    if len(models) == 1:
        return str(models[0])
    named = [n for n in models if n.stem == "model"]
    return str(named[0]) if len(named) == 1 else None


def open_file(folder: Path, name: str, root: Path | None = None):
    """Open ``name`` (relative to ``folder``) for reading: a regular file, no link on the way, not internal.

    Returns a binary file object; the caller closes it.
    """
    if not isinstance(name, str) or "\0" in name:
        raise InvalidInput("A file path may not contain a NUL byte.")
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or any(p in ("..", ".") or p.startswith(".") for p in parts) \
            or is_internal(name):
        raise InvalidInput(f"{name!r} is not a file of the job folder.")
    root, above = _relative(folder, root)
    try:
        return safefiles.open_file(root, (*above, *parts))
    except safefiles.Missing:
        raise NotFound(f"The job folder has no file {name!r}.") from None
    except safefiles.Unsafe:
        # A link or a FIFO the job left: as if it were not there (the listing never shows it).
        raise NotFound(f"The job folder has no regular file {name!r} (links and special files are not served).") from None


def inside(folder: Path, root: Path) -> bool:
    """Whether ``folder`` is a folder below ``root`` reached with no link at any component.

    ``root`` (the owner's home) is trusted; everything below it is the user's
    to change, so a ``.kubeai`` that is a link into another home is refused.
    """
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        return False
    try:
        return safefiles.is_dir(root, parts)
    except safefiles.Unsafe:
        return False


def job_home(folder: Path) -> Path:
    """The home a job folder (``<home>/.kubeai/jobs/<id>``) is in: the trusted root for reading it."""
    return folder.parents[len(PurePosixPath(JOBS_FOLDER).parts)]
