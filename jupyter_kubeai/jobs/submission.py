"""A job submission: what the caller asks for, checked, and the folder it runs from.

The submitting side (the server extension, the ``kubeai`` command) writes
the snapshot into ``<home>/.kubeai/jobs/<job-id>/`` first
(:func:`prepare_job_folder`), then sends a :class:`Submission` to the hub
service, which checks it against the catalog, the caller's groups and the
project's quota (:func:`build_spec`) before anything starts. If the
service refuses, the submitting side removes the folder again
(:func:`discard_job_folder`): nothing is left half-created.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..catalog.access import CUSTOM_IMAGE, GPUS, IMAGE, PROFILE, UserView, select
from ..errors import InvalidInput
from .snapshot import JOBS_FOLDER, check_parameters, write_snapshot
from .spec import FRAMEWORKS, JOB_ID_RE, JobSpec

#: The job record as the submitting side keeps it beside the snapshot.
SPEC_FILE = "job.json"
NAME_MAX = 100
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_job_id(name: str) -> str:
    """A fresh job id from a display name: ``Train MNIST`` -> ``train-mnist-k3x9qa``."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    base = re.sub(r"^[^a-z]+", "", base)[:33].strip("-") or "job"
    return f"{base}-{''.join(secrets.choice(_ID_ALPHABET) for _ in range(6))}"


def job_folder(home: Path, job_id: str) -> Path:
    if not JOB_ID_RE.match(job_id):
        raise InvalidInput(f"Job id {job_id!r} is not valid.")
    return home / JOBS_FOLDER / job_id


@dataclass(frozen=True)
class Submission:
    """The fields of ``POST api/jobs`` (and of the extension's and CLI's submit)."""

    job_id: str
    name: str
    framework: str
    notebook: str = ""  # the source notebook's path, relative to the owner's home (for display)
    workers: int = 1
    parameter_servers: int = 0
    procs_per_worker: int = 1
    profile: str = ""  # "" = the user's default size
    gpus: int | None = None  # per worker; None = the size's default
    image: str = ""  # catalog image name; "" = the default image
    custom_image: str = ""  # an image reference allowed by an image rule
    project: str | None = None  # None = personal
    parameters: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def catalog_options(self) -> dict:
        """The choice as the catalog's :func:`select` reads it (same as the spawn form's)."""
        options = {PROFILE: self.profile, IMAGE: self.image, CUSTOM_IMAGE: self.custom_image}
        if self.gpus is not None:
            options[GPUS] = str(self.gpus)
        return options


_TYPES = {
    "job_id": str, "name": str, "framework": str, "notebook": str, "workers": int,
    "parameter_servers": int, "procs_per_worker": int, "profile": str, "gpus": (int, type(None)),
    "image": str, "custom_image": str, "project": (str, type(None)), "parameters": dict, "env": dict,
}
_WORDS = {int: "a whole number", str: "text", dict: "an object"}


def parse_submission(body: object) -> Submission:
    """A :class:`Submission` from decoded JSON; InvalidInput naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidInput("The submission must be a JSON object.")
    unknown = sorted(set(body) - set(_TYPES))
    if unknown:
        raise InvalidInput(f"Unknown field(s) {', '.join(unknown)}; the fields are {', '.join(_TYPES)}.")
    for name in ("job_id", "name", "framework"):
        if name not in body:
            raise InvalidInput(f"The submission needs a {name!r}.")
    for name, value in body.items():
        wanted = _TYPES[name]
        # JSON booleans are ints to Python; a count of true is a mistake.
        if isinstance(value, bool) or not isinstance(value, wanted):
            first = wanted[0] if isinstance(wanted, tuple) else wanted
            raise InvalidInput(f"Field {name!r} must be {_WORDS[first]}, not {json.dumps(value)[:40]}.")
    name = body["name"].strip()
    if not name or len(name) > NAME_MAX or any(c in name for c in "\n\r\t"):
        raise InvalidInput(f"The job name must be 1 to {NAME_MAX} characters on one line.")
    if body.get("project") == "":
        body = {**body, "project": None}
    for key, value in body.get("env", {}).items():
        if not isinstance(value, str):
            raise InvalidInput(f"Environment variable {key} must be text, not {json.dumps(value)[:40]}.")
    check_parameters(body.get("parameters", {}))
    if body["framework"] not in FRAMEWORKS:
        raise InvalidInput(f"Framework {body['framework']!r} is not one of {', '.join(FRAMEWORKS)}.")
    return Submission(**{**body, "name": name})


def build_spec(sub: Submission, owner: str, groups: tuple[str, ...], view: UserView, job_dir: str,
               snapshot_dir: str = "") -> JobSpec:
    """The checked :class:`JobSpec`, or InvalidInput (catalog, groups, topology)."""
    if sub.project is not None and sub.project not in groups:
        raise InvalidInput(
            f"You are not in project {sub.project!r}; pick one of your projects"
            + (f" ({', '.join(groups)})." if groups else " (you have none: submit it as a personal job).")
        )
    selection = select(view, sub.catalog_options())
    return JobSpec(
        job_id=sub.job_id,
        owner=owner,
        owner_groups=tuple(groups),
        project=sub.project,
        framework=sub.framework,
        selection=selection,
        job_dir=job_dir,
        snapshot_dir=snapshot_dir,
        workers=sub.workers,
        parameter_servers=sub.parameter_servers,
        procs_per_worker=sub.procs_per_worker,
        env=tuple(sorted(sub.env.items())),
    )


def prepare_job_folder(home: Path, job_id: str, content: dict, parameters: dict, notebook_name: str) -> Path:
    """Write the snapshot (notebook, script, parameters) into the job's new folder."""
    folder = job_folder(home, job_id)
    if folder.exists():
        raise InvalidInput(f"Job folder {JOBS_FOLDER}/{job_id} exists already; pick another job id.")
    try:
        write_snapshot(folder, content, parameters, notebook_name)
    except BaseException:
        discard_job_folder(home, job_id)
        raise
    return folder


def discard_job_folder(home: Path, job_id: str) -> None:
    """Remove a folder whose submission was refused (never a job that ran)."""
    shutil.rmtree(job_folder(home, job_id), ignore_errors=True)


def write_job_file(folder: Path, job: dict) -> None:
    """Keep the accepted job (as the service answered) beside its snapshot."""
    (folder / SPEC_FILE).write_text(json.dumps(job, indent=2))


def prepare_submission(home: Path, notebook_path: str, content: dict, fields: dict) -> tuple[str, dict]:
    """The submitting side's first half: write the snapshot; returns the job id and the body to POST.

    ``fields`` are the :class:`Submission` fields the user chose (``job_id``
    and ``notebook`` are filled in here; ``name`` defaults to the notebook's).
    """
    if not isinstance(fields, dict):
        raise InvalidInput("The submission must be a JSON object.")
    parameters = check_parameters(fields.get("parameters") or {})
    name = fields.get("name") or Path(notebook_path).stem or "job"
    if not isinstance(name, str):
        raise InvalidInput("The job name must be text.")
    job_id = fields.get("job_id") or new_job_id(name)
    prepare_job_folder(home, job_id, content, parameters, Path(notebook_path).name or "notebook.ipynb")
    return job_id, {**fields, "name": name, "job_id": job_id, "notebook": notebook_path}


def finish_submission(home: Path, job_id: str, status: int, answer: object) -> None:
    """The second half: keep the accepted job beside its snapshot, or remove a refused one's folder."""
    if 200 <= status < 300 and isinstance(answer, dict):
        write_job_file(job_folder(home, job_id), answer)
    else:
        discard_job_folder(home, job_id)
