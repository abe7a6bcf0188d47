"""LocalBackend and JobManager.reconcile: records follow what really runs, across service restarts."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from jupyter_kubeai.backends.local import LocalBackend
from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.errors import InvalidInput, NotFound
from jupyter_kubeai.jobs.spec import JobSpec
from jupyter_kubeai.service.jobs import JobManager
from jupyter_kubeai.store.jobs import JobRecord, JobStore
from jupyter_kubeai.store.schema import open_engine, upgrade

SELECTION = select(user_view(Catalog(images=(image_from_dict({"name": "py", "image": "x/py:1"}),),
                                     profiles=(profile_from_dict({"name": "s"}),)), []), {})


@pytest.fixture
def store(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'kubeai.sqlite'}")
    upgrade(engine)
    return JobStore(engine)


def submit(store, backend, tmp_path, job_id, body, framework="single", **topology):
    job_dir = tmp_path / job_id
    job_dir.mkdir()
    (job_dir / "main.py").write_text(body)
    spec = JobSpec(job_id=job_id, owner="alice", owner_groups=("vision",), project="vision", framework=framework,
                   selection=SELECTION, job_dir=str(job_dir), env=(("EPOCHS", "3"),), **topology)
    store.add(JobRecord(job_id=job_id, owner="alice", project="vision", framework=framework, backend="local",
                        state="Pending", reason="", job_dir=str(job_dir), spec={}, gpus=0, created=time.time()))
    return spec


async def wait_state(store, backend, job_id, states, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await JobManager(store, backend, catalog=None).reconcile()
        record = store.get(job_id)
        if record.state in states:
            return record
        time.sleep(0.05)
    raise TimeoutError(f"{job_id} stayed {store.get(job_id).state}")


async def test_submit_run_and_read_logs(store, tmp_path):
    backend = LocalBackend()
    spec = submit(store, backend, tmp_path, "job-ok", "import os\nprint('epochs', os.environ['EPOCHS'], os.environ['KUBEAI_PROJECT'])\n")
    await backend.submit(spec)
    record = await wait_state(store, backend, "job-ok", ("Succeeded", "Failed"))
    assert record.state == "Succeeded" and record.finished
    assert await backend.replicas(record) == ["main"]
    assert "epochs 3 vision" in await backend.logs(record, "main")
    assert [e.reason for e in await backend.events(record)] == ["Submitted", "Started", "Succeeded"]
    assert "".join([c async for c in backend.follow_logs(record, "main")]) == await backend.logs(record, "main")
    with pytest.raises(NotFound):
        await backend.logs(record, "rank-7")


async def test_the_service_restarts_and_finds_what_happened(store, tmp_path):
    marker = tmp_path / "go"
    spec = submit(store, LocalBackend(), tmp_path, "job-long",
                  f"import pathlib, time\nwhile not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.05)\n")
    await LocalBackend().submit(spec)
    # A new backend object: the service restarted. The job is picked up again.
    assert (await wait_state(store, LocalBackend(), "job-long", ("Running",))).state == "Running"
    marker.touch()
    assert (await wait_state(store, LocalBackend(), "job-long", ("Succeeded",))).state == "Succeeded"


async def test_a_job_that_vanished_is_marked_failed_with_the_reason(store, tmp_path):
    backend = LocalBackend()
    spec = submit(store, backend, tmp_path, "job-gone", "import time\nprint('training', flush=True)\ntime.sleep(600)\n")
    await backend.submit(spec)
    await wait_state(store, backend, "job-gone", ("Running",))
    state = json.loads((Path(spec.job_dir) / "state.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)
    os.killpg(state["pgid"], signal.SIGKILL)
    record = await wait_state(store, LocalBackend(), "job-gone", ("Failed",))
    assert "supervisor vanished" in record.reason


async def test_cancel_through_the_backend(store, tmp_path):
    backend = LocalBackend()
    spec = submit(store, backend, tmp_path, "job-cancel", "import time\ntime.sleep(600)\n")
    await backend.submit(spec)
    await wait_state(store, backend, "job-cancel", ("Running",))
    assert await backend.cancel(store.get("job-cancel"))
    assert (await wait_state(store, backend, "job-cancel", ("Cancelled",))).state == "Cancelled"


async def test_frameworks_that_cannot_run_here_start_nothing(store, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    backend = LocalBackend()
    spec = submit(store, backend, tmp_path, "job-mpi", "print('never')\n", framework="mpi")
    with pytest.raises(InvalidInput, match="mpirun is not installed"):
        await backend.submit(spec)
    assert not (Path(spec.job_dir) / "state.json").exists()  # no process was started


def test_the_backend_interface_is_enforced():
    from jupyter_kubeai.backends.base import JobBackend

    with pytest.raises(TypeError, match="abstract"):
        JobBackend()

    class Incomplete(JobBackend):
        async def submit(self, spec):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()
    assert isinstance(LocalBackend(), JobBackend)


async def test_a_tensorflow_parameter_server_job_runs_chief_workers_and_ps(store, tmp_path, monkeypatch):
    # TensorFlow itself is not installed here; the launcher does not need it, the check does.
    from jupyter_kubeai.jobs import local_commands

    real_find_spec = local_commands.importlib.util.find_spec
    monkeypatch.setattr(local_commands.importlib.util, "find_spec",
                        lambda name: object() if name == "tensorflow" else real_find_spec(name))
    backend = LocalBackend()
    body = (
        "import json, os, time\nimport jupyter_kubeai\n"
        "c = json.loads(os.environ['TF_CONFIG'])\n"
        "print('task', c['task']['type'], c['task']['index'], sorted(c['cluster']), flush=True)\n"
        "jupyter_kubeai.log_metric(step=0, loss=1.0)\n"
        "if c['task']['type'] == 'ps':\n"
        "    open('ps-started', 'w').close()\n"
        "    time.sleep(600)\n"
        "while not os.path.exists('ps-started'): time.sleep(0.05)  # as training waits for its servers\n"
    )
    spec = submit(store, backend, tmp_path, "job-tf", body, framework="tensorflow", workers=2, parameter_servers=1)
    await backend.submit(spec)
    record = await wait_state(store, backend, "job-tf", ("Succeeded", "Failed"))
    assert record.state == "Succeeded", record.reason
    assert await backend.replicas(record) == ["main", "chief-0", "worker-0", "ps-0"]
    assert "task chief 0 ['chief', 'ps', 'worker']" in await backend.logs(record, "chief-0")
    assert "task worker 0" in await backend.logs(record, "worker-0")
    assert "task ps 0" in await backend.logs(record, "ps-0")  # stopped once the training ended
    metrics = (Path(spec.job_dir) / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1  # the chief's only


async def test_a_cancel_right_after_submitting_starts_nothing(store, tmp_path):
    from processes import processes_under

    backend = LocalBackend()
    spec = submit(store, backend, tmp_path, "job-early", "print('started', flush=True)\nimport time\ntime.sleep(600)\n")
    await backend.submit(spec)
    assert await backend.cancel(store.get("job-early"))  # still Pending: the supervisor is starting
    record = await wait_state(store, backend, "job-early", ("Cancelled", "Failed", "Succeeded"))
    assert record.state == "Cancelled", record.reason
    deadline = time.monotonic() + 15
    while processes_under(Path(spec.job_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(Path(spec.job_dir)) == []


def test_user_code_gets_no_service_settings_or_tokens():
    from jupyter_kubeai.local.environment import user_code_env

    base = {"PATH": "/usr/bin", "HOME": "/home/alice", "JUPYTERHUB_API_TOKEN": "service-token",
            "JUPYTERHUB_CLIENT_ID": "service-kubeai", "KUBEAI_DB_URL": "postgresql://u:secret@db/k",
            "KUBEAI_METRICS_TOKEN": "m", "CONFIGPROXY_AUTH_TOKEN": "p", "MY_SETTING": "1", "JPY_API_TOKEN": "t"}
    # An allow-list: a name nobody listed (MY_SETTING, or a secret nobody thought of) stays out too.
    assert user_code_env({"KUBEAI_JOB_ID": "j-1"}, base=base) == {
        "PATH": "/usr/bin", "HOME": "/home/alice", "KUBEAI_JOB_ID": "j-1"}
