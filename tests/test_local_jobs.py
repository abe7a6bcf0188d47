"""Local jobs as supervised process groups: outcomes, logs, cancel, re-attach."""

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jupyter_kubeai.jobs.local import LocalJobRunner


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, "-u", str(path)]


@pytest.fixture
def runner(tmp_path):
    return LocalJobRunner(tmp_path / "service-state")


def test_a_job_that_succeeds(tmp_path, runner):
    job = tmp_path / "job-1"
    runner.start(job, script(tmp_path, "import os\nprint('hello from', os.environ['KUBEAI_JOB_ID'])\n"), env={"KUBEAI_JOB_ID": "job-1"})
    status = runner.wait(job)
    assert (status.state, status.exit_code, status.reason) == ("Succeeded", 0, "")
    assert "hello from job-1" in runner.log(job)
    assert status.finished >= status.started


def test_a_job_that_fails_says_why(tmp_path, runner):
    job = tmp_path / "job-2"
    runner.start(job, script(tmp_path, "print('step 1')\nraise RuntimeError('loss is NaN')\n"))
    status = runner.wait(job)
    assert status.state == "Failed" and status.exit_code == 1
    assert "Exited with code 1" in status.reason
    assert "RuntimeError: loss is NaN" in status.reason
    assert "Traceback" in runner.log(job)


def test_a_command_that_cannot_start(tmp_path, runner):
    job = tmp_path / "job-3"
    runner.start(job, [str(tmp_path / "no-such-program")])
    status = runner.wait(job)
    assert status.state == "Failed" and "could not start" in status.reason


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_cancel_stops_every_process_of_the_job(tmp_path, runner):
    job = tmp_path / "job-4"
    runner.start(job, script(tmp_path, """
        import subprocess, sys, time
        # Two "ranks" of its own, like torchrun's workers.
        ranks = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)]
        print("ranks started", flush=True)
        time.sleep(600)
    """))
    deadline = time.monotonic() + 30
    while "ranks started" not in runner.log(job):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pgid = json.loads((job / "state.json").read_text())["pgid"]
    assert len(group_members(pgid)) == 3
    assert runner.cancel(job)
    status = runner.wait(job, timeout=30)
    assert status.state == "Cancelled"
    assert group_members(pgid) == []
    assert not runner.cancel(job)  # nothing left to cancel


def test_jobs_outlive_their_runner_and_are_re_attached(tmp_path):
    job = tmp_path / "job-5"
    marker = tmp_path / "go"
    state = tmp_path / "service-state"
    LocalJobRunner(state).start(job, script(tmp_path, f"""
        import pathlib, time
        while not pathlib.Path({str(marker)!r}).exists():
            time.sleep(0.05)
        print("finished")
    """))
    # A new runner (a restarted hub service) finds it running, then done.
    fresh = LocalJobRunner(state)
    deadline = time.monotonic() + 30
    while fresh.status(job).state != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    marker.touch()
    assert LocalJobRunner(state).wait(job).state == "Succeeded"


def test_a_vanished_supervisor_is_reported_failed(tmp_path, runner):
    job = tmp_path / "job-6"
    runner.start(job, script(tmp_path, "import time\nprint('working', flush=True)\ntime.sleep(600)\n"))
    deadline = time.monotonic() + 30
    while "working" not in runner.log(job):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    state = json.loads((job / "state.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)  # the supervisor dies without a word
    os.killpg(state["pgid"], signal.SIGKILL)
    status = runner.wait(job, timeout=10)
    assert status.state == "Failed"
    assert "supervisor vanished" in status.reason and "working" in status.reason


def spec_for(framework, **kwargs):
    from jupyter_kubeai.catalog.access import Catalog, select, user_view
    from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
    from jupyter_kubeai.jobs.spec import JobSpec

    view = user_view(Catalog(images=(image_from_dict({"name": "py", "image": "x/py:1"}),), profiles=(profile_from_dict({"name": "s"}),)), [])
    return JobSpec(job_id="j", owner="alice", owner_groups=(), project=None, framework=framework,
                   selection=select(view, {}), job_dir="/tmp/j", **kwargs)


def test_local_commands_per_framework(monkeypatch):
    import shutil

    from jupyter_kubeai.errors import InvalidInput
    from jupyter_kubeai.jobs import local_commands

    assert local_commands.local_command(spec_for("single"), python="py") == ["py", "-u", "/tmp/j/main.py"]
    # A resubmitted job runs its original's snapshot.
    again = spec_for("single", snapshot_dir="/tmp/first")
    assert local_commands.local_command(again, python="py") == ["py", "-u", "/tmp/first/main.py"]
    torchrun = local_commands.local_command(spec_for("pytorch", workers=2, procs_per_worker=2), python="py")
    assert torchrun[:3] == ["py", "-m", "torch.distributed.run"] and "--nproc_per_node=4" in torchrun
    # TensorFlow and MPI are refused with a message where they are not installed, never faked.
    real_find_spec = local_commands.importlib.util.find_spec
    monkeypatch.setattr(local_commands.importlib.util, "find_spec", lambda name: None if name == "tensorflow" else real_find_spec(name))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InvalidInput, match="TensorFlow is not installed here"):
        local_commands.local_command(spec_for("tensorflow", parameter_servers=1))
    with pytest.raises(InvalidInput, match="mpirun is not installed here"):
        local_commands.local_command(spec_for("mpi"))
