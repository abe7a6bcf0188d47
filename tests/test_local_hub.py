"""Local mode pieces that run inside the hub: demo login, spawner, config."""

import json
import os
import stat
import sys
from types import SimpleNamespace

import pytest
from jupyterhub.app import JupyterHub
from traitlets.config import Config

from jupyter_kubeai import hubconfig
from jupyter_kubeai.local.auth import DemoAuthenticator, is_loopback_host, read_or_create_password
from jupyter_kubeai.local.spawner import LocalKubeAISpawner
from jupyter_kubeai.spawner import KubeAISpawner


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("", False),
        (None, False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("hub.example.org", False),
    ],
)
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


def test_password_file_is_random_private_and_stable(tmp_path):
    path = tmp_path / "state" / "demo-password"
    first = read_or_create_password(path)
    assert len(first) >= 12
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_password(path) == first
    other = read_or_create_password(tmp_path / "other" / "demo-password")
    assert other != first


def make_authenticator(tmp_path, bind_url="http://127.0.0.1:8000/", **config):
    c = Config()
    c.Authenticator.allowed_users = {"admin", "alice", "bob"}
    c.DemoAuthenticator.password_file = str(tmp_path / "demo-password")
    for key, value in config.items():
        setattr(c.DemoAuthenticator, key, value)
    # The hub app itself, as JupyterHub passes it (parent=app), not started.
    hub = JupyterHub(config=Config({"JupyterHub": {"bind_url": bind_url}}))
    return DemoAuthenticator(config=c, parent=hub)


async def test_demo_login_needs_a_demo_user_and_the_password(tmp_path):
    auth = make_authenticator(tmp_path)
    auth.check_allow_config()
    password = (tmp_path / "demo-password").read_text().strip()
    assert await auth.authenticate(None, {"username": "alice", "password": password}) == "alice"
    assert await auth.authenticate(None, {"username": "Alice", "password": password}) == "alice"
    assert await auth.authenticate(None, {"username": "alice", "password": "wrong-password"}) is None
    assert await auth.authenticate(None, {"username": "alice", "password": ""}) is None
    assert await auth.authenticate(None, {"username": "mallory", "password": password}) is None


@pytest.mark.parametrize("bind_url", ["http://0.0.0.0:8000/", "http://:8000/", "http://10.1.2.3:8000/"])
def test_demo_login_refuses_a_non_loopback_hub(tmp_path, bind_url):
    auth = make_authenticator(tmp_path, bind_url=bind_url)
    with pytest.raises(ValueError, match="this machine only"):
        auth.check_allow_config()
    # An admin may allow it on purpose.
    make_authenticator(tmp_path, bind_url=bind_url, allow_remote_login=True).check_allow_config()


def test_demo_login_refuses_a_short_password(tmp_path):
    with pytest.raises(ValueError, match="at least 8"):
        make_authenticator(tmp_path, password="short").check_allow_config()


@pytest.fixture
def local_config(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEAI_MODE", "local")
    monkeypatch.setenv("KUBEAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KUBEAI_SERVICE_PORT", "12345")
    (tmp_path / "proxy/node_modules/.bin").mkdir(parents=True)
    (tmp_path / "proxy/node_modules/.bin/configurable-http-proxy").touch()
    c = Config()
    assert hubconfig.configure(c, project_dir=tmp_path) == "local"
    return c


def test_local_mode_config(local_config, tmp_path):
    c = local_config
    state = tmp_path / "state"
    assert c.JupyterHub.ip == "127.0.0.1"
    assert c.JupyterHub.port == 8000
    assert c.JupyterHub.spawner_class is LocalKubeAISpawner
    assert c.JupyterHub.authenticator_class is DemoAuthenticator
    assert c.JupyterHub.db_url == f"sqlite:///{state / 'jupyterhub.sqlite'}"
    assert c.ConfigurableHTTPProxy.command == [str(tmp_path / "proxy/node_modules/.bin/configurable-http-proxy")]
    assert c.Authenticator.admin_users == {"admin"}
    assert c.Authenticator.allowed_users == {"admin", "alice", "bob"}
    assert c.JupyterHub.load_groups == {"vision": {"users": ["alice", "bob"]}}
    assert c.LocalKubeAISpawner.share_root == str(state / "share")
    assert c.LocalKubeAISpawner.kubeai_service_url == "http://127.0.0.1:12345/services/kubeai/"
    [service] = c.JupyterHub.services
    assert service["name"] == "kubeai"
    assert service["url"] == "http://127.0.0.1:12345"
    assert service["command"][1:] == ["-m", "jupyter_kubeai.service"]
    assert service["environment"] == {
        "KUBEAI_MODE": "local",
        "KUBEAI_STATE_DIR": str(state),
        "KUBEAI_INITIAL_CATALOG": str(hubconfig.DEMO_CATALOG),
    }


def test_roles_let_users_and_their_servers_reach_the_service(local_config):
    roles = {r["name"]: r for r in local_config.JupyterHub.load_roles}
    assert "access:services!service=kubeai" in roles["user"]["scopes"]
    assert "self" in roles["user"]["scopes"]
    assert "access:services!service=kubeai" in roles["server"]["scopes"]
    assert roles["kubeai-service"]["services"] == ["kubeai"]
    assert "read:users" in roles["kubeai-service"]["scopes"]


def test_configure_keeps_other_services_and_roles(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEAI_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no proxy anywhere: must be told
    c = Config()
    c.JupyterHub.services = [{"name": "other", "url": "http://127.0.0.1:9"}]
    c.JupyterHub.load_roles = [{"name": "ops", "scopes": ["admin:users"]}]
    with pytest.raises(RuntimeError, match="make run"):
        hubconfig.configure(c, project_dir=tmp_path)
    (tmp_path / "proxy/node_modules/.bin").mkdir(parents=True)
    (tmp_path / "proxy/node_modules/.bin/configurable-http-proxy").touch()
    hubconfig.configure(c, project_dir=tmp_path)
    hubconfig.configure(c, project_dir=tmp_path)  # twice: nothing doubles
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "kubeai"]
    assert sorted(r["name"] for r in c.JupyterHub.load_roles) == ["kubeai-service", "ops", "server", "user"]


def test_kubernetes_mode_config(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEAI_MODE", "kubernetes")
    monkeypatch.setenv("KUBEAI_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("KUBEAI_SERVICE_URL", raising=False)
    c = Config()
    assert hubconfig.configure(c, project_dir=tmp_path) == "kubernetes"
    assert c.JupyterHub.spawner_class is KubeAISpawner
    assert c.KubeAISpawner.kubeai_service_url == "http://hub:10101/services/kubeai/"
    [service] = c.JupyterHub.services
    assert service["url"] == "http://hub:10101"
    assert "--KubeAIService.ip=0.0.0.0" in service["command"]
    assert service["environment"]["KUBEAI_MODE"] == "kubernetes"
    # Local-mode settings stay out of a cluster hub.
    assert "authenticator_class" not in c.JupyterHub
    assert "ip" not in c.JupyterHub


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_kubernetes_mode_with_an_external_service(tmp_path, monkeypatch, how):
    """The service runs on its own (a sidecar): the hub gets its url and token, no command."""
    from jupyterhub.services.service import Service

    monkeypatch.setenv("KUBEAI_MODE", "kubernetes")
    monkeypatch.setenv("KUBEAI_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("KUBEAI_SERVICE_URL", raising=False)
    monkeypatch.setenv("KUBEAI_SERVICE_API_TOKEN", "0123456789abcdef")
    c = Config()
    if how == "argument":
        monkeypatch.delenv("KUBEAI_SERVICE_EXTERNAL", raising=False)
        hubconfig.configure(c, project_dir=tmp_path, external_service=True)
    else:
        monkeypatch.setenv("KUBEAI_SERVICE_EXTERNAL", "1")
        hubconfig.configure(c, project_dir=tmp_path)
    [service] = c.JupyterHub.services
    assert service == {"name": "kubeai", "url": "http://hub:10101", "api_token": "0123456789abcdef",
                       "oauth_no_confirm": True, "display": True}
    # Every key is a field JupyterHub takes (it refuses others at start).
    assert set(service) <= set(Service.class_traits(input=True))
    # The roles are the same as for a managed service.
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["kubeai-service"]["services"] == ["kubeai"]
    assert "access:services!service=kubeai" in roles["user"]["scopes"]
    assert c.KubeAISpawner.kubeai_service_url == "http://hub:10101/services/kubeai/"


def test_an_external_service_needs_its_token(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEAI_MODE", "kubernetes")
    monkeypatch.setenv("KUBEAI_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KUBEAI_SERVICE_EXTERNAL", "true")
    monkeypatch.delenv("KUBEAI_SERVICE_API_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="KUBEAI_SERVICE_API_TOKEN"):
        hubconfig.configure(Config(), project_dir=tmp_path)
    # Told no, it is managed again.
    monkeypatch.setenv("KUBEAI_SERVICE_EXTERNAL", "0")
    c = Config()
    hubconfig.configure(c, project_dir=tmp_path)
    assert "command" in c.JupyterHub.services[0]


def test_external_service_environment_is_what_a_managed_service_gets():
    from jupyterhub.services.service import _ServiceSpawner

    env = hubconfig.external_service_environment("http://hub:10101", hub_api_url="http://127.0.0.1:8081/hub/api")
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/kubeai/"
    assert env["JUPYTERHUB_CLIENT_ID"] == "service-kubeai"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/services/kubeai/oauth_callback"
    scopes = _ServiceSpawner(_service_name="kubeai").oauth_access_scopes
    assert json.loads(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]) == json.loads(env["JUPYTERHUB_OAUTH_SCOPES"]) == scopes
    assert "JUPYTERHUB_API_TOKEN" not in env  # from a Secret, never in config


def test_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv("KUBEAI_MODE", "cloud")
    with pytest.raises(ValueError, match="KUBEAI_MODE must be one of local, kubernetes"):
        hubconfig.configure(Config())


def fake_user(name, groups):
    return SimpleNamespace(
        name=name,
        groups=[SimpleNamespace(name=g) for g in groups],
        escaped_name=name,
        id=1,
        url=f"/user/{name}/",
        server=None,
    )


@pytest.mark.parametrize("euid, allow_root", [(0, True), (1000, False)])
def test_local_spawner_args_and_env(tmp_path, monkeypatch, euid, allow_root):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    spawner = LocalKubeAISpawner(
        user=fake_user("alice", ["vision", "nlp"]),
        share_root=str(tmp_path),
        kubeai_service_url="http://127.0.0.1:1/services/kubeai",
    )
    assert ("--allow-root" in spawner.get_args()) is allow_root
    assert spawner.home_dir == str(tmp_path / "users" / "alice")
    env = spawner.kubeai_env()
    home = tmp_path / "users" / "alice"
    assert env == {
        "KUBEAI_SERVICE_URL": "http://127.0.0.1:1/services/kubeai/",
        "KUBEAI_MODE": "local",
        "KUBEAI_PROJECTS": json.dumps(["nlp", "vision"]),
        "KUBEAI_MOUNTS": json.dumps(
            {
                "home": str(home),
                "projects": {"nlp": str(home / "projects/nlp"), "vision": str(home / "projects/vision")},
                "global": str(home / "global"),
            }
        ),
    }


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: jhub}}]
current-context: x
"""


async def test_kubeai_spawner_gives_pods_the_kubeai_environment(tmp_path, monkeypatch):
    import kubernetes_asyncio.config.kube_config as kube_config
    from kubespawner import KubeSpawner

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    # Read once at import from $KUBECONFIG, so set where it is read.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
    spawner = KubeAISpawner(
        _mock=True,
        user=fake_user("alice", ["vision"]),
        kubeai_service_url="http://hub:10101/services/kubeai/",
    )
    assert isinstance(spawner, KubeSpawner)
    env = spawner.get_env()
    assert env["KUBEAI_MODE"] == "kubernetes"
    assert env["KUBEAI_SERVICE_URL"] == "http://hub:10101/services/kubeai/"
    assert json.loads(env["KUBEAI_PROJECTS"]) == ["vision"]


async def test_local_spawner_checks_choices_and_says_what_it_starts(tmp_path, monkeypatch):
    from jupyter_kubeai.store.catalog import CatalogStore
    from jupyter_kubeai.store.schema import open_engine, upgrade

    url = f"sqlite:///{tmp_path / 'kubeai.sqlite'}"
    engine = open_engine(url)
    upgrade(engine)
    CatalogStore(engine).seed(
        images=[{"name": "python", "image": "jupyter-kubeai/python:3.11", "default": True},
                {"name": "torch", "image": "jupyter-kubeai/torch:2"}],
        profiles=[{"name": "small", "default": True, "memory_limit": "2Gi"}, {"name": "gpu", "gpus": 1}],
    )
    spawner = LocalKubeAISpawner(
        user=fake_user("alice", ["vision"]),
        share_root=str(tmp_path / "share"),
        catalog_url=url,
        local_gpus=0,
        image_environments={"torch": "/opt/envs/torch/bin/python"},
    )
    await spawner._run_apply_user_options({"profile": "small", "image": "torch"})
    assert spawner.cmd == ["/opt/envs/torch/bin/python", "-m", "jupyterhub.singleuser"]
    assert spawner.mem_limit == 2 * 1024**3
    assert spawner.kubeai_env()["KUBEAI_IMAGE"] == "torch"
    events = [e["message"] async for e in spawner.progress()]
    assert events[0] == "Starting small (1 CPU, 2Gi memory) with image torch"
    assert events[1].startswith(f"Storage: your folder at {tmp_path / 'share/users/alice'}; projects: vision at ")

    # An unmapped image runs in the hub's own environment.
    await spawner._run_apply_user_options({"profile": "small", "image": "python"})
    assert spawner.cmd[0] == sys.executable

    from tornado import web

    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options({"profile": "gpu"})
    assert error.value.status_code == 400
    assert error.value.jupyterhub_message == "Size 'gpu' needs 1 GPU(s), but this machine has none; pick a CPU size."


def test_the_local_server_and_its_terminals_find_python_and_kubeai(tmp_path, monkeypatch):
    """The hub may run with a PATH that lacks its environment (``make run`` calls ``.venv/bin/jupyterhub``):
    the server's environment puts the bin folder of the Python it runs first, so a Lab terminal finds
    ``python`` and ``kubeai`` there."""
    import shutil

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    spawner = LocalKubeAISpawner(user=fake_user("alice", []), share_root=str(tmp_path),
                                 kubeai_service_url="http://127.0.0.1:1/services/kubeai/",
                                 hub=SimpleNamespace(public_host="", api_url="http://127.0.0.1:8081/hub/api",
                                                     base_url="/hub/"))
    spawner.api_token = "t"
    path = spawner.get_env()["PATH"]
    venv_bin = os.path.dirname(sys.executable)
    assert path.split(os.pathsep) == [venv_bin, "/usr/bin", "/bin"]
    assert shutil.which("kubeai", path=path) == os.path.join(venv_bin, "kubeai")
    assert shutil.which("python", path=path) == os.path.join(venv_bin, "python")
    # A server of another environment (a catalog image mapped to it) finds that environment's tools.
    spawner.cmd = ["/opt/envs/torch/bin/python", "-m", "jupyterhub.singleuser"]
    assert spawner.get_env()["PATH"].split(os.pathsep)[0] == "/opt/envs/torch/bin"
