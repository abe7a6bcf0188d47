"""``kubeai models ...`` and ``kubeai services ...`` against the in-process hub service."""

import json

import pytest
from serviceapp import PREFIX, make_service
from test_cli import make_runner
from test_models_api import RecordingServing


@pytest.fixture
async def kubeai(hub, serve, service, tmp_path, monkeypatch):
    share = tmp_path / "share"
    (share / "users/alice/out").mkdir(parents=True)
    (share / "users/alice/out/model.joblib").write_bytes(b"weights")
    RecordingServing.running = {}
    app = make_service(tmp_path, share_root=str(share), serving_backend_class=RecordingServing)
    monkeypatch.setenv("KUBEAI_SERVICE_URL", serve(app.make_app()) + PREFIX)
    return make_runner("alice-token")


async def test_register_alias_deploy_update_rollback(kubeai, capsys):
    code, out = await kubeai("models", "register", "iris", "--path", "out", "--project", "vision", "-t", "team=cv")
    assert code == 0 and out.startswith("vision/iris version 1 (sha256:"), out
    assert (await kubeai("models", "register", "iris", "--path", "out/model.joblib", "--project", "vision"))[0] == 0
    code, out = await kubeai("models", "list")
    assert "vision/iris" in out and out.splitlines()[1].split()[2] == "2"
    assert await kubeai("models") == (code, out)  # no action: list
    assert (await kubeai("models", "alias", "vision/iris", "production", "1"))[0] == 0
    code, out = await kubeai("models", "show", "iris", "--json")
    model = json.loads(out)
    assert model["aliases"] == {"production": 1} and [v["version"] for v in model["versions"]] == [2, 1]
    code, out = await kubeai("services", "deploy", "iris-api", "iris", "--alias", "production")
    assert code == 0 and "iris:1" in out and "Ready" in out
    code, out = await kubeai("services", "update", "iris-api", "--version", "2")
    assert code == 0 and "iris:2" in out
    code, out = await kubeai("services")  # no action: list
    assert code == 0 and out.splitlines()[0].split()[0] == "SERVICE" and "iris-api" in out
    code, out = await kubeai("services", "rollback", "iris-api")
    assert code == 0 and "iris:1" in out
    capsys.readouterr()
    code, _ = await kubeai("services", "restart", "iris-api")  # reaches the route; this backend cannot restart
    assert code == 1 and "not supported" in capsys.readouterr().err
    code, out = await kubeai("models", "delete-version", "iris", "1")
    assert code == 1  # in use: the message is on stderr
    assert (await kubeai("services", "delete", "iris-api"))[0] == 0
    assert (await kubeai("models", "archive", "iris", "2"))[0] == 0
    code, out = await kubeai("models", "show", "iris")
    assert "(archived)" in out


async def test_bad_input_is_a_message_and_exit_1(kubeai, capsys):
    code, _ = await kubeai("models", "register", "Bad Name", "--path", "out")
    assert code == 1 and "is not valid" in capsys.readouterr().err
    code, _ = await kubeai("models", "show", "nope")
    assert code == 1 and "You have no model 'nope'" in capsys.readouterr().err
    code, _ = await kubeai("services", "predict", "x", "{not json")
    assert code == 2


SIGNATURE = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}]}


async def test_register_with_a_signature_and_metrics(kubeai, tmp_path):
    code, out = await kubeai("models", "register", "wide", "--path", "out", "--signature", json.dumps(SIGNATURE),
                             "-m", "accuracy=0.93", "--metric", "epochs=12")
    assert code == 0, out
    (tmp_path / "sig.json").write_text(json.dumps({"inputs": [{"shape": [-1, 4]}]}))
    code, out = await kubeai("models", "register", "wide", "--path", "out", "--signature", f"@{tmp_path / 'sig.json'}")
    assert code == 0 and "wide version 2" in out, out
    code, out = await kubeai("models", "show", "wide", "--json")
    v2, v1 = json.loads(out)["versions"]
    assert v1["signature"] == SIGNATURE and v1["metrics"] == {"accuracy": 0.93, "epochs": 12}
    assert v2["signature"] == {"inputs": [{"name": "input-0", "shape": [-1, 4]}]} and v2["metrics"] == {}
    code, out = await kubeai("models", "show", "wide")
    assert "accuracy" in out.splitlines()[1] and "0.93" in out


async def test_bad_signatures_and_metrics(kubeai, tmp_path, capsys):
    # Refused here, before anything is sent: exit 2 with the reason.
    for flags, message in [
        (["--signature", "{not json"], "the signature in --signature is not JSON"),
        (["--signature", "[-1, 20]"], "the signature is a JSON object"),
        (["--signature", f"@{tmp_path / 'missing.json'}"], "cannot read the signature from"),
        (["--metric", "accuracy=high"], "metric accuracy='high' is not a number"),
        (["--metric", "loss=nan"], "is not a number"),
        (["--metric", "accuracy"], "is not KEY=VALUE"),
    ]:
        code, _ = await kubeai("models", "register", "wide", "--path", "out", *flags)
        assert code == 2 and message in capsys.readouterr().err, flags
    # Refused by the hub: exit 1 with its message.
    code, _ = await kubeai("models", "register", "wide", "--path", "out", "--signature", '{"inputs": [{"shape": "20"}]}')
    assert code == 1 and "signature.inputs[0].shape must be a list" in capsys.readouterr().err
    code, out = await kubeai("models", "list")
    assert "wide" not in out


async def test_deploy_options_and_status(kubeai):
    assert (await kubeai("models", "register", "iris", "--path", "out", "--project", "vision"))[0] == 0
    code, out = await kubeai("services", "deploy", "iris-api", "iris", "--max-replicas", "3", "--max-batch-size", "16",
                             "--max-latency-ms", "2.5")
    assert code == 0, out
    spec = RecordingServing.running["iris-api"]
    assert (spec.replicas, spec.max_replicas, spec.max_batch_size, spec.max_latency_ms) == (1, 3, 16, 2.5)
    code, out = await kubeai("services", "status", "iris-api")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "iris-api: iris version 1 (Ready, 1/1 ready)", out
    assert lines[1].startswith("  endpoint: http") and lines[1].endswith("/serve/iris-api/")
    assert lines[2].endswith("/serve/iris-api/v2/models/iris-api/infer")
    assert lines[3] == "  recent errors: none"
    code, out = await kubeai("services", "status", "iris-api", "--json")
    assert json.loads(out)["recent_errors"] == []
    code, _ = await kubeai("services", "status", "nope")
    assert code == 1
