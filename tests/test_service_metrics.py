"""The hub service's Prometheus metrics and readiness, in process against the fake hub."""

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serviceapp import PREFIX, call, make_service
from test_job_api import InMemoryBackend, post
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.service.metrics import ServiceMetrics

METRICS_TOKEN = "scrape-secret"


@pytest.fixture
async def ops(hub, serve, service, tmp_path):
    """A service with a backend that runs nothing (the ``service`` fixture set the hub environment)."""
    InMemoryBackend.jobs = {}
    app = make_service(tmp_path, backend_class=InMemoryBackend, project_gpu_quota={"vision": 1}, metrics_token=METRICS_TOKEN)
    return app, serve(app.make_app()) + PREFIX


async def scrape(url, headers=None) -> tuple[int, dict]:
    """(status, {(name, labels as a sorted tuple): value}) of one scrape."""
    response = await AsyncHTTPClient().fetch(url + "metrics", headers=headers if headers is not None else {"Authorization": f"Bearer {METRICS_TOKEN}"},
                                             raise_error=False)
    if response.code != 200:
        return response.code, {}
    assert response.headers["Content-Type"].startswith("text/plain; version=")  # the Prometheus text format
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return 200, samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_jobs_by_state_submissions_and_backend_errors(ops):
    app, url = ops
    single = {"name": "t", "framework": "single"}
    assert (await post(url + "api/jobs", "alice-token", {**single, "job_id": "one"}))[0] == 201
    assert (await post(url + "api/jobs", "alice-token", {**single, "job_id": "two", "project": "vision"}))[0] == 201
    assert (await post(url + "api/jobs/two/cancel", "alice-token", {}))[0] == 200
    gpu = {"name": "g", "framework": "pytorch", "profile": "gpu", "project": "vision"}
    assert (await post(url + "api/jobs", "alice-token", {**gpu, "job_id": "g1", "workers": 2}))[1]["reason"] == "quota"
    assert (await post(url + "api/jobs", "alice-token", {**single, "job_id": "bad", "profile": "huge"}))[0] == 400
    assert (await post(url + "api/jobs", "alice-token", {**single, "job_id": "broken", "env": {"REFUSE": "1"}}))[0] == 500

    code, samples = await scrape(url)
    assert code == 200
    assert value(samples, "kubeai_jobs", state="Pending") == 1
    assert value(samples, "kubeai_jobs", state="Cancelled") == 1
    assert value(samples, "kubeai_jobs", state="Succeeded") == 0  # every state has a series
    assert value(samples, "kubeai_job_submissions_total", framework="single", outcome="accepted") == 2
    assert value(samples, "kubeai_job_submissions_total", framework="pytorch", outcome="refused") == 1
    assert value(samples, "kubeai_job_submissions_total", framework="single", outcome="refused") == 1
    assert value(samples, "kubeai_job_submissions_total", framework="single", outcome="failed") == 1
    assert value(samples, "kubeai_job_submissions_total", framework="mpi", outcome="accepted") == 0
    # The backend failed once (the refusals users were told about are not errors).
    assert value(samples, "kubeai_backend_errors_total", backend="local", operation="submit") == 1
    assert sum(v for (name, _), v in samples.items() if name == "kubeai_backend_errors_total") == 1
    [(info, one)] = [(dict(labels), v) for (name, labels), v in samples.items() if name == "kubeai_service_info"]
    assert info["mode"] == "local" and info["version"] and one == 1


async def test_latency_by_route_template(ops):
    app, url = ops
    assert (await post(url + "api/jobs", "alice-token", {"job_id": "one", "name": "t", "framework": "single"}))[0] == 201
    for job_id in ("one", "nope", "other"):
        await call(url + f"api/jobs/{job_id}", "alice-token")
    await call(url + "api/no/such/route", "alice-token")
    _, samples = await scrape(url)
    count = "kubeai_http_request_duration_seconds_count"
    assert value(samples, count, route="/api/jobs", method="POST", status="201") == 1
    assert value(samples, count, route="/api/jobs/{job_id}", method="GET", status="200") == 1
    assert value(samples, count, route="/api/jobs/{job_id}", method="GET", status="404") == 2
    assert value(samples, count, route="unmatched", method="GET", status="404") == 1
    routes = {dict(labels)["route"] for name, labels in samples if name == count}
    assert not any("one" in r or "nope" in r for r in routes)  # ids never become labels
    assert value(samples, "kubeai_http_request_duration_seconds_bucket", route="/api/jobs", method="POST", status="201", le="+Inf") == 1


@pytest.mark.parametrize("headers, code", [
    ({}, 401),
    ({"Authorization": "token alice-token"}, 403),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "token admin-token"}, 200),
    ({"Authorization": f"Bearer {METRICS_TOKEN}"}, 200),
    ({"Authorization": f"bearer {METRICS_TOKEN}"}, 200),
], ids=["anonymous", "user", "wrong-token", "hub-admin", "scrape-token", "scrape-token-lowercase"])
async def test_who_may_scrape(ops, headers, code):
    _, url = ops
    assert (await scrape(url, headers))[0] == code


async def test_the_scrape_token_does_not_ask_the_hub(ops, hub):
    _, url = ops
    hub.calls.clear()
    assert (await scrape(url))[0] == 200
    assert hub.calls == []


async def test_metrics_can_be_public(hub, serve, service, tmp_path):
    app = make_service(tmp_path, metrics_public=True)
    url = serve(app.make_app()) + PREFIX
    code, samples = await scrape(url, {})
    assert code == 200 and value(samples, "kubeai_jobs", state="Running") == 0


async def test_ready_after_the_backends_start_and_while_the_store_answers(ops, hub, tmp_path):
    app, url = ops
    code, body = await call(url + "api/ready")
    assert (code, body["status"]) == (503, "unavailable") and body["reason"].startswith("starting")
    await app.start_backends()
    hub.calls.clear()
    code, body = await call(url + "api/ready")
    assert (code, body["status"], body["mode"]) == (200, "ready", "local")
    assert hub.calls == []  # probes do not depend on the hub
    # The database goes away under the service: not ready (and still alive).
    app.engine.dispose()
    (tmp_path / "kubeai.sqlite").write_bytes(b"this is not a database" * 100)
    code, body = await call(url + "api/ready")
    assert code == 503 and "the store does not answer (DatabaseError)" in body["reason"]
    assert "kubeai.sqlite" not in json.dumps(body)  # no paths or URLs to anonymous callers
    assert (await call(url + "api/health"))[0] == 200


async def test_a_broken_store_leaves_the_job_gauge_out_of_the_scrape(ops, tmp_path):
    app, url = ops
    app.job_manager  # the store is opened and migrated
    app.engine.dispose()
    (tmp_path / "kubeai.sqlite").write_bytes(b"this is not a database" * 100)
    code, samples = await scrape(url)
    assert code == 200
    assert not any(name == "kubeai_jobs" for name, _ in samples)
    assert value(samples, "kubeai_job_submissions_total", framework="single", outcome="accepted") == 0


def test_each_service_has_its_own_registry():
    one, two = ServiceMetrics(), ServiceMetrics()
    with one.submission("single"):
        pass
    with pytest.raises(RuntimeError), two.backend_call("kubernetes", "submit"):
        raise RuntimeError("the cluster broke")
    assert b'kubeai_job_submissions_total{framework="single",outcome="accepted"} 1.0' in one.exposition()[0]
    assert b'kubeai_job_submissions_total{framework="single",outcome="accepted"} 0.0' in two.exposition()[0]
    assert b'kubeai_backend_errors_total{backend="kubernetes",operation="submit"} 1.0' in two.exposition()[0]
    assert b"kubeai_backend_errors_total{" not in one.exposition()[0]
