"""Pure builders: a :class:`~jupyter_kubeai.jobs.spec.JobSpec` as Kubeflow training objects.

- PyTorch DDP -> ``PyTorchJob`` (kubeflow.org/v1): a Master and ``workers - 1``
  Workers, each running ``torchrun`` (the operator gives it the rendezvous
  through ``PET_*``; ``nprocPerNode`` processes per pod);
- TensorFlow parameter-server -> ``TFJob``: a Chief, PS and Workers (TF_CONFIG
  from the operator);
- Horovod/MPI -> ``MPIJob`` (kubeflow.org/v2beta1): a Launcher running
  ``mpirun`` and Workers with ``slotsPerWorker`` slots;
- single process -> a ``batch/v1`` Job.

(PyTorch DDP -> ``TrainJob`` of Kubeflow Trainer is in :mod:`.trainjob`.)

Every pod gets the owner's mounts (home, projects, global), the catalog
image and the size's resources; GPU roles get the GPU limit and
tolerations, CPU-only roles (parameter servers, the MPI launcher) do not.
Gang scheduling is Volcano (``schedulerName`` and
``runPolicy.schedulingPolicy``, the operator making the PodGroup) or Kueue
(the queue label; created suspended until Kueue admits it). A node
affinity keeps a project's pods on its resource pool (:class:`ResourcePools`),
and GPU roles can prefer to share a topology domain (packing).

The user's code runs through :func:`in_job_dir`: the job folder is created
by the container's own user before the code starts in it. A resubmitted job
runs its original's snapshot (``spec.snapshot_dir``) with a new job folder
that nobody has created yet, and a ``workingDir`` would have the container
runtime create it as root, possibly unwritable for the user.

Each replica also keeps its output in the job folder, on the share:
``logs/<replica>.log`` (stdout and stderr, also still the container's log)
and ``logs/<replica>.exit`` (the user code's exit status), with the replica
named as the backend names it (``master-0``, ``worker-1``, ``launcher``,
``node-2``...: :func:`replica_env`). The pods are deleted some time after
the job ends (the TTL); the log files stay with the record, and after a
restart of the service the exit markers say how a job ended whose objects
were deleted meanwhile.
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
#: On pod templates: the role (master, worker, chief, ps, launcher, node, main) replica names start with.
LABEL_ROLE = "kubeai.jupyter.org/role"
#: Roles with one pod: their replica is named without an index.
SINGLE_ROLES = ("launcher", "main")
#: The label the Kubeflow operators (training operator, MPI operator) put on pods with the replica's index.
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
#: The index label of an Indexed Job's pods (TrainJob's JobSet nodes).
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
#: Where a replica keeps its output in the job folder: ``<LOG_DIR>/<replica>.log`` and ``.exit``.
LOG_DIR = "logs"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
VOLCANO_QUEUE_ANNOTATION = "scheduling.volcano.sh/queue-name"


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
class ResourcePools:
    """Which nodes each project's jobs may use: a node label naming each node's pool."""

    label: str = ""  # the node label; "" = no pool affinity at all
    pools: tuple[tuple[str, str], ...] = ()  # project -> pool; a project not listed: its slug
    personal: str = ""  # the pool of personal jobs (no project); "" = any node

    def pool_for(self, project: str | None) -> str:
        if not self.label:
            return ""
        if project is None:
            return self.personal
        return dict(self.pools).get(project) or slug(project)


@dataclass(frozen=True)
class Placement:
    """Cluster settings every job of the backend shares."""

    storage: StorageConfig = StorageConfig()
    gpu: GPUScheduling = GPUScheduling()
    gang: GangScheduling = GangScheduling()
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    pools: ResourcePools = ResourcePools()
    #: Topology key (e.g. ``kubernetes.io/hostname``) GPU pods of one job prefer to share; "" = no packing.
    pack_topology_key: str = ""


def labels(spec: JobSpec) -> dict[str, str]:
    out = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_JOB: spec.job_id, LABEL_OWNER: slug(spec.owner)}
    if spec.project:
        out[LABEL_PROJECT] = slug(spec.project)
    return out


#: The shell every replica's command runs in (``/bin/sh -c``; the arguments are the command).
#:
#: POSIX sh, not bash: Debian's ``/bin/sh`` (dash, in our images and most others) has no
#: ``pipefail``, so ``cmd | tee`` would lose the code's exit status. Instead the code writes
#: into a FIFO read by ``tee``; the shell ``wait``s for the code (its status is the
#: container's) and forwards SIGTERM (the shell is PID 1, which ignores signals it does not
#: trap), then waits a little for ``tee`` to write the last lines. The code does not
#: ``exec`` into PID 1 because the kernel kills the rest of the container (``tee`` with the
#: end of the output) the moment PID 1 exits. ``$KUBEAI_REPLICA_*`` come from
#: :func:`replica_env`. It follows a first line that prepares the folder (:func:`in_job_dir`).
RUN_SCRIPT = f"""\
role=${{KUBEAI_REPLICA_ROLE:-main}}
case $role in
  {"|".join(SINGLE_ROLES)}) replica=$role ;;
  *) index=${{KUBEAI_REPLICA_INDEX:-${{HOSTNAME##*-}}}}; replica=$role-${{index:-0}} ;;
esac
log="$KUBEAI_JOB_DIR/{LOG_DIR}/$replica"
fifo="${{TMPDIR:-/tmp}}/kubeai-output-$$"
if ! {{ mkdir -p "$KUBEAI_JOB_DIR/{LOG_DIR}" && rm -f "$fifo" && mkfifo "$fifo"; }}; then
  echo "kubeai: cannot keep this replica's log in $KUBEAI_JOB_DIR/{LOG_DIR}; it is in the pod's log only" >&2
  exec "$@"
fi
tee -a "$log.log" <"$fifo" &
tee=$!
"$@" >"$fifo" 2>&1 &
code=$!
trap 'kill -TERM "$code" 2>/dev/null' TERM INT HUP
wait "$code"; status=$?
while kill -0 "$code" 2>/dev/null; do wait "$code"; status=$?; done
echo "$status" >"$log.exit" 2>/dev/null
rm -f "$fifo"
(sleep 10; kill "$tee" 2>/dev/null) >/dev/null 2>&1 &
wait "$tee"
exit "$status"
"""
#: The user's code needs its folder: no folder, no run.
_PREPARE_CODE = 'mkdir -p "$KUBEAI_JOB_DIR" && cd "$KUBEAI_JOB_DIR" || exit 1'
#: A helper (the MPI workers' sshd) runs anyway, without a kept log if the folder cannot be made.
_PREPARE_HELPER = '{ mkdir -p "$KUBEAI_JOB_DIR" && cd "$KUBEAI_JOB_DIR"; } 2>/dev/null || exec "$@"'


def in_job_dir(command: list[str], *, needs_folder: bool = True) -> list[str]:
    """``command`` run in the job folder (created by the container's user first, see above),
    its output kept in ``logs/<replica>.log`` and its exit status in ``logs/<replica>.exit``.

    ``needs_folder=False`` (a helper such as sshd): run it even where the folder cannot be made.
    """
    script = (_PREPARE_CODE if needs_folder else _PREPARE_HELPER) + "\n" + RUN_SCRIPT
    return ["/bin/sh", "-c", script, "kubeai-job", *command]


def replica_env(role: str, index_label: str = REPLICA_INDEX_LABEL) -> list[dict]:
    """The variables :data:`RUN_SCRIPT` names the replica by: the role, and (for roles with
    several pods) the index from the label the operator puts on the pod (Downward API)."""
    env = [{"name": "KUBEAI_REPLICA_ROLE", "value": role}]
    if role not in SINGLE_ROLES:
        field = {"fieldPath": f"metadata.labels['{index_label}']"}
        env.append({"name": "KUBEAI_REPLICA_INDEX", "valueFrom": {"fieldRef": field}})
    return env


def pool_affinity(project: str | None, where: Placement) -> dict:
    """A required node affinity to the project's resource pool ({} when pools are off)."""
    pool = where.pools.pool_for(project)
    if not pool:
        return {}
    term = {"matchExpressions": [{"key": where.pools.label, "operator": "In", "values": [pool]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def packing_affinity(spec: JobSpec, where: Placement) -> dict:
    """GPU pods of one job prefer the same topology domain: fewer, faster links between ranks."""
    if not where.pack_topology_key:
        return {}
    term = {"labelSelector": {"matchLabels": {LABEL_JOB: spec.job_id}}, "topologyKey": where.pack_topology_key}
    return {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}}


def resources(selection: Selection, where: Placement, project: str | None) -> tuple[dict, dict]:
    """(container ``resources``, scheduling) for a selection: requests, limits with GPUs, placement."""
    profile = selection.profile
    scheduling = make_scheduling(selection, where.gpu, project)
    limits = {"cpu": profile.cpu_limit, "memory": profile.memory_limit, **scheduling["extra_resource_limits"]}
    return {"requests": {"cpu": profile.cpu_request, "memory": profile.memory_request}, "limits": limits}, scheduling


def env_vars(spec: JobSpec) -> list[dict]:
    """The platform's variables (job id, folder, owner, project), then the user's."""
    env = {
        "KUBEAI_JOB_ID": spec.job_id,
        "KUBEAI_JOB_DIR": spec.job_dir,
        "KUBEAI_OWNER": spec.owner,
        "KUBEAI_PROJECT": spec.project or "",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(dict(spec.env))
    return [{"name": k, "value": v} for k, v in env.items()]


def pod_template(spec: JobSpec, where: Placement, *, role: str, container: str, command: list[str],
                 gpus: bool = True) -> dict:
    """One role's pod template: mounts, image, resources, scheduling, labels."""
    selection: Selection = spec.selection if gpus else replace(spec.selection, gpus=0)
    volumes, mounts = make_volumes(where.storage, spec.owner, spec.owner_groups)
    container_resources, scheduling = resources(selection, where, spec.project)
    pod = {
        "containers": [
            {
                "name": container,
                "image": selection.image_ref,
                "command": command,
                "env": env_vars(spec) + replica_env(role),
                "resources": container_resources,
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
        # The user's code gets no Kubernetes credentials: only the hub service holds any.
        "automountServiceAccountToken": False,
    }
    if scheduling["node_selector"]:
        pod["nodeSelector"] = scheduling["node_selector"]
    if scheduling["tolerations"]:
        pod["tolerations"] = scheduling["tolerations"]
    affinity = {**pool_affinity(spec.project, where), **(packing_affinity(spec, where) if selection.gpus else {})}
    if affinity:
        pod["affinity"] = affinity
    if where.gang.scheduler == "volcano":
        pod["schedulerName"] = "volcano"
    return {"metadata": {"labels": {**labels(spec), LABEL_ROLE: role}}, "spec": pod}


def _metadata(spec: JobSpec, where: Placement) -> dict:
    meta = {"name": spec.job_id, "labels": labels(spec)}
    if where.gang.scheduler == "kueue":
        meta["labels"][KUEUE_QUEUE_LABEL] = where.gang.queue
    return meta


def _run_policy(spec: JobSpec, where: Placement, pods: int) -> dict:
    policy = {
        # Finished pods stay (events, the pods' logs) until the TTL; the logs also stay in the job folder.
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
    command = in_job_dir(["torchrun", spec.script])
    replicas = {"Master": _replica(1, pod_template(spec, where, role="master", container="pytorch", command=command))}
    if spec.workers > 1:
        worker = pod_template(spec, where, role="worker", container="pytorch", command=command)
        replicas["Worker"] = _replica(spec.workers - 1, worker)
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
    command = in_job_dir(["python", spec.script])
    chief = pod_template(spec, where, role="chief", container="tensorflow", command=command)
    ps = pod_template(spec, where, role="ps", container="tensorflow", command=command, gpus=False)
    replicas = {"Chief": _replica(1, chief), "PS": _replica(spec.parameter_servers, ps)}
    if spec.workers > 1:
        worker = pod_template(spec, where, role="worker", container="tensorflow", command=command)
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
        spec, where, role="launcher", container="launcher", gpus=False,
        command=in_job_dir(["mpirun", "--allow-run-as-root", "-np", str(ranks), "-bind-to", "none", "python", spec.script]),
    )
    worker = pod_template(spec, where, role="worker", container="worker",
                          command=in_job_dir(["/usr/sbin/sshd", "-De"], needs_folder=False))
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
    template = pod_template(spec, where, role="main", container="main", command=in_job_dir(["python", spec.script]))
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
    """The object for ``spec.framework`` in its default kind (TrainJob: see :mod:`.trainjob`)."""
    return BUILDERS[spec.framework](spec, where)
