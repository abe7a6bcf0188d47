"""Job records: who sees what, quotas, state changes; on SQLite and PostgreSQL."""

import pytest

from jupyter_kubeai.errors import Conflict, NotFound
from jupyter_kubeai.service.access import may_see
from jupyter_kubeai.service.identity import Identity
from jupyter_kubeai.service.jobs import job_item
from jupyter_kubeai.store.jobs import JobRecord, JobStore
from jupyter_kubeai.store.schema import open_engine, upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_engine(request, tmp_path):
    """An engine on SQLite and on a throwaway PostgreSQL, the schema at the newest migration."""
    url = f"sqlite:///{tmp_path / 'kubeai.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    engine = open_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(migrated_engine):
    return JobStore(migrated_engine)


def record(job_id, owner="alice", project="vision", gpus=0, created=1.0, state="Pending"):
    return JobRecord(job_id=job_id, owner=owner, project=project, framework="pytorch", backend="local", state=state,
                     reason="", job_dir=f"/share/users/{owner}/.kubeai/jobs/{job_id}", spec={"workers": 2}, gpus=gpus, created=created)


def test_owners_and_project_members_see_jobs_others_do_not(store):
    store.add(record("a-vision", "alice", "vision", created=1))
    store.add(record("a-own", "alice", None, created=2))
    store.add(record("b-nlp", "bob", "nlp", created=3))
    store.add(record("b-vision", "bob", "vision", created=4))

    def ids(user, groups, **kwargs):
        return [r.job_id for r in store.visible(user, groups, **kwargs)]

    assert ids("alice", ("vision",)) == ["b-vision", "a-own", "a-vision"]
    assert ids("bob", ("nlp",)) == ["b-vision", "b-nlp"]  # his own, and nlp's
    assert ids("carol", ()) == []
    assert ids("carol", ("vision",), project="vision") == ["b-vision", "a-vision"]
    assert ids("alice", ("vision",), limit=1, offset=1) == ["a-own"]
    # The one access rule agrees with the lists (jupyter_kubeai.service.access).
    a_own, a_vision = store.get("a-own"), store.get("a-vision")
    assert may_see(Identity("alice"), job_item(a_own)) and not may_see(Identity("bob", groups=("vision",)), job_item(a_own))
    assert may_see(Identity("bob", groups=("vision",)), job_item(a_vision))


def test_states_quota_and_active_jobs(store):
    store.add(record("j1", gpus=4))
    store.add(record("j2", gpus=2))
    store.add(record("j3", project="nlp", gpus=8))
    assert store.project_gpus_in_use("vision") == 6
    running = store.set_state("j1", "Running", started=10.0)
    assert running.state == "Running" and running.started == 10.0 and running.finished is None
    done = store.set_state("j2", "Failed", "rank 1 died")
    assert (done.state, done.reason) == ("Failed", "rank 1 died") and done.finished
    assert store.project_gpus_in_use("vision") == 4
    assert sorted(r.job_id for r in store.active()) == ["j1", "j3"]
    assert store.visible("alice", (), state="Failed")[0].job_id == "j2"
    with pytest.raises(ValueError):
        store.set_state("j1", "Exploded")


def test_records_are_kept_until_deleted_and_active_ones_cannot_be(store):
    store.add(record("j1"))
    with pytest.raises(Conflict, match="exists already"):
        store.add(record("j1"))
    with pytest.raises(Conflict, match="cancel it first"):
        store.delete("j1")
    store.set_state("j1", "Cancelled", "by alice")
    store.delete("j1")
    with pytest.raises(NotFound):
        store.get("j1")
    with pytest.raises(NotFound):
        store.set_state("j1", "Running")
