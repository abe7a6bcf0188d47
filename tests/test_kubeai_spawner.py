"""KubeAISpawner's real start/poll/stop against an HTTP-level fake Kubernetes API.

The catalog comes from a real SQLite store; the spawner checks the user's
options the way the hub calls it (``_run_apply_user_options``), then
KubeSpawner's own code creates the pod through the fake API server. Every
created object is validated against the core/v1 schema.
"""

import re

import pytest
from tornado import web

from jupyter_kubeai.spawner import KubeAISpawner
from jupyter_kubeai.store.catalog import CatalogStore
from jupyter_kubeai.store.schema import open_engine, upgrade

from k8s_schema import validate_core
from kubefake import NAMESPACE, FakeUser, make_spawner

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def catalog_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'kubeai.sqlite'}"
    engine = open_engine(url)
    upgrade(engine)
    CatalogStore(engine).seed(
        images=[
            {"name": "base", "image": "quay.io/kubeai/base:1.0", "default": True},
            {"name": "torch", "image": "quay.io/kubeai/torch:2.13-cuda", "groups": ["vision"]},
        ],
        profiles=[
            {"name": "small", "cpu_request": "500m", "cpu_limit": "1", "memory_request": "1Gi", "memory_limit": "2Gi", "default": True},
            {"name": "gpu", "cpu_request": "2", "cpu_limit": "8", "memory_request": "8Gi", "memory_limit": "32Gi",
             "gpus": 1, "max_gpus": 2, "groups": ["vision"], "placement": {"node_selector": {"pool": "gpu"}}},
        ],
    )
    engine.dispose()
    return url


def spawner_for(catalog_url, name, groups, **traits):
    return make_spawner(FakeUser(name, groups=groups), spawner_class=KubeAISpawner, catalog_url=catalog_url, **traits)


async def start(spawner, options):
    await spawner._run_apply_user_options(options)  # what the hub does before start()
    return await spawner.start()


def the_pod(kube, spawner):
    pod = kube.get("pods", NAMESPACE, spawner.pod_name)
    validate_core(pod)
    return pod


@pytest.mark.parametrize("groups", [[], ["vision"], ["nlp", "vision"]], ids=["0-groups", "1-group", "2-groups"])
async def test_cpu_server_with_shared_pvc(kube, catalog_url, groups):
    spawner = spawner_for(catalog_url, "alice", groups, share_claim_name="ml-share")
    url = await start(spawner, {"profile": "small", "image": "base"})
    assert url.startswith("http://")
    assert await spawner.poll() is None

    pod = the_pod(kube, spawner)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "quay.io/kubeai/base:1.0"
    # Quantities as sent (the API server turns numbers into canonical strings).
    resources = {kind: {k: str(v) for k, v in values.items()} for kind, values in container["resources"].items()}
    assert resources == {"limits": {"cpu": "1.0", "memory": "2147483648"}, "requests": {"cpu": "0.5", "memory": "1073741824"}}
    assert pod["spec"]["volumes"][-1] == {"name": "kubeai-share", "persistentVolumeClaim": {"claimName": "ml-share"}}
    mounts = [m for m in container["volumeMounts"] if m["name"] == "kubeai-share"]
    assert mounts == (
        [{"name": "kubeai-share", "mountPath": "/home/jovyan", "subPath": "users/alice"}]
        + [{"name": "kubeai-share", "mountPath": f"/mnt/projects/{g}", "subPath": f"projects/{g}"} for g in sorted(groups)]
        + [{"name": "kubeai-share", "mountPath": "/mnt/global", "subPath": "global", "readOnly": True}]
    )
    # CPU-only: no GPU toleration, no GPU limit, so never on a tainted GPU node.
    assert GPU_TAINT not in (pod["spec"].get("tolerations") or [])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBEAI_IMAGE"] == "base" and env["KUBEAI_PROFILE"] == "small" and env["KUBEAI_MODE"] == "kubernetes"
    # The lab gets no Kubernetes credentials (KubeSpawner: no service account, no token).
    assert pod["spec"]["automountServiceAccountToken"] is False
    # Nothing but the pod was created: no PVC (the share exists already).
    assert kube.list("persistentvolumeclaims") == []

    await spawner.stop()
    assert kube.get("pods", NAMESPACE, spawner.pod_name) is None
    assert isinstance(await spawner.poll(), int)


async def test_gpu_server_gets_limit_toleration_and_node_selector(kube, catalog_url):
    spawner = spawner_for(catalog_url, "bob", ["vision"], gpu_node_selector={"accelerator": "nvidia"})
    await start(spawner, {"profile": "gpu", "image": "torch", "gpus": "2"})
    pod = the_pod(kube, spawner)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "quay.io/kubeai/torch:2.13-cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu", "accelerator": "nvidia"}
    assert GPU_TAINT in pod["spec"]["tolerations"]
    await spawner.stop()


async def test_per_user_pvc_is_created_once(kube, catalog_url):
    spawner = spawner_for(catalog_url, "alice", ["vision"], user_pvc=True, storage_capacity="10Gi", storage_class="fast")
    await start(spawner, {})
    [pvc] = kube.list("persistentvolumeclaims")
    validate_core(pvc)
    assert pvc["metadata"]["name"] == spawner.pvc_name
    assert pvc["spec"]["storageClassName"] == "fast"
    pod = the_pod(kube, spawner)
    assert {"name": "kubeai-home", "persistentVolumeClaim": {"claimName": spawner.pvc_name}} in pod["spec"]["volumes"]
    assert {"name": "kubeai-home", "mountPath": "/home/jovyan"} in pod["spec"]["containers"][0]["volumeMounts"]
    await spawner.stop()
    # A second start reuses the PVC: no second create.
    calls = len(kube.calls)
    await start(spawner, {})
    assert [c.key for c in kube.calls[calls:] if c.verb == "create"] == ["create pods"]
    await spawner.stop()


async def test_repeated_starts_do_not_pile_up_volumes(kube, catalog_url):
    spawner = spawner_for(catalog_url, "alice", ["vision"])
    for _ in range(2):
        await start(spawner, {"profile": "small"})
        volumes = the_pod(kube, spawner)["spec"]["volumes"]
        await spawner.stop()
    assert [v["name"] for v in volumes].count("kubeai-share") == 1


async def test_group_changes_apply_at_the_next_spawn(kube, catalog_url):
    spawner = spawner_for(catalog_url, "alice", ["vision"])
    await start(spawner, {})
    await spawner.stop()
    spawner.user.groups = []  # the admin removed alice from vision
    await start(spawner, {})
    paths = [m["mountPath"] for m in the_pod(kube, spawner)["spec"]["containers"][0]["volumeMounts"]]
    assert "/mnt/projects/vision" not in paths
    await spawner.stop()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "gpu"}, "Size 'gpu' is not one you may use"),
        ({"image": "torch"}, "Image 'torch' is not one you may use"),
        ({"profile": "small", "gpus": "1"}, "allows 0 GPU(s), not 1"),
        ({"image--unlisted-choice": "evil/miner:1"}, "You may not type an image of your own"),
    ],
)
async def test_tampered_options_are_refused_before_anything_is_created(kube, catalog_url, options, message):
    spawner = spawner_for(catalog_url, "carol", [])
    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options(options)
    assert error.value.status_code == 400
    assert message in error.value.jupyterhub_message
    assert [c for c in kube.calls if c.verb in ("create", "patch", "update")] == []


async def test_gpu_count_outside_the_size_is_refused(kube, catalog_url):
    spawner = spawner_for(catalog_url, "bob", ["vision"])
    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options({"profile": "gpu", "gpus": "3"})
    assert "allows 1, 2 GPU(s), not 3" in error.value.jupyterhub_message


async def test_failed_start_cleans_up(kube, catalog_url):
    kube.fail("create", "pods", status=500, message="etcd is down")
    spawner = spawner_for(catalog_url, "alice", ["vision"], k8s_api_request_retry_timeout=2)
    with pytest.raises(Exception):
        await start(spawner, {})
    assert kube.list("pods", NAMESPACE) == []


async def test_unschedulable_start_times_out_and_stop_removes_the_pod(kube, catalog_url):
    kube.kubelet.set_mode("unschedulable")
    spawner = spawner_for(catalog_url, "alice", [], start_timeout=2)
    with pytest.raises(Exception):
        await start(spawner, {})
    # The hub stops a server whose start failed; nothing is left behind.
    await spawner.stop()
    assert kube.list("pods", NAMESPACE) == []


async def test_progress_speaks_in_words(kube, catalog_url):
    spawner = spawner_for(catalog_url, "bob", ["vision"])
    await start(spawner, {"profile": "gpu", "image": "torch", "gpus": "1"})
    # Events reach the spawner through its watch, which may trail start()
    # under load; progress() then reports what has arrived.
    await kube.wait_for(lambda: {"Scheduled", "Pulling"} <= {e["reason"] for e in spawner.events}, timeout=10)
    messages = []
    async for event in spawner.progress():
        messages.append(event["message"])
        if len(messages) > 12:
            break
    assert messages[0] == "Starting gpu (8 CPU, 32Gi memory, up to 2 GPU (nvidia.com/gpu)) with image torch"
    assert messages[1].startswith("Storage: your folder at /home/jovyan; projects: vision at /mnt/projects/vision")
    # The readable phrase, then the kubelet's (or scheduler's) own text.
    assert any(re.fullmatch(r"Server scheduled on node \S+ \(Successfully assigned jupyter/\S+ to \S+\)", m) for m in messages)
    assert any(m.startswith("Pulling image quay.io/kubeai/torch") and m.endswith('(Pulling image "quay.io/kubeai/torch:2.13-cuda")')
               for m in messages)
    assert "JupyterLab starting (Started container notebook)" in messages
    await spawner.stop()
