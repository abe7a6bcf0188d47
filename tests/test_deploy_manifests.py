"""deploy/: every manifest validates against the Kubernetes schemas, and the
Zero to JupyterHub values agree with the manifests and with the code.

- Each manifest in deploy/ (RBAC, the catalog ConfigMap, the share PVC
  examples) validates with tests/k8s_schema.py, unknown fields being errors.
- The Kubernetes objects embedded in the values (volumes, mounts, env, service
  ports, network policy rules) validate as the types the chart passes them as.
- The values' Python (hub.extraConfig, the shared settings file) compiles,
  and run as the chart runs them they configure KubeAISpawner and the kubeai
  service; every setting it names exists.
- Names agree everywhere: service account, PVC, ConfigMap and its key, port
  10101, the KUBEAI_* variables the code reads.
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
from jupyter_kubeai.service.app import KubeAIService
from jupyter_kubeai.spawner import KubeAISpawner
from jupyter_kubeai.store.catalog import CatalogStore
from jupyter_kubeai.store.schema import open_engine, upgrade

from k8s_schema import validate_core

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
VALUES_FILE = DEPLOY / "z2jh-values.yaml"
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p != VALUES_FILE)
NAMESPACE = "jupyterhub"
PORT = 10101


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
        validate_core(obj)
        namespaced = obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "PersistentVolume")
        assert (obj["metadata"].get("namespace") == NAMESPACE) == namespaced, obj["metadata"]["name"]


def test_the_objects_embedded_in_the_values_validate(values):
    hub = values["hub"]
    for volume in hub["extraVolumes"]:
        validate_core(volume, "io.k8s.api.core.v1.Volume", "v1")
    for mount in hub["extraVolumeMounts"]:
        validate_core(mount, "io.k8s.api.core.v1.VolumeMount", "v1")
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
                                  "extraVolumeMounts", "extraFiles", "extraConfig", "config", "db"}
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
    for name, env in env_of(values).items():
        monkeypatch.setenv(name, env.get("value", "jupyterhub"))
    monkeypatch.setenv("KUBEAI_SERVICE_CONFIG", str(settings))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    c = Config()
    for name, code in sorted(values["hub"]["extraConfig"].items()):  # the chart runs them by name
        exec(compile(code, name, "exec"), {"c": c, "get_config": lambda: c})
    return c


def test_the_extra_config_makes_kubeaispawner_and_the_kubeai_service(values, hub_config):
    c = hub_config
    assert c.JupyterHub.spawner_class is KubeAISpawner
    assert c.KubeAISpawner.kubeai_mode == "kubernetes"
    assert c.KubeAISpawner.kubeai_service_url == f"http://hub:{PORT}/services/kubeai/"
    [service] = [s for s in c.JupyterHub.services if s["name"] == hubconfig.SERVICE_NAME]
    assert urlparse(service["url"]).port == PORT
    assert "--KubeAIService.ip=0.0.0.0" in service["command"]
    env = service["environment"]
    assert env["KUBEAI_MODE"] == "kubernetes"
    # The in-cluster client needs these, and a managed service inherits nothing.
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    for name in ("KUBEAI_STATE_DIR", "KUBEAI_INITIAL_CATALOG", "KUBEAI_SERVICE_CONFIG"):
        assert env[name] == os.environ[name]
    # The spawner sees the shared settings too.
    assert c.KubeSettings.share_claim_name == "kubeai-share"


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
    [mount] = [m for m in values["hub"]["extraVolumeMounts"] if m["name"] == volume["name"]]
    assert load_settings(values, tmp_path).KubeAIService.share_root == mount["mountPath"]


def test_the_initial_catalog_is_the_mounted_configmap_and_seeds_a_store(values, tmp_path):
    [volume] = [v for v in values["hub"]["extraVolumes"] if "configMap" in v]
    [configmap] = find("ConfigMap", volume["configMap"]["name"])
    [mount] = [m for m in values["hub"]["extraVolumeMounts"] if m["name"] == volume["name"]]
    [key] = configmap["data"]
    assert env_of(values)["KUBEAI_INITIAL_CATALOG"]["value"] == f"{mount['mountPath']}/{key}"
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
    assert [(p["port"], p["targetPort"]) for p in hub["service"]["extraPorts"]] == [(PORT, PORT)]
    rules = (hub["networkPolicy"]["ingress"] + values["singleuser"]["networkPolicy"]["egress"]
             + values["proxy"]["chp"]["networkPolicy"]["egress"])
    assert rules and all([p["port"] for p in rule["ports"]] == [PORT] for rule in rules)


def test_the_kubeai_variables_are_ones_the_code_reads(values):
    # What hubconfig reads (os.environ["..."] / .get("...")) or passes on to the service.
    read = set(hubconfig.FORWARDED_ENV) | set(re.findall(r"[\"'](KUBEAI_\w+)[\"']", inspect.getsource(hubconfig)))
    for name in env_of(values):
        if name.startswith("KUBEAI_"):
            assert name in read, f"{name} is read by nothing"
    assert {"KUBEAI_MODE", "KUBEAI_SERVICE_CONFIG", "KUBEAI_INITIAL_CATALOG"} <= set(env_of(values))
    assert settings_file(values)["mountPath"] == env_of(values)["KUBEAI_SERVICE_CONFIG"]["value"]
