"""Local mode's accounting of CPUs, memory and GPUs, and the per-user and per-project limits.

A burst of submissions once ran 106 jobs at once on one machine. Now each
running job reserves its size's requests; a job that does not fit is refused
with 409 and a message naming what is held and by whom.
"""

import asyncio
import time
from pathlib import Path

import pytest

from jupyter_kubeai.backends.local import LocalBackend
from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.errors import Conflict, InvalidInput
from jupyter_kubeai.jobs.spec import JobSpec
from jupyter_kubeai.local.capacity import GI, Capacity, Reservation, check_fit, free_devices, request_for


def selection(**profile):
    catalog = Catalog(images=(image_from_dict({"name": "py", "image": "x/py:1"}),),
                      profiles=(profile_from_dict({"name": "s", **profile}),))
    return select(user_view(catalog, []), {})


def held(job_id, owner="alice", project=None, cpu=1.0, memory=GI, gpus=0, devices=()):
    return Reservation(job_id, owner, project, cpu, memory, gpus, devices)


MACHINE = Capacity(cpus=4, memory=8 * GI, gpus=2, max_jobs_per_user=3, max_jobs_per_project=4)


@pytest.mark.parametrize("running, request_, expected", [
    ([], held("new", cpu=4, memory=8 * GI, gpus=2), ""),
    ([held("a", cpu=3)], held("new", cpu=1), ""),
    ([held("a", cpu=3)], held("new", cpu=1.5), "needs 1.5 CPU, but only 1 of this machine's 4 are free"),
    ([held("a", owner="bob", memory=7 * GI)], held("new", memory=2 * GI), "2 GiB of memory, but only 1 GiB of this machine's 8 GiB are free"),
    ([held("a", owner="bob", cpu=0.5, gpus=2, devices=(0, 1))], held("new", cpu=0.5, gpus=1), "1 GPU(s), but only 0 of this machine's 2 are free"),
    ([held("a", owner="bob", cpu=3.5)], held("new", cpu=1), "bob's a (3.5 CPU, 1 GiB)"),
    ([held(x, cpu=0.1) for x in "abc"], held("new", cpu=0.1), "alice already runs 3 job(s)"),
    ([held(x, owner=x, project="vision", cpu=0.1) for x in "abcd"], held("new", owner="z", project="vision", cpu=0.1),
     "Project 'vision' already runs 4 job(s)"),
    ([held(x, owner=x, project="vision", cpu=0.1) for x in "abcd"], held("new", owner="z", cpu=0.1), ""),
])
def test_check_fit(running, request_, expected):
    fit = check_fit(MACHINE, running, request_)
    assert fit.ok is (expected == "")
    assert expected in fit.reason and not fit.never


@pytest.mark.parametrize("request_, expected", [
    (held("new", cpu=5), "5 CPU but this machine has 4"),
    (held("new", memory=9 * GI), "9 GiB of memory but this machine has 8 GiB"),
    (held("new", gpus=3), "3 GPU(s) but this machine has 2"),
])
def test_a_job_bigger_than_the_machine_can_never_fit(request_, expected):
    fit = check_fit(MACHINE, [], request_)
    assert not fit.ok and fit.never and expected in fit.reason


def test_requests_are_per_worker_and_parameter_server_and_devices_are_free_ones():
    spec = JobSpec(job_id="j", owner="alice", owner_groups=("vision",), project="vision", framework="tensorflow",
                   selection=selection(cpu_request="250m", memory_request="512Mi"), job_dir="/tmp/j",
                   workers=3, parameter_servers=1, procs_per_worker=1)
    assert request_for(spec) == Reservation("j", "alice", "vision", 1.0, 2 * GI, 0)
    assert free_devices(4, [held("a", devices=(0, 2))], 2) == (1, 3)


# --- real submissions through the backend ----------------------------------------------------------

LONG = "import time\nprint('running', flush=True)\ntime.sleep(600)\n"


def spec_for(tmp_path, job_id, owner="alice", project=None, **profile):
    job_dir = tmp_path / owner / job_id
    job_dir.mkdir(parents=True)
    (job_dir / "main.py").write_text(LONG)
    groups = (project,) if project else ()
    return JobSpec(job_id=job_id, owner=owner, owner_groups=groups, project=project, framework="single",
                   selection=selection(**profile), job_dir=str(job_dir))


@pytest.fixture
def backends(tmp_path):
    made = []

    def make(**traits):
        backend = LocalBackend(state_dir=str(tmp_path / "state"), local_gpus=0, **traits)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        for record in backend.runner.running():
            backend.runner.cancel(Path(record["job_dir"]))


def running(backend, job_dir, timeout=30):
    deadline = time.monotonic() + timeout
    while backend.runner.status(job_dir).state != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.05)


async def test_cpu_and_memory_are_reserved_while_jobs_run(tmp_path, backends):
    backend = backends(local_cpus=1.0, local_memory="3Gi", max_jobs_per_user=-1)
    first = spec_for(tmp_path, "job-a", cpu_request="500m", memory_request="1Gi")
    second = spec_for(tmp_path, "job-b", owner="bob", cpu_request="500m", memory_request="1Gi")
    await backend.submit(first)
    await backend.submit(second)
    with pytest.raises(Conflict) as refused:
        await backend.submit(spec_for(tmp_path, "job-c", cpu_request="500m", memory_request="1Gi"))
    message = refused.value.message
    assert "needs 0.5 CPU, but only 0 of this machine's 1 are free" in message
    assert "alice's job-a (0.5 CPU, 1 GiB)" in message and "bob's job-b (0.5 CPU, 1 GiB)" in message
    # Memory too: a small CPU request still needs its memory.
    with pytest.raises(Conflict, match="2 GiB of memory"):
        await backend.submit(spec_for(tmp_path, "job-d", cpu_request="100m", memory_request="2Gi"))
    # Never fits, whatever ends: 400, not 409.
    with pytest.raises(InvalidInput, match="can never run here"):
        await backend.submit(spec_for(tmp_path, "job-e", cpu_request="2", cpu_limit="2"))

    # A restarted service still counts what runs.
    again = backends(local_cpus=1.0, local_memory="3Gi", max_jobs_per_user=-1)
    running(again, Path(first.job_dir))
    with pytest.raises(Conflict, match="alice's job-a"):
        await again.submit(spec_for(tmp_path, "job-f", cpu_request="500m", memory_request="1Gi"))

    # Once a job ends, its share is free again.
    job_a = Path(first.job_dir)
    assert again.runner.cancel(job_a)
    assert again.runner.wait(job_a).state == "Cancelled"
    deadline = time.monotonic() + 30
    while len(again.runner.running()) > 1:  # its supervisor exits right after writing the state
        assert time.monotonic() < deadline
        time.sleep(0.05)
    await again.submit(spec_for(tmp_path, "job-g", cpu_request="500m", memory_request="1Gi"))


async def test_per_user_and_per_project_limits(tmp_path, backends):
    backend = backends(local_cpus=64.0, local_memory="64Gi", max_jobs_per_user=1, max_jobs_per_project=2)
    await backend.submit(spec_for(tmp_path, "job-a", project="vision"))
    with pytest.raises(Conflict, match=r"alice already runs 1 job\(s\).*most one user may run at once \(1\).*alice's job-a"):
        await backend.submit(spec_for(tmp_path, "job-b"))
    await backend.submit(spec_for(tmp_path, "job-c", owner="bob", project="vision"))
    with pytest.raises(Conflict, match=r"Project 'vision' already runs 2 job\(s\)"):
        await backend.submit(spec_for(tmp_path, "job-d", owner="carol", project="vision"))
    await backend.submit(spec_for(tmp_path, "job-e", owner="carol"))  # a personal job is not the project's


async def test_a_burst_of_submissions_is_capped(tmp_path, backends):
    """Many submissions at once: no more start than the machine holds (the reservation is taken before any await)."""
    backend = backends(local_cpus=2.0, local_memory="64Gi", max_jobs_per_user=-1)
    specs = [spec_for(tmp_path, f"job-{i}", owner=f"user{i}", cpu_request="500m") for i in range(10)]
    results = await asyncio.gather(*(backend.submit(spec) for spec in specs), return_exceptions=True)
    assert sum(1 for r in results if isinstance(r, dict)) == 4
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))
    assert len(backend.runner.running()) == 4


async def test_a_submission_that_does_not_fit_is_a_409_through_the_api(hub, serve, service, tmp_path):
    import json

    import nbformat
    from serviceapp import PREFIX, call, make_service
    from traitlets.config import Config

    from jupyter_kubeai.jobs.submission import new_job_id, prepare_job_folder

    share = tmp_path / "share"
    config = Config({"LocalBackend": {"share_root": str(share), "local_gpus": 0, "local_cpus": 0.5,
                                      "local_memory": "64Gi", "state_dir": str(tmp_path / "jobs")},
                     "KubeAIService": {"share_root": str(share)}})
    app = make_service(tmp_path, config=config)
    url = serve(app.make_app()) + PREFIX
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(600)")])

    async def submit(user):
        job_id = new_job_id("train")
        prepare_job_folder(share / "users" / user, job_id, notebook, {}, "train.ipynb")
        return await call(url + "api/jobs", f"{user}-token", method="POST", body=json.dumps(
            {"job_id": job_id, "name": "train", "framework": "single", "notebook": "train.ipynb"}))

    code, first = await submit("alice")  # the default size asks for 500m: the whole machine here
    assert code == 201, first
    try:
        code, refused = await submit("bob")
        assert code == 409 and refused["reason"] == "conflict", refused
        assert f"alice's {first['job_id']} (0.5 CPU" in refused["message"], refused
        code, jobs = await call(url + "api/jobs", "bob-token")
        assert jobs["jobs"] == []  # a refused submission leaves no record
    finally:
        await call(url + f"api/jobs/{first['job_id']}/cancel", "alice-token", method="POST", body="{}")
