"""The hub configuration of jupyter_kubeai, for ``jupyterhub_config.py``.

:func:`configure` fills a JupyterHub config object for one of two modes,
picked by the environment variable ``KUBEAI_MODE``:

``local`` (default)
    No cluster. Users' JupyterLab servers are local processes
    (``LocalKubeAISpawner``) at home in a local share under
    ``$KUBEAI_STATE_DIR/share``; demo users ``admin`` (hub admin), ``alice``
    and ``bob`` (project ``vision``) log in with the password in
    ``$KUBEAI_STATE_DIR/demo-password``. The hub listens on 127.0.0.1:8000.

``kubernetes``
    Users' servers are pods (``KubeAISpawner``). Authentication, the hub's
    addresses and the image are left to the deployment (e.g. the Zero to
    JupyterHub chart); the kubeai service runs in the hub pod, listens on
    all interfaces, and the proxy and users' pods reach it at
    ``$KUBEAI_SERVICE_URL`` (default ``http://hub:10101``).

The kubeai service is either *managed* (default: the hub starts it as a
subprocess and gives it its environment) or *external*
(``$KUBEAI_SERVICE_EXTERNAL`` or ``configure(c, external_service=True)``):
it runs on its own, e.g. as a sidecar container of the hub pod with its own
probes (``deploy/z2jh-values.yaml``), and the hub only registers its ``url``
and its API token ``$KUBEAI_SERVICE_API_TOKEN``; the service then needs the
``JUPYTERHUB_*`` environment the hub would have given it (see
:func:`external_service_environment`).

Environment variables (all optional):

``KUBEAI_MODE``
    ``local`` or ``kubernetes``.
``KUBEAI_STATE_DIR``
    Local state: hub database, cookie secret, demo password, the local share,
    the service's store. Default: ``.kubeai`` beside ``jupyterhub_config.py``.
``KUBEAI_SERVICE_PORT``
    Port of the kubeai service in local mode (default 10101).
``KUBEAI_DB_URL``
    The kubeai service's store (catalog, ...), read by the spawners too.
    Default: SQLite ``kubeai.sqlite`` in the state folder.
``KUBEAI_INITIAL_CATALOG``
    A YAML or JSON file with the catalog a new store starts with (see
    ``KubeAIService.initial_catalog``). Local mode defaults to a demo catalog.
``KUBEAI_SERVICE_EXTERNAL``
    ``1`` (or ``true``/``yes``): register the kubeai service as external
    (no ``command``); the hub does not start it.
``KUBEAI_SERVICE_API_TOKEN``
    The external service's hub API token (required with
    ``KUBEAI_SERVICE_EXTERNAL``); the service must be given the same value as
    ``JUPYTERHUB_API_TOKEN``. In a cluster both come from one Secret.

Everything set here is ordinary JupyterHub configuration: anything set after
:func:`configure` in ``jupyterhub_config.py``, or on the ``jupyterhub``
command line, wins.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .service.app import MODES

SERVICE_NAME = "kubeai"
#: Settings the hub process passes on to the service process.
FORWARDED_ENV = ("KUBEAI_STATE_DIR", "KUBEAI_DB_URL", "KUBEAI_INITIAL_CATALOG", "KUBEAI_SERVICE_CONFIG")

#: The demo users of local mode: name -> hub admin or not.
DEMO_USERS = {"admin": True, "alice": False, "bob": False}
#: The demo projects (hub groups) of local mode: group -> members.
DEMO_GROUPS = {"vision": ["alice", "bob"]}
#: The catalog a new local-mode store starts with.
DEMO_CATALOG = Path(__file__).parent / "local" / "demo-catalog.yaml"


def _mode() -> str:
    mode = os.environ.get("KUBEAI_MODE", "local")
    if mode not in MODES:
        raise ValueError(f"KUBEAI_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def state_dir_for(project_dir: str | os.PathLike) -> Path:
    """The state folder: ``$KUBEAI_STATE_DIR``, else ``<project_dir>/.kubeai``."""
    return Path(os.environ.get("KUBEAI_STATE_DIR") or Path(project_dir) / ".kubeai").absolute()


#: Values of ``$KUBEAI_SERVICE_EXTERNAL`` that mean yes.
_TRUE = ("1", "true", "yes", "on")


def _external_from_env() -> bool:
    return os.environ.get("KUBEAI_SERVICE_EXTERNAL", "").strip().lower() in _TRUE


def configure(c, *, project_dir: str | os.PathLike | None = None, external_service: bool | None = None) -> str:
    """Configure the hub in ``c`` for ``$KUBEAI_MODE``; return the mode.

    ``project_dir`` is where ``jupyterhub_config.py`` lives: the default
    state folder is ``<project_dir>/.kubeai`` and configurable-http-proxy is
    taken from ``<project_dir>/proxy/node_modules`` when installed there.

    ``external_service`` (default: ``$KUBEAI_SERVICE_EXTERNAL``): register the
    kubeai service with its ``url`` and ``$KUBEAI_SERVICE_API_TOKEN`` only,
    for a service the deployment runs itself (no ``command``).
    """
    mode = _mode()
    external = _external_from_env() if external_service is None else external_service
    project_dir = Path(project_dir or os.getcwd()).absolute()
    state_dir = state_dir_for(project_dir)
    # The spawner, the demo login and the service read it too.
    os.environ["KUBEAI_STATE_DIR"] = str(state_dir)

    _configure_roles(c)
    c.Spawner.default_url = "/lab"
    if mode == "local":
        _configure_local(c, project_dir, state_dir, external=external)
    else:
        _configure_kubernetes(c, external=external)
    return mode


def _configured_list(section, name: str) -> list:
    """A list setting as configured so far (``[]`` when unset)."""
    return list(section[name]) if name in section else []


#: What the in-cluster Kubernetes client and the backends read, passed on to the service in kubernetes mode.
CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAMESPACE")


def external_service_environment(url: str, *, hub_api_url: str, base_url: str = "/") -> dict[str, str]:
    """The ``JUPYTERHUB_*`` environment an external kubeai service at ``url`` needs.

    The same as JupyterHub gives a managed service (``jupyterhub.services.service``):
    what ``HubOAuth`` reads (API URL, service prefix, OAuth client id, callback
    and access scopes) and the service's own name and URL. The API token
    (``JUPYTERHUB_API_TOKEN``) is not here: it comes from a Secret.
    """
    prefix = f"{base_url.rstrip('/')}/services/{SERVICE_NAME}/"
    scopes = json.dumps(["access:services", f"access:services!service={SERVICE_NAME}"])
    return {
        "JUPYTERHUB_SERVICE_NAME": SERVICE_NAME,
        "JUPYTERHUB_SERVICE_URL": url,
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_BASE_URL": base_url,
        "JUPYTERHUB_CLIENT_ID": f"service-{SERVICE_NAME}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": scopes,
        # The name before JupyterHub 3, still set for managed services.
        "JUPYTERHUB_OAUTH_SCOPES": scopes,
    }


def _service(c, *, mode: str, url: str, args: list[str] = (), environment: dict[str, str] | None = None,
             external: bool = False) -> None:
    services = [s for s in _configured_list(c.JupyterHub, "services") if s.get("name") != SERVICE_NAME]
    service = {
        "name": SERVICE_NAME,
        "url": url,
        "oauth_no_confirm": True,
        # Listed in the hub's Services menu: the service's own page.
        "display": True,
    }
    if external:
        # Run by the deployment (e.g. a sidecar container with its own probes);
        # the hub knows its address and accepts its token, nothing more.
        token = os.environ.get("KUBEAI_SERVICE_API_TOKEN", "")
        if not token:
            raise RuntimeError(
                "KUBEAI_SERVICE_EXTERNAL is set but KUBEAI_SERVICE_API_TOKEN is empty: give the hub the "
                "kubeai service's API token (the same value as the service's JUPYTERHUB_API_TOKEN)"
            )
        service["api_token"] = token
    else:
        service["command"] = [sys.executable, "-m", "jupyter_kubeai.service", *args]
        # A managed service gets only this environment (and JupyterHub's own):
        # pass on the settings the hub process was given.
        service["environment"] = {
            "KUBEAI_MODE": mode,
            **{k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)},
            **{k: os.environ[k] for k in (CLUSTER_ENV if mode == "kubernetes" else ()) if os.environ.get(k)},
            **(environment or {}),
        }
    services.append(service)
    c.JupyterHub.services = services


def _configure_roles(c) -> None:
    """Who may do what with the kubeai service.

    - the service reads users and groups (who is asking, their projects);
    - users, and the tokens of their servers, may call the service.
    """
    access = f"access:services!service={SERVICE_NAME}"
    ours = ("kubeai-service", "user", "server")
    roles = [r for r in _configured_list(c.JupyterHub, "load_roles") if r.get("name") not in ours]
    roles += [
        {
            "name": "kubeai-service",
            "description": "The kubeai hub service: read users, groups and servers.",
            "scopes": ["read:users", "list:users", "read:groups", "list:groups", "read:servers"],
            "services": [SERVICE_NAME],
        },
        {"name": "user", "scopes": ["self", access]},
        {"name": "server", "scopes": ["users:activity!user", "access:servers!server", access]},
    ]
    c.JupyterHub.load_roles = roles


def _configure_local(c, project_dir: Path, state_dir: Path, *, external: bool = False) -> None:
    from .local.auth import DemoAuthenticator
    from .local.spawner import LocalKubeAISpawner

    state_dir.mkdir(parents=True, exist_ok=True)
    service_port = int(os.environ.get("KUBEAI_SERVICE_PORT", "10101"))
    service_url = f"http://127.0.0.1:{service_port}"

    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = 8000
    c.JupyterHub.db_url = f"sqlite:///{state_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.pid_file = str(state_dir / "jupyterhub-proxy.pid")
    chp = project_dir / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
    if chp.exists():
        c.ConfigurableHTTPProxy.command = [str(chp)]
    elif not shutil.which("configurable-http-proxy"):
        raise RuntimeError(
            f"configurable-http-proxy is not installed: run `make run` (it installs it into {chp.parent.parent})"
        )

    c.JupyterHub.authenticator_class = DemoAuthenticator
    c.Authenticator.allowed_users = set(DEMO_USERS)
    c.Authenticator.admin_users = {name for name, admin in DEMO_USERS.items() if admin}
    c.JupyterHub.load_groups = {group: {"users": users} for group, users in DEMO_GROUPS.items()}

    c.JupyterHub.spawner_class = LocalKubeAISpawner
    c.LocalKubeAISpawner.share_root = str(state_dir / "share")
    c.LocalKubeAISpawner.kubeai_service_url = f"{service_url}/services/{SERVICE_NAME}/"
    c.LocalKubeAISpawner.kubeai_mode = "local"

    environment = {} if os.environ.get("KUBEAI_INITIAL_CATALOG") else {"KUBEAI_INITIAL_CATALOG": str(DEMO_CATALOG)}
    _service(c, mode="local", url=service_url, environment=environment, external=external)


def _configure_kubernetes(c, *, external: bool = False) -> None:
    from .spawner import KubeAISpawner

    url = os.environ.get("KUBEAI_SERVICE_URL", "http://hub:10101").rstrip("/")
    c.JupyterHub.spawner_class = KubeAISpawner
    c.KubeAISpawner.kubeai_service_url = f"{url}/services/{SERVICE_NAME}/"
    c.KubeAISpawner.kubeai_mode = "kubernetes"
    _service(c, mode="kubernetes", url=url, args=["--KubeAIService.ip=0.0.0.0"], external=external)
