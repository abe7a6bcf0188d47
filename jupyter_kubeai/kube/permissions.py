"""The Kubernetes permissions jupyter_kubeai needs, declared once.

The hub (KubeSpawner) and the kubeai service run in the hub's pod under one
service account, so both sets are listed here. ``kubeai doctor`` asks the
API about each one (a SelfSubjectAccessReview), ``deploy/rbac.yaml`` grants
them, and the RBAC test checks both against the requests the code makes
in the test suite (``tests/kubefake.py`` records them).

- :data:`NEEDED`: what the spawner and the backends call. Missing one makes
  a feature fail (a spawn, a submission, a deployment).
- :data:`DOCTOR`: what only ``kubeai doctor`` reads, to say what the cluster
  offers. Each is optional: without it the doctor says "unknown" for that
  check, nothing else is affected. Some are cluster-scoped (a ClusterRole).

Resources of operators that are not installed are listed too: RBAC grants
do not depend on a CRD existing, and installing the operator later must
not need a new grant.
"""

from __future__ import annotations

from dataclasses import dataclass

RBAC_FILE = "deploy/rbac.yaml"
#: The optional, read-only grants of what only the doctor reads.
RBAC_DOCTOR_FILE = "deploy/rbac-doctor.yaml"


@dataclass(frozen=True)
class Permission:
    """Verbs on one resource (``group`` ``""`` is the core API)."""

    group: str
    resource: str  # plural, with ``/subresource`` where it is one (``pods/log``)
    verbs: tuple[str, ...]
    used_by: str  # who calls it: spawner, jobs, serving, doctor
    cluster: bool = False  # cluster-scoped (a ClusterRole), else in the hub's namespace
    namespace: str = ""  # a fixed other namespace (KServe's config map), else the hub's
    names: tuple[str, ...] = ()  # granted on these objects only (RBAC ``resourceNames``)

    @property
    def plural(self) -> str:
        return self.resource.partition("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]

    @property
    def label(self) -> str:
        """``pods/log``, ``pytorchjobs.kubeflow.org``: as ``kubectl auth can-i`` names it."""
        return f"{self.plural}.{self.group}" + (f"/{self.subresource}" if self.subresource else "") if self.group else self.resource

    @property
    def file(self) -> str:
        """The manifest in ``deploy/`` that grants it: what only the doctor reads is apart."""
        return RBAC_DOCTOR_FILE if self.used_by == "doctor" else RBAC_FILE


# "get": a create whose answer was lost is repeated, and its "already exists" checked to be ours.
_TRAINING_VERBS = ("create", "delete", "get", "list", "watch")

NEEDED: tuple[Permission, ...] = (
    # KubeSpawner: the notebook pods (created, watched by its reflector, deleted), their events and
    # (with user_pvc) each user's PVC, read back when a create is refused.
    # The job backend deletes a job's pods by label; the serving backend watches runtime pods.
    Permission("", "pods", ("create", "delete", "deletecollection", "list", "watch"), "spawner, jobs, serving"),
    Permission("", "pods/log", ("get",), "jobs"),
    Permission("", "events", ("list", "watch"), "spawner, jobs, serving"),
    Permission("", "persistentvolumeclaims", ("create", "delete", "get"), "spawner"),
    # Training jobs: one kind per framework (whichever operators are installed), watched by label.
    Permission("kubeflow.org", "pytorchjobs", _TRAINING_VERBS, "jobs"),
    Permission("kubeflow.org", "tfjobs", _TRAINING_VERBS, "jobs"),
    Permission("kubeflow.org", "mpijobs", _TRAINING_VERBS, "jobs"),
    Permission("trainer.kubeflow.org", "trainjobs", _TRAINING_VERBS, "jobs"),
    # One server-side apply per submission (creates it, or changes only what we own).
    Permission("trainer.kubeflow.org", "trainingruntimes", ("patch",), "jobs"),
    Permission("batch", "jobs", _TRAINING_VERBS, "jobs"),
    # Inference services: an InferenceService with KServe, else Deployment + Service (+ HPA).
    Permission("serving.kserve.io", "inferenceservices", ("create", "delete", "get", "list", "patch", "watch"), "serving"),
    Permission("apps", "deployments", ("create", "delete", "get", "list", "patch", "watch"), "serving"),
    Permission("", "services", ("create", "delete", "get", "patch"), "serving"),
    Permission("autoscaling", "horizontalpodautoscalers", ("create", "delete", "get", "patch"), "serving"),
    # With KubernetesServing.owner_namespace_template: a policy per service letting its owner's namespace in.
    Permission("networking.k8s.io", "networkpolicies", ("create", "delete", "get"), "serving"),
)

#: Where KServe keeps its settings (the doctor reads the default deployment mode there).
KSERVE_NAMESPACE = "kserve"
KSERVE_CONFIG = "inferenceservice-config"

DOCTOR: tuple[Permission, ...] = (
    Permission("", "nodes", ("list",), "doctor", cluster=True),
    Permission("scheduling.volcano.sh", "queues", ("list",), "doctor", cluster=True),
    Permission("kueue.x-k8s.io", "localqueues", ("list",), "doctor"),
    Permission("kueue.x-k8s.io", "clusterqueues", ("list",), "doctor", cluster=True),
    Permission("", "configmaps", ("get",), "doctor", namespace=KSERVE_NAMESPACE, names=(KSERVE_CONFIG,)),
    # Why the share PVC does not bind: the StorageClass it names.
    Permission("storage.k8s.io", "storageclasses", ("get",), "doctor", cluster=True),
)

#: Every authenticated caller may create these (the ``system:basic-user`` ClusterRole); the doctor asks with them.
SELF_REVIEW = Permission("authorization.k8s.io", "selfsubjectaccessreviews", ("create",), "doctor", cluster=True)


def rules(permissions: tuple[Permission, ...] = NEEDED) -> list[dict]:
    """The permissions as RBAC ``rules`` (one per resource), for a Role or ClusterRole."""
    return [{"apiGroups": [p.group], "resources": [p.resource], **({"resourceNames": list(p.names)} if p.names else {}),
             "verbs": list(p.verbs)} for p in permissions]
