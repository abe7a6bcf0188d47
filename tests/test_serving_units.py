"""The predictor runtime's pure parts in process: model folders, payload parsing, the batcher."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from jupyter_kubeai.errors import InvalidInput
from jupyter_kubeai.serving import protocol
from jupyter_kubeai.serving.batching import LATER, Batcher, Runner, predict_batch
from jupyter_kubeai.serving.metrics import Metrics
from jupyter_kubeai.serving.model_dir import ModelInfo, Signature, TensorSpec, read_model_dir, write_model_json
from jupyter_kubeai.serving.predictors import Predictor

np = pytest.importorskip("numpy")


# --- model folders ------------------------------------------------------------

@pytest.mark.parametrize("files,fmt", [
    (["model.joblib"], "sklearn"),
    (["model.pkl"], "sklearn"),
    (["model.pt"], "torchscript"),
    (["model.pt", "model.joblib"], "sklearn"),
    (["predictor.py", "model.joblib", "model.pt"], "custom"),
])
def test_format_is_guessed_from_files(tmp_path, files, fmt):
    for f in files:
        (tmp_path / f).write_text("")
    info = read_model_dir(tmp_path)
    assert (info.format, info.signature, info.config, info.version) == (fmt, Signature(), {}, "")


def test_model_json_round_trip(tmp_path):
    (tmp_path / "model.pt").write_text("")
    write_model_json(tmp_path, format="torchscript", name="m", version=2, config={"device": "cpu"},
                     signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}], "outputs": [{"name": "y"}]})
    info = read_model_dir(tmp_path)
    assert info.format == "torchscript" and info.version == "2" and info.config == {"device": "cpu"}
    assert info.signature == Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y"),))
    assert info.metadata["name"] == "m"


@pytest.mark.parametrize("files,model_json,message", [
    ([], None, "Nothing to serve"),
    (["model.pt"], "{not json", "not valid JSON"),
    (["model.pt"], json.dumps({"format": "onnx"}), "format 'onnx'"),
    (["model.pt"], json.dumps({"format": "sklearn"}), "neither"),
    (["model.joblib"], json.dumps({"format": "custom"}), "predictor.py"),
    (["model.joblib"], json.dumps({"format": "sklearn", "signature": {"inputs": [{"name": "x", "datatype": "F"}]}}), "datatype"),
    (["model.joblib"], json.dumps({"format": "sklearn", "signature": {"inputs": [{"shape": [2, "a"]}]}}), "shape"),
])
def test_bad_model_folders_say_what_to_fix(tmp_path, files, model_json, message):
    for f in files:
        (tmp_path / f).write_text("")
    if model_json is not None:
        (tmp_path / "model.json").write_text(model_json)
    with pytest.raises(InvalidInput, match=message):
        read_model_dir(tmp_path)


# --- payloads -----------------------------------------------------------------

class ArrayPredictor(Predictor):
    input_format = "ndarray"
    input_dtype = "float32"


SIG = Signature((TensorSpec("x", "FP32", (-1, 2)),))


def test_v1_payload_for_ndarray_and_json_predictors():
    work = protocol.payload_from_v1([[1, 2], [3, 4]], ArrayPredictor("", {}), SIG)
    assert work.payload.dtype == np.float32 and work.payload.shape == (2, 2) and work.count == 2
    work = protocol.payload_from_v1([{"a": 1}, "text"], Predictor("", {}), Signature())
    assert work.payload == [{"a": 1}, "text"] and work.key == ("json",)


def test_v2_request_reshapes_and_types():
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}).encode()
    request, inputs = protocol.v2_request(body)
    work = protocol.payload_from_v2(inputs, ArrayPredictor("", {}), SIG)
    assert work.payload.tolist() == [[1, 2], [3, 4]] and work.payload.dtype == np.float32
    body = json.dumps({"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}).encode()
    _, inputs = protocol.v2_request(body)
    assert protocol.payload_from_v2(inputs, Predictor("", {}), Signature()).payload == ["a", "b"]
    with pytest.raises(InvalidInput, match="takes numbers"):
        protocol.payload_from_v2(inputs, ArrayPredictor("", {}), Signature())


@pytest.mark.parametrize("outputs,expected", [
    (np.array([1, 0]), ("INT64", [2], [1, 0])),
    (np.array([[0.5, 0.25]], dtype=np.float32), ("FP32", [1, 2], [0.5, 0.25])),
    (np.array(["cat", "dog"]), ("BYTES", [2], ["cat", "dog"])),
    ([True, False], ("BOOL", [2], [True, False])),
])
def test_v2_outputs(outputs, expected):
    response = protocol.v2_response(outputs, model_name="m", model_version="", request={}, signature=Signature())
    out = response["outputs"][0]
    assert (out["datatype"], out["shape"], out["data"]) == expected


# --- batching -------------------------------------------------------------------

class CountingPredictor:
    """Answers 10 x each number; records the size of every call; fails on negative numbers."""

    def __init__(self, delay=0.02):
        self.calls: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def predict(self, payload):
        with self.lock:
            self.calls.append(len(payload))
        threading.Event().wait(self.delay)
        if any(x < 0 for x in payload):
            raise ValueError("negative")
        return [10 * x for x in payload]


def test_predict_batch_retries_alone_when_a_batch_fails():
    p = CountingPredictor(delay=0)
    works = [protocol.Work([1, 2], 2, ("json",)), protocol.Work([-1], 1, ("json",)), protocol.Work([3], 1, ("json",))]
    results = predict_batch(p.predict, works)
    assert [(ok, v if ok else str(v)) for ok, v in results] == [(True, [10, 20]), (False, "negative"), (True, [30])]
    assert p.calls == [4, 2, 1, 1]


@pytest.mark.parametrize("max_latency", [0.0, 0.01])
async def test_batcher_gathers_concurrent_requests(max_latency):
    p = CountingPredictor()
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(pool, Metrics("m"), max_batch_size=8, max_latency=max_latency)
        predict = p.predict
        answers = await asyncio.gather(*(batcher.submit(predict, protocol.Work([i], 1, ("json",))) for i in range(20)))
        await batcher.close()
    assert answers == [[10 * i] for i in range(20)]
    assert sum(p.calls) == 20 and max(p.calls) <= 8 and len(p.calls) <= 5


async def test_batcher_sends_a_lone_request_at_once():
    p = CountingPredictor(delay=0)
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(pool, Metrics("m"), max_batch_size=8, max_latency=5.0)  # a 5 s wait would show
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await batcher.submit(p.predict, protocol.Work([1], 1, ("json",))) == [10]
        assert loop.time() - t0 < 1.0
        await batcher.close()


async def test_batcher_waits_for_arriving_requests_at_most_max_latency():
    p = CountingPredictor(delay=0)
    arriving = [1]  # a request is being read: the batch waits for it...
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(pool, Metrics("m"), max_batch_size=8, max_latency=0.3, arriving=lambda: arriving[0])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = asyncio.ensure_future(batcher.submit(p.predict, protocol.Work([1], 1, ("json",))))
        await asyncio.sleep(0.05)
        arriving[0] = 0
        second = batcher.submit(p.predict, protocol.Work([2], 1, ("json",)))  # ... which joins it
        assert await asyncio.gather(first, second) == [[10], [20]]
        assert p.calls == [2] and loop.time() - t0 < 0.3
        # ... but not longer than max_latency when it never comes.
        arriving[0] = 1
        t0 = loop.time()
        assert await batcher.submit(p.predict, protocol.Work([3], 1, ("json",))) == [30]
        assert 0.25 < loop.time() - t0 < 2
        await batcher.close()


async def test_runner_runs_requests_concurrently():
    p = CountingPredictor(delay=0.3)
    with ThreadPoolExecutor(4) as pool:
        runner = Runner(pool, Metrics("m"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        answers = await asyncio.gather(*(runner.submit(p.predict, protocol.Work([i], 1, ("json",))) for i in range(4)))
        assert loop.time() - t0 < 1.0
    assert answers == [[0], [10], [20], [30]] and p.calls == [1, 1, 1, 1]


def test_model_info_file(tmp_path):
    (tmp_path / "model.pkl").write_text("")
    assert ModelInfo(tmp_path, "sklearn").model_file == tmp_path / "model.pkl"


async def test_fast_predict_runs_inline_when_idle_and_slow_one_goes_back_to_the_pool():
    threads = []

    def predict(payload):
        threads.append(threading.current_thread())
        if payload[0] == "slow":
            threading.Event().wait(0.1)  # 0.1 s: the average (weight 1/4) goes over 10 ms
        return [1 for _ in payload]

    for runner_kind in ("batcher", "runner"):
        threads.clear()
        with ThreadPoolExecutor(1) as pool:
            runner = (Batcher(pool, Metrics("m"), max_batch_size=8, max_latency=0.0, inline_max=0.01)
                      if runner_kind == "batcher" else Runner(pool, Metrics("m"), inline_max=0.01))
            for _ in range(inline_warmup()):
                assert await runner.submit(predict, protocol.Work([0], 1, ("json",))) == [1]
            assert threading.main_thread() not in threads  # a new predictor is measured in the pool first
            assert await runner.submit(predict, protocol.Work([0], 1, ("json",))) == [1]
            assert threads[-1] is threading.main_thread()  # fast and idle: inline
            assert await runner.submit(predict, protocol.Work(["slow"], 1, ("json",))) == [1]
            assert await runner.submit(predict, protocol.Work([0], 1, ("json",))) == [1]
            assert threads[-1] is not threading.main_thread()  # the slow call raised the average: back to the pool
            await runner.close()


def inline_warmup() -> int:
    from jupyter_kubeai.serving.batching import InlinePolicy

    return InlinePolicy.WARMUP


async def test_metadata_signature_is_model_json_s_else_the_predictors_hint(tmp_path):
    """The v2 metadata: model.json's signature when given, else the predictor's ``signature()``, else none."""
    from jupyter_kubeai.serving.runtime import ModelRuntime

    (tmp_path / "predictor.py").write_text(
        "class Predictor:\n"
        "    def __init__(self, model_dir, config):\n"
        "        self.hint = config.get('hint')\n"
        "    def predict(self, payload):\n"
        "        return payload\n"
        "    def signature(self):\n"
        "        if self.hint == 'broken':\n"
        "            raise RuntimeError('no idea')\n"
        "        return self.hint\n")

    async def reported(**model_json):
        write_model_json(tmp_path, format="custom", **model_json)
        runtime = ModelRuntime(str(tmp_path), "m", max_batch_size=1)
        await runtime.load()
        try:
            return runtime.reported_signature
        finally:
            await runtime.close()

    hint = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 20]}]}
    assert await reported(config={"hint": hint}) == Signature((TensorSpec("x", "FP64", (-1, 20)),))
    given = {"inputs": [{"name": "features", "shape": [-1, 3]}]}
    assert await reported(signature=given, config={"hint": hint}) == Signature((TensorSpec("features", None, (-1, 3)),))
    assert await reported(config={"hint": "broken"}) == Signature()
    assert await reported() == Signature()


async def test_batcher_reads_other_active_clients_before_sending():
    """Requests other clients have sent but the loop has not read yet join the batch; with none active, no wait."""
    for active, expected in ((4, [3]), (1, [1, 2])):
        p = CountingPredictor(delay=0)
        later: list[asyncio.Task] = []
        loop = asyncio.get_running_loop()

        def peers():
            # The moment the batch decides, two more requests are in other sockets: read on the next turn.
            if batcher._active and not later:
                for i in (1, 2):
                    later.append(loop.create_task(batcher.submit(p.predict, protocol.Work([i], 1, ("json",)))))
            return active

        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(pool, Metrics("m"), max_batch_size=8, max_latency=1.0, peers=peers)
            assert await batcher.submit(p.predict, protocol.Work([0], 1, ("json",))) == [0]
            assert await asyncio.gather(*later) == [[10], [20]]
            await batcher.close()
        assert p.calls == expected, (active, p.calls)


async def test_batcher_with_other_active_clients_defers_the_inline_path_and_predicts_fast_batches_on_the_loop():
    threads = []

    def predict(payload):
        threads.append(threading.current_thread())
        return [1 for _ in payload]

    active = [1]
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(pool, Metrics("m"), max_batch_size=8, max_latency=0.5, inline_max=0.01,
                          peers=lambda: active[0])
        for _ in range(inline_warmup()):
            await batcher.submit(predict, protocol.Work([0], 1, ("json",)))
        work = protocol.Work([0], 1, ("json",))
        assert batcher.try_now(predict, work) is not LATER  # a lone client: answered in this turn
        active[0] = 3
        assert batcher.try_now(predict, work) is LATER  # others may join: through the batch
        threads.clear()
        answers = await asyncio.gather(*(batcher.submit(predict, protocol.Work([0], 1, ("json",))) for _ in range(3)))
        assert answers == [[1]] * 3
        assert threads == [threading.main_thread()]  # one call, for the three, on the loop: no thread hop
        await batcher.close()
