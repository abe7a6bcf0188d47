"""The fake Kubernetes API (tests/kubefake.py) runs a stock KubeSpawner for real.

The first half drives ``kubespawner.KubeSpawner`` through start/poll/stop
against the fake; the second half checks the API behaviour the fake promises
(server-side fields, errors, selectors, watches, namespaces, custom
resources) with a plain kubernetes_asyncio client.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException
from kubespawner.clients import shared_client

from kubefake import FAKE_TOKEN, NAMESPACE, FakeKube, make_spawner, parse_label_selector

POD = "jupyter-alice"


@asynccontextmanager
async def core_api():
    # A client from the default configuration, i.e. the one the fixture loaded.
    async with client.ApiClient() as api:
        yield client.CoreV1Api(api)


def pod_manifest(name: str, labels: dict[str, str] | None = None) -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


# --------------------------------------------------------------------------
# A stock KubeSpawner against the fake
# --------------------------------------------------------------------------

async def test_stock_spawner_starts_polls_and_stops(kube: FakeKube):
    spawner = make_spawner("alice")
    # Its shared client talks to this test's server.
    assert shared_client("CoreV1Api").api_client.configuration.host == kube.url

    assert isinstance(await spawner.poll(), int)  # nothing running yet

    url = await spawner.start()
    pod = kube.get("pods", NAMESPACE, POD)
    assert pod["status"]["phase"] == "Running"
    assert url == f"http://{pod['status']['podIP']}:8888"
    assert await spawner.poll() is None

    await spawner.stop()
    assert kube.get("pods", NAMESPACE, POD) is None
    assert isinstance(await spawner.poll(), int)
    # Created, bound to the node, PodScheduled, Running, deleted.
    assert [kind for kind, _ in kube.history("pods", NAMESPACE, POD)] == [
        "ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED",
    ]


async def test_kubelet_events_reach_the_spawner(kube: FakeKube):
    spawner = make_spawner("alice")
    await spawner.start()

    def reasons() -> list[str]:
        return [event["reason"] for event in spawner.events]

    # The event reflector follows its own watch, maybe a little behind the pods'.
    await kube.wait_for(lambda: "Started" in reasons())
    assert reasons() == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    await spawner.stop()


async def test_user_namespaces(kube: FakeKube):
    spawner = make_spawner("alice", enable_user_namespaces=True, user_namespace_template="user-{username}")
    await spawner.start()
    assert kube.get("namespaces", None, "user-alice")["status"]["phase"] == "Active"
    assert kube.get("pods", "user-alice", POD)["status"]["phase"] == "Running"
    # One reflector for all namespaces.
    assert [call.path for call in kube.find_calls("watch", "pods")] == ["/api/v1/pods"]
    await spawner.stop()
    assert kube.get("pods", "user-alice", POD) is None


async def test_pvc_is_created_when_storage_pvc_ensure(kube: FakeKube):
    spawner = make_spawner("alice", storage_pvc_ensure=True, storage_capacity="1Gi")
    await spawner.start()
    pvc = kube.get("persistentvolumeclaims", NAMESPACE, spawner.pvc_name)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["status"]["phase"] == "Pending"  # no provisioner in the fake
    await spawner.stop()
    # Stopping keeps the volume.
    assert kube.get("persistentvolumeclaims", NAMESPACE, spawner.pvc_name) is not None


@pytest.mark.parametrize("status", [403, 500])
async def test_pod_creation_error_fails_start(kube: FakeKube, status: int):
    failure = kube.fail("create", "pods", status=status)
    spawner = make_spawner("alice")
    with pytest.raises(ApiException) as raised:
        await spawner.start()
    assert raised.value.status == status
    assert failure.hits == 1  # not retried: only 409 is
    assert kube.get("pods", NAMESPACE, POD) is None
    if status == 403:
        assert json.loads(raised.value.body)["message"].startswith('pods is forbidden: User "system:serviceaccount')


async def test_unschedulable_pod_times_out_with_its_warning(kube: FakeKube):
    kube.kubelet.set_mode("unschedulable", pod=POD)
    spawner = make_spawner("alice", start_timeout=1)
    with pytest.raises(TimeoutError):
        await spawner.start()
    pod = kube.get("pods", NAMESPACE, POD)
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"
    await kube.wait_for(lambda: spawner.events)
    assert [e["reason"] for e in spawner.events] == ["FailedScheduling"]
    assert spawner.events[0]["type"] == "Warning"
    await spawner.stop()


async def test_exited_container_is_reported_by_poll(kube: FakeKube):
    spawner = make_spawner("alice")
    await spawner.start()
    kube.kubelet.terminate(NAMESPACE, POD, exit_code=3)
    await kube.wait_for(lambda: spawner.pod_reflector.pods[f"{NAMESPACE}/{POD}"]["status"]["phase"] == "Failed")
    assert await spawner.poll() == 3
    assert kube.get("pods", NAMESPACE, POD) is None  # delete_stopped_pods


async def test_request_record_of_a_spawn(kube: FakeKube):
    spawner = make_spawner("alice")
    await spawner.start()
    started = len(kube.calls)
    await spawner.stop()
    stop_calls = kube.calls[started:]

    [create] = kube.find_calls("create", "pods")
    assert (create.method, create.path, create.status) == ("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", 201)
    assert create.body["metadata"]["labels"]["component"] == "singleuser-server"
    assert create.token == FAKE_TOKEN
    [pod_watch] = kube.find_calls("watch", "pods")
    assert pod_watch.query["labelSelector"] == "component=singleuser-server"
    [event_watch] = kube.find_calls("watch", "events")
    assert event_watch.query["fieldSelector"] == "involvedObject.kind=Pod"

    # The reflectors list twice: once to start, once more before watching.
    assert kube.tally(kube.calls[:started]) == {
        "list pods": 2, "watch pods": 1, "list events": 2, "watch events": 1, "create pods": 1,
    }
    assert [call.key for call in stop_calls] == ["delete pods"]
    assert str(stop_calls[0]) == f"DELETE /api/v1/namespaces/{NAMESPACE}/pods/{POD}?gracePeriodSeconds=1 -> 200"


# --------------------------------------------------------------------------
# API behaviour, with a plain client
# --------------------------------------------------------------------------

async def test_server_fills_metadata_and_answers_status_errors(kube: FakeKube):
    async with core_api() as v1:
        first = await v1.create_namespaced_pod("ns", pod_manifest("a"))
        second = await v1.create_namespaced_pod("ns", pod_manifest("b"))
        assert first.metadata.namespace == "ns"
        assert first.metadata.uid and first.metadata.uid != second.metadata.uid
        assert first.metadata.creation_timestamp is not None
        assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
        assert first.status.phase == "Pending"

        with pytest.raises(ApiException) as missing:
            await v1.read_namespaced_pod("nope", "ns")
        status = json.loads(missing.value.body)
        assert (missing.value.status, status["kind"], status["reason"]) == (404, "Status", "NotFound")
        assert status["message"] == 'pods "nope" not found'
        assert status["details"] == {"name": "nope", "group": "", "kind": "pods"}

        with pytest.raises(ApiException) as duplicate:
            await v1.create_namespaced_pod("ns", pod_manifest("a"))
        assert duplicate.value.status == 409
        assert json.loads(duplicate.value.body)["reason"] == "AlreadyExists"


async def test_patch_replace_and_finalizers(kube: FakeKube):
    async with core_api() as v1:
        await v1.create_namespaced_config_map("ns", {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})
        merged = await v1.patch_namespaced_config_map("c", "ns", {"data": {"a": None, "c": "3"}})
        assert merged.data == {"b": "2", "c": "3"}
        patched = await v1.patch_namespaced_config_map("c", "ns", [{"op": "replace", "path": "/data/b", "value": "9"}])
        assert patched.data == {"b": "9", "c": "3"}

        stale = {"metadata": {"name": "c", "resourceVersion": merged.metadata.resource_version}, "data": {}}
        with pytest.raises(ApiException) as conflict:
            await v1.replace_namespaced_config_map("c", "ns", stale)
        assert (conflict.value.status, json.loads(conflict.value.body)["reason"]) == (409, "Conflict")

        await v1.patch_namespaced_config_map("c", "ns", {"metadata": {"finalizers": ["example.com/keep"]}})
        await v1.delete_namespaced_config_map("c", "ns")
        assert kube.get("configmaps", "ns", "c")["metadata"]["deletionTimestamp"]
        await v1.patch_namespaced_config_map("c", "ns", {"metadata": {"finalizers": None}})
        assert kube.get("configmaps", "ns", "c") is None


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", {"web-1", "web-2"}),
    ("app==web,tier=front", {"web-1"}),
    ("app!=web", {"db", "bare"}),
    ("app in (web, db)", {"web-1", "web-2", "db"}),
    ("app notin (web),tier", {"db"}),
    ("tier", {"web-1", "db"}),
    ("!tier", {"web-2", "bare"}),
    ("", {"web-1", "web-2", "db", "bare"}),
])
def test_label_selectors(selector: str, expected: set[str]):
    labels = {
        "web-1": {"app": "web", "tier": "front"},
        "web-2": {"app": "web"},
        "db": {"app": "db", "tier": "back"},
        "bare": {},
    }
    match = parse_label_selector(selector)
    assert {name for name, lbls in labels.items() if match({"metadata": {"labels": lbls}})} == expected


async def test_list_honours_selectors(kube: FakeKube):
    async with core_api() as v1:
        for name, labels in [("web-1", {"app": "web"}), ("web-2", {"app": "web"}), ("db", {"app": "db"})]:
            await v1.create_namespaced_pod("ns", pod_manifest(name, labels))
        await v1.create_namespaced_pod("other", pod_manifest("web-3", {"app": "web"}))

        web = await v1.list_namespaced_pod("ns", label_selector="app in (web)")
        assert [p.metadata.name for p in web.items] == ["web-1", "web-2"]
        named = await v1.list_pod_for_all_namespaces(field_selector="metadata.name=web-3")
        assert [(p.metadata.namespace, p.metadata.name) for p in named.items] == [("other", "web-3")]
        with pytest.raises(ApiException) as bad:
            await v1.list_namespaced_pod("ns", label_selector="app in web")
        assert bad.value.status == 400


async def test_watch_streams_changes_with_selectors(kube: FakeKube):
    kube.kubelet.set_mode("ignore")  # only this test changes the pods
    async with core_api() as v1:
        await v1.create_namespaced_pod("ns", pod_manifest("a", {"app": "web"}))
        listed = await v1.list_namespaced_pod("ns", label_selector="app=web")
        await v1.create_namespaced_pod("ns", pod_manifest("b", {"app": "web"}))
        await v1.create_namespaced_pod("ns", pod_manifest("c", {"app": "db"}))
        await v1.patch_namespaced_pod("a", "ns", {"metadata": {"annotations": {"x": "1"}}})
        await v1.patch_namespaced_pod("b", "ns", {"metadata": {"labels": {"app": "db"}}})  # leaves the selection
        await v1.delete_namespaced_pod("a", "ns")

        # Resumed from the list's resourceVersion, as reflectors do; the
        # server ends the stream after timeoutSeconds.
        seen = []
        async with watch.Watch().stream(v1.list_namespaced_pod, "ns", label_selector="app=web",
                                        resource_version=listed.metadata.resource_version,
                                        timeout_seconds=1) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b"), ("DELETED", "a")]
    [call] = kube.find_calls("watch", "pods")
    assert call.query["watch"] == "True" and call.status == 200


async def test_watch_from_scratch_lists_then_follows(kube: FakeKube):
    async with core_api() as v1:
        await v1.create_namespaced_pod("ns", pod_manifest("a"))

        async def create_b_once_watched():
            await kube.wait_for(lambda: kube.find_calls("watch", "pods"))
            await v1.create_namespaced_pod("ns", pod_manifest("b"))

        creator = asyncio.create_task(create_b_once_watched())
        seen = []
        async with watch.Watch().stream(v1.list_namespaced_pod, "ns", field_selector="metadata.name=b",
                                        timeout_seconds=5) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].status.phase))
                if event["object"].status.phase == "Running":
                    break
        await creator
    # Only b (the kubelet schedules and runs it); "a" is never sent.
    assert seen[0] == ("ADDED", "Pending")
    assert seen[-1] == ("MODIFIED", "Running")


async def test_namespaces_and_cascading_deletion(kube: FakeKube):
    async with core_api() as v1:
        await v1.create_namespace({"metadata": {"name": "team"}})
        assert (await v1.read_namespace("team")).status.phase == "Active"
        assert "team" in [ns.metadata.name for ns in (await v1.list_namespace()).items]

        pod = await v1.create_namespaced_pod("team", pod_manifest("p"))
        owner = {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": pod.metadata.uid}
        await v1.create_namespaced_service("other", {"metadata": {"name": "s", "ownerReferences": [owner]}})

        await v1.delete_namespace("team")
    assert kube.get("namespaces", None, "team") is None
    assert kube.get("pods", "team", "p") is None
    assert kube.get("services", "other", "s") is None  # its owner went with the namespace


async def test_custom_resources(kube: FakeKube):
    group, version, plural = "kubeflow.org", "v1", "pytorchjobs"
    job = {"apiVersion": f"{group}/{version}", "kind": "PyTorchJob",
           "metadata": {"name": "train", "labels": {"user": "alice"}}, "spec": {"replicas": 2}}
    async with client.ApiClient() as api:
        crds = client.CustomObjectsApi(api)
        created = await crds.create_namespaced_custom_object(group, version, "ns", plural, job)
        assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
        listed = await crds.list_namespaced_custom_object(group, version, "ns", plural, label_selector="user=alice")
        assert [item["metadata"]["name"] for item in listed["items"]] == ["train"]
        patched = await crds.patch_namespaced_custom_object(group, version, "ns", plural, "train",
                                                            {"spec": {"replicas": 4}})
        assert (patched["spec"], patched["metadata"]["generation"]) == ({"replicas": 4}, 2)
        await crds.delete_namespaced_custom_object(group, version, "ns", plural, "train")
    assert kube.get((group, version, plural), "ns", "train") is None
    assert kube.objects[f"{group}/{version}/{plural}", "ns", "train"].history[0] >= {"spec": {"replicas": 2}}


async def test_kmock_reactions_take_precedence(kube: FakeKube):
    # kmock's DSL answers instead of the fake; nothing is stored.
    kube.kmock["get /api/v1/namespaces/ns/pods/ghost"] << pod_manifest("ghost")
    async with core_api() as v1:
        assert (await v1.read_namespaced_pod("ghost", "ns")).metadata.name == "ghost"
        assert (await client.VersionApi(v1.api_client).get_code()).major == "1"
    assert kube.get("pods", "ns", "ghost") is None


async def test_servers_are_per_test(kube: FakeKube):
    # Nothing from the other tests: a fresh store, record and client.
    assert kube.calls == [] and not kube.store.log
    async with core_api() as v1:
        assert (await v1.list_namespaced_pod(NAMESPACE)).items == []


# --- faults, apply, defaulting, reviews by RBAC (tests/test_kube_faults.py relies on them) ------------

async def test_server_side_apply_creates_merges_and_needs_a_field_manager(kube: FakeKube):
    async with core_api() as api:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
        with pytest.raises(ApiException) as e:
            await api.patch_namespaced_config_map("c", NAMESPACE, body, _content_type="application/apply-patch+yaml")
        assert e.value.status == 422
        await api.patch_namespaced_config_map("c", NAMESPACE, body, field_manager="t",
                                              _content_type="application/apply-patch+yaml")
        kube.patch("configmaps", NAMESPACE, "c", {"data": {"b": "2"}})  # someone else's field
        applied = await api.patch_namespaced_config_map("c", NAMESPACE, {**body, "data": {"a": "3"}}, field_manager="t",
                                                        _content_type="application/apply-patch+yaml")
        assert applied.data == {"a": "3", "b": "2"}


async def test_defaults_are_filled_and_a_write_that_changes_nothing_is_no_write(kube: FakeKube):
    kube.default("configmaps", lambda obj: obj.setdefault("data", {}).setdefault("filled", "yes"))
    created = kube.create("configmaps", {"metadata": {"name": "c"}, "data": {"a": "1"}}, NAMESPACE)
    assert created["data"] == {"a": "1", "filled": "yes"}
    same = kube.patch("configmaps", NAMESPACE, "c", {"data": {"a": "1"}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert [kind for kind, _ in kube.history("configmaps", NAMESPACE, "c")] == ["ADDED"]


async def test_injected_faults(kube: FakeKube):
    async with core_api() as api:
        kube.fail("list", "pods", status=503, times=1)
        with pytest.raises(ApiException) as e:
            await api.list_namespaced_pod(NAMESPACE)
        assert e.value.status == 503
        assert (await api.list_namespaced_pod(NAMESPACE)).items == []
        kube.drop("create", "pods", times=1)
        with pytest.raises(Exception):  # the connection closes: no answer at all
            await api.create_namespaced_pod(NAMESPACE, pod_manifest("dropped"))
        assert kube.get("pods", NAMESPACE, "dropped") is not None  # but it was made
        assert kube.find_calls("create", "pods")[-1].status == 0
        kube.hang("create", "pods", 5, times=1)
        with pytest.raises(asyncio.TimeoutError):
            await api.create_namespaced_pod(NAMESPACE, pod_manifest("late"), _request_timeout=0.3)
        assert kube.get("pods", NAMESPACE, "late") is None  # not served


async def test_watches_can_be_dropped(kube: FakeKube):
    from jupyter_kubeai.kube.client import KubeClient

    api = await KubeClient.connect()
    try:
        query = {"watch": "true", "timeoutSeconds": "30"}
        task = asyncio.ensure_future(asyncio.gather(*(
            _lines(api.stream(f"/api/v1/namespaces/{NAMESPACE}/pods", query=query)) for _ in range(2))))
        await asyncio.sleep(0.3)
        kube.drop_watches()
        assert await asyncio.wait_for(task, 5) == [[], []]  # both streams ended, with nothing in them
    finally:
        await api.close()


async def _lines(stream) -> list[bytes]:
    return [line async for line in stream if line.strip()]


async def test_reviews_answered_by_rbac_rules(kube: FakeKube):
    kube.authorize([
        {"kind": "Role", "metadata": {"name": "r", "namespace": "kserve"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get"]}]},
        {"kind": "ClusterRole", "metadata": {"name": "c"},
         "rules": [{"apiGroups": [""], "resources": ["nodes", "pods/log"], "verbs": ["list", "get"]}]},
    ])
    async with core_api() as api:
        auth = client.AuthorizationV1Api(api.api_client)

        async def can(**attributes):
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                      "spec": {"resourceAttributes": attributes}}
            return (await auth.create_self_subject_access_review(review)).status.allowed

        assert await can(verb="get", resource="configmaps", namespace="kserve", name="cfg")
        assert not await can(verb="get", resource="configmaps", namespace="kserve")  # unnamed: every ConfigMap
        assert not await can(verb="get", resource="configmaps", namespace="other", name="cfg")
        assert await can(verb="list", resource="nodes")
        assert await can(verb="get", resource="pods", subresource="log", namespace="x")
        assert not await can(verb="delete", resource="nodes")
