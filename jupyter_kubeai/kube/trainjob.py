"""Pure builders: PyTorch DDP as a Kubeflow Trainer ``TrainJob`` and its project's ``TrainingRuntime``.

Kubeflow Trainer (``trainer.kubeflow.org/v1alpha1``) splits a job in two: a
*runtime* (the JobSet template: volumes, scheduling, gang policy) and a
*TrainJob* that names the runtime and says what to run (image, command,
nodes, processes per node, resources). jupyter_kubeai keeps one namespaced
``TrainingRuntime`` per project (``kubeai-project-<project>``, and
``kubeai-personal`` for personal jobs); the backend applies it (server-side apply) at
each submission (:func:`make_training_runtime`).

The design problem, and the decision
------------------------------------
A runtime shared by a project cannot carry each user's home: the home is
``users/<owner>`` on the share (or the owner's own PVC), and a submitter
may also be in other projects whose folders their notebook sees. A runtime
per user (or per job) would multiply objects and defeat "the job only names
the runtime". TrainJob v1alpha1 offers ``spec.runtimePatches`` (the
successor of ``podTemplateOverrides``): a TrainJob may patch, per replicated
job, the pod template's labels, volumes, containers' ``volumeMounts`` and
``env``, node selector, tolerations and affinity. So:

- the **runtime** carries what every job of the project shares: the
  project's folder and the global folder, the node affinity to the
  project's resource pool, the scheduler (Volcano with
  ``podGroupPolicy.volcano``), the priority class, the JobSet TTL, and the
  ``node`` replicated job with its ``node`` container;
- the **TrainJob** names it and adds one patch (manager
  ``kubeai.jupyter.org/submit``) with what is the owner's or the size's
  own: the home and the owner's other projects, the job's labels on the
  pods, and for GPU sizes the GPU tolerations, node selector and packing
  affinity (CPU and GPU sizes share a project's runtime).

The patch API keys ``volumeMounts`` by volume *name*, so two mounts of one
volume (the usual one-PVC-many-subPaths layout) cannot both be patched in:
TrainJob pods therefore use one volume per mount
(``make_volumes(..., volume_per_mount=True)``), each naming the same claim.
Kueue works on the TrainJob (queue label, created suspended); the Volcano
queue is the TrainJob's ``scheduling.volcano.sh/queue-name`` annotation.

As in every kind, each node keeps its output in the job folder
(``logs/node-<i>.log``, :func:`~.training.in_job_dir`); a node's index is
its Indexed Job's completion index (the label JobSet's pods carry).
"""

from __future__ import annotations

import posixpath

from ..jobs.spec import JobSpec
from ..naming import slug
from .objects import StorageConfig, make_volumes, project_mount_path
from .training import (
    COMPLETION_INDEX_LABEL,
    KUEUE_QUEUE_LABEL,
    LABEL_PROJECT,
    LABEL_ROLE,
    MANAGED_BY,
    VOLCANO_QUEUE_ANNOTATION,
    Kind,
    Placement,
    env_vars,
    in_job_dir,
    labels,
    packing_affinity,
    pool_affinity,
    replica_env,
    resources,
)

TRAINJOB = Kind("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
TRAININGRUNTIME = Kind("trainer.kubeflow.org", "v1alpha1", "trainingruntimes", "TrainingRuntime")
#: The replicated job (and its container) that the torch runtime runs the trainer in.
NODE = "node"
PATCH_MANAGER = "kubeai.jupyter.org/submit"
#: How Trainer finds the replicated job its ``trainer`` settings apply to.
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"


def runtime_name(project: str | None) -> str:
    return f"kubeai-project-{slug(project)}" if project else "kubeai-personal"


def _runtime_paths(storage: StorageConfig, project: str | None) -> set[str]:
    """Mount paths the project's runtime carries (the same for every member)."""
    if storage.share == "none":
        return set()
    paths = {posixpath.normpath(storage.global_mount)}
    if project:
        paths.add(project_mount_path(storage, project))
    return paths


def _split(volumes: list[dict], mounts: list[dict], paths: set[str], *, shared: bool) -> tuple[list[dict], list[dict]]:
    """The volumes and mounts at ``paths`` (shared) or elsewhere (not shared)."""
    keep = [m for m in mounts if (posixpath.normpath(m["mountPath"]) in paths) is shared]
    names = {m["name"] for m in keep}
    return [v for v in volumes if v["name"] in names], keep


def make_training_runtime(project: str | None, where: Placement) -> dict:
    """The project's TrainingRuntime: shared folders, pool affinity, gang scheduling, TTL."""
    volumes, mounts = make_volumes(where.storage, "runtime", [project] if project else [], volume_per_mount=True)
    volumes, mounts = _split(volumes, mounts, _runtime_paths(where.storage, project), shared=True)
    # No Kubernetes credentials for the user's code (only the hub service holds any).
    pod: dict = {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "containers": [{"name": NODE, **({"volumeMounts": mounts} if mounts else {})}]}
    if volumes:
        pod["volumes"] = volumes
    affinity = pool_affinity(project, where)
    if affinity:
        pod["affinity"] = affinity
    if where.gang.scheduler == "volcano":
        pod["schedulerName"] = "volcano"
        if where.gang.priority_class:
            pod["priorityClassName"] = where.gang.priority_class
    meta_labels = {"app.kubernetes.io/managed-by": MANAGED_BY, "trainer.kubeflow.org/framework": "torch"}
    if project:
        meta_labels[LABEL_PROJECT] = slug(project)
    spec: dict = {
        "mlPolicy": {"numNodes": 1, "torch": {}},
        "template": {
            "spec": {
                "ttlSecondsAfterFinished": where.ttl_seconds_after_finished,
                "replicatedJobs": [
                    {
                        "name": NODE,
                        "template": {
                            "metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
                            "spec": {
                                "backoffLimit": 0,  # a failed rank fails the job
                                "template": {"metadata": {"labels": {"app.kubernetes.io/managed-by": MANAGED_BY}}, "spec": pod},
                            },
                        },
                    }
                ],
            }
        },
    }
    if where.gang.scheduler == "volcano":
        spec["podGroupPolicy"] = {"volcano": {}}
    return {
        "apiVersion": TRAININGRUNTIME.api_version,
        "kind": TRAININGRUNTIME.kind,
        "metadata": {"name": runtime_name(project), "labels": meta_labels},
        "spec": spec,
    }


def make_trainjob(spec: JobSpec, where: Placement) -> dict:
    """The TrainJob: names the project's runtime, patches in the owner's own mounts and the size's placement."""
    container_resources, scheduling = resources(spec.selection, where, spec.project)
    volumes, mounts = make_volumes(where.storage, spec.owner, spec.owner_groups, volume_per_mount=True)
    volumes, mounts = _split(volumes, mounts, _runtime_paths(where.storage, spec.project), shared=False)
    pod: dict = {}
    if volumes:
        pod["volumes"] = volumes
    if mounts:
        pod["containers"] = [{"name": NODE, "volumeMounts": mounts}]
    if scheduling["node_selector"]:
        pod["nodeSelector"] = scheduling["node_selector"]
    if scheduling["tolerations"]:
        pod["tolerations"] = scheduling["tolerations"]
    if spec.selection.gpus and packing_affinity(spec, where):
        pod["affinity"] = packing_affinity(spec, where)
    template: dict = {"metadata": {"labels": {**labels(spec), LABEL_ROLE: NODE}}}
    if pod:
        template["spec"] = pod
    patch = {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {
            "template": {"spec": {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": template}}}]}}
        },
    }
    meta: dict = {"name": spec.job_id, "labels": labels(spec)}
    job: dict = {
        "runtimeRef": {"apiGroup": TRAININGRUNTIME.group, "kind": TRAININGRUNTIME.kind, "name": runtime_name(spec.project)},
        "trainer": {
            "image": spec.selection.image_ref,
            "command": in_job_dir(["torchrun", spec.script]),
            "numNodes": spec.workers,
            "numProcPerNode": spec.procs_per_worker,
            "resourcesPerNode": container_resources,
            "env": env_vars(spec) + replica_env(NODE, COMPLETION_INDEX_LABEL),
        },
        "runtimePatches": [patch],
    }
    if where.gang.scheduler == "kueue":
        meta["labels"][KUEUE_QUEUE_LABEL] = where.gang.queue
        job["suspend"] = True  # Kueue unsuspends it once admitted
    if where.gang.scheduler == "volcano" and where.gang.queue:
        meta["annotations"] = {VOLCANO_QUEUE_ANNOTATION: where.gang.queue}
    return {"apiVersion": TRAINJOB.api_version, "kind": TRAINJOB.kind, "metadata": meta, "spec": job}
