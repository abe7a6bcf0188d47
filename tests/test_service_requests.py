"""Requests to inference services through the hub service: who may send them, the name the model
answers under (the service's, locally and on Kubernetes), its version, and the recent errors kept.

The model servers are the real runtime (``jupyter_kubeai.serving``), run in this process from the
very command line each backend builds (``LocalServing``'s, or the Kubernetes pod's), so a name or a
version the hub and the runtime disagree on shows here without starting processes or a cluster.
"""

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from serviceapp import PREFIX, call, make_service
from tornado.httpserver import HTTPServer
from traitlets.config import Config

from jupyter_kubeai.backends.local_serving import runtime_command
from jupyter_kubeai.jobs.local_commands import free_port
from jupyter_kubeai.models.deploy import ServingBackend
from jupyter_kubeai.models.spec import ServiceStatus
from jupyter_kubeai.service.models import RECENT_ERRORS_KEPT
from jupyter_kubeai.serving.app import ServingApp
from jupyter_kubeai.serving.handlers import make_server_delegate

#: A model folder's predictor.py: each instance's sum.
SUM_PREDICTOR = '''
class Predictor:
    def __init__(self, model_dir, config):
        pass

    def predict(self, payload):
        if isinstance(payload, dict):
            return {name: [float(sum(row)) for row in rows] for name, rows in payload.items()}
        return [float(sum(row)) for row in payload]
'''


@dataclass
class Served:
    app: ServingApp
    runtime: object
    server: HTTPServer
    url: str
    stopped: bool = False

    async def stop(self):
        if self.stopped:
            return
        self.stopped = True
        self.server.stop()
        await self.server.close_all_connections()
        await self.runtime.close()


async def start_runtime(argv: list[str], *, model_dir: str | None = None, port: int | None = None) -> Served:
    """The runtime as ``python -m jupyter_kubeai.serving <argv>`` would run it, in this process, on loopback."""
    app = ServingApp()
    app.load_config(argv)
    if model_dir is not None:
        app.model_dir = model_dir  # the pod's /mnt/models, here
    runtime = app.make_runtime()
    await runtime.load()
    server = HTTPServer(make_server_delegate(runtime))
    port = port or app.port
    server.listen(port, "127.0.0.1")
    return Served(app, runtime, server, f"http://127.0.0.1:{port}")


class InProcessServing(ServingBackend):
    """Local mode's model servers, started from ``LocalServing``'s own command line but in this process."""

    name = "local"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.served: dict[str, Served] = {}

    def model_path(self, share_root, relative):
        return str(Path(share_root).absolute() / relative)

    async def deploy(self, spec):
        command = runtime_command(spec, free_port())
        assert command[1:3] == ["-m", "jupyter_kubeai.serving"]
        self.served[spec.name] = await start_runtime(command[3:])
        return {"url": self.served[spec.name].url}

    async def update(self, spec):
        old = self.served.pop(spec.name, None)
        details = await self.deploy(spec)
        if old is not None:
            await old.stop()
        return details

    async def delete(self, name):
        served = self.served.pop(name, None)
        if served is not None:
            await served.stop()
        return served is not None

    async def stop(self):
        for name in list(self.served):
            await self.delete(name)

    async def crash(self, name):
        """The model server stops answering; its address stays (as a dead process's port would)."""
        await self.served[name].stop()

    async def status(self, name):
        served = self.served.get(name)
        if served is None:
            return ServiceStatus("Failed", reason="No model server is running for this service.")
        return ServiceStatus("Ready", version=int(served.app.model_version), ready_replicas=1, url=served.url)


def model_folder(share: Path, user: str, folder: str = "summer") -> str:
    path = share / "users" / user / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "predictor.py").write_text(SUM_PREDICTOR)
    return folder


@pytest.fixture
def share(tmp_path):
    share = tmp_path / "share"
    for user in ("alice", "bob"):
        (share / "users" / user).mkdir(parents=True)
    (share / "projects/vision").mkdir(parents=True)
    return share


@pytest.fixture
async def api(hub, serve, service, share, tmp_path):
    hub.add_user("dave", token="dave-token")  # in no project
    hub.add_user("erin", groups=["nlp"], token="erin-token")  # in another project
    config = Config({"LocalBackend": {"share_root": str(share)}})
    app = make_service(tmp_path, config=config, share_root=str(share), serving_backend_class=InProcessServing)
    yield app, serve(app.make_app()) + PREFIX
    await app.serving_backend.stop()


async def send(url, token, body=None, method="POST"):
    return await call(url, token, method=method, body=None if body is None else json.dumps(body))


async def deploy(url, share, *, service="sum-api", model="summer", project="vision", token="alice-token", versions=1):
    folder = model_folder(share, "alice")
    for _ in range(versions):
        code, answer = await send(url + "api/models", token, {"name": model, "path": folder,
                                                              **({"project": project} if project else {})})
        assert code == 201, answer
    code, svc = await send(url + "api/services", token, {"name": service, "model_id": answer["model"]["id"], "version": 1})
    assert code == 201, svc
    return svc


# --- the name and the version the model answers under --------------------------------------------

async def test_locally_the_model_answers_under_the_service_name_with_its_version(api, share):
    _, url = api
    svc = await deploy(url, share, versions=2)  # service "sum-api", model "summer"
    assert svc["served_name"] == "sum-api"
    assert svc["predict_url"] == "/services/kubeai/serve/sum-api/v2/models/sum-api/infer"
    # "Try it" (v1 and v2 bodies) through the REST API.
    code, answer = await send(url + "api/services/sum-api/predict", "alice-token", {"instances": [[1, 2], [3, 4]]})
    assert (code, answer) == (200, {"predictions": [3.0, 7.0]})
    v2 = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    code, answer = await send(url + "api/services/sum-api/predict", "alice-token", v2)
    assert code == 200 and (answer["model_name"], answer["model_version"]) == ("sum-api", "1"), answer
    # The same at the service's own URL, where the panel and scripts send them.
    code, answer = await send(url + "serve/sum-api/v1/models/sum-api:predict", "alice-token", {"instances": [[5, 5]]})
    assert (code, answer) == (200, {"predictions": [10.0]})
    code, answer = await send(url + svc["predict_url"].removeprefix(PREFIX), "alice-token", v2)
    assert code == 200, answer
    code, meta = await call(url + "serve/sum-api/v2/models/sum-api", "alice-token")
    assert code == 200 and meta["name"] == "sum-api" and meta["versions"] == ["1"], meta
    assert (await call(url + "serve/sum-api/v2/models/sum-api/versions/1/ready", "alice-token"))[0] == 200
    # After an update the runtime reports the new version.
    code, svc = await send(url + "api/services/sum-api", "alice-token", {"version": 2}, "PATCH")
    assert code == 200 and svc["serving_version"] == 2
    code, answer = await send(url + "api/services/sum-api/predict", "alice-token", v2)
    assert code == 200 and answer["model_version"] == "2"
    # The registry model's name is not a name the service answers to.
    code, answer = await send(url + "serve/sum-api/v1/models/summer:predict", "alice-token", {"instances": [[1]]})
    assert code == 404 and "'sum-api'" in answer["error"]


# --- recent errors -------------------------------------------------------------------------------

async def test_failed_requests_show_in_the_status_while_ready(api, share):
    app, url = api
    await deploy(url, share)
    code, svc = await call(url + "api/services/sum-api", "alice-token")
    assert (svc["state"], svc["recent_errors"]) == ("Ready", [])
    before = time.time()
    code, _ = await send(url + "api/services/sum-api/predict", "alice-token", {"instances": "nope"})
    assert code == 400
    code, _ = await send(url + "serve/sum-api/v1/models/other:predict", "bob-token", {"instances": [[1]]})
    assert code == 404
    assert (await send(url + "api/services/sum-api/predict", "alice-token", {"instances": [[1]]}))[0] == 200
    code, svc = await call(url + "api/services/sum-api", "alice-token")
    assert svc["state"] == "Ready" and svc["reason"] == ""
    errors = svc["recent_errors"]
    assert [e["status"] for e in errors] == [404, 400]  # newest first; the 200 is not an error
    assert "No model named 'other'" in errors[0]["message"]
    assert "instances" in errors[1]["message"]
    assert all(before <= e["time"] <= time.time() for e in errors)
    assert set(errors[0]) == {"time", "status", "message"}
    _, listed = await call(url + "api/services", "bob-token")
    assert listed["services"][0]["recent_errors"] == errors

    # No model server answers: 503 for the caller, and kept.
    await app.serving_backend.crash("sum-api")
    code, answer = await send(url + "api/services/sum-api/predict", "alice-token", {"instances": [[1]]})
    assert code == 503 and "did not answer" in answer["message"]
    _, svc = await call(url + "api/services/sum-api", "alice-token")
    assert svc["recent_errors"][0]["status"] == 503 and "did not answer" in svc["recent_errors"][0]["message"]

    # Started again (an update to the same version); at most RECENT_ERRORS_KEPT are kept, the newest.
    assert (await send(url + "api/services/sum-api", "alice-token", {}, "PATCH"))[0] == 200
    for i in range(RECENT_ERRORS_KEPT + 5):
        await send(url + f"serve/sum-api/v1/models/nope-{i}:predict", "alice-token", {"instances": [[1]]})
    _, svc = await call(url + "api/services/sum-api", "alice-token")
    assert len(svc["recent_errors"]) == RECENT_ERRORS_KEPT
    assert f"nope-{RECENT_ERRORS_KEPT + 4}" in svc["recent_errors"][0]["message"]

    # A service deployed again under the name starts clean.
    assert (await call(url + "api/services/sum-api", "alice-token", method="DELETE"))[0] == 204
    _, models = await call(url + "api/models", "alice-token")
    code, svc = await send(url + "api/services", "alice-token", {"name": "sum-api", "model_id": models["models"][0]["id"]})
    assert code == 201 and svc["recent_errors"] == []



async def until_state(url, token, name, state, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        code, svc = await call(url + f"api/services/{name}", token)
        if code == 200 and svc["state"] == state:
            return svc
        assert time.monotonic() < deadline, f"still {svc} after {timeout}s"
        await asyncio.sleep(0.02)


# --- Kubernetes: the pod's runtime, asked by the hub ---------------------------------------------

async def test_on_kubernetes_the_hub_asks_the_pod_under_the_service_name(hub, serve, service, share, kube, tmp_path):
    from test_kube_serving import ISVCS, NS
    from test_models_api import kubernetes_service

    app, url = await kubernetes_service(serve, share, kube, tmp_path)
    served = None
    try:
        svc = await deploy(url, share, project=None)  # service "sum-api", model "summer"
        assert (svc["served_name"], svc["state"]) == ("sum-api", "Pending")
        isvc = kube.get(ISVCS, NS, "sum-api")
        container = isvc["spec"]["predictor"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        # The pod: the runtime from the container's own command, the model where KServe mounts STORAGE_URI.
        model_dir = share / env["STORAGE_URI"].removeprefix("pvc://kubeai-share/")
        served = await start_runtime(container["command"][3:], model_dir=str(model_dir), port=free_port())
        assert served.app.host == "0.0.0.0"  # what the pod listens on (loopback here)
        # KServe reports the predictor ready at its address (here: that runtime).
        kube.patch(ISVCS, NS, "sum-api", {"status": {
            "observedGeneration": isvc["metadata"]["generation"],
            "conditions": [{"type": t, "status": "True"} for t in ("PredictorReady", "Ready")],
            "address": {"url": served.url}}}, subresource="status")
        await until_state(url, "alice-token", "sum-api", "Ready")

        code, answer = await send(url + "api/services/sum-api/predict", "alice-token", {"instances": [[1, 2]]})
        assert (code, answer) == (200, {"predictions": [3.0]})
        v2 = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
        code, answer = await send(url + "api/services/sum-api/predict", "alice-token", v2)
        assert code == 200 and (answer["model_name"], answer["model_version"]) == ("sum-api", "1"), answer
        code, meta = await call(url + "serve/sum-api/v2/models/sum-api", "alice-token")
        assert code == 200 and meta["versions"] == ["1"], meta
        # Asked under the registry model's name: 404, kept while Ready.
        code, _ = await send(url + "serve/sum-api/v1/models/summer:predict", "alice-token", {"instances": [[1]]})
        assert code == 404
        _, svc = await call(url + "api/services/sum-api", "alice-token")
        assert svc["state"] == "Ready" and [e["status"] for e in svc["recent_errors"]] == [404]
    finally:
        if served is not None:
            await served.stop()
        await app.serving_backend.stop()


# --- who may send requests -----------------------------------------------------------------------

#: Every request on a service: its status, changes, predictions, and its model server through the hub.
REQUESTS = [
    ("GET", "api/services/{name}", None),
    ("POST", "api/services/{name}/predict", {"instances": [[1, 2]]}),
    ("PATCH", "api/services/{name}", {"version": 2}),
    ("POST", "api/services/{name}/rollback", {}),
    ("DELETE", "api/services/{name}", None),
    ("GET", "serve/{name}/v2/health/ready", None),
    ("GET", "serve/{name}/v2/models/{name}", None),
    ("POST", "serve/{name}/v1/models/{name}:predict", {"instances": [[1, 2]]}),
    ("POST", "serve/{name}/v2/models/{name}/infer",
     {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]}),
]
HIDDEN = "There is no service '{name}' that you can see."
NO_IDENTITY = "needs a JupyterHub identity"
NO_ACCESS = "not allowed to use the kubeai service"


@pytest.mark.parametrize("project, token, status, message", [
    ("vision", "dave-token", 404, HIDDEN),  # a user in no project
    ("vision", "erin-token", 404, HIDDEN),  # a user in another project (nlp)
    (None, "bob-token", 404, HIDDEN),  # alice's own service: bob shares her project, not the service
    ("vision", None, 401, NO_IDENTITY),  # anonymous
    ("vision", "carol-no-access", 403, NO_ACCESS),  # a hub token not allowed to use the kubeai service
], ids=["outside-the-project", "another-project", "personal-service", "anonymous", "token-without-access"])
async def test_callers_who_may_not_see_a_service_are_refused_everywhere(api, share, project, token, status, message):
    app, url = api
    await deploy(url, share, service="team-api", project=project, versions=2)
    for method, path, body in REQUESTS:
        code, answer = await send(url + path.format(name="team-api"), token, body, method)
        assert code == status, (method, path, answer)
        assert message.format(name="team-api") in answer["message"], (method, path, answer)
    code, listed = await call(url + "api/services", token)
    if status in (401, 403):
        assert code == status and message in listed["message"]
    else:
        assert (code, listed) == (200, {"services": []})  # not even listed
    # Nothing changed, and nothing reached the model server (no failed request was forwarded).
    _, svc = await call(url + "api/services/team-api", "alice-token")
    assert (svc["state"], svc["version"], svc["previous_version"], svc["recent_errors"]) == ("Ready", 1, None, [])
    assert list(app.serving_backend.served) == ["team-api"]


async def test_project_members_use_a_project_service_its_owner_and_admins_change_it(api, share):
    _, url = api
    await deploy(url, share, service="team-api", versions=2)
    for token in ("bob-token", "admin-token"):
        for method, path, body in REQUESTS[:2] + REQUESTS[5:]:
            code, answer = await send(url + path.format(name="team-api"), token, body, method)
            assert code == 200, (token, method, path, answer)
    # A teammate sees and calls it, but changes nothing of alice's (the team rule): 403 naming who may.
    for method, path, body in (("PATCH", "api/services/team-api", {"version": 2}),
                               ("POST", "api/services/team-api/rollback", {}),
                               ("DELETE", "api/services/team-api", None)):
        code, answer = await send(url + path, "bob-token", body, method)
        assert code == 403 and "Only alice" in answer["message"], (method, path, answer)
    code, svc = await send(url + "api/services/team-api", "admin-token", {"version": 2}, "PATCH")
    assert (code, svc["serving_version"]) == (200, 2)
    assert (await send(url + "api/services/team-api/rollback", "admin-token", {}))[0] == 200
    assert (await call(url + "api/services/team-api", "admin-token", method="DELETE"))[0] == 204
