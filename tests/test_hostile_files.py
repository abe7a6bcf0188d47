"""Files a user's job left to hurt the service: FIFOs, devices, links at any component, huge sparse files,
NaN in metrics, NUL bytes in paths. The service keeps answering, and every answer is strict JSON."""

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from serviceapp import PREFIX, call, make_service
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

from jupyter_kubeai import safefiles
from jupyter_kubeai.jobs.folder import INTERNAL_NAMES, list_files, metric_points, model_file
from jupyter_kubeai.jobs.metrics import read_metrics
from jupyter_kubeai.store.jobs import JobRecord

#: Any answer here must come well within this (a blocked event loop never answers).
QUICK = 10


def strict_json(body: bytes):
    """JSON as a browser reads it: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(body, parse_constant=refuse)


def sparse(path: Path, end: bytes, size: int = 10 * 1024**3) -> None:
    """A huge file that costs no disk: ``size`` bytes of holes, then ``end``."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(0, os.SEEK_END)
        f.write(end)


# --- the safe reader ----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    (home / "job/out").mkdir(parents=True)
    (home / "job/out/model.txt").write_text("weights")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/secret.txt").write_text("someone else's")
    return home


def test_a_regular_file_is_read(home):
    assert safefiles.read_bytes(home, "job/out/model.txt") == b"weights"
    assert safefiles.read_range(home, "job/out/model.txt", 2, 3) == (b"igh", 7)


def test_a_link_at_any_component_is_refused(home, tmp_path):
    (home / "job/linked").symlink_to(tmp_path / "other")  # a folder on the way
    (home / "job/leak.txt").symlink_to(tmp_path / "other/secret.txt")  # the file itself
    for name in ("job/linked/secret.txt", "job/leak.txt"):
        with pytest.raises(safefiles.Unsafe, match="symbolic link"):
            safefiles.read_bytes(home, name)
    assert not safefiles.is_dir(home, "job/linked")
    assert [name for name, _ in safefiles.walk_files(home, "job")] == ["out/model.txt"]


def test_a_fifo_is_refused_at_once(home):
    os.mkfifo(home / "job/fifo")  # no writer: a plain open() would wait forever
    started = time.monotonic()
    with pytest.raises(safefiles.Unsafe, match="not a regular file"):
        safefiles.read_bytes(home, "job/fifo")
    assert time.monotonic() - started < 2
    assert "fifo" not in [name for name, _ in safefiles.walk_files(home, "job")]


def test_a_device_behind_a_link_is_refused(home):
    (home / "job/zero").symlink_to("/dev/zero")  # endless: a read would fill the memory
    with pytest.raises(safefiles.Unsafe):
        safefiles.read_bytes(home, "job/zero")
    with pytest.raises(safefiles.Unsafe, match="not a regular file"):
        safefiles.read_bytes("/dev", "zero")  # even from a trusted root: only regular files


def test_a_huge_sparse_file_is_never_read_whole(home):
    sparse(home / "job/huge.log", b"\nthe last line\n")
    with pytest.raises(safefiles.Unsafe, match="over the"):
        safefiles.read_bytes(home, "job/huge.log", limit=1024)
    assert safefiles.read_bytes(home, "job/huge.log", limit=1024, tail=True).endswith(b"\nthe last line\n")
    data, start, size = safefiles.read_tail(home, "job/huge.log", 1024)
    assert data == b"the last line\n" and start == size - len(data)


@pytest.mark.parametrize("name", ["a\0b", "../x", "/etc/passwd", "a/../../b"])
def test_bad_names_are_refused(home, name):
    with pytest.raises(safefiles.Unsafe):
        safefiles.read_bytes(home, name)


def test_metrics_drop_nan_and_infinity(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"time": 1, "step": 0, "values": {"loss": NaN, "acc": 0.5}}\n'
        '{"time": 2, "step": 1, "values": {"loss": Infinity, "acc": -Infinity, "ok": 1}}\n'
        '{"time": NaN, "step": 2, "values": {"loss": 0.25, "flag": true, "name": "x"}}\n'
    )
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["values"] for r in records] == [{"acc": 0.5}, {"ok": 1}, {"loss": 0.25}]
    assert records[2]["time"] is None
    strict_json(json.dumps(metric_points(tmp_path)).encode())


def test_a_huge_sparse_metrics_file_gives_its_last_records_quickly(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sparse(path, b'\n{"time": 5, "step": 9, "values": {"loss": 0.1}}\n')
    started = time.monotonic()
    assert [(r["step"], r["values"]) for r in read_metrics(path)] == [(9, {"loss": 0.1})]
    assert time.monotonic() - started < QUICK


def test_internal_files_are_not_outputs_and_the_model_file_is_found(tmp_path):
    folder = tmp_path / "job"
    for name in ("state.json", "supervisor.pid", "supervisor.log", "gpus.json", "job.json", "parameters.json",
                 "main.py", "cancel-requested", "logs/main.log", "logs/ranks/0/stderr.log", ".cancel",
                 "notebook.ipynb", "executed.ipynb", "metrics.jsonl", "outputs/model.joblib", "outputs/notes.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    names = [f["name"] for f in list_files(folder)]
    assert names == ["executed.ipynb", "metrics.jsonl", "notebook.ipynb", "outputs/model.joblib", "outputs/notes.txt"]
    assert {"state.json", "logs", "supervisor.pid"} <= INTERNAL_NAMES
    assert model_file(list_files(folder)) == "outputs/model.joblib"


@pytest.mark.parametrize("names, expected", [
    (["out/model.joblib", "out/notes.txt"], "out/model.joblib"),
    (["model.pt"], "model.pt"),
    (["ckpt/a.pt", "ckpt/b.pt", "final/model.pt"], "final/model.pt"),
    (["ckpt/a.pt", "ckpt/b.pt"], None),
    (["export/model.json", "export/model.joblib", "other.pkl"], "export"),
    (["serve/predictor.py", "serve/weights.bin", "a.pt"], "serve"),
    (["model.json", "model.joblib"], None),  # the job folder itself is the model: no one file to name
    (["a/model.json", "b/model.json"], None),
    (["notes.txt"], None),
])
def test_the_model_file_to_register_by_default(names, expected):
    assert model_file([{"name": n} for n in names]) == expected


# --- through the hub service --------------------------------------------------------------------


@pytest.fixture
async def api(hub, serve, service, tmp_path):
    share = tmp_path / "share"
    for user in ("alice", "bob"):
        (share / "users" / user).mkdir(parents=True)
    (share / "users/bob/secret.jsonl").write_text('{"time": 0, "step": 0, "values": {"bobs": 7}}\n')
    config = Config({"LocalBackend": {"share_root": str(share)}})
    app = make_service(tmp_path, config=config, share_root=str(share))
    return app, serve(app.make_app()) + PREFIX, share


def add_job(app, share, job_id="train-1", owner="alice", project="vision") -> Path:
    folder = share / "users" / owner / ".kubeai/jobs" / job_id
    (folder / "outputs").mkdir(parents=True)
    app.job_manager.store.add(JobRecord(
        job_id=job_id, owner=owner, project=project, framework="single", backend="local", state="Succeeded",
        reason="", job_dir=str(folder), spec={"notebook": "train.ipynb"}, gpus=0, created=time.time()))
    return folder


async def fetch(url, token="alice-token"):
    return await asyncio.wait_for(AsyncHTTPClient().fetch(
        url, headers={"Authorization": f"token {token}"}, raise_error=False, request_timeout=QUICK), QUICK + 5)


async def test_a_fifo_for_metrics_neither_blocks_the_service_nor_hangs_the_route(api):
    app, url, share = api
    folder = add_job(app, share)
    os.mkfifo(folder / "metrics.jsonl")
    os.mkfifo(folder / "outputs/model.joblib")
    started = time.monotonic()
    metrics, health, files, download = await asyncio.gather(
        fetch(url + "api/jobs/train-1/metrics"), fetch(url + "api/health"),
        fetch(url + "api/jobs/train-1/files"), fetch(url + "api/jobs/train-1/files/outputs/model.joblib"))
    assert time.monotonic() - started < QUICK
    assert metrics.code == 400 and "not a regular file" in json.loads(metrics.body)["message"]
    assert health.code == 200
    assert files.code == 200 and json.loads(files.body)["files"] == []
    assert download.code == 404


async def test_links_and_devices_in_a_job_folder_are_never_followed(api):
    app, url, share = api
    folder = add_job(app, share)
    (folder / "metrics.jsonl").symlink_to(share / "users/bob/secret.jsonl")
    (folder / "outputs/zero").symlink_to("/dev/zero")
    (folder / "outputs/bob").symlink_to(share / "users/bob")  # a link in the middle of a path
    response = await fetch(url + "api/jobs/train-1/metrics")
    assert response.code == 400 and b"bobs" not in response.body
    response = await fetch(url + "api/jobs/train-1/files")
    assert response.code == 200 and json.loads(response.body)["files"] == []
    for path in ("outputs/zero", "outputs/bob/secret.jsonl"):
        response = await fetch(url + f"api/jobs/train-1/files/{path}")
        assert response.code == 404 and b"bobs" not in response.body, path


async def test_a_huge_sparse_output_is_streamed_not_loaded(api):
    app, url, share = api
    folder = add_job(app, share)
    sparse(folder / "metrics.jsonl", b'\n{"time": 1, "step": 3, "values": {"loss": 0.5}}\n')
    response = await fetch(url + "api/jobs/train-1/metrics")
    assert response.code == 200 and json.loads(response.body)["metrics"] == [{"loss": 0.5, "step": 3, "time": 1}]


async def test_the_files_route_hides_internals_and_names_the_model_file(api):
    app, url, share = api
    folder = add_job(app, share)
    for name in ("state.json", "supervisor.pid", "logs/ranks/0/stdout.log", "outputs/model.joblib"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    answer = strict_json((await fetch(url + "api/jobs/train-1/files")).body)
    assert [f["name"] for f in answer["files"]] == ["outputs/model.joblib"]
    assert answer["model_file"] == "outputs/model.joblib"
    assert (await fetch(url + "api/jobs/train-1/files/state.json")).code == 400


@pytest.mark.parametrize("path", ["outputs/a%00b", "%00", "outputs%00/../state.json"])
async def test_a_nul_byte_in_a_file_path_is_a_400(api, path):
    app, url, share = api
    add_job(app, share)
    response = await fetch(url + f"api/jobs/train-1/files/{path}")
    assert response.code == 400 and "NUL" in json.loads(response.body)["message"]


async def test_nan_metrics_never_make_an_answer_invalid_json(api):
    app, url, share = api
    folder = add_job(app, share)
    (folder / "outputs/predictor.py").write_text("class Predictor:\n    pass\n")
    (folder / "metrics.jsonl").write_text('{"time": 1, "step": 0, "values": {"loss": NaN, "acc": 0.5}}\n'
                                         '{"time": 2, "step": 1, "values": {"loss": Infinity, "f1": -Infinity}}\n')
    response = await fetch(url + "api/jobs/train-1/metrics")
    assert strict_json(response.body) == {"metrics": [{"acc": 0.5, "step": 0, "time": 1}, {"step": 1, "time": 2}]}
    code, answer = await call(url + "api/models", "alice-token", method="POST", body=json.dumps(
        {"name": "clf", "project": "vision", "job_id": "train-1", "path": "outputs"}))
    assert code == 201, answer
    response = await fetch(url + f"api/models/{answer['model']['id']}")
    assert response.code == 200
    model = strict_json(response.body)
    assert [v["metrics"] for v in model["versions"]] == [{"acc": 0.5}]
    strict_json((await fetch(url + "api/models")).body)


async def test_registering_from_a_job_never_reads_metrics_through_a_link(api):
    """The lineage's metrics come from the owner's own folder, never from where a link points (bob's home)."""
    app, url, share = api
    folder = add_job(app, share)
    (folder / "outputs/predictor.py").write_text("class Predictor:\n    pass\n")
    (folder / "metrics.jsonl").symlink_to(share / "users/bob/secret.jsonl")
    code, answer = await call(url + "api/models", "alice-token", method="POST", body=json.dumps(
        {"name": "clf", "project": "vision", "job_id": "train-1", "path": "outputs"}))
    assert code == 201, answer
    assert answer["version"]["metrics"] == {} and "bobs" not in json.dumps(answer)
    # A FIFO there: registered at once, without its metrics, the service never waiting on it.
    (folder / "metrics.jsonl").unlink()
    os.mkfifo(folder / "metrics.jsonl")
    code, answer = await asyncio.wait_for(call(url + "api/models", "alice-token", method="POST", body=json.dumps(
        {"name": "clf", "project": "vision", "job_id": "train-1", "path": "outputs"})), QUICK)
    assert code == 201 and answer["version"]["metrics"] == {}


async def test_a_replicas_exit_file_that_is_a_fifo_or_link_is_no_evidence(tmp_path):
    """On Kubernetes the service reads logs/<replica>.exit from the share (a job that ended while it was away)."""
    from jupyter_kubeai.backends.kubernetes import _exit_statuses

    (tmp_path / "secret").write_text("1\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/master-0.exit").write_text("0\n")
    os.mkfifo(tmp_path / "logs/worker-0.exit")
    (tmp_path / "logs/worker-1.exit").symlink_to(tmp_path / "secret")
    found = await asyncio.wait_for(asyncio.to_thread(_exit_statuses, tmp_path / "logs"), QUICK)
    assert {name: code for name, (code, _) in found.items()} == {"master-0": 0}


def test_a_folder_nested_thousands_deep_is_listed_to_a_depth(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "top.txt").write_text("x")
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(100):  # (thousands deep would exhaust a recursive walk, and pytest's own cleanup too)
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    assert [f["name"] for f in list_files(folder)] == ["top.txt"]
