"""``JobSpec``: one training job, checked, independent of where it runs.

A spec says who runs what: the owner and the project (hub group) it runs
under, the framework and its topology (workers, parameter servers,
processes per worker), the size and image per worker (a catalog
:class:`~jupyter_kubeai.catalog.access.Selection`), the job folder holding
the notebook snapshot and its converted script, and extra environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..catalog.access import Selection
from ..errors import InvalidInput

#: framework -> what users see.
FRAMEWORKS = {
    "pytorch": "PyTorch distributed (DDP)",
    "tensorflow": "TensorFlow parameter-server",
    "mpi": "Horovod/MPI",
    "single": "Single process",
}
MAX_WORKERS = 64
MAX_PARAMETER_SERVERS = 16
MAX_PROCS_PER_WORKER = 64

JOB_ID_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Environment the platform or the training operators set; users may not override it.
RESERVED_ENV = re.compile(
    r"^(KUBEAI_.*|JUPYTERHUB_.*|MASTER_ADDR|MASTER_PORT|WORLD_SIZE|RANK|LOCAL_RANK|NODE_RANK|PET_.*|TF_CONFIG|OMPI_.*|CUDA_VISIBLE_DEVICES|NVIDIA_VISIBLE_DEVICES)$"
)


@dataclass(frozen=True)
class JobSpec:
    job_id: str  # unique; also the Kubernetes object name (a DNS-1035 label, at most 40)
    owner: str  # hub user name
    owner_groups: tuple[str, ...]  # the owner's projects at submission: their folders are mounted
    project: str | None  # the group the job runs under (queue, quota, placement); None: personal
    framework: str
    selection: Selection  # size, image and GPUs of each worker
    job_dir: str  # the job folder as mounted in the pods
    entrypoint: str = "main.py"  # the converted script, relative to the snapshot folder
    snapshot_dir: str = ""  # the folder holding the snapshot; "" = job_dir (a resubmission reuses its original's)
    workers: int = 1  # pods running the training (PyTorch: the master is one of them)
    parameter_servers: int = 0  # TensorFlow only
    procs_per_worker: int = 1
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        check_topology(self)

    @property
    def script(self) -> str:
        return f"{(self.snapshot_dir or self.job_dir).rstrip('/')}/{self.entrypoint}"

    @property
    def total_gpus(self) -> int:
        return self.selection.gpus * self.workers


def check_topology(spec: JobSpec) -> None:
    """Raise :class:`InvalidInput` when the topology makes no sense for the framework."""
    if not JOB_ID_RE.match(spec.job_id):
        raise InvalidInput(
            f"Job id {spec.job_id!r} is not valid: 1-40 lowercase letters, digits and '-', starting with a letter."
        )
    if spec.framework not in FRAMEWORKS:
        raise InvalidInput(f"Framework {spec.framework!r} is not one of {', '.join(FRAMEWORKS)}.")
    if spec.project is not None and spec.project not in spec.owner_groups:
        raise InvalidInput(f"You are not in project {spec.project!r}; pick one of your projects.")
    if not 1 <= spec.workers <= MAX_WORKERS:
        raise InvalidInput(f"Workers must be from 1 to {MAX_WORKERS}, not {spec.workers}.")
    if not 1 <= spec.procs_per_worker <= MAX_PROCS_PER_WORKER:
        raise InvalidInput(f"Processes per worker must be from 1 to {MAX_PROCS_PER_WORKER}, not {spec.procs_per_worker}.")
    if spec.framework == "single" and (spec.workers, spec.procs_per_worker) != (1, 1):
        raise InvalidInput("A single-process job has one worker with one process.")
    if spec.framework == "tensorflow":
        if not 1 <= spec.parameter_servers <= MAX_PARAMETER_SERVERS:
            raise InvalidInput(f"A TensorFlow parameter-server job needs 1 to {MAX_PARAMETER_SERVERS} parameter servers.")
    elif spec.parameter_servers:
        raise InvalidInput("Only TensorFlow jobs have parameter servers.")
    gpus = spec.selection.gpus
    if gpus and spec.procs_per_worker > gpus:
        raise InvalidInput(
            f"{spec.procs_per_worker} processes per worker but {gpus} GPU(s) per worker: use at most one process per GPU."
        )
    if not spec.entrypoint or spec.entrypoint.startswith("/") or ".." in spec.entrypoint.split("/"):
        raise InvalidInput(f"Entrypoint {spec.entrypoint!r} must be a path inside the job folder.")
    for name, _ in spec.env:
        if not ENV_NAME_RE.match(name):
            raise InvalidInput(f"Environment variable name {name!r} is not valid.")
        if RESERVED_ENV.match(name):
            raise InvalidInput(f"Environment variable {name} is set by the platform and cannot be overridden.")
