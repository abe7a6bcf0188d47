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

Targets (issue 5): at concurrency 32 with batching >= 3x KServe's req/s
with p99 no worse; at concurrency 1 p50 within 0.3 ms of the floor; runtime
RSS with the scikit-learn model < 200 MB.

    .venv/bin/python bench/bench_serving.py [--duration 4] [--no-kserve]
        [--concurrency 1,8,32] [--models sklearn,torch] [--compare DIR]

``--concurrency 1 --no-kserve`` checks the c=1 target alone in a few
seconds; ``--compare DIR`` adds a row for the runtime as found in ``DIR``
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

REPO = Path(__file__).resolve().parent.parent
KSERVE_VENV = REPO / ".bench-venvs" / "kserve"
CONCURRENCY = (1, 8, 32)
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
        self.idx = self.next % len(self.gen.requests)
        self.next += 7
        self.t0 = time.perf_counter()
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
            self.gen.done(self.idx, time.perf_counter() - self.t0, response, self.head_end)
            self._send()

    def connection_lost(self, exc):
        if not self.gen.stopped:
            self.gen.fail(f"connection lost: {exc}")


class LoadGen:
    def __init__(self, requests: list[bytes], expected: list, tolerance: float | None):
        self.requests = requests
        self.expected = expected
        self.tolerance = tolerance
        self.recording = False
        self.stopped = False
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = None

    def fail(self, why: str):
        if self.recording:
            self.errors += 1
        self.first_error = self.first_error or why

    def _correct(self, idx: int, body: bytes) -> bool:
        if self.expected is None:
            return True
        try:
            got = json.loads(body)["predictions"]
        except (ValueError, KeyError, TypeError):
            return False
        want = self.expected[idx]
        if len(got) != len(want):
            return False
        if self.tolerance is None:
            return got == want
        return all(abs(a - b) <= self.tolerance * (1 + abs(b)) for ga, wa in zip(got, want) for a, b in zip(ga, wa))

    def done(self, idx: int, seconds: float, response: bytes, head_end: int):
        if response[9:12] != b"200" or not self._correct(idx, response[head_end:]):
            self.fail(f"bad answer: {response[:300]!r}")
            return
        if self.recording:
            self.latencies.append(seconds)

    async def run(self, host: str, port: int, concurrency: int, warmup: float, duration: float) -> dict:
        loop = asyncio.get_running_loop()
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


def http_request(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def loadgen_main(args) -> None:
    spec = json.loads(Path(args.spec).read_text())
    requests = [http_request(spec["path"], body.encode()) for body in spec["bodies"]]
    gen = LoadGen(requests, spec.get("expected"), spec.get("tolerance"))
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


def ensure_kserve(versions: dict) -> Path | None:
    """The kserve environment's python, installing it on first use; None when it cannot be had."""
    python = KSERVE_VENV / "bin" / "python"
    wanted = ["kserve", f"scikit-learn=={versions['sklearn']}", "joblib", f"torch=={versions['torch']}", "numpy"]
    if python.exists() and subprocess.call([str(python), "-c", "import kserve, sklearn, torch, joblib"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
        return python
    print(f"Installing KServe into {KSERVE_VENV} (once; ~2 minutes) ...", flush=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-U", "pip"], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"KServe could not be installed ({e}); its rows are left out.", flush=True)
        return None
    return python


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    lg = sub.add_parser("loadgen")
    lg.add_argument("--spec", required=True)
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--concurrency", type=int, default=1)
    lg.add_argument("--warmup", type=float, default=1.0)
    lg.add_argument("--duration", type=float, default=4.0)
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
    kserve_python = None if args.no_kserve else ensure_kserve(versions)
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
        for kind, dtype, tol in (("sklearn", None, None), ("torch", "float32", 1e-4)):
            predictor = load_predictor(read_model_dir(work / kind))
            expected = [predictor.predict(np.asarray([inst], dtype=dtype)).tolist() for inst in instances]
            spec = work / f"{kind}-spec.json"
            spec.write_text(json.dumps({"path": "/v1/models/m:predict", "bodies": bodies, "expected": expected, "tolerance": tol}))
            models[kind] = {"spec": spec}

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

    print("\nTargets:")
    checks = []
    for kind in kinds:
        b1 = find(kind, "runtime, batching", 1)
        if b1 is None:
            continue
        gap = b1["p50_ms"] - models[kind]["floor"]
        checks.append((f"{kind}: c=1 p50 {b1['p50_ms']:.3f} ms is {gap:.3f} ms over the in-process floor "
                       f"{models[kind]['floor']:.3f} ms (target <= 0.3; the generator and loopback alone take "
                       f"{ceiling[1]['p50_ms']:.3f} ms of it)", gap <= 0.3))
    for kind in kinds:
        b32, k32 = find(kind, "runtime, batching", 32), find(kind, "KServe", 32)
        if b32 is None:
            continue
        if k32:
            checks.append((f"{kind}: c=32 batching {b32['rps']:.0f} req/s = {b32['rps'] / k32['rps']:.2f}x KServe's "
                           f"{k32['rps']:.0f} (target >= 3)", b32["rps"] >= 3 * k32["rps"]))
            checks.append((f"{kind}: c=32 batching p99 {b32['p99_ms']:.2f} ms vs KServe's {k32['p99_ms']:.2f} ms (target: no worse)",
                           b32["p99_ms"] <= k32["p99_ms"]))
        else:
            print(f"  {kind}: KServe not measured (not installed); no ratios.")
    sk = rss.get(("sklearn", "runtime, batching"))
    if sk is not None:
        checks.append((f"sklearn: runtime RSS {sk:.0f} MB (target < 200)", sk < 200))
    checks.append(("no failed or wrong answers", not failures))
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}")
    for f in failures:
        print("  error:", f)


if __name__ == "__main__":
    main()
