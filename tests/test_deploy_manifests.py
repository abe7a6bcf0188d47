"""deploy/: every manifest validates against the Kubernetes schemas, and the
Zero to JupyterHub values agree with the manifests and with the code.

- Each manifest in deploy/ (RBAC, the catalog ConfigMap, the share PVC
  examples) validates with tests/k8s_schema.py, unknown fields being errors.
- The Kubernetes objects embedded in the values (volumes, mounts, env, service
  ports, network policy rules) validate as the types the chart passes them as.
- The values' Python (hub.extraConfig, the shared settings file) compiles,
  and run as the chart runs them they configure KubeAISpawner and the kubeai
  service as an external service (url and API token, no command), which a
  real JupyterHub accepts; every setting it names exists.
- The kubeai container (hub.extraContainers) validates in a pod spec with the
  chart's hub container; its probes are the service's health and ready
  routes; its environment is what JupyterHub gives a managed service (what
  HubOAuth reads resolves to what the hub registers), its tokens come from
  the Secret the hub reads.
- Names agree everywhere: service account, PVC, ConfigMap and its key, port
  10101, Secret names and keys, the KUBEAI_* variables the code reads.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from traitlets.config import Config, PyFileConfigLoader

from jupyter_kubeai import hubconfig
from jupyter_kubeai.kube.permissions import KSERVE_NAMESPACE
from jupyter_kubeai.service import app as service_app
from jupyter_kubeai.service.app import KubeAIService
from jupyter_kubeai.service.handlers import HealthHandler
from jupyter_kubeai.service.ops_handlers import MetricsHandler, ReadyHandler
from jupyter_kubeai.spawner import KubeAISpawner
from jupyter_kubeai.store.catalog import CatalogStore
from jupyter_kubeai.store.schema import open_engine, upgrade

from k8s_schema import validate_core, validate_custom

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
VALUES_FILE = DEPLOY / "z2jh-values.yaml"
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p != VALUES_FILE)
NAMESPACE = "jupyterhub"
PORT = 10101
SIDECAR = "kubeai"
#: API groups of the operators' kinds in deploy/ (validated against ../shared/crds).
CRD_GROUPS = {"scheduling.volcano.sh", "kueue.x-k8s.io"}
#: Cluster-scoped kinds among the manifests.
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "PersistentVolume", "Queue", "ClusterQueue", "ResourceFlavor"}
#: The Secret the admin creates (docs/admin-guide.md): key -> what it is.
SECRET = "kubeai-secrets"
SECRET_KEYS = {"api-token", "metrics-token"}
#: Volumes of the hub pod the chart makes itself (hub/deployment.yaml, 4.x):
#: the hub PVC (hub.db.type sqlite-pvc) and the hub.extraFiles Secret.
CHART_VOLUMES = {
    "pvc": {"name": "pvc", "persistentVolumeClaim": {"claimName": "hub-db-dir"}},
    "files": {"name": "files", "secret": {"secretName": "hub", "items": [{"key": "kubeai-config", "path": "kubeai-config"}]}},
}
#: The chart's hub container as far as the pod spec needs it.
CHART_HUB_CONTAINER = {
    "name": "hub",
    "image": "registry.example.org/kubeai/hub:0.1.0",
    "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py", "--upgrade-db"],
    "ports": [{"name": "http", "containerPort": 8081}],
    "volumeMounts": [{"name": "pvc", "mountPath": "/srv/jupyterhub"}],
}


def docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_objects() -> list[dict]:
    return [doc for path in MANIFESTS for doc in docs(path)]


def find(kind: str, name: str | None = None) -> list[dict]:
    return [o for o in all_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES_FILE.read_text())


def env_of(values: dict) -> dict[str, dict]:
    """hub.extraEnv as the chart renders it: name -> EnvVar."""
    out = {}
    for name, value in values["hub"]["extraEnv"].items():
        out[name] = {"name": name, "value": value} if isinstance(value, str) else {"name": name, **value}
    return out


def sidecar_of(values: dict) -> dict:
    """The kubeai container (hub.extraContainers)."""
    [container] = [c for c in values["hub"]["extraContainers"] if c["name"] == SIDECAR]
    return container


def sidecar_env(values: dict) -> dict[str, dict]:
    env = sidecar_of(values)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), "an environment variable is set twice"
    return {e["name"]: e for e in env}


def secret_value(name: str, key: str) -> str:
    """What the tests put in Secret ``name``, key ``key``."""
    return f"test-{name}-{key}-0123456789"


def resolve(env: dict[str, dict]) -> dict[str, str]:
    """EnvVars as a container sees them (Secrets from :func:`secret_value`, the namespace ``jupyterhub``)."""
    out = {}
    for name, var in env.items():
        if "value" in var:
            out[name] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            out[name] = secret_value(ref["name"], ref["key"])
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, name
            out[name] = NAMESPACE
    return out


def secret_refs(env: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """name -> (Secret, key) for the variables taken from Secrets."""
    return {name: (var["valueFrom"]["secretKeyRef"]["name"], var["valueFrom"]["secretKeyRef"]["key"])
            for name, var in env.items() if "secretKeyRef" in var.get("valueFrom", {})}


def settings_file(values: dict) -> dict:
    return values["hub"]["extraFiles"]["kubeai-config"]


# --------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_validates(path):
    objects = docs(path)
    assert objects
    for obj in objects:
        if obj["apiVersion"].partition("/")[0] in CRD_GROUPS:
            validate_custom(obj)
        else:
            validate_core(obj)
        namespaced = obj["kind"] not in CLUSTER_KINDS
        # The hub's namespace, but for the doctor's read of KServe's settings, in KServe's.
        expected = KSERVE_NAMESPACE if path.name == "rbac-doctor.yaml" and obj["kind"].startswith("Role") and \
            obj["metadata"].get("namespace") == KSERVE_NAMESPACE else NAMESPACE
        assert (obj["metadata"].get("namespace") == expected) == namespaced, obj["metadata"]["name"]


def test_the_objects_embedded_in_the_values_validate(values):
    hub = values["hub"]
    for volume in hub["extraVolumes"]:
        validate_core(volume, "io.k8s.api.core.v1.Volume", "v1")
    for mount in hub.get("extraVolumeMounts", []):
        validate_core(mount, "io.k8s.api.core.v1.VolumeMount", "v1")
    for container in hub["extraContainers"]:
        validate_core(container, "io.k8s.api.core.v1.Container", "v1")
    for env in env_of(values).values():
        validate_core(env, "io.k8s.api.core.v1.EnvVar", "v1")
    for port in hub["service"]["extraPorts"]:
        validate_core(port, "io.k8s.api.core.v1.ServicePort", "v1")
    policies = [hub["networkPolicy"], values["singleuser"]["networkPolicy"], values["proxy"]["chp"]["networkPolicy"]]
    for policy in policies:
        for rule in policy.get("ingress", []):
            validate_core(rule, "io.k8s.api.networking.v1.NetworkPolicyIngressRule", "networking.k8s.io/v1")
        for rule in policy.get("egress", []):
            validate_core(rule, "io.k8s.api.networking.v1.NetworkPolicyEgressRule", "networking.k8s.io/v1")


def test_the_values_use_only_chart_keys_we_rely_on(values):
    """A guard against typos in top-level and hub keys (the chart's schema forbids unknown ones)."""
    assert set(values) <= {"rbac", "hub", "proxy", "singleuser", "scheduling", "prePuller", "cull", "ingress"}
    assert set(values["hub"]) <= {"image", "serviceAccount", "service", "networkPolicy", "extraEnv", "extraVolumes",
                                  "extraVolumeMounts", "extraFiles", "extraConfig", "config", "db",
                                  "annotations", "labels", "extraContainers"}
    assert values["rbac"] == {"create": False}
    assert values["singleuser"]["storage"] == {"type": "none"}


# --------------------------------------------------------------------------
# The Python in the values
# --------------------------------------------------------------------------

def test_the_python_in_the_values_compiles(values):
    for name, code in values["hub"]["extraConfig"].items():
        compile(code, f"hub.extraConfig.{name}", "exec")
    compile(settings_file(values)["stringData"], "kubeai_config.py", "exec")


def load_settings(values: dict, tmp_path: Path) -> Config:
    path = tmp_path / Path(settings_file(values)["mountPath"]).name
    path.write_text(settings_file(values)["stringData"])
    return PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()


def test_every_setting_in_the_settings_file_exists(values, tmp_path):
    config = load_settings(values, tmp_path)
    classes = {cls.__name__: cls for cls in [*KubeAIService().classes, KubeAISpawner]}
    for section, traits in config.items():
        assert section in classes, f"c.{section}: no such configurable"
        configurable = classes[section].class_traits(config=True)
        for trait in traits:
            assert trait in configurable, f"c.{section}.{trait}: no such setting"


@pytest.fixture
def hub_config(values, tmp_path, monkeypatch) -> Config:
    """``c`` after the values' extraConfig ran, as in the hub pod (its environment from hub.extraEnv)."""
    settings = tmp_path / "kubeai_config.py"
    settings.write_text(settings_file(values)["stringData"])
    for name in ("KUBEAI_SERVICE_EXTERNAL", "KUBEAI_SERVICE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in resolve(env_of(values)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBEAI_SERVICE_CONFIG", str(settings))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    c = Config()
    for name, code in sorted(values["hub"]["extraConfig"].items()):  # the chart runs them by name
        exec(compile(code, name, "exec"), {"c": c, "get_config": lambda: c})
    return c


def test_the_extra_config_makes_kubeaispawner_and_an_external_kubeai_service(values, hub_config):
    c = hub_config
    assert c.JupyterHub.spawner_class is KubeAISpawner
    assert c.KubeAISpawner.kubeai_mode == "kubernetes"
    assert c.KubeAISpawner.kubeai_service_url == f"http://hub:{PORT}/services/kubeai/"
    [service] = [s for s in c.JupyterHub.services if s["name"] == hubconfig.SERVICE_NAME]
    # External: the kubeai container runs it; the hub knows its url and token only.
    assert "command" not in service and "environment" not in service
    assert service["url"] == env_of(values)["KUBEAI_SERVICE_URL"]["value"]
    assert urlparse(service["url"]).port == PORT
    assert service["api_token"] == os.environ["KUBEAI_SERVICE_API_TOKEN"]
    assert service["api_token"] == resolve(sidecar_env(values))["JUPYTERHUB_API_TOKEN"]
    # The roles still grant the service, and users and their servers its access.
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["kubeai-service"]["services"] == [hubconfig.SERVICE_NAME]
    assert {"read:users", "list:users", "read:groups", "list:groups"} <= set(roles["kubeai-service"]["scopes"])
    access = f"access:services!service={hubconfig.SERVICE_NAME}"
    assert access in roles["user"]["scopes"] and access in roles["server"]["scopes"]
    # The spawner sees the shared settings too.
    assert c.KubeSettings.share_claim_name == "kubeai-share"


@pytest.fixture
def hub_app(hub_config):
    """A JupyterHub (in-memory database) that loaded the values' services and roles, as the hub pod does."""
    from jupyterhub.app import JupyterHub

    c = hub_config
    c.JupyterHub.db_url = "sqlite://"
    app = JupyterHub(config=c)
    app.init_db()
    app.init_hub()
    app.init_oauth()
    app.init_services()
    yield app
    app.db.close()


def test_jupyterhub_takes_the_service_as_external_with_oauth(values, hub_app):
    service = hub_app._service_map[hubconfig.SERVICE_NAME]
    assert not service.managed
    assert service.oauth_available
    token = resolve(sidecar_env(values))["JUPYTERHUB_API_TOKEN"]
    assert hub_app.service_tokens[token] == hubconfig.SERVICE_NAME


# --------------------------------------------------------------------------
# The kubeai container
# --------------------------------------------------------------------------

def pod_spec(values: dict) -> dict:
    """The hub pod's spec as far as these values make it: the chart's hub container and volumes, ours."""
    hub = values["hub"]
    return {
        "serviceAccountName": hub["serviceAccount"]["name"],
        "containers": [*hub["extraContainers"], CHART_HUB_CONTAINER],
        "volumes": [*CHART_VOLUMES.values(), *hub["extraVolumes"]],
    }


def test_the_kubeai_container_validates_in_the_hub_pod_spec(values):
    spec = pod_spec(values)
    validate_core(spec, "io.k8s.api.core.v1.PodSpec", "v1")
    container = sidecar_of(values)
    volumes = {v["name"] for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, f"{mount['name']}: no such volume in the hub pod"
    # The hub's image, the service's module.
    image = values["hub"]["image"]
    assert container["image"] == f"{image['name']}:{image['tag']}"
    assert container["command"] == ["python", "-m", "jupyter_kubeai.service"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def service_from_sidecar(values: dict, monkeypatch) -> KubeAIService:
    """A KubeAIService configured as the kubeai container starts it (its env and args)."""
    for name in [n for n in os.environ if n.startswith(("JUPYTERHUB_", "KUBEAI_"))]:
        monkeypatch.delenv(name)
    for name, value in resolve(sidecar_env(values)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBEAI_SERVICE_CONFIG", "")  # not mounted here
    monkeypatch.setenv("KUBEAI_INITIAL_CATALOG", "")
    app = KubeAIService()
    app.load_config(sidecar_of(values).get("args", []))
    return app


def route_path(app: KubeAIService, handler: type) -> str:
    [path] = [p for p, h in app.routes() if h is handler]
    return app.service_prefix + path


def test_the_probes_are_the_services_health_and_ready_routes(values, monkeypatch):
    container = sidecar_of(values)
    app = service_from_sidecar(values, monkeypatch)
    assert (app.ip, app.port) == ("0.0.0.0", PORT)
    [port] = container["ports"]
    assert port["containerPort"] == PORT
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert liveness["path"] == route_path(app, HealthHandler) == "/services/kubeai/api/health"
    assert readiness["path"] == route_path(app, ReadyHandler) == "/services/kubeai/api/ready"
    assert container["startupProbe"]["httpGet"]["path"] == liveness["path"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in (PORT, port["name"])
    # Both are public: a probe has no token.
    assert HealthHandler.public and ReadyHandler.public


def test_the_probe_paths_are_routed_by_the_service(values, monkeypatch):
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    container = sidecar_of(values)
    app = service_from_sidecar(values, monkeypatch)
    web_app = app.make_app()
    for probe, handler in (("livenessProbe", HealthHandler), ("readinessProbe", ReadyHandler)):
        path = container[probe]["httpGet"]["path"]
        request = HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"),
                                    headers=HTTPHeaders({"Host": f"127.0.0.1:{PORT}"}))
        assert web_app.find_handler(request).handler_class is handler


def test_the_kubeai_container_has_what_huboauth_needs(values, hub_app, monkeypatch):
    """Its environment resolves HubOAuth as a managed service's would, matching what the hub registered."""
    from jupyterhub.services.service import _ServiceSpawner

    env = sidecar_env(values)
    # What JupyterHub sets for a managed service with a url, and HubOAuth reads.
    needed = {"JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_SERVICE_URL",
              "JUPYTERHUB_SERVICE_NAME", "JUPYTERHUB_CLIENT_ID", "JUPYTERHUB_OAUTH_CALLBACK_URL",
              "JUPYTERHUB_OAUTH_ACCESS_SCOPES", "JUPYTERHUB_OAUTH_SCOPES", "JUPYTERHUB_BASE_URL"}
    assert needed <= set(env)
    # The values and hubconfig agree (hubconfig documents the same environment).
    url = env_of(values)["KUBEAI_SERVICE_URL"]["value"]
    expected = hubconfig.external_service_environment(url, hub_api_url=env["JUPYTERHUB_API_URL"]["value"])
    assert {k: v["value"] for k, v in env.items() if k in expected} == expected

    app = service_from_sidecar(values, monkeypatch)
    hub_auth = app.make_app().settings["hub_auth"]
    service = hub_app._service_map[hubconfig.SERVICE_NAME]
    # The hub container is in the same pod: its API at localhost, the path the hub serves.
    hub_api = urlparse(hub_auth.api_url)
    assert hub_api.hostname in ("127.0.0.1", "localhost") and hub_api.port == 8081
    assert hub_api.path.rstrip("/") == urlparse(hub_app.hub.api_url).path.rstrip("/")
    assert hub_auth.api_token == hub_app._service_map[hubconfig.SERVICE_NAME].api_token
    # (HubAuth.base_url reads JUPYTERHUB_SERVICE_PREFIX at import: compare the variable.)
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == app.service_prefix == service.prefix
    assert hub_auth.hub_prefix == hub_app.hub.base_url
    assert hub_auth.oauth_client_id == service.oauth_client_id
    assert hub_auth.oauth_redirect_uri == service.oauth_redirect_uri
    assert hub_auth.access_scopes == set(_ServiceSpawner(_service_name=hubconfig.SERVICE_NAME).oauth_access_scopes)
    assert app.service_url == service.url


def test_the_secrets_agree_between_the_hub_and_the_kubeai_container(values):
    hub_refs, sidecar_refs = secret_refs(env_of(values)), secret_refs(sidecar_env(values))
    # One key: the hub accepts the token the service presents.
    assert hub_refs["KUBEAI_SERVICE_API_TOKEN"] == sidecar_refs["JUPYTERHUB_API_TOKEN"] == (SECRET, "api-token")
    assert sidecar_refs["KUBEAI_METRICS_TOKEN"] == (SECRET, "metrics-token")
    assert {ref for ref in [*hub_refs.values(), *sidecar_refs.values()]} == {(SECRET, k) for k in SECRET_KEYS}
    # The service's token is required, the metrics token optional.
    assert not sidecar_env(values)["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"].get("optional")
    assert sidecar_env(values)["KUBEAI_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # The docs create exactly this Secret, with these keys.
    guide = (ROOT / "docs" / "admin-guide.md").read_text()
    create = re.search(r"kubectl[^\n]*create secret generic " + SECRET + r"((?:[^\n]*\\\n)*[^\n]*)", guide)
    assert create, f"docs/admin-guide.md does not create the Secret {SECRET}"
    assert set(re.findall(r"--from-literal=([\w-]+)=", create.group(1))) == SECRET_KEYS


def test_the_values_hold_no_secret_values(values):
    text = VALUES_FILE.read_text()
    assert not re.search(r"(?i)(token|password|secret)\w*:\s*[\"']?[0-9a-f]{16,}", text)
    for env in (env_of(values), sidecar_env(values)):
        for name, var in env.items():
            if re.search(r"TOKEN|PASSWORD|SECRET", name):
                assert "secretKeyRef" in var.get("valueFrom", {}), f"{name} is not taken from a Secret"


def test_the_kubeai_container_shares_the_hubs_settings_and_the_namespace(values):
    hub, sidecar = resolve(env_of(values)), resolve(sidecar_env(values))
    for name in ("KUBEAI_MODE", "KUBEAI_STATE_DIR", "KUBEAI_SERVICE_CONFIG", "KUBEAI_DB_URL"):
        assert hub.get(name) == sidecar.get(name), name
    assert sidecar["KUBEAI_MODE"] == "kubernetes"
    assert sidecar["JUPYTERHUB_SERVICE_URL"] == hub["KUBEAI_SERVICE_URL"]
    assert sidecar_env(values)["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["mountPath"]: m for m in sidecar_of(values)["volumeMounts"]}
    # The store's folder (the chart's hub PVC) and the settings file (the chart's extraFiles volume).
    assert mounts[sidecar["KUBEAI_STATE_DIR"]]["name"] == "pvc"
    settings = mounts[sidecar["KUBEAI_SERVICE_CONFIG"]]
    assert settings["name"] == "files" and settings["subPath"] == "kubeai-config"
    assert settings_file(values)["mountPath"] == sidecar["KUBEAI_SERVICE_CONFIG"]


def test_prometheus_scrapes_the_metrics_route(values, monkeypatch):
    annotations = values["hub"]["annotations"]
    app = service_from_sidecar(values, monkeypatch)
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == route_path(app, MetricsHandler)
    # The scrape token is the one the container reads.
    assert app.metrics_token == resolve(sidecar_env(values))["KUBEAI_METRICS_TOKEN"]


# --------------------------------------------------------------------------
# Names agree
# --------------------------------------------------------------------------

def test_rbac_binds_the_hub_service_account(values):
    account = values["hub"]["serviceAccount"]
    assert account["create"] is True
    bindings = find("RoleBinding") + find("ClusterRoleBinding")
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}]


def test_the_share_pvc_is_one_name_everywhere_and_readwritemany(values, tmp_path):
    name = load_settings(values, tmp_path).KubeSettings.share_claim_name
    claims = find("PersistentVolumeClaim")
    assert {p.name for p in MANIFESTS if any(d["kind"] == "PersistentVolumeClaim" for d in docs(p))} == {
        "cephfs-pvc.yaml", "nfs-pv-pvc.yaml"}
    for claim in claims:
        assert claim["metadata"]["name"] == name
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    [pv] = find("PersistentVolume")
    assert pv["spec"]["claimRef"] == {"name": name, "namespace": NAMESPACE}
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"] and pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    [volume] = [v for v in values["hub"]["extraVolumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == name
    [mount] = [m for m in sidecar_of(values)["volumeMounts"] if m["name"] == volume["name"]]
    assert load_settings(values, tmp_path).KubeAIService.share_root == mount["mountPath"]


def test_the_initial_catalog_is_the_mounted_configmap_and_seeds_a_store(values, tmp_path):
    [volume] = [v for v in values["hub"]["extraVolumes"] if "configMap" in v]
    [configmap] = find("ConfigMap", volume["configMap"]["name"])
    [mount] = [m for m in sidecar_of(values)["volumeMounts"] if m["name"] == volume["name"]]
    [key] = configmap["data"]
    assert sidecar_env(values)["KUBEAI_INITIAL_CATALOG"]["value"] == f"{mount['mountPath']}/{key}"
    catalog = yaml.safe_load(configmap["data"][key])
    engine = open_engine(f"sqlite:///{tmp_path / 'kubeai.sqlite'}")
    upgrade(engine)
    try:
        assert CatalogStore(engine).seed(images=catalog["images"], profiles=catalog["profiles"],
                                         rules=catalog.get("image_rules", ()))
    finally:
        engine.dispose()
    assert any(p.get("gpus") for p in catalog["profiles"])


def test_port_10101_is_the_service_port_everywhere(values):
    hub = values["hub"]
    assert urlparse(env_of(values)["KUBEAI_SERVICE_URL"]["value"]).port == PORT
    assert urlparse(sidecar_env(values)["JUPYTERHUB_SERVICE_URL"]["value"]).port == PORT
    assert [p["containerPort"] for p in sidecar_of(values)["ports"]] == [PORT]
    assert hub["annotations"]["prometheus.io/port"] == str(PORT)
    assert [(p["port"], p["targetPort"]) for p in hub["service"]["extraPorts"]] == [(PORT, PORT)]
    rules = (hub["networkPolicy"]["ingress"] + values["singleuser"]["networkPolicy"]["egress"]
             + values["proxy"]["chp"]["networkPolicy"]["egress"])
    assert rules and all([p["port"] for p in rule["ports"]] == [PORT] for rule in rules)


def test_the_kubeai_variables_are_ones_the_code_reads(values):
    # The hub: what hubconfig reads (os.environ["..."] / .get("...")) or passes on to the service.
    read = set(hubconfig.FORWARDED_ENV) | set(re.findall(r"[\"'](KUBEAI_\w+)[\"']", inspect.getsource(hubconfig)))
    for name in env_of(values):
        if name.startswith("KUBEAI_"):
            assert name in read, f"{name} is read by nothing"
    assert {"KUBEAI_MODE", "KUBEAI_SERVICE_CONFIG", "KUBEAI_SERVICE_API_TOKEN"} <= set(env_of(values))
    assert settings_file(values)["mountPath"] == env_of(values)["KUBEAI_SERVICE_CONFIG"]["value"]
    # The service: what its app and its store read.
    from jupyter_kubeai import store

    source = inspect.getsource(service_app) + inspect.getsource(store)
    read = set(re.findall(r"[\"'](KUBEAI_\w+)[\"']", source))
    for name in sidecar_env(values):
        if name.startswith("KUBEAI_"):
            assert name in read, f"{name} is read by nothing in the service"
    assert {"KUBEAI_MODE", "KUBEAI_SERVICE_CONFIG", "KUBEAI_INITIAL_CATALOG", "KUBEAI_METRICS_TOKEN"} <= set(
        sidecar_env(values))


# --------------------------------------------------------------------------
# The queue examples
# --------------------------------------------------------------------------

def test_the_queue_examples_hang_together_and_match_the_backend_defaults():
    """deploy/queues/: each LocalQueue names a ClusterQueue there, each flavor a ResourceFlavor; names as the backend asks."""
    from jupyter_kubeai.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend()
    assert backend.queue_template == "{project}" and backend.personal_queue == "default"
    kueue = docs(DEPLOY / "queues" / "kueue-queues.yaml")
    cluster_queues = {o["metadata"]["name"]: o for o in kueue if o["kind"] == "ClusterQueue"}
    flavors = {o["metadata"]["name"] for o in kueue if o["kind"] == "ResourceFlavor"}
    local_queues = {o["metadata"]["name"]: o for o in kueue if o["kind"] == "LocalQueue"}
    assert local_queues and "default" in local_queues  # the personal queue
    for queue in local_queues.values():
        assert queue["metadata"]["namespace"] == NAMESPACE
        assert queue["spec"]["clusterQueue"] in cluster_queues
    for queue in cluster_queues.values():
        for group in queue["spec"]["resourceGroups"]:
            for flavor in group["flavors"]:
                assert flavor["name"] in flavors
                assert [r["name"] for r in flavor["resources"]] == group["coveredResources"]
    volcano = docs(DEPLOY / "queues" / "volcano-queues.yaml")
    assert {o["kind"] for o in volcano} == {"Queue"}
    # A project's queue is its slug, in both (the example project "vision").
    assert "vision" in local_queues and "vision" in {o["metadata"]["name"] for o in volcano}


# --------------------------------------------------------------------------
# Who reaches the model servers (deploy/networkpolicy-serving.yaml)
# --------------------------------------------------------------------------

def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if not {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
                "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[operator]():
            return False
    return True


def reaches(policies: list[dict], source: dict, target: dict, port: int) -> bool:
    """Whether a pod with ``source`` labels may open ``port`` on a pod with ``target`` labels (same namespace)."""
    applying = [p for p in policies if selects(p["spec"]["podSelector"], target) and "Ingress" in p["spec"]["policyTypes"]]
    if not applying:
        return True  # no policy isolates the target
    return any(
        any("podSelector" in peer and selects(peer["podSelector"], source) for peer in rule.get("from", []))
        and any(p.get("port") == port for p in rule.get("ports", [{"port": port}]))
        for policy in applying for rule in policy["spec"].get("ingress", [])
    )


def serving_pod_labels(project: str | None, kserve: bool) -> dict:
    from test_kube_serving import deployment, placement

    from jupyter_kubeai.kube.serving import make_serving_objects

    main = make_serving_objects(deployment(project=project), placement(), kserve=kserve)[0]
    return main["spec"]["predictor"]["labels"] if kserve else main["spec"]["template"]["metadata"]["labels"]


def job_pod_labels(project: str | None, framework: str = "pytorch") -> list[dict]:
    from test_training_objects import job

    from jupyter_kubeai.kube.training import Placement, make_training_job

    obj = make_training_job(job(framework, workers=2, project=project, owner_groups=(project,) if project else ()), Placement())
    spec = obj["spec"]
    for key in ("pytorchReplicaSpecs", "tfReplicaSpecs", "mpiReplicaSpecs"):
        if key in spec:
            return [replica["template"]["metadata"]["labels"] for replica in spec[key].values()]
    return [spec["template"]["metadata"]["labels"]]


#: What KubeSpawner (and the chart) label a user's notebook pod with.
LAB_POD = {"app": "jupyterhub", "component": "singleuser-server", "hub.jupyter.org/username": "alice",
           "hub.jupyter.org/network-access-hub": "true"}


@pytest.mark.parametrize("kserve", [True, False], ids=["kserve", "deployment"])
def test_only_the_hub_and_the_projects_own_jobs_reach_model_servers(values, kserve):
    from jupyter_kubeai.kube.serving import PORT

    policies = docs(DEPLOY / "networkpolicy-serving.yaml")
    assert {p["kind"] for p in policies} == {"NetworkPolicy"}
    hub = values["hub"]["labels"]
    vision, personal = serving_pod_labels("vision", kserve), serving_pod_labels(None, kserve)
    for target in (vision, personal):
        assert reaches(policies, hub, target, PORT)  # the hub forwards every allowed request
        assert not reaches(policies, hub, target, PORT + 1)  # and only to the runtime's port
        assert not reaches(policies, LAB_POD, target, PORT)  # notebooks go through the hub
    for pod in job_pod_labels("vision") + job_pod_labels("vision", "tensorflow"):
        assert reaches(policies, pod, vision, PORT)
        assert not reaches(policies, pod, personal, PORT)
    other = serving_pod_labels("nlp", kserve)
    for pod in job_pod_labels("nlp") + job_pod_labels(None):
        assert not reaches(policies, pod, vision, PORT)  # another project's jobs, personal jobs
    for pod in job_pod_labels("vision"):
        assert not reaches(policies, pod, other, PORT)
    # The policies isolate model servers only: job pods, notebooks and the hub are not selected.
    for pod in [hub, LAB_POD, *job_pod_labels("vision")]:
        assert not any(selects(p["spec"]["podSelector"], pod) for p in policies)
