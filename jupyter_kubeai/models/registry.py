"""Registry storage: immutable copies of model files on the share.

``<share>/models/<scope>/<model>/<version>/`` (``scope`` being
``project-<group>`` or ``user-<name>``, slugs). Registering copies the
chosen file or folder from the caller's volumes — their home, a project
they are in, the global folder — into a hidden ``.incoming-*`` folder
first, writes ``model.json`` (format and signature, read by the runtime:
:mod:`jupyter_kubeai.serving.model_dir`),
computes a SHA-256 over every file's name and bytes, makes it read-only
and renames it into place: a version is complete or absent, and a later
change in the job folder cannot alter it.

Paths are checked twice. :func:`resolve_source` resolves every symlink and
refuses anything that leads outside the caller's own volumes (``..``, a
link to another user's folder). Then :func:`stage` copies without ever
following a link: it walks from the volume's root one name at a time with
``O_NOFOLLOW`` (directories also with ``O_DIRECTORY``), reads each file
through the descriptor it opened and checks that it is a regular file. A
user who swaps a file or folder for a link between the check and the copy
(on Kubernetes the hub reads the whole share) gets a refusal, never
someone else's file; a folder that contains links is refused the same way.
Format and signature are read from the copy, never from the user's folder.

The signature (optional) comes from the caller, else from a ``model.json``
the job wrote into the folder (:func:`jupyter_kubeai.serving.model_dir.write_model_json`).
It is not guessed from a pickle: reading one means running it, and user
code does not run in the hub. The runtime reports what it learns from the
loaded model in its v2 metadata instead.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from ..local.share import LocalShare
from ..naming import slug
from ..serving.model_dir import (
    DATATYPES,
    FORMATS,
    MODEL_JSON,
    PREDICTOR_FILE,
    SKLEARN_FILES,
    TORCHSCRIPT_FILE,
    read_model_dir,
    read_model_json,
    write_model_json,
)

MODELS_FOLDER = "models"
#: The file name the runtime looks for, per format (a single registered file is renamed to it).
CANONICAL = {"sklearn": SKLEARN_FILES[0], "torchscript": TORCHSCRIPT_FILE}
MAX_BYTES = 20 * 1024**3
#: Folders nested deeper than this are refused (each level holds one open descriptor while copying).
MAX_DEPTH = 32
#: A model.json in the user's folder larger than this is not read.
MAX_MODEL_JSON = 1024**2
MAX_TENSORS = 64
MAX_DIMS = 16

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # NONBLOCK: a FIFO never hangs us
_READ_DIR = _READ | os.O_DIRECTORY


def scope_folder(project: str | None, owner: str) -> str:
    return f"project-{slug(project)}" if project else f"user-{slug(owner)}"


@dataclass(frozen=True)
class Source:
    """What :func:`resolve_source` checked: a file or folder inside one of the caller's volumes."""

    root: Path  # the volume's real path (home, project or global folder)
    path: Path  # the file or folder's real path at check time: ``root`` or below it
    shown: str  # the path as the caller gave it, for messages

    @property
    def parts(self) -> tuple[str, ...]:
        return self.path.relative_to(self.root).parts


def resolve_source(share: LocalShare, user: str, groups: tuple[str, ...], path: str) -> Source:
    """Where ``path`` (as the user's Lab shows it) is, if it is inside their volumes."""
    if not isinstance(path, str) or not path.strip() or path.startswith("/") or "\0" in path:
        raise InvalidInput("Give the model's path relative to your home, e.g. .kubeai/jobs/<job>/outputs/model.pt.")
    parts = [p for p in path.strip().split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"Path {path!r} may not contain '..'.")
    if parts[:1] == ["projects"] and len(parts) >= 2:
        group = next((g for g in groups if slug(g) == parts[1]), None)
        if group is None:
            raise Forbidden(f"You are not in a project whose folder is projects/{parts[1]}.")
        root, rest = share.project_dir(group), parts[2:]
    elif parts[:1] == ["global"]:
        root, rest = share.global_dir, parts[1:]
    else:
        root, rest = share.user_dir(user), parts
    real_root = root.resolve()
    target = (root.joinpath(*rest)).resolve()
    if os.path.commonpath([target, real_root]) != str(real_root):
        raise Forbidden(f"{path!r} leads outside your folders (through a symbolic link); register the files themselves.")
    if not target.exists():
        raise NotFound(f"There is no file or folder {path!r} in your volumes.")
    return Source(real_root, target, path)


# --- signatures ------------------------------------------------------------------------------------


def _tensors(raw, where: str) -> list[dict]:
    prefix = where.rsplit(".", 1)[-1].rstrip("s")  # "signature.inputs" -> "input"
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TENSORS:
        raise InvalidInput(f"{where} must be a list of 1 to {MAX_TENSORS} tensors, each "
                           '{"name": ..., "datatype": ..., "shape": [...]}.')
    out, names = [], set()
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f'{here} must be an object such as {{"name": "{prefix}-0", "datatype": "FP64", '
                               '"shape": [-1, 20]}.')
        unknown = sorted(set(item) - {"name", "datatype", "shape"})
        if unknown:
            raise InvalidInput(f"{here} has unknown field(s) {', '.join(unknown)}; a tensor has name, datatype and shape.")
        name = item.get("name", f"{prefix}-{i}")
        if not isinstance(name, str) or not name or len(name) > 128 or name in names:
            raise InvalidInput(f"{here}.name must be a name (text, at most 128 long) that no other {prefix} has.")
        names.add(name)
        tensor = {"name": name}
        datatype = item.get("datatype")
        if datatype is not None:
            if datatype not in DATATYPES:
                raise InvalidInput(f"{here}.datatype is {datatype!r}; use one of {', '.join(DATATYPES)}.")
            tensor["datatype"] = datatype
        shape = item.get("shape")
        if shape is not None:
            if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
                    or not all(isinstance(d, int) and not isinstance(d, bool) and (d == -1 or 1 <= d <= 2**31)
                               for d in shape)):
                raise InvalidInput(f"{here}.shape must be a list of 1 to {MAX_DIMS} sizes, each -1 (any, e.g. the "
                                   "batch) or a positive whole number, e.g. [-1, 20].")
            tensor["shape"] = list(shape)
        out.append(tensor)
    return out


def check_signature(raw, where: str = "signature") -> dict:
    """A model version's signature, checked and in its canonical form; ``{}`` for none.

    ``{"inputs": [{"name", "datatype", "shape"}, ...], "outputs": [...]}``
    (Open Inference Protocol v2 tensors; ``outputs`` optional, ``shape`` with
    ``-1`` for any size). Anything else is :class:`InvalidInput` saying what is wrong.
    """
    if raw is None or raw == {}:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f'{where} must be an object: {{"inputs": [{{"name": "input-0", "datatype": "FP64", '
                           '"shape": [-1, 20]}], "outputs": [...]}.')
    unknown = sorted(set(raw) - {"inputs", "outputs"})
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {', '.join(unknown)}; a signature has inputs and outputs.")
    if "inputs" not in raw:
        raise InvalidInput(f"{where} needs its inputs (a list of tensors).")
    out = {"inputs": _tensors(raw["inputs"], f"{where}.inputs")}
    if raw.get("outputs") is not None:
        out["outputs"] = _tensors(raw["outputs"], f"{where}.outputs")
    return out


# --- copying without following links -------------------------------------------------------------


def _refused(shown: str, name: str, error: OSError, is_link: bool) -> InvalidInput:
    what = name if name == shown else f"{name} in {shown!r}"
    if is_link or error.errno in (errno.ELOOP, errno.EMLINK):  # ELOOP: a link (EMLINK: BSD's word for it)
        return InvalidInput(f"{what} is a symbolic link; a model folder must hold its files, and the path must not "
                            "change while it is registered.")
    if error.errno == errno.ENOTDIR:
        return InvalidInput(f"{what} is no longer a folder; it changed while it was being registered.")
    if error.errno == errno.ENOENT:
        return InvalidInput(f"{what} went away while it was being registered; try again.")
    return InvalidInput(f"{what} cannot be read ({os.strerror(error.errno or 0)}).")


class _Copier:
    """Copies a checked :class:`Source` into a staging folder, one descriptor at a time."""

    def __init__(self, source: Source, staging: Path):
        self.source, self.staging = source, staging
        self.total = 0
        self.files = 0

    def open_at(self, dir_fd: int | None, name: str, flags: int, shown_name: str) -> int:
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as e:
            try:  # only to say why: O_DIRECTORY|O_NOFOLLOW on a link is ENOTDIR on Linux
                is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            except OSError:
                is_link = False
            raise _refused(self.source.shown, shown_name, e, is_link) from None

    def copy(self) -> bool:
        """Copy; True when the source was a folder (else one file, staged under its own name)."""
        fd = self.open_at(None, str(self.source.root), _READ_DIR, "The folder")
        try:
            parts = self.source.parts
            for i, part in enumerate(parts):  # one name at a time from the volume's root, none of them a link
                child = self.open_at(fd, part, _READ_DIR if i < len(parts) - 1 else _READ, "/".join(parts[:i + 1]))
                os.close(fd)
                fd = child
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                self._folder(fd, self.staging, "", 0)
                if not self.files:
                    raise InvalidInput("That folder is empty.")
                return True
            self._file(fd, info, self.staging / self.source.path.name, self.source.path.name)
            return False
        finally:
            os.close(fd)

    def _folder(self, fd: int, target: Path, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{prefix.rstrip('/')} is nested more than {MAX_DEPTH} folders deep.")
        for name in sorted(os.listdir(fd)):
            shown = prefix + name
            child = self.open_at(fd, name, _READ, shown)
            try:
                info = os.fstat(child)
                if stat.S_ISDIR(info.st_mode):
                    (target / name).mkdir()
                    self._folder(child, target / name, shown + "/", depth + 1)
                elif stat.S_ISREG(info.st_mode):
                    self._file(child, info, target / name, shown)
                else:
                    raise InvalidInput(f"{shown} is not a regular file or folder; a model folder holds only files.")
            finally:
                os.close(child)

    def _file(self, fd: int, info: os.stat_result, target: Path, shown: str) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{shown} is not a regular file or folder.")
        os.set_blocking(fd, True)
        with open(target, "xb") as out:
            while block := os.read(fd, 1 << 20):
                self.total += len(block)
                if self.total > MAX_BYTES:
                    raise InvalidInput(f"The model is over {MAX_BYTES // 1024**3} GiB, the most the registry takes.")
                out.write(block)
        os.chmod(target, (stat.S_IMODE(info.st_mode) & 0o755) | 0o400)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        self.files += 1


# --- format and checksum -------------------------------------------------------------------------


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def detect_format(source: Path) -> str:
    """``custom`` (a predictor.py), ``sklearn`` (joblib/pickle) or ``torchscript``, else InvalidInput.

    ``source`` is a staged copy (a folder, or one file), never a user's own path.
    """
    names = {source.name} if source.is_file() else {p.name for p in source.iterdir()}
    if PREDICTOR_FILE in names:
        return "custom"
    if any(n.endswith((".joblib", ".pkl")) for n in names):
        return "sklearn"
    pts = sorted(n for n in names if n.endswith(".pt"))
    if pts:
        path = source if source.is_file() else source / pts[0]
        if _is_torchscript(path):
            return "torchscript"
        raise InvalidInput(
            f"{pts[0]} is not TorchScript (torch.jit.script/trace, then .save): save it so, or add a predictor.py "
            "that loads it."
        )
    raise InvalidInput("No model found: expected model.joblib / model.pkl (scikit-learn), a TorchScript model.pt, "
                       "or a predictor.py with a Predictor class.")


def _format_or_none(path: Path) -> str | None:
    try:
        return detect_format(path)
    except InvalidInput:
        return None


def _found(staged: Path) -> str:
    """What a staged copy holds, in words, for a refusal."""
    try:
        return f"the files are {detect_format(staged)}"
    except InvalidInput:
        names = sorted(p.name for p in staged.iterdir() if p.name != MODEL_JSON)
        return f"the files ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}) hold no model of a known format"


def check_format(staged: Path, model_format: str) -> None:
    """InvalidInput (saying what was found) unless the staged copy can be served as ``model_format``:
    a forced format that does not match the files would only fail later, when a service is deployed."""
    try:
        info = read_model_dir(staged)
    except InvalidInput:
        info = None
    matches = info is not None and info.format == model_format
    if matches and model_format == "torchscript":
        matches = _is_torchscript(staged / TORCHSCRIPT_FILE)
    if not matches:
        raise InvalidInput(f"Format {model_format!r} does not match the model: {_found(staged)}. "
                           "Leave the format out to have it detected, or register the right files.")


def _own_model_json(staging: Path) -> dict:
    """The model.json the job wrote into the folder (already copied), or {}."""
    try:
        return read_model_json(staging, max_bytes=MAX_MODEL_JSON)
    except InvalidInput as e:
        # Name it as the user knows it, not by the registry's staging folder.
        raise InvalidInput(e.message.replace(str(staging / MODEL_JSON), f"The folder's {MODEL_JSON}")) from None


def checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"


def _freeze(folder: Path) -> None:
    for path in folder.rglob("*"):
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    folder.chmod(folder.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@dataclass(frozen=True)
class Staged:
    """A copy ready to be placed: its folder, checksum, and what was learnt from the copy."""

    folder: Path
    checksum: str
    format: str
    signature: dict  # {} for none


def _new_staging(model_dir: Path) -> Path:
    staging = model_dir / f".incoming-{secrets.token_hex(4)}"
    for _ in range(3):  # a failed registration may remove the (empty) model folder meanwhile
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
            return staging
        except FileNotFoundError:
            continue
    staging.mkdir(parents=True)
    return staging


def _discard(staging: Path) -> None:
    """Remove a staging folder, and the model's and scope's folders if that left them empty."""
    shutil.rmtree(staging, ignore_errors=True)
    for folder in (staging.parent, staging.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break


def stage(share: LocalShare, scope: str, model: str, source: Source, model_format: str | None = None,
          signature: dict | None = None) -> Staged:
    """Copy ``source`` into a new hidden folder of the model, without following links.

    ``model_format`` defaults to what the copied files are; ``signature``
    (and the predictor's ``config``) to the folder's own ``model.json``
    when the job wrote one. Anything wrong is :class:`InvalidInput` and leaves nothing behind.
    """
    if model_format is not None and model_format not in FORMATS:
        raise InvalidInput(f"Format {model_format!r} is not one of {', '.join(FORMATS)}.")
    signature = check_signature(signature)
    forced = model_format is not None
    staging = _new_staging(share.root / MODELS_FOLDER / scope / model)
    try:
        if _Copier(source, staging).copy():
            own = _own_model_json(staging)
            model_format = model_format or detect_format(staging)
            if not signature:
                signature = check_signature(own.get("signature"), f"The folder's {MODEL_JSON}: signature")
            config = own.get("config") if isinstance(own.get("config"), dict) else None
        else:
            copied = staging / source.path.name
            if forced:
                found = _format_or_none(copied)
                if found not in (None, model_format):
                    raise InvalidInput(f"Format {model_format!r} does not match the model: {source.path.name} is "
                                       f"{found}. Leave the format out to have it detected, or register the right file.")
            model_format = model_format or detect_format(copied)
            copied.rename(staging / CANONICAL.get(model_format, source.path.name))
            config = None
        write_model_json(staging, format=model_format, signature=signature or None, config=config)
        if forced:
            check_format(staging, model_format)
        return Staged(staging, checksum(staging), model_format, signature)
    except BaseException:
        _discard(staging)
        raise


def version_path(scope: str, model: str, version: int) -> str:
    """A version's folder, relative to the share root (also the PVC subPath on a cluster)."""
    return f"{MODELS_FOLDER}/{scope}/{model}/{version}"


def free_version_path(share: LocalShare, scope: str, model: str, version: int) -> str:
    """:func:`version_path`, or where that folder is taken already (the share holds versions of another
    or a restored store), the first free ``<version>.<n>`` beside it: a registration never fails on,
    nor touches, files this store did not record."""
    relative = version_path(scope, model, version)
    candidate, n = relative, 1
    while os.path.lexists(share.root / candidate):
        candidate, n = f"{relative}.{n}", n + 1
    return candidate


def place(share: LocalShare, staging: Path, relative: str) -> None:
    """Rename the staged folder into place (atomic) and make it read-only.

    Conflict (409) if the folder appeared meanwhile (another store registering on the same share).
    """
    final = share.root / relative
    try:
        os.rename(staging, final)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise Conflict(f"The share already holds {relative} (registered by another store on the same share "
                           "meanwhile); try again.") from None
        raise
    _freeze(final)


def remove(share: LocalShare, relative: str) -> None:
    """Delete a version's files (its record is being deleted)."""
    folder = (share.root / relative).resolve()
    if os.path.commonpath([folder, (share.root / MODELS_FOLDER).resolve()]) != str((share.root / MODELS_FOLDER).resolve()):
        return
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)
