"""Prometheus metrics of the hub service, in one place (``GET /services/kubeai/metrics``).

=============================================  =========  ==========================  ==============================
name                                           type       labels                      what
=============================================  =========  ==========================  ==============================
``kubeai_jobs``                                gauge      state                       jobs in the store, by state,
                                                                                      counted at scrape time (one
                                                                                      ``GROUP BY`` query)
``kubeai_job_submissions_total``               counter    framework, outcome          submissions: ``accepted``,
                                                                                      ``refused`` (bad input, quota,
                                                                                      conflict) or ``failed`` (the
                                                                                      backend failed)
``kubeai_http_request_duration_seconds``       histogram  route, method, status       API latency, by route
                                                                                      *template* (``/api/jobs/{job_id}``)
``kubeai_backend_errors_total``                counter    backend, operation          backend calls that failed (not
                                                                                      the refusals users are told
                                                                                      about, 4xx)
``kubeai_service_info``                        gauge      version, mode               1
``process_*``                                  (process)                              CPU, memory, open files
=============================================  =========  ==========================  ==============================

Each service object has its own registry (tests make many in one process).
The code under measure calls three small hooks: :meth:`ServiceMetrics.observe_request`
(``BaseHandler.on_finish``), :meth:`ServiceMetrics.submission` (``JobManager.submit``)
and :meth:`ServiceMetrics.backend_call` (where the managers call a backend).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from ..errors import KubeAIError
from ..jobs.spec import FRAMEWORKS
from ..jobs.status import STATES
from ..store.jobs import JobStore
from ..store.tables import JobRow

log = logging.getLogger(__name__)

OUTCOMES = ("accepted", "refused", "failed")
#: Seconds: API calls answer in milliseconds; followed logs and proxied predictions take longer.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def jobs_by_state(store: JobStore) -> dict[str, int]:
    """How many jobs the store holds in each state (one query)."""
    with store.sessions() as session:
        return {state: int(count) for state, count in session.execute(
            select(JobRow.state, func.count()).group_by(JobRow.state))}


def _refusal(error: BaseException) -> bool:
    """A refusal the caller is told about (bad input, not allowed, conflict), not a failure."""
    return isinstance(error, KubeAIError) and error.status < 500


class _JobStates:
    """The ``kubeai_jobs`` gauge, read from the store when Prometheus scrapes."""

    def __init__(self, store: Callable[[], JobStore]):
        self.store = store

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("kubeai_jobs", "Jobs in the store, by state.", labels=["state"])

    def describe(self):
        # Registering asks for the names: answer without a query.
        return [self._family()]

    def collect(self):
        try:
            counts = jobs_by_state(self.store())
        except Exception:
            log.exception("Counting jobs for the metrics failed; the scrape goes on without kubeai_jobs")
            return
        family = self._family()
        for state in sorted(set(STATES) | set(counts)):
            family.add_metric([state], counts.get(state, 0))
        yield family


class ServiceMetrics:
    """The service's metrics and the hooks that feed them."""

    def __init__(self, jobs: Callable[[], JobStore] | None = None, *, version: str = "", mode: str = ""):
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "kubeai_http_request_duration_seconds", "Time to answer a request of the kubeai service's API, by route template.",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.submissions = Counter(
            "kubeai_job_submissions", "Job submissions by framework and outcome (accepted, refused, failed).",
            ["framework", "outcome"], registry=self.registry,
        )
        self.backend_errors = Counter(
            "kubeai_backend_errors", "Failed calls of the job and serving backends, by backend and operation.",
            ["backend", "operation"], registry=self.registry,
        )
        for framework in FRAMEWORKS:  # series at 0 from the start, so rate() sees the first one
            for outcome in OUTCOMES:
                self.submissions.labels(framework, outcome)
        info = Gauge("kubeai_service_info", "The kubeai service's version and mode (always 1).",
                     ["version", "mode"], registry=self.registry)
        info.labels(version, mode).set(1)
        ProcessCollector(registry=self.registry)
        if jobs is not None:
            self.registry.register(_JobStates(jobs))

    # --- hooks -----------------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).observe(seconds)

    @contextmanager
    def submission(self, framework: str) -> Iterator[None]:
        """Count one submission by how the block ends."""
        framework = framework if framework in FRAMEWORKS else "other"  # user input: keep the label set small
        try:
            yield
        except Exception as e:
            self.submissions.labels(framework, "refused" if _refusal(e) else "failed").inc()
            raise
        self.submissions.labels(framework, "accepted").inc()

    @contextmanager
    def backend_call(self, backend: str, operation: str) -> Iterator[None]:
        """Count the block's failure as a backend error (refusals the user is told about are not)."""
        try:
            yield
        except Exception as e:
            if not _refusal(e):
                self.backend_error(backend, operation)
            raise

    def backend_error(self, backend: str, operation: str) -> None:
        self.backend_errors.labels(backend, operation).inc()

    # --- exposition ------------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
