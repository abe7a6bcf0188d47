"""``kubeai doctor``: what the cluster offers jupyter_kubeai, what is missing, and how to fix it.

:func:`check_cluster` asks the API server, read-only, and returns one
:class:`Check` per line of the report:

- **cluster**: the API answers (its version);
- **training**: which Kubeflow kinds are served, in the versions the job
  backend builds (PyTorchJob, TFJob kubeflow.org/v1; MPIJob v2beta1;
  TrainJob + TrainingRuntime trainer.kubeflow.org/v1alpha1), and which kind
  each framework would run as;
- **scheduling**: Volcano or Kueue, and whether the queues the settings
  name (``queue_template`` for each known project, ``personal_queue``) exist;
- **serving**: KServe's InferenceService kind and its default deployment mode;
- **storage**: the share PVC exists, is Bound and ReadWriteMany;
- **gpu**: nodes with allocatable GPU resources, and the resource names
  the catalog's sizes ask for;
- **rbac**: one SelfSubjectAccessReview per verb of
  :mod:`~jupyter_kubeai.kube.permissions`.

A check that the credentials may not make (403) is a warning that says so,
never a crash. The hub service runs it for ``GET api/admin/doctor``;
``kubeai doctor --kubeconfig`` runs it from an admin's machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, replace

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

from ..backends.kubernetes import FRAMEWORK_KINDS, KINDS
from ..errors import InvalidInput
from ..naming import slug
from .client import ApiError, KubeClient, path_for
from .permissions import DOCTOR, KSERVE_CONFIG, KSERVE_NAMESPACE, NEEDED, RBAC_FILE, Permission
from .serving import INFERENCESERVICE
from .training import Kind
from .trainjob import TRAININGRUNTIME, TRAINJOB

OK, WARN, FAIL = "ok", "warn", "fail"
STATUSES = (OK, WARN, FAIL)
AREAS = ("cluster", "training", "scheduling", "serving", "storage", "gpu", "rbac")

PVC = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
NODE = Kind("", "v1", "nodes", "Node")
CONFIGMAP = Kind("", "v1", "configmaps", "ConfigMap")
STORAGECLASS = Kind("storage.k8s.io", "v1", "storageclasses", "StorageClass")
PODGROUP = Kind("scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup")
VOLCANO_QUEUE = Kind("scheduling.volcano.sh", "v1beta1", "queues", "Queue")
LOCALQUEUE = Kind("kueue.x-k8s.io", "v1beta2", "localqueues", "LocalQueue")
CLUSTERQUEUE = Kind("kueue.x-k8s.io", "v1beta2", "clusterqueues", "ClusterQueue")
#: Kueue's versions, the one to use first: v1beta1 is deprecated (the API answers it with a
#: warning) but is all that a cluster with Kueue before v0.16 serves.
KUEUE_VERSIONS = ("v1beta2", "v1beta1")
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

#: What to run when a kind is missing (the releases these builders are tested against).
INSTALL = {
    "kubeflow.org/v1": "Install the Kubeflow Training Operator: kubectl apply --server-side -k "
                       "\"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.8.1\"",
    "kubeflow.org/v2beta1": "Install the MPI Operator: kubectl apply --server-side -f "
                            "https://raw.githubusercontent.com/kubeflow/mpi-operator/v0.6.0/deploy/v2beta1/mpi-operator.yaml",
    "trainer.kubeflow.org/v1alpha1": "Install Kubeflow Trainer: kubectl apply --server-side -k "
                                     "\"github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.0.0\"",
    "volcano": "Install Volcano: kubectl apply -f "
               "https://raw.githubusercontent.com/volcano-sh/volcano/release-1.10/installer/volcano-development.yaml",
    "kueue": "Install Kueue: kubectl apply --server-side -f "
             "https://github.com/kubernetes-sigs/kueue/releases/download/v0.16.0/manifests.yaml",
    "kserve": "Install KServe in raw deployment mode (no Knative): see "
              "https://kserve.github.io/website/latest/admin/kubernetes_deployment/",
    "gpu": "Install your GPU vendor's device plugin (NVIDIA: the GPU Operator, "
           "helm install gpu-operator nvidia/gpu-operator -n gpu-operator --create-namespace)",
}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ``ok``, ``warn`` (optional, or unknown) or ``fail``."""

    area: str
    name: str
    status: str
    found: str
    fix: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DoctorSettings:
    """What the hub is configured to use (the backends' settings, as plain values)."""

    namespace: str = "default"
    kinds: tuple[tuple[str, str], ...] = ()  # framework -> forced kind (KubernetesBackend.kinds)
    gang_scheduler: str = "none"  # none | volcano | kueue
    queues: tuple[str, ...] = ()  # the queues jobs would name
    share_type: str = "pvc"
    share_claim_name: str = "kubeai-share"
    use_kserve: str = "auto"  # auto | true | false
    kserve_deployment_mode: str = "RawDeployment"
    kserve_namespace: str = KSERVE_NAMESPACE
    gpu_resources: tuple[str, ...] = ()  # GPU resource names the catalog's sizes ask for
    permissions: tuple[Permission, ...] = NEEDED
    optional_permissions: tuple[Permission, ...] = DOCTOR


def gpu_resources_of(profiles: Iterable) -> list[str]:
    """The GPU resource names the catalog's sizes ask for (``catalog.model.Profile``)."""
    return sorted({p.gpu_resource for p in profiles if p.max_gpus or p.gpus})


def settings_for(backend, serving=None, *, projects: Iterable[str] = (), gpu_resources: Iterable[str] = ()) -> DoctorSettings:
    """The settings of a ``KubernetesBackend`` (and ``KubernetesServing``), for the queues of ``projects``."""
    queues = {backend.queue_template.format(project=slug(p)) for p in projects} | {backend.personal_queue}
    use_kserve = getattr(serving, "use_kserve", "auto")
    return DoctorSettings(
        namespace=backend.namespace,
        kinds=tuple(sorted(backend.kinds.items())),
        gang_scheduler=backend.gang_scheduler.lower(),
        queues=tuple(sorted(queues)),
        share_type=backend.share_type,
        share_claim_name=backend.share_claim_name,
        use_kserve=str(use_kserve).lower(),
        kserve_deployment_mode=getattr(serving, "kserve_deployment_mode", "RawDeployment"),
        gpu_resources=tuple(sorted(set(gpu_resources))),
    )


async def connect(kubeconfig: str | None = None, *, context: str | None = None, in_cluster: bool = False,
                  request_timeout: float = 15) -> KubeClient:
    """A client with the given credentials: a kubeconfig (and context), the pod's service account, else as the service loads them."""
    if not kubeconfig and not in_cluster:
        return await KubeClient.connect(request_timeout)
    configuration = Configuration()
    try:
        if in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            await kube_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (kube_config.ConfigException, OSError) as e:
        where = "the pod's service account (not in a pod?)" if in_cluster else f"kubeconfig {kubeconfig}"
        raise InvalidInput(f"Cannot use {where}: {e}") from None
    return KubeClient(ApiClient(configuration), request_timeout)


def summary(checks: Iterable[Check]) -> str:
    """The worst status of all (``fail`` > ``warn`` > ``ok``)."""
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


class _Discovery:
    """API discovery, each group asked once per run: ``{version: {plurals}}``."""

    def __init__(self, client: KubeClient):
        self.client = client
        self._groups: dict[str, asyncio.Task] = {}

    async def group(self, name: str) -> dict[str, set[str]]:
        if name not in self._groups:  # areas run concurrently: the first asks, the others wait for it
            self._groups[name] = asyncio.ensure_future(self._ask(name))
        return await self._groups[name]

    async def _ask(self, name: str) -> dict[str, set[str]]:
        try:
            group = await self.client.request("GET", f"/apis/{name}")
        except ApiError as e:
            if e.status == 404:
                return {}
            raise
        versions = [v["version"] for v in group.get("versions", [])]
        served = await asyncio.gather(*(self.client.group_version_resources(name, v) for v in versions))
        return dict(zip(versions, served))

    async def serves(self, kind: Kind) -> bool:
        return kind.plural in (await self.group(kind.group)).get(kind.version, set())

    async def versions_of(self, kind: Kind) -> list[str]:
        """The versions of ``kind.group`` that serve ``kind.plural``."""
        return sorted(v for v, plurals in (await self.group(kind.group)).items() if kind.plural in plurals)


def _denied(area: str, name: str, e: ApiError, what: str, permission: Permission | None = None) -> Check:
    """A check the credentials could not make: unknown, with how to allow it."""
    if e.status in (401, 403):
        fix = (f"Optional: let the hub's service account {' and '.join(permission.verbs)} {permission.label}"
               f"{' cluster-wide' if permission.cluster else ''} (apply {permission.file}), to check this."
               if permission else f"Give the hub's service account read access to {what} (see {RBAC_FILE}).")
        return Check(area, name, WARN, f"unknown: not allowed to read {what} ({e.status})", fix)
    return Check(area, name, WARN, f"unknown: reading {what} failed ({e.status} {e.reason}: {e.message})")


def _optional(resource: str) -> Permission | None:
    return next((p for p in DOCTOR if p.plural == resource), None)


# --- cluster -------------------------------------------------------------------------------------


async def check_api(client: KubeClient, settings: DoctorSettings) -> list[Check]:
    version = await client.request("GET", "/version")
    return [Check("cluster", "API server", OK, f"Kubernetes {version.get('gitVersion', '?')}; namespace {settings.namespace}")]


# --- training ------------------------------------------------------------------------------------


async def check_training(discovery: _Discovery, settings: DoctorSettings) -> list[Check]:
    forced = dict(settings.kinds)
    checks, available = [], {"Job"}
    for name, (kind, _, _) in KINDS.items():
        if kind.group == "batch":
            continue
        wanted = f"{kind.group}/{kind.version}"
        versions = await discovery.versions_of(kind)
        if kind.version in versions:
            if kind is TRAINJOB and not await discovery.serves(TRAININGRUNTIME):
                checks.append(Check("training", name, FAIL, f"{wanted} trainjobs served, but not trainingruntimes",
                                    f"Reinstall Kubeflow Trainer with its TrainingRuntime CRD. {INSTALL[wanted]}"))
                continue
            available.add(name)
            checks.append(Check("training", name, OK, f"installed: {wanted}"))
            continue
        needed_by = [f for f, kinds in FRAMEWORK_KINDS.items() if name in kinds]
        status = FAIL if name in forced.values() else WARN
        if versions:
            found = f"only {', '.join(f'{kind.group}/{v}' for v in versions)} served; this hub builds {wanted}"
            fix = f"Upgrade the operator so it serves {wanted}. {INSTALL.get(wanted, '')}".strip()
        else:
            found = "not installed"
            fix = f"{INSTALL.get(wanted, 'Install its operator.')} (until then, {' and '.join(needed_by)} jobs cannot run as {name})"
        checks.append(Check("training", name, status, found, fix))
    runs_as = {}
    for framework, kinds in FRAMEWORK_KINDS.items():
        choice = forced.get(framework)
        runs_as[framework] = (choice if choice in available else None) if choice else next((k for k in kinds if k in available), None)
    missing = [f for f, k in runs_as.items() if k is None]
    found = ", ".join(f"{f} -> {k or 'none'}" for f, k in runs_as.items())
    fix = f"Jobs of {', '.join(missing)} are refused until an operator for them is installed (see above)." if missing else ""
    checks.append(Check("training", "frameworks", WARN if missing else OK, found, fix))
    return checks


# --- scheduling ----------------------------------------------------------------------------------


async def check_scheduling(client: KubeClient, discovery: _Discovery, settings: DoctorSettings) -> list[Check]:
    checks = []
    used = settings.gang_scheduler
    volcano = await discovery.serves(PODGROUP) and await discovery.serves(VOLCANO_QUEUE)
    kueue_version = await _kueue_version(discovery)
    kueue = kueue_version is not None
    for name, present, api in (("volcano", volcano, "scheduling.volcano.sh/v1beta1 PodGroup, Queue"),
                               ("kueue", kueue, f"kueue.x-k8s.io/{kueue_version} LocalQueue, ClusterQueue")):
        label = name.capitalize()
        if present:
            note = "" if used == name else " (not used: gang_scheduler is " + used + ")"
            if name == "kueue" and kueue_version != KUEUE_VERSIONS[0]:
                checks.append(Check("scheduling", label, WARN, f"installed: {api}, deprecated{note}",
                                    f"Upgrade Kueue to a release that serves kueue.x-k8s.io/{KUEUE_VERSIONS[0]}. "
                                    f"{INSTALL['kueue']}"))
                continue
            checks.append(Check("scheduling", label, OK, f"installed: {api}{note}"))
        elif used == name:
            checks.append(Check("scheduling", label, FAIL, f"not installed, but gang_scheduler is {name}",
                                f"{INSTALL[name]}, or set c.KubernetesBackend.gang_scheduler = 'none'."))
        else:
            checks.append(Check("scheduling", label, OK, f"not installed (not used: gang_scheduler is {used})"))
    if used == "volcano" and volcano:
        checks += await _volcano_queues(client, settings)
    if used == "kueue" and kueue:
        checks += await _kueue_queues(client, settings, kueue_version)
    return checks


async def _kueue_version(discovery: _Discovery) -> str | None:
    """The newest of :data:`KUEUE_VERSIONS` that serves both queue kinds (API discovery decides)."""
    for version in KUEUE_VERSIONS:
        if await discovery.serves(replace(LOCALQUEUE, version=version)) and \
                await discovery.serves(replace(CLUSTERQUEUE, version=version)):
            return version
    return None


async def _volcano_queues(client: KubeClient, settings: DoctorSettings) -> list[Check]:
    try:
        listed = await client.request("GET", path_for(VOLCANO_QUEUE, None))
    except ApiError as e:
        return [_denied("scheduling", "Volcano queues", e, "Volcano queues", _optional("queues"))]
    queues = {q["metadata"]["name"]: q for q in listed.get("items", [])}
    checks = []
    for name in settings.queues:
        queue = queues.get(name)
        if queue is None:
            checks.append(Check("scheduling", f"queue {name}", FAIL, "no such Volcano Queue",
                                f"Create it: a scheduling.volcano.sh/v1beta1 Queue named {name!r} with its capability "
                                "(the project's share of the cluster); see the admin guide, \"Queues and quotas\"."))
            continue
        state = (queue.get("status") or {}).get("state", "Open")
        capability = (queue.get("spec") or {}).get("capability") or {}
        limits = ", ".join(f"{k}={v}" for k, v in sorted(capability.items())) or "no capability limit"
        if state != "Open":
            checks.append(Check("scheduling", f"queue {name}", FAIL, f"state {state}; {limits}",
                                f"Open it: vcctl queue operate --name {name} --action open"))
        else:
            checks.append(Check("scheduling", f"queue {name}", OK, f"Open; {limits}"))
    return checks


async def _kueue_queues(client: KubeClient, settings: DoctorSettings, version: str) -> list[Check]:
    local_kind, cluster_kind = replace(LOCALQUEUE, version=version), replace(CLUSTERQUEUE, version=version)
    try:
        listed = await client.request("GET", path_for(local_kind, settings.namespace))
    except ApiError as e:
        return [_denied("scheduling", "Kueue LocalQueues", e, f"LocalQueues in {settings.namespace}", _optional("localqueues"))]
    local = {q["metadata"]["name"]: q for q in listed.get("items", [])}
    cluster: set[str] | None
    try:
        cluster = {q["metadata"]["name"] for q in (await client.request("GET", path_for(cluster_kind, None))).get("items", [])}
    except ApiError:
        cluster = None  # only the LocalQueues are checked then
    checks = []
    for name in settings.queues:
        queue = local.get(name)
        if queue is None:
            checks.append(Check("scheduling", f"queue {name}", FAIL, f"no LocalQueue {name!r} in namespace {settings.namespace}",
                                f"Create it: a kueue.x-k8s.io/{version} LocalQueue named {name!r} in namespace "
                                f"{settings.namespace}, pointing at the project's ClusterQueue; see the admin guide, \"Queues and quotas\"."))
            continue
        target = (queue.get("spec") or {}).get("clusterQueue", "")
        if cluster is not None and target not in cluster:
            checks.append(Check("scheduling", f"queue {name}", FAIL, f"LocalQueue -> ClusterQueue {target!r}, which does not exist",
                                f"Create the ClusterQueue {target!r} (its resource groups and quotas), or point the LocalQueue at another."))
        else:
            checks.append(Check("scheduling", f"queue {name}", OK, f"LocalQueue -> ClusterQueue {target}"
                                + ("" if cluster is not None else " (ClusterQueues not readable)")))
    return checks


# --- serving -------------------------------------------------------------------------------------


async def check_serving(client: KubeClient, discovery: _Discovery, settings: DoctorSettings) -> list[Check]:
    versions = await discovery.versions_of(INFERENCESERVICE)
    wanted = f"{INFERENCESERVICE.group}/{INFERENCESERVICE.version}"
    if INFERENCESERVICE.version not in versions:
        found = f"only {', '.join(versions)} served; this hub builds {wanted}" if versions else "not installed"
        if settings.use_kserve == "true":
            return [Check("serving", "KServe", FAIL, f"{found}, but use_kserve is True",
                          f"{INSTALL['kserve']}, or set c.KubernetesServing.use_kserve = 'auto'.")]
        if settings.use_kserve == "false":
            return [Check("serving", "KServe", OK, f"{found} (not used: use_kserve is False)")]
        return [Check("serving", "KServe", WARN, f"{found}: models are served as Deployment + Service (+ HPA)",
                      f"Optional. {INSTALL['kserve']}")]
    note = " (not used: use_kserve is False)" if settings.use_kserve == "false" else ""
    served = sorted(await discovery.group(INFERENCESERVICE.group))  # the group's versions (ServingRuntimes are v1alpha1)
    checks = [Check("serving", "KServe", OK, f"installed: {wanted} (versions {', '.join(served)}){note}")]
    name = f"{settings.kserve_namespace}/{KSERVE_CONFIG}"
    try:
        config = await client.get(CONFIGMAP, settings.kserve_namespace, KSERVE_CONFIG)
    except ApiError as e:
        if e.status == 404:
            # KServe installed elsewhere: harmless, each InferenceService names its mode anyway.
            checks.append(Check("serving", "KServe mode", WARN, f"unknown: no ConfigMap {name}; this hub asks for "
                                f"{settings.kserve_deployment_mode} on each InferenceService"))
        else:
            checks.append(_denied("serving", "KServe mode", e, f"ConfigMap {name}", _optional("configmaps")))
        return checks
    try:
        mode = json.loads((config.get("data") or {}).get("deploy", "{}")).get("defaultDeploymentMode") or "Serverless"
    except (ValueError, AttributeError):
        mode = "unknown"
    checks.append(Check("serving", "KServe mode", OK,
                        f"cluster default {mode}; this hub asks for {settings.kserve_deployment_mode} on each InferenceService"))
    return checks


# --- storage -------------------------------------------------------------------------------------


async def _storage_class(client: KubeClient, name: str | None) -> list[Check]:
    """Why a PVC may not bind: the StorageClass it names does not exist (no check without a name)."""
    if not name:
        return []
    label = f"storage class {name}"
    try:
        storage_class = await client.get(STORAGECLASS, None, name)
    except ApiError as e:
        if e.status == 404:
            return [Check("storage", label, FAIL, f"no StorageClass {name!r}",
                          "Create it (e.g. Rook's CephFS class or an NFS provisioner's), or name an existing one "
                          "(kubectl get storageclass) in the PVC and recreate it.")]
        return [_denied("storage", label, e, "StorageClasses", _optional("storageclasses"))]
    return [Check("storage", label, OK, f"provisioner {storage_class.get('provisioner', '?')}")]


async def check_storage(client: KubeClient, settings: DoctorSettings) -> list[Check]:
    if settings.share_type == "none":
        return [Check("storage", "share", WARN, "share_type is none: no shared storage",
                      "Jobs cannot see the notebooks' folders and models cannot be served: configure a "
                      "ReadWriteMany share (c.KubeSettings.share_type = 'pvc'; see the admin guide, storage).")]
    if settings.share_type == "nfs":
        return [Check("storage", "share", OK, "NFS export mounted directly (not checked from the API)")]
    name = f"share PVC {settings.share_claim_name}"
    try:
        pvc = await client.get(PVC, settings.namespace, settings.share_claim_name)
    except ApiError as e:
        if e.status == 404:
            return [Check("storage", name, FAIL, f"no PVC {settings.share_claim_name!r} in namespace {settings.namespace}",
                          f"Create it (ReadWriteMany, on CephFS or NFS): kubectl apply -n {settings.namespace} -f "
                          "deploy/storage/cephfs-pvc.yaml (or deploy/storage/nfs-pv-pvc.yaml).")]
        return [_denied("storage", name, e, f"PVC {settings.share_claim_name}")]
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    phase = status.get("phase", "Pending")
    modes = status.get("accessModes") or spec.get("accessModes") or []
    storage_class = spec.get("storageClassName") or "(default class)"
    size = (status.get("capacity") or {}).get("storage") or ((spec.get("resources") or {}).get("requests") or {}).get("storage", "?")
    found = f"{phase}, {', '.join(modes) or 'no access modes'}, storage class {storage_class}, {size}"
    if phase != "Bound":
        return [Check("storage", name, FAIL, found,
                      f"The PVC is not bound: see kubectl describe pvc -n {settings.namespace} {settings.share_claim_name} "
                      f"(is there a provisioner for {storage_class}, or a matching PersistentVolume?)."),
                *await _storage_class(client, spec.get("storageClassName"))]
    if "ReadWriteMany" not in modes:
        return [Check("storage", name, FAIL, found,
                      "Notebooks and jobs on several nodes mount it at once: recreate it with accessModes "
                      "[ReadWriteMany] on a class that supports it (CephFS, NFS).")]
    return [Check("storage", name, OK, found)]


# --- GPUs ----------------------------------------------------------------------------------------


def gpu_resources(node: dict) -> dict[str, int]:
    """The node's allocatable GPU-like resources (``nvidia.com/gpu``, ``amd.com/gpu``, any ``*gpu*``) > 0."""
    found = {}
    for name, quantity in ((node.get("status") or {}).get("allocatable") or {}).items():
        if "gpu" in name.lower():
            try:
                count = int(str(quantity))
            except ValueError:
                continue
            if count > 0:
                found[name] = count
    return found


async def check_gpus(client: KubeClient, settings: DoctorSettings) -> list[Check]:
    try:
        nodes = (await client.request("GET", path_for(NODE, None))).get("items", [])
    except ApiError as e:
        return [_denied("gpu", "GPU nodes", e, "nodes", _optional("nodes"))]
    per_resource: dict[str, list[int]] = {}
    gpu_nodes = 0
    for node in nodes:
        found = gpu_resources(node)
        gpu_nodes += bool(found)
        for name, count in found.items():
            per_resource.setdefault(name, []).append(count)
    if not per_resource:
        checks = [Check("gpu", "GPU nodes", WARN, f"none of {len(nodes)} node(s) offers a GPU resource",
                        f"{INSTALL['gpu']}; or, with a node autoscaler, GPU nodes appear when a pod asks.")]
    else:
        offered = ", ".join(f"{name} ({len(counts)} node(s), {sum(counts)} in all)" for name, counts in sorted(per_resource.items()))
        checks = [Check("gpu", "GPU nodes", OK, f"{gpu_nodes} of {len(nodes)} node(s): {offered}")]
    for name in settings.gpu_resources:
        if name not in per_resource:
            checks.append(Check("gpu", f"sizes asking for {name}", WARN, f"no node offers {name}",
                                f"Servers and jobs of these sizes stay Pending: fix the sizes' GPU resource on the admin "
                                f"page (nodes offer {', '.join(sorted(per_resource)) or 'none'}), or add such nodes."))
    return checks


# --- RBAC ----------------------------------------------------------------------------------------


async def can_i(client: KubeClient, verb: str, permission: Permission, namespace: str) -> bool:
    """Whether our credentials may ``verb`` the resource (a SelfSubjectAccessReview).

    A permission granted on named objects only (``resourceNames``) is asked
    for each name: a review without the name asks about every object of the
    kind, which such a grant does not allow, although the real request does.
    """
    attributes = {"verb": verb, "group": permission.group, "resource": permission.plural}
    if permission.subresource:
        attributes["subresource"] = permission.subresource
    if not permission.cluster:
        attributes["namespace"] = permission.namespace or namespace

    async def ask(name: str | None) -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {**attributes, **({"name": name} if name else {})}}}
        answer = await client.request("POST", SSAR, body=review)
        return bool((answer.get("status") or {}).get("allowed"))

    return all(await asyncio.gather(*(ask(name) for name in permission.names or (None,))))


async def check_rbac(client: KubeClient, settings: DoctorSettings, parallel: int = 8) -> list[Check]:
    gate = asyncio.Semaphore(parallel)

    async def ask(verb: str, permission: Permission) -> bool:
        async with gate:
            return await can_i(client, verb, permission, settings.namespace)

    everything = [(p, False) for p in settings.permissions] + [(p, True) for p in settings.optional_permissions]
    try:
        answers = await asyncio.gather(*(asyncio.gather(*(ask(v, p) for v in p.verbs)) for p, _ in everything))
    except ApiError as e:
        return [Check("rbac", "access reviews", WARN, f"unknown: the API refused a SelfSubjectAccessReview ({e.status} {e.message})",
                      "Every authenticated account may create them (ClusterRole system:basic-user); check that it is bound.")]
    checks = []
    for (permission, optional), allowed in zip(everything, answers):
        denied = [v for v, ok in zip(permission.verbs, allowed) if not ok]
        where = ("cluster-wide (a ClusterRole)" if permission.cluster
                 else f"in namespace {permission.namespace or settings.namespace}")
        if permission.names:
            where = f"({', '.join(permission.names)} only) {where}"
        if not denied:
            checks.append(Check("rbac", permission.label, OK, f"allowed: {', '.join(permission.verbs)} {where}"))
            continue
        grant = f"Give the hub's service account {', '.join(repr(v) for v in denied)} on {permission.label} {where}: see {permission.file}."
        if optional:
            grant = f"Optional (only kubeai doctor reads it). {grant}"
        checks.append(Check("rbac", permission.label, WARN if optional else FAIL,
                            f"denied: {', '.join(denied)}; used by {permission.used_by}", grant))
    return checks


# --- all of it -----------------------------------------------------------------------------------


async def _area(area: str, run: Callable[[], Awaitable[list[Check]]]) -> list[Check]:
    """One area's checks; an unexpected error becomes a warning line, not a failed report."""
    try:
        return await run()
    except ApiError as e:
        return [Check(area, "checks", WARN, f"unknown: the API answered {e.status} {e.reason}: {e.message}")]
    except Exception as e:  # a network error, an odd answer: the other areas still report
        return [Check(area, "checks", WARN, f"unknown: {type(e).__name__}: {e}")]


async def check_cluster(client: KubeClient, settings: DoctorSettings) -> list[Check]:
    """Every check, grouped by area in :data:`AREAS` order."""
    try:
        checks = await check_api(client, settings)
    except Exception as e:
        host = getattr(getattr(client.api_client, "configuration", None), "host", "the API server")
        return [Check("cluster", "API server", FAIL, f"no answer from {host}: {e}",
                      "Check the credentials: the hub's service account in the pod, or --kubeconfig/--context.")]
    discovery = _Discovery(client)
    areas = await asyncio.gather(
        _area("training", lambda: check_training(discovery, settings)),
        _area("scheduling", lambda: check_scheduling(client, discovery, settings)),
        _area("serving", lambda: check_serving(client, discovery, settings)),
        _area("storage", lambda: check_storage(client, settings)),
        _area("gpu", lambda: check_gpus(client, settings)),
        _area("rbac", lambda: check_rbac(client, settings)),
    )
    for found in areas:
        checks.extend(found)
    return checks
