"""Events (who did what to an item), in the store on SQLite and PostgreSQL, and in the items' details."""

import json
import time

import pytest
from serviceapp import PREFIX, call, make_service
from test_job_store import migrated_engine  # noqa: F401, F811 (a fixture: SQLite and PostgreSQL)
from test_team_rules import InMemoryBackend, RecordingServing, post, sklearn_file

from jupyter_kubeai.store.events import SHOWN, EventStore


@pytest.fixture
def events(migrated_engine):  # noqa: F811
    return EventStore(migrated_engine)


def test_events_are_kept_per_item_oldest_first(events):
    events.add("service", "iris-api", "created", "alice", "model iris version 1")
    events.add("service", "other", "created", "bob")
    events.add("service", "iris-api", "updated", "alice", "version 1 -> 2")
    events.add("job", "iris-api", "created", "carol")  # another kind of item with the same key
    events.add("service", "iris-api", "rolled_back", "admin", "version 2 -> 1")
    shown = events.of("service", "iris-api")
    assert [(e["action"], e["actor"], e["detail"]) for e in shown] == [
        ("created", "alice", "model iris version 1"), ("updated", "alice", "version 1 -> 2"),
        ("rolled_back", "admin", "version 2 -> 1")]
    assert shown[0]["time"] <= shown[1]["time"] <= shown[2]["time"] <= time.time()
    assert events.of("service", "nothing") == []
    # A service deleted and deployed again under its name starts clean in its detail.
    assert [e["action"] for e in events.of("service", "iris-api", since=time.time() + 1)] == []
    with pytest.raises(ValueError):
        events.add("catalog", "x", "created", "alice")


def test_a_busy_items_detail_shows_its_newest_events(events):
    for i in range(SHOWN + 5):
        events.add("model", "7", "alias_set", "alice", f"production -> version {i}")
    shown = events.of("model", "7")
    assert len(shown) == SHOWN
    assert shown[0]["detail"] == "production -> version 5" and shown[-1]["detail"] == f"production -> version {SHOWN + 4}"


@pytest.fixture
async def api(hub, serve, service, tmp_path):
    share = tmp_path / "share"
    (share / "users/alice").mkdir(parents=True)
    InMemoryBackend.jobs, RecordingServing.running = {}, {}
    app = make_service(tmp_path, share_root=str(share), backend_class=InMemoryBackend,
                       serving_backend_class=RecordingServing)
    return app, serve(app.make_app()) + PREFIX, share


def actions(item):
    return [(e["actor"], e["action"], e["detail"]) for e in item["events"]]


async def test_each_change_is_an_event_in_the_items_detail(api):
    _, url, share = api
    # A job: submitted, cancelled, resubmitted (by an admin), deleted.
    assert (await post(url + "api/jobs", "alice-token", {"job_id": "j1", "name": "j", "framework": "single",
                                                         "project": "vision"}))[0] == 201
    assert (await post(url + "api/jobs/j1/cancel", "bob-token", {}))[0] == 403  # refused: no event
    assert (await post(url + "api/jobs/j1/cancel", "alice-token", {}))[0] == 200
    code, again = await post(url + "api/jobs/j1/resubmit", "admin-token", {})
    assert code == 201, again
    _, job = await call(url + "api/jobs/j1", "bob-token")
    assert actions(job) == [("alice", "created", ""), ("alice", "cancelled", ""),
                            ("admin", "resubmitted", f"as job {again['job_id']} on alice's behalf")]
    _, new = await call(url + f"api/jobs/{again['job_id']}", "alice-token")
    assert actions(new) == [("admin", "created", "resubmitted from job j1 on alice's behalf")]
    # A model: registered (by two members), an alias, a version archived.
    sklearn_file(share / "users/alice/m.joblib")
    (share / "users/bob").mkdir()
    sklearn_file(share / "users/bob/m.joblib")
    _, answer = await post(url + "api/models", "alice-token", {"name": "iris", "project": "vision", "path": "m.joblib"})
    model_id = answer["model"]["id"]
    assert (await post(url + "api/models", "bob-token", {"name": "iris", "project": "vision", "path": "m.joblib"}))[0] == 201
    assert (await post(url + f"api/models/{model_id}/aliases/production", "alice-token", {"version": 2}, "PUT"))[0] == 200
    assert (await post(url + f"api/models/{model_id}/versions/2", "bob-token", {"archived": True}, "PATCH"))[0] == 200
    assert (await call(url + f"api/models/{model_id}/aliases/production", "alice-token", method="DELETE"))[0] == 200
    _, model = await call(url + f"api/models/{model_id}", "bob-token")
    assert actions(model) == [("alice", "registered", "version 1"), ("bob", "registered", "version 2"),
                              ("alice", "alias_set", "production -> version 2"), ("bob", "archived", "version 2"),
                              ("alice", "alias_deleted", "production")]
    # A service: deployed, updated, rolled back; deleted and deployed again under its name: a fresh history.
    body = {"name": "iris-api", "model_id": model_id, "version": 1}
    assert (await post(url + "api/services", "alice-token", body))[0] == 201
    assert (await post(url + f"api/models/{model_id}/versions/2", "bob-token", {"archived": False}, "PATCH"))[0] == 200
    assert (await post(url + "api/services/iris-api", "alice-token", {"version": 2, "replicas": 2}, "PATCH"))[0] == 200
    assert (await post(url + "api/services/iris-api/rollback", "admin-token", {}))[0] == 200
    _, svc = await call(url + "api/services/iris-api", "bob-token")
    assert actions(svc) == [("alice", "created", "model iris version 1"),
                            ("alice", "updated", "version 1 -> 2, replicas 2"),
                            ("admin", "rolled_back", "version 2 -> 1")]
    assert "owner_groups" not in json.dumps(svc)  # kept for an admin's changes, not shown to teammates
    assert (await call(url + "api/services/iris-api", "alice-token", method="DELETE"))[0] == 204
    time.sleep(0.01)
    assert (await post(url + "api/services", "bob-token", body))[0] == 201
    _, svc = await call(url + "api/services/iris-api", "bob-token")
    assert actions(svc) == [("bob", "created", "model iris version 1")]
    # Lists carry may_change, not the events.
    _, services = await call(url + "api/services", "alice-token")
    assert "events" not in services["services"][0] and services["services"][0]["may_change"] is False
