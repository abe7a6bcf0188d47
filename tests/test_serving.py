"""The predictor runtime (``python -m jupyter_kubeai.serving``) as a real process.

Real models (a scikit-learn LogisticRegression saved with joblib, a small
TorchScript MLP, a user's predictor.py) served on free loopback ports;
answers compared with the models' own in-process predictions.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from jupyter_kubeai.serving.model_dir import write_model_json

from processes import free_port, start, stop, wait_for_http

np = pytest.importorskip("numpy")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
FEATURES = 20

CUSTOM_PREDICTOR = '''
import os
import time

import numpy

from helper import scale  # a module beside predictor.py: the folder is on sys.path


class Predictor:
    """Instances: lists of numbers (-> their sum x factor) or {"x", "sleep", "fail"} objects."""

    def __init__(self, model_dir, config):
        self.model_dir = model_dir
        self.offset = config.get("offset", 0)
        self.reload(model_dir)

    def reload(self, model_dir):
        with open(os.path.join(model_dir, "factor.txt")) as f:
            self.factor = float(f.read())

    def predict(self, payload):
        if isinstance(payload, dict):  # several named v2 inputs
            return {name: [scale(sum(row), self.factor) for row in rows] for name, rows in payload.items()}
        sleep = max((i.get("sleep", 0) for i in payload if isinstance(i, dict)), default=0)
        time.sleep(sleep)
        out = []
        for inst in payload:
            if isinstance(inst, dict):
                if inst.get("fail") == "value":
                    raise ValueError("x must be a number, not " + repr(inst.get("x")))
                if inst.get("fail") == "bug":
                    raise KeyError("secret-internal-detail")
                if inst.get("fail") == "output":
                    out.append(object())  # not JSON: a bug of the predictor
                    continue
                value = scale(inst["x"], self.factor) + self.offset
                out.append(numpy.float64(value) if inst.get("numpy") else value)
            else:
                out.append(scale(sum(inst), self.factor) + self.offset)
        return out
'''


def post(url, doc=None, data=None, **kw):
    return requests.post(url, json=doc, data=data, timeout=30, **kw)


class Served:
    def __init__(self, url: str, proc: subprocess.Popen, log):
        self.url, self.proc, self.log = url, proc, log

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=10).text


def serve(model_dir, tmp, *args, name="m", ready=True) -> Served:
    port = free_port()
    log = tmp / f"serving-{port}.log"
    proc = start(
        [sys.executable, "-m", "jupyter_kubeai.serving", "--model-dir", str(model_dir), "--name", name,
         "--port", str(port), *args],
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    if ready:
        try:
            wait_for_http(url + "/v2/health/ready", timeout=120, proc=proc)
        except Exception:
            stop(proc)
            raise AssertionError("the runtime did not get ready:\n" + log.read_text()[-3000:])
    return Served(url, proc, log)


# --- models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    joblib = pytest.importorskip("joblib")
    torch = pytest.importorskip("torch")
    linear_model = pytest.importorskip("sklearn.linear_model")
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, FEATURES))
    y = (X @ rng.normal(size=FEATURES) > 0).astype(int)
    lr = linear_model.LogisticRegression(max_iter=500).fit(X, y)
    (root / "sklearn").mkdir()
    joblib.dump(lr, root / "sklearn" / "model.joblib")
    write_model_json(
        root / "sklearn", format="sklearn", name="churn", version=3,
        signature={"inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, FEATURES]}],
                   "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]},
    )

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    module = torch.jit.script(mlp)
    (root / "torch").mkdir()
    torch.jit.save(module, str(root / "torch" / "model.pt"))  # no model.json: the format is guessed

    custom = root / "custom"
    custom.mkdir()
    (custom / "predictor.py").write_text(CUSTOM_PREDICTOR)
    (custom / "helper.py").write_text("def scale(x, factor):\n    return x * factor\n")
    (custom / "factor.txt").write_text("2")
    return {"root": root, "lr": lr, "module": module, "torch": torch, "X": rng.normal(size=(12, FEATURES)).round(5)}


@pytest.fixture(scope="module")
def sklearn_server(models, tmp_path_factory):
    served = serve(models["root"] / "sklearn", tmp_path_factory.mktemp("sk"))
    yield served
    stop(served.proc)


@pytest.fixture(scope="module")
def custom_server(models, tmp_path_factory):
    served = serve(models["root"] / "custom", tmp_path_factory.mktemp("custom"), "--max-batch-size", "64",
                   "--max-latency-ms", "20")
    yield served
    stop(served.proc)


# --- predictions ------------------------------------------------------------


def test_sklearn_v1_and_v2_match_in_process(models, sklearn_server):
    X = models["X"]
    want = models["lr"].predict(X).tolist()
    r = post(sklearn_server.url + "/v1/models/m:predict", {"instances": X.tolist()})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": want}

    r = post(sklearn_server.url + "/v2/models/m/infer", {
        "id": "req-1",
        "inputs": [{"name": "features", "shape": list(X.shape), "datatype": "FP64", "data": X.ravel().tolist()}],
    })
    assert r.status_code == 200, r.text
    assert r.json() == {"model_name": "m", "model_version": "3", "id": "req-1",
                        "outputs": [{"name": "label", "datatype": "INT64", "shape": [len(X)], "data": want}]}
    # Nested data is accepted too, and the version path.
    r = post(sklearn_server.url + "/v2/models/m/versions/3/infer", {
        "inputs": [{"name": "features", "shape": list(X.shape), "datatype": "FP64", "data": X.tolist()}],
    })
    assert r.json()["outputs"][0]["data"] == want


def test_torchscript_v1_and_v2_match_in_process(models, tmp_path):
    torch = models["torch"]
    X = models["X"].astype("float32")
    with torch.inference_mode():
        want = models["module"](torch.from_numpy(X)).numpy()
    served = serve(models["root"] / "torch", tmp_path, "--version", "7")
    try:
        r = post(served.url + "/v1/models/m:predict", {"instances": X.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-5, atol=1e-6)

        r = post(served.url + "/v2/models/m/infer", {
            "inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}],
        })
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert (out["name"], out["datatype"], out["shape"]) == ("output-0", "FP32", [len(X), 3])
        np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), want, rtol=1e-5, atol=1e-6)

        meta = requests.get(served.url + "/v2/models/m", timeout=10).json()
        assert meta == {"name": "m", "versions": ["7"], "platform": "pytorch_torchscript", "inputs": [], "outputs": []}
        # A wrong number of features is the client's mistake: 400, and the server goes on.
        r = post(served.url + "/v1/models/m:predict", {"instances": [[1.0, 2.0]]})
        assert r.status_code == 400 and "could not take" in r.json()["error"]
        assert post(served.url + "/v1/models/m:predict", {"instances": X[:1].tolist()}).status_code == 200
    finally:
        stop(served.proc)


def test_custom_predictor_overrides_and_reloads(models, custom_server, tmp_path):
    url = custom_server.url
    r = post(url + "/v1/models/m:predict", {"instances": [[1, 2, 3], {"x": 5}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [12.0, 10.0]}
    r = post(url + "/v2/models/m/infer", {"inputs": [{"name": "in", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}]})
    assert r.json()["outputs"] == [{"name": "output-0", "datatype": "FP64", "shape": [2], "data": [6.0, 14.0]}]
    # Several named inputs: the predictor gets {name: rows} and answers one tensor per name.
    r = post(url + "/v2/models/m/infer", {"inputs": [
        {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 1]},
        {"name": "b", "shape": [1, 1], "datatype": "FP32", "data": [4]},
    ]})
    assert r.status_code == 200, r.text
    assert {o["name"]: o["data"] for o in r.json()["outputs"]} == {"a": [4.0], "b": [8.0]}
    meta = requests.get(url + "/v2/models/m", timeout=10).json()
    assert meta["platform"] == "jupyter_kubeai_custom"

    # SIGHUP: the predictor's reload() picks up the folder's new contents in place.
    folder = tmp_path / "custom"
    folder.mkdir()
    for f in ("predictor.py", "helper.py", "factor.txt"):
        (folder / f).write_text((models["root"] / "custom" / f).read_text())
    write_model_json(folder, format="sklearn", config={"offset": 100})  # predictor.py still wins; config reaches it
    served = serve(folder, tmp_path, "--no-batching")
    try:
        assert post(served.url + "/v1/models/m:predict", {"instances": [[1]]}).json() == {"predictions": [102.0]}
        (folder / "factor.txt").write_text("10")
        os.killpg(served.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while post(served.url + "/v1/models/m:predict", {"instances": [[1]]}).json() != {"predictions": [110.0]}:
            assert time.monotonic() < deadline, "SIGHUP did not reload the model"
            time.sleep(0.1)
    finally:
        stop(served.proc)


def test_health_metadata_and_unknown_model(sklearn_server):
    url = sklearn_server.url
    assert requests.get(url + "/v2/health/live").json() == {"live": True}
    assert requests.get(url + "/v2/health/ready").json() == {"ready": True}
    assert requests.get(url + "/v2/models/m/ready").json() == {"name": "m", "ready": True}
    assert requests.get(url + "/v1/models/m").json() == {"name": "m", "ready": True}
    assert requests.get(url + "/v2/models/m").json() == {
        "name": "m", "versions": ["3"], "platform": "sklearn",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }
    for method, path in [("POST", "/v1/models/other:predict"), ("POST", "/v2/models/other/infer"),
                         ("GET", "/v2/models/other"), ("GET", "/v1/models/other"), ("GET", "/v2/models/m/versions/9"),
                         ("POST", "/v2/models/m/versions/9/infer"), ("GET", "/nothing/here")]:
        r = requests.request(method, url + path, json={"instances": [[0] * FEATURES]}, timeout=10)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]


# --- bad input ----------------------------------------------------------------

V1 = "/v1/models/m:predict"
V2 = "/v2/models/m/infer"


def v2_input(**over):
    tensor = {"name": "features", "shape": [1, FEATURES], "datatype": "FP64", "data": [0.5] * FEATURES}
    tensor.update(over)
    return {"inputs": [tensor]}


MALFORMED = [
    ("v1 bad JSON", V1, b'{"instances": [[1, 2]', "not valid JSON"),
    ("v1 empty body", V1, b"", "empty"),
    ("v1 not an object", V1, [[1, 2]], "JSON object"),
    ("v1 no instances", V1, {"data": [[1]]}, "instances"),
    ("v1 empty instances", V1, {"instances": []}, "non-empty"),
    ("v1 instances not a list", V1, {"instances": "abc"}, "non-empty list"),
    ("v1 strings", V1, {"instances": [["a"] * FEATURES]}, "numbers only"),
    ("v1 null", V1, {"instances": [[None] * FEATURES]}, "numbers"),
    ("v1 ragged", V1, {"instances": [[1] * FEATURES, [1, 2]]}, "same shape"),
    ("v1 wrong features (signature)", V1, {"instances": [[1, 2, 3]]}, "expects [N, 20]"),
    ("v1 1-D (signature)", V1, {"instances": [1] * FEATURES}, "expects [N, 20]"),
    ("v2 no inputs", V2, {"outputs": []}, "inputs"),
    ("v2 input not an object", V2, {"inputs": [[1, 2]]}, "object"),
    ("v2 no name", V2, v2_input(name=None), "name"),
    ("v2 bad shape", V2, v2_input(shape=[1, "20"]), "shape"),
    ("v2 negative shape", V2, v2_input(shape=[-1, FEATURES]), "shape"),
    ("v2 shape and data disagree", V2, v2_input(shape=[2, FEATURES]), "needs 40 values"),
    ("v2 unknown datatype", V2, v2_input(datatype="FLOAT"), "datatype"),
    ("v2 strings in FP64", V2, v2_input(data=["x"] * FEATURES), "numbers"),
    ("v2 decimals in INT64", V2, v2_input(datatype="INT64", data=[0.5] * FEATURES), "integers"),
    ("v2 datatype differs from signature", V2, v2_input(datatype="FP32"), "expects FP64"),
    ("v2 wrong features (signature)", V2, v2_input(shape=[1, 2], data=[1.0, 2.0]), "expects [N, 20]"),
    ("v2 scalar", V2, v2_input(shape=[], data=[1.0]), "scalar"),
    ("v2 data not a list", V2, v2_input(data="1,2"), "data"),
    ("v2 id not a string", V2, {**v2_input(), "id": 5}, "id"),
    ("v2 overflow", V2, v2_input(datatype="INT8", shape=[1], data=[300]), "fit"),
]


@pytest.mark.parametrize("label,path,body,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_payload_gets_400(sklearn_server, label, path, body, message):
    kw = {"data": body} if isinstance(body, bytes) else {"json": body}
    r = requests.post(sklearn_server.url + path, timeout=10, **kw)
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert message in r.json()["error"], r.json()
    # ... and the server goes on serving.
    ok = post(sklearn_server.url + V1, {"instances": [[0.1] * FEATURES]})
    assert ok.status_code == 200


def test_predictor_errors_value_is_400_bug_is_500(custom_server):
    url = custom_server.url + V1
    r = post(url, {"instances": [{"x": "a", "fail": "value"}]})
    assert r.status_code == 400 and "x must be a number" in r.json()["error"]
    r = post(url, {"instances": [{"x": 1, "fail": "bug"}]})
    assert r.status_code == 500
    assert "secret-internal-detail" not in r.text and "Traceback" not in r.text
    assert "Internal error" in r.json()["error"]
    assert "secret-internal-detail" in custom_server.log.read_text()  # the details go to the log
    r = post(url, {"instances": [{"x": 1, "fail": "output"}]})
    assert r.status_code == 500 and "Internal error" in r.json()["error"]
    assert post(url, {"instances": [{"x": 1, "numpy": True}]}).json() == {"predictions": [2.0]}
    r = requests.get(custom_server.url + V1, timeout=10)
    assert r.status_code == 405 and r.json()["error"]
    # Batched with good requests, a bad one fails alone.
    bodies = [{"instances": [{"x": i, "sleep": 0.05}]} for i in range(10)] + [{"instances": [{"x": 1, "fail": "value"}]}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: post(url, b), bodies))
    assert [a.status_code for a in answers] == [200] * 10 + [400]
    assert [a.json()["predictions"] for a in answers[:10]] == [[2.0 * i] for i in range(10)]
    assert post(url, {"instances": [{"x": 3}]}).json() == {"predictions": [6.0]}


# --- batching -------------------------------------------------------------------


def batch_histogram(metrics: str) -> tuple[float, float]:
    """(calls, requests) of kubeai_serving_batch_size."""
    count = float(re.search(r"^kubeai_serving_batch_size_count\{[^}]*\} (\S+)$", metrics, re.M).group(1))
    total = float(re.search(r"^kubeai_serving_batch_size_sum\{[^}]*\} (\S+)$", metrics, re.M).group(1))
    return count, total


def test_concurrent_requests_are_batched_with_correct_answers(custom_server):
    calls0, requests0 = batch_histogram(custom_server.metrics())
    n = 48
    bodies = [{"instances": [{"x": i, "sleep": 0.05}] * (1 + i % 3)} for i in range(n)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda b: post(custom_server.url + V1, b), bodies))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert [a.json()["predictions"] for a in answers] == [[2.0 * i] * (1 + i % 3) for i in range(n)]
    calls, reqs = batch_histogram(custom_server.metrics())
    assert reqs - requests0 == n
    assert calls - calls0 < n / 2, f"{n} requests took {calls - calls0} predict calls: no batching"


def test_sklearn_batching_under_load_answers_each_request(models, sklearn_server):
    X = np.random.default_rng(1).normal(size=(200, FEATURES)).round(4)
    want = models["lr"].predict(X).tolist()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: post(sklearn_server.url + V1, {"instances": [X[i].tolist()]}), range(len(X))))
    assert [a.json()["predictions"][0] for a in answers] == want


def test_batching_off_still_concurrent(models, tmp_path):
    served = serve(models["root"] / "custom", tmp_path, "--no-batching", "--workers", "4")
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: post(served.url + V1, {"instances": [{"x": i, "sleep": 0.6}]}), range(4)))
        elapsed = time.monotonic() - t0
        assert [a.json() for a in answers] == [{"predictions": [2.0 * i]} for i in range(4)]
        assert elapsed < 2.0, f"4 requests of 0.6 s took {elapsed:.1f}s: not concurrent"
        calls, reqs = batch_histogram(served.metrics())
        assert calls == reqs == 4
    finally:
        stop(served.proc)


# --- metrics ----------------------------------------------------------------------


def test_metrics_exposed(sklearn_server):
    url = sklearn_server.url
    post(url + V1, {"instances": [[0.2] * FEATURES]})
    post(url + V1, {"instances": "bad"})
    text = sklearn_server.metrics()
    assert re.search(r'^kubeai_serving_requests_total\{endpoint="v1_predict",model="m",status="200"\} [1-9]', text, re.M)
    assert re.search(r'^kubeai_serving_requests_total\{endpoint="v1_predict",model="m",status="400"\} [1-9]', text, re.M)
    assert re.search(r'^kubeai_serving_errors_total\{endpoint="v1_predict",kind="invalid_input",model="m"\} [1-9]', text, re.M)
    assert 'kubeai_serving_request_duration_seconds_bucket{endpoint="v1_predict",le="0.005",model="m"}' in text
    assert "kubeai_serving_batch_size_bucket" in text and "kubeai_serving_predict_duration_seconds_count" in text
    assert re.search(r"^kubeai_serving_ready\{model=\"m\"\} 1.0$", text, re.M)
    assert "process_resident_memory_bytes" in text


# --- shutdown -------------------------------------------------------------------------


def inflight(served: Served) -> float:
    return float(re.search(r'^kubeai_serving_inflight_requests\{model="m"\} (\S+)$', served.metrics(), re.M).group(1))


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_sigterm_drains_in_flight_requests_and_exits_0(models, tmp_path, batching):
    served = serve(models["root"] / "custom", tmp_path, "--ServingApp.shutdown_delay=1.0",
                   *([] if batching else ["--no-batching", "--workers", "4"]))
    results = {}

    def call(i):
        results[i] = post(served.url + V1, {"instances": [{"x": i, "sleep": 1.5}]})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while inflight(served) < 4 + 1:  # the four, and this /metrics request
        assert time.monotonic() < deadline, "requests never got in flight"
        time.sleep(0.05)
    os.killpg(served.proc.pid, signal.SIGTERM)
    time.sleep(0.2)
    r = requests.get(served.url + "/v2/health/ready", timeout=5)
    assert r.status_code == 503 and r.json() == {"ready": False}  # readiness goes false first
    assert requests.get(served.url + "/v2/health/live", timeout=5).status_code == 200
    for t in threads:
        t.join(30)
    assert {i: (r.status_code, r.json()) for i, r in results.items()} == {i: (200, {"predictions": [2.0 * i]}) for i in range(4)}
    assert served.proc.wait(20) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(served.url + "/v2/health/live", timeout=5)
    assert "Stopped" in served.log.read_text()


# --- the command -----------------------------------------------------------------


def test_imports_stay_light_and_help_documents_options():
    code = ("import sys, jupyter_kubeai.serving.app, jupyter_kubeai.serving.handlers; "
            "assert not {'torch', 'sklearn', 'joblib'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    out = subprocess.run([sys.executable, "-m", "jupyter_kubeai.serving", "--help-all"], capture_output=True, text=True,
                         timeout=60).stdout
    for option in ("--model-dir", "--name", "--port", "--host", "--max-batch-size", "--max-latency-ms", "--no-batching",
                   "ServingApp.shutdown_timeout", "ServingApp.predictor_config"):
        assert option in out


def test_unservable_folder_exits_with_a_message(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing to serve")
    served = serve(tmp_path, tmp_path, ready=False)
    assert served.proc.wait(60) == 1
    assert "Nothing to serve" in served.log.read_text()
