"""Inference services on Kubernetes: the builders against the real schemas, and KubernetesServing
against the HTTP-level fake API (tests/kubefake.py), the tests playing KServe and the Deployment controller."""

import asyncio
import calendar
import copy
import time

import pytest

from jupyter_kubeai.backends.kubernetes_serving import KubernetesServing
from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.errors import Conflict, InvalidInput, NotFound, Unavailable
from jupyter_kubeai.kube.objects import GPUScheduling, StorageConfig
from jupyter_kubeai.kube.serving import (
    LABEL_SERVICE,
    LABEL_VERSION,
    ServingPlacement,
    deployment_status,
    make_inference_service,
    make_serving_objects,
    merge_diff,
)
from jupyter_kubeai.models.spec import DeploymentSpec
from jupyter_kubeai.serving.app import ServingApp

from k8s_schema import validate_core, validate_custom
from kubefake import merge_patch

NS = "serving"
ISVCS = "serving.kserve.io/v1beta1/inferenceservices"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
IMAGE = "quay.io/kubeai/serving:1.0"
CATALOG = Catalog(
    images=(image_from_dict({"name": "serving", "image": IMAGE, "default": True}),
            image_from_dict({"name": "serving-new", "image": "quay.io/kubeai/serving:2.0"})),
    profiles=(
        profile_from_dict({"name": "cpu", "cpu_request": "1", "cpu_limit": "2", "memory_request": "2Gi", "memory_limit": "4Gi"}),
        profile_from_dict({"name": "gpu", "cpu_request": "4", "cpu_limit": "8", "memory_request": "16Gi",
                           "memory_limit": "32Gi", "gpus": 1, "max_gpus": 2}),
    ),
)
VIEW = user_view(CATALOG, ["vision"])
PVC = StorageConfig()
NFS = StorageConfig(share="nfs", nfs_server="nfs.example.org", nfs_path="/export/kubeai")


def deployment(version=1, size="cpu", image="serving", model_format="custom", **kwargs):
    fields = {
        "name": "iris",
        "owner": "alice",
        "owner_groups": ("vision",),
        "project": "vision",
        "model": "iris",
        "version": version,
        "model_path": f"/srv/share/models/vision/iris/{version}",
        "model_subpath": f"models/vision/iris/{version}",
        "model_format": model_format,
        **kwargs,
    }
    selection = select(VIEW, {"profile": size, "image": image, **({"gpus": "1"} if size == "gpu" else {})})
    return DeploymentSpec(selection=selection, **fields)


def placement(storage=PVC, builtin=()):
    return ServingPlacement(namespace=NS, storage=storage, gpu=GPUScheduling(tolerations=(GPU_TAINT,)),
                            builtin_formats=builtin)


def pod_of(obj):
    """The pod spec an object runs (InferenceService predictor or Deployment template)."""
    return obj["spec"]["predictor"] if obj["kind"] == "InferenceService" else obj["spec"]["template"]["spec"]


# --- builders ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kserve", [True, False], ids=["kserve", "deployment"])
@pytest.mark.parametrize("size", ["cpu", "gpu"])
@pytest.mark.parametrize("max_replicas", [0, 4], ids=["fixed", "autoscaled"])
@pytest.mark.parametrize("runtime", ["custom", "builtin"])
@pytest.mark.parametrize("storage", [PVC, NFS], ids=["pvc", "nfs"])
def test_every_object_validates_against_its_schema(kserve, size, max_replicas, runtime, storage):
    spec = deployment(size=size, replicas=1, max_replicas=max_replicas, model_format="sklearn")
    where = placement(storage, builtin=("sklearn",) if runtime == "builtin" else ())
    objects = make_serving_objects(spec, where, kserve=kserve)
    kinds = [o["kind"] for o in objects]
    if kserve:
        assert kinds == ["InferenceService"]
        validate_custom(objects[0])
    else:
        assert kinds == ["Deployment", "Service"] + (["HorizontalPodAutoscaler"] if max_replicas else [])
        for obj in objects:
            validate_core(obj)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["kubeai.jupyter.org/owner"] == "alice" and labels["kubeai.jupyter.org/project"] == "vision"
        assert labels["kubeai.jupyter.org/model"] == "iris" and labels[LABEL_VERSION] == "1"
        assert labels["app.kubernetes.io/managed-by"] == "jupyter-kubeai"

    main = objects[0]
    pod = pod_of(main)
    builtin = kserve and runtime == "builtin" and storage is PVC
    container = main["spec"]["predictor"]["model"] if builtin else pod["containers"][0]
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) is (size == "gpu")
    assert (GPU_TAINT in pod.get("tolerations", [])) is (size == "gpu")
    assert pod["automountServiceAccountToken"] is False  # no Kubernetes credentials for the model server
    assert container["resources"]["requests"]["cpu"] == ("4" if size == "gpu" else "1")
    if builtin:
        assert container["modelFormat"] == {"name": "sklearn"}
        assert container["storageUri"] == "pvc://kubeai-share/models/vision/iris/1"
        assert "containers" not in pod
    else:
        assert container["image"] == IMAGE
        # All addresses (probes and the Service reach the pod), the service's name, the version.
        assert container["command"] == ["python", "-m", "jupyter_kubeai.serving", "--model-dir", "/mnt/models",
                                        "--name", "iris", "--host", "0.0.0.0", "--port", "8080", "--version", "1",
                                        "--max-batch-size", "16", "--max-latency-ms", "5"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
        assert container["lifecycle"]["preStop"]["exec"]["command"][-1] == "sleep 5"
        assert pod["terminationGracePeriodSeconds"] == 30
        env = {e["name"]: e["value"] for e in container["env"]}
        if kserve and storage is PVC:
            assert env["STORAGE_URI"] == "pvc://kubeai-share/models/vision/iris/1"
            assert "volumes" not in pod  # KServe mounts the PVC itself
        else:
            assert "STORAGE_URI" not in env
            mount = container["volumeMounts"][0]
            assert mount["mountPath"] == "/mnt/models" and mount["readOnly"] is True
            volume = pod["volumes"][0]
            if storage is PVC:
                assert mount["subPath"] == "models/vision/iris/1"
                assert volume["persistentVolumeClaim"] == {"claimName": "kubeai-share", "readOnly": True}
            else:
                assert "subPath" not in mount
                assert volume["nfs"] == {"server": "nfs.example.org", "path": "/export/kubeai/models/vision/iris/1",
                                         "readOnly": True}
    if kserve:
        assert main["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
        assert main["spec"]["predictor"]["minReplicas"] == 1
        assert main["spec"]["predictor"]["maxReplicas"] == (4 if max_replicas else 1)
        assert ("serving.kserve.io/autoscalerClass" in main["metadata"]["annotations"]) is bool(max_replicas)
    else:
        assert main["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert main["spec"]["selector"] == {"matchLabels": {LABEL_SERVICE: "iris"}}
        assert objects[1]["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_the_inference_service_in_full():
    spec = deployment(version=3, replicas=2, max_replicas=5, max_batch_size=32, max_latency_ms=2.5)
    labels = {"app.kubernetes.io/managed-by": "jupyter-kubeai", "kubeai.jupyter.org/service": "iris",
              "kubeai.jupyter.org/owner": "alice", "kubeai.jupyter.org/model": "iris",
              "kubeai.jupyter.org/model-version": "3", "kubeai.jupyter.org/project": "vision"}
    assert make_inference_service(spec, placement()) == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "labels": labels, "annotations": {
            "serving.kserve.io/deploymentMode": "RawDeployment",
            "kubeai.jupyter.org/model-path": "models/vision/iris/3",
            "serving.kserve.io/autoscalerClass": "hpa"}},
        "spec": {"predictor": {
            "minReplicas": 2,
            "maxReplicas": 5,
            "labels": labels,
            "annotations": {"kubeai.jupyter.org/model-path": "models/vision/iris/3"},
            "terminationGracePeriodSeconds": 30,
            "deploymentStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "kserve-container",
                "image": IMAGE,
                "command": ["python", "-m", "jupyter_kubeai.serving", "--model-dir", "/mnt/models", "--name", "iris",
                            "--host", "0.0.0.0", "--port", "8080", "--version", "3",
                            "--max-batch-size", "32", "--max-latency-ms", "2.5"],
                "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "KUBEAI_SERVICE", "value": "iris"},
                        {"name": "KUBEAI_MODEL", "value": "iris"}, {"name": "KUBEAI_MODEL_VERSION", "value": "3"},
                        {"name": "STORAGE_URI", "value": "pvc://kubeai-share/models/vision/iris/3"}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 2,
                                   "failureThreshold": 2, "timeoutSeconds": 2},
                "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": 8080}, "initialDelaySeconds": 10,
                                  "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
                "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}},
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        }},
    }


@pytest.mark.parametrize("kserve", [True, False], ids=["kserve", "deployment"])
def test_the_pod_command_is_what_the_runtime_reads(kserve, monkeypatch):
    """The container's command parsed by the runtime itself: all addresses, the service's name, the version."""
    spec = deployment(name="iris-api", version=3, max_batch_size=8, max_latency_ms=2.5)
    container = pod_of(make_serving_objects(spec, placement(), kserve=kserve)[0])["containers"][0]
    assert container["command"][:3] == ["python", "-m", "jupyter_kubeai.serving"]
    app = ServingApp()
    app.load_config(container["command"][3:])
    assert (app.host, app.port, app.model_dir) == ("0.0.0.0", 8080, "/mnt/models")
    assert container["readinessProbe"]["httpGet"]["port"] == app.port
    # The model answers under the service's name (as KServe's own runtimes use the InferenceService's), not "iris".
    assert (app.model_name, app.model_version) == ("iris-api", "3")
    assert (app.max_batch_size, app.max_latency_ms) == (8, 2.5)
    # Without --version the runtime reads the version from the pod's environment.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KUBEAI_MODEL_VERSION"] == "3"
    monkeypatch.setenv("KUBEAI_MODEL_VERSION", env["KUBEAI_MODEL_VERSION"])
    bare = ServingApp()
    bare.load_config(["--model-dir", "/mnt/models"])
    assert bare.model_version == "3"
    assert bare.host == "127.0.0.1"  # local mode's default: loopback only


def test_a_builtin_runtime_serves_under_the_service_name():
    """KServe's built-in runtimes name the model after the InferenceService: the service's name."""
    spec = deployment(name="iris-api", model_format="sklearn")
    isvc = make_inference_service(spec, placement(builtin=("sklearn",)))
    assert isvc["metadata"]["name"] == "iris-api"
    assert "containers" not in isvc["spec"]["predictor"]


def test_kserve_standard_mode_and_bad_settings():
    spec = deployment()
    where = ServingPlacement(namespace=NS, kserve_mode="Standard")
    assert make_inference_service(spec, where)["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    with pytest.raises(ValueError, match="no built-in runtime"):
        ServingPlacement(builtin_formats=("torchscript",))
    with pytest.raises(ValueError, match="grace period"):
        ServingPlacement(drain_seconds=30, termination_grace_seconds=10)
    with pytest.raises(ValueError, match="share_type 'none'"):
        make_serving_objects(spec, placement(StorageConfig(share="none")), kserve=False)


@pytest.mark.parametrize("current, desired", [
    ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}}),
    ({"nodeSelector": {"gpu": "yes"}, "containers": [{"x": 1}]}, {"containers": [{"x": 2}]}),
    ({}, {"tolerations": [GPU_TAINT]}),
    ({"a": {"b": 1}}, {"a": [1]}),
])
def test_merge_diff_turns_one_object_into_the_other(current, desired):
    assert merge_patch(current, merge_diff(current, desired)) == desired


def test_a_crashing_runtime_fails_with_its_last_words_and_a_stuck_rollout_says_so():
    obj = make_serving_objects(deployment(version=2), placement(), kserve=False)[0]
    obj["metadata"]["generation"] = 1
    crashing = {"metadata": {"name": "iris-a", "labels": {LABEL_VERSION: "2"}}, "status": {"containerStatuses": [{
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": 1, "message": "FileNotFoundError: /mnt/models/model.joblib"}}}]}}
    status = deployment_status(obj, [crashing], [], "http://iris.serving.svc.cluster.local")
    assert status.state == "Failed"
    assert status.reason == ("CrashLoopBackOff: back-off 40s restarting failed container; "
                             "FileNotFoundError: /mnt/models/model.joblib")
    ready_v1 = {"metadata": {"name": "iris-b", "labels": {LABEL_VERSION: "1"}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    status = deployment_status(obj, [ready_v1, crashing], [], "")
    assert (status.state, status.version, status.ready_replicas) == ("Updating", 1, 1)
    assert status.reason.startswith("CrashLoopBackOff")  # version 1 still answers; version 2 crashes
    obj["status"] = {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                     "message": 'ReplicaSet "iris-7d9" has timed out progressing.'}]}
    assert deployment_status(obj, [], [], "").reason == 'ReplicaSet "iris-7d9" has timed out progressing.'


# --- the backend ------------------------------------------------------------------------------------

@pytest.fixture
async def make_backend(kube):
    backends = []

    async def make(kserve=True, **traits):
        if kserve:
            kube.serve_kind(ISVCS, "InferenceService")
        backend = KubernetesServing(namespace=NS, **traits)
        await backend.start()
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.stop()


def run_pods(kube, obj, count=1, suffix=""):
    """What KServe or the Deployment controller does: pods from the object's current pod template."""
    if obj["kind"] == "InferenceService":
        predictor = obj["spec"]["predictor"]
        labels = predictor["labels"]
        spec = {"containers": predictor.get("containers") or [{"name": "kserve-container", "image": "kserve/sklearnserver"}]}
    else:
        labels, spec = obj["spec"]["template"]["metadata"]["labels"], obj["spec"]["template"]["spec"]
    owner = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
             "uid": obj["metadata"]["uid"]}
    version = labels[LABEL_VERSION]
    for i in range(count):
        kube.create("pods", {"metadata": {"name": f"{obj['metadata']['name']}-v{version}{suffix}-{i}", "labels": labels,
                                          "ownerReferences": [owner]}, "spec": copy.deepcopy(spec)}, NS)


def stop_old_pods(kube, name, version):
    for pod in kube.list("pods", NS, labels=f"{LABEL_SERVICE}={name},{LABEL_VERSION}!={version}"):
        kube.delete("pods", NS, pod["metadata"]["name"])


def report_rollout(kube, name):
    """The Deployment controller's status once the pods of the current template are all there."""
    obj = kube.get(DEPLOYMENTS, NS, name)
    n = obj["spec"]["replicas"]
    kube.patch(DEPLOYMENTS, NS, name, {"status": {
        "observedGeneration": obj["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
        "readyReplicas": n, "availableReplicas": n}}, subresource="status")


def pods_ready(kube, name):
    pods = kube.list("pods", NS, labels=f"{LABEL_SERVICE}={name}")
    return all(c["status"] == "True" for p in pods for c in p["status"].get("conditions", []) if c["type"] == "Ready") \
        and all(p["status"].get("phase") == "Running" for p in pods)


async def report_kserve(kube, name, ready=True, message=""):
    """KServe's status, once the predictor's pods are ready."""
    await kube.wait_for(lambda: pods_ready(kube, name))
    obj = kube.get(ISVCS, NS, name)
    status = "True" if ready else "False"
    conditions = [{"type": t, "status": status, **({"message": message} if message else {})}
                  for t in ("PredictorReady", "Ready")]
    kube.patch(ISVCS, NS, name, {"status": {
        "observedGeneration": obj["metadata"]["generation"], "conditions": conditions,
        "address": {"url": f"http://{name}-predictor.{NS}.svc.cluster.local"}}}, subresource="status")


async def until(backend, name, state, version=None, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (status := await backend.status(name)).state != state or (version is not None and status.version != version):
        assert time.monotonic() < deadline, f"still {status} after {timeout}s"
        await asyncio.sleep(0.02)
    return status


def stripped(obj):
    """An object as created, without what the server added (to validate it against its schema)."""
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "labels", "annotations")}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, "spec": obj["spec"]}


def differences(a, b, path=""):
    """The paths where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}/{i}")]
    return [] if a == b else [path]


async def test_kserve_deploy_update_rollback_and_delete(kube, make_backend):
    backend = await make_backend()
    details = await backend.deploy(deployment(version=1))
    assert details == {
        "kind": "InferenceService", "api_version": "serving.kserve.io/v1beta1", "namespace": NS, "name": "iris",
        "objects": ["InferenceService/iris"], "url": "http://iris-predictor.serving.svc.cluster.local",
        "image": IMAGE, "version": 1,
    }
    v1 = kube.get(ISVCS, NS, "iris")
    validate_custom(stripped(v1))
    assert not kube.list(DEPLOYMENTS, NS)
    status = await backend.status("iris")
    assert (status.state, status.ready_replicas) == ("Pending", 0)
    assert status.url == "http://iris-predictor.serving.svc.cluster.local"

    run_pods(kube, v1)
    await report_kserve(kube, "iris")
    status = await until(backend, "iris", "Ready")
    assert (status.version, status.ready_replicas, status.reason) == (1, 1, "")
    calls = len(kube.calls)
    for _ in range(20):
        await backend.status("iris")
    assert len(kube.calls) == calls  # from the watch cache

    # Version 2 (the catalog's image has changed meanwhile): a merge patch of the model path and labels.
    details = await backend.update(deployment(version=2, image="serving-new"))
    assert details["version"] == 2 and details["image"] == IMAGE
    patch = kube.find_calls("patch", ISVCS, name="iris")[-1]
    assert patch.status == 200
    v2 = kube.get(ISVCS, NS, "iris")
    validate_custom(stripped(v2))
    assert differences(stripped(v1), stripped(v2)) == [
        "/metadata/annotations/kubeai.jupyter.org/model-path",
        "/metadata/labels/kubeai.jupyter.org/model-version",
        "/spec/predictor/annotations/kubeai.jupyter.org/model-path",
        "/spec/predictor/containers/0/command/12",  # --version
        "/spec/predictor/containers/0/env/3/value",  # KUBEAI_MODEL_VERSION
        "/spec/predictor/containers/0/env/4/value",  # STORAGE_URI
        "/spec/predictor/labels/kubeai.jupyter.org/model-version",
    ]
    assert v2["spec"]["predictor"]["containers"][0]["env"][4]["value"] == "pvc://kubeai-share/models/vision/iris/2"
    assert v2["spec"]["predictor"]["containers"][0]["image"] == IMAGE
    status = await until(backend, "iris", "Updating")  # KServe has not seen generation 2 yet
    assert (status.version, status.ready_replicas) == (1, 1)

    run_pods(kube, v2)
    await report_kserve(kube, "iris")
    status = await until(backend, "iris", "Updating", version=1)  # both answer; the old one still counts
    stop_old_pods(kube, "iris", 2)
    status = await until(backend, "iris", "Ready", version=2)
    assert status.ready_replicas == 1

    # Rollback: exactly version 1's object again.
    await backend.update(deployment(version=1))
    assert stripped(kube.get(ISVCS, NS, "iris")) == stripped(v1)

    assert await backend.delete("iris") is True
    assert kube.get(ISVCS, NS, "iris") is None
    assert (await backend.status("iris")).reason == "Deleted."
    assert await backend.delete("iris") is False


async def test_kserve_builtin_sklearn_and_failures(kube, make_backend):
    backend = await make_backend(kserve_builtin_formats=["sklearn"])
    await backend.deploy(deployment(model_format="sklearn"))
    obj = kube.get(ISVCS, NS, "iris")
    assert obj["spec"]["predictor"]["model"]["storageUri"] == "pvc://kubeai-share/models/vision/iris/1"
    assert "containers" not in obj["spec"]["predictor"]
    assert (await backend.update(deployment(version=2, model_format="sklearn")))["image"] == ""
    assert kube.get(ISVCS, NS, "iris")["spec"]["predictor"]["model"]["storageUri"].endswith("/iris/2")
    await report_kserve(kube, "iris", ready=False, message="Failed to pull model")
    status = await until(backend, "iris", "Pending")
    await kube.wait_for(lambda: backend.reflectors["InferenceService"].get("iris").get("status"))
    assert (await backend.status("iris")).reason == "Failed to pull model"
    kube.patch(ISVCS, NS, "iris", {"status": {"modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                                                               "lastFailureInfo": {"message": "no model.joblib"}}}},
               subresource="status")
    status = await until(backend, "iris", "Failed")
    assert status.reason == "no model.joblib"
    with pytest.raises(Conflict):
        await backend.deploy(deployment(model_format="sklearn"))

    # Deleted by someone else: Failed, saying so.
    kube.delete(ISVCS, NS, "iris")
    await kube.wait_for(lambda: backend.reflectors["InferenceService"].get("iris") is None)
    status = await backend.status("iris")
    assert "deleted outside jupyter_kubeai" in status.reason


async def test_without_kserve_a_deployment_service_and_autoscaler(kube, make_backend):
    backend = await make_backend(kserve=False)
    details = await backend.deploy(deployment(version=1, replicas=2, max_replicas=4))
    assert details["kind"] == "Deployment"
    assert details["objects"] == ["Deployment/iris", "Service/iris", "HorizontalPodAutoscaler/iris"]
    assert details["url"] == "http://iris.serving.svc.cluster.local"
    assert not kube.find_calls("create", ISVCS)
    v1 = kube.get(DEPLOYMENTS, NS, "iris")
    for resource in (DEPLOYMENTS, SERVICES, HPAS):
        validate_core(stripped(kube.get(resource, NS, "iris")))
    assert kube.get(HPAS, NS, "iris")["spec"]["maxReplicas"] == 4

    assert (await backend.status("iris")).state == "Pending"
    run_pods(kube, v1, count=2)
    report_rollout(kube, "iris")
    status = await until(backend, "iris", "Ready")
    assert (status.version, status.ready_replicas, status.url) == (1, 2, "http://iris.serving.svc.cluster.local")
    calls = len(kube.calls)
    await backend.status("iris")
    assert len(kube.calls) == calls

    # Version 2: the template's model path and version change, the image and the replicas (HPA's) do not.
    kube.patch(DEPLOYMENTS, NS, "iris", {"spec": {"replicas": 3}})  # the HPA scaled it meanwhile
    await kube.wait_for(lambda: backend.reflectors["Deployment"].get("iris")["spec"]["replicas"] == 3)
    await backend.update(deployment(version=2, image="serving-new", replicas=2, max_replicas=4))
    v2 = kube.get(DEPLOYMENTS, NS, "iris")
    assert v2["spec"]["replicas"] == 3
    assert differences(v1["spec"]["template"], v2["spec"]["template"]) == [
        "/metadata/annotations/kubeai.jupyter.org/model-path",
        "/metadata/labels/kubeai.jupyter.org/model-version",
        "/spec/containers/0/command/12",
        "/spec/containers/0/env/3/value",
        "/spec/containers/0/volumeMounts/0/subPath",
    ]
    assert v2["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["subPath"] == "models/vision/iris/2"
    assert kube.get(SERVICES, NS, "iris")["metadata"]["labels"][LABEL_VERSION] == "2"
    await kube.wait_for(lambda: backend.reflectors["Deployment"].get("iris")["metadata"]["generation"] == 3)
    status = await until(backend, "iris", "Updating")
    assert (status.version, status.ready_replicas) == (1, 2)
    assert status.reason.startswith("rolling out version 2")

    run_pods(kube, v2, count=2)
    stop_old_pods(kube, "iris", 2)
    report_rollout(kube, "iris")
    status = await until(backend, "iris", "Ready", version=2)

    # Rollback to version 1, and fixed replicas: the HPA goes, the replicas are set.
    await backend.update(deployment(version=1, replicas=2))
    rolled_back = kube.get(DEPLOYMENTS, NS, "iris")
    assert rolled_back["spec"]["template"] == v1["spec"]["template"]
    assert rolled_back["spec"]["replicas"] == 2
    assert kube.get(HPAS, NS, "iris") is None
    await backend.update(deployment(version=1, replicas=1, max_replicas=2))
    assert kube.get(HPAS, NS, "iris")["spec"]["minReplicas"] == 1

    assert await backend.delete("iris") is True
    for resource in (DEPLOYMENTS, SERVICES, HPAS):
        assert kube.get(resource, NS, "iris") is None
    assert kube.list("pods", NS, labels=f"{LABEL_SERVICE}=iris") == []


async def test_nfs_share_and_a_forced_choice(kube, make_backend):
    backend = await make_backend(share_type="nfs", nfs_server="nfs.example.org", use_kserve=False)
    await backend.deploy(deployment())
    pod = kube.get(DEPLOYMENTS, NS, "iris")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "model", "nfs": {"server": "nfs.example.org", "path": "/models/vision/iris/1",
                                                        "readOnly": True}}]
    assert not kube.find_calls("get", ISVCS) and not kube.list(ISVCS, NS)

    with pytest.raises(Exception, match="auto"):
        KubernetesServing(use_kserve="sometimes")


async def test_kserve_required_but_missing_refuses_and_creates_nothing(kube, make_backend):
    backend = await make_backend(kserve=False, use_kserve=True)
    with pytest.raises(InvalidInput, match="InferenceService kind is not installed"):
        await backend.deploy(deployment())
    assert not kube.find_calls("create")
    # Installed meanwhile: asked again, used.
    kube.serve_kind(ISVCS, "InferenceService")
    assert (await backend.deploy(deployment()))["kind"] == "InferenceService"


async def test_unschedulable_replicas_and_refusals(kube, make_backend):
    backend = await make_backend(kserve=False)
    kube.kubelet.set_mode("unschedulable")
    await backend.deploy(deployment(size="gpu"))
    run_pods(kube, kube.get(DEPLOYMENTS, NS, "iris"))
    deadline = time.monotonic() + 5
    while not (status := await backend.status("iris")).reason.startswith("Unschedulable:"):
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)
    assert status.state == "Pending" and "Insufficient cpu" in status.reason

    with pytest.raises(NotFound):
        await backend.update(deployment(name="other"))
    none = await make_backend(kserve=False, share_type="none")
    with pytest.raises(InvalidInput, match="no shared storage"):
        await none.deploy(deployment(name="third"))


async def test_a_refused_object_leaves_nothing_behind(kube, make_backend):
    backend = await make_backend(kserve=False)
    kube.fail("create", SERVICES, status=403)
    with pytest.raises(Unavailable, match="did not accept the Service"):
        await backend.deploy(deployment())
    assert kube.get(DEPLOYMENTS, NS, "iris") is None
    assert kube.find_calls("delete", DEPLOYMENTS, name="iris")


@pytest.mark.parametrize("kserve", [True, False], ids=["kserve", "deployment"])
async def test_restart_rolls_new_pods_of_the_same_version(kube, make_backend, kserve):
    backend = await make_backend(kserve=kserve)
    deployed = await backend.deploy(deployment(version=3, replicas=1, max_replicas=2))
    resource = ISVCS if kserve else DEPLOYMENTS
    before = kube.get(resource, NS, "iris")
    kube.fail("patch", resource, status=503, times=1)  # retried
    details = await backend.restart("iris")
    assert details == deployed  # same version, image, URL and objects
    after = kube.get(resource, NS, "iris")
    annotations = (after["spec"]["predictor"] if kserve else after["spec"]["template"]["metadata"])["annotations"]
    stamp = calendar.timegm(time.strptime(annotations["kubectl.kubernetes.io/restartedAt"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(time.time() - stamp) < 60
    # Only the restart stamp changed: the version, image and model stay.
    differ = differences(stripped(before), stripped(after))
    assert differ == (["/spec/predictor/annotations/kubectl.kubernetes.io/restartedAt"] if kserve else
                      ["/spec/template/metadata/annotations/kubectl.kubernetes.io/restartedAt"]), differ
    with pytest.raises(NotFound, match="No service named 'nope'"):
        await backend.restart("nope")


NETPOLS = "networking.k8s.io/v1/networkpolicies"


@pytest.mark.parametrize("kserve", [True, False], ids=["kserve", "deployment"])
async def test_the_owners_namespace_may_reach_the_service_where_configured(kube, make_backend, kserve):
    backend = await make_backend(kserve=kserve, owner_namespace_template="jupyterhub-{username}")
    details = await backend.deploy(deployment())
    assert details["objects"][-1] == "NetworkPolicy/iris"
    policy = kube.get(NETPOLS, NS, "iris")
    validate_core(stripped(policy))
    assert policy["spec"]["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jupyterhub-alice"}}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]}]
    # It selects the service's pods, and only them.
    run_pods(kube, kube.get(ISVCS if kserve else DEPLOYMENTS, NS, "iris"))
    selector = policy["spec"]["podSelector"]["matchLabels"]
    pods = kube.list("pods", NS, labels=",".join(f"{k}={v}" for k, v in selector.items()))
    assert [p["metadata"]["name"] for p in pods] == [p["metadata"]["name"] for p in kube.list("pods", NS)] and pods
    assert await backend.delete("iris") is True
    assert kube.get(NETPOLS, NS, "iris") is None
    # Not configured: no policy, and none is asked for on delete.
    plain = await make_backend(kserve=kserve)
    await plain.deploy(deployment(name="other"))
    assert kube.list(NETPOLS, NS) == []
    await plain.delete("other")
    assert not kube.find_calls("delete", NETPOLS, name="other")
