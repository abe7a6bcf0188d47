"""The jobs REST API of the hub service: real local jobs, validation, quotas, who may do what."""

import asyncio
import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from serviceapp import PREFIX, call, make_service
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

from jupyter_kubeai.backends.base import JobBackend
from jupyter_kubeai.jobs.logfiles import LogText
from jupyter_kubeai.jobs.status import JobEvent, JobStatus
from jupyter_kubeai.jobs.submission import new_job_id, prepare_job_folder

NOTEBOOK = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell("epochs = 1", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell("import os\nprint('training', epochs, os.environ.get('KUBEAI_PROJECT'), flush=True)"),
])


class InMemoryBackend(JobBackend):
    """Runs nothing: for the service's own rules (quota, who may), where no process matters."""

    name = "local"
    jobs: dict = {}

    def job_dir(self, owner, job_id):
        return f"/home/{owner}/.kubeai/jobs/{job_id}"

    async def submit(self, spec):
        if spec.env and dict(spec.env).get("REFUSE"):
            raise RuntimeError("the backend broke")
        self.jobs[spec.job_id] = "Running"
        return {"fake": True}

    async def status(self, record):
        return JobStatus(self.jobs.get(record.job_id, "Failed"))

    async def cancel(self, record):
        self.jobs[record.job_id] = "Cancelled"
        return True

    async def replicas(self, record):
        return ["main"]

    async def logs(self, record, replica, *, tail=None, offset=None, length=None):
        return LogText("", offset=offset or 0, size=0)

    async def events(self, record):
        return [JobEvent(record.created, "Normal", "Submitted", "ok")]


@pytest.fixture
def share(tmp_path):
    return tmp_path / "share"


def local_service(serve, share, tmp_path, gpus: int):
    """The service (after the ``service`` fixture set the hub environment) with local jobs in ``share``."""
    config = Config({"LocalBackend": {"share_root": str(share), "local_gpus": gpus},
                     "KubeAIService": {"share_root": str(share)}})
    app = make_service(tmp_path, config=config, reconcile_interval=0.2)
    return app, serve(app.make_app()) + PREFIX


@pytest.fixture
async def api(hub, serve, service, share, tmp_path):
    return local_service(serve, share, tmp_path, gpus=0)


@pytest.fixture
async def fake_api(hub, serve, service, tmp_path):
    InMemoryBackend.jobs = {}
    app = make_service(tmp_path, backend_class=InMemoryBackend, project_gpu_quota={"vision": 2}, personal_gpu_quota=1)
    return app, serve(app.make_app()) + PREFIX


def snapshot(share: Path, user: str, name: str = "train", nb=NOTEBOOK, parameters=None) -> str:
    job_id = new_job_id(name)
    prepare_job_folder(share / "users" / user, job_id, nb, parameters or {}, f"{name}.ipynb")
    return job_id


async def post(url, token, body):
    return await call(url, token, method="POST", body=json.dumps(body))


async def wait_for(url, token, states, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, job = await call(url, token)
        assert code == 200, job
        if job["state"] in states:
            return job
        await asyncio.sleep(0.1)
    raise TimeoutError(f"job stayed {job['state']}")


async def test_submit_run_list_logs_and_events(api, share):
    app, url = api
    job_id = snapshot(share, "alice", parameters={"epochs": 3})
    code, job = await post(url + "api/jobs", "alice-token", {
        "job_id": job_id, "name": "Train", "framework": "single", "project": "vision", "notebook": "train.ipynb",
    })
    assert code == 201, job
    assert job["state"] == "Pending" and job["owner"] == "alice" and job["profile"] == "small"
    assert job["image"] == "base" and job["folder"] == f".kubeai/jobs/{job_id}"
    job = await wait_for(url + f"api/jobs/{job_id}", "alice-token", ("Succeeded", "Failed"))
    assert job["state"] == "Succeeded", job["reason"]
    code, listed = await call(url + "api/jobs?state=Succeeded", "alice-token")
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    code, replicas = await call(url + f"api/jobs/{job_id}/logs", "alice-token")
    assert replicas == {"replicas": ["main"]}
    response = await AsyncHTTPClient().fetch(url + f"api/jobs/{job_id}/logs/main?follow=1",
                                             headers={"Authorization": "token alice-token"})
    assert "training 3 vision" in response.body.decode()
    code, events = await call(url + f"api/jobs/{job_id}/events", "alice-token")
    assert [e["reason"] for e in events["events"]] == ["Submitted", "Started", "Succeeded"]
    # The record outlives the process; deleting it leaves the folder (the user's files).
    assert (await call(url + f"api/jobs/{job_id}", "alice-token", method="DELETE"))[0] == 204
    assert (await call(url + f"api/jobs/{job_id}", "alice-token"))[0] == 404
    assert (share / "users/alice/.kubeai/jobs" / job_id / "logs/main.log").exists()


async def test_followed_logs_stream_while_the_job_runs(api, share):
    _, url = api
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.5)")])
    job_id = snapshot(share, "alice", nb=nb)
    assert (await post(url + "api/jobs", "alice-token", {"job_id": job_id, "name": "s", "framework": "single"}))[0] == 201
    chunks = []
    await AsyncHTTPClient().fetch(url + f"api/jobs/{job_id}/logs/main?follow=1", request_timeout=60,
                                  headers={"Authorization": "token alice-token"},
                                  streaming_callback=lambda c: chunks.append(c.decode()))
    assert len(chunks) >= 2  # arrived while it ran, not in one piece at the end
    assert "step 0" in "".join(chunks) and "step 2" in "".join(chunks)


async def test_cancel_then_resubmit_runs_the_same_snapshot(api, share):
    _, url = api
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, time\nprint('run in', os.getcwd(), flush=True)\nif os.environ.get('WAIT'): time.sleep(600)")])
    job_id = snapshot(share, "alice", nb=nb)
    body = {"job_id": job_id, "name": "Long one", "framework": "single", "env": {"WAIT": "1"}}
    assert (await post(url + "api/jobs", "alice-token", body))[0] == 201
    await wait_for(url + f"api/jobs/{job_id}", "alice-token", ("Running",))
    assert (await call(url + f"api/jobs/{job_id}", "alice-token", method="DELETE"))[0] == 409
    code, job = await post(url + f"api/jobs/{job_id}/cancel", "alice-token", {})
    assert (code, job["state"]) == (200, "Cancelled")
    assert (await post(url + f"api/jobs/{job_id}/cancel", "alice-token", {}))[0] == 400
    code, again = await post(url + f"api/jobs/{job_id}/resubmit", "alice-token", {})
    assert code == 201 and again["job_id"] != job_id and again["job_id"].startswith("long-one-")
    assert again["spec"]["snapshot_dir"] == job["job_dir"] and again["job_dir"] != job["job_dir"]
    log = share / "users/alice/.kubeai/jobs" / again["job_id"] / "logs/main.log"
    deadline = time.monotonic() + 30
    while "run in" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await post(url + f"api/jobs/{again['job_id']}/cancel", "alice-token", {})
    assert f"run in {again['job_dir']}" in log.read_text()


async def test_a_restarted_service_finds_running_and_vanished_jobs(api, share, serve, tmp_path):
    app, url = api
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(600)")])
    running, vanished = snapshot(share, "alice", nb=nb), snapshot(share, "alice", nb=nb)
    for job_id in (running, vanished):
        assert (await post(url + "api/jobs", "alice-token", {"job_id": job_id, "name": "x", "framework": "single"}))[0] == 201
        await wait_for(url + f"api/jobs/{job_id}", "alice-token", ("Running",))
    # While the service is away, one job's processes are killed.
    import signal
    state = json.loads((share / "users/alice/.kubeai/jobs" / vanished / "state.json").read_text())
    os.killpg(state["pgid"], signal.SIGKILL)
    os.kill(state["pid"], signal.SIGKILL)
    await asyncio.sleep(0.2)
    again = make_service(tmp_path, config=app.config)
    changed = await again.job_manager.reconcile()
    assert [r.job_id for r in changed] == [vanished]
    assert again.job_manager.store.get(vanished).state == "Failed"
    assert "vanished" in again.job_manager.store.get(vanished).reason
    assert again.job_manager.store.get(running).state == "Running"
    await again.job_manager.cancel(await_identity("alice"), running)


async def test_a_failing_notebook_ends_failed_with_its_traceback(api, share):
    """Through the service: the state, the reason quoting the error, the traceback in the replica's log."""
    _, url = api
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('about to fail', flush=True)"),
        nbformat.v4.new_code_cell("def train(rate):\n    return 1 / rate\n\ntrain(0)"),
    ])
    job_id = snapshot(share, "alice", nb=nb)
    assert (await post(url + "api/jobs", "alice-token", {"job_id": job_id, "name": "f", "framework": "single"}))[0] == 201
    job = await wait_for(url + f"api/jobs/{job_id}", "alice-token", ("Succeeded", "Failed"))
    assert job["state"] == "Failed"
    assert "ZeroDivisionError" in job["reason"], job["reason"]
    response = await AsyncHTTPClient().fetch(url + f"api/jobs/{job_id}/logs/main",
                                             headers={"Authorization": "token alice-token"})
    text = response.body.decode()
    assert "about to fail" in text and "Traceback" in text and "ZeroDivisionError: division by zero" in text
    code, events = await call(url + f"api/jobs/{job_id}/events", "alice-token")
    assert events["events"][-1]["reason"] == "Failed"


async def test_project_members_read_a_jobs_metrics_and_files_from_the_share(api, share, hub):
    """bob's lab cannot read alice's home: the service serves her project job's metrics and files to him."""
    _, url = api
    hub.add_user("dave", token="dave-token")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import jupyter_kubeai, os, pathlib\n"
        "for step in range(3):\n    jupyter_kubeai.log_metric(step=step, loss=1.0 / (step + 1))\n"
        "out = pathlib.Path(os.environ['KUBEAI_JOB_DIR']) / 'outputs'\nout.mkdir()\n"
        "(out / 'model.txt').write_text('weights')\n")])
    job_id = snapshot(share, "alice", nb=nb)
    body = {"job_id": job_id, "name": "m", "framework": "single", "project": "vision"}
    assert (await post(url + "api/jobs", "alice-token", body))[0] == 201
    job = await wait_for(url + f"api/jobs/{job_id}", "alice-token", ("Succeeded", "Failed"))
    assert job["state"] == "Succeeded", job["reason"]
    folder = share / "users/alice/.kubeai/jobs" / job_id
    # A link the job left, pointing at someone else's file: never listed, never served.
    (share / "users/bob").mkdir(parents=True, exist_ok=True)
    (share / "users/bob/secret.txt").write_text("bob's")
    (folder / "outputs/leak.txt").symlink_to(share / "users/bob/secret.txt")
    for token in ("alice-token", "bob-token", "admin-token"):
        code, metrics = await call(url + f"api/jobs/{job_id}/metrics", token)
        assert code == 200 and [(m["step"], m["loss"]) for m in metrics["metrics"]] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
        code, files = await call(url + f"api/jobs/{job_id}/files", token)
        names = [f["name"] for f in files["files"]]
        assert code == 200 and "outputs/model.txt" in names and "metrics.jsonl" in names
        assert "outputs/leak.txt" not in names
        response = await AsyncHTTPClient().fetch(url + f"api/jobs/{job_id}/files/outputs/model.txt",
                                                 headers={"Authorization": f"token {token}"})
        assert response.body == b"weights" and "attachment" in response.headers["Content-Disposition"]
    for path in ("outputs/leak.txt", "../../../bob/secret.txt", "outputs/../../state.json", "nothing.txt", ".hidden"):
        code, answer = await call(url + f"api/jobs/{job_id}/files/{path}", "bob-token")
        assert code in (400, 404) and "bob's" not in json.dumps(answer), (path, answer)
    # Not in the project: as if the job did not exist.
    for route in ("metrics", "files", "files/outputs/model.txt"):
        code, answer = await call(url + f"api/jobs/{job_id}/{route}", "dave-token")
        assert code == 404 and job_id in answer["message"]


async def test_a_job_folder_reached_through_a_link_is_not_served(api, share):
    """alice replaces her .kubeai with a link into bob's home: the service does not follow it."""
    _, url = api
    job_id = snapshot(share, "alice")
    assert (await post(url + "api/jobs", "alice-token", {"job_id": job_id, "name": "l", "framework": "single",
                                                         "project": "vision"}))[0] == 201
    await wait_for(url + f"api/jobs/{job_id}", "alice-token", ("Succeeded", "Failed"))
    bobs = share / "users/bob/.kubeai/jobs" / job_id
    bobs.mkdir(parents=True)
    (bobs / "metrics.jsonl").write_text('{"step": 0, "time": 0, "values": {"bob": 1}}\n')
    alice = share / "users/alice"
    (alice / ".kubeai").rename(alice / ".kubeai-moved")
    (alice / ".kubeai").symlink_to(share / "users/bob/.kubeai")
    code, answer = await call(url + f"api/jobs/{job_id}/metrics", "alice-token")
    assert code == 404 and "not on the share" in answer["message"]


@pytest.fixture
async def gpu_api(hub, serve, service, share, tmp_path):
    """Local jobs on a machine said to have 2 GPUs (the processes only see the device numbers)."""
    return local_service(serve, share, tmp_path, gpus=2)


GPU_NOTEBOOK = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
    "import os, time\nprint('devices', repr(os.environ.get('CUDA_VISIBLE_DEVICES')), flush=True)\n"
    "if os.environ.get('WAIT'): time.sleep(600)")])


async def device_line(share, job_id, timeout=30) -> str:
    log = share / "users/alice/.kubeai/jobs" / job_id / "logs/main.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if "devices" in text:
            return text[text.index("devices"):].splitlines()[0]
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no device line in {log}")


async def test_local_gpu_jobs_get_their_own_devices_and_wait_for_none(gpu_api, share, serve, tmp_path):
    app, url = gpu_api
    gpu = {"name": "g", "framework": "single", "profile": "gpu", "project": "vision", "env": {"WAIT": "1"}}
    first, second, third, cpu = (snapshot(share, "alice", nb=GPU_NOTEBOOK) for _ in range(4))
    assert (await post(url + "api/jobs", "alice-token", {**gpu, "job_id": first}))[0] == 201
    assert (await post(url + "api/jobs", "alice-token", {**gpu, "job_id": second}))[0] == 201
    assert {await device_line(share, first), await device_line(share, second)} == {"devices '0'", "devices '1'"}
    # Both devices held: refused with who holds them, and nothing recorded.
    code, answer = await post(url + "api/jobs", "alice-token", {**gpu, "job_id": third})
    assert code == 409 and "only 0 of this machine's 2 are free" in answer["message"] and first in answer["message"]
    assert (await call(url + f"api/jobs/{third}", "alice-token"))[0] == 404
    # A CPU size sees no GPU.
    assert (await post(url + "api/jobs", "alice-token", {"job_id": cpu, "name": "c", "framework": "single"}))[0] == 201
    assert await device_line(share, cpu) == "devices ''"
    # A user cannot pick devices themselves.
    code, answer = await post(url + "api/jobs", "alice-token", {**gpu, "job_id": third, "env": {"CUDA_VISIBLE_DEVICES": "0,1"}})
    assert code == 400 and "set by the platform" in answer["message"]
    # A restarted service knows which devices the running jobs hold; an ended job gives its device back.
    again = make_service(tmp_path, config=app.config, reconcile_interval=0.2)
    url2 = serve(again.make_app()) + PREFIX
    await again.job_manager.reconcile()
    assert (await post(url2 + "api/jobs", "alice-token", {**gpu, "job_id": third}))[0] == 409
    held = await device_line(share, first)
    await post(url2 + f"api/jobs/{first}/cancel", "alice-token", {})
    # Its devices are free once its processes are gone (the supervisor stops them after the cancel).
    folder = share / "users/alice/.kubeai/jobs" / first
    deadline = time.monotonic() + 30
    while again.backend.runner.status(folder).active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (await post(url2 + "api/jobs", "alice-token", {**gpu, "job_id": third}))[0] == 201
    assert await device_line(share, third) == held
    for job_id in (second, third):
        await post(url2 + f"api/jobs/{job_id}/cancel", "alice-token", {})


async def test_a_job_never_sees_the_services_token_or_settings(api, share, monkeypatch):
    _, url = api
    assert os.environ.get("JUPYTERHUB_API_TOKEN")  # the service's, set by the fixtures
    monkeypatch.setenv("KUBEAI_DB_URL", "postgresql://kubeai:secret@db/kubeai")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\nprint('env', sorted(n for n in os.environ if n.startswith(('JUPYTERHUB_', 'KUBEAI_'))), flush=True)")])
    job_id = snapshot(share, "alice", nb=nb)
    assert (await post(url + "api/jobs", "alice-token", {"job_id": job_id, "name": "e", "framework": "single"}))[0] == 201
    job = await wait_for(url + f"api/jobs/{job_id}", "alice-token", ("Succeeded", "Failed"))
    assert job["state"] == "Succeeded", job["reason"]
    log = (share / "users/alice/.kubeai/jobs" / job_id / "logs/main.log").read_text()
    assert "env ['KUBEAI_JOB_DIR', 'KUBEAI_JOB_ID', 'KUBEAI_OWNER', 'KUBEAI_PROJECT']" in log, log


def await_identity(name, groups=("vision",), admin=False):
    from jupyter_kubeai.service.identity import Identity

    return Identity(name=name, groups=tuple(groups), admin=admin)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"framework": "caffe"}, "not one of pytorch, tensorflow, mpi, single"),
        ({"workers": "2"}, "'workers' must be a whole number"),
        ({"workers": True}, "'workers' must be a whole number"),
        ({"workers": 0}, "Workers must be from 1 to 64"),
        ({"shoe_size": 3}, "Unknown field(s) shoe_size"),
        ({"project": "nlp"}, "You are not in project 'nlp'"),
        ({"image": "nope"}, "Image 'nope' is not one you may use"),
        ({"profile": "huge"}, "Size 'huge' is not one you may use"),
        ({"profile": "gpu", "gpus": 3}, "allows 1 GPU(s), not 3"),
        ({"custom_image": "evil/miner:1"}, "may not type an image of your own"),
        ({"env": {"RANK": "3"}}, "set by the platform"),
        ({"env": {"A": 1}}, "must be text"),
        ({"parameter_servers": 1}, "Only TensorFlow jobs have parameter servers"),
        ({"framework": "tensorflow", "parameter_servers": 0}, "needs 1 to 16 parameter servers"),
        ({"name": ""}, "job name must be"),
        ({"job_id": "Bad_ID"}, "is not valid"),
        ({"profile": "gpu"}, "needs 1 GPU(s) but this machine has none"),
        # Parameters: kept in the record the panel re-reads, so bounded; exact, so no whole number past 64 bits.
        ({"parameters": {"blob": "x" * (64 * 1024)}}, "a parameter may have at most 64 KiB"),
        ({"parameters": {f"p{i}": "x" * 60_000 for i in range(5)}}, "at most 256 KiB are allowed"),
        ({"parameters": {"seed": 2**64}}, "64 bits"),
        ({"parameters": {"sizes": [1, -(2**63) - 1]}}, "64 bits"),
        ({"parameters": {"not a name": 1}}, "is not a Python variable name"),
        ({"parameters": [1]}, "'parameters' must be an object"),
    ],
)
async def test_bad_submissions_are_refused_and_leave_nothing(api, share, change, message):
    app, url = api
    job_id = snapshot(share, "alice")
    body = {"job_id": job_id, "name": "t", "framework": "single", **change}
    code, answer = await post(url + "api/jobs", "alice-token", body)
    assert code == 400, answer
    assert message in answer["message"]
    assert app.job_manager.store.count() == 0


def test_the_submitting_side_refuses_the_same_parameters_and_writes_nothing(share):
    """The lab extension and the CLI write the snapshot first: the same limits apply there, before any file."""
    from jupyter_kubeai.errors import InvalidInput
    from jupyter_kubeai.jobs.submission import prepare_submission

    home = share / "users/alice"
    home.mkdir(parents=True)
    for parameters, message in [({"seed": 2**63}, "beyond 64 bits"), ({"big": "x" * 70_000}, "at most 64 KiB"),
                                ({"rate": float("nan")}, "not a finite number")]:
        with pytest.raises(InvalidInput, match=message):
            prepare_submission(home, "train.ipynb", NOTEBOOK, {"parameters": parameters})
        assert not (home / ".kubeai/jobs").exists() or not list((home / ".kubeai/jobs").iterdir())
    job_id, body = prepare_submission(home, "train.ipynb", NOTEBOOK, {"parameters": {"seed": 2**63 - 1, "rate": 0.5}})
    assert body["parameters"] == {"seed": 2**63 - 1, "rate": 0.5}


async def test_a_missing_snapshot_or_a_taken_id_is_refused(api, share):
    app, url = api
    code, answer = await post(url + "api/jobs", "alice-token", {"job_id": "never-written", "name": "t", "framework": "single"})
    assert code == 400 and "snapshot" in answer["message"] and app.job_manager.store.count() == 0
    job_id = snapshot(share, "alice")
    assert (await post(url + "api/jobs", "alice-token", {"job_id": job_id, "name": "t", "framework": "single"}))[0] == 201
    code, answer = await post(url + "api/jobs", "alice-token", {"job_id": job_id, "name": "t", "framework": "single"})
    assert code == 409 and "exists already" in answer["message"]


async def test_bad_bodies_and_queries_are_400(api):
    _, url = api
    for body in (b"{", b"[1]"):
        code, answer = await call(url + "api/jobs", "alice-token", method="POST", body=body)
        assert code == 400 and "JSON" in answer["message"]
    assert (await call(url + "api/jobs?state=Dancing", "alice-token"))[0] == 400
    assert (await call(url + "api/jobs?limit=0", "alice-token"))[0] == 400
    assert (await call(url + "api/jobs?project=nlp", "alice-token"))[0] == 404


async def test_who_may_see_and_touch_a_job(fake_api, hub):
    _, url = fake_api
    hub.add_user("dave", token="dave-token")
    mine = {"job_id": "alice-private", "name": "p", "framework": "single"}
    shared = {"job_id": "alice-vision", "name": "v", "framework": "single", "project": "vision"}
    assert (await post(url + "api/jobs", "alice-token", mine))[0] == 201
    assert (await post(url + "api/jobs", "alice-token", shared))[0] == 201
    # bob shares project vision: he sees that job (not the personal one) but may not stop it.
    _, bobs = await call(url + "api/jobs", "bob-token")
    assert [j["job_id"] for j in bobs["jobs"]] == ["alice-vision"]
    assert (await call(url + "api/jobs?project=vision", "bob-token"))[1]["jobs"][0]["job_id"] == "alice-vision"
    assert (await call(url + "api/jobs/alice-vision/logs/main", "bob-token"))[0] == 200
    for method, path in [("POST", "cancel"), ("POST", "resubmit")]:
        code, answer = await call(url + f"api/jobs/alice-vision/{path}", "bob-token", method=method, body="{}")
        assert code == 403 and "Only alice" in answer["message"]
    assert (await call(url + "api/jobs/alice-vision", "bob-token", method="DELETE"))[0] == 403
    # dave shares nothing: alice's jobs do not exist for him.
    assert (await call(url + "api/jobs", "dave-token"))[1] == {"jobs": []}
    for job_id in ("alice-private", "alice-vision"):
        for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/logs"), ("GET", "/logs/main"),
                             ("POST", "/cancel"), ("POST", "/resubmit"), ("DELETE", "")]:
            code, answer = await call(url + f"api/jobs/{job_id}{path}", "dave-token", method=method,
                                      body="{}" if method == "POST" else None)
            assert code == 404, (method, path, answer)
    # bob cannot see alice's personal job either, nor read, follow or touch it; an admin can, and may cancel it.
    for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/logs"), ("GET", "/logs/main"),
                         ("POST", "/cancel"), ("POST", "/resubmit"), ("DELETE", "")]:
        code, answer = await call(url + f"api/jobs/alice-private{path}", "bob-token", method=method,
                                  body="{}" if method == "POST" else None)
        assert code == 404 and "alice-private" in answer["message"], (method, path, answer)
    assert (await call(url + "api/jobs?project=vision", "bob-token"))[1]["jobs"][0]["job_id"] == "alice-vision"
    code, job = await post(url + "api/jobs/alice-private/cancel", "admin-token", {})
    assert (code, job["state"], job["reason"]) == (200, "Cancelled", "Cancelled by admin.")


@pytest.mark.parametrize("change, message", [
    ({"image": "vision-lab"}, "Image 'vision-lab' is not one you may use"),
    ({"profile": "gpu"}, "Size 'gpu' is not one you may use"),
    ({"project": "vision"}, "You are not in project 'vision'"),
    ({"custom_image": "registry.example.org/nlp/own:1"}, "may not type an image of your own"),
])
async def test_catalog_entries_of_other_projects_are_refused(fake_api, hub, change, message):
    """Real entries limited to groups dave is not in (not unknown names): refused, nothing recorded."""
    app, url = fake_api
    hub.add_user("dave", token="dave-token")
    code, answer = await post(url + "api/jobs", "dave-token", {"job_id": "dave-1", "name": "d", "framework": "single", **change})
    assert code == 400 and message in answer["message"], answer
    assert app.job_manager.store.count() == 0
    # The same entry is fine for a member (bob: vision and nlp).
    code, answer = await post(url + "api/jobs", "bob-token", {"job_id": "bob-1", "name": "b", "framework": "single", **change})
    assert code == 201, answer


async def test_an_admin_lists_every_job_and_anyone_filters_by_owner(fake_api, hub):
    _, url = fake_api
    hub.add_user("dave", groups=["nlp"], token="dave-token")
    for token, body in (("alice-token", {"job_id": "a1", "project": "vision"}), ("dave-token", {"job_id": "d1"}),
                        ("dave-token", {"job_id": "d2", "project": "nlp"})):
        assert (await post(url + "api/jobs", token, {"name": "j", "framework": "single", **body}))[0] == 201
    _, everything = await call(url + "api/jobs", "admin-token")
    assert sorted(j["job_id"] for j in everything["jobs"]) == ["a1", "d1", "d2"]
    _, nlp = await call(url + "api/jobs?project=nlp", "admin-token")
    assert [j["job_id"] for j in nlp["jobs"]] == ["d2"]
    _, daves = await call(url + "api/jobs?owner=dave", "admin-token")
    assert sorted(j["job_id"] for j in daves["jobs"]) == ["d1", "d2"]
    # owner= only narrows what the caller may see anyway.
    _, bobs_view = await call(url + "api/jobs?owner=dave", "bob-token")
    assert [j["job_id"] for j in bobs_view["jobs"]] == ["d2"]  # bob is in nlp; d1 is dave's own
    _, alices = await call(url + "api/jobs?owner=dave", "alice-token")
    assert alices == {"jobs": []}
    assert (await call(url + "api/jobs?project=nlp", "alice-token"))[0] == 404


async def test_project_gpu_quota(fake_api):
    app, url = fake_api
    gpu = {"name": "g", "framework": "pytorch", "profile": "gpu", "project": "vision"}
    assert (await post(url + "api/jobs", "alice-token", {**gpu, "job_id": "g1", "workers": 2}))[0] == 201
    code, answer = await post(url + "api/jobs", "bob-token", {**gpu, "job_id": "g2"})
    assert code == 403 and answer["reason"] == "quota"
    assert "may use 2 GPU(s) at once" in answer["message"] and "hold 2" in answer["message"]
    # CPU jobs are not counted; an ended job gives its GPUs back.
    assert (await post(url + "api/jobs", "bob-token", {"job_id": "c1", "name": "c", "framework": "single", "project": "vision"}))[0] == 201
    await post(url + "api/jobs/g1/cancel", "alice-token", {})
    assert (await post(url + "api/jobs", "bob-token", {**gpu, "job_id": "g2"}))[0] == 201
    # Personal jobs have their own quota, per user.
    personal = {**gpu, "project": None}
    assert (await post(url + "api/jobs", "alice-token", {**personal, "job_id": "p1"}))[0] == 201
    assert (await post(url + "api/jobs", "alice-token", {**personal, "job_id": "p2"}))[0] == 403
    assert app.job_manager.store.count() == 4


async def test_a_backend_failure_removes_the_reservation(fake_api):
    app, url = fake_api
    code, answer = await post(url + "api/jobs", "alice-token",
                              {"job_id": "broken", "name": "b", "framework": "single", "env": {"REFUSE": "1"}})
    assert code == 500 and "Internal error" in answer["message"]
    assert app.job_manager.store.count() == 0


@pytest.fixture
async def k8s_api(hub, serve, service, kube, tmp_path):
    from test_kube_backend import NS, install

    install(kube)
    config = Config({"KubernetesBackend": {"namespace": NS, "cleanup_interval": 0}})
    app = make_service(tmp_path, mode="kubernetes", config=config)
    await app.backend.start()
    yield app, serve(app.make_app()) + PREFIX
    await app.backend.stop()


async def test_on_kubernetes_a_submission_becomes_a_training_object(k8s_api, kube):
    from test_kube_backend import NS, PYTORCHJOBS

    app, url = k8s_api
    code, job = await post(url + "api/jobs", "alice-token", {
        "job_id": "ddp-1", "name": "DDP", "framework": "pytorch", "workers": 2, "project": "vision",
    })
    assert code == 201, job
    assert job["backend"] == "kubernetes" and job["job_dir"] == "/home/jovyan/.kubeai/jobs/ddp-1"
    assert job["spec"]["backend"]["kind"] == "PyTorchJob"
    created = kube.get(PYTORCHJOBS, NS, "ddp-1")
    assert created["metadata"]["labels"]["kubeai.jupyter.org/owner"] == "alice"
    # bob (same project) sees it; dave (no project) does not; only alice cancels it.
    assert (await call(url + "api/jobs/ddp-1", "bob-token"))[0] == 200
    assert (await post(url + "api/jobs/ddp-1/cancel", "bob-token", {}))[0] == 403
    code, job = await post(url + "api/jobs/ddp-1/cancel", "alice-token", {})
    assert (code, job["state"]) == (200, "Cancelled")
    assert kube.get(PYTORCHJOBS, NS, "ddp-1") is None
    # The record stays, and reconciling does not turn the cancelled job into a vanished one.
    await app.job_manager.reconcile()
    assert (await call(url + "api/jobs/ddp-1", "alice-token"))[1]["state"] == "Cancelled"
