"""``kubeai doctor`` against the HTTP-level fake API (tests/kubefake.py): presence and absence of each
capability, the service route, the admin page section and the CLI."""

import asyncio
import html
import io
import json
from pathlib import Path

import pytest
import yaml
from serviceapp import PREFIX, call, make_service
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

from jupyter_kubeai.backends.kubernetes import KubernetesBackend
from jupyter_kubeai.backends.kubernetes_serving import KubernetesServing
from jupyter_kubeai.cli import main
from jupyter_kubeai.kube.client import KubeClient
from jupyter_kubeai.kube.doctor import DoctorSettings, check_cluster, gpu_resources, settings_for, summary
from jupyter_kubeai.kube.permissions import DOCTOR, NEEDED, Permission, rules
from jupyter_kubeai.naming import slug

NS = "hub"
TRAINING = {
    "kubeflow.org/v1/pytorchjobs": "PyTorchJob",
    "kubeflow.org/v1/tfjobs": "TFJob",
    "kubeflow.org/v2beta1/mpijobs": "MPIJob",
    "trainer.kubeflow.org/v1alpha1/trainjobs": "TrainJob",
    "trainer.kubeflow.org/v1alpha1/trainingruntimes": "TrainingRuntime",
}
VOLCANO = {"scheduling.volcano.sh/v1beta1/podgroups": "PodGroup", "scheduling.volcano.sh/v1beta1/queues": "Queue"}
KUEUE = {"kueue.x-k8s.io/v1beta2/localqueues": "LocalQueue", "kueue.x-k8s.io/v1beta2/clusterqueues": "ClusterQueue"}
KUEUE_LOCAL = "kueue.x-k8s.io/v1beta2/localqueues"
DEPLOY = Path(__file__).parent.parent / "deploy"
ISVCS = "serving.kserve.io/v1beta1/inferenceservices"


def install(kube, kinds: dict, *, namespaced=True):
    for resource, kind in kinds.items():
        kube.serve_kind(resource, kind, namespaced=namespaced)


def share_pvc(kube, *, phase="Bound", modes=("ReadWriteMany",), storage_class="cephfs"):
    kube.create("persistentvolumeclaims", {
        "metadata": {"name": "kubeai-share", "namespace": NS},
        "spec": {"accessModes": list(modes), "storageClassName": storage_class, "resources": {"requests": {"storage": "1Ti"}}},
    })
    if phase != "Pending":
        kube.patch("persistentvolumeclaims", NS, "kubeai-share",
                   {"status": {"phase": phase, "accessModes": list(modes), "capacity": {"storage": "1Ti"}}}, subresource="status")


def node(kube, name, **allocatable):
    kube.create("nodes", {"metadata": {"name": name}, "status": {"allocatable": {"cpu": "16", "memory": "64Gi", **allocatable}}})


async def doctor(**settings) -> list:
    client = await KubeClient.connect()
    try:
        return await check_cluster(client, DoctorSettings(**{"namespace": NS, **settings}))
    finally:
        await client.close()


def by_name(checks) -> dict:
    return {(c.area, c.name): c for c in checks}


def statuses(checks, area=None) -> dict:
    return {(c.area, c.name): c.status for c in checks if area is None or c.area == area}


async def test_a_bare_cluster_says_what_is_missing_and_how_to_get_it(kube):
    checks = await doctor()
    found = by_name(checks)
    assert found["cluster", "API server"].status == "ok" and "Kubernetes v1." in found["cluster", "API server"].found
    assert statuses(checks, "training") == {
        ("training", "PyTorchJob"): "warn", ("training", "TrainJob"): "warn", ("training", "TFJob"): "warn",
        ("training", "MPIJob"): "warn", ("training", "frameworks"): "warn",
    }
    assert "training-operator" in found["training", "PyTorchJob"].fix and "pytorch" in found["training", "PyTorchJob"].fix
    assert "mpi-operator" in found["training", "MPIJob"].fix
    assert found["training", "frameworks"].found == "pytorch -> none, tensorflow -> none, mpi -> none, single -> Job"
    assert statuses(checks, "scheduling") == {("scheduling", "Volcano"): "ok", ("scheduling", "Kueue"): "ok"}
    assert found["scheduling", "Volcano"].found == "not installed (not used: gang_scheduler is none)"
    assert found["serving", "KServe"].status == "warn" and "Deployment + Service" in found["serving", "KServe"].found
    pvc = found["storage", "share PVC kubeai-share"]
    assert pvc.status == "fail" and "deploy/storage/cephfs-pvc.yaml" in pvc.fix
    assert found["gpu", "GPU nodes"].status == "warn" and "gpu-operator" in found["gpu", "GPU nodes"].fix
    # The fake allows every access review: every permission is there.
    assert {s for (area, _), s in statuses(checks).items() if area == "rbac"} == {"ok"}
    assert len([c for c in checks if c.area == "rbac"]) == len(NEEDED) + len(DOCTOR)
    assert summary(checks) == "fail"


async def test_a_complete_cluster_passes(kube):
    install(kube, TRAINING)
    install(kube, VOLCANO)
    kube.serve_kind(ISVCS, "InferenceService")
    kube.create("scheduling.volcano.sh/v1beta1/queues", {"metadata": {"name": "vision"}, "spec": {"capability": {"nvidia.com/gpu": 8}},
                                                          "status": {"state": "Open"}})
    kube.create("scheduling.volcano.sh/v1beta1/queues", {"metadata": {"name": "default"}, "spec": {}})
    kube.create("configmaps", {"metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
                               "data": {"deploy": '{"defaultDeploymentMode": "RawDeployment"}'}})
    share_pvc(kube)
    node(kube, "gpu-1", **{"nvidia.com/gpu": "8"})
    checks = await doctor(gang_scheduler="volcano", queues=("default", "vision"), gpu_resources=("nvidia.com/gpu",))
    assert summary(checks) == "ok", [c for c in checks if c.status != "ok"]
    found = by_name(checks)
    assert found["training", "frameworks"].found == "pytorch -> PyTorchJob, tensorflow -> TFJob, mpi -> MPIJob, single -> Job"
    assert found["training", "MPIJob"].found == "installed: kubeflow.org/v2beta1"
    assert found["scheduling", "queue vision"].found == "Open; nvidia.com/gpu=8"
    assert found["scheduling", "queue default"].found == "Open; no capability limit"
    assert found["serving", "KServe mode"].found == "cluster default RawDeployment; this hub asks for RawDeployment on each InferenceService"
    assert found["storage", "share PVC kubeai-share"].found == "Bound, ReadWriteMany, storage class cephfs, 1Ti"
    assert found["gpu", "GPU nodes"].found == "1 of 1 node(s): nvidia.com/gpu (1 node(s), 8 in all)"
    assert all(not c.fix for c in checks)


async def test_the_checks_only_read(kube):
    install(kube, TRAINING)
    install(kube, KUEUE)
    kube.serve_kind(ISVCS, "InferenceService")
    share_pvc(kube)
    await doctor(gang_scheduler="kueue", queues=("vision",))
    writes = [c for c in kube.calls if c.verb not in (None, "get", "list")]
    assert writes and {c.resource for c in writes} == {"selfsubjectaccessreviews"}
    assert len(writes) == sum(len(p.verbs) for p in NEEDED + DOCTOR)


@pytest.mark.parametrize("phase, modes, status, words", [
    ("Bound", ("ReadWriteMany",), "ok", ""),
    ("Pending", ("ReadWriteMany",), "fail", "not bound"),
    ("Bound", ("ReadWriteOnce",), "fail", "ReadWriteMany"),
    ("Lost", ("ReadWriteMany",), "fail", "not bound"),
])
async def test_the_share_pvc_must_be_bound_and_read_write_many(kube, phase, modes, status, words):
    share_pvc(kube, phase=phase, modes=modes, storage_class="nfs-client")
    [check] = [c for c in await doctor() if c.area == "storage" and c.name == "share PVC kubeai-share"]
    assert check.status == status
    assert check.found.startswith(f"{phase}, {', '.join(modes)}, storage class nfs-client")
    assert words in check.fix


@pytest.mark.parametrize("exists", [True, False])
async def test_a_pending_share_pvc_names_its_storage_class(kube, exists):
    kube.serve_kind("storage.k8s.io/v1/storageclasses", "StorageClass", namespaced=False)
    if exists:
        kube.create("storage.k8s.io/v1/storageclasses", {"metadata": {"name": "cephfs"}, "provisioner": "rook-ceph.cephfs.csi.ceph.com"})
    share_pvc(kube, phase="Pending", storage_class="cephfs")
    checks = {c.name: c for c in await doctor() if c.area == "storage"}
    assert checks["share PVC kubeai-share"].status == "fail"
    storage_class = checks["storage class cephfs"]
    if exists:
        assert storage_class.status == "ok" and storage_class.found == "provisioner rook-ceph.cephfs.csi.ceph.com"
    else:
        assert storage_class.status == "fail" and storage_class.found == "no StorageClass 'cephfs'"
        assert "kubectl get storageclass" in storage_class.fix


async def test_a_bound_share_pvc_asks_nothing_of_its_storage_class(kube):
    share_pvc(kube, storage_class="cephfs")  # no StorageClass served at all: not asked
    assert [c.name for c in await doctor() if c.area == "storage"] == ["share PVC kubeai-share"]


@pytest.mark.parametrize("share_type, status, found", [
    ("nfs", "ok", "NFS export mounted directly (not checked from the API)"),
    ("none", "warn", "share_type is none: no shared storage"),
])
async def test_shares_without_a_pvc(kube, share_type, status, found):
    [check] = [c for c in await doctor(share_type=share_type) if c.area == "storage"]
    assert (check.status, check.found) == (status, found)


async def test_gpu_nodes_and_their_resource_names(kube):
    node(kube, "a100-1", **{"nvidia.com/gpu": "8"})
    node(kube, "a100-2", **{"nvidia.com/gpu": "4"})
    node(kube, "mi300-1", **{"amd.com/gpu": "4"})
    node(kube, "cpu-1")
    node(kube, "drained", **{"nvidia.com/gpu": "0"})
    checks = [c for c in await doctor(gpu_resources=("amd.com/gpu", "gpu.intel.com/i915")) if c.area == "gpu"]
    assert [(c.name, c.status, c.found) for c in checks] == [
        ("GPU nodes", "ok", "3 of 5 node(s): amd.com/gpu (1 node(s), 4 in all), nvidia.com/gpu (2 node(s), 12 in all)"),
        ("sizes asking for gpu.intel.com/i915", "warn", "no node offers gpu.intel.com/i915"),
    ]
    assert "nodes offer amd.com/gpu, nvidia.com/gpu" in checks[1].fix


def test_gpu_resources_of_a_node():
    assert gpu_resources({"status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": "2", "gpu.intel.com/i915": "1",
                                                     "nvidia.com/mig-1g.10gb": "7", "amd.com/gpu": "0"}}}) == {
        "nvidia.com/gpu": 2, "gpu.intel.com/i915": 1}
    assert gpu_resources({"metadata": {"name": "new"}}) == {}


async def test_reviews_denied_fail_for_what_the_service_needs_and_warn_for_what_only_the_doctor_reads(kube):
    kube.deny("create", "pytorchjobs.kubeflow.org", namespace=NS)
    kube.deny("get", "pods/log")
    kube.deny("list", "nodes")
    found = by_name(await doctor())
    pytorch = found["rbac", "pytorchjobs.kubeflow.org"]
    assert (pytorch.status, pytorch.found) == ("fail", "denied: create; used by jobs")
    assert pytorch.fix == "Give the hub's service account 'create' on pytorchjobs.kubeflow.org in namespace hub: see deploy/rbac.yaml."
    assert found["rbac", "pods/log"].status == "fail"
    nodes = found["rbac", "nodes"]
    assert nodes.status == "warn" and nodes.fix.startswith("Optional (only kubeai doctor reads it).") and "cluster-wide" in nodes.fix
    assert found["rbac", "pods"].status == "ok"
    assert found["rbac", "pods"].found == "allowed: create, delete, deletecollection, list, watch in namespace hub"


async def test_a_review_for_another_namespace_is_asked_there(kube):
    kube.deny("get", "configmaps", namespace="kserve")
    found = by_name(await doctor())
    assert found["rbac", "configmaps"].status == "warn"
    assert "in namespace kserve" in found["rbac", "configmaps"].fix
    assert "(inferenceservice-config only) in namespace kserve: see deploy/rbac-doctor.yaml" in found["rbac", "configmaps"].fix
    reviews = [c.body["spec"]["resourceAttributes"] for c in kube.calls if c.resource == "selfsubjectaccessreviews"]
    # Granted on that ConfigMap only (resourceNames): the review must name it.
    assert {"verb": "get", "group": "", "resource": "configmaps", "namespace": "kserve",
            "name": "inferenceservice-config"} in reviews
    assert {"verb": "list", "group": "", "resource": "nodes"} in reviews  # cluster-scoped: no namespace
    assert {"verb": "get", "group": "", "resource": "pods", "subresource": "log", "namespace": NS} in reviews


async def test_the_deploy_rbac_files_make_every_review_allowed(kube):
    """Reviews answered by the rules of deploy/rbac.yaml and deploy/rbac-doctor.yaml, as the real
    authorizer does (resourceNames included): every line allowed, nothing optional missing."""
    objects = [doc for path in ("rbac.yaml", "rbac-doctor.yaml") for doc in yaml.safe_load_all((DEPLOY / path).read_text()) if doc]
    kube.authorize(objects)
    checks = [c for c in await doctor(namespace="jupyterhub") if c.area == "rbac"]
    assert checks and {(c.name, c.status) for c in checks if c.status != "ok"} == set()
    # Without the doctor's file, its lines warn and say which file grants them.
    kube.authorize(o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "doctor")
    found = by_name(await doctor(namespace="jupyterhub"))
    for permission in DOCTOR:
        check = found["rbac", permission.label]
        assert check.status == "warn" and check.fix.endswith("see deploy/rbac-doctor.yaml."), check
    assert found["rbac", "pods"].status == "ok"


async def test_forbidden_reads_are_unknown_not_errors(kube):
    kube.fail("list", "nodes", status=403)
    kube.fail("get", "persistentvolumeclaims", status=403)
    found = by_name(await doctor())
    assert found["gpu", "GPU nodes"].status == "warn"
    assert found["gpu", "GPU nodes"].found == "unknown: not allowed to read nodes (403)"
    assert "list nodes cluster-wide" in found["gpu", "GPU nodes"].fix
    assert found["storage", "share PVC kubeai-share"].found == "unknown: not allowed to read PVC kubeai-share (403)"
    assert "deploy/rbac-doctor.yaml" in found["gpu", "GPU nodes"].fix
    kube.fail("get", "configmaps", status=403)
    kube.serve_kind(ISVCS, "InferenceService")
    mode = by_name(await doctor())["serving", "KServe mode"]
    assert "apply deploy/rbac-doctor.yaml" in mode.fix and "deploy/rbac.yaml" not in mode.fix


async def test_an_old_api_version_is_named(kube):
    kube.serve_kind("kubeflow.org/v1/mpijobs", "MPIJob")  # mpi-operator v0.3 (kubeflow.org/v1)
    kube.serve_kind("trainer.kubeflow.org/v1alpha1/trainjobs", "TrainJob")  # without its runtimes
    found = by_name(await doctor(kinds=(("mpi", "MPIJob"),)))
    mpi = found["training", "MPIJob"]
    assert mpi.status == "fail"  # forced by the settings, so mpi jobs are refused
    assert mpi.found == "only kubeflow.org/v1 served; this hub builds kubeflow.org/v2beta1"
    assert mpi.fix.startswith("Upgrade the operator so it serves kubeflow.org/v2beta1.")
    assert found["training", "TrainJob"].status == "fail" and "trainingruntimes" in found["training", "TrainJob"].found


async def test_forcing_a_missing_kind_fails(kube):
    install(kube, {k: v for k, v in TRAINING.items() if v != "TFJob"})
    found = by_name(await doctor(kinds=(("tensorflow", "TFJob"), ("pytorch", "TrainJob"))))
    assert found["training", "TFJob"].status == "fail"
    assert found["training", "frameworks"].found == "pytorch -> TrainJob, tensorflow -> none, mpi -> MPIJob, single -> Job"
    assert "tensorflow" in found["training", "frameworks"].fix


async def test_the_gang_scheduler_in_use_must_be_installed(kube):
    found = by_name(await doctor(gang_scheduler="volcano", queues=("vision",)))
    assert found["scheduling", "Volcano"].status == "fail"
    assert "volcano-development.yaml" in found["scheduling", "Volcano"].fix
    assert ("scheduling", "queue vision") not in found


async def test_volcano_queues_missing_or_closed(kube):
    install(kube, VOLCANO, namespaced=False)
    kube.create("scheduling.volcano.sh/v1beta1/queues", {"metadata": {"name": "nlp"}, "status": {"state": "Closed"}})
    found = by_name(await doctor(gang_scheduler="volcano", queues=("nlp", "vision")))
    assert (found["scheduling", "queue vision"].status, found["scheduling", "queue vision"].found) == ("fail", "no such Volcano Queue")
    assert "Queues and quotas" in found["scheduling", "queue vision"].fix
    assert found["scheduling", "queue nlp"].status == "fail" and "vcctl queue operate --name nlp" in found["scheduling", "queue nlp"].fix


@pytest.mark.parametrize("versions", [("v1beta2",), ("v1beta1", "v1beta2"), ("v1beta1",)])
async def test_kueue_local_queues_and_their_cluster_queues(kube, versions):
    """v1beta2 where the cluster serves it (v1beta1 is deprecated: answered with a warning), v1beta1 where
    it is all there is; API discovery decides."""
    for version in versions:
        install(kube, {f"kueue.x-k8s.io/{version}/localqueues": "LocalQueue"})
        install(kube, {f"kueue.x-k8s.io/{version}/clusterqueues": "ClusterQueue"}, namespaced=False)
    version = versions[-1]  # the fake stores each version apart: objects where the doctor should look
    kube.create(f"kueue.x-k8s.io/{version}/clusterqueues", {"metadata": {"name": "gpu-pool"}, "spec": {}})
    for name, namespace, target in (("vision", NS, "gpu-pool"), ("nlp", NS, "gone"), ("audio", "elsewhere", "gpu-pool")):
        kube.create(f"kueue.x-k8s.io/{version}/localqueues", {"metadata": {"name": name, "namespace": namespace},
                                                               "spec": {"clusterQueue": target}})
    found = by_name(await doctor(gang_scheduler="kueue", queues=("audio", "nlp", "vision")))
    assert found["scheduling", "Kueue"].found.startswith(f"installed: kueue.x-k8s.io/{version} LocalQueue, ClusterQueue")
    assert found["scheduling", "Kueue"].status == ("ok" if version == "v1beta2" else "warn")
    if version == "v1beta1":
        assert "serves kueue.x-k8s.io/v1beta2" in found["scheduling", "Kueue"].fix
    assert (found["scheduling", "queue vision"].status, found["scheduling", "queue vision"].found) == ("ok", "LocalQueue -> ClusterQueue gpu-pool")
    assert found["scheduling", "queue nlp"].status == "fail" and "'gone', which does not exist" in found["scheduling", "queue nlp"].found
    assert found["scheduling", "queue audio"].found == "no LocalQueue 'audio' in namespace hub"
    assert f"a kueue.x-k8s.io/{version} LocalQueue" in found["scheduling", "queue audio"].fix
    assert {c.path.split("/")[3] for c in kube.find_calls("list") if c.group == "kueue.x-k8s.io"} == {version}


@pytest.mark.parametrize("use_kserve, status", [("true", "fail"), ("auto", "warn"), ("false", "ok")])
async def test_kserve_absent(kube, use_kserve, status):
    check = by_name(await doctor(use_kserve=use_kserve))["serving", "KServe"]
    assert check.status == status and check.found.startswith("not installed")


async def test_kserve_mode_from_its_config_map_or_unknown(kube):
    kube.serve_kind(ISVCS, "InferenceService")
    kube.serve_kind("serving.kserve.io/v1alpha1/servingruntimes", "ServingRuntime")
    found = by_name(await doctor())
    assert found["serving", "KServe"].found == "installed: serving.kserve.io/v1beta1 (versions v1alpha1, v1beta1)"
    assert found["serving", "KServe mode"].status == "warn"
    assert found["serving", "KServe mode"].found.startswith("unknown: no ConfigMap kserve/inferenceservice-config")
    kube.create("configmaps", {"metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
                               "data": {"deploy": '{"defaultDeploymentMode": "Serverless"}'}})
    found = by_name(await doctor(kserve_deployment_mode="Standard"))
    assert found["serving", "KServe mode"].found == "cluster default Serverless; this hub asks for Standard on each InferenceService"
    kube.fail("get", "configmaps", status=403)
    mode = by_name(await doctor())["serving", "KServe mode"]
    assert mode.status == "warn" and mode.found == "unknown: not allowed to read ConfigMap kserve/inferenceservice-config (403)"


async def test_an_unreachable_api_is_one_failure():
    from kubernetes_asyncio.client import ApiClient, Configuration

    configuration = Configuration(host="http://127.0.0.1:9")
    client = KubeClient(ApiClient(configuration), request_timeout=5)
    try:
        checks = await check_cluster(client, DoctorSettings())
    finally:
        await client.close()
    [check] = checks
    assert (check.area, check.status) == ("cluster", "fail") and "127.0.0.1:9" in check.found


def test_settings_come_from_the_backends():
    backend = KubernetesBackend(namespace="ml", gang_scheduler="kueue", queue_template="team-{project}", personal_queue="shared",
                                kinds={"pytorch": "TrainJob"}, share_claim_name="data")
    serving = KubernetesServing(use_kserve=True)
    settings = settings_for(backend, serving, projects=["Vision Lab", "nlp"], gpu_resources=["nvidia.com/gpu", "nvidia.com/gpu"])
    assert settings.queues == ("shared", "team-nlp", f"team-{slug('Vision Lab')}")  # the project's slug, as jobs name it
    assert (settings.namespace, settings.gang_scheduler, settings.kinds) == ("ml", "kueue", (("pytorch", "TrainJob"),))
    assert (settings.share_claim_name, settings.use_kserve, settings.gpu_resources) == ("data", "true", ("nvidia.com/gpu",))


def test_permissions_are_declared_once_and_as_rbac_rules():
    labels = [p.label for p in NEEDED + DOCTOR]
    assert len(labels) == len(set(labels))
    assert Permission("kubeflow.org", "pytorchjobs", ("create",), "jobs").label == "pytorchjobs.kubeflow.org"
    assert Permission("", "pods/log", ("get",), "jobs").label == "pods/log"
    assert rules()[0] == {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "deletecollection", "list", "watch"]}
    for p in NEEDED + DOCTOR:
        assert list(p.verbs) == sorted(p.verbs), p


# --- the service route, the admin page and the CLI -----------------------------------------------


def run_cli(argv, out):
    try:
        return main(argv, out)
    except SystemExit as e:
        return e.code


async def kubeai(*argv) -> tuple[int, str]:
    """``kubeai ...`` in a thread (it blocks); the service and the fake API answer on this test's loop."""
    out = io.StringIO()
    code = await asyncio.to_thread(run_cli, list(argv), out)
    return code, out.getvalue()


@pytest.fixture
async def k8s_service(hub, serve, service, kube, tmp_path):
    """The service in kubernetes mode (not started: the doctor needs no backend running)."""
    config = Config({"KubernetesBackend": {"namespace": NS, "gang_scheduler": "volcano"}, "KubernetesServing": {"namespace": NS}})
    app = make_service(tmp_path, mode="kubernetes", config=config, project_gpu_quota={"vision": 4, "*": 1})
    return serve(app.make_app()) + PREFIX


async def test_the_route_in_local_mode_says_there_is_no_cluster(service):
    code, report = await call(service + "api/admin/doctor", "admin-token")
    assert code == 200
    assert report == {"mode": "local", "status": "ok", "checks": [{
        "area": "cluster", "name": "mode", "status": "ok", "fix": "",
        "found": "local mode: no cluster; jobs and services run as processes on the hub's machine"}]}


@pytest.mark.parametrize("token", ["alice-token", None])
async def test_the_route_is_for_hub_admins_only(service, token):
    code, answer = await call(service + "api/admin/doctor", token)
    assert code == (403 if token else 401)
    if token:
        assert answer["message"] == "Only hub admins may run the cluster checks."


async def test_the_route_checks_the_cluster_with_the_services_settings(k8s_service, kube):
    install(kube, VOLCANO, namespaced=False)
    kube.create("scheduling.volcano.sh/v1beta1/queues", {"metadata": {"name": "vision"}, "status": {"state": "Open"}})
    code, report = await call(k8s_service + "api/admin/doctor", "admin-token")
    assert code == 200
    assert (report["mode"], report["namespace"], report["status"]) == ("kubernetes", NS, "fail")
    found = {(c["area"], c["name"]): c for c in report["checks"]}
    # Queues of the projects the settings name (the quota's), and of personal jobs.
    assert found["scheduling", "queue vision"]["status"] == "ok"
    assert found["scheduling", "queue default"]["status"] == "fail"
    # The catalog's GPU size asks for nvidia.com/gpu; no node offers it.
    assert found["gpu", "sizes asking for nvidia.com/gpu"]["status"] == "warn"
    assert found["storage", "share PVC kubeai-share"]["status"] == "fail"


async def test_the_admin_page_runs_the_checks_on_request(service):
    headers = {"Authorization": "token admin-token"}
    page = (await AsyncHTTPClient().fetch(service + "admin/", headers=headers)).body.decode()
    assert 'id="doctor-run"' in page and "Run checks" in page and 'id="doctor-checks"' not in page
    page = (await AsyncHTTPClient().fetch(service + "admin/?doctor=1", headers=headers)).body.decode()
    assert 'id="doctor-status" data-status="ok"' in page
    assert 'data-check="cluster/mode" data-status="ok"' in page and "local mode: no cluster" in page


async def test_the_admin_page_section_is_for_hub_admins_only(service):
    response = await AsyncHTTPClient().fetch(service + "admin/?doctor=1", headers={"Authorization": "token alice-token"},
                                             raise_error=False)
    assert response.code == 403 and 'id="doctor-checks"' not in response.body.decode()


async def test_the_admin_page_shows_the_cluster_checks(hub, k8s_service, kube):
    kube.deny("create", "pytorchjobs.kubeflow.org")
    response = await AsyncHTTPClient().fetch(k8s_service + "admin/?doctor=1", headers={"Authorization": "token admin-token"})
    page = response.body.decode()
    assert 'id="doctor-status" data-status="fail"' in page
    assert 'data-check="rbac/pytorchjobs.kubeflow.org" data-status="fail"' in page
    assert html.escape("Give the hub's service account 'create' on pytorchjobs.kubeflow.org") in page


async def test_cli_prints_a_table_and_exits_0_without_failures(service):
    code, out = await kubeai("--url", service, "--token", "admin-token", "doctor")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["AREA", "CHECK", "STATUS", "FOUND"]
    assert lines[1].split()[:3] == ["cluster", "mode", "ok"]
    assert lines[-1] == "0 failed, 0 warning(s), 1 ok (local mode)"


async def test_cli_exits_1_when_a_check_fails(k8s_service, kube, capsys):
    code, out = await kubeai("--url", k8s_service, "--token", "admin-token", "doctor")
    assert code == 1
    pvc = next(line for line in out.splitlines() if "share PVC" in line)
    assert pvc.split()[:5] == ["storage", "share", "PVC", "kubeai-share", "FAIL"]
    fix = out.splitlines()[out.splitlines().index(pvc) + 1]
    assert fix.strip().startswith("fix: Create it (ReadWriteMany")
    assert "failed, " in out.splitlines()[-1] and f"(kubernetes mode, namespace {NS})" in out.splitlines()[-1]
    code, out = await kubeai("--url", k8s_service, "--token", "admin-token", "doctor", "--json")
    assert code == 1 and json.loads(out)["status"] == "fail"


async def test_cli_refuses_non_admins(service, capsys):
    code, out = await kubeai("--url", service, "--token", "alice-token", "doctor")
    assert (code, out) == (1, "")
    assert "Only hub admins may run the cluster checks." in capsys.readouterr().err


async def test_cli_checks_a_cluster_straight_from_a_kubeconfig(kube, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBEAI_SERVICE_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    kubeconfig = kube.write_kubeconfig(tmp_path / "admin-kubeconfig")
    config = tmp_path / "kubeai_config.py"
    config.write_text('c.KubernetesBackend.gang_scheduler = "kueue"\nc.KubeAIService.project_gpu_quota = {"nlp": 2}\n')
    install(kube, KUEUE)
    code, out = await kubeai("doctor", "--kubeconfig", str(kubeconfig), "--namespace", NS, "--config", str(config),
                             "--project", "vision", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["namespace"] == NS
    queues = sorted(c["name"] for c in report["checks"] if c["name"].startswith("queue "))
    assert queues == ["queue default", "queue nlp", "queue vision"]
    share_pvc(kube)
    for name in ("default", "nlp", "vision"):
        kube.create(KUEUE_LOCAL, {"metadata": {"name": name, "namespace": NS}, "spec": {"clusterQueue": "all"}})
    kube.create("kueue.x-k8s.io/v1beta2/clusterqueues", {"metadata": {"name": "all"}})
    code, out = await kubeai("doctor", "--kubeconfig", str(kubeconfig), "--namespace", NS, "--config", str(config), "--project", "vision")
    assert code == 0, out
    assert "0 failed" in out.splitlines()[-1]


async def test_cli_direct_mode_checks_the_gpu_resources_of_a_catalog_file(kube, tmp_path, monkeypatch, capsys):
    """--catalog (the ConfigMap's catalog.yaml): sizes asking for a GPU resource no node offers are named."""
    monkeypatch.delenv("KUBEAI_SERVICE_URL", raising=False)
    kubeconfig = kube.write_kubeconfig(tmp_path / "admin-kubeconfig")
    node(kube, "a100-1", **{"nvidia.com/gpu": "8"})
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"profiles": [
        {"name": "cpu", "cpu_limit": "2"},
        {"name": "a100", "gpus": 1, "gpu_resource": "nvidia.com/gpu"},
        {"name": "mi300", "gpus": 1, "gpu_resource": "amd.com/gpu"},
    ]}))
    code, out = await kubeai("doctor", "--kubeconfig", str(kubeconfig), "--namespace", NS, "--catalog", str(catalog), "--json")
    gpu = {c["name"]: c for c in json.loads(out)["checks"] if c["area"] == "gpu"}
    assert set(gpu) == {"GPU nodes", "sizes asking for amd.com/gpu"}
    assert gpu["sizes asking for amd.com/gpu"]["status"] == "warn"
    # Without a catalog, nothing to compare: the sizes are not checked.
    code, out = await kubeai("doctor", "--kubeconfig", str(kubeconfig), "--namespace", NS, "--json")
    assert [c["name"] for c in json.loads(out)["checks"] if c["area"] == "gpu"] == ["GPU nodes"]
    # A broken catalog file is one clear line.
    catalog.write_text(yaml.safe_dump({"profiles": [{"name": "bad", "cpu_request": "4", "cpu_limit": "1"}]}))
    capsys.readouterr()
    code, _ = await kubeai("doctor", "--kubeconfig", str(kubeconfig), "--catalog", str(catalog))
    err = capsys.readouterr().err
    assert code != 0 and "The catalog's sizes are not valid" in err and "cpu_request" in err


async def test_cli_direct_mode_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBEAI_SERVICE_URL", raising=False)
    code, _ = await kubeai("doctor", "--kubeconfig", str(tmp_path / "missing"))
    assert code == 1 and "Cannot use kubeconfig" in capsys.readouterr().err
    code, _ = await kubeai("doctor", "--kubeconfig", str(tmp_path / "missing"), "--in-cluster")
    assert code == 1 and "not both" in capsys.readouterr().err
    code, _ = await kubeai("doctor")
    assert code == 2 and "no service URL" in capsys.readouterr().err


def test_what_the_doctor_checks_is_what_deploy_rbac_grants():
    """One list: kube/permissions.py NEEDED is the namespaced Role of deploy/rbac.yaml (the RBAC test ties that to the calls)."""
    path = Path(__file__).parent.parent / "deploy" / "rbac.yaml"
    if not path.exists():
        pytest.skip("deploy/rbac.yaml is not written yet")
    granted = {(group, resource, verb)
               for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == "Role"
               for rule in doc.get("rules", [])
               for group in rule.get("apiGroups", []) for resource in rule.get("resources", []) for verb in rule["verbs"]}
    needed = {(p.group, p.resource, verb) for p in NEEDED for verb in p.verbs}
    assert needed == granted
