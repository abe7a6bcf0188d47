"""The ``kubeai`` command against the in-process hub service, with real local jobs."""

import asyncio
import io
import json
import subprocess
import sys
import time

import nbformat
import pytest
from serviceapp import PREFIX, make_service
from traitlets.config import Config

from jupyter_kubeai.cli import main

from processes import free_port

TRAIN = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell("epochs = 1\nlabel = 'none'", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell(
        "import os\nprint('training', epochs, label, os.environ.get('KUBEAI_PROJECT'), os.environ.get('FOO'), flush=True)"
    ),
])


def notebook(source: str):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])


@pytest.fixture
def share(tmp_path):
    return tmp_path / "share"


@pytest.fixture
def home(share, monkeypatch):
    home = share / "users" / "alice"
    (home / "work").mkdir(parents=True)
    monkeypatch.setenv("KUBEAI_HOME", str(home))
    return home


@pytest.fixture
async def kubeai(hub, serve, service, share, home, tmp_path, monkeypatch):
    """Run ``kubeai ...`` as alice against the service; returns (exit status, stdout, stderr)."""
    config = Config({"LocalBackend": {"share_root": str(share), "local_gpus": 0}})
    app = make_service(tmp_path, config=config, reconcile_interval=0.2)
    monkeypatch.setenv("KUBEAI_SERVICE_URL", serve(app.make_app()) + PREFIX)
    return make_runner("alice-token")


def make_runner(token):
    async def run(*argv):
        out = io.StringIO()
        # main() blocks (urllib); the service answers on this test's event loop.
        code = await asyncio.to_thread(run_main, ["--token", token, *argv] if token else list(argv), out)
        return code, out.getvalue()
    return run


def run_main(argv, out):
    try:
        return main(argv, out)
    except SystemExit as e:
        return e.code


def write_notebook(home, name, nb=TRAIN):
    path = home / "work" / name
    nbformat.write(nb, path)
    return path


def job_folders(home):
    folder = home / ".kubeai/jobs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def wait_for_state(kubeai, job_id, states, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, out = await kubeai("status", job_id, "--json")
        assert code == 0
        job = json.loads(out)
        if job["state"] in states:
            return job
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{job_id} stayed {job['state']}")


async def test_submit_follow_list_logs_delete(kubeai, home, capsys):
    path = write_notebook(home, "train.ipynb")
    code, out = await kubeai(
        "submit", str(path), "--name", "Train MNIST", "--project", "vision",
        "-p", "epochs=3", "-p", "label=fast", "-e", "FOO=bar", "--follow",
    )
    assert code == 0, capsys.readouterr().err
    job_id, log = out.split("\n", 1)
    assert job_id.startswith("train-mnist-")
    assert "training 3 fast vision bar" in log
    # The snapshot and the accepted job are beside each other in the home.
    kept = json.loads((home / ".kubeai/jobs" / job_id / "job.json").read_text())
    assert kept["notebook"] == "work/train.ipynb" and kept["parameters"] == {"epochs": 3, "label": "fast"}

    code, table = await kubeai("jobs")
    header, row = table.splitlines()
    assert header.split() == ["ID", "STATE", "FRAMEWORK", "WORKERS", "OWNER", "PROJECT", "AGE"]
    assert row.split()[:6] == [job_id, "Succeeded", "single", "1", "alice", "vision"]
    assert len((await kubeai("jobs", "--state", "Running"))[1].splitlines()) == 1  # the header
    code, listed = await kubeai("jobs", "--project", "vision", "--json")
    assert [j["job_id"] for j in json.loads(listed)] == [job_id]

    code, log = await kubeai("logs", job_id)
    assert code == 0 and "training 3 fast vision bar" in log
    code, shown = await kubeai("status", job_id)
    assert code == 0 and f"job_id:            {job_id}" in shown and "state:             Succeeded" in shown
    assert (await kubeai("delete", job_id)) == (0, f"{job_id} deleted\n")
    assert len((await kubeai("jobs"))[1].splitlines()) == 1


async def test_logs_follow_streams_until_the_job_ends(kubeai, home):
    path = write_notebook(home, "steps.ipynb", notebook(
        "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.5)"))
    code, out = await kubeai("submit", str(path), "--framework", "single")
    job_id = out.strip()
    assert code == 0 and job_folders(home) == [job_id]
    code, log = await kubeai("logs", job_id, "-f")
    assert code == 0 and all(f"step {i}" in log for i in range(3))
    assert (await wait_for_state(kubeai, job_id, ("Succeeded", "Failed")))["state"] == "Succeeded"


async def wait_for_log(kubeai, job_id, text, timeout=60):
    deadline = time.monotonic() + timeout
    while text not in (await kubeai("logs", job_id))[1]:
        assert time.monotonic() < deadline, f"{text!r} not in the log of {job_id}"
        await asyncio.sleep(0.1)


async def test_cancel_and_resubmit(kubeai, home):
    path = write_notebook(home, "long.ipynb", notebook("import time\nprint('started', flush=True)\ntime.sleep(600)"))
    job_id = (await kubeai("submit", str(path)))[1].strip()
    await wait_for_log(kubeai, job_id, "started")
    assert await kubeai("cancel", job_id) == (0, f"{job_id} Cancelled\n")
    code, again = await kubeai("resubmit", job_id)
    again = again.strip()
    assert code == 0 and again.startswith("long-") and again != job_id
    await wait_for_log(kubeai, again, "started")
    assert await kubeai("cancel", again) == (0, f"{again} Cancelled\n")
    # Following the log of an ended job prints what there is and returns.
    code, log = await kubeai("logs", again, "-f", "--replica", "main")
    assert code == 0 and "started" in log


async def test_refusals_print_the_message_and_leave_no_folder(kubeai, home, capsys):
    path = write_notebook(home, "train.ipynb")
    code, out = await kubeai("submit", str(path), "--project", "nlp")
    assert (code, out) == (1, "")
    assert "You are not in project 'nlp'" in capsys.readouterr().err
    assert job_folders(home) == []

    code, _ = await kubeai("submit", str(path), "--profile", "gpu", "--gpus", "3")
    assert code == 1 and "allows 1 GPU(s), not 3" in capsys.readouterr().err
    assert job_folders(home) == []

    code, _ = await kubeai("submit", str(home / "work/missing.ipynb"))
    assert code == 1 and "There is no notebook" in capsys.readouterr().err
    (home / "work/broken.ipynb").write_text("{not json")
    code, _ = await kubeai("submit", str(home / "work/broken.ipynb"))
    assert code == 1 and "not valid JSON" in capsys.readouterr().err
    (home / "work/wrong.ipynb").write_text('{"cells": 3}')
    code, _ = await kubeai("submit", str(home / "work/wrong.ipynb"))
    assert code == 1 and "not a valid notebook" in capsys.readouterr().err
    code, _ = await kubeai("submit", str(path), "-p", "1x=2")
    assert code == 1 and "not a Python variable name" in capsys.readouterr().err
    assert job_folders(home) == []

    # Usage errors: exit status 2.
    assert (await kubeai("submit", str(path), "-p", "novalue"))[0] == 2
    assert (await kubeai("submit", str(path), "--framework", "caffe"))[0] == 2
    assert (await kubeai("submit", str(path), "--workers", "two"))[0] == 2
    capsys.readouterr()

    for argv in (("cancel", "nope"), ("logs", "nope"), ("status", "nope"), ("delete", "nope"), ("resubmit", "nope")):
        code, _ = await kubeai(*argv)
        assert code == 1 and "There is no job 'nope' that you can see" in capsys.readouterr().err, argv
    code, _ = await kubeai("jobs", "--project", "nlp")
    assert code == 1 and "You are not in project 'nlp'" in capsys.readouterr().err


async def test_someone_elses_token_and_a_bad_token(kubeai, home, capsys):
    path = write_notebook(home, "train.ipynb")
    job_id = (await kubeai("submit", str(path)))[1].strip()  # personal: only alice sees it
    code, _ = await make_runner("bob-token")("cancel", job_id)
    assert code == 1 and "There is no job" in capsys.readouterr().err
    code, _ = await make_runner("forged")("jobs")
    assert code == 1 and "needs a JupyterHub identity" in capsys.readouterr().err
    await wait_for_state(kubeai, job_id, ("Succeeded",))


def test_an_unreachable_service_is_one_clear_line(tmp_path):
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    nbformat.write(TRAIN, home / "work/train.ipynb")
    env = {"PATH": "/usr/bin:/bin", "KUBEAI_HOME": str(home), "JUPYTERHUB_API_TOKEN": "t",
           "KUBEAI_SERVICE_URL": f"http://127.0.0.1:{free_port()}/services/kubeai/"}
    for argv in (["submit", "work/train.ipynb"], ["jobs"], ["logs", "-f", "x"]):
        done = subprocess.run([sys.executable, "-m", "jupyter_kubeai.cli", *argv], cwd=home, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("kubeai: Cannot reach the kubeai service at http://127.0.0.1:")
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (home / ".kubeai/jobs").exists() or not any((home / ".kubeai/jobs").iterdir())


@pytest.mark.parametrize("env, message", [
    ({"JUPYTERHUB_API_TOKEN": "t"}, "no service URL"),
    ({"KUBEAI_SERVICE_URL": "http://127.0.0.1:1/services/kubeai/"}, "no hub token"),
    ({"KUBEAI_SERVICE_URL": "hub:8000", "JUPYTERHUB_API_TOKEN": "t"}, "must be an http(s) URL"),
])
def test_missing_settings_are_usage_errors(monkeypatch, capsys, env, message):
    for name in ("KUBEAI_SERVICE_URL", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run_main(["jobs"], io.StringIO()) == 2
    assert message in capsys.readouterr().err


def test_the_jobs_table_shows_processes_per_worker_and_the_owner():
    """A teammate's job shows whose it is; 2 workers of 4 processes are 2x4 (8 ranks), not 2."""
    import argparse

    from jupyter_kubeai.cli import cmd_jobs

    class Listing:
        def call(self, method, path):
            assert (method, path) == ("GET", "api/jobs")
            return {"jobs": [
                {"job_id": "ddp-1", "state": "Running", "framework": "pytorch", "workers": 2, "procs_per_worker": 4,
                 "owner": "bob", "project": "vision", "created": time.time() - 120},
                {"job_id": "one-1", "state": "Succeeded", "framework": "single", "workers": 1, "procs_per_worker": 1,
                 "owner": "alice", "project": None, "created": time.time() - 7200},
            ]}

    out = io.StringIO()
    assert cmd_jobs(Listing(), argparse.Namespace(state=None, project=None, limit=None, json=False), out) == 0
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert rows == [["ID", "STATE", "FRAMEWORK", "WORKERS", "OWNER", "PROJECT", "AGE"],
                    ["ddp-1", "Running", "pytorch", "2x4", "bob", "vision", "2m"],
                    ["one-1", "Succeeded", "single", "1", "alice", "-", "2h"]]
