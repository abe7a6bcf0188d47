"""KubernetesBackend against the HTTP-level fake API (tests/kubefake.py); the tests play the operators."""

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_training_objects import job

from jupyter_kubeai.backends.kubernetes import KubernetesBackend
from jupyter_kubeai.errors import InvalidInput, NotFound
from jupyter_kubeai.service.jobs import JobManager
from jupyter_kubeai.store.jobs import JobRecord, JobStore
from jupyter_kubeai.store.schema import open_engine, upgrade

from k8s_schema import validate_core, validate_custom

NS = "jobs"
PYTORCHJOBS = "kubeflow.org/v1/pytorchjobs"
KUBEFLOW = {
    PYTORCHJOBS: "PyTorchJob",
    "kubeflow.org/v1/tfjobs": "TFJob",
    "kubeflow.org/v2beta1/mpijobs": "MPIJob",
    "trainer.kubeflow.org/v1alpha1/trainjobs": "TrainJob",
    "trainer.kubeflow.org/v1alpha1/trainingruntimes": "TrainingRuntime",
}


#: (framework, forced kinds, resource) of every job kind but the default PyTorchJob.
OTHER_KINDS = [
    ("pytorch", {"pytorch": "TrainJob"}, "trainer.kubeflow.org/v1alpha1/trainjobs"),
    ("tensorflow", {}, "kubeflow.org/v1/tfjobs"),
    ("mpi", {}, "kubeflow.org/v2beta1/mpijobs"),
    ("single", {}, "batch/v1/jobs"),
]


def install(kube, *missing):
    for resource, kind in KUBEFLOW.items():
        if kind not in missing:
            kube.serve_kind(resource, kind)


@pytest.fixture
async def make_backend(kube):
    backends = []

    async def make(missing=(), **traits):
        install(kube, *missing)
        backend = KubernetesBackend(namespace=NS, cleanup_interval=0, **traits)
        await backend.start()
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.stop()


def record(spec, ref, state="Pending"):
    return JobRecord(job_id=spec.job_id, owner=spec.owner, project=spec.project, framework=spec.framework,
                     backend="kubernetes", state=state, reason="", job_dir=spec.job_dir,
                     spec={"backend": ref, "workers": spec.workers}, gpus=spec.total_gpus, created=time.time())


def run_replica(pod, home: Path, home_mount="/home/jovyan"):
    """What a kubelet does with the pod's container, for real, on this machine: its environment (the
    Downward API's labels included), its command; the owner's home mount is the folder ``home``."""
    container = pod["spec"]["containers"][0]

    def here(value):
        return str(home) + value[len(home_mount):] if value.startswith(home_mount) else value

    env = {"PATH": os.environ["PATH"], "HOSTNAME": pod["metadata"]["name"]}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = here(var["value"])
        else:
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", var["valueFrom"]["fieldRef"]["fieldPath"]).group(1)
            env[var["name"]] = pod["metadata"]["labels"].get(label, "")
    command = [sys.executable if part in ("torchrun", "python") else here(part) for part in container["command"]]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def job_store(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'kubeai.sqlite'}")
    upgrade(engine)
    return JobStore(engine)


def ago(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))


def play_operator(kube, obj):
    """What the training operator does: one pod per replica, from the templates, labelled by index."""
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    for role, replica in replicas.items():
        for index in range(replica["replicas"]):
            template = replica["template"]
            labels = {**template["metadata"]["labels"], "training.kubeflow.org/replica-index": str(index),
                      "training.kubeflow.org/replica-type": role.lower()}
            kube.create("pods", {"metadata": {"name": f"{obj['metadata']['name']}-{role.lower()}-{index}",
                                              "labels": labels}, "spec": template["spec"]}, NS)


def set_conditions(kube, name, *types, resource=PYTORCHJOBS, **status):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [{"type": t, "status": "True", "reason": t, "message": msg, "lastTransitionTime": now}
                  for t, msg in (x if isinstance(x, tuple) else (x, "") for x in types)]
    kube.patch(resource, NS, name, {"status": {"conditions": conditions, **status}}, subresource="status")


async def until(backend, rec, state, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (status := await backend.status(rec)).state != state:
        assert time.monotonic() < deadline, f"still {status} after {timeout}s"
        await asyncio.sleep(0.02)
    return status


async def test_submit_watch_transitions_replicas_and_logs(kube, make_backend):
    backend = await make_backend()
    spec = job("pytorch", workers=2, job_dir=backend.job_dir("alice", "train-mnist-1a2b"))
    ref = await backend.submit(spec)
    assert ref == {"kind": "PyTorchJob", "api_version": "kubeflow.org/v1", "namespace": NS, "name": spec.job_id,
                   "logs": "/home/jovyan/.kubeai/jobs/train-mnist-1a2b/logs"}  # the record's pointer to the logs
    obj = kube.get(PYTORCHJOBS, NS, spec.job_id)
    validate_custom({k: v for k, v in obj.items() if k != "status"} | {"metadata": {"name": spec.job_id}})
    assert spec.job_dir == "/home/jovyan/.kubeai/jobs/train-mnist-1a2b"
    rec = record(spec, ref)
    assert (await backend.status(rec)).state == "Pending"

    set_conditions(kube, spec.job_id, "Created")
    play_operator(kube, obj)
    status = await until(backend, rec, "Running")  # the pods run (the fake kubelet)
    assert await backend.replicas(rec) == ["master-0", "worker-0"]
    kube.write_log(NS, f"{spec.job_id}-master-0", "epoch 1 loss 0.5\n")
    assert await backend.logs(rec, "master-0") == "epoch 1 loss 0.5\n"
    with pytest.raises(NotFound):
        await backend.logs(rec, "worker-7")

    set_conditions(kube, spec.job_id, "Created", "Running", "Succeeded",
                   startTime="2026-01-01T00:00:00Z", completionTime="2026-01-01T00:10:00Z")
    status = await until(backend, rec, "Succeeded")
    assert status.finished - status.started == 600
    events = await backend.events(rec)
    assert {"Scheduled", "Started"} <= {e.reason for e in events}
    assert any(e.source == "master-0" for e in events)


async def test_a_failed_job_says_which_replica_failed_and_why(kube, make_backend):
    backend = await make_backend()
    spec = job("pytorch", workers=2)
    rec = record(spec, await backend.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(backend, rec, "Running")
    kube.write_log(NS, f"{spec.job_id}-worker-0", "Traceback...\nZeroDivisionError: division by zero\n")
    kube.kubelet.terminate(NS, f"{spec.job_id}-worker-0", exit_code=1)
    set_conditions(kube, spec.job_id, ("Failed", "PyTorchJob train-mnist-1a2b is failed because 1 Worker replica(s) failed."))
    status = await until(backend, rec, "Failed")
    assert status.exit_code == 1
    assert "1 Worker replica(s) failed" in status.reason
    assert "worker-0 exited with code 1" in status.reason
    assert "ZeroDivisionError" in status.reason  # the last lines of its log, fetched once
    calls = len(kube.calls)
    await backend.status(rec)
    assert len(kube.calls) == calls


async def test_unschedulable_pods_show_as_the_pending_reason_and_in_events(kube, make_backend):
    backend = await make_backend()
    kube.kubelet.set_mode("unschedulable")
    spec = job("pytorch", "gpu", workers=1)
    rec = record(spec, await backend.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    deadline = time.monotonic() + 5
    while not (status := await backend.status(rec)).reason.startswith("Unschedulable:"):
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)
    assert status.state == "Pending" and "Insufficient cpu" in status.reason
    events = await backend.events(rec)
    warning = next(e for e in events if e.reason == "FailedScheduling")
    assert warning.type == "Warning" and warning.message.startswith("Unschedulable: 0/1 nodes")
    assert warning.source == "master-0"
    assert await backend.logs(rec, "master-0") == ""  # not started: nothing logged yet


async def test_kueue_jobs_wait_for_admission(kube, make_backend):
    backend = await make_backend(gang_scheduler="kueue")
    spec = job("pytorch", workers=1)
    rec = record(spec, await backend.submit(spec))
    obj = kube.get(PYTORCHJOBS, NS, spec.job_id)
    assert obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "vision"
    assert obj["spec"]["runPolicy"]["suspend"] is True
    status = await backend.status(rec)
    assert (status.state, status.reason) == ("Pending", "waiting for Kueue admission")


async def test_a_missing_operator_refuses_the_submission_and_creates_nothing(kube, make_backend):
    backend = await make_backend(missing=("MPIJob",))
    before = len(kube.calls)
    with pytest.raises(InvalidInput, match="the MPI operator .kubeflow.org/v2beta1 MPIJob. is not installed") as e:
        await backend.submit(job("mpi", workers=2))
    assert e.value.status == 400
    assert not kube.find_calls("create", calls=kube.calls[before:])
    assert not kube.list("kubeflow.org/v2beta1/mpijobs", NS)


async def test_pytorch_falls_back_to_trainjob_and_a_forced_kind_wins(kube, make_backend):
    backend = await make_backend(missing=("PyTorchJob",))
    assert backend.kind_for("pytorch") == "TrainJob"
    forced = await make_backend(kinds={"pytorch": "TrainJob"})
    assert forced.kind_for("pytorch") == "TrainJob"
    spec = job("pytorch", workers=4)
    ref = await forced.submit(spec)
    assert ref["kind"] == "TrainJob"
    trainjob = kube.get("trainer.kubeflow.org/v1alpha1/trainjobs", NS, spec.job_id)
    runtime = kube.get("trainer.kubeflow.org/v1alpha1/trainingruntimes", NS, "kubeai-project-vision")
    for obj in (trainjob, runtime):
        validate_custom({"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": obj["metadata"]["name"]},
                         "spec": obj["spec"]})
    # A second submission leaves the runtime as it is; changed settings change it (once).
    await forced.submit(job("pytorch", job_id="second-job"))
    assert [kind for kind, _ in kube.history(RUNTIMES, NS, "kubeai-project-vision")] == ["ADDED"]
    forced.ttl_seconds_after_finished = 60
    await forced.submit(job("pytorch", job_id="third-job"))
    assert [kind for kind, _ in kube.history(RUNTIMES, NS, "kubeai-project-vision")] == ["ADDED", "MODIFIED"]
    assert kube.get(RUNTIMES, NS, "kubeai-project-vision")["spec"]["template"]["spec"]["ttlSecondsAfterFinished"] == 60
    with pytest.raises(Exception, match="is not one of"):
        KubernetesBackend(kinds={"mpi": "TrainJob"})


RUNTIMES = "trainer.kubeflow.org/v1alpha1/trainingruntimes"


def trainer_defaults(runtime):
    """What the API server fills in a TrainingRuntime from its CRD's schema defaults (JobSet's)."""
    for replicated in runtime.get("spec", {}).get("template", {}).get("spec", {}).get("replicatedJobs", []):
        replicated.setdefault("replicas", 1)
        replicated.setdefault("groupName", "default")


async def test_each_submission_applies_the_runtime_and_the_servers_defaults_stay(kube, make_backend):
    """The API server defaults fields we do not set: comparing what we send with what we read
    would rewrite the runtime at every submission. One server-side apply, as our field manager,
    of only our fields: an unchanged runtime is not written again."""
    kube.default(RUNTIMES, trainer_defaults)
    backend = await make_backend(kinds={"pytorch": "TrainJob"})
    for job_id in ("first-job", "second-job", "third-job"):
        await backend.submit(job("pytorch", job_id=job_id))
    runtime = kube.get(RUNTIMES, NS, "kubeai-project-vision")
    assert runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["replicas"] == 1  # the server's default stays
    assert [kind for kind, _ in kube.history(RUNTIMES, NS, "kubeai-project-vision")] == ["ADDED"]
    calls = kube.find_calls(resource=RUNTIMES)
    assert [c.verb for c in calls] == ["patch"] * 3  # no read, no update: one apply each
    assert all(c.query["fieldManager"] == "jupyter-kubeai" and c.query["force"] == "true" for c in calls)


async def test_cancel_deletes_the_job_object_and_its_pods(kube, make_backend):
    backend = await make_backend()
    spec = job("pytorch", workers=3)
    rec = record(spec, await backend.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(backend, rec, "Running")
    assert await backend.cancel(rec) is True
    assert kube.get(PYTORCHJOBS, NS, spec.job_id) is None
    assert kube.list("pods", NS, labels=f"kubeai.jupyter.org/job={spec.job_id}") == []
    assert (await until(backend, rec, "Cancelled")).state == "Cancelled"
    assert await backend.cancel(rec) is False


async def test_finished_objects_past_the_ttl_are_deleted_and_the_status_stays(kube, make_backend):
    backend = await make_backend(ttl_seconds_after_finished=3600)
    old, new = job("pytorch", job_id="old-job"), job("pytorch", job_id="new-job")
    recs = [record(s, await backend.submit(s)) for s in (old, new)]
    set_conditions(kube, "old-job", "Succeeded", completionTime="2020-01-01T00:00:00Z")
    set_conditions(kube, "new-job", "Succeeded", completionTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    kube.create("pods", {"metadata": {"name": "old-job-master-0", "labels": {
        "app.kubernetes.io/managed-by": "jupyter-kubeai", "kubeai.jupyter.org/job": "old-job"}},
        "spec": {"containers": [{"name": "pytorch", "image": "x"}]}}, NS)
    await until(backend, recs[0], "Succeeded")
    await until(backend, recs[1], "Succeeded")
    assert await backend.collect_garbage(active={"old-job"}) == []  # its record does not have the end yet
    assert await backend.collect_garbage() == ["old-job"]
    assert kube.get(PYTORCHJOBS, NS, "old-job") is None and kube.get("pods", NS, "old-job-master-0") is None
    assert kube.get(PYTORCHJOBS, NS, "new-job") is not None
    # Its record was still active (the service had not looked yet): it ended Succeeded, not "vanished".
    assert (await until(backend, recs[0], "Succeeded")).state == "Succeeded"


async def test_an_object_deleted_behind_our_back_fails_the_job_with_the_reason(kube, make_backend):
    backend = await make_backend()
    spec = job("pytorch")
    rec = record(spec, await backend.submit(spec), state="Running")
    kube.delete(PYTORCHJOBS, NS, spec.job_id)
    status = await until(backend, rec, "Failed")
    assert "deleted outside jupyter_kubeai" in status.reason


async def test_status_replicas_and_events_make_no_api_requests(kube, make_backend):
    backend = await make_backend()
    spec = job("pytorch", workers=2)
    rec = record(spec, await backend.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(backend, rec, "Running")
    before = kube.tally()
    await asyncio.gather(*(backend.status(rec) for _ in range(200)), *(backend.replicas(rec) for _ in range(50)),
                         *(backend.events(rec) for _ in range(50)))
    after = kube.tally()
    assert after == before, after - before


async def test_the_watch_lists_again_after_410_gone(kube, make_backend):
    backend = await make_backend(watch_timeout=1)
    jobs = backend.reflectors["PyTorchJob"]
    assert jobs.lists == 1
    spec = job("pytorch")
    kube.create(PYTORCHJOBS, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {
        "name": spec.job_id, "labels": {"app.kubernetes.io/managed-by": "jupyter-kubeai"}}, "spec": {}}, NS)
    await kube.wait_for(lambda: jobs.get(spec.job_id) is not None, timeout=5)
    # Other objects change, then the history is compacted: the watch's next resume is too old.
    kube.create("configmaps", {"metadata": {"name": "unrelated"}}, NS)
    kube.compact()
    await kube.wait_for(lambda: jobs.lists >= 2, timeout=5)
    assert jobs.get(spec.job_id) is not None
    assert len(kube.find_calls("list", PYTORCHJOBS)) == 2


async def test_follow_logs_streams_until_the_replica_ends(kube, make_backend):
    backend = await make_backend()
    spec = job("pytorch")
    rec = record(spec, await backend.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(backend, rec, "Running")
    pod = f"{spec.job_id}-master-0"
    kube.write_log(NS, pod, "step 1\n")
    seen = []

    async def follow():
        async for chunk in backend.follow_logs(rec, "master-0"):
            seen.append(chunk)

    task = asyncio.create_task(follow())
    await kube.wait_for(lambda: "".join(seen) == "step 1\n")
    kube.write_log(NS, pod, "step 2\n")
    await kube.wait_for(lambda: "".join(seen) == "step 1\nstep 2\n")
    kube.kubelet.terminate(NS, pod)
    await asyncio.wait_for(task, 5)
    assert len(kube.find_calls("get", "pods")) >= 1


@pytest.mark.parametrize("framework", ["tensorflow", "mpi", "single"])
async def test_every_framework_is_created_as_its_kind(kube, make_backend, framework):
    backend = await make_backend(gang_scheduler="volcano", pool_label="pool", pack_gpu_workers="kubernetes.io/hostname")
    spec = job(framework, "gpu", 1 if framework == "single" else 4)
    ref = await backend.submit(spec)
    resource = {"tensorflow": "kubeflow.org/v1/tfjobs", "mpi": "kubeflow.org/v2beta1/mpijobs", "single": "batch/v1/jobs"}[framework]
    obj = kube.get(resource, NS, spec.job_id)
    body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": spec.job_id,
            "labels": obj["metadata"]["labels"]}, "spec": obj["spec"]}
    (validate_core if framework == "single" else validate_custom)(body)
    assert ref["kind"] == obj["kind"]
    assert "pool" in str(obj["spec"]) and "volcano" in str(obj["spec"])


async def test_logs_outlive_the_pods_in_the_job_folder(kube, make_backend, tmp_path):
    """Each replica tees its output into <job_dir>/logs; once the TTL sweep deleted the pods, the
    service reads the replicas and their logs from the share (the containers run here, for real)."""
    share = tmp_path / "share"
    home = share / "users/alice"
    backend = await make_backend(share_root=str(share), ttl_seconds_after_finished=3600)
    spec = job("pytorch", workers=2, job_id="logs-stay", job_dir=backend.job_dir("alice", "logs-stay"))
    (home / ".kubeai/jobs/logs-stay").mkdir(parents=True)
    (home / ".kubeai/jobs/logs-stay/main.py").write_text(
        "import os, sys\nprint('epoch 1', os.environ['KUBEAI_REPLICA_ROLE'], 'loss 0.5')\n"
        "print('a warning', file=sys.stderr)\n")
    rec = record(spec, await backend.submit(spec))
    assert rec.spec["backend"]["logs"] == "/home/jovyan/.kubeai/jobs/logs-stay/logs"
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(backend, rec, "Running")
    for pod in kube.list("pods", NS, labels="kubeai.jupyter.org/job=logs-stay"):
        ran = run_replica(pod, home)
        assert ran.returncode == 0, ran.stderr
        kube.write_log(NS, pod["metadata"]["name"], ran.stdout)  # the container's log: the same lines
        kube.kubelet.terminate(NS, pod["metadata"]["name"], exit_code=ran.returncode)
    logs = home / ".kubeai/jobs/logs-stay/logs"
    assert sorted(p.name for p in logs.iterdir()) == ["master-0.exit", "master-0.log", "worker-0.exit", "worker-0.log"]
    assert "epoch 1 master loss 0.5" in await backend.logs(rec, "master-0")  # from the pod, while it is there
    set_conditions(kube, spec.job_id, "Succeeded", completionTime="2020-01-01T00:00:00Z")
    await until(backend, rec, "Succeeded")
    done = dataclasses.replace(rec, state="Succeeded")  # as the service stored it

    assert await backend.collect_garbage() == ["logs-stay"]
    assert kube.list("pods", NS, labels="kubeai.jupyter.org/job=logs-stay") == []
    await kube.wait_for(lambda: not backend.reflectors["pods"].indexed("logs-stay"))
    before = kube.tally()
    assert await backend.replicas(done) == ["master-0", "worker-0"]
    text = await backend.logs(done, "worker-0")
    assert set(text.splitlines()) == {"epoch 1 worker loss 0.5", "a warning"}
    assert [chunk async for chunk in backend.follow_logs(done, "master-0")] == [(logs / "master-0.log").read_text()]
    assert kube.tally() == before  # read from the share, not from the API
    with pytest.raises(NotFound, match="no worker-7.log in /home/jovyan/.kubeai/jobs/logs-stay/logs"):
        await backend.logs(done, "worker-7")
    # Without a view of the share, a job whose pods are gone has no replicas, and says where the logs are.
    blind = await make_backend(share_root="")
    assert await blind.replicas(done) == []
    with pytest.raises(NotFound, match="no master-0.log in /home/jovyan/.kubeai/jobs/logs-stay/logs"):
        await blind.logs(done, "master-0")


async def test_an_end_is_stored_before_the_sweep_may_delete_its_object(kube, make_backend, tmp_path):
    store = job_store(tmp_path)
    backend = await make_backend(ttl_seconds_after_finished=3600)
    manager = JobManager(store, backend, catalog=None)
    spec = job("pytorch", job_id="ends-while-stored")
    store.add(record(spec, await backend.submit(spec), state="Running"))
    set_conditions(kube, spec.job_id, "Succeeded", completionTime="2020-01-01T00:00:00Z")
    await until(backend, store.get(spec.job_id), "Succeeded")  # the watch saw it; the record has not yet
    assert await manager.collect_garbage() == []
    assert kube.get(PYTORCHJOBS, NS, spec.job_id) is not None
    await manager.reconcile()
    assert store.get(spec.job_id).state == "Succeeded"
    assert await manager.collect_garbage() == [spec.job_id]
    assert kube.get(PYTORCHJOBS, NS, spec.job_id) is None


async def test_a_restarted_service_reattaches_and_is_honest_about_jobs_that_went_meanwhile(kube, make_backend, tmp_path):
    """A fresh backend and the same store: a running job stays Running, then its end is stored as the
    watch sees it; jobs whose objects were deleted while the service was down end as their folders say."""
    share = tmp_path / "share"
    store = job_store(tmp_path)
    first = await make_backend(share_root=str(share))
    names = ("still-running", "done-away", "failed-away", "lost-away")
    specs = {name: job("pytorch", workers=2, job_id=name, job_dir=first.job_dir("alice", name)) for name in names}
    for spec in specs.values():
        store.add(record(spec, await first.submit(spec)))
        play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
        set_conditions(kube, spec.job_id, "Created", "Running", startTime=ago(60))
    manager = JobManager(store, first, catalog=None)
    deadline = time.monotonic() + 5
    while {store.get(n).state for n in names} != {"Running"}:
        assert time.monotonic() < deadline, [store.get(n) for n in names]
        await manager.reconcile()
        await asyncio.sleep(0.02)
    await first.stop()

    # While the service is down: three jobs end and their objects are deleted (the operator's TTL).
    def left(name, **exits):
        logs = share / "users/alice/.kubeai/jobs" / name / "logs"
        logs.mkdir(parents=True)
        for replica, code in exits.items():
            (logs / f"{replica}.exit").write_text(f"{code}\n")
            (logs / f"{replica}.log").write_text("Traceback (most recent call last):\nValueError: nan loss\n"
                                                 if code else "done\n")

    left("done-away", **{"master-0": 0, "worker-0": 0})
    left("failed-away", **{"master-0": 0, "worker-0": 1})
    for name in ("done-away", "failed-away", "lost-away"):
        kube.delete(PYTORCHJOBS, NS, name)
        for pod in kube.list("pods", NS, labels=f"kubeai.jupyter.org/job={name}"):
            kube.delete("pods", NS, pod["metadata"]["name"])

    again = await make_backend(share_root=str(share))
    manager = JobManager(store, again, catalog=None)
    changed = {r.job_id for r in await manager.reconcile()}
    assert changed == {"done-away", "failed-away", "lost-away"}
    assert store.get("still-running").state == "Running"
    done = store.get("done-away")
    assert done.state == "Succeeded" and "ended while the kubeai service was down" in done.reason
    failed = store.get("failed-away")
    assert failed.state == "Failed" and failed.reason.startswith("worker-0 exited with code 1 while the kubeai service was down")
    assert "ValueError: nan loss" in failed.reason  # the last lines of its log in the folder
    lost = store.get("lost-away")
    assert lost.state == "Failed"
    assert "objects were deleted while the kubeai service was down" in lost.reason
    assert "its logs are in /home/jovyan/.kubeai/jobs/lost-away/logs" in lost.reason
    assert await again.logs(failed, "worker-0") == "Traceback (most recent call last):\nValueError: nan loss\n"

    # The re-attached job's end is stored as soon as the watch sees it (not at the next 30 s round).
    loop = asyncio.create_task(manager.reconcile_forever(30))
    try:
        await asyncio.sleep(0.2)
        set_conditions(kube, "still-running", "Created", "Running", "Succeeded", startTime=ago(60), completionTime=ago(1))
        await kube.wait_for(lambda: store.get("still-running").state == "Succeeded", timeout=5)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
