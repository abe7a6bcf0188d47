"""Registering through the REST API on a share that already holds versions, and with a forced format."""

import json

import pytest
from serviceapp import PREFIX, call, make_service
from traitlets.config import Config


@pytest.fixture
async def api(hub, serve, service, tmp_path):
    share = tmp_path / "share"
    (share / "users/alice/outputs").mkdir(parents=True)
    (share / "users/alice/outputs/model.joblib").write_bytes(b"alice's weights")
    config = Config({"LocalBackend": {"share_root": str(share)}})
    app = make_service(tmp_path, config=config, share_root=str(share))
    return serve(app.make_app()) + PREFIX, share


async def register(url, body):
    return await call(url + "api/models", "alice-token", method="POST", body=json.dumps(body))


async def test_a_share_that_already_holds_versions_gets_the_next_free_folder(api):
    """A restored (or second) store: the share has models/user-alice/clf/1 that this store never recorded."""
    url, share = api
    theirs = share / "models/user-alice/clf/1"
    theirs.mkdir(parents=True)
    (theirs / "model.joblib").write_bytes(b"their weights")
    code, answer = await register(url, {"name": "clf", "path": "outputs"})
    assert code == 201, answer
    version = answer["version"]
    assert version["version"] == 1 and version["path"] == "models/user-alice/clf/1.1"
    assert (share / version["path"] / "model.joblib").read_bytes() == b"alice's weights"
    assert (theirs / "model.joblib").read_bytes() == b"their weights"
    code, answer = await register(url, {"name": "clf", "path": "outputs"})
    assert code == 201 and answer["version"]["path"] == "models/user-alice/clf/2"


@pytest.mark.parametrize("path, forced, found", [
    ("outputs", "torchscript", "the files are sklearn"),
    ("outputs/model.joblib", "custom", "model.joblib is sklearn"),
])
async def test_a_forced_format_that_does_not_match_is_a_400_saying_what_was_found(api, path, forced, found):
    url, share = api
    code, answer = await register(url, {"name": "clf", "path": path, "format": forced})
    assert code == 400 and f"Format '{forced}' does not match" in answer["message"] and found in answer["message"]
    assert not (share / "models/user-alice/clf").exists()
    code, answer = await register(url, {"name": "clf", "path": path, "format": "sklearn"})
    assert code == 201 and answer["version"]["format"] == "sklearn"


@pytest.mark.parametrize("body", [
    {"name": "clf", "path": "outputs/model.joblib\u0000.txt"},
    {"name": "clf", "path": "outputs\u0000"},
    {"name": "clf", "path": "outputs", "format": "sklearn\u0000"},
    {"name": "clf\u0000", "path": "outputs"},
])
async def test_a_nul_byte_in_a_registration_is_a_400(api, body):
    url, share = api
    code, answer = await register(url, body)
    assert code == 400 and answer["message"], answer
    assert not (share / "models").exists() or not any((share / "models").rglob("model.joblib"))
