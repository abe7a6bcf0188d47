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

Paths are checked after resolving every symlink: anything that leads
outside the caller's own volumes (``..``, a link to another user's
folder) is refused, and so is a folder that contains symlinks.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import zipfile
from pathlib import Path

from ..errors import Forbidden, InvalidInput, NotFound
from ..local.share import LocalShare
from ..naming import slug
from ..serving.model_dir import FORMATS, PREDICTOR_FILE, SKLEARN_FILES, TORCHSCRIPT_FILE, write_model_json

MODELS_FOLDER = "models"
#: The file name the runtime looks for, per format (a single registered file is renamed to it).
CANONICAL = {"sklearn": SKLEARN_FILES[0], "torchscript": TORCHSCRIPT_FILE}
MAX_BYTES = 20 * 1024**3


def scope_folder(project: str | None, owner: str) -> str:
    return f"project-{slug(project)}" if project else f"user-{slug(owner)}"


def resolve_source(share: LocalShare, user: str, groups: tuple[str, ...], path: str) -> Path:
    """The real path of ``path`` (as the user's Lab shows it) if it is inside their volumes."""
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
        root, rest = share.global_dir(), parts[1:]
    else:
        root, rest = share.user_dir(user), parts
    real_root = root.resolve()
    target = (root.joinpath(*rest)).resolve()
    if os.path.commonpath([target, real_root]) != str(real_root):
        raise Forbidden(f"{path!r} leads outside your folders (through a symbolic link); register the files themselves.")
    if not target.exists():
        raise NotFound(f"There is no file or folder {path!r} in your volumes.")
    return target


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    files, total = [], 0
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            raise InvalidInput(f"{path.relative_to(source)} is a symbolic link; a model folder must hold its files.")
        if path.is_file():
            files.append(path)
            total += path.stat().st_size
    if not files:
        raise InvalidInput("That folder is empty.")
    if total > MAX_BYTES:
        raise InvalidInput(f"The model is {total / 1024**3:.1f} GiB; the registry takes up to {MAX_BYTES // 1024**3} GiB.")
    return files


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def detect_format(source: Path) -> str:
    """``custom`` (a predictor.py), ``sklearn`` (joblib/pickle) or ``torchscript``, else InvalidInput."""
    names = {source.name} if source.is_file() else {p.name for p in source.iterdir()}
    if PREDICTOR_FILE in names:
        return "custom"
    if any(n.endswith((".joblib", ".pkl")) for n in names):
        return "sklearn"
    pts = [n for n in names if n.endswith(".pt")]
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


def stage(share: LocalShare, scope: str, model: str, source: Path, model_format: str, signature: dict) -> tuple[Path, str]:
    """Copy ``source`` into a new hidden folder of the model; returns it and its checksum."""
    if model_format not in FORMATS:
        raise InvalidInput(f"Format {model_format!r} is not one of {', '.join(FORMATS)}.")
    files = _files(source)
    model_dir = share.root / MODELS_FOLDER / scope / model
    staging = model_dir / f".incoming-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        if source.is_file():
            shutil.copy2(source, staging / CANONICAL.get(model_format, source.name))
        else:
            for path in files:
                target = staging / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        write_model_json(staging, format=model_format, signature=signature or None)
        return staging, checksum(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def version_path(scope: str, model: str, version: int) -> str:
    """A version's folder, relative to the share root (also the PVC subPath on a cluster)."""
    return f"{MODELS_FOLDER}/{scope}/{model}/{version}"


def place(share: LocalShare, staging: Path, relative: str) -> None:
    """Rename the staged folder into place (atomic) and make it read-only."""
    final = share.root / relative
    os.rename(staging, final)
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
