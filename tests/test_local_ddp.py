"""A real notebook trained with 2 DDP ranks on CPU (gloo), as a local job.

The notebook goes through the whole local path: snapshot (parameters
injected, script converted), ``torchrun`` command, supervised process
group. Needs torch (the ``torch`` extra; ``make test`` installs it, and
the test fails rather than skip without it).
"""

import json
from pathlib import Path

import nbformat
import torch  # noqa: F401  (the torch extra must be there: fail, never skip)

from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.jobs.local import LocalJobRunner
from jupyter_kubeai.jobs.local_commands import RANK_LOG_DIR, local_command
from jupyter_kubeai.jobs.metrics import read_metrics
from jupyter_kubeai.jobs.snapshot import write_snapshot
from jupyter_kubeai.jobs.spec import JobSpec

SELECTION = select(
    user_view(Catalog(images=(image_from_dict({"name": "python", "image": "x/python:3.11"}),),
                      profiles=(profile_from_dict({"name": "small"}),)), []),
    {},
)

TRAIN = [
    ("parameters", "epochs = 1\nlr = 0.01\n"),
    ("", """\
import os
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import jupyter_kubeai

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
x = torch.randn(256, 4)
y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
model = DDP(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=lr)
shard = slice(rank, None, world)
for step in range(epochs):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x[shard]), y[shard])
    loss.backward()
    opt.step()
    jupyter_kubeai.log_metric(step=step, loss=loss.item())
print(f"rank {rank}/{world} final loss {loss.item():.4f}", flush=True)
if rank == 0:
    os.makedirs("outputs", exist_ok=True)
    torch.save(model.module.state_dict(), "outputs/model.pt")
dist.destroy_process_group()
"""),
]


def notebook(cells):
    nb = nbformat.v4.new_notebook()
    for tag, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tag:
            cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    return nb


def run_job(tmp_path, nb, parameters, job_id):
    job_dir = tmp_path / job_id
    spec = JobSpec(job_id=job_id, owner="alice", owner_groups=(), project=None, framework="pytorch",
                   selection=SELECTION, job_dir=str(job_dir), workers=1, procs_per_worker=2)
    write_snapshot(job_dir, nb, parameters, "train.ipynb")
    runner = LocalJobRunner()
    runner.start(job_dir, local_command(spec), env={"KUBEAI_JOB_DIR": str(job_dir), "OMP_NUM_THREADS": "1"})
    return runner, job_dir, runner.wait(job_dir, timeout=180)


def rank_logs(job_dir: Path) -> dict[int, str]:
    logs = {}
    for path in (job_dir / RANK_LOG_DIR).rglob("stdout.log"):
        logs[int(path.parent.name)] = path.read_text()
    return logs


def test_two_ddp_ranks_train_and_succeed(tmp_path):
    runner, job_dir, status = run_job(tmp_path, notebook(TRAIN), {"epochs": 5}, "ddp-ok")
    assert status.state == "Succeeded", status.reason + runner.log(job_dir)
    logs = rank_logs(job_dir)
    assert sorted(logs) == [0, 1]
    assert "rank 0/2 final loss" in logs[0] and "rank 1/2 final loss" in logs[1]
    assert (job_dir / "outputs/model.pt").stat().st_size > 0
    metrics = read_metrics(job_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]  # epochs=5 from the parameters, rank 0 only
    assert json.loads((job_dir / "parameters.json").read_text()) == {"epochs": 5}
    # Rank 0 kept an executed copy: each cell's output on that cell, rank 1's output not in it.
    executed = nbformat.read(job_dir / "executed.ipynb", as_version=4)
    assert [c.execution_count for c in executed.cells] == [1, 2, 3]  # parameters, injected, training
    text = "".join(o.get("text", "") for o in executed.cells[2].outputs)
    assert "rank 0/2 final loss" in text and "rank 1/2" not in text


def test_a_notebook_that_raises_fails_with_its_traceback(tmp_path):
    failing = [TRAIN[0], ("", "import torch.distributed as dist\ndist.init_process_group('gloo')\nraise ValueError('bad batch size')\n")]
    runner, job_dir, status = run_job(tmp_path, notebook(failing), {}, "ddp-fail")
    assert status.state == "Failed"
    everything = runner.log(job_dir) + "".join(p.read_text() for p in (job_dir / RANK_LOG_DIR).rglob("stderr.log"))
    assert "ValueError: bad batch size" in everything
    # The reason quotes the failing rank's own traceback, not torchrun's summary.
    assert status.reason.startswith("Exited with code 1. Rank 0, last lines:")
    assert "ValueError: bad batch size" in status.reason
    # The executed copy shows the error on the cell that raised it.
    executed = nbformat.read(job_dir / "executed.ipynb", as_version=4)
    error = executed.cells[-1].outputs[-1]
    assert (error.output_type, error.ename, error.evalue) == ("error", "ValueError", "bad batch size")
