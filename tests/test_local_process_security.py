"""Local mode's processes against their own users' code: forged pids, and the service's secrets.

- A job's folder is the user's: its code may rewrite ``state.json`` with any
  pid (``-1`` would be ``kill(-1)``, every process of the hub's user). Cancel
  signals only the supervisor the service recorded in its own state, and only
  while it is still that process (start time, process group).
- Jobs and model servers inherit only allow-listed environment variables: the
  hub service's token (``JPY_API_TOKEN``, ``JUPYTERHUB_API_TOKEN``) and any
  other secret of its environment stay out of users' code.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jupyter_kubeai.backends.local import LocalBackend
from jupyter_kubeai.backends.local_serving import LocalServing, launch_args
from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.jobs.local import LocalJobRunner, pid_alive
from jupyter_kubeai.jobs.spec import JobSpec
from jupyter_kubeai.local import processes
from jupyter_kubeai.local.environment import DEFAULT_ENV_ALLOWLIST, allowed, user_code_env
from jupyter_kubeai.local.processes import ProcessIdentity, identify, is_ours, signal_group
from jupyter_kubeai.models.spec import DeploymentSpec

SELECTION = select(user_view(Catalog(images=(image_from_dict({"name": "py", "image": "x/py:1"}),),
                                     profiles=(profile_from_dict({"name": "s"}),)), []), {})


@pytest.fixture
def bystander():
    """A process of the hub's own user that no job may stop: a forged pid names it."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def signals(monkeypatch):
    """Every os.kill/os.killpg the code under test sends; a non-positive target fails the test before it is sent."""
    sent = []
    real_kill, real_killpg = os.kill, os.killpg

    def kill(pid, sig):
        assert pid > 1, f"kill({pid}, {sig}) would hit every process of this user"
        sent.append(("kill", pid, sig))
        return real_kill(pid, sig)

    def killpg(pgid, sig):
        assert pgid > 1, f"killpg({pgid}, {sig})"
        sent.append(("killpg", pgid, sig))
        return real_killpg(pgid, sig)

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", killpg)
    return sent


def forging_job(tmp_path: Path, forged: dict) -> list[str]:
    """A job that, once running, rewrites its state.json as its code may, then waits to be cancelled."""
    path = tmp_path / "forge.py"
    path.write_text(textwrap.dedent(f"""
        import json, pathlib, time
        state = pathlib.Path("state.json")
        while json.loads(state.read_text()).get("state") != "Running":
            time.sleep(0.02)
        state.write_text(json.dumps({forged!r}))
        print("forged", flush=True)
        time.sleep(600)
    """))
    return [sys.executable, "-u", str(path)]


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("forged_pid", ["minus-one", "bystander", "garbage"])
def test_cancel_never_signals_a_pid_from_the_job_folder(tmp_path, bystander, signals, forged_pid):
    pid = {"minus-one": -1, "bystander": bystander.pid, "garbage": "1; rm -rf /"}[forged_pid]
    runner = LocalJobRunner(tmp_path / "service-state")
    job = tmp_path / "job-forge"
    runner.start(job, forging_job(tmp_path, {"state": "Running", "pid": pid, "pgid": pid}))
    wait_for(lambda: "forged" in runner.log(job))
    # The forged file does not fool the status either: the recorded supervisor runs.
    assert runner.status(job).state == "Running"

    assert runner.cancel(job)
    status = runner.wait(job, timeout=30)
    assert status.state == "Cancelled", status.reason
    supervisor = runner.supervisor(job)
    assert signals and {target for _, target, _ in signals} == {supervisor.pid}
    assert pid_alive(bystander.pid)


def test_a_record_naming_another_process_is_not_obeyed(tmp_path, bystander, signals):
    """Even the service's own record is checked against the live process: a reused pid is not ours."""
    runner = LocalJobRunner(tmp_path / "service-state")
    job = tmp_path / "job-reused"
    job.mkdir()
    (job / "state.json").write_text(json.dumps({"state": "Running", "pid": bystander.pid}))
    real = identify(bystander.pid)
    assert real is not None and is_ours(real)  # its own group, alive: the check would pass for it
    for forged in (ProcessIdentity(real.pid, real.start_time + 1, real.pgid),  # started at another time
                   ProcessIdentity(real.pid, real.start_time, real.pgid + 1)):  # in another group
        processes.write_record(runner.state_dir / runner._key(job),
                               {"job_dir": os.path.abspath(job), "supervisor": forged.to_json()})
        runner._records.clear()
        assert not runner.cancel(job)
        assert runner.status(job).state == "Failed"  # a job nobody supervises is not left Running
    # The identity is right, but the command line is not a supervisor of this job folder.
    processes.write_record(runner.state_dir / runner._key(job),
                           {"job_dir": os.path.abspath(job), "supervisor": real.to_json()})
    runner._records.clear()
    assert not runner.cancel(job)
    assert signals == [] and pid_alive(bystander.pid)


def test_process_identity_checks(bystander):
    me = identify(bystander.pid)
    assert me.pid == me.pgid == bystander.pid and me.start_time > 0
    assert is_ours(me, "600") and not is_ours(me, "jupyter_kubeai.serving")
    for bad in (-1, 0, 1, "12", None, 2**40):
        assert identify(bad) is None
    assert not is_ours(ProcessIdentity(-1, 0, -1)) and not is_ours(None)
    assert not signal_group(ProcessIdentity(-1, me.start_time, -1), signal.SIGTERM)
    assert ProcessIdentity.from_json({"pid": "1", "start_time": 1, "pgid": 1}) is None
    bystander.kill()
    bystander.wait()
    assert identify(bystander.pid) is None and not signal_group(me, signal.SIGTERM)


# --- the environment of users' code ------------------------------------------------------------------

SECRETS = {
    "JPY_API_TOKEN": "hub-token-value",
    "JUPYTERHUB_API_TOKEN": "hub-token-value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "SOME_RANDOM_SECRET": "random-secret",
    "KUBEAI_DB_URL": "postgresql://kubeai:pw@db/kubeai",
}


def test_user_code_env_is_an_allow_list():
    base = {**SECRETS, "PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "NCCL_DEBUG": "INFO", "CUDA_HOME": "/usr/cuda",
            "OMPI_MCA_btl": "self", "HOME": "/home/x", "MY_TOOL_SETTING": "1"}
    env = user_code_env({"EPOCHS": "3"}, base=base)
    assert env == {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "NCCL_DEBUG": "INFO", "CUDA_HOME": "/usr/cuda",
                   "OMPI_MCA_btl": "self", "HOME": "/home/x", "EPOCHS": "3"}
    assert user_code_env(base=base, allowlist=[*DEFAULT_ENV_ALLOWLIST, "MY_TOOL_*"])["MY_TOOL_SETTING"] == "1"
    assert not any(allowed(name) for name in SECRETS)


async def test_a_real_job_sees_none_of_the_services_secrets(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    job_dir = tmp_path / "job-env"
    job_dir.mkdir()
    (job_dir / "main.py").write_text("import json, os\nprint('ENV=' + json.dumps(dict(os.environ)))\n")
    spec = JobSpec(job_id="job-env", owner="alice", owner_groups=(), project=None, framework="single",
                   selection=SELECTION, job_dir=str(job_dir), env=(("EPOCHS", "3"),))
    backend = LocalBackend(state_dir=str(tmp_path / "state"), local_gpus=0)
    await backend.submit(spec)
    assert backend.runner.wait(job_dir).state == "Succeeded"
    line = next(line for line in backend.runner.log(job_dir).splitlines() if line.startswith("ENV="))
    env = json.loads(line[4:])
    assert not set(SECRETS) & set(env), sorted(env)
    assert not any(value in json.dumps(env) for value in SECRETS.values())
    assert env["EPOCHS"] == "3" and env["KUBEAI_JOB_ID"] == "job-env" and env["PATH"]


PREDICTOR = """
import json, os

class Predictor:
    def __init__(self, model_dir, config):
        with open(os.path.join(os.environ["ENV_OUT"], "env.json"), "w") as f:
            json.dump(dict(os.environ), f)

    def predict(self, payload):
        return payload
"""


async def test_a_model_server_sees_none_of_the_services_secrets(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    out.mkdir()
    # ENV_OUT reaches the predictor only because this test allows it; nothing else is added.
    monkeypatch.setenv("ENV_OUT", str(out))
    model = tmp_path / "model"
    model.mkdir()
    (model / "predictor.py").write_text(PREDICTOR)
    (model / "model.json").write_text(json.dumps({"format": "custom"}))
    serving = LocalServing(state_dir=str(tmp_path / "services"), local_gpus=0,
                           env_allowlist=[*DEFAULT_ENV_ALLOWLIST, "ENV_OUT"])
    spec = DeploymentSpec(name="env-api", owner="alice", owner_groups=(), project=None, model="m", version=1,
                          model_path=str(model), model_subpath="models/m/1", model_format="custom",
                          selection=SELECTION)
    assert launch_args(spec)["model_path"] == str(model)
    try:
        await serving.deploy(spec)
        env = json.loads((out / "env.json").read_text())
    finally:
        await serving.delete("env-api")
        await serving.stop()
    assert not set(SECRETS) & set(env), sorted(env)
    assert env["ENV_OUT"] == str(out) and env["PATH"]


def test_links_and_fifos_in_a_job_folder_are_never_written_through(tmp_path):
    """The job's folder is its owner's: a link there must not make the service write someone else's file."""
    from jupyter_kubeai.errors import InvalidInput

    victim = tmp_path / "someone-elses-file"
    victim.write_text("precious")
    runner = LocalJobRunner(tmp_path / "service-state")
    job = tmp_path / "job-links"
    (job / "logs").mkdir(parents=True)
    (job / "state.json").symlink_to(victim)
    (job / ".state.json.tmp").symlink_to(victim)
    (job / "logs" / "main.log").symlink_to(victim)
    runner.start(job, [sys.executable, "-c", "print('output')"])
    status = runner.wait(job)
    assert victim.read_text() == "precious"
    assert status.state == "Failed" and "cannot be written" in status.reason  # its log was a link
    assert not (job / "state.json").is_symlink()

    fifo_job = tmp_path / "job-fifo"
    fifo_job.mkdir()
    os.mkfifo(fifo_job / "supervisor.log")  # opening it for writing would block forever
    with pytest.raises(InvalidInput, match="cannot be written"):
        runner.start(fifo_job, [sys.executable, "-c", "print('output')"])


def test_a_job_cannot_declare_itself_ended_while_it_runs(tmp_path):
    """Rewriting state.json to "Succeeded" does not end the job's accounting: its supervisor still runs."""
    runner = LocalJobRunner(tmp_path / "service-state")
    job = tmp_path / "job-liar"
    runner.start(job, forging_job(tmp_path, {"state": "Succeeded", "exit_code": 0}), reservation={"cpu": 1})
    wait_for(lambda: "forged" in runner.log(job))
    assert runner.status(job).state == "Running"
    assert [r["job_dir"] for r in runner.running()] == [os.path.abspath(job)]
    assert runner.cancel(job)
    assert runner.wait(job).state == "Cancelled"
