"""Routes for operators: readiness, Prometheus metrics and the cluster check (``kubeai doctor``).

- ``GET api/ready`` (public): 200 once the backends started and while the
  store answers, else 503 with the reason. Liveness stays ``api/health``.
- ``GET metrics``: the Prometheus text format (:mod:`.metrics`). Who may
  scrape: see ``KubeAIService.metrics_token`` and ``metrics_public``.
- ``GET api/admin/doctor`` (hub admins): :func:`run_doctor`'s report.
"""

from __future__ import annotations

import hmac
import json
import logging
import re

from sqlalchemy import select
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .. import __version__
from ..errors import Forbidden, NotAuthenticated, Unavailable
from ..store.tables import JobRow
from .handlers import BaseHandler

log = logging.getLogger(__name__)

_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


class ReadyHandler(BaseHandler):
    public = True

    async def prepare(self):
        # Probes must not depend on the hub answering token checks.
        self.identity = None

    async def get(self):
        problem = self.service.readiness()
        if problem:
            self.write_json({"status": "unavailable", "reason": problem, "version": __version__}, status=503)
        else:
            self.write_json({"status": "ready", "version": __version__, "mode": self.service.mode})


class MetricsHandler(BaseHandler):
    public = True

    async def prepare(self):
        service = self.service
        if service.metrics_public:
            self.identity = None
            return
        match = _BEARER.match(self.request.headers.get("Authorization", ""))
        if service.metrics_token and match and hmac.compare_digest(match.group(1), service.metrics_token):
            self.identity = None  # the scraper's own token: the hub is not asked
            return
        self.identity = await self._authenticate()
        if self.identity is None:
            raise NotAuthenticated(
                "The metrics need the scrape token (Authorization: Bearer <KubeAIService.metrics_token>) "
                "or a hub admin's token."
            )
        if not self.identity.admin:
            raise Forbidden("Only hub admins (or a scraper with the metrics token) may read the metrics.")

    async def get(self):
        body, content_type = self.service.metrics.exposition()
        self.set_header("Content-Type", content_type)
        self.finish(body)


class DoctorHandler(BaseHandler):
    admin_only = True
    forbidden_message = "Only hub admins may run the cluster checks."

    async def get(self):
        self.write_json(await run_doctor(self.service, self.hub_auth))


def _local_report(mode: str, why: str) -> dict:
    check = {"area": "cluster", "name": "mode", "status": "ok", "found": why, "fix": ""}
    return {"mode": mode, "status": "ok", "checks": [check]}


async def hub_groups(hub_auth) -> set[str]:
    """The hub's groups (projects), all pages; empty when the hub does not tell (they are a bonus)."""
    groups: set[str] = set()
    offset = 0
    while True:
        try:
            response = await AsyncHTTPClient().fetch(
                f"{hub_auth.api_url.rstrip('/')}/groups?offset={offset}&limit=200", request_timeout=10,
                headers={"Authorization": f"token {hub_auth.api_token}", "Accept": "application/jupyterhub-pagination+json"},
            )
            page = json.loads(response.body)
        except (HTTPClientError, OSError, ValueError) as e:
            log.info("Doctor: no group list from the hub (%s); checking the queues of the projects in use", e)
            return groups
        items = page["items"] if isinstance(page, dict) else page
        groups |= {g["name"] for g in items}
        following = (page.get("_pagination") or {}).get("next") if isinstance(page, dict) else None
        if not following:
            return groups
        offset = following["offset"]


async def known_projects(service, hub_auth=None) -> list[str]:
    """Projects whose queues the checks look for: hub groups, projects of stored jobs, configured ones."""
    projects = {p for p in service.project_gpu_quota if p != "*"}
    projects |= set(getattr(service.backend, "project_pools", {}) or {})
    with service.job_manager.store.sessions() as session:
        projects |= {p for p in session.scalars(select(JobRow.project).distinct()) if p}
    if hub_auth is not None:
        projects |= await hub_groups(hub_auth)
    return sorted(projects)


async def run_doctor(service, hub_auth=None) -> dict:
    """The cluster checks with the service's own credentials and settings, as JSON."""
    if service.mode != "kubernetes":
        return _local_report(service.mode, "local mode: no cluster; jobs and services run as processes on the hub's machine")
    backend = service.backend
    if not hasattr(backend, "queue_template"):
        return _local_report(service.mode, f"the job backend {type(backend).__name__} is not the Kubernetes one: nothing to check")
    # Imported here: local mode never loads the Kubernetes client.
    from ..kube.client import KubeClient
    from ..kube.doctor import check_cluster, gpu_resources_of, settings_for, summary

    catalog = service.catalog_store.catalog()
    settings = settings_for(
        backend, service.serving_backend, projects=await known_projects(service, hub_auth),
        gpu_resources=gpu_resources_of(catalog.profiles),
    )
    try:
        client = await KubeClient.connect(request_timeout=15)
    except Exception as e:
        raise Unavailable(f"The kubeai service has no cluster credentials ({e}).") from e
    try:
        checks = await check_cluster(client, settings)
    finally:
        await client.close()
    return {"mode": service.mode, "namespace": settings.namespace, "status": summary(checks),
            "checks": [c.to_json() for c in checks]}
