"""Prometheus metrics of the runtime, served at ``/metrics``.

- ``kubeai_serving_requests_total{endpoint, status}``: requests answered.
- ``kubeai_serving_request_duration_seconds{endpoint}``: latency, from the
  request read to the response written.
- ``kubeai_serving_errors_total{endpoint, kind}``: ``invalid_input`` (4xx
  for bad payloads), ``not_found``, ``internal`` (5xx, a predictor bug).
- ``kubeai_serving_batch_size``: requests per ``predict`` call;
  ``kubeai_serving_batch_instances``: instances per call;
  ``kubeai_serving_predict_duration_seconds``: time inside ``predict``.
- ``kubeai_serving_inflight_requests``, ``kubeai_serving_ready``, and the
  process's own (``process_resident_memory_bytes``...).

Each runtime has its own registry (not the global one), so several can live
in one process (tests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        labels = {"model": model_name}
        self.requests = Counter(
            "kubeai_serving_requests", "Requests answered, by endpoint and HTTP status.",
            ["model", "endpoint", "status"], registry=registry,
        )
        self.latency = Histogram(
            "kubeai_serving_request_duration_seconds", "Request latency in seconds, by endpoint.",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.errors = Counter(
            "kubeai_serving_errors", "Failed requests: invalid_input, not_found, internal.",
            ["model", "endpoint", "kind"], registry=registry,
        )
        self.batch_size = Histogram(
            "kubeai_serving_batch_size", "Requests per predict() call.", ["model"],
            buckets=BATCH_BUCKETS, registry=registry,
        ).labels(**labels)
        self.batch_instances = Histogram(
            "kubeai_serving_batch_instances", "Instances per predict() call.", ["model"],
            buckets=BATCH_BUCKETS, registry=registry,
        ).labels(**labels)
        self.predict_latency = Histogram(
            "kubeai_serving_predict_duration_seconds", "Seconds inside predict(), per call.", ["model"],
            buckets=LATENCY_BUCKETS, registry=registry,
        ).labels(**labels)
        self.inflight = Gauge(
            "kubeai_serving_inflight_requests", "Requests being handled now.", ["model"], registry=registry,
        ).labels(**labels)
        self.ready = Gauge(
            "kubeai_serving_ready", "1 while the model is loaded and the runtime is not shutting down.", ["model"],
            registry=registry,
        ).labels(**labels)
        self.model_name = model_name
        self._children: dict = {}

    def observe_request(self, endpoint: str, status: int, seconds: float, error_kind: str | None) -> None:
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(self.model_name, endpoint, str(status)),
                self.latency.labels(self.model_name, endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)
        if error_kind:
            self.errors.labels(self.model_name, endpoint, error_kind).inc()

    def observe_batch(self, requests: int, instances: int, seconds: float) -> None:
        self.batch_size.observe(requests)
        self.batch_instances.observe(instances)
        self.predict_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
