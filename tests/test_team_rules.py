"""The one access rule through the API: members see a teammate's items, only owners and admins change them.

Jobs, models, versions, aliases and services alike (``jupyter_kubeai.service.access``).
The matrix over every route is ``test_authz_matrix.py``; these follow one
team's day: what each person may do to what another made, and what the
refusals say.
"""

import json

import pytest
from serviceapp import PREFIX, call, make_service
from test_job_api import InMemoryBackend
from test_models_api import RecordingServing, sklearn_file


async def post(url, token, body, method="POST"):
    return await call(url, token, method=method, body=json.dumps(body))


@pytest.fixture
async def team(hub, serve, service, tmp_path):
    """alice and bob share project vision; dave is in no project. Jobs and services run nowhere."""
    hub.add_user("dave", token="dave-token")
    share = tmp_path / "share"
    for user in ("alice", "bob", "dave"):
        sklearn_file(share / "users" / user / "m.joblib")
    InMemoryBackend.jobs, RecordingServing.running = {}, {}
    app = make_service(tmp_path, share_root=str(share), backend_class=InMemoryBackend,
                       serving_backend_class=RecordingServing)
    return app, serve(app.make_app()) + PREFIX


async def test_a_teammates_service_is_seen_but_not_changed(team):
    _, url = team
    _, answer = await post(url + "api/models", "alice-token", {"name": "iris", "project": "vision", "path": "m.joblib"})
    model_id = answer["model"]["id"]
    await post(url + "api/models", "alice-token", {"name": "iris", "project": "vision", "path": "m.joblib"})
    code, svc = await post(url + "api/services", "alice-token", {"name": "iris-api", "model_id": model_id, "version": 1})
    assert code == 201 and svc["may_change"] is True
    # bob sees it, may use it, but not update, roll back or delete it.
    code, seen = await call(url + "api/services/iris-api", "bob-token")
    assert code == 200 and seen["may_change"] is False
    for method, path, body in [("PATCH", "", {"version": 2}), ("POST", "/rollback", {}), ("DELETE", "", None)]:
        code, answer = await call(url + f"api/services/iris-api{path}", "bob-token", method=method,
                                  body=json.dumps(body) if body is not None else None)
        assert code == 403, (method, path, answer)
        assert answer["message"].startswith("Only alice (its owner) or a hub admin may ") and "'iris-api'" in answer["message"]
    assert RecordingServing.running["iris-api"].version == 1  # nothing changed
    # He deploys the project's model as a service of his own, which he may change.
    code, his = await post(url + "api/services", "bob-token", {"name": "bobs-iris", "model_id": model_id, "version": 2})
    assert (code, his["owner"], his["may_change"]) == (201, "bob", True)
    assert (await post(url + "api/services/bobs-iris", "bob-token", {"version": 1}, "PATCH"))[0] == 200
    # A hub admin changes alice's service; it stays alice's, its size checked against her rights.
    code, svc = await post(url + "api/services/iris-api", "admin-token", {"version": 2}, "PATCH")
    assert (code, svc["owner"], svc["version"], svc["may_change"]) == (200, "alice", 2, True), svc
    assert (await call(url + "api/services/iris-api", "admin-token", method="DELETE"))[0] == 204
    # dave: as if none of it existed.
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rollback")]:
        code, _ = await call(url + f"api/services/bobs-iris{path}", "dave-token", method=method,
                             body="{}" if method in ("POST", "PATCH") else None)
        assert code == 404, (method, path)


async def test_versions_belong_to_their_registrant_and_aliases_to_the_models_owner(team):
    _, url = team
    _, first = await post(url + "api/models", "alice-token", {"name": "iris", "project": "vision", "path": "m.joblib"})
    model_id = first["model"]["id"]
    # bob adds a version of his own to alice's project model.
    code, second = await post(url + "api/models", "bob-token", {"name": "iris", "project": "vision", "path": "m.joblib"})
    assert code == 201 and second["version"]["created_by"] == "bob" and second["version"]["may_change"] is True
    assert second["model"]["owner"] == "alice" and second["model"]["may_change"] is False
    _, model = await call(url + f"api/models/{model_id}", "bob-token")
    assert [(v["version"], v["may_change"]) for v in model["versions"]] == [(2, True), (1, False)]
    _, model = await call(url + f"api/models/{model_id}", "alice-token")
    assert [(v["version"], v["may_change"]) for v in model["versions"]] == [(2, True), (1, True)]
    # He may not touch alice's version, nor the model's aliases.
    for method, path, body in [("PATCH", "/versions/1", {"archived": True}), ("DELETE", "/versions/1", None)]:
        code, answer = await call(url + f"api/models/{model_id}{path}", "bob-token", method=method,
                                  body=json.dumps(body) if body is not None else None)
        assert code == 403 and answer["message"].startswith("Only alice (its owner) or a hub admin may "), answer
        assert "version 1 of model 'iris'" in answer["message"]
    for method, body in [("PUT", {"version": 2}), ("DELETE", None)]:
        code, answer = await call(url + f"api/models/{model_id}/aliases/production", "bob-token", method=method,
                                  body=json.dumps(body) if body is not None else None)
        assert code == 403 and "Only alice (its owner) or a hub admin" in answer["message"], answer
        assert "alias 'production' of model 'iris'" in answer["message"]
    # His own version is his; alice, the model's owner, may curate it too.
    code, v2 = await post(url + f"api/models/{model_id}/versions/2", "bob-token", {"tags": {"by": "bob"}}, "PATCH")
    assert code == 200 and v2["tags"] == {"by": "bob"}
    code, v2 = await post(url + f"api/models/{model_id}/versions/2", "alice-token", {"archived": True}, "PATCH")
    assert code == 200 and v2["archived"] is True
    assert (await post(url + f"api/models/{model_id}/aliases/production", "alice-token", {"version": 1}, "PUT"))[0] == 200
    # dave, in no project, registering the same name makes a model of his own, which bob cannot even see.
    code, his = await post(url + "api/models", "dave-token", {"name": "iris", "path": "m.joblib"})
    assert code == 201 and his["model"]["id"] != model_id and his["model"]["owner"] == "dave"
    code, answer = await call(url + f"api/models/{his['model']['id']}/versions/1", "bob-token", method="DELETE")
    assert code == 404
    # A hub admin may delete anyone's version.
    assert (await call(url + f"api/models/{model_id}/versions/2", "admin-token", method="DELETE"))[0] == 204


async def test_an_admins_resubmit_of_a_project_job_is_the_owners_new_job(team, hub):
    app, url = team
    body = {"job_id": "alice-vision", "name": "Train", "framework": "single", "project": "vision", "profile": "gpu",
            "parameters": {"epochs": 3}}
    assert (await post(url + "api/jobs", "alice-token", body))[0] == 201
    await post(url + "api/jobs/alice-vision/cancel", "alice-token", {})
    # The admin is in no project, and the "gpu" size is vision's only: the job is checked as alice's.
    code, again = await post(url + "api/jobs/alice-vision/resubmit", "admin-token", {})
    assert code == 201, again
    assert (again["owner"], again["project"], again["profile"], again["parameters"]) == ("alice", "vision", "gpu", {"epochs": 3})
    assert again["job_dir"].startswith("/home/alice/") and again["may_change"] is True
    assert again["spec"]["snapshot_dir"] == "/home/alice/.kubeai/jobs/alice-vision"
    # bob, her teammate, may not; alice may, and sees it as hers.
    code, answer = await post(url + "api/jobs/alice-vision/resubmit", "bob-token", {})
    assert code == 403 and answer["message"] == "Only alice (its owner) or a hub admin may resubmit job 'alice-vision'."
    _, listed = await call(url + "api/jobs?owner=alice", "alice-token")
    assert {j["job_id"]: j["may_change"] for j in listed["jobs"]} == {again["job_id"]: True, "alice-vision": True}
    _, listed = await call(url + "api/jobs", "bob-token")
    assert {j["may_change"] for j in listed["jobs"]} == {False}
    # Once alice has left the project, an admin's resubmission is refused as hers would be.
    hub.users["alice"]["groups"] = []
    code, answer = await post(url + "api/jobs/alice-vision/resubmit", "admin-token", {})
    assert code == 400 and "not in project 'vision'" in answer["message"], answer
