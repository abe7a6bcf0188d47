"""A flood of malformed payloads at a real model server process (loopback, bounded).

Hundreds of requests that are broken in every way the parser must survive:
deep nesting, integers beyond 64 bits and beyond Python's 4,300-digit limit,
NaN, bytes that are not UTF-8, truncated JSON, wrong shapes, and bodies over
``max_body_size``. The process must stay up, answer each with 400 (413 for
the oversized) in the one JSON error shape, keep answering good requests,
and not grow: its resident memory (``/proc/<pid>/status``) after the flood
stays within 50 MB of what it was after a warm-up round of the same payloads.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest
import requests

from processes import free_port, start, stop, wait_for_http

MAX_BODY = 8 * 1024 * 1024
PREDICTOR = """
class Predictor:
    def __init__(self, model_dir, config):
        pass

    def predict(self, payload):
        return [sum(row) for row in payload]
"""

# (label, body, status, words in the message)
PAYLOADS = [
    ("deep", b'{"instances": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", 400, "deeper than 64"),
    ("deep-objects", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, 400, "deeper than 64"),
    ("deep-in-v2", json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": []}]}).encode()[:-3]
     + b"[" * 3_000 + b"]" * 3_000 + b"}]}", 400, "deeper than 64"),
    ("huge-ints", b'{"instances": [[' + b", ".join([b"9" * 30] * 100_000) + b"]]}", 400, "does not fit in 64 bits"),
    ("over-4300-digits", b'{"instances": [[' + b"7" * 100_000 + b"]]}", 400, "does not fit in 64 bits"),
    ("nan", b'{"instances": [[1, NaN]]}', 400, "NaN is not a JSON number"),
    ("overflowing-float", b'{"instances": [[1e400]]}', 400, "too large for a 64-bit float"),
    ("not-utf8", b'{"instances": [["\xff\xfe"]]}', 400, "not UTF-8"),
    ("truncated", b'{"instances": [[1, 2', 400, "not valid JSON"),
    ("garbage", bytes(range(256)) * 64, 400, ""),
    ("wrong-shape", b'{"instances": 7}', 400, ""),
    ("empty", b"", 400, "empty"),
]
PATHS = ["/v1/models/m:predict", "/v2/models/m/infer", "/v1/models/m:predict?slow=path"]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def too_large(port: int) -> tuple[bytes, bytes]:
    """A request whose Content-Length is over the limit, headers only: (status line, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


@pytest.fixture
def server(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "predictor.py").write_text(PREDICTOR)
    port = free_port()
    proc = start([sys.executable, "-m", "jupyter_kubeai.serving", "--model-dir", str(tmp_path / "model"), "--name", "m",
                  "--port", str(port), f"--ServingApp.max_body_size={MAX_BODY}"], log=tmp_path / "serving.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60, proc=proc)
        yield proc, port
    finally:
        stop(proc)


def send_round(session: requests.Session, url: str, port: int) -> int:
    sent = 0
    for path in PATHS:
        for label, body, status, words in PAYLOADS:
            r = session.post(url + path, data=body, headers={"Content-Type": "application/json"}, timeout=60)
            assert r.status_code == status, (label, path, r.status_code, r.text[:300])
            answer = r.json()
            assert set(answer) >= {"message", "reason", "error"}, (label, answer)
            assert words in answer["message"], (label, path, answer)
            sent += 1
    line, body = too_large(port)
    assert line.startswith(b"HTTP/1.1 413"), line
    assert json.loads(body)["reason"] == "too_large"
    return sent + 1


def test_a_flood_of_malformed_payloads_leaves_it_up_answering_and_bounded(server):
    proc, port = server
    url = f"http://127.0.0.1:{port}"
    with requests.Session() as session:
        send_round(session, url, port)  # warm-up: imports, buffers, the allocator's arenas
        before = rss_bytes(proc.pid)
        sent = sum(send_round(session, url, port) for _ in range(9))
        after = rss_bytes(proc.pid)
        assert sent >= 300
        assert proc.poll() is None, "the model server died"
        assert after - before < 50 * 1024 * 1024, f"RSS grew from {before >> 20} MB to {after >> 20} MB"
        r = session.post(url + "/v1/models/m:predict", json={"instances": [[1, 2], [3, 4]]}, timeout=30)
        assert (r.status_code, r.json()) == (200, {"predictions": [3, 7]})
        metrics = session.get(url + "/metrics", timeout=30).text
    assert 'status="400"' in metrics  # counted as the client's errors, not the server's
    assert 'status="500"' not in metrics
