"""The model registry and services REST API: immutable versions, path checks, who sees what."""

import json
import os
import time
from pathlib import Path

import pytest
from serviceapp import PREFIX, call, make_service
from traitlets.config import Config

from jupyter_kubeai.jobs.status import ACTIVE_STATES
from jupyter_kubeai.models.deploy import ServingBackend
from jupyter_kubeai.models.spec import ServiceStatus
from jupyter_kubeai.store.jobs import JobRecord


class RecordingServing(ServingBackend):
    """Runs nothing; remembers what it was asked (the service's own rules are under test here)."""

    name = "local"
    running: dict = {}

    def model_path(self, share_root, relative):
        return "/models/" + relative

    async def deploy(self, spec):
        if spec.replicas > 4:
            raise RuntimeError("broken backend")
        self.running[spec.name] = spec
        return {"url": f"http://fake/{spec.name}"}

    async def update(self, spec):
        self.running[spec.name] = spec
        return {"url": f"http://fake/{spec.name}"}

    async def delete(self, name):
        return self.running.pop(name, None) is not None

    async def status(self, name):
        spec = self.running.get(name)
        return ServiceStatus("Ready", version=spec.version, ready_replicas=1) if spec else ServiceStatus("Failed")


@pytest.fixture
def share(tmp_path):
    share = tmp_path / "share"
    for user in ("alice", "bob"):
        (share / "users" / user).mkdir(parents=True)
    (share / "projects" / "vision").mkdir(parents=True)
    (share / "projects" / "nlp").mkdir(parents=True)
    (share / "global").mkdir(parents=True)
    (share / "users/alice/projects").mkdir()
    (share / "users/alice/projects/vision").symlink_to(share / "projects/vision")
    return share


@pytest.fixture
async def api(hub, serve, service, share, tmp_path):
    hub.add_user("dave", token="dave-token")
    RecordingServing.running = {}
    config = Config({"LocalBackend": {"share_root": str(share)}})
    app = make_service(tmp_path, config=config, share_root=str(share), serving_backend_class=RecordingServing)
    return app, serve(app.make_app()) + PREFIX


async def post(url, token, body, method="POST"):
    return await call(url, token, method=method, body=json.dumps(body))


def sklearn_file(path: Path, content=b"pretend joblib bytes"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


async def test_register_versions_are_immutable_copies(api, share):
    app, url = api
    source = sklearn_file(share / "users/alice/work/classifier.joblib")
    code, answer = await post(url + "api/models", "alice-token", {"name": "iris", "project": "vision", "path": "work/classifier.joblib"})
    assert code == 201, answer
    model, v1 = answer["model"], answer["version"]
    assert (model["scope"], model["latest"], v1["version"], v1["format"]) == ("project:vision", 1, 1, "sklearn")
    folder = share / v1["path"]
    assert v1["path"] == "models/project-vision/iris/1"
    assert (folder / "model.joblib").read_bytes() == b"pretend joblib bytes"  # renamed for the runtime
    assert json.loads((folder / "model.json").read_text())["format"] == "sklearn"
    assert not os.access(folder / "model.joblib", os.W_OK) or os.geteuid() == 0
    assert not (folder.stat().st_mode & 0o222)
    # The job folder changes later: version 1 does not.
    source.write_bytes(b"retrained")
    code, answer = await post(url + "api/models", "alice-token", {"name": "iris", "project": "vision", "path": "work/classifier.joblib"})
    assert (code, answer["version"]["version"]) == (201, 2)
    assert (folder / "model.joblib").read_bytes() == b"pretend joblib bytes"
    assert answer["version"]["checksum"] != v1["checksum"]
    code, full = await call(url + f"api/models/{model['id']}", "alice-token")
    assert [v["version"] for v in full["versions"]] == [2, 1]
    assert not list((share / "models/project-vision/iris").glob(".incoming-*"))


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("../bob/secret.joblib", 400, "may not contain '..'"),
        ("/etc/passwd", 400, "relative to your home"),
        ("projects/nlp/m.joblib", 403, "not in a project"),
        ("link-to-bob/m.joblib", 403, "leads outside your folders"),
        ("nothing-here.joblib", 404, "no file or folder"),
        ("with-link", 400, "is a symbolic link"),
        ("work/notes.txt", 400, "No model found"),
    ],
)
async def test_paths_outside_the_callers_volumes_are_refused(api, share, path, status, message):
    app, url = api
    sklearn_file(share / "users/bob/m.joblib")
    (share / "users/alice/link-to-bob").symlink_to(share / "users/bob")
    sklearn_file(share / "users/alice/with-link/model.joblib")
    (share / "users/alice/with-link/sneaky.joblib").symlink_to(share / "users/bob/m.joblib")
    (share / "users/alice/work").mkdir(parents=True)
    (share / "users/alice/work/notes.txt").write_text("hi")
    code, answer = await post(url + "api/models", "alice-token", {"name": "m", "path": path})
    assert code == status, answer
    assert message in answer["message"]
    assert app.model_manager.store.models(None) == []
    assert not (share / "models").exists() or not list((share / "models").rglob("*.joblib"))


async def test_a_project_folder_the_user_is_in_is_allowed(api, share):
    _, url = api
    sklearn_file(share / "projects/vision/shared/model.joblib")
    code, answer = await post(url + "api/models", "alice-token", {"name": "shared", "path": "projects/vision/shared"})
    assert code == 201, answer


async def test_who_sees_which_models(api, share):
    _, url = api
    sklearn_file(share / "users/alice/m.joblib")
    assert (await post(url + "api/models", "alice-token", {"name": "team", "project": "vision", "path": "m.joblib"}))[0] == 201
    code, mine = await post(url + "api/models", "alice-token", {"name": "mine", "path": "m.joblib"})
    assert code == 201
    # bob shares project vision: he sees the project's model, not alice's own.
    _, bobs = await call(url + "api/models", "bob-token")
    assert [m["name"] for m in bobs["models"]] == ["team"]
    assert (await call(url + f"api/models/{mine['model']['id']}", "bob-token"))[0] == 404
    assert (await call(url + "api/models", "dave-token"))[1] == {"models": []}
    for method, path, body in [("GET", "", None), ("GET", "/versions/1", None), ("PATCH", "/versions/1", {"archived": True}),
                               ("DELETE", "/versions/1", None), ("PUT", "/aliases/prod", {"version": 1})]:
        code, _ = await call(url + f"api/models/{mine['model']['id']}{path}", "dave-token", method=method,
                             body=json.dumps(body) if body is not None else None)
        assert code == 404, (method, path)
    # Registering under a project one is not in is refused.
    code, answer = await post(url + "api/models", "alice-token", {"name": "x", "project": "nlp", "path": "m.joblib"})
    assert code == 400 and "not in project 'nlp'" in answer["message"]


async def test_aliases_archive_and_deleting_a_version_in_use(api, share):
    _, url = api
    sklearn_file(share / "users/alice/m.joblib")
    for _ in range(2):
        code, answer = await post(url + "api/models", "alice-token", {"name": "iris", "path": "m.joblib"})
    model_id = answer["model"]["id"]
    code, model = await post(url + f"api/models/{model_id}/aliases/production", "alice-token", {"version": 1}, "PUT")
    assert model["aliases"] == {"production": 1}
    assert (await post(url + f"api/models/{model_id}/aliases/x", "alice-token", {"version": 9}, "PUT"))[0] == 404
    # A service on the alias (version 1), updated to 2: 1 is needed for a rollback.
    code, svc = await post(url + "api/services", "alice-token", {"name": "iris-api", "model_id": model_id, "alias": "production"})
    assert (code, svc["version"], svc["state"]) == (201, 1, "Ready"), svc
    assert svc["endpoint"] == "/services/kubeai/serve/iris-api/"
    code, svc = await post(url + "api/services/iris-api", "alice-token", {"version": 2}, "PATCH")
    assert (code, svc["version"], svc["previous_version"]) == (200, 2, 1)
    for version in (1, 2):
        code, answer = await call(url + f"api/models/{model_id}/versions/{version}", "alice-token", method="DELETE")
        assert code == 409 and "iris-api" in answer["message"]
    code, svc = await post(url + "api/services/iris-api/rollback", "alice-token", {})
    assert (code, svc["version"], svc["previous_version"]) == (200, 1, 2)
    # Archived versions stay for the services but cannot be deployed anew.
    code, v2 = await post(url + f"api/models/{model_id}/versions/2", "alice-token", {"archived": True}, "PATCH")
    assert v2["archived"] is True
    code, answer = await post(url + "api/services", "alice-token", {"name": "other", "model_id": model_id, "version": 2})
    assert code == 400 and "archived" in answer["message"]
    assert (await call(url + "api/services/iris-api", "alice-token", method="DELETE"))[0] == 204
    assert (await call(url + f"api/models/{model_id}/versions/2", "alice-token", method="DELETE"))[0] == 204
    assert not (Path(share) / "models/user-alice/iris/2").exists()


async def test_register_from_a_job_keeps_its_lineage_and_metrics(api, share):
    app, url = api
    job_dir = share / "users/alice/.kubeai/jobs/train-1"
    (job_dir / "outputs").mkdir(parents=True)
    (job_dir / "outputs/predictor.py").write_text("class Predictor:\n    pass\n")
    (job_dir / "metrics.jsonl").write_text('{"time": 1, "step": 0, "rank": 0, "values": {"loss": 0.9}}\n'
                                          '{"time": 2, "step": 1, "rank": 0, "values": {"loss": 0.4, "acc": 0.8}}\n')
    app.job_manager.store.add(JobRecord(
        job_id="train-1", owner="alice", project="vision", framework="single", backend="local", state="Succeeded",
        reason="", job_dir=str(job_dir), spec={"notebook": "train.ipynb", "image_ref": "python:3.11",
                                               "parameters": {"lr": 0.1}}, gpus=0, created=time.time()))
    assert "Succeeded" not in ACTIVE_STATES
    code, answer = await post(url + "api/models", "alice-token", {"name": "clf", "project": "vision", "job_id": "train-1",
                                                                  "path": "outputs"})
    assert code == 201, answer
    version = answer["version"]
    assert version["format"] == "custom" and version["metrics"] == {"loss": 0.4, "acc": 0.8}
    assert version["lineage"]["job_id"] == "train-1" and version["lineage"]["parameters"] == {"lr": 0.1}
    assert version["lineage"]["snapshot"].endswith("train-1/notebook.ipynb")
    # bob sees the job (same project) but may not register from alice's folder.
    code, answer = await post(url + "api/models", "bob-token", {"name": "clf", "project": "vision", "job_id": "train-1"})
    assert code == 403 and "your own jobs" in answer["message"]


async def test_bad_service_requests_and_a_backend_failure(api, share):
    app, url = api
    sklearn_file(share / "users/alice/m.joblib")
    _, answer = await post(url + "api/models", "alice-token", {"name": "iris", "path": "m.joblib"})
    model_id = answer["model"]["id"]
    for body, message in [
        ({"name": "Bad Name", "model_id": model_id}, "not valid"),
        ({"name": "s", "model_id": model_id, "replicas": 0}, "Replicas must be from 1"),
        ({"name": "s", "model_id": model_id, "profile": "huge"}, "not one you may use"),
        ({"name": "s", "model_id": model_id, "alias": "nope"}, "has no alias 'nope'"),
        ({"name": "s", "model_id": model_id, "colour": "red"}, "Unknown field(s) colour"),
    ]:
        code, answer = await post(url + "api/services", "alice-token", body)
        assert code == 400 and message in answer["message"], (body, answer)
    assert (await post(url + "api/services", "bob-token", {"name": "s", "model_id": model_id}))[0] == 404
    code, answer = await post(url + "api/services", "alice-token", {"name": "s", "model_id": model_id, "replicas": 5})
    assert code == 500 and app.model_manager.store.deployments() == []


async def kubernetes_service(serve, share, kube, tmp_path):
    """The service in Kubernetes mode against the fake API, KServe's CRD served: (app, its URL)."""
    from test_kube_serving import ISVCS, NS

    kube.serve_kind(ISVCS, "InferenceService")
    config = Config({"KubernetesServing": {"namespace": NS}, "KubernetesBackend": {"namespace": NS}})
    app = make_service(tmp_path, mode="kubernetes", config=config, share_root=str(share))
    await app.serving_backend.start()
    return app, serve(app.make_app()) + PREFIX


async def test_on_kubernetes_a_service_is_an_inference_service_naming_the_version(hub, serve, service, share, kube, tmp_path):
    from test_kube_serving import ISVCS, NS

    app, url = await kubernetes_service(serve, share, kube, tmp_path)
    try:
        sklearn_file(share / "users/alice/m.joblib")
        for _ in range(2):
            code, answer = await post(url + "api/models", "alice-token", {"name": "iris", "path": "m.joblib"})
        model_id = answer["model"]["id"]
        code, svc = await post(url + "api/services", "alice-token", {"name": "iris-api", "model_id": model_id, "version": 1})
        assert code == 201, svc
        env = {e["name"]: e["value"] for e in kube.get(ISVCS, NS, "iris-api")["spec"]["predictor"]["containers"][0]["env"]}
        assert env["STORAGE_URI"] == "pvc://kubeai-share/models/user-alice/iris/1"
        code, svc = await post(url + "api/services/iris-api", "alice-token", {"version": 2}, "PATCH")
        assert code == 200 and svc["version"] == 2
        env = {e["name"]: e["value"] for e in kube.get(ISVCS, NS, "iris-api")["spec"]["predictor"]["containers"][0]["env"]}
        assert env["STORAGE_URI"] == "pvc://kubeai-share/models/user-alice/iris/2"
        assert (await call(url + "api/services/iris-api", "alice-token", method="DELETE"))[0] == 204
        assert kube.get(ISVCS, NS, "iris-api") is None
    finally:
        await app.serving_backend.stop()


async def test_a_file_swapped_for_a_link_after_the_check_is_refused(api, share, monkeypatch):
    """The race of a user who replaces a checked file with a link to another user's file before it is copied."""
    from jupyter_kubeai.models import registry

    app, url = api
    sklearn_file(share / "users/bob/secret.joblib", b"bob's weights")
    sklearn_file(share / "users/alice/out/model.joblib", b"alice's weights")
    checked = registry.resolve_source

    def check_then_swap(*args):
        source = checked(*args)
        (share / "users/alice/out/model.joblib").unlink()
        (share / "users/alice/out/model.joblib").symlink_to(share / "users/bob/secret.joblib")
        return source

    monkeypatch.setattr(registry, "resolve_source", check_then_swap)
    for path in ("out", "out/model.joblib"):
        if (share / "users/alice/out/model.joblib").is_symlink():
            (share / "users/alice/out/model.joblib").unlink()
            sklearn_file(share / "users/alice/out/model.joblib", b"alice's weights")
        code, answer = await post(url + "api/models", "alice-token", {"name": "m", "path": path})
        assert code == 400, answer
        assert "is a symbolic link" in answer["message"]
    assert app.model_manager.store.models(None) == []
    assert not (share / "models").exists() or list((share / "models").rglob("*")) == []


SIGNATURE_20 = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}],
                "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]}


async def test_register_with_a_signature(api, share):
    _, url = api
    sklearn_file(share / "users/alice/m.joblib")
    code, answer = await post(url + "api/models", "alice-token", {"name": "wide", "path": "m.joblib",
                                                                  "signature": SIGNATURE_20})
    assert code == 201, answer
    version = answer["version"]
    assert version["signature"] == SIGNATURE_20
    assert json.loads((share / version["path"] / "model.json").read_text())["signature"] == SIGNATURE_20
    _, again = await call(url + f"api/models/{answer['model']['id']}/versions/1", "alice-token")
    assert again["signature"] == SIGNATURE_20
    # Names may be left out: they are filled in as the runtime would name them.
    code, answer = await post(url + "api/models", "alice-token", {"name": "wide", "path": "m.joblib",
                                                                  "signature": {"inputs": [{"shape": [-1, 20]}]}})
    assert code == 201 and answer["version"]["signature"] == {"inputs": [{"name": "input-0", "shape": [-1, 20]}]}
    # Without one, none is made up (the runtime's metadata may know more once the model is loaded).
    code, answer = await post(url + "api/models", "alice-token", {"name": "wide", "path": "m.joblib"})
    assert code == 201 and answer["version"]["signature"] == {}


async def test_a_folder_whose_job_wrote_a_signature_keeps_it(api, share):
    _, url = api
    sklearn_file(share / "users/alice/out/model.joblib")
    (share / "users/alice/out/model.json").write_text(json.dumps({"format": "sklearn", "signature": SIGNATURE_20}))
    code, answer = await post(url + "api/models", "alice-token", {"name": "wide", "path": "out"})
    assert code == 201 and answer["version"]["signature"] == SIGNATURE_20


@pytest.mark.parametrize(
    "signature, message",
    [
        ("[-1, 20]", "signature must be an object"),
        ({"inputs": [{"name": "x", "shape": "20"}]}, "signature.inputs[0].shape must be a list of 1 to 16 sizes"),
        ({"inputs": [{"name": "x", "datatype": "double"}]}, "signature.inputs[0].datatype is 'double'; use one of"),
        ({"inputs": []}, "signature.inputs must be a list of 1 to 64 tensors"),
        ({"input": [{"shape": [-1, 20]}]}, "signature has unknown field(s) input"),
    ],
)
async def test_a_malformed_signature_is_a_400(api, share, signature, message):
    app, url = api
    sklearn_file(share / "users/alice/m.joblib")
    code, answer = await post(url + "api/models", "alice-token", {"name": "wide", "path": "m.joblib",
                                                                  "signature": signature})
    assert code == 400 and message in answer["message"], answer
    assert app.model_manager.store.models(None) == []
    assert not (share / "models").exists() or list((share / "models").rglob("*")) == []


@pytest.mark.parametrize("state", ["Pending", "Running"])
async def test_registering_from_an_unfinished_job_is_refused(api, share, state):
    app, url = api
    job_dir = share / "users/alice/.kubeai/jobs/train-2"
    sklearn_file(job_dir / "outputs/model.joblib")
    app.job_manager.store.add(JobRecord(
        job_id="train-2", owner="alice", project=None, framework="single", backend="local", state=state,
        reason="", job_dir=str(job_dir), spec={"notebook": "train.ipynb"}, gpus=0, created=time.time()))
    assert state in ACTIVE_STATES
    code, answer = await post(url + "api/models", "alice-token", {"name": "clf", "job_id": "train-2", "path": "outputs"})
    assert code == 409, answer
    assert answer["message"] == f"Job 'train-2' is still {state}; register its model once it has finished."
    assert app.model_manager.store.models(None) == []


class RunningServing(RecordingServing):
    """RecordingServing whose services answer at ``url``: one real runtime, run in this process."""

    url = ""

    async def status(self, name):
        spec = self.running.get(name)
        if spec is None:
            return ServiceStatus("Failed")
        return ServiceStatus("Ready", version=spec.version, ready_replicas=1, url=self.url)


async def test_a_running_service_reports_the_input_width_its_model_learnt(hub, serve, service, share, tmp_path):
    """No signature registered: the runtime's v2 metadata (through the hub) gives "Try it" the model's width."""
    np = pytest.importorskip("numpy")
    joblib = pytest.importorskip("joblib")
    linear_model = pytest.importorskip("sklearn.linear_model")
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from jupyter_kubeai.serving.handlers import make_server_delegate
    from jupyter_kubeai.serving.runtime import ModelRuntime

    x = np.random.RandomState(0).rand(40, 20)
    joblib.dump(linear_model.LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), share / "users/alice/m.joblib")
    RunningServing.running, RunningServing.url = {}, ""
    app = make_service(tmp_path, share_root=str(share), serving_backend_class=RunningServing)
    url = serve(app.make_app()) + PREFIX
    code, answer = await post(url + "api/models", "alice-token", {"name": "wide", "path": "m.joblib"})
    assert code == 201 and answer["version"]["signature"] == {}
    code, _ = await post(url + "api/services", "alice-token", {"name": "wide-api", "model_id": answer["model"]["id"]})
    assert code == 201
    # Not answering yet: a 503 that says so.
    code, meta = await call(url + "api/services/wide-api/metadata", "alice-token")
    assert code == 503 and "not running" in meta["message"]

    runtime = ModelRuntime(str(share / answer["version"]["path"]), "wide-api", version="1", max_batch_size=1)
    await runtime.load()
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(make_server_delegate(runtime))
    server.add_sockets(sockets)
    RunningServing.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    try:
        code, meta = await call(url + "api/services/wide-api/metadata", "alice-token")
        assert code == 200, meta
        assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}]
        assert (meta["name"], meta["platform"], meta["versions"]) == ("wide-api", "sklearn", ["1"])
        # A hint only: requests are not checked against it, the model itself refuses a wrong width.
        code, answer = await post(url + "api/services/wide-api/predict", "alice-token", {"instances": [[0.5] * 20]})
        assert code == 200 and len(answer["predictions"]) == 1
        assert (await call(url + "api/services/wide-api/metadata", "bob-token"))[0] == 404
    finally:
        server.stop()
        await server.close_all_connections()
        await runtime.close()
