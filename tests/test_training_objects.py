"""Job specs and the training objects built from them, validated against the real CRDs."""

import os
import re
import signal
import subprocess
import sys

import pytest

from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.errors import InvalidInput
from jupyter_kubeai.jobs.spec import JobSpec
from jupyter_kubeai.kube.objects import GPUScheduling
from jupyter_kubeai.kube.training import (
    GangScheduling,
    Placement,
    ResourcePools,
    in_job_dir,
    make_pytorchjob,
    make_training_job,
)

from k8s_schema import validate_core, validate_custom

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CATALOG = Catalog(
    images=(image_from_dict({"name": "torch", "image": "quay.io/kubeai/torch:2.13", "default": True}),),
    profiles=(
        profile_from_dict({"name": "cpu", "cpu_request": "1", "cpu_limit": "2", "memory_request": "2Gi", "memory_limit": "4Gi"}),
        profile_from_dict({"name": "gpu", "cpu_request": "4", "cpu_limit": "8", "memory_request": "16Gi", "memory_limit": "32Gi", "gpus": 2}),
    ),
)
VIEW = user_view(CATALOG, ["vision"])


def job(framework="pytorch", size="cpu", workers=1, **kwargs):
    fields = {
        "job_id": "train-mnist-1a2b",
        "owner": "alice",
        "owner_groups": ("vision",),
        "project": "vision",
        "job_dir": "/home/jovyan/.kubeai/jobs/train-mnist-1a2b",
        **({"parameter_servers": 1} if framework == "tensorflow" else {}),
        **kwargs,
    }
    selection = select(VIEW, {"profile": size, **({"gpus": "2"} if size == "gpu" else {})})
    return JobSpec(framework=framework, selection=selection, workers=workers, **fields)


def validate(obj):
    (validate_core if obj["apiVersion"] == "batch/v1" else validate_custom)(obj)


GANGS = {
    "default": GangScheduling(),
    "volcano": GangScheduling(scheduler="volcano", queue="vision"),
    "kueue": GangScheduling(scheduler="kueue", queue="vision-queue"),
}


@pytest.mark.parametrize("framework", ["pytorch", "tensorflow", "mpi", "single"])
@pytest.mark.parametrize("size", ["cpu", "gpu"])
@pytest.mark.parametrize("gang", list(GANGS))
@pytest.mark.parametrize("workers", [1, 4])
def test_every_kind_validates_against_its_crd(framework, size, gang, workers):
    if framework == "single" and workers > 1:
        workers = 1
    where = Placement(gpu=GPUScheduling(tolerations=(GPU_TAINT,)), gang=GANGS[gang])
    obj = make_training_job(job(framework, size, workers), where)
    validate(obj)
    pods = _pod_specs(obj)
    for role, pod in pods.items():
        container = pod["containers"][0]
        assert container["image"] == "quay.io/kubeai/torch:2.13"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/home/jovyan", "/mnt/projects/vision", "/mnt/global"} <= mounts
        gpu_role = size == "gpu" and role not in ("PS", "Launcher")
        assert ("nvidia.com/gpu" in container["resources"]["limits"]) is gpu_role
        assert (GPU_TAINT in pod.get("tolerations", [])) is gpu_role
        assert (pod.get("schedulerName") == "volcano") is (gang == "volcano")
        # Only the hub service holds Kubernetes credentials: none in the user's pods.
        assert pod["automountServiceAccountToken"] is False
    assert (obj["metadata"]["labels"].get("kueue.x-k8s.io/queue-name") == "vision-queue") is (gang == "kueue")


def _pod_specs(obj):
    spec = obj["spec"]
    for key in ("pytorchReplicaSpecs", "tfReplicaSpecs", "mpiReplicaSpecs"):
        if key in spec:
            return {role: replica["template"]["spec"] for role, replica in spec[key].items()}
    return {"Job": spec["template"]["spec"]}


def test_pytorchjob_in_full():
    where = Placement(gang=GangScheduling(scheduler="volcano", queue="vision", priority_class="high"), ttl_seconds_after_finished=3600)
    obj = make_pytorchjob(job("pytorch", "gpu", workers=4, procs_per_worker=2), where)
    template = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert obj["metadata"] == {
        "name": "train-mnist-1a2b",
        "labels": {
            "app.kubernetes.io/managed-by": "jupyter-kubeai",
            "kubeai.jupyter.org/job": "train-mnist-1a2b",
            "kubeai.jupyter.org/owner": "alice",
            "kubeai.jupyter.org/project": "vision",
        },
    }
    assert obj["spec"]["nprocPerNode"] == "2"
    assert obj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert obj["spec"]["runPolicy"] == {
        "cleanPodPolicy": "None",
        "ttlSecondsAfterFinished": 3600,
        "backoffLimit": 0,
        "schedulingPolicy": {"minAvailable": 4, "queue": "vision", "priorityClass": "high"},
    }
    container = template["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["command"] == in_job_dir(["torchrun", "/home/jovyan/.kubeai/jobs/train-mnist-1a2b/main.py"])
    assert "workingDir" not in container  # the runtime would create a missing job folder as root
    assert template["metadata"]["labels"]["kubeai.jupyter.org/role"] == "master"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"},
    }
    assert container["env"] == [
        {"name": "KUBEAI_JOB_ID", "value": "train-mnist-1a2b"},
        {"name": "KUBEAI_JOB_DIR", "value": "/home/jovyan/.kubeai/jobs/train-mnist-1a2b"},
        {"name": "KUBEAI_OWNER", "value": "alice"},
        {"name": "KUBEAI_PROJECT", "value": "vision"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # How the replica names its log file: the role, and the index the operator labels the pod with.
        {"name": "KUBEAI_REPLICA_ROLE", "value": "master"},
        {"name": "KUBEAI_REPLICA_INDEX",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['training.kubeflow.org/replica-index']"}}},
    ]
    validate_custom(obj)


def test_tfjob_and_mpijob_topology():
    tf = make_training_job(job("tensorflow", workers=3, parameter_servers=2), Placement())
    replicas = tf["spec"]["tfReplicaSpecs"]
    assert {r: s["replicas"] for r, s in replicas.items()} == {"Chief": 1, "PS": 2, "Worker": 2}
    mpi = make_training_job(job("mpi", "gpu", workers=4, procs_per_worker=2), Placement())
    assert mpi["spec"]["slotsPerWorker"] == 2
    launcher = mpi["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["command"][4:8] == ["mpirun", "--allow-run-as-root", "-np", "8"]
    assert mpi["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"framework": "jax"}, "Framework 'jax' is not one of"),
        ({"workers": 0}, "Workers must be from 1 to 64"),
        ({"framework": "single", "workers": 2}, "one worker with one process"),
        ({"framework": "tensorflow", "parameter_servers": 0}, "needs 1 to 16 parameter servers"),
        ({"parameter_servers": 1}, "Only TensorFlow jobs have parameter servers"),
        ({"size": "gpu", "procs_per_worker": 3}, "use at most one process per GPU"),
        ({"project": "nlp"}, "You are not in project 'nlp'"),
        ({"job_id": "Bad_Id"}, "Job id 'Bad_Id' is not valid"),
        ({"entrypoint": "../../etc/passwd"}, "must be a path inside the job folder"),
        ({"env": (("MASTER_ADDR", "evil"),)}, "set by the platform"),
        ({"env": (("1BAD", "x"),)}, "is not valid"),
    ],
)
def test_bad_specs_are_refused_clearly(kwargs, message):
    framework = kwargs.pop("framework", "pytorch")
    size = kwargs.pop("size", "cpu")
    with pytest.raises(InvalidInput, match=re.escape(message)):
        job(framework, size, **kwargs)


def test_gang_settings_are_checked():
    with pytest.raises(ValueError, match="Kueue needs a LocalQueue"):
        GangScheduling(scheduler="kueue")
    with pytest.raises(ValueError, match="volcano, kueue or empty"):
        GangScheduling(scheduler="yunikorn")


def test_a_resubmitted_job_creates_its_new_folder_and_runs_the_old_snapshot(tmp_path):
    """The pods make the (new) job folder themselves and run the original's snapshot in it."""
    import subprocess

    snapshot = tmp_path / "old"
    snapshot.mkdir()
    (snapshot / "main.py").write_text("import os; open('out.txt', 'w').write(os.getcwd())\n")
    new_dir = tmp_path / "new" / "job"
    spec = job("single", job_dir=str(new_dir), snapshot_dir=str(snapshot))
    command = make_training_job(spec, Placement())["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == str(snapshot / "main.py")
    import sys

    command = [sys.executable if part == "python" else part for part in command]
    subprocess.run(command, check=True, env={"KUBEAI_JOB_DIR": str(new_dir), "PATH": "/usr/bin:/bin"})
    assert (new_dir / "out.txt").read_text() == str(new_dir)
    assert (new_dir / "logs/main.exit").read_text() == "0\n"  # the replica's log and exit status, kept


@pytest.mark.parametrize("framework", ["pytorch", "tensorflow", "mpi", "single"])
def test_every_replica_keeps_its_log_in_the_job_folder(framework):
    """Every role runs through the wrapper, and knows how the backend names it (role, index label)."""
    obj = make_training_job(job(framework, "gpu", 1 if framework == "single" else 3), Placement())
    for role, pod in _pod_specs(obj).items():
        container = pod["containers"][0]
        assert container["command"][:2] == ["/bin/sh", "-c"] and container["command"][3] == "kubeai-job"
        assert "logs/$replica" in container["command"][2]
        env = {e["name"]: e for e in container["env"]}
        assert env["KUBEAI_REPLICA_ROLE"]["value"] == {"Master": "master", "Job": "main"}.get(role, role.lower())
        single = role in ("Launcher", "Job")
        assert ("KUBEAI_REPLICA_INDEX" in env) is not single
        if not single:
            assert env["KUBEAI_REPLICA_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
                "metadata.labels['training.kubeflow.org/replica-index']"
    if framework == "mpi":  # the workers' sshd: logged where it can be, run anyway where not
        worker = obj["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"]
        assert worker == in_job_dir(["/usr/sbin/sshd", "-De"], needs_folder=False)


SHELLS = list(dict.fromkeys(os.path.realpath(sh) for sh in ("/bin/sh", "/bin/dash", "/bin/bash", "/bin/busybox") if os.path.exists(sh)))


def _run(shell, job_dir, code, **env):
    command = in_job_dir([sys.executable, "-c", code])
    command = (["/bin/busybox", "sh"] if shell.endswith("busybox") else [shell]) + command[1:]
    return subprocess.Popen(command, env={"KUBEAI_JOB_DIR": str(job_dir), "PATH": "/usr/bin:/bin", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("shell", SHELLS)
def test_the_wrapper_keeps_the_output_and_the_exit_status(tmp_path, shell):
    """POSIX sh (dash has no pipefail): the code's status is the container's, both streams are kept."""
    code = "import sys; print('epoch 1', flush=True); print('Traceback: boom', file=sys.stderr); sys.exit(3)"
    run = _run(shell, tmp_path / "job", code, KUBEAI_REPLICA_ROLE="worker", KUBEAI_REPLICA_INDEX="2")
    out, err = run.communicate(timeout=30)
    assert run.returncode == 3
    assert set(out.splitlines()) == {"epoch 1", "Traceback: boom"} and err == ""  # still the pod's log
    logs = tmp_path / "job/logs"
    assert set((logs / "worker-2.log").read_text().splitlines()) == {"epoch 1", "Traceback: boom"}
    assert (logs / "worker-2.exit").read_text() == "3\n"
    # A single role is named without an index.
    run = _run(shell, tmp_path / "job", "print('done')", KUBEAI_REPLICA_ROLE="launcher")
    assert run.communicate(timeout=30)[0] == "done\n" and run.returncode == 0
    assert (logs / "launcher.log").read_text() == "done\n" and (logs / "launcher.exit").read_text() == "0\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_the_wrapper_passes_sigterm_to_the_code(tmp_path, shell):
    """Deleting a pod sends SIGTERM to PID 1, the wrapper: the code gets it and ends as it chooses."""
    code = ("import os, signal, time\n"  # os.write: the signal may come while print('ready') returns
            "signal.signal(signal.SIGTERM, lambda *a: (os.write(1, b'stopping\\n'), os._exit(143)))\n"
            "print('ready', flush=True)\ntime.sleep(60)\n")
    run = _run(shell, tmp_path / "job", code)
    assert run.stdout.readline() == "ready\n"
    run.send_signal(signal.SIGTERM)
    out, _ = run.communicate(timeout=30)
    assert (run.returncode, out) == (143, "stopping\n")
    assert (tmp_path / "job/logs/main.log").read_text() == "ready\nstopping\n"
    assert (tmp_path / "job/logs/main.exit").read_text() == "143\n"


@pytest.mark.parametrize("framework", ["pytorch", "tensorflow", "mpi", "single"])
def test_project_pool_affinity_and_gpu_packing(framework):
    where = Placement(pools=ResourcePools(label="kubeai.jupyter.org/pool", pools=(("vision", "a100"),)),
                      pack_topology_key="kubernetes.io/hostname")
    obj = make_training_job(job(framework, "gpu", 1 if framework == "single" else 2), where)
    validate(obj)
    for role, pod in _pod_specs(obj).items():
        required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert required["nodeSelectorTerms"] == [
            {"matchExpressions": [{"key": "kubeai.jupyter.org/pool", "operator": "In", "values": ["a100"]}]}
        ]
        packed = "podAffinity" in pod["affinity"]
        assert packed is (role not in ("PS", "Launcher"))  # GPU roles only
        if packed:
            term = pod["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            assert term == {"labelSelector": {"matchLabels": {"kubeai.jupyter.org/job": "train-mnist-1a2b"}},
                            "topologyKey": "kubernetes.io/hostname"}


def test_pools_off_and_personal_jobs():
    assert ResourcePools().pool_for("vision") == ""
    pools = ResourcePools(label="pool", personal="shared")
    assert pools.pool_for(None) == "shared" and pools.pool_for("vision") == "vision"
    obj = make_training_job(job("pytorch", "cpu", 2), Placement())
    assert all("affinity" not in pod for pod in _pod_specs(obj).values())
