"""Job logs as bounded reads: a tail, offset paging, a follow that reads only what was appended,
and a service whose memory does not grow with a log's size."""

import asyncio
import os
import time
from pathlib import Path

import pytest
from serviceapp import PREFIX, make_service
from test_kube_backend import NS, PYTORCHJOBS, job, make_backend, play_operator, record, until  # noqa: F401 (fixture)
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.backends.base import JobBackend
from jupyter_kubeai.jobs.logfiles import DEFAULT_TAIL_BYTES, MAX_LOG_BYTES, LogText, read_log, whole_chars
from jupyter_kubeai.jobs.status import JobEvent, JobStatus
from jupyter_kubeai.store.jobs import JobRecord

# --- the reader -------------------------------------------------------------------------------------


def write_lines(path: Path, count: int, width: int = 99) -> bytes:
    data = b"".join(f"line {i:08d} ".encode().ljust(width, b"x") + b"\n" for i in range(count))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def test_a_tail_starts_at_a_line_and_says_where(tmp_path):
    data = write_lines(tmp_path / "main.log", 1000)  # 100 000 bytes
    text = read_log(tmp_path, [("main.log",)], tail=1050)
    assert text == data[-1000:].decode() and text.offset == len(data) - 1000 and text.size == len(data)
    assert text.end == len(data)
    assert read_log(tmp_path, [("main.log",)], tail=100) == data[-100:].decode()  # exactly one line
    assert read_log(tmp_path, [("main.log",)], tail=0) == ""


def test_offset_paging_walks_the_whole_log(tmp_path):
    data = write_lines(tmp_path / "main.log", 1000)
    pages, offset = [], 0
    while True:
        page = read_log(tmp_path, [("main.log",)], offset=offset, length=30_000)
        if not page:
            break
        assert page.offset == offset and page.size == len(data)
        pages.append(str(page))
        offset = page.end
    assert "".join(pages).encode() == data and len(pages) == 4
    assert read_log(tmp_path, [("main.log",)], offset=10**9, length=10) == ""


def test_several_files_read_as_one_and_a_missing_one_as_empty(tmp_path):
    (tmp_path / "stderr.log").write_text("err 1\n")
    (tmp_path / "stdout.log").write_text("out 1\nout 2\n")
    files = [("stderr.log",), ("stdout.log",), ("absent.log",)]
    assert read_log(tmp_path, files) == "err 1\nout 1\nout 2\n"
    assert read_log(tmp_path, files, offset=3, length=6) == " 1\nout"
    assert read_log(tmp_path, [("absent.log",)]) == ""


def test_a_character_is_never_split_between_two_reads(tmp_path):
    (tmp_path / "main.log").write_text("añb€c\n")  # ñ: 2 bytes, €: 3 bytes
    first = read_log(tmp_path, [("main.log",)], offset=0, length=2)  # a + half of ñ
    assert first == "a" and first.end == 1
    second = read_log(tmp_path, [("main.log",)], offset=first.end, length=100)
    assert second == "ñb€c\n"
    assert whole_chars("€".encode()[:2], at_end=False) == b""


def test_reads_are_capped(tmp_path):
    path = tmp_path / "main.log"
    with open(path, "wb") as f:
        f.truncate(50 * 1024**2)
    assert len(read_log(tmp_path, [("main.log",)], tail=10**9).encode()) <= MAX_LOG_BYTES
    assert len(read_log(tmp_path, [("main.log",)], offset=0, length=10**9).encode()) <= MAX_LOG_BYTES


def test_a_link_or_fifo_for_a_log_is_refused(tmp_path):
    from jupyter_kubeai import safefiles

    (tmp_path / "secret").write_text("not yours\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/main.log").symlink_to(tmp_path / "secret")
    os.mkfifo(tmp_path / "logs/rank.log")
    for name in ("main.log", "rank.log"):
        with pytest.raises(safefiles.Unsafe):
            read_log(tmp_path, [("logs", name)])


# --- through the service --------------------------------------------------------------------------


class FileLogBackend(JobBackend):
    """Jobs whose one replica's log is a file in the test's folder; a job runs until ``ended``.

    ``reads`` records every (offset, length) asked, to check a follow never reads a byte twice.
    """

    name = "local"
    folder: Path = Path()
    ended: set = set()
    reads: list = []

    def job_dir(self, owner, job_id):
        return str(self.folder / job_id)

    async def submit(self, spec):
        return {}

    async def status(self, record):
        return JobStatus("Succeeded" if record.job_id in self.ended else "Running")

    async def cancel(self, record):
        return True

    async def replicas(self, record):
        return ["main"]

    async def logs(self, record, replica, *, tail=DEFAULT_TAIL_BYTES, offset=None, length=None) -> LogText:
        text = await asyncio.to_thread(read_log, self.folder, [(record.job_id, "main.log")],
                                       tail=tail, offset=offset, length=length)
        self.reads.append((offset, length, text.offset, text.end))
        return text

    async def events(self, record):
        return [JobEvent(record.created, "Normal", "Submitted", "ok")]


@pytest.fixture
async def api(hub, serve, service, tmp_path):
    FileLogBackend.folder = tmp_path / "logs"
    FileLogBackend.ended, FileLogBackend.reads = set(), []
    app = make_service(tmp_path, backend_class=FileLogBackend)
    return app, serve(app.make_app()) + PREFIX


def add_job(app, job_id="train-1", state="Running") -> Path:
    app.job_manager.store.add(JobRecord(
        job_id=job_id, owner="alice", project="vision", framework="single", backend="local", state=state,
        reason="", job_dir=str(FileLogBackend.folder / job_id), spec={}, gpus=0, created=time.time()))
    (FileLogBackend.folder / job_id).mkdir(parents=True, exist_ok=True)
    if state != "Running":
        FileLogBackend.ended.add(job_id)
    return FileLogBackend.folder / job_id / "main.log"


async def get(url, **kwargs):
    return await AsyncHTTPClient().fetch(url, headers={"Authorization": "token alice-token"}, raise_error=False,
                                         request_timeout=60, **kwargs)


async def test_the_route_gives_a_bounded_tail_of_a_big_log(api):
    app, url = api
    data = write_lines(add_job(app, state="Succeeded"), 500_000)  # 50 MB
    response = await get(url + "api/jobs/train-1/logs/main")
    assert response.code == 200
    assert len(response.body) <= DEFAULT_TAIL_BYTES and data.endswith(response.body)
    assert response.body.startswith(b"line ")  # cut at a line start
    assert int(response.headers["X-Log-Size"]) == len(data)
    assert int(response.headers["X-Log-Offset"]) == len(data) - len(response.body)
    response = await get(url + "api/jobs/train-1/logs/main?tail=1000")
    assert response.body == data[-1000:]


async def test_paging_back_with_offset_and_length(api):
    app, url = api
    data = write_lines(add_job(app, state="Succeeded"), 1000)
    response = await get(url + "api/jobs/train-1/logs/main?tail=300")
    offset = int(response.headers["X-Log-Offset"])
    earlier = await get(url + f"api/jobs/train-1/logs/main?offset={offset - 500}&length=500")
    assert earlier.body == data[offset - 500:offset]
    assert earlier.headers["X-Log-Offset"] == str(offset - 500)


@pytest.mark.parametrize("query, message", [
    ("tail=-1", "tail must be"), (f"tail={MAX_LOG_BYTES + 1}", "tail must be"),
    ("offset=0&length=99999999", "length must be"), ("length=10", "length goes with offset"),
    ("offset=x", "offset must be a whole number"), ("offset=" + "9" * 30, "offset must be"),
])
async def test_bad_log_queries_are_400(api, query, message):
    app, url = api
    add_job(app, state="Succeeded").write_text("hi\n")
    response = await get(url + f"api/jobs/train-1/logs/main?{query}")
    assert response.code == 400 and message in response.body.decode()


async def start_follow(url: str, until: bytes) -> tuple[asyncio.Future, list[bytes]]:
    """A followed log (the request under way) and its chunks so far, once ``until`` has come."""
    chunks: list[bytes] = []
    follow = asyncio.ensure_future(get(url, streaming_callback=chunks.append))
    await arrived(chunks, until)
    return follow, chunks


async def arrived(chunks: list[bytes], text: bytes, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in b"".join(chunks):
        assert time.monotonic() < deadline, f"{text!r} never came: {b''.join(chunks)!r}"
        await asyncio.sleep(0.05)


async def test_follow_sends_only_what_is_appended(api):
    app, url = api
    path = add_job(app)
    path.write_text("old 1\nold 2\n")
    follow, chunks = await start_follow(url + "api/jobs/train-1/logs/main?follow=1", b"old 2")
    for i in range(3):
        with open(path, "a") as f:
            f.write(f"new {i}\n")
        await arrived(chunks, f"new {i}".encode())
    FileLogBackend.ended.add("train-1")
    response = await asyncio.wait_for(follow, 10)
    assert response.code == 200 and b"".join(chunks) == b"old 1\nold 2\nnew 0\nnew 1\nnew 2\n"
    # After the first tail, every read starts where the one before ended: nothing is read twice.
    ranged = [(offset, start, end) for offset, _, start, end in FileLogBackend.reads if offset is not None]
    assert ranged and ranged[0][0] == len(b"old 1\nold 2\n")
    assert all(later[0] == earlier[2] for earlier, later in zip(ranged, ranged[1:]))


async def test_a_followed_log_swapped_for_a_fifo_ends_the_stream_cleanly(api, caplog):
    app, url = api
    path = add_job(app)
    path.write_text("before\n")
    follow, chunks = await start_follow(url + "api/jobs/train-1/logs/main?follow=1", b"before")
    path.unlink()
    os.mkfifo(path)  # the job's code swaps its log for a FIFO: the follow ends, nothing waits on it
    response = await asyncio.wait_for(follow, 10)
    assert response.code == 200 and b"".join(chunks) == b"before\n"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no traceback: an ended stream, said why


async def test_follow_from_an_offset(api):
    app, url = api
    path = add_job(app, state="Succeeded")
    path.write_text("one\ntwo\nthree\n")
    response = await get(url + "api/jobs/train-1/logs/main?follow=1&offset=4")
    assert response.body == b"two\nthree\n" and response.headers["X-Log-Offset"] == "4"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_the_services_memory_does_not_grow_with_the_log(api):
    app, url = api
    path = add_job(app, state="Succeeded")
    with open(path, "wb") as f:  # 400 MB of log (sparse: cheap to make, as costly as any to read whole)
        f.truncate(400 * 1024**2)
        f.write(b"the end\n")
    await get(url + "api/jobs/train-1/logs/main")  # warm up
    before = rss()
    for query in ("", "?tail=4194304", "?offset=0&length=4194304", "?follow=1"):
        response = await get(url + "api/jobs/train-1/logs/main" + query)
        assert response.code == 200 and len(response.body) <= MAX_LOG_BYTES
    assert rss() - before < 64 * 1024**2


# --- the local backend -------------------------------------------------------------------------------


async def test_the_local_backend_reads_logs_without_following_links(tmp_path):
    from jupyter_kubeai import safefiles
    from jupyter_kubeai.backends.local import LocalBackend

    share = tmp_path / "share"
    backend = LocalBackend(share_root=str(share), local_gpus=0)
    job_dir = Path(backend.job_dir("alice", "train-1"))
    write_lines(job_dir / "logs/main.log", 10)
    rank = job_dir / "logs/ranks/attempt_0/1/stdout.log"
    write_lines(rank, 5)
    record = JobRecord(job_id="train-1", owner="alice", project=None, framework="pytorch", backend="local",
                       state="Succeeded", reason="", job_dir=str(job_dir), spec={}, gpus=0, created=time.time())
    assert (await backend.logs(record, "main", tail=100)).startswith("line 00000009")
    assert await backend.replicas(record) == ["main", "rank-1"]
    assert (await backend.logs(record, "rank-1", offset=0, length=10)) == "line 00000"
    (share / "users/bob").mkdir(parents=True)
    write_lines(share / "users/bob/main.log", 3)
    (job_dir / "logs").rename(job_dir / "logs-moved")
    (job_dir / "logs").symlink_to(share / "users/bob")  # alice's logs folder now a link into bob's home
    with pytest.raises(safefiles.Unsafe):
        await backend.logs(record, "main")
    assert await backend.replicas(record) == ["main"]


# --- the Kubernetes backend: a pod's log through the API, then the file in the job folder ------------


async def test_a_pods_log_is_read_in_bounded_parts_and_followed_from_an_offset(kube, make_backend):  # noqa: F811
    backend = await make_backend()
    spec = job("pytorch")
    rec = record(spec, await backend.submit(spec))
    play_operator(kube, kube.get(PYTORCHJOBS, NS, spec.job_id))
    await until(backend, rec, "Running")
    pod = f"{spec.job_id}-master-0"
    text = "".join(f"line {i:04d}\n" for i in range(1000))  # 10 bytes a line
    kube.write_log(NS, pod, text)
    tail = await backend.logs(rec, "master-0", tail=105)
    assert tail == text[-100:] and (tail.offset, tail.size) == (len(text) - 100, len(text))
    part = await backend.logs(rec, "master-0", offset=20, length=25)
    assert part == text[20:45] and part.offset == 20
    seen = []

    async def follow():
        async for chunk in backend.follow_logs(rec, "master-0", offset=len(text) - 10):
            seen.append(chunk)

    task = asyncio.create_task(follow())
    await kube.wait_for(lambda: "".join(seen) == "line 0999\n")
    kube.write_log(NS, pod, "the end\n")
    await kube.wait_for(lambda: "".join(seen) == "line 0999\nthe end\n")
    kube.kubelet.terminate(NS, pod)
    await asyncio.wait_for(task, 5)


async def test_once_the_pod_is_gone_the_log_file_is_read_in_parts_and_never_through_a_link(kube, make_backend,  # noqa: F811
                                                                                            tmp_path):
    from jupyter_kubeai import safefiles

    share = tmp_path / "share"
    backend = await make_backend(share_root=str(share))
    spec = job("pytorch", job_id="gone-1", job_dir=backend.job_dir("alice", "gone-1"))
    done = record(spec, {"kind": "PyTorchJob", "name": "gone-1", "logs": spec.job_dir + "/logs"}, state="Succeeded")
    logs = share / "users/alice/.kubeai/jobs/gone-1/logs"
    data = write_lines(logs / "master-0.log", 50_000)  # 5 MB
    tail = await backend.logs(done, "master-0")
    assert len(tail.encode()) <= DEFAULT_TAIL_BYTES and data.endswith(tail.encode()) and tail.size == len(data)
    assert await backend.logs(done, "master-0", offset=0, length=99) == data[:99].decode()
    (share / "users/bob").mkdir(parents=True)
    (share / "users/bob/secret.log").write_text("bob's\n")
    (logs / "worker-0.log").symlink_to(share / "users/bob/secret.log")
    assert await backend.replicas(done) == ["master-0"]
    with pytest.raises(safefiles.Unsafe):
        await backend.logs(done, "worker-0")
