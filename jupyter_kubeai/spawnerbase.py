"""What every KubeAI spawner shares, in local and in Kubernetes mode.

:class:`KubeAISpawnerMixin` gives the single-user server the environment the
lab side needs to reach the hub service (``KUBEAI_*`` variables) and the
user's projects; both ``LocalKubeAISpawner`` and ``KubeAISpawner`` mix it in.
"""

from __future__ import annotations

import json

from traitlets import Unicode
from traitlets.config import Configurable

#: The environment variables the lab side reads, one place for their names.
ENV_SERVICE_URL = "KUBEAI_SERVICE_URL"
ENV_MODE = "KUBEAI_MODE"
ENV_PROJECTS = "KUBEAI_PROJECTS"


class KubeAISpawnerMixin(Configurable):
    """Mixed into a JupyterHub spawner (before the spawner class)."""

    kubeai_service_url = Unicode(
        "",
        config=True,
        help="""URL at which single-user servers reach the hub service "kubeai".

        Its value, with a trailing slash, is given to the server as
        ``$KUBEAI_SERVICE_URL``; the server extension sends every
        ``/kubeai/api/...`` request there with the user's own hub token.
        ``jupyter_kubeai.hubconfig`` sets it: in local mode the service's own
        loopback address, in Kubernetes mode the hub's in-cluster address.
        Left empty, the lab panel says the service is not configured.
        """,
    )

    kubeai_mode = Unicode(
        "local",
        config=True,
        help="""The mode given to the lab as ``$KUBEAI_MODE``: ``local`` or ``kubernetes``.""",
    )

    @property
    def project_names(self) -> list[str]:
        """The user's hub groups (their projects), read at every spawn."""
        return sorted(group.name for group in self.user.groups)

    def kubeai_env(self) -> dict[str, str]:
        """The ``KUBEAI_*`` environment for the single-user server."""
        env = {ENV_MODE: self.kubeai_mode, ENV_PROJECTS: json.dumps(self.project_names)}
        if self.kubeai_service_url:
            env[ENV_SERVICE_URL] = self.kubeai_service_url.rstrip("/") + "/"
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.kubeai_env())
        return env
