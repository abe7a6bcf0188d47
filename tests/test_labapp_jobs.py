"""The server extension's job routes: the snapshot is written in the user's home, refused ones leave nothing."""

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.jobs.metrics import METRICS_FILE

from processes import free_port, jupyter_server, stop

TOKEN = "jupyter-token-for-job-tests"
NOTEBOOK = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell("lr = 0.1", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell("!echo hello\nprint(lr)"),
    nbformat.v4.new_code_cell("print('only in the notebook')", metadata={"tags": ["skip"]}),
])


class FakeJobsService(web.RequestHandler):
    """Accepts a submission unless its name is "refuse"; keeps what it received."""

    def initialize(self, seen):
        self.seen = seen

    def post(self):
        body = json.loads(self.request.body)
        self.seen.append((self.request.headers.get("Authorization"), body))
        if body["name"] == "refuse":
            self.set_status(400)
            self.finish({"message": "Size 'huge' is not one you may use.", "reason": "invalid"})
            return
        self.set_status(201)
        self.finish({**body, "state": "Pending"})


@dataclass
class Lab:
    base: str
    home: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    port, service_port = free_port(), free_port()
    proc = jupyter_server(
        port, TOKEN, home, base_url="/user/alice/", log=home.parent / "server.log",
        args=[f"--KubeAIServerExtension.service_url=http://127.0.0.1:{service_port}/services/kubeai/"],
        env={"JUPYTERHUB_API_TOKEN": "alice-hub-token"},
    )
    lab = Lab(f"http://127.0.0.1:{port}/user/alice/", home)
    lab.service_port = service_port
    yield lab
    stop(proc)


@pytest.fixture
async def seen(lab):
    seen = []
    server = web.Application([(r"/services/kubeai/api/jobs", FakeJobsService, {"seen": seen})]).listen(
        lab.service_port, "127.0.0.1")
    yield seen
    server.stop()


async def post(lab, path, body):
    response = await AsyncHTTPClient().fetch(
        lab.base + path, method="POST", body=json.dumps(body), raise_error=False,
        headers={"Authorization": f"token {TOKEN}"},
    )
    return response.code, json.loads(response.body)


async def get(lab, path):
    response = await AsyncHTTPClient().fetch(lab.base + path, raise_error=False,
                                             headers={"Authorization": f"token {TOKEN}"})
    return response.code, json.loads(response.body)


async def test_the_editors_content_is_snapshotted_then_submitted(lab, seen):
    # The file on disk is older than the editor's content: the job runs what the editor has.
    (lab.home / "train.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    code, job = await post(lab, "kubeai/jobs", {
        "notebook_path": "train.ipynb", "content": NOTEBOOK, "framework": "single", "parameters": {"lr": 0.5},
    })
    assert code == 201, job
    token, body = seen[-1]
    assert token == "token alice-hub-token"
    assert body["name"] == "train" and body["notebook"] == "train.ipynb" and body["job_id"].startswith("train-")
    folder = lab.home / ".kubeai/jobs" / body["job_id"]
    script = (folder / "main.py").read_text()
    assert "lr = 0.5" in script and "echo hello" in script and "only in the notebook" not in script
    assert json.loads((folder / "parameters.json").read_text()) == {"lr": 0.5}
    assert json.loads((folder / "job.json").read_text())["state"] == "Pending"
    assert nbformat.read(folder / "notebook.ipynb", as_version=4).cells[1].metadata.tags == ["injected-parameters"]


async def test_an_own_image_from_the_dialog_reaches_the_service(lab, seen):
    code, job = await post(lab, "kubeai/jobs", {
        "notebook_path": "own.ipynb", "content": NOTEBOOK, "framework": "single",
        "image": "base", "custom_image": "registry.example.org/nlp/own:1",
    })
    assert code == 201, job
    _, body = seen[-1]
    assert body["custom_image"] == "registry.example.org/nlp/own:1"


async def test_from_the_file_browser_the_saved_file_is_used(lab, seen):
    (lab.home / "saved.ipynb").write_text(nbformat.writes(NOTEBOOK))
    code, job = await post(lab, "kubeai/jobs", {"notebook_path": "saved.ipynb", "name": "From disk", "framework": "single"})
    assert code == 201
    assert "print(lr)" in (lab.home / ".kubeai/jobs" / job["job_id"] / "main.py").read_text()
    assert job["job_id"].startswith("from-disk-")


async def test_a_refused_submission_leaves_no_folder(lab, seen):
    before = set((lab.home / ".kubeai/jobs").glob("*")) if (lab.home / ".kubeai/jobs").exists() else set()
    code, answer = await post(lab, "kubeai/jobs", {"notebook_path": "x.ipynb", "content": NOTEBOOK, "name": "refuse",
                                                   "framework": "single"})
    assert (code, answer["message"]) == (400, "Size 'huge' is not one you may use.")
    after = set((lab.home / ".kubeai/jobs").glob("*"))
    assert after == before


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"notebook_path": "x.ipynb", "content": {"cells": "nope"}}, 400, "not a valid notebook"),
        ({"notebook_path": "x.ipynb", "content": NOTEBOOK, "parameters": {"bad name": 1}}, 400, "not a Python variable"),
        ({"notebook_path": "x.ipynb", "content": NOTEBOOK, "parameters": [1]}, 400, "Parameters must be an object"),
        ({"notebook_path": "x.ipynb", "content": NOTEBOOK, "job_id": "../../etc"}, 400, "not valid"),
        ({"notebook_path": "missing.ipynb"}, 404, "Cannot read 'missing.ipynb'"),
        ({"notebook_path": "notes.txt"}, 400, "is not a notebook"),
    ],
)
async def test_bad_submissions_are_refused_before_the_service(lab, seen, body, status, message):
    code, answer = await post(lab, "kubeai/jobs", {"framework": "single", **body})
    assert code == status and message in answer["message"], answer
    assert seen == []


async def test_the_service_down_is_a_clear_502_and_leaves_no_folder(lab):
    code, answer = await post(lab, "kubeai/jobs", {"notebook_path": "x.ipynb", "content": NOTEBOOK,
                                                   "name": "Down", "framework": "single"})
    assert code == 502 and answer["reason"] == "service_unreachable"
    assert not list((lab.home / ".kubeai/jobs").glob("down-*"))


async def test_metrics_and_files_of_a_job_folder(lab):
    folder = lab.home / ".kubeai/jobs/metric-job"
    (folder / "out").mkdir(parents=True)
    (folder / METRICS_FILE).write_text(
        '{"time": 1.0, "step": 0, "rank": 0, "values": {"loss": 1.0}}\n'
        '{"time": 2.0, "step": 1, "rank": 0, "values": {"loss": 0.5, "acc": 0.9}}\n'
    )
    (folder / "out/model.pt").write_bytes(b"weights")
    assert await get(lab, "kubeai/jobs/metric-job/metrics") == (200, {"metrics": [
        {"step": 0, "time": 1.0, "loss": 1.0}, {"step": 1, "time": 2.0, "loss": 0.5, "acc": 0.9}]})
    code, files = await get(lab, "kubeai/jobs/metric-job/files")
    assert code == 200 and files["folder"] == ".kubeai/jobs/metric-job"
    assert {f["name"]: f["path"] for f in files["files"]}["out/model.pt"] == ".kubeai/jobs/metric-job/out/model.pt"
    assert (await get(lab, "kubeai/jobs/nope/files"))[0] == 404
    assert (await get(lab, "kubeai/jobs/..%2F..%2Fetc/files"))[0] in (400, 404)


async def test_a_fifo_or_link_in_a_job_folder_never_stalls_the_server(lab):
    """The job's code made metrics.jsonl a FIFO: read in a thread, refused at once, the server keeps answering."""
    import asyncio
    import os

    folder = lab.home / ".kubeai/jobs/fifo-job"
    (folder / "out").mkdir(parents=True)
    os.mkfifo(folder / METRICS_FILE)
    os.mkfifo(folder / "out/pipe")
    (folder / "out/zero").symlink_to("/dev/zero")
    (folder / "out/model.joblib").write_bytes(b"weights")
    metrics, files = await asyncio.wait_for(asyncio.gather(
        get(lab, "kubeai/jobs/fifo-job/metrics"), get(lab, "kubeai/jobs/fifo-job/files")), 10)
    assert metrics[0] == 400 and "not a regular file" in metrics[1]["message"]
    assert files[0] == 200 and [f["name"] for f in files[1]["files"]] == ["out/model.joblib"]


async def test_internal_files_are_hidden_and_the_model_file_named(lab):
    folder = lab.home / ".kubeai/jobs/internal-job"
    for name in ("state.json", "supervisor.pid", "job.json", "parameters.json", "main.py", "logs/main.log",
                 "logs/ranks/0/stderr.log", "export/model.json", "export/model.joblib"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    code, files = await get(lab, "kubeai/jobs/internal-job/files")
    assert code == 200 and [f["name"] for f in files["files"]] == ["export/model.joblib", "export/model.json"]
    assert files["model_file"] == "export"


async def test_a_nul_byte_in_a_job_path_is_a_400(lab):
    for path in ("kubeai/jobs/a%00b/files", "kubeai/jobs/a%00b/metrics", "kubeai/api/jobs/a%00b/files/x"):
        code, answer = await get(lab, path)
        assert code == 400 and answer["message"], path
