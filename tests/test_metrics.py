"""log_metric: what a training script reports for the chart."""

import json
import subprocess
import sys

import pytest

import jupyter_kubeai
from jupyter_kubeai.jobs.metrics import read_metrics


def test_log_metric_writes_to_the_job_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEAI_JOB_DIR", str(tmp_path))
    monkeypatch.delenv("RANK", raising=False)
    assert jupyter_kubeai.log_metric(step=1, loss=0.5, accuracy=1)
    assert jupyter_kubeai.log_metric(step=2, loss=0.25)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["rank"], r["values"]) for r in records] == [(1, 0, {"loss": 0.5, "accuracy": 1}), (2, 0, {"loss": 0.25})]


def test_only_rank_0_writes_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEAI_JOB_DIR", str(tmp_path))
    monkeypatch.setenv("RANK", "3")
    assert not jupyter_kubeai.log_metric(step=1, loss=1.0)
    assert jupyter_kubeai.log_metric(step=1, loss=1.0, all_ranks=True)
    [record] = read_metrics(tmp_path / "metrics.jsonl")
    assert record["rank"] == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [({}, "name at least one metric"), ({"step": -1, "loss": 1}, "step must be"), ({"loss": "high"}, "must be a number"),
     ({"loss": float("nan")}, "only finite numbers"), ({"step": True, "loss": 1}, "step must be")],
)
def test_bad_metrics_are_refused(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.setenv("KUBEAI_JOB_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        jupyter_kubeai.log_metric(**kwargs)
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_concurrent_ranks_never_tear_lines_and_torn_tails_are_skipped(tmp_path):
    code = (
        "import os, jupyter_kubeai\n"
        "for i in range(300): jupyter_kubeai.log_metric(step=i, all_ranks=True, loss=i / 7, padding=float(os.getpid()))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env={"KUBEAI_JOB_DIR": str(tmp_path), "RANK": str(rank), "PATH": "/usr/bin:/bin"})
        for rank in range(4)
    ]
    assert all(p.wait(60) == 0 for p in procs)
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"time": 1, "step": 9')  # a writer mid-line
    records = read_metrics(path)
    assert len(records) == 1200
    assert all(json.dumps(r) for r in records)


@pytest.mark.parametrize(
    "env, rank",
    [
        ({}, 0),
        ({"RANK": "1"}, 1),
        ({"OMPI_COMM_WORLD_RANK": "2"}, 2),
        ({"TF_CONFIG": '{"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "chief", "index": 0}}'}, 0),
        ({"TF_CONFIG": '{"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "worker", "index": 0}}'}, 1),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}}'}, 0),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a"], "ps": ["b"]}, "task": {"type": "ps", "index": 0}}'}, 1),
        ({"TF_CONFIG": "not json"}, 0),
    ],
)
def test_only_the_leading_process_counts_as_rank_0(monkeypatch, env, rank):
    from jupyter_kubeai.jobs.metrics import _rank

    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _rank() == rank
