"""deploy/rbac.yaml against the Kubernetes API calls the code really makes.

How the check works
-------------------
Every request the spawner and the backends send in the tests goes through
the HTTP-level fake API (tests/kubefake.py), which records it (RBAC verb,
API group, resource, subresource, namespace, path) in a session-wide
recorder and writes the record to ``$KUBEAI_RECORD_KUBE_CALLS`` at the end
of a pytest session.

:func:`test_rbac_allows_exactly_the_calls_the_code_makes` runs the tests
that drive the real spawner and backends (``CODE_TESTS``, this module's own
scenario tests included) in a pytest subprocess with that variable set, then
asserts that

- every recorded call is allowed by a rule of deploy/rbac.yaml (resource
  calls by (apiGroup, resource[/subresource], verb), namespaced ones by a
  Role or ClusterRole, cluster-scoped ones by a ClusterRole only; discovery
  and other paths by a ClusterRole's ``nonResourceURLs``), and
- every rule (each apiGroup x resource x verb, each URL x verb) was used by
  at least one call: no permission the code does not need.

It always runs the subprocess (about a minute) rather than reading calls
made earlier in the same session: the result then does not depend on which
tests were selected or in what order they ran, and calls made by tests of
the fake itself (test_kubefake.py) are not mistaken for the code's.

The scenario tests below drive code paths that the cluster will see but
the behaviour tests do not reach (cancelling each job kind, a PVC create
refused by a quota, deleting a user's PVC with the user), so their
permissions are shown to be used, and are checked, like the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from test_kube_backend import NS, OTHER_KINDS, install, record
from test_kubeai_spawner import catalog_url, spawner_for, start  # noqa: F401 (catalog_url is a fixture)
from test_training_objects import job

from jupyter_kubeai.backends.kubernetes import KubernetesBackend
from jupyter_kubeai.kube.doctor import KSERVE_CONFIG
from jupyter_kubeai.kube.permissions import DOCTOR, KSERVE_NAMESPACE, SELF_REVIEW

from kubefake import NAMESPACE, RECORD_CALLS_ENV

TESTS = Path(__file__).parent
RBAC = TESTS.parent / "deploy" / "rbac.yaml"

#: The test modules that drive the real spawner, job backend and serving backend against the fake API.
CODE_TESTS = [
    "test_kubeai_spawner.py",
    "test_kube_backend.py",
    "test_kube_serving.py",
    "test_job_api.py",
    "test_models_api.py",
    "test_kube_faults.py",
    Path(__file__).name,
]
#: The doctor's tests: its calls are checked against rbac.yaml plus rbac-doctor.yaml.
DOCTOR_TESTS = ["test_doctor.py"]
RBAC_DOCTOR = TESTS.parent / "deploy" / "rbac-doctor.yaml"
#: The namespace the manifests in deploy/ are written for.
DEPLOY_NAMESPACE = "jupyterhub"


# --------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------

def load_rbac(path: Path = RBAC) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def permissions(docs: list[dict]) -> tuple[dict, dict]:
    """``(resource permissions, non-resource permissions)``, each mapping a permission to the
    roles granting it: ``(group, resource, verb, cluster_wide)`` and ``(url, verb)``."""
    resources: dict[tuple, set[str]] = defaultdict(set)
    urls: dict[tuple, set[str]] = defaultdict(set)
    for doc in docs:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        cluster_wide = doc["kind"] == "ClusterRole"
        role = f"{doc['kind']}/{doc['metadata']['name']}"
        for rule in doc.get("rules", []):
            for verb in rule["verbs"]:
                for url in rule.get("nonResourceURLs", []):
                    urls[(url, verb)].add(role)
                for group in rule.get("apiGroups", []):
                    for resource in rule.get("resources", []):
                        resources[(group, resource, verb, cluster_wide)].add(role)
    return resources, urls


def needed(call: dict) -> tuple[str, tuple]:
    """What RBAC must allow for one recorded call: ("resource", (group, resource, verb, namespaced))
    or ("url", (path, verb))."""
    if call["resource"]:
        target = f"{call['resource']}/{call['subresource']}" if call["subresource"] else call["resource"]
        return "resource", (call["group"], target, call["verb"], call["namespace"] is not None)
    return "url", (call["path"], call["method"].lower())


def allowed(need: tuple[str, tuple], resources: dict, urls: dict) -> bool:
    kind, key = need
    if kind == "url":
        return key in urls
    group, resource, verb, namespaced = key
    # A Role grants only in its namespace; a ClusterRole also grants cluster-scoped calls.
    return (group, resource, verb, True) in resources or (
        namespaced and (group, resource, verb, False) in resources
    )


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------

def record_calls(test_files: list[str], folder: Path) -> list[dict]:
    """Every API call of the tests in ``test_files``, from a pytest subprocess (see the module docstring)."""
    if os.environ.get(RECORD_CALLS_ENV):
        pytest.skip("inside the recording run itself")
    record_file = folder / "calls.jsonl"
    env = {**os.environ, RECORD_CALLS_ENV: str(record_file)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         *(str(TESTS / name) for name in test_files)],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=560,
    )
    if result.returncode != 0:
        pytest.fail("The tests whose API calls the RBAC check reads failed, so the record is incomplete:\n"
                    + result.stdout[-4000:] + result.stderr[-2000:], pytrace=False)
    calls = [json.loads(line) for line in record_file.read_text().splitlines()]
    assert calls, "the fake API recorded no calls"
    return calls


@pytest.fixture(scope="module")
def recorded_calls(tmp_path_factory) -> list[dict]:
    """Every API call of CODE_TESTS."""
    return record_calls(CODE_TESTS, tmp_path_factory.mktemp("kube-calls"))


@pytest.fixture(scope="module")
def doctor_calls(tmp_path_factory) -> list[dict]:
    """Every API call of the doctor's tests."""
    return record_calls(DOCTOR_TESTS, tmp_path_factory.mktemp("doctor-calls"))


@pytest.mark.timeout(600)  # the recording run takes about a minute, more on a busy machine
def test_rbac_allows_exactly_the_calls_the_code_makes(recorded_calls):
    resources, urls = permissions(load_rbac())
    used: dict[tuple[str, tuple], list[str]] = defaultdict(list)
    for call in recorded_calls:
        used[needed(call)].append(call["test"])

    denied = [f"  {kind} {key}  (e.g. {tests[0]})" for (kind, key), tests in sorted(used.items())
              if not allowed((kind, key), resources, urls)]
    assert not denied, "Calls the code makes that deploy/rbac.yaml does not allow:\n" + "\n".join(denied)

    needs_resources = {key for kind, key in used if kind == "resource"}
    needs_urls = {key for kind, key in used if kind == "url"}
    unused = []
    for (group, resource, verb, cluster_wide), roles in sorted(resources.items()):
        # A ClusterRole rule may serve namespaced calls too; a Role rule only namespaced ones.
        scopes = (True, False) if cluster_wide else (True,)
        if not any((group, resource, verb, namespaced) in needs_resources for namespaced in scopes):
            unused.append(f"  apiGroup {group!r} resource {resource!r} verb {verb!r} in {sorted(roles)}")
    for (url, verb), roles in sorted(urls.items()):
        if (url, verb) not in needs_urls:
            unused.append(f"  nonResourceURL {url!r} verb {verb!r} in {sorted(roles)}")
    assert not unused, "Rules of deploy/rbac.yaml that no call of the code uses (remove them):\n" + "\n".join(unused)


def url_granted(path: str, pattern: str) -> bool:
    """RBAC's nonResourceURLs match: exact, or a prefix ending in ``*``."""
    return path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern


@pytest.mark.timeout(300)
def test_rbac_doctor_allows_exactly_what_the_doctor_reads(doctor_calls):
    """deploy/rbac-doctor.yaml: with rbac.yaml, every call of the doctor; each of its rules used; its rules are DOCTOR."""
    extra = load_rbac(RBAC_DOCTOR)
    resources, urls = permissions(load_rbac() + extra)
    doctor_resources, doctor_urls = permissions(extra)
    review = (SELF_REVIEW.group, SELF_REVIEW.resource, "create", False)
    used_resources, denied = set(), []
    used_patterns = set()
    for call in doctor_calls:
        kind, key = needed(call)
        if kind == "resource":
            used_resources.add(key)
            # Every authenticated identity may review itself (the default system:basic-user role).
            if key != review and not allowed((kind, key), resources, urls):
                denied.append(f"  {key}  (e.g. {call['test']})")
        else:
            path, verb = key
            matching = {(p, v) for p, v in urls if v == verb and url_granted(path, p)}
            used_patterns |= matching
            if not matching:
                denied.append(f"  {path} {verb}  (e.g. {call['test']})")
    assert not denied, "Calls of the doctor that rbac.yaml and rbac-doctor.yaml do not allow:\n" + "\n".join(denied)
    unused = [f"  {group!r} {resource!r} {verb!r}" for (group, resource, verb, cluster_wide) in doctor_resources
              if not any((group, resource, verb, ns) in used_resources for ns in ((True, False) if cluster_wide else (True,)))]
    unused += [f"  {url!r} {verb!r}" for (url, verb) in doctor_urls if (url, verb) not in used_patterns]
    assert not unused, "Rules of deploy/rbac-doctor.yaml that the doctor never uses:\n" + "\n".join(unused)
    # One list: the file grants DOCTOR, each in its scope, and nothing else.
    granted = {(group, resource, verb, cluster_wide) for (group, resource, verb, cluster_wide) in doctor_resources}
    assert granted == {(p.group, p.resource, verb, p.cluster) for p in DOCTOR for verb in p.verbs}
    namespaces = {d["metadata"]["name"] + "/" + d["metadata"].get("namespace", "") for d in extra if d["kind"] == "Role"}
    assert namespaces == {f"kubeai-hub-doctor/{DEPLOY_NAMESPACE}", f"kubeai-hub-doctor/{KSERVE_NAMESPACE}"}
    [kserve] = [d for d in extra if d["kind"] == "Role" and d["metadata"]["namespace"] == KSERVE_NAMESPACE]
    assert kserve["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [KSERVE_CONFIG],
                                "verbs": ["get"]}]


def test_rbac_doctor_binds_every_role_to_the_hub():
    docs = load_rbac(RBAC_DOCTOR)
    roles = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs
             if d["kind"] in ("Role", "ClusterRole")}
    bound = {(d["roleRef"]["kind"], d["roleRef"]["name"], d["metadata"].get("namespace")) for d in docs
             if d["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    assert roles == bound
    for doc in docs:
        if doc["kind"].endswith("Binding"):
            assert doc["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": DEPLOY_NAMESPACE}]
        else:
            for rule in doc["rules"]:
                assert rule["verbs"] in (["get"], ["list"]), rule  # read-only
                assert not any("*" in v for f in ("apiGroups", "resources", "verbs") for v in rule.get(f, []))


def test_rules_name_no_wildcards_and_every_role_is_bound_to_the_hub():
    docs = load_rbac()
    roles = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Role", "ClusterRole")}
    bound = set()
    for doc in docs:
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            ref = doc["roleRef"]
            assert doc["kind"] == "ClusterRoleBinding" or ref["kind"] == "Role", doc["metadata"]["name"]
            assert doc["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}]
            bound.add((ref["kind"], ref["name"]))
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                for field in ("apiGroups", "resources", "verbs", "nonResourceURLs", "resourceNames"):
                    assert not any("*" in value for value in rule.get(field, [])), (doc["metadata"]["name"], rule)
    assert roles == bound
    # Only what cannot be namespaced is cluster-wide: here, discovery URLs alone.
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            assert all(set(rule) == {"nonResourceURLs", "verbs"} for rule in doc["rules"]), doc["metadata"]["name"]


def test_the_checker_tells_allowed_from_denied_and_scopes_apart():
    resources, urls = permissions(load_rbac())
    pod_create = {"resource": "pods", "subresource": None, "group": "", "verb": "create", "namespace": "ns",
                  "path": "/api/v1/namespaces/ns/pods", "method": "POST"}
    assert allowed(needed(pod_create), resources, urls)
    assert not allowed(needed({**pod_create, "verb": "update"}), resources, urls)
    assert not allowed(needed({**pod_create, "resource": "secrets"}), resources, urls)
    # A Role cannot grant a cluster-scoped call (listing pods in every namespace).
    assert not allowed(needed({**pod_create, "verb": "list", "namespace": None}), resources, urls)
    log = {**pod_create, "subresource": "log", "verb": "get"}
    assert allowed(needed(log), resources, urls)
    assert not allowed(needed({**log, "subresource": "exec", "verb": "create"}), resources, urls)
    discovery = {"resource": None, "subresource": None, "group": None, "verb": None, "namespace": None,
                 "path": "/apis/kubeflow.org/v1", "method": "GET"}
    assert allowed(needed(discovery), resources, urls)
    assert not allowed(needed({**discovery, "path": "/apis"}), resources, urls)


# --------------------------------------------------------------------------
# Scenarios: code paths the cluster sees that the behaviour tests do not reach
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("framework", "kinds", "resource"), OTHER_KINDS)
async def test_cancel_deletes_every_kind_of_job(kube, framework, kinds, resource):
    install(kube)
    backend = KubernetesBackend(namespace=NS, cleanup_interval=0, kinds=kinds)
    try:
        spec = job(framework, workers=1 if framework == "single" else 2)
        rec = record(spec, await backend.submit(spec))
        assert kube.get(resource, NS, spec.job_id) is not None
        assert await backend.cancel(rec) is True
        assert kube.get(resource, NS, spec.job_id) is None
        assert kube.find_calls("delete", resource, name=spec.job_id)
    finally:
        await backend.stop()


async def test_a_user_pvc_refused_by_quota_but_present_is_used_then_deleted_with_the_user(kube, catalog_url):  # noqa: F811
    spawner = spawner_for(catalog_url, "alice", [], user_pvc=True, storage_capacity="1Gi")
    kube.create("persistentvolumeclaims", {"metadata": {"name": spawner.pvc_name},
                                           "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}}, NAMESPACE)
    # A ResourceQuota refuses the create before the API checks that the PVC exists.
    kube.fail("create", "persistentvolumeclaims", status=403, message="exceeded quota: storage", times=1)
    await start(spawner, {})
    assert kube.find_calls("get", "persistentvolumeclaims", name=spawner.pvc_name)
    await spawner.stop()
    # Deleting the user deletes their PVC (KubeSpawner.delete_pvc, on by default).
    await spawner.delete_forever()
    assert kube.get("persistentvolumeclaims", NAMESPACE, spawner.pvc_name) is None
