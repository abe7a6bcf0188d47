"""A job's whole life through the real local hub: submitted from alice's lab, it outlives her
server and a restart of the hub service, and ends Succeeded with both DDP ranks' logs.

No browser: the lab's own route (``/user/alice/kubeai/jobs``) is called as the panel calls it.
"""

import os
import signal
import time

import nbformat
import pytest
import requests
import torch  # noqa: F401  (the torch extra must be there: fail, never skip)
from test_e2e import wait_for_server

from processes import LocalHub, processes_under, wait_for_http

pytestmark = pytest.mark.e2e

TRAIN = """\
import os, pathlib, time
import torch
import torch.distributed as dist
import jupyter_kubeai

print("waiting for the go file", flush=True)
while not pathlib.Path("go").exists():
    time.sleep(0.2)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(64, 4)
y = x.sum(dim=1, keepdim=True)
for step in range(steps):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x[rank::world]), y[rank::world])
    loss.backward()
    opt.step()
    jupyter_kubeai.log_metric(step=step, loss=loss.item())
print(f"rank {rank} of {world} done, loss {loss.item():.3f}", flush=True)
if rank == 0:
    torch.save(model.module.state_dict(), "model.pt")
dist.destroy_process_group()
"""


def notebook(source: str) -> dict:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("steps = 2", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(source),
    ])
    return nb


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    hub = LocalHub(tmp_path_factory.mktemp("hub")).start()
    yield hub
    left = hub.stop()
    assert left == [], f"processes left running after the hub stopped: {left}"


def lab_post(session, hub, path, body):
    """POST to alice's lab as the browser does: with the lab's own XSRF cookie (path /user/alice/)."""
    xsrf = session.cookies.get("_xsrf", path="/user/alice/")
    return session.post(f"{hub.url}/user/alice/{path}", json=body, headers={"X-XSRFToken": xsrf})


def wait_state(get, states, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = get()
        if r.status_code == 200 and r.json()["state"] in states:
            return r.json()
        time.sleep(0.3)
    raise TimeoutError(f"the job stayed {r.status_code} {r.text[:300]}")


def test_a_ddp_job_outlives_the_lab_and_a_service_restart(hub):
    session = hub.login("alice")
    wait_for_server(session, hub, "alice")
    r = lab_post(session, hub, "kubeai/jobs", {
        "notebook_path": "train.ipynb", "content": notebook(TRAIN), "name": "Survivor",
        "framework": "pytorch", "workers": 1, "procs_per_worker": 2, "project": "vision",
        "parameters": {"steps": 4}, "env": {"OMP_NUM_THREADS": "1"},
    })
    assert r.status_code == 201, r.text
    job = r.json()
    job_id, job_dir = job["job_id"], hub.state_dir / "share/users/alice" / job["folder"]
    token = hub.token("alice")
    service = f"{hub.url}/services/kubeai/api/jobs/{job_id}"

    def get():
        return requests.get(service, headers={"Authorization": f"token {token}"})

    assert wait_state(get, ("Running",))["state"] == "Running"

    # alice's server stops, then the hub service is killed (the hub starts it again).
    assert hub.api(token, "DELETE", "users/alice/server").status_code in (202, 204)
    for pid in hub.service_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    wait_for_http(hub.url + "/services/kubeai/api/health", timeout=90)
    assert get().json()["state"] == "Running"  # re-attached, not lost

    (job_dir / "go").touch()
    done = wait_state(get, ("Succeeded", "Failed"))
    assert done["state"] == "Succeeded", done["reason"]
    replicas = requests.get(service + "/logs", headers={"Authorization": f"token {token}"}).json()["replicas"]
    assert replicas == ["main", "rank-0", "rank-1"]
    for rank in (0, 1):
        log = requests.get(f"{service}/logs/rank-{rank}", headers={"Authorization": f"token {token}"}).text
        assert f"rank {rank} of 2 done" in log
    assert (job_dir / "model.pt").stat().st_size > 0
    assert len((job_dir / "metrics.jsonl").read_text().splitlines()) == 4
    assert (job_dir / "executed.ipynb").exists() and (job_dir / "job.json").exists()

    # bob shares project vision: he sees the job, but may not delete it.
    bob = hub.token("bob")
    assert requests.get(service, headers={"Authorization": f"token {bob}"}).status_code == 200
    assert requests.delete(service, headers={"Authorization": f"token {bob}"}).status_code == 403


def test_cancel_stops_every_rank(hub):
    session = hub.login("alice")
    wait_for_server(session, hub, "alice")
    r = lab_post(session, hub, "kubeai/jobs", {
        "notebook_path": "wait.ipynb", "content": notebook(TRAIN), "name": "Cancel me",
        "framework": "pytorch", "workers": 2, "procs_per_worker": 1,
    })
    assert r.status_code == 201, r.text
    job = r.json()
    job_dir = hub.state_dir / "share/users/alice" / job["folder"]
    api = f"{hub.url}/user/alice/kubeai/api/jobs/{job['job_id']}"
    wait_state(lambda: session.get(api), ("Running",))
    deadline = time.monotonic() + 60
    while len(processes_under(job_dir)) < 3 and time.monotonic() < deadline:  # launcher + 2 ranks
        time.sleep(0.2)
    r = lab_post(session, hub, f"kubeai/api/jobs/{job['job_id']}/cancel", {})
    assert r.status_code == 200 and r.json()["state"] == "Cancelled"
    deadline = time.monotonic() + 30
    while processes_under(job_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(job_dir) == []
