"""The environment of the processes local mode starts with users' code (jobs, model servers).

They start from the hub service's own environment, which holds what users'
code must never see: the service's hub API token (``JUPYTERHUB_API_TOKEN``,
with which it may read every user and group), its OAuth client, its store's
URL (``KUBEAI_DB_URL``, perhaps with a password) and the metrics token. On a
cluster, jobs and model servers run in pods of their own and never had it;
locally, this keeps it that way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Prefixes of the hub service's own settings and credentials.
SERVICE_ONLY_PREFIXES = ("JUPYTERHUB_", "KUBEAI_", "CONFIGPROXY_")


def user_code_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without the service's own variables, plus ``extra``."""
    base = os.environ if base is None else base
    env = {name: value for name, value in base.items() if not name.startswith(SERVICE_ONLY_PREFIXES)}
    env.update(extra or {})
    return env
