"""TrainJob and its project's TrainingRuntime: validated against the Trainer CRDs, and what goes where."""

import copy

import pytest
from test_training_objects import GANGS, GPU_TAINT, job

from jupyter_kubeai.kube.objects import GPUScheduling, StorageConfig
from jupyter_kubeai.kube.training import GangScheduling, Placement, ResourcePools, in_job_dir
from jupyter_kubeai.kube.trainjob import NODE, make_training_runtime, make_trainjob, runtime_name

from k8s_schema import validate_core, validate_custom


def _patch_pod(trainjob):
    replicated = trainjob["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert [r["name"] for r in replicated] == [NODE]
    return replicated[0]["template"]["spec"]["template"]


def _runtime_pod(runtime):
    (replicated,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return replicated["template"]["spec"]["template"]


def merged_pod(runtime, trainjob):
    """The pod Trainer makes: the runtime's template, the patch merged in by name, the trainer's settings."""
    pod = copy.deepcopy(_runtime_pod(runtime)["spec"])
    patch = _patch_pod(trainjob).get("spec", {})
    pod["volumes"] = pod.get("volumes", []) + patch.get("volumes", [])
    container = pod["containers"][0]
    for patched in patch.get("containers", []):
        assert patched["name"] == container["name"]
        container["volumeMounts"] = container.get("volumeMounts", []) + patched.get("volumeMounts", [])
    for key in ("nodeSelector", "tolerations"):
        if key in patch:
            pod[key] = patch[key]
    if "affinity" in patch:
        pod["affinity"] = {**pod.get("affinity", {}), **patch["affinity"]}
    trainer = trainjob["spec"]["trainer"]
    container.update(image=trainer["image"], command=trainer["command"], env=trainer["env"],
                     resources=trainer["resourcesPerNode"])
    return pod


@pytest.mark.parametrize("size", ["cpu", "gpu"])
@pytest.mark.parametrize("gang", list(GANGS))
@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("share", ["pvc", "nfs", "user-pvc"])
def test_trainjob_and_runtime_validate_and_merge_into_the_notebook_mounts(size, gang, workers, share):
    storage = {
        "pvc": StorageConfig(),
        "nfs": StorageConfig(share="nfs", nfs_server="nas.example.org", nfs_path="/export"),
        "user-pvc": StorageConfig(user_claim_name="claim-alice"),
    }[share]
    where = Placement(storage=storage, gpu=GPUScheduling(tolerations=(GPU_TAINT,)), gang=GANGS[gang],
                      pools=ResourcePools(label="pool"), pack_topology_key="kubernetes.io/hostname")
    spec = job("pytorch", size, workers, owner_groups=("vision", "nlp"), procs_per_worker=2 if size == "gpu" else 1)
    trainjob, runtime = make_trainjob(spec, where), make_training_runtime("vision", where)
    validate_custom(trainjob)
    validate_custom(runtime)
    assert trainjob["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"] == "kubeai-project-vision"
    assert trainjob["spec"]["trainer"]["numNodes"] == workers

    pod = merged_pod(runtime, trainjob)
    validate_core(pod, "io.k8s.api.core.v1.PodSpec", "v1")
    assert pod["automountServiceAccountToken"] is False  # no Kubernetes credentials for the user's code
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert set(mounts) == {"/home/jovyan", "/mnt/projects/vision", "/mnt/projects/nlp", "/mnt/global"}
    assert mounts["/mnt/global"].get("readOnly") is True
    names = [v["name"] for v in pod["volumes"]]
    assert len(names) == len(set(names)) == 4  # one volume per mount: patches key mounts by volume name
    # What the project shares is in the runtime; the owner's own folders come with the job.
    runtime_paths = {m["mountPath"] for m in _runtime_pod(runtime)["spec"]["containers"][0]["volumeMounts"]}
    assert runtime_paths == {"/mnt/projects/vision", "/mnt/global"}
    gpu = size == "gpu"
    assert (GPU_TAINT in pod.get("tolerations", [])) is gpu
    assert ("nvidia.com/gpu" in pod["containers"][0]["resources"]["limits"]) is gpu
    assert ("podAffinity" in pod["affinity"]) is gpu
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"] == [{"key": "pool", "operator": "In", "values": ["vision"]}]
    labels = _patch_pod(trainjob)["metadata"]["labels"]
    assert labels["kubeai.jupyter.org/job"] == spec.job_id and labels["kubeai.jupyter.org/role"] == NODE
    assert (pod.get("schedulerName") == "volcano") is (gang == "volcano")
    assert ("podGroupPolicy" in runtime["spec"]) is (gang == "volcano")
    kueue = gang == "kueue"
    assert (trainjob["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") == "vision-queue") is kueue
    assert trainjob["spec"].get("suspend", False) is kueue
    assert runtime["spec"]["template"]["spec"]["ttlSecondsAfterFinished"] == where.ttl_seconds_after_finished
    # Each node keeps its log in the job folder, named node-<its Indexed Job's completion index>.
    trainer = trainjob["spec"]["trainer"]
    assert trainer["command"] == in_job_dir(["torchrun", spec.script])
    assert trainer["env"][-2:] == [
        {"name": "KUBEAI_REPLICA_ROLE", "value": "node"},
        {"name": "KUBEAI_REPLICA_INDEX",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}},
    ]


def test_personal_runtime_carries_only_the_global_folder():
    where = Placement(gang=GangScheduling(scheduler="volcano", queue="default", priority_class="low"))
    runtime = make_training_runtime(None, where)
    validate_custom(runtime)
    assert runtime["metadata"]["name"] == runtime_name(None) == "kubeai-personal"
    pod = _runtime_pod(runtime)["spec"]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/mnt/global"]
    assert pod["priorityClassName"] == "low" and "affinity" not in pod
    trainjob = make_trainjob(job("pytorch", "cpu", 2, project=None), where)
    validate_custom(trainjob)
    assert trainjob["metadata"]["annotations"] == {"scheduling.volcano.sh/queue-name": "default"}
    patched = {m["mountPath"] for m in _patch_pod(trainjob)["spec"]["containers"][0]["volumeMounts"]}
    assert patched == {"/home/jovyan", "/mnt/projects/vision"}


def test_no_share_runtime_has_no_volumes():
    where = Placement(storage=StorageConfig(share="none"))
    runtime = make_training_runtime("vision", where)
    trainjob = make_trainjob(job("pytorch", "cpu", 1), where)
    validate_custom(runtime)
    validate_custom(trainjob)
    assert "volumes" not in _runtime_pod(runtime)["spec"]
    assert "spec" not in _patch_pod(trainjob)
