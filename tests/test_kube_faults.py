"""Kubernetes API faults in the middle of a submit, a cancel or a deploy (tests/kubefake.py injects them).

Each fault leaves exactly one object (or none, when the operation failed) and
an answer that says what happened: a 5xx or a timeout is retried; a create
whose answer was lost is found by its name and taken as made when it is ours;
a dropped watch resumes, and lists again after 410 Gone.
"""

import asyncio
import time

import pytest
from test_kube_backend import NS, OTHER_KINDS, PYTORCHJOBS, install, play_operator, record, until
from test_kube_serving import DEPLOYMENTS, HPAS, ISVCS, NETPOLS, SERVICES, deployment
from test_training_objects import job

from jupyter_kubeai.backends.kubernetes import KubernetesBackend
from jupyter_kubeai.backends.kubernetes_serving import KubernetesServing
from jupyter_kubeai.errors import Conflict, Unavailable
from jupyter_kubeai.kube.client import ApiError
from jupyter_kubeai.kube.training import PYTORCHJOB
from jupyter_kubeai.kube.watch import Reflector

#: Short enough that a hang is noticed quickly, retries that do not wait long.
FAST = {"api_request_timeout": 0.5, "api_retry_backoff": 0.01}
SERVING_NS = "serving"


@pytest.fixture
async def jobs(kube):
    install(kube)
    backend = KubernetesBackend(namespace=NS, cleanup_interval=0, **FAST)
    await backend.start()
    yield backend
    await backend.stop()


@pytest.fixture
async def serving(kube):
    kube.serve_kind(ISVCS, "InferenceService")
    backend = KubernetesServing(namespace=SERVING_NS, **FAST)
    await backend.start()
    yield backend
    await backend.stop()


def creates(kube, resource, name):
    return [c.status for c in kube.find_calls("create", resource, name=None) if (c.body or {}).get("metadata", {}).get("name") == name]


# --- submitting ------------------------------------------------------------------------------------

async def test_a_5xx_on_submit_is_retried_and_makes_one_object(kube, jobs):
    kube.fail("create", PYTORCHJOBS, status=500, times=1)
    kube.fail("create", PYTORCHJOBS, status=503, times=1)
    spec = job("pytorch")
    ref = await jobs.submit(spec)
    assert ref["name"] == spec.job_id
    assert creates(kube, PYTORCHJOBS, spec.job_id) == [500, 503, 201]
    assert [o["metadata"]["name"] for o in kube.list(PYTORCHJOBS, NS)] == [spec.job_id]


@pytest.mark.parametrize("fault", ["drop", "hang"])
async def test_a_create_whose_answer_is_lost_is_found_not_doubled(kube, jobs, fault):
    """The server made it, the answer never came (the connection dropped, or it came after the
    client's timeout): the repeat's "already exists" is our own object, so the submission succeeded."""
    if fault == "drop":
        kube.drop("create", PYTORCHJOBS, times=1)
    else:
        kube.hang("create", PYTORCHJOBS, 5, serve=True, times=1)
    spec = job("pytorch", workers=2)
    rec = record(spec, await jobs.submit(spec))
    assert creates(kube, PYTORCHJOBS, spec.job_id)[1:] == [409]
    assert len(kube.list(PYTORCHJOBS, NS)) == 1
    # And the record is true: the job is followed as any other.
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(jobs, rec, "Running")


@pytest.mark.parametrize(("framework", "kinds", "resource"), OTHER_KINDS)
async def test_every_kind_is_found_after_a_lost_answer(kube, framework, kinds, resource):
    install(kube)
    backend = KubernetesBackend(namespace=NS, cleanup_interval=0, kinds=kinds, **FAST)
    try:
        kube.drop("create", resource, times=1)
        spec = job(framework, workers=1 if framework == "single" else 2)
        assert (await backend.submit(spec))["name"] == spec.job_id
        assert [o["metadata"]["name"] for o in kube.list(resource, NS)] == [spec.job_id]
        assert kube.find_calls("get", resource, name=spec.job_id)
    finally:
        await backend.stop()


async def test_after_a_lost_answer_someone_elses_object_is_not_taken_for_ours(kube, jobs):
    spec = job("pytorch")
    theirs = kube.create(PYTORCHJOBS, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {
        "name": spec.job_id, "labels": {"app": "something-else"}}, "spec": {}}, NS)
    kube.fail("create", PYTORCHJOBS, status=503, times=1)  # may have been applied, for all we know
    with pytest.raises(Conflict, match="exists already"):
        await jobs.submit(spec)
    assert kube.get(PYTORCHJOBS, NS, spec.job_id)["metadata"]["uid"] == theirs["metadata"]["uid"]
    assert not kube.find_calls("delete", PYTORCHJOBS)


async def test_a_submission_that_fails_for_good_leaves_no_object(kube, jobs):
    """The create was applied but every way of learning so failed: the submission fails
    (the service drops its record) and the object it may have made is deleted."""
    kube.drop("create", PYTORCHJOBS, times=1)
    kube.fail("get", PYTORCHJOBS, status=503)
    spec = job("pytorch")
    with pytest.raises(Unavailable, match="did not accept the job"):
        await jobs.submit(spec)
    assert kube.list(PYTORCHJOBS, NS) == []
    assert kube.find_calls("delete", PYTORCHJOBS, name=spec.job_id)


async def test_an_api_that_never_answers_fails_the_submission_in_bounded_time(kube, jobs):
    kube.hang("create", PYTORCHJOBS, 5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="did not answer"):
        await jobs.submit(job("pytorch"))
    # 1 + api_retries attempts of api_request_timeout each, and short waits.
    assert time.monotonic() - started < 4 * 0.5 + 2
    assert len(kube.find_calls("create", PYTORCHJOBS)) == 4
    assert kube.list(PYTORCHJOBS, NS) == []


# --- cancelling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["drop", "500"])
async def test_a_cancel_whose_delete_fails_once_still_cancels(kube, jobs, fault):
    spec = job("pytorch", workers=2)
    rec = record(spec, await jobs.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(jobs, rec, "Running")
    if fault == "drop":
        kube.drop("delete", PYTORCHJOBS, times=1)  # deleted, the answer lost: the repeat finds nothing
    else:
        kube.fail("delete", PYTORCHJOBS, status=500, times=1)
    assert await jobs.cancel(rec) is True
    assert kube.get(PYTORCHJOBS, NS, spec.job_id) is None
    assert kube.list("pods", NS, labels=f"kubeai.jupyter.org/job={spec.job_id}") == []
    assert (await until(jobs, rec, "Cancelled")).state == "Cancelled"


async def test_a_cancel_while_the_watch_is_down_is_seen_once_it_lists_again(kube, jobs):
    """The watch drops, cannot resume (410 Gone): the object's deletion is only in a fresh list."""
    spec = job("pytorch")
    rec = record(spec, await jobs.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(jobs, rec, "Running")
    reflector = jobs.reflectors["PyTorchJob"]
    lists = reflector.lists
    kube.fail("watch", PYTORCHJOBS, status=410, times=1)
    kube.drop_watches()
    await jobs.cancel(rec)
    assert (await until(jobs, rec, "Cancelled")).state == "Cancelled"
    assert reflector.lists == lists + 1 and reflector.get(spec.job_id) is None


async def test_a_deletion_during_a_dropped_watch_is_seen_after_410(kube, jobs):
    spec = job("pytorch")
    rec = record(spec, await jobs.submit(spec), state="Running")
    reflector = jobs.reflectors["PyTorchJob"]
    await kube.wait_for(lambda: reflector.get(spec.job_id) is not None)
    kube.fail("watch", PYTORCHJOBS, status=410, times=1)
    kube.drop_watches()
    kube.delete(PYTORCHJOBS, NS, spec.job_id)
    status = await until(jobs, rec, "Failed")
    assert "deleted outside jupyter_kubeai" in status.reason


async def test_a_watch_dropped_many_times_resumes_where_it_was(kube, jobs):
    reflector = jobs.reflectors["PyTorchJob"]
    lists = reflector.lists
    for i in range(3):
        kube.drop_watches()
        kube.create(PYTORCHJOBS, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {
            "name": f"job-{i}", "labels": {"app.kubernetes.io/managed-by": "jupyter-kubeai"}}, "spec": {}}, NS)
        await kube.wait_for(lambda i=i: reflector.get(f"job-{i}") is not None)
    assert reflector.lists == lists  # resumed from its resourceVersion: no new list
    resumed = [c.query.get("resourceVersion") for c in kube.find_calls("watch", PYTORCHJOBS)]
    assert all(resumed) and resumed == sorted(resumed, key=int)


async def test_a_watch_closed_at_once_again_and_again_is_not_a_busy_loop():
    """A proxy that closes every watch at once: the reflector waits longer each time."""
    class ClosingClient:
        watches = 0

        async def request(self, method, path, query=None, **_):
            return {"metadata": {"resourceVersion": "7"}, "items": []}

        async def stream(self, path, query=None, timeout=None):
            ClosingClient.watches += 1
            return
            yield

    reflector = Reflector(ClosingClient(), PYTORCHJOB, NS, backoff=(0.05, 0.2))
    await reflector.start()
    await asyncio.sleep(0.6)
    await reflector.stop()
    assert reflector.lists == 1
    assert 2 <= ClosingClient.watches <= 8  # 0.05 + 0.1 + 0.2 + 0.2 ...: a handful, not thousands


# --- deploying -------------------------------------------------------------------------------------

async def test_a_deploy_through_5xx_and_a_lost_answer_makes_each_object_once(kube, serving):
    serving.use_kserve = False
    kube.fail("create", DEPLOYMENTS, status=503, times=1)
    kube.drop("create", SERVICES, times=1)
    details = await serving.deploy(deployment())
    assert details["objects"] == ["Deployment/iris", "Service/iris"]
    assert [o["metadata"]["name"] for o in kube.list(DEPLOYMENTS, SERVING_NS)] == ["iris"]
    assert [o["metadata"]["name"] for o in kube.list(SERVICES, SERVING_NS)] == ["iris"]
    assert creates(kube, SERVICES, "iris") == [0, 409]


async def test_every_object_of_an_autoscaled_service_is_found_after_a_lost_answer(kube, serving):
    serving.use_kserve = False
    serving.owner_namespace_template = "jupyterhub-{username}"
    for resource in (DEPLOYMENTS, SERVICES, HPAS, NETPOLS):
        kube.drop("create", resource, times=1)
    details = await serving.deploy(deployment(replicas=1, max_replicas=3))
    assert details["objects"] == ["Deployment/iris", "Service/iris", "HorizontalPodAutoscaler/iris", "NetworkPolicy/iris"]
    for resource in (DEPLOYMENTS, SERVICES, HPAS, NETPOLS):
        assert [o["metadata"]["name"] for o in kube.list(resource, SERVING_NS)] == ["iris"]
        assert creates(kube, resource, "iris") == [0, 409]
        assert kube.find_calls("get", resource, name="iris")


async def test_an_inference_service_whose_create_answer_is_lost(kube, serving):
    kube.hang("create", ISVCS, 5, serve=True, times=1)
    details = await serving.deploy(deployment())
    assert details["kind"] == "InferenceService"
    assert len(kube.list(ISVCS, SERVING_NS)) == 1


async def test_a_deploy_that_fails_for_good_leaves_nothing(kube, serving):
    serving.use_kserve = False
    kube.drop("create", SERVICES)
    kube.fail("get", SERVICES, status=503)
    with pytest.raises(Unavailable, match="Service"):
        await serving.deploy(deployment())
    assert kube.list(DEPLOYMENTS, SERVING_NS) == [] and kube.list(SERVICES, SERVING_NS) == []


async def test_update_and_delete_through_faults(kube, serving):
    await serving.deploy(deployment(version=1))
    kube.fail("patch", ISVCS, status=502, times=1)
    await serving.update(deployment(version=2))
    assert kube.get(ISVCS, SERVING_NS, "iris")["metadata"]["labels"]["kubeai.jupyter.org/model-version"] == "2"
    kube.drop("delete", ISVCS, times=1)
    assert await serving.delete("iris") is True
    assert kube.list(ISVCS, SERVING_NS) == []
    assert (await serving.status("iris")).reason == "Deleted."


# --- the client ------------------------------------------------------------------------------------

async def test_a_refusal_is_not_retried_and_a_429_is(kube, jobs):
    before = len(kube.find_calls("list", "pods"))
    kube.fail("list", "pods", status=403, times=1)
    with pytest.raises(ApiError) as e:
        await jobs.client.request("GET", f"/api/v1/namespaces/{NS}/pods")
    assert e.value.status == 403 and not e.value.uncertain
    assert len(kube.find_calls("list", "pods")) == before + 1
    kube.fail("list", "pods", status=429, times=2)
    assert (await jobs.client.request("GET", f"/api/v1/namespaces/{NS}/pods"))["items"] == []
    assert len(kube.find_calls("list", "pods")) == before + 4


async def test_a_cancel_the_api_refuses_for_good_leaves_the_job_as_it_is(kube, jobs):
    spec = job("pytorch")
    rec = record(spec, await jobs.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(jobs, rec, "Running")
    kube.fail("delete", PYTORCHJOBS, status=503)
    with pytest.raises(Unavailable, match="did not delete"):
        await jobs.cancel(rec)
    assert len(kube.find_calls("delete", PYTORCHJOBS)) == 1 + jobs.api_retries
    assert (await jobs.status(rec)).state == "Running"
    # It ends later on its own: as it ended, not "Cancelled".
    kube.kmock.failures.clear()
    kube.delete(PYTORCHJOBS, NS, spec.job_id)
    assert "deleted outside jupyter_kubeai" in (await until(jobs, rec, "Failed")).reason
