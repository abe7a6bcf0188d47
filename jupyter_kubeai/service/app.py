"""``KubeAIService``: the hub service process.

Run as ``python -m jupyter_kubeai.service``: by the hub as a managed service
(``JupyterHub.services``, see ``jupyter_kubeai.hubconfig``; local mode), or
by the deployment as an external one (the hub pod's ``kubeai`` container,
``deploy/z2jh-values.yaml``). Either way it learns its address, prefix and
hub API token from the ``JUPYTERHUB_*`` environment (the hub gives it to a
managed service; ``hubconfig.external_service_environment`` lists what an
external one needs); its own settings are the traitlets below (command line
``--KubeAIService.<name>=...`` or a config file).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from functools import cached_property
from importlib.resources import files
from urllib.parse import urlparse

import yaml
from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Dict, Float, Instance, Integer, Type, Unicode, default, validate
from traitlets.config import Application

from .. import __version__
from ..backends.base import JobBackend
from ..local.share import LocalShare, default_share_root
from ..models.deploy import ServingBackend
from ..store import default_db_url
from ..store.catalog import CatalogStore
from ..store.jobs import JobStore
from ..store.models import ModelStore
from ..store.schema import open_engine, upgrade
from .admin_page import AdminPageHandler
from .catalog_handlers import (
    AdminCatalogHandler,
    AdminCollectionHandler,
    AdminEntryHandler,
    UserCatalogHandler,
)
from .handlers import HealthHandler, HomeHandler, MeHandler, NotFoundHandler, OAuthCallbackHandler, OpenAPIHandler
from .identity import HubDirectory
from .job_handlers import (
    JobCancelHandler,
    JobEntryHandler,
    JobEventsHandler,
    JobFileHandler,
    JobFilesHandler,
    JobLogHandler,
    JobMetricsHandler,
    JobReplicasHandler,
    JobResubmitHandler,
    JobsHandler,
)
from .jobs import JobManager
from .metrics import ServiceMetrics
from .model_handlers import (
    ModelAliasHandler,
    ModelEntryHandler,
    ModelsHandler,
    ModelVersionHandler,
    ServeProxyHandler,
    ServiceEntryHandler,
    ServiceMetadataHandler,
    ServicePredictHandler,
    ServiceRestartHandler,
    ServiceRollbackHandler,
    ServicesHandler,
)
from .models import ModelManager
from .ops_handlers import DoctorHandler, MetricsHandler, ReadyHandler

#: Path parameters of the routes: name -> the regex it matches (one place).
PATH_PARAMETERS = {
    "collection": "images|profiles|image-rules",
    "name": "[a-z0-9-]+",
    "job_id": "[a-z0-9-]+",
    "replica": "[A-Za-z0-9_.-]+",
    "model_id": "[0-9]+",
    "version": "[0-9]+",
    "alias": "[a-z][-a-z0-9]*",
    "service": "[a-z][-a-z0-9]*",
    "path": ".*",
}


def route_regex(template: str) -> str:
    """``api/admin/{collection}/{name}`` -> ``api/admin/(images|...)/([a-z0-9-]+)``."""
    return re.sub(r"\{(\w+)\}", lambda m: f"({PATH_PARAMETERS[m.group(1)]})", template)

MODES = ("local", "kubernetes")


class KubeAIService(Application):
    """The jupyter_kubeai hub service (control plane)."""

    name = "kubeai-service"
    version = __version__
    description = "The jupyter_kubeai hub service: catalog, jobs, models and services."

    @property
    def classes(self):
        # For --help-all and config files: the backends' settings too.
        from ..backends.kubernetes import KubernetesBackend
        from ..backends.kubernetes_serving import KubernetesServing
        from ..backends.local import LocalBackend
        from ..backends.local_serving import LocalServing
        from ..kube.settings import KubeSettings

        return [KubeAIService, LocalBackend, KubernetesBackend, LocalServing, KubernetesServing, KubeSettings]

    @default("log_level")
    def _default_log_level(self):
        return logging.INFO

    config_file = Unicode(
        "",
        config=True,
        help="""A Python config file to load (``c.KubeAIService...``). Default: ``$KUBEAI_SERVICE_CONFIG``.""",
    )

    @default("config_file")
    def _default_config_file(self):
        return os.environ.get("KUBEAI_SERVICE_CONFIG", "")

    mode = Unicode(
        config=True,
        help="""``local`` (processes on this machine) or ``kubernetes`` (the cluster).

        Default: ``$KUBEAI_MODE``, else ``local``. ``jupyter_kubeai.hubconfig``
        passes the hub's own mode, so hub and service always agree.
        """,
    )

    @default("mode")
    def _default_mode(self):
        return os.environ.get("KUBEAI_MODE", "local")

    @validate("mode")
    def _validate_mode(self, proposal):
        if proposal.value not in MODES:
            raise ValueError(f"KubeAIService.mode must be one of {MODES}, not {proposal.value!r}")
        return proposal.value

    service_url = Unicode(
        config=True,
        help="""The URL this service listens at. Default: ``$JUPYTERHUB_SERVICE_URL``
        (the ``url`` of the service in the hub config).""",
    )

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    service_prefix = Unicode(
        config=True,
        help="""URL prefix of every route. Default: ``$JUPYTERHUB_SERVICE_PREFIX``, else ``/services/kubeai/``.""",
    )

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/kubeai/")

    @validate("service_prefix")
    def _validate_service_prefix(self, proposal):
        prefix = "/" + proposal.value.strip("/") + "/"
        return prefix.replace("//", "/")

    ip = Unicode(
        config=True,
        help="""Address to listen on. Default: the host of ``service_url``.""",
    )

    @default("ip")
    def _default_ip(self):
        return urlparse(self.service_url).hostname or "127.0.0.1"

    port = Integer(
        config=True,
        help="""Port to listen on. Default: the port of ``service_url``.""",
    )

    @default("port")
    def _default_port(self):
        return urlparse(self.service_url).port or 80

    identity_cache_seconds = Float(
        10.0,
        config=True,
        help="""How long a caller's groups and admin flag are cached after a hub lookup.

        A change of groups or admin rights in the hub shows within this time.
        """,
    )

    db_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the service's store (catalog, later jobs and models).

        Default: ``$KUBEAI_DB_URL``, else a SQLite file ``kubeai.sqlite`` in
        ``$KUBEAI_STATE_DIR``. Use PostgreSQL in production
        (``postgresql+psycopg://user:password@host/db``). The schema is
        created and migrated at start (Alembic); upgrades never drop rows.
        """,
    )

    @default("db_url")
    def _default_db_url(self):
        return default_db_url()

    initial_catalog = Dict(
        config=True,
        help="""The catalog to load on the store's first start: ``{"images": [...],
        "profiles": [...], "image_rules": [...]}``, each entry as the admin REST
        API takes it. Loaded once in the store's life; later edits (admin page,
        REST) live in the store and win. Default: the YAML or JSON file named by
        ``$KUBEAI_INITIAL_CATALOG`` (a Helm ConfigMap, or local mode's demo
        catalog), else empty.
        """,
    )

    @default("initial_catalog")
    def _default_initial_catalog(self):
        path = os.environ.get("KUBEAI_INITIAL_CATALOG")
        if not path:
            return {}
        with open(path) as f:
            return yaml.safe_load(f) or {}

    @validate("initial_catalog")
    def _validate_initial_catalog(self, proposal):
        unknown = set(proposal.value) - {"images", "profiles", "image_rules"}
        if unknown:
            raise ValueError(f"initial_catalog has unknown keys {sorted(unknown)}; use images, profiles, image_rules")
        return proposal.value

    backend_class = Type(
        klass=JobBackend,
        config=True,
        help="""The job backend (a ``jupyter_kubeai.backends.base.JobBackend``).

        Default by ``mode``: ``jupyter_kubeai.backends.local.LocalBackend``
        (process groups on this machine) or
        ``jupyter_kubeai.backends.kubernetes.KubernetesBackend`` (Kubeflow
        training objects). Configure it as ``c.LocalBackend...`` /
        ``c.KubernetesBackend...``.
        """,
    )

    @default("backend_class")
    def _default_backend_class(self):
        if self.mode == "kubernetes":
            from ..backends.kubernetes import KubernetesBackend

            return KubernetesBackend
        from ..backends.local import LocalBackend

        return LocalBackend

    backend = Instance(JobBackend, help="The running job backend (made from ``backend_class``).")

    @default("backend")
    def _default_backend(self):
        return self.backend_class(parent=self)

    serving_backend_class = Type(
        klass=ServingBackend,
        config=True,
        help="""The inference-service backend (a ``jupyter_kubeai.models.deploy.ServingBackend``).

        Default by ``mode``: ``jupyter_kubeai.backends.local_serving.LocalServing``
        (a local model-server process per service) or
        ``jupyter_kubeai.backends.kubernetes_serving.KubernetesServing``
        (a KServe InferenceService, else a Deployment and Service).
        """,
    )

    @default("serving_backend_class")
    def _default_serving_backend_class(self):
        if self.mode == "kubernetes":
            from ..backends.kubernetes_serving import KubernetesServing

            return KubernetesServing
        from ..backends.local_serving import LocalServing

        return LocalServing

    serving_backend = Instance(ServingBackend, help="The running serving backend (made from ``serving_backend_class``).")

    @default("serving_backend")
    def _default_serving_backend(self):
        return self.serving_backend_class(parent=self)

    share_root = Unicode(
        config=True,
        help="""Where this service sees the share (``users/``, ``projects/``, ``global/``, ``models/``).

        The model registry copies registered files from users' folders here
        into ``models/``. Default: ``$KUBEAI_STATE_DIR/share`` (local mode);
        on a cluster, where the share's PVC is mounted in the service's pod.
        """,
    )

    @default("share_root")
    def _default_share_root(self):
        return default_share_root()

    project_gpu_quota = Dict(
        value_trait=Integer(),
        config=True,
        help="""Max GPUs each project's running and pending jobs may hold together.

        ``{"vision": 8, "*": 4}``: project ``vision`` 8, every other project
        4. A project with no entry (and no ``*``) has no limit. A submission
        over the quota is refused with 403 and what is holding the GPUs.
        """,
    )

    personal_gpu_quota = Integer(
        -1,
        config=True,
        help="""Max GPUs one user's personal jobs (submitted under no project) may hold together; -1: no limit.""",
    )

    reconcile_interval = Float(
        2.0,
        config=True,
        help="""Seconds between refreshes of every active job's state from the backend.

        Lists are served from the store, so a job's new state shows within
        this time (a single job's page refreshes at once). At start, every
        job the store thinks is active is re-checked: running jobs are
        picked up again, vanished ones end Failed with the reason.
        """,
    )

    metrics_token = Unicode(
        config=True,
        help="""A bearer token that lets Prometheus read ``metrics`` without a hub identity
        (``Authorization: Bearer <token>``; Prometheus's ``authorization.credentials_file``).
        Default: ``$KUBEAI_METRICS_TOKEN``, else none: only hub admins' tokens (and
        ``metrics_public``) open the metrics. The metrics hold counts only (jobs by state,
        submissions by framework, latency by route), no names, but the service's routes are
        reachable through the hub's public proxy, so they are closed by default.""",
    )

    @default("metrics_token")
    def _default_metrics_token(self):
        return os.environ.get("KUBEAI_METRICS_TOKEN", "")

    metrics_public = Bool(
        False,
        config=True,
        help="""Serve ``metrics`` to anyone, with no token. Only where the route cannot be reached
        from outside (the hub's proxy routes ``/services/kubeai/`` to the public: keep it False
        there, and use ``metrics_token``).""",
    )

    @cached_property
    def metrics(self) -> ServiceMetrics:
        """The Prometheus metrics (:mod:`.metrics`); jobs by state are read from the store at each scrape."""
        return ServiceMetrics(lambda: self.job_manager.store, version=__version__, mode=self.mode)

    #: True once ``start_backends`` finished: ``api/ready`` answers 200 from then on.
    started = False

    async def start_backends(self) -> None:
        """Migrate and seed the store, start both backends and re-check the active jobs."""
        self.catalog_store  # migrate and seed before the first request
        await self.backend.start()
        await self.serving_backend.start()
        # Stop what belongs to services deleted while nobody watched (local model servers).
        await self.serving_backend.reconcile({d.name for d in self.model_manager.store.deployments()})
        changed = await self.job_manager.reconcile()  # re-attach, and mark vanished jobs
        self.log.info("Jobs re-checked at start: %d changed state", len(changed))
        self.started = True

    def readiness(self) -> str:
        """``""`` when the service can answer requests, else why not (for ``api/ready``)."""
        if not self.started:
            return "starting: the backends have not started yet"
        try:
            self.job_manager.store.count()
        except Exception as e:
            self.log.error("Readiness: the store does not answer: %s", e)
            return f"the store does not answer ({type(e).__name__}); see the service's log"
        return ""

    @cached_property
    def engine(self):
        """The SQL engine, the schema migrated (Alembic) on first use."""
        engine = open_engine(self.db_url)
        upgrade(engine)
        return engine

    @cached_property
    def job_manager(self) -> JobManager:
        return JobManager(
            JobStore(self.engine), self.backend, self.catalog_store,
            project_gpu_quota=self.project_gpu_quota, personal_gpu_quota=self.personal_gpu_quota,
            metrics=self.metrics, share=LocalShare(self.share_root),
        )

    @cached_property
    def model_manager(self) -> ModelManager:
        return ModelManager(ModelStore(self.engine), LocalShare(self.share_root), self.catalog_store,
                            self.job_manager, self.serving_backend, metrics=self.metrics)

    @cached_property
    def catalog_store(self) -> CatalogStore:
        """The catalog in the SQL store, seeded on first use."""
        store = CatalogStore(self.engine)
        if store.seed(
            images=self.initial_catalog.get("images", ()),
            profiles=self.initial_catalog.get("profiles", ()),
            rules=self.initial_catalog.get("image_rules", ()),
        ):
            self.log.info("Catalog seeded from initial_catalog")
        return store

    def load_config(self, argv=None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            # The command line wins over the file.
            self.parse_command_line(argv)

    @cached_property
    def openapi_document(self) -> dict:
        doc = yaml.safe_load(files(__package__).joinpath("openapi.yaml").read_text())
        doc["info"]["version"] = __version__
        doc["servers"] = [{"url": self.service_prefix.rstrip("/")}]
        return doc

    def routes(self) -> list[tuple[str, type]]:
        """The service's routes, relative to ``service_prefix``.

        Paths are templates (``{name}``, see :data:`PATH_PARAMETERS`), the
        same as in the OpenAPI document.
        """
        return [
            ("", HomeHandler),
            ("admin/", AdminPageHandler),
            ("api/me", MeHandler),
            ("api/health", HealthHandler),
            ("api/ready", ReadyHandler),
            ("metrics", MetricsHandler),
            ("api/openapi.json", OpenAPIHandler),
            ("api/catalog", UserCatalogHandler),
            ("api/admin/catalog", AdminCatalogHandler),
            ("api/admin/doctor", DoctorHandler),
            ("api/admin/{collection}", AdminCollectionHandler),
            ("api/admin/{collection}/{name}", AdminEntryHandler),
            ("api/jobs", JobsHandler),
            ("api/jobs/{job_id}", JobEntryHandler),
            ("api/jobs/{job_id}/cancel", JobCancelHandler),
            ("api/jobs/{job_id}/resubmit", JobResubmitHandler),
            ("api/jobs/{job_id}/events", JobEventsHandler),
            ("api/jobs/{job_id}/logs", JobReplicasHandler),
            ("api/jobs/{job_id}/logs/{replica}", JobLogHandler),
            ("api/jobs/{job_id}/metrics", JobMetricsHandler),
            ("api/jobs/{job_id}/files", JobFilesHandler),
            ("api/jobs/{job_id}/files/{path}", JobFileHandler),
            ("api/models", ModelsHandler),
            ("api/models/{model_id}", ModelEntryHandler),
            ("api/models/{model_id}/versions/{version}", ModelVersionHandler),
            ("api/models/{model_id}/aliases/{alias}", ModelAliasHandler),
            ("api/services", ServicesHandler),
            ("api/services/{service}", ServiceEntryHandler),
            ("api/services/{service}/rollback", ServiceRollbackHandler),
            ("api/services/{service}/restart", ServiceRestartHandler),
            ("api/services/{service}/predict", ServicePredictHandler),
            ("api/services/{service}/metadata", ServiceMetadataHandler),
            ("serve/{service}/{path}", ServeProxyHandler),
            ("oauth_callback", OAuthCallbackHandler),
        ]

    def make_app(self) -> web.Application:
        hub_auth = HubOAuth(parent=self, cache_max_age=60)
        directory = HubDirectory(
            hub_auth.api_url, hub_auth.api_token, ttl=self.identity_cache_seconds
        )
        routes = self.routes()
        handlers = [(self.service_prefix + route_regex(path), handler) for path, handler in routes]
        return web.Application(
            handlers,
            default_handler_class=NotFoundHandler,
            kubeai=self,
            template_path=str(files(__package__).joinpath("templates")),
            hub_auth=hub_auth,
            kubeai_directory=directory,
            # Only the OAuth state/user cookies use it; losing it on restart
            # means users pass the (silent) hub OAuth once more.
            cookie_secret=os.urandom(32),
            login_url=hub_auth.login_url,
            kubeai_metrics=self.metrics,
            # handler class -> its route template, the latency metric's label
            kubeai_routes={handler: "/" + path for path, handler in reversed(routes)},
        )

    async def serve(self) -> None:
        """Listen until SIGTERM or SIGINT, then stop accepting and return."""
        await self.start_backends()
        reconciler = asyncio.create_task(self.job_manager.reconcile_forever(self.reconcile_interval))
        server = HTTPServer(self.make_app(), xheaders=True)
        server.listen(self.port, self.ip)
        self.log.info("kubeai service %s (%s mode) at http://%s:%s%s", __version__, self.mode, self.ip, self.port, self.service_prefix)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.log.info("kubeai service stopping")
        server.stop()
        reconciler.cancel()
        await server.close_all_connections()
        await self.backend.stop()
        await self.serving_backend.stop()

    def start(self) -> None:
        asyncio.run(self.serve())


def main(argv=None) -> None:
    app = KubeAIService()
    app.load_config(argv)
    app.start()
