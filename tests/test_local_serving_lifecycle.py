"""Local model servers over their whole life: recorded before ready, re-adopted or stopped at start,
restarted with backoff when they die, Failed with their last lines after too many, restarted on demand,
and stopped with the service, with no orphan and no zombie left behind."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jupyter_kubeai.backends.local_serving import LocalServing
from jupyter_kubeai.errors import Conflict
from jupyter_kubeai.local.processes import ProcessIdentity, alive
from jupyter_kubeai.models.deploy import ServingBackend

#: A predictor that is slow to load while ``slow`` is in its folder, and fails to load while ``broken`` is.
PREDICTOR = """
import pathlib, time

class Predictor:
    def __init__(self, model_dir, config):
        folder = pathlib.Path(model_dir)
        if (folder / "broken").exists():
            raise RuntimeError("the model file is corrupt")
        while (folder / "slow").exists():
            time.sleep(0.1)

    def predict(self, payload):
        return payload
"""

SPEC = """
from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.models.spec import DeploymentSpec

SELECTION = select(user_view(Catalog(images=(image_from_dict({"name": "py", "image": "x/py:1"}),),
                                     profiles=(profile_from_dict({"name": "s"}),)), []), {})


def spec(name, model):
    return DeploymentSpec(name=name, owner="alice", owner_groups=(), project=None, model="m", version=1,
                          model_path=str(model), model_subpath="models/m/1", model_format="custom",
                          selection=SELECTION)
"""
namespace: dict = {}
exec(SPEC, namespace)
make_spec = namespace["spec"]


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "predictor.py").write_text(PREDICTOR)
    return folder


def serving(tmp_path, **traits) -> LocalServing:
    return LocalServing(state_dir=str(tmp_path / "services"), local_gpus=0, restart_backoff=0.2,
                        check_interval=0.2, ready_timeout=60, **traits)


def identity_of(entry: dict) -> ProcessIdentity:
    return ProcessIdentity.from_json(entry)


async def eventually(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def gone(pid: int) -> bool:
    """Exited and reaped: not even a zombie is left."""
    return not Path(f"/proc/{pid}").exists()


def killed_mid_deploy(tmp_path, model) -> tuple[Path, ProcessIdentity]:
    """A hub service process killed (SIGKILL) while its deploy waits for a slow model server to be ready."""
    (model / "slow").touch()
    state = tmp_path / "services"
    script = tmp_path / "deploy.py"
    script.write_text(SPEC + textwrap.dedent(f"""
        import asyncio
        from jupyter_kubeai.backends.local_serving import LocalServing
        asyncio.run(LocalServing(state_dir={str(state)!r}, local_gpus=0).deploy(spec("orphan", {str(model)!r})))
    """))
    service = subprocess.Popen([sys.executable, str(script)])
    record = state / "orphan.json"
    deadline = time.monotonic() + 60
    while not (record.exists() and json.loads(record.read_text()).get("pid")):
        assert service.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    service.kill()  # no cleanup runs: as when the machine's OOM killer or kill -9 ends the service
    service.wait()
    server = identity_of(json.loads(record.read_text()))
    assert alive(server)  # the model server, in its own session, outlived the service
    return record, server


async def test_a_server_orphaned_by_a_killed_deploy_is_stopped_by_delete(tmp_path, model):
    record, server = killed_mid_deploy(tmp_path, model)
    again = serving(tmp_path)  # the restarted service: DELETE reaches what the previous one started
    assert await again.delete("orphan")
    assert not alive(server) and not record.exists()


async def test_at_start_an_unfinished_deploy_is_started_afresh_and_deleted_services_are_stopped(tmp_path, model):
    record, server = killed_mid_deploy(tmp_path, model)
    (model / "slow").unlink()
    again = serving(tmp_path)
    await again.start()
    assert not alive(server)  # nobody waited for it to be ready: stopped, then started again
    try:
        status = await eventually(lambda: _ready(again, "orphan"), what="the restarted server")
        assert status.version == 1
        new = identity_of(again.current["orphan"])
        assert new != server and alive(new)
        # The service no longer exists in the store: reconcile stops its server and forgets it.
        await again.reconcile(set())
        assert not alive(new) and not record.exists()
        assert (await again.status("orphan")).state == "Failed"
    finally:
        await again.stop()


async def _ready(backend, name):
    status = await backend.status(name)
    return status if status.state == "Ready" else None


async def test_a_dead_server_is_restarted_then_failed_with_its_last_lines_then_restarted_on_demand(tmp_path, model):
    backend = serving(tmp_path, max_restarts=2)
    await backend.start()
    seen = []
    try:
        details = await backend.deploy(make_spec("svc", model))
        first = identity_of(backend.current["svc"])
        seen.append(first.pid)
        assert details["pid"] == first.pid and (await backend.status("svc")).state == "Ready"

        os.killpg(first.pgid, signal.SIGKILL)  # it dies
        await eventually(lambda: _restarted(backend, "svc", first), what="a restart")
        second = identity_of(backend.current["svc"])
        seen.append(second.pid)
        assert backend.current["svc"]["restarts"] == 1

        # Now it cannot load any more: a few attempts, then Failed with its last lines.
        (model / "broken").touch()
        os.killpg(second.pgid, signal.SIGKILL)

        async def failed():
            status = await backend.status("svc")
            return status if status.state == "Failed" else None

        status = await eventually(failed, what="Failed after the restarts")
        assert "restarted 2 time(s)" in status.reason and "the model file is corrupt" in status.reason
        assert not alive(identity_of(backend.current["svc"]))  # the watcher gave up

        # Fixed: the owner's restart brings it back.
        (model / "broken").unlink()
        details = await backend.restart("svc")
        seen.append(details["pid"])
        assert (await backend.status("svc")).state == "Ready"
        assert backend.current["svc"]["restarts"] == 0
    finally:
        await backend.stop()
    # Stopped with the service, and reaped: no orphan, no zombie.
    for pid in seen:
        await eventually(lambda pid=pid: _async(gone(pid)), timeout=15, what=f"pid {pid} reaped")


async def _async(value):
    return value


async def _restarted(backend, name, old):
    entry = backend.current.get(name) or {}
    new = identity_of(entry) if entry.get("pid") else None
    return new is not None and new != old and (await backend.status(name)).state == "Ready"


@pytest.mark.parametrize("stop_with_service", [True, False])
async def test_servers_stop_with_the_service_or_survive_and_are_re_adopted(tmp_path, model, stop_with_service):
    backend = serving(tmp_path, stop_with_service=stop_with_service)
    await backend.start()
    await backend.deploy(make_spec("svc", model))
    first = identity_of(backend.current["svc"])
    await backend.stop()
    assert alive(first) is not stop_with_service
    if stop_with_service:
        await eventually(lambda: _async(gone(first.pid)), timeout=15, what="reaped")

    again = serving(tmp_path, stop_with_service=True)
    await again.start()
    try:
        await eventually(lambda: _ready(again, "svc"), what="served again")
        now = identity_of(again.current["svc"])
        assert (now == first) is not stop_with_service  # re-adopted, or started anew
    finally:
        await again.delete("svc")
        await again.stop()
    assert not alive(now)


async def test_restart_is_refused_where_a_backend_cannot():
    class Cluster(ServingBackend):
        name = "cluster"

        async def deploy(self, spec):
            return {}

        async def update(self, spec):
            return {}

        async def delete(self, name):
            return False

        async def status(self, name):
            raise AssertionError

    with pytest.raises(Conflict, match="not supported by the cluster serving backend"):
        await Cluster().restart("svc")


async def test_restart_without_a_recorded_server_says_what_to_do(tmp_path):
    with pytest.raises(Conflict, match="update it to start one"):
        await serving(tmp_path).restart("nothing")


async def test_restart_through_the_api_is_the_owners_and_recorded(hub, serve, service, tmp_path):
    import joblib
    import numpy as np
    from serviceapp import PREFIX, call, make_service
    from sklearn.linear_model import LogisticRegression
    from traitlets.config import Config

    share = tmp_path / "share"
    (share / "users/alice/out").mkdir(parents=True)
    x = np.random.default_rng(0).normal(size=(40, 3))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), share / "users/alice/out/model.joblib")
    config = Config({"LocalServing": {"state_dir": str(tmp_path / "services"), "local_gpus": 0},
                     "LocalBackend": {"share_root": str(share), "local_gpus": 0}})
    app = make_service(tmp_path, config=config, share_root=str(share))
    await app.serving_backend.start()
    url = serve(app.make_app()) + PREFIX
    try:
        code, answer = await call(url + "api/models", "alice-token", method="POST",
                                  body=json.dumps({"name": "clf", "path": "out/model.joblib", "project": "vision"}))
        assert code == 201, answer
        code, svc = await call(url + "api/services", "alice-token", method="POST",
                               body=json.dumps({"name": "clf-api", "model_id": answer["model"]["id"]}))
        assert code == 201 and svc["state"] == "Ready", svc
        before = ProcessIdentity.from_json(app.serving_backend.current["clf-api"])

        # A teammate sees the service but may not restart it.
        code, refused = await call(url + "api/services/clf-api/restart", "bob-token", method="POST", body="{}")
        assert code == 403 and "alice" in refused["message"], refused
        code, svc = await call(url + "api/services/clf-api/restart", "alice-token", method="POST", body="{}")
        assert code == 200 and svc["state"] == "Ready" and svc["serving_version"] == 1, svc
        after = ProcessIdentity.from_json(app.serving_backend.current["clf-api"])
        assert after != before
        code, detail = await call(url + "api/services/clf-api", "alice-token")
        assert [(e["action"], e["actor"]) for e in detail["events"]][-1] == ("restarted", "alice")
    finally:
        await app.serving_backend.delete("clf-api")
        await app.serving_backend.stop()
    # The server switched from is stopped too, though the delete came within its grace (it used to outlive the test).
    assert not alive(before) and not alive(after)
