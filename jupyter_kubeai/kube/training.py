"""Pure builders: a :class:`~jupyter_kubeai.jobs.spec.JobSpec` as Kubeflow training objects.

- PyTorch DDP -> ``PyTorchJob`` (kubeflow.org/v1): a Master and ``workers - 1``
  Workers, each running ``torchrun`` (the operator gives it the rendezvous
  through ``PET_*``; ``nprocPerNode`` processes per pod);
- TensorFlow parameter-server -> ``TFJob``: a Chief, PS and Workers (TF_CONFIG
  from the operator);
- Horovod/MPI -> ``MPIJob`` (kubeflow.org/v2beta1): a Launcher running
  ``mpirun`` and Workers with ``slotsPerWorker`` slots;
- single process -> a ``batch/v1`` Job.

Every pod gets the owner's mounts (home, projects, global), the catalog
image and the size's resources; GPU roles get the GPU limit and
tolerations, CPU-only roles (parameter servers, the MPI launcher) do not.
Gang scheduling is Volcano (``schedulerName`` and
``runPolicy.schedulingPolicy``, the operator making the PodGroup) or Kueue
(the queue label; created suspended until Kueue admits it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..catalog.access import Selection
from ..jobs.spec import JobSpec
from ..naming import slug
from .objects import GPUScheduling, StorageConfig, make_scheduling, make_volumes


@dataclass(frozen=True)
class Kind:
    """A Kubernetes kind the backend creates: declared once, here."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


PYTORCHJOB = Kind("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
TFJOB = Kind("kubeflow.org", "v1", "tfjobs", "TFJob")
MPIJOB = Kind("kubeflow.org", "v2beta1", "mpijobs", "MPIJob")
BATCHJOB = Kind("batch", "v1", "jobs", "Job")
#: framework -> the kind it runs as.
KIND_FOR = {"pytorch": PYTORCHJOB, "tensorflow": TFJOB, "mpi": MPIJOB, "single": BATCHJOB}

MANAGED_BY = "jupyter-kubeai"
LABEL_JOB = "kubeai.jupyter.org/job"
LABEL_OWNER = "kubeai.jupyter.org/owner"
LABEL_PROJECT = "kubeai.jupyter.org/project"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@dataclass(frozen=True)
class GangScheduling:
    """How all pods of a job are scheduled together (see the backend's settings)."""

    scheduler: str = ""  # "" (the default scheduler), "volcano" or "kueue"
    queue: str = ""  # Volcano queue or Kueue LocalQueue (usually one per project)
    priority_class: str = ""

    def __post_init__(self):
        if self.scheduler not in ("", "volcano", "kueue"):
            raise ValueError(f"gang scheduler must be volcano, kueue or empty, not {self.scheduler!r}")
        if self.scheduler == "kueue" and not self.queue:
            raise ValueError("Kueue needs a LocalQueue name")


@dataclass(frozen=True)
class Placement:
    """Cluster settings every job of the backend shares."""

    storage: StorageConfig = StorageConfig()
    gpu: GPUScheduling = GPUScheduling()
    gang: GangScheduling = GangScheduling()
    ttl_seconds_after_finished: int = 7 * 24 * 3600


def labels(spec: JobSpec) -> dict[str, str]:
    out = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_JOB: spec.job_id, LABEL_OWNER: slug(spec.owner)}
    if spec.project:
        out[LABEL_PROJECT] = slug(spec.project)
    return out


def _env(spec: JobSpec) -> list[dict]:
    env = {
        "KUBEAI_JOB_ID": spec.job_id,
        "KUBEAI_JOB_DIR": spec.job_dir,
        "KUBEAI_OWNER": spec.owner,
        "KUBEAI_PROJECT": spec.project or "",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(dict(spec.env))
    return [{"name": k, "value": v} for k, v in env.items()]


def pod_template(spec: JobSpec, where: Placement, *, container: str, command: list[str], gpus: bool = True) -> dict:
    """One role's pod template: mounts, image, resources, scheduling, labels."""
    selection: Selection = spec.selection if gpus else replace(spec.selection, gpus=0)
    profile = selection.profile
    volumes, mounts = make_volumes(where.storage, spec.owner, spec.owner_groups)
    scheduling = make_scheduling(selection, where.gpu, spec.project)
    limits = {"cpu": profile.cpu_limit, "memory": profile.memory_limit, **scheduling["extra_resource_limits"]}
    pod = {
        "containers": [
            {
                "name": container,
                "image": selection.image_ref,
                "command": command,
                "workingDir": spec.job_dir,
                "env": _env(spec),
                "resources": {"requests": {"cpu": profile.cpu_request, "memory": profile.memory_request}, "limits": limits},
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if scheduling["node_selector"]:
        pod["nodeSelector"] = scheduling["node_selector"]
    if scheduling["tolerations"]:
        pod["tolerations"] = scheduling["tolerations"]
    if where.gang.scheduler == "volcano":
        pod["schedulerName"] = "volcano"
    return {"metadata": {"labels": labels(spec)}, "spec": pod}


def _metadata(spec: JobSpec, where: Placement) -> dict:
    meta = {"name": spec.job_id, "labels": labels(spec)}
    if where.gang.scheduler == "kueue":
        meta["labels"][KUEUE_QUEUE_LABEL] = where.gang.queue
    return meta


def _run_policy(spec: JobSpec, where: Placement, pods: int) -> dict:
    policy = {
        # Finished pods stay (their logs are the job's record) until the TTL.
        "cleanPodPolicy": "None",
        "ttlSecondsAfterFinished": where.ttl_seconds_after_finished,
        # A failed rank fails the job: no silent restarts of half a gang.
        "backoffLimit": 0,
    }
    if where.gang.scheduler == "volcano":
        scheduling = {"minAvailable": pods}
        if where.gang.queue:
            scheduling["queue"] = where.gang.queue
        if where.gang.priority_class:
            scheduling["priorityClass"] = where.gang.priority_class
        policy["schedulingPolicy"] = scheduling
    if where.gang.scheduler == "kueue":
        policy["suspend"] = True  # Kueue unsuspends it once admitted
    return policy


def _replica(replicas: int, template: dict) -> dict:
    return {"replicas": replicas, "restartPolicy": "Never", "template": template}


def make_pytorchjob(spec: JobSpec, where: Placement) -> dict:
    command = ["torchrun", spec.script]
    template = pod_template(spec, where, container="pytorch", command=command)
    replicas = {"Master": _replica(1, template)}
    if spec.workers > 1:
        replicas["Worker"] = _replica(spec.workers - 1, template)
    return {
        "apiVersion": PYTORCHJOB.api_version,
        "kind": PYTORCHJOB.kind,
        "metadata": _metadata(spec, where),
        "spec": {
            "nprocPerNode": str(spec.procs_per_worker),
            "pytorchReplicaSpecs": replicas,
            "runPolicy": _run_policy(spec, where, spec.workers),
        },
    }


def make_tfjob(spec: JobSpec, where: Placement) -> dict:
    command = ["python", spec.script]
    worker = pod_template(spec, where, container="tensorflow", command=command)
    ps = pod_template(spec, where, container="tensorflow", command=command, gpus=False)
    replicas = {"Chief": _replica(1, worker), "PS": _replica(spec.parameter_servers, ps)}
    if spec.workers > 1:
        replicas["Worker"] = _replica(spec.workers - 1, worker)
    return {
        "apiVersion": TFJOB.api_version,
        "kind": TFJOB.kind,
        "metadata": _metadata(spec, where),
        "spec": {
            "tfReplicaSpecs": replicas,
            "runPolicy": _run_policy(spec, where, spec.workers + spec.parameter_servers),
        },
    }


def make_mpijob(spec: JobSpec, where: Placement) -> dict:
    ranks = spec.workers * spec.procs_per_worker
    launcher = pod_template(
        spec, where, container="launcher", gpus=False,
        command=["mpirun", "--allow-run-as-root", "-np", str(ranks), "-bind-to", "none", "python", spec.script],
    )
    worker = pod_template(spec, where, container="worker", command=["/usr/sbin/sshd", "-De"])
    return {
        "apiVersion": MPIJOB.api_version,
        "kind": MPIJOB.kind,
        "metadata": _metadata(spec, where),
        "spec": {
            "slotsPerWorker": spec.procs_per_worker,
            "mpiImplementation": "OpenMPI",
            "mpiReplicaSpecs": {"Launcher": _replica(1, launcher), "Worker": _replica(spec.workers, worker)},
            "runPolicy": _run_policy(spec, where, spec.workers + 1),
        },
    }


def make_batch_job(spec: JobSpec, where: Placement) -> dict:
    template = pod_template(spec, where, container="main", command=["python", spec.script])
    template["spec"]["restartPolicy"] = "Never"
    job_spec = {"backoffLimit": 0, "ttlSecondsAfterFinished": where.ttl_seconds_after_finished, "template": template}
    if where.gang.scheduler == "kueue":
        job_spec["suspend"] = True
    meta = _metadata(spec, where)
    if where.gang.scheduler == "volcano" and where.gang.queue:
        template["metadata"]["annotations"] = {"scheduling.volcano.sh/queue-name": where.gang.queue}
    return {"apiVersion": BATCHJOB.api_version, "kind": BATCHJOB.kind, "metadata": meta, "spec": job_spec}


BUILDERS = {"pytorch": make_pytorchjob, "tensorflow": make_tfjob, "mpi": make_mpijob, "single": make_batch_job}


def make_training_job(spec: JobSpec, where: Placement) -> dict:
    """The object for ``spec.framework``."""
    return BUILDERS[spec.framework](spec, where)
