"""``KubeAIServerExtension``: routes the lab extension's calls to the hub service.

The browser talks only to its own Jupyter server (Jupyter auth and XSRF);
this extension forwards ``/kubeai/api/<path>`` to
``$KUBEAI_SERVICE_URL/api/<path>`` with ``Authorization: token
$JUPYTERHUB_API_TOKEN`` — the user's own hub token, never another identity.
The browser's cookies and credentials are never passed on. Job snapshots
are written here, in the user's home (:mod:`.jobs`).
"""

from __future__ import annotations

import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Unicode, default

from ..spawnerbase import ENV_SERVICE_URL
from .handlers import ServiceProxyHandler
from .jobs import JobFilesHandler, JobMetricsHandler, SubmitJobHandler


class KubeAIServerExtension(ExtensionApp):
    """Jupyter Server extension: the lab side of jupyter_kubeai."""

    name = "jupyter_kubeai"

    service_url = Unicode(
        config=True,
        help=f"""Base URL of the hub service "kubeai" (ending in ``/services/kubeai/``).

        Default: ``${ENV_SERVICE_URL}``, set by the KubeAI spawners.
        """,
    )

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get(ENV_SERVICE_URL, "")

    request_timeout = Float(
        60.0,
        config=True,
        help="""Seconds to wait for the hub service to answer a forwarded request
        (streams such as followed logs are not limited by it).""",
    )

    @property
    def hub_api_token(self) -> str:
        """The user's own hub token, given to this server by the hub."""
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def initialize_handlers(self):
        self.handlers.extend([
            (r"/kubeai/api/(.*)", ServiceProxyHandler),
            (r"/kubeai/jobs", SubmitJobHandler),
            (r"/kubeai/jobs/([^/]+)/metrics", JobMetricsHandler),
            (r"/kubeai/jobs/([^/]+)/files", JobFilesHandler),
        ])
