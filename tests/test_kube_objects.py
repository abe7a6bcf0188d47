"""Pure builders of the notebook pod's storage and scheduling, against the real schemas."""

import pytest

from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.kube.objects import GPUScheduling, StorageConfig, make_scheduling, make_volumes

from k8s_schema import validate_core

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def validate_pod_parts(volumes, mounts, scheduling=None):
    """The parts, placed in a whole Pod, validate against core/v1 (unknown fields are errors)."""
    container = {"name": "notebook", "image": "x:1", "volumeMounts": mounts}
    spec = {"containers": [container], "volumes": volumes}
    if scheduling:
        spec["nodeSelector"] = scheduling["node_selector"]
        spec["tolerations"] = scheduling["tolerations"]
        container["resources"] = {"limits": scheduling["extra_resource_limits"]}
    validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-x"}, "spec": spec})
    names = [v["name"] for v in volumes]
    assert len(names) == len(set(names))
    assert {m["name"] for m in mounts} <= set(names)


@pytest.mark.parametrize("groups", [[], ["vision"], ["vision", "nlp"]])
def test_shared_pvc_volumes_in_full(groups):
    volumes, mounts = make_volumes(StorageConfig(claim_name="share"), "alice", groups)
    assert volumes == [{"name": "kubeai-share", "persistentVolumeClaim": {"claimName": "share"}}]
    expected = [{"name": "kubeai-share", "mountPath": "/home/jovyan", "subPath": "users/alice"}]
    expected += [
        {"name": "kubeai-share", "mountPath": f"/mnt/projects/{g}", "subPath": f"projects/{g}"} for g in sorted(groups)
    ]
    expected.append({"name": "kubeai-share", "mountPath": "/mnt/global", "subPath": "global", "readOnly": True})
    assert mounts == expected
    validate_pod_parts(volumes, mounts)


def test_per_user_pvc_and_writable_global():
    storage = StorageConfig(claim_name="share", user_claim_name="claim-alice", global_writable=True, home_mount="/home/alice")
    volumes, mounts = make_volumes(storage, "alice", ["vision"])
    assert volumes == [
        {"name": "kubeai-home", "persistentVolumeClaim": {"claimName": "claim-alice"}},
        {"name": "kubeai-share", "persistentVolumeClaim": {"claimName": "share"}},
    ]
    assert mounts == [
        {"name": "kubeai-home", "mountPath": "/home/alice"},
        {"name": "kubeai-share", "mountPath": "/mnt/projects/vision", "subPath": "projects/vision"},
        {"name": "kubeai-share", "mountPath": "/mnt/global", "subPath": "global"},
    ]
    validate_pod_parts(volumes, mounts)


def test_direct_nfs_volumes_in_full():
    storage = StorageConfig(share="nfs", nfs_server="nas.example.org", nfs_path="/export/ml")
    volumes, mounts = make_volumes(storage, "bob", ["vision"])
    assert volumes == [
        {"name": "kubeai-users-bob", "nfs": {"server": "nas.example.org", "path": "/export/ml/users/bob"}},
        {"name": "kubeai-projects-vision", "nfs": {"server": "nas.example.org", "path": "/export/ml/projects/vision"}},
        {"name": "kubeai-global", "nfs": {"server": "nas.example.org", "path": "/export/ml/global", "readOnly": True}},
    ]
    assert mounts == [
        {"name": "kubeai-users-bob", "mountPath": "/home/jovyan"},
        {"name": "kubeai-projects-vision", "mountPath": "/mnt/projects/vision"},
        {"name": "kubeai-global", "mountPath": "/mnt/global", "readOnly": True},
    ]
    validate_pod_parts(volumes, mounts)


@pytest.mark.parametrize("share", ["pvc", "nfs"])
@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "Alice Smith", "x" * 200, "李"])
def test_odd_names_never_leave_their_base(share, name):
    storage = StorageConfig(share=share, nfs_server="nas", nfs_path="/export")
    volumes, mounts = make_volumes(storage, name, [name, "../g"])
    validate_pod_parts(volumes, mounts)
    paths = [m.get("subPath", "") for m in mounts] + [v.get("nfs", {}).get("path", "") for v in volumes]
    for path in paths:
        assert ".." not in path.split("/")
    for mount in mounts:
        assert ".." not in mount["mountPath"].split("/")
        if mount["mountPath"].startswith("/mnt/projects/"):
            assert mount["mountPath"].count("/") == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"share": "s3"}, {"share": "nfs"}, {"home_mount": "home"}, {"projects_mount": "/mnt/../etc"}],
)
def test_bad_storage_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        StorageConfig(**kwargs)


CATALOG = Catalog(
    images=(image_from_dict({"name": "base", "image": "python:3.11"}),),
    profiles=(
        profile_from_dict({"name": "cpu", "placement": {"node_selector": {"pool": "cpu"}}}),
        profile_from_dict(
            {
                "name": "gpu",
                "gpus": 1,
                "max_gpus": 2,
                "gpu_resource": "nvidia.com/gpu",
                "placement": {"node_selector": {"pool": "gpu"}},
                "project_placement": {"vision": {"node_selector": {"pool": "vision-a100"},
                                                 "tolerations": [{"key": "team", "value": "vision", "effect": "NoSchedule"}]}},
            }
        ),
    ),
)
SCHED = GPUScheduling(tolerations=(GPU_TAINT,), node_selector=(("accelerator", "nvidia"),))


def test_cpu_profiles_never_tolerate_the_gpu_taint():
    chosen = select(user_view(CATALOG, []), {"profile": "cpu"})
    scheduling = make_scheduling(chosen, SCHED)
    assert scheduling == {"node_selector": {"pool": "cpu"}, "tolerations": [], "extra_resource_limits": {}}


def test_gpu_profiles_get_the_limit_toleration_and_project_pool():
    view = user_view(CATALOG, ["vision"])
    chosen = select(view, {"profile": "gpu", "gpus": "2"})
    scheduling = make_scheduling(chosen, SCHED)
    assert scheduling == {
        "node_selector": {"pool": "gpu", "accelerator": "nvidia"},
        "tolerations": [GPU_TAINT],
        "extra_resource_limits": {"nvidia.com/gpu": "2"},
    }
    in_project = make_scheduling(chosen, SCHED, project="vision")
    assert in_project == {
        "node_selector": {"pool": "vision-a100", "accelerator": "nvidia"},
        "tolerations": [{"key": "team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}, GPU_TAINT],
        "extra_resource_limits": {"nvidia.com/gpu": "2"},
    }
    validate_pod_parts([], [], in_project)
