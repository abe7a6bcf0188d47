"""Pure builders: a :class:`~jupyter_kubeai.models.spec.DeploymentSpec` as Kubernetes serving objects.

Two shapes, picked by the backend (:mod:`jupyter_kubeai.backends.kubernetes_serving`):

- **KServe** (when its CRDs exist): one ``InferenceService``
  (serving.kserve.io/v1beta1) in raw mode (``serving.kserve.io/deploymentMode``:
  ``RawDeployment``, which KServe >= 0.15 calls ``Standard`` and still
  accepts; no Knative). The model is the registry folder on the share PVC,
  ``pvc://<share claim>/<model_subpath>``, which KServe mounts at
  ``/mnt/models``. The predictor is the project's runtime
  (``python -m jupyter_kubeai.serving``) as a custom container named
  ``kserve-container`` (its ``STORAGE_URI`` names the model), or KServe's own
  ``sklearn`` runtime for formats listed in ``builtin_formats``.
  An NFS share has no PVC for ``pvc://``: the runtime container then mounts
  the version's folder straight from the export, read-only, at
  ``/mnt/models`` (raw mode allows any volume), and built-in runtimes are not
  used (they only read a ``storageUri``).
- **Plain Kubernetes** (no KServe): a ``Deployment`` (rolling update with
  ``maxUnavailable: 0``, readiness on ``/v2/health/ready``, a ``preStop``
  pause and a grace period so the runtime drains), a ``Service`` (port 80 to
  8080) and, when ``max_replicas > replicas``, a ``HorizontalPodAutoscaler``
  (autoscaling/v2, on CPU). The version's folder is mounted read-only from
  the share (``subPath`` on the PVC, or the NFS export's sub-folder).

Whatever the shape and the runtime (ours or KServe's built-in one), the model
answers under the **service's** name (``/v1/models/<service>:predict``,
``/v2/models/<service>/infer``), as KServe names a model after its
InferenceService.

The model is decoupled from the image: an update or a rollback renders the
same objects with another ``model_subpath``/``version``, and the backend
passes the image the deployment already runs (``ServingPlacement.image``),
so only the model path, the version labels, replicas and resources change.

The status functions at the end turn the objects, their pods and events
(from the watch cache) into a :class:`~jupyter_kubeai.models.spec.ServiceStatus`.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass

from kubespawner.slugs import is_valid_label, safe_slug

from ..models.spec import DeploymentSpec, ServiceStatus
from ..naming import slug
from .jobstate import unschedulable
from .objects import GPUScheduling, StorageConfig, make_scheduling
from .training import LABEL_OWNER, LABEL_PROJECT, MANAGED_BY, Kind

INFERENCESERVICE = Kind("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
SERVICE = Kind("", "v1", "services", "Service")
HPA = Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
NETWORKPOLICY = Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SERVICE = "kubeai.jupyter.org/service"
LABEL_MODEL = "kubeai.jupyter.org/model"
LABEL_VERSION = "kubeai.jupyter.org/model-version"
ANNOTATION_MODEL_PATH = "kubeai.jupyter.org/model-path"
KSERVE_MODE = "serving.kserve.io/deploymentMode"
KSERVE_AUTOSCALER = "serving.kserve.io/autoscalerClass"
#: The container KServe looks for (its ``STORAGE_URI``) in a custom predictor.
KSERVE_CONTAINER = "kserve-container"
#: KServe's built-in runtimes, by model format (spec.FORMATS).
KSERVE_BUILTIN = ("sklearn",)

MODEL_DIR = "/mnt/models"
PORT = 8080
MODEL_VOLUME = "model"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"


@dataclass(frozen=True)
class ServingPlacement:
    """Cluster settings every deployment of the backend shares (see its traits)."""

    namespace: str = "default"
    storage: StorageConfig = StorageConfig()
    gpu: GPUScheduling = GPUScheduling()
    #: The runtime image; "" = the catalog selection's image (``spec.selection.image_ref``).
    image: str = ""
    #: ``serving.kserve.io/deploymentMode``: ``RawDeployment`` (every KServe) or ``Standard`` (>= 0.15).
    kserve_mode: str = "RawDeployment"
    #: Model formats KServe's own runtimes serve instead of ours (a subset of KSERVE_BUILTIN).
    builtin_formats: tuple[str, ...] = ()
    #: Seconds a stopping pod keeps serving while the endpoints forget it (``preStop``).
    drain_seconds: int = 5
    #: Seconds a stopping pod has in all (the pause, then the runtime's drain on SIGTERM).
    termination_grace_seconds: int = 30
    #: Average CPU use (% of the request) the autoscaler keeps (plain Kubernetes).
    cpu_target_percent: int = 70
    cluster_domain: str = "cluster.local"
    url_scheme: str = "http"
    #: The namespace of a user's notebooks (``{username}``: the owner's slug); "" = no per-service policy.
    owner_namespace_template: str = ""

    def __post_init__(self):
        if self.kserve_mode not in ("RawDeployment", "Standard"):
            raise ValueError(f"KServe deployment mode must be RawDeployment or Standard, not {self.kserve_mode!r}")
        unknown = set(self.builtin_formats) - set(KSERVE_BUILTIN)
        if unknown:
            raise ValueError(f"KServe has no built-in runtime for {sorted(unknown)}; it has {list(KSERVE_BUILTIN)}")
        if self.termination_grace_seconds <= self.drain_seconds:
            raise ValueError("the termination grace period must be longer than the drain pause")


# --- pieces -----------------------------------------------------------------------------------------

def labels(spec: DeploymentSpec) -> dict[str, str]:
    """Owner, project, model and version: on every object and pod of the deployment."""
    out = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SERVICE: spec.name,
        LABEL_OWNER: slug(spec.owner),
        LABEL_MODEL: safe_slug(spec.model, is_valid=is_valid_label, max_length=63),
        LABEL_VERSION: str(spec.version),
    }
    if spec.project:
        out[LABEL_PROJECT] = slug(spec.project)
    return out


def selector(name: str) -> dict[str, str]:
    """What the Service and the Deployment select: the service, whatever the version."""
    return {LABEL_SERVICE: name}


def storage_uri(spec: DeploymentSpec, storage: StorageConfig) -> str:
    """``pvc://<claim>/<model_subpath>`` (KServe's URI of a folder on a PVC)."""
    return f"pvc://{storage.claim_name}/{spec.model_subpath.strip('/')}"


def runtime_image(spec: DeploymentSpec, where: ServingPlacement) -> str:
    return where.image or spec.selection.image_ref


def runtime_command(spec: DeploymentSpec) -> list[str]:
    """The runtime's CLI (``jupyter_kubeai.serving``), reading the model at ``/mnt/models``.

    - ``--host 0.0.0.0``: the runtime listens on loopback by default (right
      for local mode), where neither the kubelet's probes nor the Service
      could reach it in a pod.
    - ``--name <service name>``: the name in ``/v1/models/<name>`` and
      ``/v2/models/<name>``, as KServe's built-in runtimes use the
      InferenceService's name; the hub (``ModelManager.served_name``) and
      local mode use the same.
    - ``--version``: reported in v2 metadata and answers, and checked in
      ``/v2/models/<name>/versions/<v>/...``.
    """
    return [
        "python", "-m", "jupyter_kubeai.serving",
        "--model-dir", MODEL_DIR,
        "--name", spec.name,
        "--host", "0.0.0.0",
        "--port", str(PORT),
        "--version", str(spec.version),
        "--max-batch-size", str(spec.max_batch_size),
        "--max-latency-ms", f"{spec.max_latency_ms:g}",
    ]


def model_volume(spec: DeploymentSpec, storage: StorageConfig) -> tuple[dict, dict]:
    """(pod volume, container mount) of the version's folder, read-only at ``/mnt/models``."""
    if storage.share == "pvc":
        volume = {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": storage.claim_name, "readOnly": True}}
        mount = {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "subPath": spec.model_subpath.strip("/"), "readOnly": True}
    elif storage.share == "nfs":
        path = posixpath.join(storage.nfs_path, spec.model_subpath.strip("/"))
        volume = {"name": MODEL_VOLUME, "nfs": {"server": storage.nfs_server, "path": path, "readOnly": True}}
        mount = {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}
    else:
        raise ValueError("models are served from the share: share_type 'none' has no registry to mount")
    return volume, mount


def resources(spec: DeploymentSpec, where: ServingPlacement) -> tuple[dict, dict]:
    """(container ``resources``, scheduling) from the size: requests, limits (GPUs), placement."""
    profile = spec.selection.profile
    scheduling = make_scheduling(spec.selection, where.gpu, spec.project)
    limits = {"cpu": profile.cpu_limit, "memory": profile.memory_limit, **scheduling["extra_resource_limits"]}
    return {"requests": {"cpu": profile.cpu_request, "memory": profile.memory_request}, "limits": limits}, scheduling


def _place(pod: dict, scheduling: dict) -> None:
    if scheduling["node_selector"]:
        pod["nodeSelector"] = scheduling["node_selector"]
    if scheduling["tolerations"]:
        pod["tolerations"] = scheduling["tolerations"]


def autoscaled(spec: DeploymentSpec) -> bool:
    return spec.max_replicas > spec.replicas


def uses_builtin(spec: DeploymentSpec, where: ServingPlacement) -> bool:
    """KServe's own runtime serves this version (its format is allowed, and the share is a PVC)."""
    return spec.model_format in where.builtin_formats and where.storage.share == "pvc"


def runtime_container(spec: DeploymentSpec, where: ServingPlacement, *, name: str, env: list[dict] = (),
                      mounts: list[dict] = (), port_name: str = "http") -> dict:
    """The runtime's container: command, port, probes, the drain pause, resources."""
    container_resources, _ = resources(spec, where)
    container = {
        "name": name,
        "image": runtime_image(spec, where),
        "command": runtime_command(spec),
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "KUBEAI_SERVICE", "value": spec.name},
            {"name": "KUBEAI_MODEL", "value": spec.model},
            {"name": "KUBEAI_MODEL_VERSION", "value": str(spec.version)},
            *env,
        ],
        "ports": [{**({"name": port_name} if port_name else {}), "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": PORT},
            "periodSeconds": 2,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        },
        # The endpoints drop the pod while it still answers; then SIGTERM makes the runtime drain.
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", f"sleep {where.drain_seconds}"]}}},
        "resources": container_resources,
        # A crashing runtime's last log lines become its termination message: the status shows them.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if mounts:
        container["volumeMounts"] = list(mounts)
    return container


# --- KServe -----------------------------------------------------------------------------------------

def make_inference_service(spec: DeploymentSpec, where: ServingPlacement) -> dict:
    """One ``InferenceService`` in raw mode (see the module's docstring)."""
    own = labels(spec)
    container_resources, scheduling = resources(spec, where)
    predictor: dict = {
        "minReplicas": spec.replicas,
        "maxReplicas": max(spec.max_replicas, spec.replicas),
        "labels": own,
        "annotations": {ANNOTATION_MODEL_PATH: spec.model_subpath},
        "terminationGracePeriodSeconds": where.termination_grace_seconds,
        "deploymentStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "automountServiceAccountToken": False,  # no Kubernetes credentials for the model server
    }
    _place(predictor, scheduling)
    if uses_builtin(spec, where):
        predictor["model"] = {
            "modelFormat": {"name": spec.model_format},
            "storageUri": storage_uri(spec, where.storage),
            "resources": container_resources,
        }
    elif where.storage.share == "pvc":
        env = [{"name": "STORAGE_URI", "value": storage_uri(spec, where.storage)}]
        predictor["containers"] = [runtime_container(spec, where, name=KSERVE_CONTAINER, env=env, port_name="")]
    else:
        volume, mount = model_volume(spec, where.storage)
        predictor["containers"] = [runtime_container(spec, where, name=KSERVE_CONTAINER, mounts=[mount], port_name="")]
        predictor["volumes"] = [volume]
    annotations = {KSERVE_MODE: where.kserve_mode, ANNOTATION_MODEL_PATH: spec.model_subpath}
    if autoscaled(spec):
        annotations[KSERVE_AUTOSCALER] = "hpa"
    return {
        "apiVersion": INFERENCESERVICE.api_version,
        "kind": INFERENCESERVICE.kind,
        "metadata": {"name": spec.name, "labels": own, "annotations": annotations},
        "spec": {"predictor": predictor},
    }


# --- plain Kubernetes -------------------------------------------------------------------------------

def make_serving_deployment(spec: DeploymentSpec, where: ServingPlacement) -> dict:
    own = labels(spec)
    volume, mount = model_volume(spec, where.storage)
    _, scheduling = resources(spec, where)
    pod = {
        "containers": [runtime_container(spec, where, name="runtime", mounts=[mount])],
        "volumes": [volume],
        "terminationGracePeriodSeconds": where.termination_grace_seconds,
        "enableServiceLinks": False,
        # A model folder's predictor.py is user code: no Kubernetes credentials.
        "automountServiceAccountToken": False,
    }
    _place(pod, scheduling)
    annotations = {ANNOTATION_MODEL_PATH: spec.model_subpath}
    return {
        "apiVersion": DEPLOYMENT.api_version,
        "kind": DEPLOYMENT.kind,
        "metadata": {"name": spec.name, "labels": own, "annotations": annotations},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector(spec.name)},
            # A new pod must be ready before an old one goes: no request lands on nothing.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3,
            "template": {"metadata": {"labels": own, "annotations": annotations}, "spec": pod},
        },
    }


def make_serving_service(spec: DeploymentSpec, where: ServingPlacement) -> dict:
    return {
        "apiVersion": SERVICE.api_version,
        "kind": SERVICE.kind,
        "metadata": {"name": spec.name, "labels": labels(spec)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec.name),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def make_autoscaler(spec: DeploymentSpec, where: ServingPlacement) -> dict | None:
    """The HPA between ``replicas`` and ``max_replicas``; None when the replicas are fixed."""
    if not autoscaled(spec):
        return None
    target = {"type": "Utilization", "averageUtilization": where.cpu_target_percent}
    return {
        "apiVersion": HPA.api_version,
        "kind": HPA.kind,
        "metadata": {"name": spec.name, "labels": labels(spec)},
        "spec": {
            "scaleTargetRef": {"apiVersion": DEPLOYMENT.api_version, "kind": DEPLOYMENT.kind, "name": spec.name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
        },
    }


def make_owner_network_policy(spec: DeploymentSpec, where: ServingPlacement) -> dict | None:
    """With ``owner_namespace_template``: a NetworkPolicy that lets the owner's namespace (their
    notebooks, where KubeSpawner runs each user in a namespace of their own) reach this service's
    pods, beside the hub (deploy/networkpolicy-serving.yaml); NetworkPolicies only add what they allow."""
    if not where.owner_namespace_template:
        return None
    namespace = where.owner_namespace_template.format(username=slug(spec.owner))
    return {
        "apiVersion": NETWORKPOLICY.api_version,
        "kind": NETWORKPOLICY.kind,
        "metadata": {"name": spec.name, "labels": labels(spec)},
        "spec": {
            "podSelector": {"matchLabels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SERVICE: spec.name}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}],
                "ports": [{"port": PORT, "protocol": "TCP"}],
            }],
        },
    }


def make_serving_objects(spec: DeploymentSpec, where: ServingPlacement, *, kserve: bool) -> list[dict]:
    """Every object of the deployment, in creation order."""
    policy = make_owner_network_policy(spec, where)
    extra = [policy] if policy else []
    if kserve:
        return [make_inference_service(spec, where), *extra]
    objects = [make_serving_deployment(spec, where), make_serving_service(spec, where)]
    hpa = make_autoscaler(spec, where)
    return objects + ([hpa] if hpa else []) + extra


def service_url(name: str, where: ServingPlacement, *, kserve: bool) -> str:
    """The in-cluster URL: KServe raw mode's ``<name>-predictor`` Service, or ours (both on port 80)."""
    host = f"{name}-predictor" if kserve else name
    return f"{where.url_scheme}://{host}.{where.namespace}.svc.{where.cluster_domain}"


def live_image(obj: dict) -> str:
    """The runtime image a deployed object runs ("" for KServe's built-in runtime)."""
    spec = obj.get("spec") or {}
    pod = (spec.get("predictor") or {}) if obj.get("kind") == INFERENCESERVICE.kind else \
        ((spec.get("template") or {}).get("spec") or {})
    containers = pod.get("containers") or []
    return containers[0].get("image", "") if containers else ""


# --- patches ----------------------------------------------------------------------------------------

def merge_diff(current, desired):
    """The RFC 7386 merge patch that turns ``current`` into ``desired`` (None deletes a key)."""
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    patch = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_diff(current[key], value)
    return patch


def _owned_keys_patch(current: dict, desired: dict, prefixes: tuple[str, ...]) -> dict:
    """Set ``desired``'s keys; delete keys of ours (by prefix) it no longer has; leave others' keys."""
    patch = {key: None for key in current if key.startswith(prefixes) and key not in desired}
    patch.update({key: value for key, value in desired.items() if current.get(key) != value})
    return patch


OWN_PREFIXES = ("kubeai.jupyter.org/", "serving.kserve.io/", "app.kubernetes.io/managed-by")


def update_patch(current: dict, desired: dict, *, scale: bool = True) -> dict:
    """A merge patch of a live object (InferenceService or Deployment) to the newly rendered one.

    Labels and annotations: only ours change. The predictor (InferenceService)
    or the pod template (Deployment) become the rendered one (fields the
    server defaults are sent as deletions and defaulted again, so they do not
    change). A Deployment's ``replicas`` are set only with ``scale`` (not while
    an HPA scales it).
    """
    meta_now, meta_new = current.get("metadata") or {}, desired["metadata"]
    patch: dict = {"metadata": {
        "labels": _owned_keys_patch(meta_now.get("labels") or {}, meta_new.get("labels") or {}, OWN_PREFIXES),
        "annotations": _owned_keys_patch(meta_now.get("annotations") or {}, meta_new.get("annotations") or {}, OWN_PREFIXES),
    }}
    spec_now, spec_new = current.get("spec") or {}, desired["spec"]
    if desired["kind"] == INFERENCESERVICE.kind:
        patch["spec"] = {"predictor": merge_diff(spec_now.get("predictor") or {}, spec_new["predictor"])}
    else:
        patch["spec"] = {"template": merge_diff(spec_now.get("template") or {}, spec_new["template"])}
        if scale:
            patch["spec"]["replicas"] = spec_new["replicas"]
    return patch


# --- status -----------------------------------------------------------------------------------------

#: Container states that will not fix themselves: the deployment needs a person.
STUCK = ("CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError", "RunContainerError")


def pod_ready(pod: dict) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_version(pod: dict) -> int | None:
    value = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_VERSION)
    return int(value) if value and value.isdigit() else None


def pod_trouble(pods: list[dict]) -> str:
    """Why a runtime container cannot run (crash loop, image pull...), with its last words; "" if none."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK:
                last = ((status.get("lastState") or {}).get("terminated") or {}).get("message", "").strip()
                detail = "; ".join(part for part in (waiting.get("message", "").strip(), last) if part)
                return f"{waiting['reason']}: {detail}" if detail else waiting["reason"]
    return ""


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _target_version(obj: dict) -> int | None:
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_VERSION, "")
    return int(value) if value.isdigit() else None


def _answering(ready: list[dict], target: int | None) -> int | None:
    """The version the ready pods answer with: the target once all run it, else the most common."""
    versions = Counter(v for v in map(pod_version, ready) if v is not None)
    if not versions:
        return None
    if set(versions) == {target}:
        return target
    return max(versions, key=lambda v: (versions[v], v == target))


def _not_ready(obj: dict, pods: list[dict], events: list[dict], url: str, waiting: str, failure: str = "") -> ServiceStatus:
    """Status with no ready replica: Failed for a stuck runtime or a controller's failure, else Pending."""
    trouble = failure or pod_trouble(pods)
    if trouble:
        return ServiceStatus("Failed", _target_version(obj), 0, url, trouble)
    return ServiceStatus("Pending", _target_version(obj), 0, url, unschedulable(pods, events) or waiting)


def _updating_reason(pods: list[dict], events: list[dict], target: int | None, default: str) -> str:
    trouble = pod_trouble([p for p in pods if pod_version(p) == target]) or \
        unschedulable([p for p in pods if pod_version(p) == target], events)
    return trouble or default


def inference_service_status(obj: dict, pods: list[dict], events: list[dict], url: str) -> ServiceStatus:
    """From the InferenceService's conditions (Ready, PredictorReady), its pods and their events."""
    status = obj.get("status") or {}
    url = (status.get("address") or {}).get("url") or url
    conditions = _conditions(obj)
    target = _target_version(obj)
    ready = [p for p in pods if pod_ready(p)]
    observed = status.get("observedGeneration")
    stale = observed is not None and observed < (obj.get("metadata") or {}).get("generation", 0)
    model = status.get("modelStatus") or {}
    failure = ((model.get("lastFailureInfo") or {}).get("message") or "") if \
        model.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec") else ""
    is_ready = (conditions.get("Ready") or {}).get("status") == "True" and not stale
    answering = _answering(ready, target)
    if is_ready and (not ready or answering == target):
        return ServiceStatus("Ready", target, len(ready), url)
    message = next((c.get("message", "") for t in ("PredictorReady", "Ready")
                    if (c := conditions.get(t)) and c.get("status") != "True" and c.get("message")), "")
    if ready:
        reason = failure or _updating_reason(pods, events, target, message or f"rolling out version {target}")
        return ServiceStatus("Updating", answering, len(ready), url, reason)
    return _not_ready(obj, pods, events, url, message or "waiting for KServe to start the predictor", failure)


def deployment_status(obj: dict, pods: list[dict], events: list[dict], url: str) -> ServiceStatus:
    """From the Deployment's rollout status, its pods (and their version labels) and events."""
    status = obj.get("status") or {}
    conditions = _conditions(obj)
    target = _target_version(obj)
    ready = [p for p in pods if pod_ready(p)]
    generation = (obj.get("metadata") or {}).get("generation", 0)
    progressing = conditions.get("Progressing") or {}
    failure = progressing.get("message", "") if progressing.get("reason") == "ProgressDeadlineExceeded" else ""
    old = [p for p in pods if pod_version(p) != target]
    rolled_out = (status.get("observedGeneration", 0) >= generation and not old
                  and status.get("updatedReplicas", 0) >= status.get("replicas", 0))
    answering = _answering(ready, target)
    if ready and rolled_out and answering == target:
        return ServiceStatus("Ready", target, len(ready), url)
    if ready:
        wanted = (obj.get("spec") or {}).get("replicas", 1)
        updated = sum(1 for p in ready if pod_version(p) == target)
        default = f"rolling out version {target}: {updated} of {wanted} replica(s) ready"
        return ServiceStatus("Updating", answering, len(ready), url, failure or _updating_reason(pods, events, target, default))
    return _not_ready(obj, pods, events, url, "waiting for the runtime to be ready", failure)
