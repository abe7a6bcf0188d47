"""The predictor runtime under load, against KServe's own Python model server.

Two models: a scikit-learn LogisticRegression on 20 features (joblib) and a
small TorchScript MLP (20 -> 64 -> 64 -> 2). Each is served by

- this runtime, batching on (``python -m jupyter_kubeai.serving``, defaults:
  up to 16 per batch, 5 ms);
- this runtime, batching off (``--no-batching``);
- KServe's Python model server (``kserve.ModelServer``, uvicorn/FastAPI) with
  a ``kserve.Model`` that loads the same file and predicts as KServe's own
  sklearn server does; KServe is pip-installed by this script into its own
  environment, ``.bench-venvs/kserve`` (never into the project's .venv).
  Its per-request latency log is turned off (our runtime logs only failures).

Load: a closed-loop generator in a second process (raw HTTP/1.1 keep-alive
over asyncio, ``loadgen`` below) at concurrency 1, 8 and 32, posting
KServe v1 ``{"instances": [[20 numbers]]}`` requests drawn from 256
distinct instances, and checking every answer against the model's own
in-process prediction (a wrong or failed answer counts as an error). Its
own ceiling is measured against a server that answers without any work.
Servers are pinned to CPU 0 and the generator to CPU 1 when ``taskset``
exists (the machine has 2 cores), every server the same way.

The floor: the same predictor class called in-process on one instance, from
the JSON-decoded list to the predictions as a list (list -> array ->
predict -> outputs.tolist()), p50 over 2,000 calls: what a request needs
with no server at all. It is measured in its own process pinned to the
servers' CPU, just before each model's runs, so it sees the same machine.
JSON decoding and encoding are left out of the floor (they are work the
server does, so they count against its margin); the report also shows the
floor with them, for reference.

The version switch: the hub service itself (``python -m
jupyter_kubeai.service``, local mode, against a fake hub API in this
process) with its real ``LocalServing`` backend; version 1 and 2 of the
scikit-learn model (2 has the labels flipped, so every answer tells which
version gave it) are registered and version 1 deployed through its REST
API. The generator (switch mode) then keeps 32 requests in flight on the
service's stable URL ``/services/kubeai/serve/<service>/v1/models/...``
while the service is updated to version 2 (``PATCH api/services/<name>``)
and rolled back (``POST .../rollback``), ``--duration`` s in each state.
Every request counts: an error status, a wrong answer, a connection lost
or a request unanswered 10 s after the end is a failure. Printed per phase:
requests, failures, and the share answered by each version.

Targets (issue 5): at concurrency 32 with batching >= 3x KServe's req/s
with p99 no worse; at concurrency 1 p50 within 0.3 ms of the floor; runtime
RSS with the scikit-learn model < 200 MB; zero failed requests during a
version switch under that load. Verdicts and the exit status: bench/targets.py
(a target not measured, e.g. KServe could not be installed, fails the run
unless ``--allow-missing-baseline``).

    .venv/bin/python bench/bench_serving.py [--duration 4] [--no-kserve] [--no-switch]
        [--concurrency 1,8,32] [--models sklearn,torch] [--compare DIR] [--allow-missing-baseline]

``--concurrency 1 --no-kserve --no-switch --allow-missing-baseline`` checks
the c=1 target alone in a few seconds; ``--compare DIR`` adds a row for the runtime as found in ``DIR``
(a checkout of another revision: ``git worktree add DIR REV``), run the same
way in the same run, for before/after figures on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import Targets, add_argument  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
KSERVE_VENV = REPO / ".bench-venvs" / "kserve"
CONCURRENCY = (1, 8, 32)
SWITCH_CONCURRENCY = 32
N_BODIES = 256
FEATURES = 20


# --------------------------------------------------------------------------
# Load generator (runs as its own process: ``bench_serving.py loadgen ...``)
# --------------------------------------------------------------------------

class _Conn(asyncio.Protocol):
    def __init__(self, gen, idx: int):
        self.gen = gen
        self.next = idx
        self.buf = b""
        self.need = None
        self.head_end = 0

    def connection_made(self, transport):
        self.transport = transport
        self._send()

    def _send(self):
        if self.gen.stopped:
            self.transport.close()
            return
        if self.gen.draining:  # switch mode, stopping: no new requests, the connection stays open
            return
        self.idx = self.next % len(self.gen.requests)
        self.next += 7
        self.t0 = time.perf_counter()
        self.gen.inflight.add(self)
        self.transport.write(self.gen.requests[self.idx])

    def data_received(self, data):
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].lower()
                at = head.find(b"content-length:")
                if at < 0:
                    self.gen.fail("response without content-length")
                    self.transport.close()
                    return
                length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
                self.head_end = end + 4
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            response, self.buf = self.buf[:self.need], self.buf[self.need:]
            self.need = None
            self.gen.inflight.discard(self)
            self.gen.done(self.idx, time.perf_counter() - self.t0, response, self.head_end)
            self._send()

    def connection_lost(self, exc):
        if self.gen.stopped:
            return
        if self in self.gen.inflight:  # a request without an answer
            self.gen.inflight.discard(self)
            self.gen.fail(f"connection lost with a request in flight: {exc}")
        else:
            self.gen.fail(f"connection closed by the server: {exc}")
        if not self.gen.draining:  # keep the concurrency: open another connection
            self.gen.reconnect(self.next)


class LoadGen:
    """Closed loop: every connection sends its next request when the answer to the last one is in.

    ``expected`` holds the right answer to each request; with ``versions``
    (``{version: expected}``, switch mode) an answer is right when it is one
    version's, and the answers are counted per version and per phase.
    """

    def __init__(self, requests: list[bytes], expected: list | None, tolerance: float | None,
                 versions: dict[str, list] | None = None):
        self.requests = requests
        self.expected = expected
        self.tolerance = tolerance
        self.versions = versions
        self.recording = False
        self.stopped = False
        self.draining = False
        self.inflight: set[_Conn] = set()
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = None
        self.phases: list[dict] = []
        self.host, self.port = "127.0.0.1", 0

    def fail(self, why: str):
        if self.recording:
            self.errors += 1
            if self.phases:
                self.phases[-1]["failures"] += 1
        self.first_error = self.first_error or why

    def reconnect(self, idx: int) -> None:
        loop = asyncio.get_running_loop()
        loop.create_task(loop.create_connection(lambda: _Conn(self, idx), self.host, self.port))

    def mark(self, label: str) -> None:
        """Switch mode: start a new phase."""
        self.phases.append({"label": label, "requests": 0, "failures": 0,
                            "by_version": {v: 0 for v in self.versions or {}}, "last_version": None})

    @staticmethod
    def _matches(got, want, tolerance) -> bool:
        if len(got) != len(want):
            return False
        if tolerance is None:
            return got == want
        return all(abs(a - b) <= tolerance * (1 + abs(b)) for ga, wa in zip(got, want) for a, b in zip(ga, wa))

    def _which(self, idx: int, body: bytes) -> str | None:
        """The version whose answer this is ("" when any answer will do), or None for a wrong answer."""
        if self.expected is None and self.versions is None:
            return ""
        try:
            got = json.loads(body)["predictions"]
        except (ValueError, KeyError, TypeError):
            return None
        if self.versions is None:
            return "" if self._matches(got, self.expected[idx], self.tolerance) else None
        return next((v for v, expected in self.versions.items() if self._matches(got, expected[idx], self.tolerance)), None)

    def done(self, idx: int, seconds: float, response: bytes, head_end: int):
        version = self._which(idx, response[head_end:]) if response[9:12] == b"200" else None
        if version is None:
            self.fail(f"bad answer: {response[:300]!r}")
            return
        if self.recording:
            self.latencies.append(seconds)
            if self.phases:
                phase = self.phases[-1]
                phase["requests"] += 1
                phase["by_version"][version] += 1
                phase["last_version"] = version

    def _percentiles(self) -> dict:
        lat = sorted(self.latencies)

        def pct(p):
            return 1000 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

        return {"p50_ms": pct(50), "p99_ms": pct(99), "max_ms": 1000 * lat[-1] if lat else float("nan")}

    async def run_switch(self, host: str, port: int, concurrency: int, drain_timeout: float = 10.0) -> dict:
        """Switch mode: load from the start, a new phase for every ``mark <label>`` line on stdin, until ``stop``.

        Every request counts, from the first: one that gets no answer within
        ``drain_timeout`` s of ``stop`` is a failure too.
        """
        loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.recording = True
        self.mark("start")
        for i in range(concurrency):
            await loop.create_connection(lambda i=i: _Conn(self, i * 37), host, port)
        print(json.dumps({"event": "started"}), flush=True)
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command.startswith("mark "):
                self.mark(command[5:])
            elif not command or command == "stop":
                break
        self.draining = True
        deadline = loop.time() + drain_timeout
        while self.inflight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for _ in list(self.inflight):
            self.fail(f"no answer within {drain_timeout:.0f} s")
        self.recording = False
        self.stopped = True
        for conn in list(self.inflight):
            conn.transport.close()
        return {"phases": self.phases, "requests": sum(p["requests"] for p in self.phases), "errors": self.errors,
                "first_error": self.first_error, **self._percentiles()}

    async def run(self, host: str, port: int, concurrency: int, warmup: float, duration: float) -> dict:
        loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        for i in range(concurrency):
            await loop.create_connection(lambda i=i: _Conn(self, i * 37), host, port)
        await asyncio.sleep(warmup)
        self.recording = True
        t0 = time.perf_counter()
        await asyncio.sleep(duration)
        self.recording = False
        elapsed = time.perf_counter() - t0
        self.stopped = True
        await asyncio.sleep(0.05)
        lat = sorted(self.latencies)

        def pct(p):
            return 1000 * lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

        return {"requests": len(lat), "errors": self.errors, "rps": len(lat) / elapsed, "p50_ms": pct(50),
                "p99_ms": pct(99), "first_error": self.first_error}


def http_request(path: str, body: bytes, headers: dict | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def loadgen_main(args) -> None:
    spec = json.loads(Path(args.spec).read_text())
    requests = [http_request(spec["path"], body.encode(), spec.get("headers")) for body in spec["bodies"]]
    gen = LoadGen(requests, spec.get("expected"), spec.get("tolerance"), spec.get("versions"))
    if args.switch:
        result = asyncio.run(gen.run_switch("127.0.0.1", args.port, args.concurrency))
    else:
        result = asyncio.run(gen.run("127.0.0.1", args.port, args.concurrency, args.warmup, args.duration))
    print(json.dumps(result))


# --------------------------------------------------------------------------
# A server that answers without work: the load generator's own ceiling.
# --------------------------------------------------------------------------

class _NullServer(asyncio.Protocol):
    RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{"predictions":[]}'

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(self.RESPONSE)


def null_server_main(args) -> None:
    async def serve():
        server = await asyncio.get_running_loop().create_server(_NullServer, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# --------------------------------------------------------------------------
# KServe: its own environment and a kserve.Model for each of our models.
# --------------------------------------------------------------------------

KSERVE_SERVER = '''
import argparse, sys
import kserve

class SklearnModel(kserve.Model):
    """As KServe's sklearnserver.SKLearnModel: joblib.load, predict on the instances."""
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
    def load(self):
        import joblib
        self._model = joblib.load(self.path)
        self.ready = True
        return True
    def predict(self, payload, headers=None):
        from kserve.utils.utils import get_predict_input, get_predict_response
        instances = get_predict_input(payload)
        return get_predict_response(payload, self._model.predict(instances), self.name)

class TorchModel(kserve.Model):
    """A TorchScript module on float32 tensors (KServe has no TorchScript runtime in Python)."""
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
    def load(self):
        import torch
        self.torch = torch
        self._model = torch.jit.load(self.path).eval()
        self.ready = True
        return True
    def predict(self, payload, headers=None):
        torch = self.torch
        with torch.inference_mode():
            x = torch.tensor(payload["instances"], dtype=torch.float32)
            return {"predictions": self._model(x).tolist()}

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kind"); p.add_argument("--path"); p.add_argument("--name"); p.add_argument("--port", type=int)
    a = p.parse_args()
    model = (SklearnModel if a.kind == "sklearn" else TorchModel)(a.name, a.path)
    model.load()
    kserve.ModelServer(http_port=a.port, enable_grpc=False, enable_latency_logging=False).start([model])
'''


def ensure_kserve(versions: dict) -> tuple[Path | None, str]:
    """The kserve environment's python, installing it on first use; (None, why) when it cannot be had."""
    python = KSERVE_VENV / "bin" / "python"
    wanted = ["kserve", f"scikit-learn=={versions['sklearn']}", "joblib", f"torch=={versions['torch']}", "numpy"]
    if python.exists() and subprocess.call([str(python), "-c", "import kserve, sklearn, torch, joblib"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
        return python, ""
    print(f"Installing KServe into {KSERVE_VENV} (once; ~2 minutes) ...", flush=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-U", "pip"], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"KServe could not be installed ({e}); its rows are left out.", flush=True)
        return None, f"KServe could not be installed into {KSERVE_VENV}: {e}"
    return python, ""


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------

def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else []


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


class Server:
    def __init__(self, label: str, cmd: list[str], port: int, ready_path: str, log: Path, env=None):
        self.label, self.port = label, port
        self.proc = subprocess.Popen(pin(0) + cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, **(env or {})})
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"

    def wait(self):
        wait_ready(self.proc, self.ready_url)
        return self

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_load(spec_file: Path, port: int, concurrency: int, warmup: float, duration: float) -> dict:
    out = subprocess.run(
        pin(1) + [sys.executable, __file__, "loadgen", "--spec", str(spec_file), "--port", str(port),
                  "--concurrency", str(concurrency), "--warmup", str(warmup), "--duration", str(duration)],
        capture_output=True, text=True, timeout=warmup + duration + 60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_models(work: Path):
    import joblib
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, FEATURES))
    y = (X @ rng.normal(size=FEATURES) > 0).astype(int)
    (work / "sklearn").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), work / "sklearn" / "model.joblib")
    # Version 2 for the switch: the same data with the labels flipped, so every answer tells the version.
    (work / "sklearn-v2").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(X, 1 - y), work / "sklearn-v2" / "model.joblib")

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 2)).eval()
    (work / "torch").mkdir()
    torch.jit.save(torch.jit.script(mlp), str(work / "torch" / "model.pt"))
    instances = np.round(rng.normal(size=(N_BODIES, FEATURES)), 4).tolist()
    return instances


def floor_ms(predictor, instances, dtype, with_json: bool = False) -> float:
    import numpy as np

    bodies = [json.dumps({"instances": [inst]}).encode() for inst in instances]
    times = []
    for i in range(2000):
        if with_json:
            t0 = time.perf_counter()
            inst = json.loads(bodies[i % len(bodies)])["instances"]
            out = predictor.predict(np.asarray(inst, dtype=dtype))
            json.dumps({"predictions": out.tolist()}).encode()
        else:
            inst = [instances[i % len(instances)]]
            t0 = time.perf_counter()
            out = predictor.predict(np.asarray(inst, dtype=dtype))
            out.tolist()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2]


def floor_main(args) -> None:
    from jupyter_kubeai.serving.model_dir import read_model_dir
    from jupyter_kubeai.serving.predictors import load_predictor

    predictor = load_predictor(read_model_dir(args.model_dir))
    instances = json.loads(Path(args.instances).read_text())
    dtype = getattr(predictor, "input_dtype", None)
    floor_ms(predictor, instances, dtype)  # warm up
    print(json.dumps({"floor": floor_ms(predictor, instances, dtype), "floor_json": floor_ms(predictor, instances, dtype, True)}))


def measure_floor(model_dir: Path, instances_file: Path) -> dict:
    out = subprocess.run(pin(0) + [sys.executable, __file__, "floor", "--model-dir", str(model_dir), "--instances", str(instances_file)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"floor measurement failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Version switch under load: the real hub service and its LocalServing backend
# --------------------------------------------------------------------------

SWITCH_MODEL, SWITCH_SERVICE = "bench-clf", "bench-clf-api"


async def switch_under_load(work: Path, bodies: list[str], expected: dict[str, list], concurrency: int,
                            phase_s: float) -> dict:
    """Deploy version 1 through the hub service's REST API, load it, update to 2 and roll back; the loadgen's result.

    The hub service (``python -m jupyter_kubeai.service``, local mode, its
    ``LocalServing`` backend) runs pinned to the servers' CPU, so the model
    servers it starts are too; the load goes to the service's stable URL
    ``/services/kubeai/serve/<service>/...`` (authenticated, proxied to the
    version being served), as users' clients reach it.
    """
    import aiohttp
    from bench_job_status import PREFIX, ServiceProcess, fake_hub, request

    root = work / "switch"
    share = root / "share"
    for version, folder in (("1", "sklearn"), ("2", "sklearn-v2")):
        target = share / "users" / "alice" / "bench" / f"v{version}"
        target.mkdir(parents=True)
        shutil.copy(work / folder / "model.joblib", target / "model.joblib")
    _, hub_url = fake_hub(0)
    service = ServiceProcess(root, hub_url, "--KubeAIService.mode=local", f"--KubeAIService.share_root={share}",
                             f"--LocalBackend.share_root={share}", "--LocalBackend.local_gpus=0",
                             "--LocalServing.local_gpus=0", prefix=pin(0))
    await service.start()
    loadgen = None
    timings = {}
    try:
        async with aiohttp.ClientSession() as session:
            async def api(method, path, body=None, want=200):
                code, answer = await request(session, method, service.url + path, "alice-token", body)
                if code != want:
                    raise RuntimeError(f"{method} {path}: {code} {answer}")
                return answer

            for version in ("1", "2"):
                answer = await api("POST", "api/models", {"name": SWITCH_MODEL, "path": f"bench/v{version}/model.joblib"},
                                   want=201)
                assert str(answer["version"]["version"]) == version, answer
            svc = await api("POST", "api/services", {"name": SWITCH_SERVICE, "model_id": answer["model"]["id"], "version": 1},
                            want=201)
            assert (svc["state"], svc["serving_version"]) == ("Ready", 1), svc

            # The stable URL, as the service's status gives it (the name the model answers under: the
            # service's where the status says so, else the model's).
            endpoint = svc.get("endpoint") or f"{PREFIX}serve/{SWITCH_SERVICE}/"
            served = svc.get("served_name") or SWITCH_MODEL
            spec = work / "switch-spec.json"
            spec.write_text(json.dumps({
                "path": f"{endpoint.rstrip('/')}/v1/models/{served}:predict",
                "headers": {"Authorization": "token alice-token"}, "bodies": bodies, "versions": expected,
            }))
            loadgen = await asyncio.create_subprocess_exec(
                *pin(1), sys.executable, __file__, "loadgen", "--switch", "--spec", str(spec), "--port", str(service.port),
                "--concurrency", str(concurrency), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            started = await asyncio.wait_for(loadgen.stdout.readline(), 60)
            if not started:
                raise RuntimeError("load generator failed: " + (await loadgen.stderr.read()).decode()[-2000:])

            async def mark(label):
                loadgen.stdin.write(f"mark {label}\n".encode())
                await loadgen.stdin.drain()

            await mark("version 1 serving")
            await asyncio.sleep(phase_s)
            await mark("updating to 2 (version 2 starting)")
            t0 = time.monotonic()
            svc = await api("PATCH", f"api/services/{SWITCH_SERVICE}", {"version": 2})
            timings["update"] = time.monotonic() - t0
            assert svc["serving_version"] == 2, svc
            await mark("switched to 2 (version 1 draining, then gone)")
            await asyncio.sleep(phase_s)
            await mark("rolling back to 1 (version 1 starting)")
            t0 = time.monotonic()
            svc = await api("POST", f"api/services/{SWITCH_SERVICE}/rollback", {})
            timings["rollback"] = time.monotonic() - t0
            assert svc["serving_version"] == 1, svc
            await mark("rolled back to 1 (version 2 draining, then gone)")
            await asyncio.sleep(phase_s)
            loadgen.stdin.write(b"stop\n")
            await loadgen.stdin.drain()
            out, err = await asyncio.wait_for(loadgen.communicate(), 60)
            if loadgen.returncode != 0:
                raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
            await api("DELETE", f"api/services/{SWITCH_SERVICE}", want=204)
    finally:
        if loadgen is not None and loadgen.returncode is None:
            loadgen.kill()
            await loadgen.wait()
        service.stop()
        for record in (root / "services").glob("*.json"):  # a model server left behind by a failed run
            try:
                os.kill(json.loads(record.read_text())["pid"], signal.SIGTERM)
            except (OSError, ValueError, KeyError):
                pass
    result = json.loads(out.decode().strip().splitlines()[-1])
    return {**result, "timings": timings}


def report_switch(result: dict, concurrency: int, targets) -> None:
    print(f"\nversion switch under load: sklearn, c={concurrency}, through the hub service's stable URL "
          f"(local mode, LocalServing), update 1 -> 2 took {result['timings']['update']:.2f} s, "
          f"rollback 2 -> 1 {result['timings']['rollback']:.2f} s")
    print(f"  {'phase':48} {'requests':>8} {'failures':>8} {'v1':>7} {'v2':>7}")
    for phase in result["phases"]:
        if phase["label"] == "start" and not phase["requests"] and not phase["failures"]:
            continue
        n = phase["requests"] or 1
        print(f"  {phase['label']:48} {phase['requests']:>8} {phase['failures']:>8} "
              f"{phase['by_version']['1'] / n:>7.1%} {phase['by_version']['2'] / n:>7.1%}")
    total = result["requests"]
    by_version = {v: sum(p["by_version"][v] for p in result["phases"]) for v in ("1", "2")}
    print(f"  {'all':48} {total:>8} {result['errors']:>8} {by_version['1'] / max(total, 1):>7.1%} "
          f"{by_version['2'] / max(total, 1):>7.1%}")
    print(f"  latency through the proxy over the whole run: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
          f"max {result['max_ms']:.1f} ms" + (f"; first failure: {result['first_error']}" if result["first_error"] else ""))
    print("\nTargets (version switch):")
    targets.check(f"zero failed requests during a version switch at c={concurrency}", result["errors"] == 0,
                  f"{result['errors']} failed of {total + result['errors']} requests")
    phases = {p["label"].split(" (")[0]: p for p in result["phases"]}
    after_switch, after_rollback = phases["switched to 2"], phases["rolled back to 1"]
    switched = after_switch["last_version"] == "2" and after_rollback["last_version"] == "1" and by_version["2"] > 0
    targets.check("answers switched to version 2 and back to 1", switched,
                  f"last answer after the update: v{after_switch['last_version']}, after the rollback: "
                  f"v{after_rollback['last_version']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    lg = sub.add_parser("loadgen")
    lg.add_argument("--spec", required=True)
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--concurrency", type=int, default=1)
    lg.add_argument("--warmup", type=float, default=1.0)
    lg.add_argument("--duration", type=float, default=4.0)
    lg.add_argument("--switch", action="store_true", help="switch mode: phases marked on stdin until 'stop'")
    ns = sub.add_parser("null-server")
    ns.add_argument("--port", type=int, required=True)
    fl = sub.add_parser("floor")
    fl.add_argument("--model-dir", required=True)
    fl.add_argument("--instances", required=True)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per case (after 1 s warm-up)")
    parser.add_argument("--no-kserve", action="store_true", help="leave KServe out")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="comma-separated concurrencies (default: 1,8,32)")
    parser.add_argument("--models", default="sklearn,torch", help="comma-separated: sklearn, torch")
    parser.add_argument("--compare", metavar="DIR", help="also run the runtime from DIR (another checkout), same settings")
    parser.add_argument("--no-switch", action="store_true", help="leave out the version switch under load")
    add_argument(parser)
    args = parser.parse_args()
    if args.command == "loadgen":
        return loadgen_main(args)
    if args.command == "null-server":
        return null_server_main(args)
    if args.command == "floor":
        return floor_main(args)

    import numpy as np
    import sklearn
    import torch

    from jupyter_kubeai.serving.model_dir import read_model_dir
    from jupyter_kubeai.serving.predictors import load_predictor

    versions = {"sklearn": sklearn.__version__, "torch": torch.__version__.split("+")[0]}
    kserve_python, no_kserve_why = (None, "KServe left out (--no-kserve)") if args.no_kserve else ensure_kserve(versions)
    targets = Targets.from_args(__file__, args)
    switch = None
    warmup, duration = 1.0, args.duration
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    kinds = [k for k in args.models.split(",") if k]
    failures = []

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        instances = make_models(work)
        bodies = [json.dumps({"instances": [inst]}) for inst in instances]
        instances_file = work / "instances.json"
        instances_file.write_text(json.dumps(instances))

        # Expected answers and floors, in-process, with the runtime's own predictor classes.
        models = {}
        for kind, dtype, tol in (("sklearn", None, None), ("torch", "float32", 1e-4), ("sklearn-v2", None, None)):
            predictor = load_predictor(read_model_dir(work / kind))
            expected = [predictor.predict(np.asarray([inst], dtype=dtype)).tolist() for inst in instances]
            models.setdefault(kind, {})["expected"] = expected
            if kind == "sklearn-v2":
                continue
            spec = work / f"{kind}-spec.json"
            spec.write_text(json.dumps({"path": "/v1/models/m:predict", "bodies": bodies, "expected": expected, "tolerance": tol}))
            models[kind]["spec"] = spec

        # The load generator's ceiling.
        null_port = free_port()
        null = Server("null", [sys.executable, __file__, "null-server", "--port", str(null_port)], null_port, "", work / "null.log")
        time.sleep(1.0)
        null_spec = work / "null-spec.json"
        null_spec.write_text(json.dumps({"path": "/", "bodies": bodies}))
        ceiling = {c: run_load(null_spec, null_port, c, warmup, duration) for c in sorted({1, max(concurrencies)})}
        null.stop()
        print("load generator ceiling (server doing no work): " + "; ".join(
            f"c={c} {r['rps']:.0f} req/s p50 {r['p50_ms']:.3f} ms" for c, r in ceiling.items()))

        rows = []
        rss = {}
        for kind in kinds:
            model_dir = work / kind
            servers = []
            ours = [sys.executable, "-m", "jupyter_kubeai.serving", "--model-dir", str(model_dir), "--name", "m"]
            p = free_port()
            servers.append(Server("runtime, batching", [*ours, "--port", str(p)], p, "/v2/health/ready", work / f"{kind}-b.log"))
            p = free_port()
            servers.append(Server("runtime, no batching", [*ours, "--port", str(p), "--no-batching"], p, "/v2/health/ready",
                                  work / f"{kind}-nb.log"))
            if args.compare:
                p = free_port()
                servers.append(Server("compare, batching", [*ours, "--port", str(p)], p, "/v2/health/ready",
                                      work / f"{kind}-cmp.log", env={"PYTHONPATH": str(Path(args.compare).resolve())}))
            if kserve_python:
                (work / "kserve_server.py").write_text(KSERVE_SERVER)
                p = free_port()
                path = model_dir / ("model.joblib" if kind == "sklearn" else "model.pt")
                servers.append(Server("KServe", [str(kserve_python), str(work / "kserve_server.py"), "--kind", kind,
                                                 "--path", str(path), "--name", "m", "--port", str(p)],
                                      p, "/v1/models/m", work / f"{kind}-kserve.log"))
            try:
                for s in servers:
                    s.wait()
                models[kind].update(measure_floor(model_dir, instances_file))  # servers idle, same CPU
                for c in concurrencies:
                    for s in servers:  # interleaved: every server sees the same machine state
                        r = run_load(models[kind]["spec"], s.port, c, warmup, duration)
                        rows.append({"model": kind, "server": s.label, "c": c, **r})
                        if r["errors"]:
                            failures.append(f"{kind} {s.label} c={c}: {r['errors']} errors ({r['first_error']})")
                for s in servers:
                    rss[(kind, s.label)] = s.rss_mb()
            finally:
                for s in servers:
                    s.stop()

        if not args.no_switch:  # after the other runs, so that nothing else runs meanwhile
            switch = asyncio.run(switch_under_load(
                work, bodies, {"1": models["sklearn"]["expected"], "2": models["sklearn-v2"]["expected"]},
                SWITCH_CONCURRENCY, max(2.0, duration)))

    # Report.
    def find(kind, label, c):
        return next((r for r in rows if r["model"] == kind and r["server"] == label and r["c"] == c), None)

    print(f"\n{'model':8} {'server':22} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'x KServe req/s':>14} {'p99/KServe':>10}")
    for r in rows:
        k = find(r["model"], "KServe", r["c"])
        ratio = f"{r['rps'] / k['rps']:.2f}" if k else "-"
        p99r = f"{r['p99_ms'] / k['p99_ms']:.2f}" if k else "-"
        print(f"{r['model']:8} {r['server']:22} {r['c']:>4} {r['rps']:>8.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
              f"{r['errors']:>6} {ratio:>14} {p99r:>10}")
    for kind in kinds:
        print(f"{kind:8} {'in-process floor':22} {'1':>4} {1000 / models[kind]['floor']:>8.0f} {models[kind]['floor']:>8.3f}")
        print(f"{kind:8} {'floor + JSON in/out':22} {'1':>4} {1000 / models[kind]['floor_json']:>8.0f} "
              f"{models[kind]['floor_json']:>8.3f}")
    print("(floor: predictor.predict(np.asarray(decoded instances)).tolist() in one process pinned to the servers' CPU, "
          "p50 of 2,000 calls; + JSON: with json.loads of the body and json.dumps of the answer)")
    print("\nRSS after the runs (MB): " + ", ".join(f"{k} / {label}: {v:.0f}" for (k, label), v in rss.items()))

    if switch is not None:
        report_switch(switch, SWITCH_CONCURRENCY, targets)
    else:
        print("\nTargets (version switch):")
        targets.not_measured(f"zero failed requests during a version switch at c={SWITCH_CONCURRENCY}",
                             "left out (--no-switch)")

    print("\nTargets:")
    for kind in kinds:
        name = f"{kind}: c=1 p50 within 0.3 ms of the in-process floor"
        b1 = find(kind, "runtime, batching", 1)
        if b1 is None:
            targets.not_measured(name, "c=1 left out by --concurrency")
            continue
        gap = b1["p50_ms"] - models[kind]["floor"]
        targets.check(name, gap <= 0.3,
                      f"p50 {b1['p50_ms']:.3f} ms is {gap:.3f} ms over the floor {models[kind]['floor']:.3f} ms "
                      f"(the generator and loopback alone take {ceiling[1]['p50_ms']:.3f} ms of it)")
    for kind in kinds:
        rps_name = f"{kind}: c=32 with batching >= 3x KServe's req/s"
        p99_name = f"{kind}: c=32 with batching p99 no worse than KServe's"
        b32, k32 = find(kind, "runtime, batching", 32), find(kind, "KServe", 32)
        if b32 is None:
            for name in (rps_name, p99_name):
                targets.not_measured(name, "c=32 left out by --concurrency")
        elif k32 is None:
            for name in (rps_name, p99_name):
                targets.not_measured(name, no_kserve_why)
        else:
            targets.check(rps_name, b32["rps"] >= 3 * k32["rps"],
                          f"{b32['rps']:.0f} req/s = {b32['rps'] / k32['rps']:.2f}x KServe's {k32['rps']:.0f}")
            targets.check(p99_name, b32["p99_ms"] <= k32["p99_ms"],
                          f"p99 {b32['p99_ms']:.2f} ms vs KServe's {k32['p99_ms']:.2f} ms")
    sk = rss.get(("sklearn", "runtime, batching"))
    if sk is None:
        targets.not_measured("sklearn: runtime RSS under 200 MB", "the sklearn model left out by --models")
    else:
        targets.check("sklearn: runtime RSS under 200 MB", sk < 200, f"{sk:.0f} MB")
    targets.check("no failed or wrong answers in the load runs", not failures,
                  "; ".join(failures) if failures else f"{sum(r['requests'] for r in rows)} answers checked")
    targets.exit()


if __name__ == "__main__":
    main()
