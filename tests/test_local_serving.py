"""Models trained by real notebook jobs, registered, and served by real local model-server processes.

The service is updated to version 2 and rolled back while clients send
requests without pause: no request fails, and the answers switch versions.
"""

import asyncio
import json

import joblib
import nbformat
import numpy as np
import pytest
from serviceapp import PREFIX, call, make_service
from sklearn.linear_model import LogisticRegression
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

from jupyter_kubeai.jobs.local import pid_alive
from jupyter_kubeai.jobs.submission import new_job_id, prepare_job_folder

FEATURES = 20


def train(flip: bool) -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, FEATURES))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return LogisticRegression().fit(x, 1 - y if flip else y)


#: The notebook a job runs: the same training as train(), the model saved in the job folder.
TRAIN_NOTEBOOK = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell("flip = False", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell(
        "import joblib, numpy as np\nfrom sklearn.linear_model import LogisticRegression\nimport jupyter_kubeai\n"
        f"rng = np.random.default_rng(0)\nx = rng.normal(size=(200, {FEATURES}))\n"
        "y = (x[:, 0] + x[:, 1] > 0).astype(int)\nmodel = LogisticRegression().fit(x, 1 - y if flip else y)\n"
        "jupyter_kubeai.log_metric(step=0, accuracy=model.score(x, 1 - y if flip else y))\n"
        "joblib.dump(model, 'model.joblib')\n"
    ),
])


async def run_training_job(url, share, flip: bool) -> str:
    job_id = new_job_id("train")
    prepare_job_folder(share / "users/alice", job_id, TRAIN_NOTEBOOK, {"flip": flip}, "train.ipynb")
    code, job = await post(url + "api/jobs", {"job_id": job_id, "name": "train", "framework": "single",
                                            "parameters": {"flip": flip}})
    assert code == 201, job
    for _ in range(600):
        _, job = await call(url + f"api/jobs/{job_id}", "alice-token")
        if not job["active"]:
            break
        await asyncio.sleep(0.1)
    assert job["state"] == "Succeeded", job["reason"]
    return job_id


@pytest.fixture
async def api(hub, serve, service, tmp_path):
    share = tmp_path / "share"
    (share / "users/alice/out").mkdir(parents=True)
    config = Config({"LocalServing": {"state_dir": str(tmp_path / "services"), "local_gpus": 0},
                     "LocalBackend": {"share_root": str(share), "local_gpus": 0}})
    app = make_service(tmp_path, config=config, share_root=str(share))
    await app.serving_backend.start()
    yield app, serve(app.make_app()) + PREFIX, share
    for name in list(app.serving_backend.current):
        await app.serving_backend.delete(name)
    await app.serving_backend.stop()


async def post(url, body, method="POST"):
    return await call(url, "alice-token", method=method, body=json.dumps(body))


async def test_deploy_predict_update_under_load_and_roll_back(api):
    app, url, share = api
    v1, v2 = train(flip=False), train(flip=True)  # what the jobs compute, for the expected answers
    for flip in (False, True):
        job_id = await run_training_job(url, share, flip)
        code, answer = await post(url + "api/models", {"name": "clf", "job_id": job_id, "path": "model.joblib"})
        assert code == 201, answer
        assert answer["version"]["lineage"]["parameters"] == {"flip": flip}
        assert answer["version"]["metrics"]["accuracy"] > 0.9
    model_id = answer["model"]["id"]
    x = np.random.default_rng(1).normal(size=(4, FEATURES))
    expected = {1: v1.predict(x).tolist(), 2: v2.predict(x).tolist()}
    assert expected[1] != expected[2]

    code, svc = await post(url + "api/services", {"name": "clf-api", "model_id": model_id, "version": 1})
    assert code == 201, svc
    assert (svc["state"], svc["serving_version"]) == ("Ready", 1), svc
    predict = url + "serve/clf-api/v1/models/clf-api:predict"  # the model answers under the service's name
    body = json.dumps({"instances": x.tolist()})

    async def ask():
        response = await AsyncHTTPClient().fetch(predict, method="POST", body=body, raise_error=False,
                                                 headers={"Authorization": "token alice-token"})
        return response.code, json.loads(response.body) if response.code == 200 else response.body

    assert await ask() == (200, {"predictions": expected[1]})
    # The same through the REST API (v2 body), as the panel's "try it" does.
    code, answer = await post(url + "api/services/clf-api/predict", {"inputs": [
        {"name": "input-0", "shape": [4, FEATURES], "datatype": "FP64", "data": x.flatten().tolist()}]})
    assert code == 200 and answer["outputs"][0]["data"] == expected[1], answer

    seen, failures, stop = [], [], asyncio.Event()

    async def client():
        while not stop.is_set():
            code, answer = await ask()
            if code != 200:
                failures.append((code, answer))
            else:
                seen.append(answer["predictions"])

    clients = [asyncio.create_task(client()) for _ in range(4)]
    await asyncio.sleep(0.3)
    code, svc = await post(url + "api/services/clf-api", {"version": 2}, method="PATCH")
    assert (code, svc["serving_version"], svc["previous_version"]) == (200, 2, 1), svc
    await asyncio.sleep(1.5)  # the old process drains and exits meanwhile
    code, svc = await post(url + "api/services/clf-api/rollback", {})
    assert (code, svc["serving_version"]) == (200, 1)
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*clients)
    assert failures == []
    assert expected[1] in seen and expected[2] in seen
    assert seen[-1] == expected[1]
    assert all(answer in (expected[1], expected[2]) for answer in seen)

    # A restarted hub service finds the running model server again.
    # (It must not stop the servers when it stops: the first one still runs them in this test.)
    again = type(app.serving_backend)(state_dir=app.serving_backend.state_dir, stop_with_service=False)
    await again.start()
    assert (await again.status("clf-api")).state == "Ready"
    assert again.current["clf-api"]["pid"] == app.serving_backend.current["clf-api"]["pid"]  # re-adopted
    await again.stop()

    # Delete: the model server goes away, the proxy says so.
    pid = app.serving_backend.current["clf-api"]["pid"]
    assert (await call(url + "api/services/clf-api", "alice-token", method="DELETE"))[0] == 204
    for _ in range(100):
        if not pid_alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not pid_alive(pid)
    assert (await ask())[0] == 404


async def test_malformed_payloads_get_400_and_the_server_keeps_serving(api):
    app, url, share = api
    joblib.dump(train(flip=False), share / "users/alice/out/model.joblib")
    _, answer = await post(url + "api/models", {"name": "clf", "path": "out/model.joblib"})
    assert (await post(url + "api/services", {"name": "clf-api", "model_id": answer["model"]["id"]}))[0] == 201
    for bad in ({"instances": "nope"}, {"instances": [[1, 2]]}, {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}):
        code, answer = await post(url + "api/services/clf-api/predict", bad)
        assert code == 400, (bad, answer)
    code, answer = await post(url + "api/services/clf-api/predict", {"instances": [[0.0] * FEATURES]})
    assert code == 200 and len(answer["predictions"]) == 1
    # Ready, and the refused requests are its recent errors (newest first), with the runtime's reasons.
    code, svc = await call(url + "api/services/clf-api", "alice-token")
    assert svc["state"] == "Ready" and [e["status"] for e in svc["recent_errors"]] == [400, 400, 400], svc
    assert all(e["message"] for e in svc["recent_errors"])
