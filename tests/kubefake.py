"""A fake Kubernetes API server for tests, at the HTTP boundary, built on kmock.

What it emulates
----------------
``FakeKube`` runs kmock (an aiohttp server that speaks the Kubernetes API
conventions) on a free loopback port, with the server-side behaviour that
KubeSpawner and kubernetes_asyncio depend on, so the *real* client code
path runs: ``KubeSpawner.start()``, ``poll()`` and ``stop()`` make real HTTP
requests, its reflectors list and watch, and tests assert on what reached
the server.

* Objects of any resource (core, ``apps/v1``, custom resources) can be
  created, read, listed, watched, replaced (PUT), patched (merge patch and
  JSON patch) and deleted, in namespaces or cluster-wide. The server fills
  ``metadata.namespace``, ``uid``, an increasing ``resourceVersion``,
  ``creationTimestamp``, ``generation``, ``apiVersion``/``kind`` and the
  initial ``status`` of pods, PVCs and namespaces.
* ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
  ``k notin (a,b)``, ``k``, ``!k``, comma-separated AND) and
  ``fieldSelector`` (``path=value``, ``path!=value`` on any dotted path,
  e.g. ``metadata.name`` or ``involvedObject.kind``) filter lists and
  watches.
* Watches (``watch=true`` and kubernetes_asyncio's ``watch=True``) stream
  ADDED/MODIFIED/DELETED events, resume from a ``resourceVersion``, honour
  ``timeoutSeconds``, and send ADDED/DELETED when an object starts or stops
  matching a selector, as the real API does.
* Errors are Kubernetes ``Status`` objects: 404 NotFound, 409 AlreadyExists,
  409 Conflict (stale resourceVersion on PUT), 400/422 for bad requests.
* Finalizers delay deletion; deleting an owner deletes its dependents
  (``ownerReferences``) and deleting a namespace deletes its contents.
* A ``Kubelet`` (also playing the scheduler) runs every new pod: it is
  scheduled, gets a pod IP, emits the Events a real node emits (Scheduled,
  Pulling, Pulled, Created, Started) and becomes Running and Ready. Per pod
  it can instead leave the pod Unschedulable (with a FailedScheduling
  warning), or ignore it; ``terminate()`` makes a running pod's containers
  exit.
* ``fail()`` makes chosen requests answer an error (e.g. 403 on pod
  creation, 500, 503) before anything is stored; ``hang()`` makes them
  answer nothing for a while (past the client's timeout), before or after
  being served; ``drop()`` serves them, then closes the connection without
  an answer (a lost answer: the client cannot know it was applied).
* Watches: ``drop_watches()`` ends the open watch streams (cleanly, or by
  cutting the connection); ``fail("watch", ..., status=410)`` answers a
  watch 410 Gone, and ``compact()`` makes resumed watches get an ERROR 410.
* Server-side apply (``PATCH`` with ``application/apply-patch+yaml``):
  creates the object when missing, else merges the applied fields (a merge
  patch: the fake keeps no field ownership); ``fieldManager`` is required.
* ``default()`` registers the API server's defaulting for a resource (fields
  the server fills on every write, as a CRD's schema defaults do).
* A write that changes nothing keeps the object's resourceVersion and sends
  no watch event, as the real API does.
* ``SelfSubjectAccessReview`` (``kubectl auth can-i``): allowed, unless
  ``deny()`` named the verb and resource (then ``allowed: false``); after
  ``authorize(rbac_objects)``, answered by those Roles' and ClusterRoles'
  rules instead (``resourceNames`` included: a review must then name one).
* Pod logs (``pods/log``): what tests wrote with ``write_log()``, with
  ``tailLines``, and ``follow=true`` streaming until the pod ends or goes;
  a pod that has not started answers 400, as the real API does.
* Custom resources show in API discovery once declared with
  ``serve_kind()`` (e.g. which Kubeflow operators the cluster "has").
* ``compact()`` forgets the history: watches resuming from an older
  resourceVersion get a 410 Expired ``ERROR`` event, as after etcd compaction.
* Every request is recorded as an ``ApiCall`` (method, path, query, RBAC
  verb, resource, namespace, name, bearer token, status) in ``calls``, and
  in the session-wide ``SESSION_CALLS`` (written to the file named by
  ``$KUBEAI_RECORD_KUBE_CALLS`` at the end of the session, for the RBAC test).

Limits (on purpose, for speed and simplicity)
---------------------------------------------
No authentication or RBAC enforcement (the token is only recorded), no
admission or schema validation (defaulting only where a test declares it),
strategic merge patch and server-side apply are applied as a plain merge
patch (lists are replaced, not merged by key; no managed fields),
``limit``/``continue`` pagination is ignored (lists
are complete), namespaces need not exist
before objects are created in them, pods are removed at once on delete
(unless they carry finalizers), field selectors accept any path (the real API
allows only a few per kind), PVCs stay Pending (no provisioner), no operator
turns training objects into pods (tests play it), and nothing
runs in the pods: the pod IP is not reachable unless a test sets
``pod_ip`` to an address it serves. Subresources other than ``status`` and
``log`` (``exec``, ``binding``...) answer 404.

kmock gaps patched here (without touching kmock's files)
--------------------------------------------------------
kmock's request parser (``kmock._internal.parsing``) only recognises
``watch=true`` (kubernetes_asyncio sends ``watch=True``) and cannot parse the
cluster-scoped ``/api/v1/namespaces[/name]`` paths (it answers 500); both
parser functions are wrapped while a ``FakeKube`` runs. kmock's own
``KubernetesEmulator`` stores objects verbatim (no server-side fields,
selectors, resource versions or timeouts), so this module keeps its own
store (in kmock's ``ObjectsArray``, so kmock's history and pattern matching
work on it) and serves it through a fallback reaction on kmock's
``KubernetesScaffold``: user reactions added with kmock's DSL
(``kube.kmock[...] << ...``) still take precedence over the fake.

Usage::

    async def test_spawn(kube):
        spawner = make_spawner("alice")
        url = await spawner.start()
        assert kube.get("pods", "jupyter", "jupyter-alice")["status"]["phase"] == "Running"
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import os
import re
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import attrs
import jsonpatch
import kmock
import kubernetes_asyncio.config
import kubespawner.clients
import pytest
import pytest_asyncio
from jupyterhub.objects import Server
from kmock._internal import parsing as _kmock_parsing
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner

Key = tuple[kmock.resource, str | None, str]  # (resource, namespace or None, name)
Object = dict[str, Any]

PODS = kmock.resource("", "v1", "pods")
EVENTS = kmock.resource("", "v1", "events")
NAMESPACES = kmock.resource("", "v1", "namespaces")

# Kinds and scopes of the core resources, for apiVersion/kind defaults, list
# kinds and API discovery. Custom resources take their kind from the body.
_CORE_KINDS: dict[str, tuple[str, bool]] = {
    "pods": ("Pod", True),
    "events": ("Event", True),
    "persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "services": ("Service", True),
    "secrets": ("Secret", True),
    "configmaps": ("ConfigMap", True),
    "serviceaccounts": ("ServiceAccount", True),
    "endpoints": ("Endpoints", True),
    "resourcequotas": ("ResourceQuota", True),
    "limitranges": ("LimitRange", True),
    "namespaces": ("Namespace", False),
    "nodes": ("Node", False),
    "persistentvolumes": ("PersistentVolume", False),
}

# Resources whose status the server owns: writes to the main resource keep
# the stored status, only the status subresource changes it (as in the real
# API). Their initial status is set on creation, whatever the body says.
_SERVER_OWNED_STATUS: dict[str, Object] = {
    "pods": {"phase": "Pending"},
    "persistentvolumeclaims": {"phase": "Pending"},
    "namespaces": {"phase": "Active"},
}

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# Who the kubeconfig written by FakeKube says we are; 403 messages name it
# the way the real API names the hub's service account.
FAKE_TOKEN = "fake-kube-token"
FAKE_USER = "system:serviceaccount:jupyterhub:hub"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def api_error(status: int, message: str, *, resource: kmock.resource | None = None,
              name: str | None = None, reason: str | None = None) -> kmock.KubernetesError:
    """A Kubernetes Status error (kmock renders it as the response body)."""
    details: dict[str, Any] = {}
    if name is not None:
        details["name"] = name
    if resource is not None:
        details["group"] = resource.group
        details["kind"] = resource.plural
    return kmock.KubernetesError(
        status=status,
        reason=reason or _REASONS.get(status, "Unknown"),
        message=message,
        # kmock puts a traceback in details when they are empty; keep them small and real.
        details=details or {"causes": []},
    )


def resource_of(spec: str | tuple[str, str, str] | kmock.resource) -> kmock.resource:
    """Parse a resource: ``"pods"`` (core v1), ``"v1/pods"``, ``"batch/v1/jobs"``,
    ``"jobs.v1.batch"``, ``("kubeflow.org", "v1", "pytorchjobs")`` or a kmock.resource."""
    if isinstance(spec, tuple):
        res = kmock.resource(*spec)
    elif isinstance(spec, str) and "/" not in spec and "." not in spec:
        res = kmock.resource("", "v1", spec)
    else:
        res = kmock.resource(spec)
    if res.group is None or res.version is None or res.plural is None:
        raise ValueError(f"{spec!r} does not name a group, version and plural")
    return res


def _api_version(res: kmock.resource) -> str:
    return f"{res.group}/{res.version}" if res.group else res.version


def _kind(res: kmock.resource) -> str:
    if res.group == "" and res.plural in _CORE_KINDS:
        return _CORE_KINDS[res.plural][0]
    # Only used when a client omits `kind` on a custom resource: a readable guess.
    return res.plural[:-1].capitalize() if res.plural.endswith("s") else res.plural.capitalize()


# --------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------

# A requirement is a run of anything but commas, where parenthesised value
# sets may contain commas: "a in (x,y),b" -> ["a in (x,y)", "b"].
_REQUIREMENTS = re.compile(r"(?:[^,(]|\([^)]*\))+")
_LABEL_REQUIREMENT = re.compile(
    r"""^(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*
        (?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)
          |\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?$""",
    re.VERBOSE,
)
_FIELD_REQUIREMENT = re.compile(r"^(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$")

Predicate = Callable[[Object], bool]


def _requirements(selector: str) -> list[str]:
    return [part.strip() for part in _REQUIREMENTS.findall(selector) if part.strip()]


def parse_label_selector(selector: str | None) -> Predicate:
    """A predicate on objects for a Kubernetes label selector (empty: everything)."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for requirement in _requirements(selector or ""):
        m = _LABEL_REQUIREMENT.match(requirement)
        if m is None or (m["neg"] and (m["op"] or m["setop"])):
            raise api_error(400, f"unable to parse requirement: {requirement!r}")
        key, value = m["key"], m["value"]
        values = {v.strip() for v in (m["values"] or "").split(",") if v.strip()}
        if m["neg"]:
            checks.append(lambda labels, key=key: key not in labels)
        elif m["op"] in ("=", "=="):
            checks.append(lambda labels, key=key, value=value: labels.get(key) == value)
        elif m["op"] == "!=":
            # As in Kubernetes, objects without the label match "key!=value".
            checks.append(lambda labels, key=key, value=value: labels.get(key) != value)
        elif m["setop"] == "in":
            checks.append(lambda labels, key=key, values=values: labels.get(key) in values)
        elif m["setop"] == "notin":
            checks.append(lambda labels, key=key, values=values: labels.get(key) not in values)
        else:
            checks.append(lambda labels, key=key: key in labels)

    def matches(obj: Object) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return matches


def _field(obj: Object, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    # The API compares fields as strings; a missing field is the empty string.
    return "" if value is None else str(value)


def parse_field_selector(selector: str | None) -> Predicate:
    """A predicate on objects for a field selector (``path=value``, ``path!=value``)."""
    checks: list[Predicate] = []
    for requirement in _requirements(selector or ""):
        m = _FIELD_REQUIREMENT.match(requirement)
        if m is None:
            raise api_error(400, f"invalid field selector: {requirement!r}")
        path, value, equal = m["path"], m["value"].strip(), m["op"] != "!="
        checks.append(lambda obj, path=path, value=value, equal=equal: (_field(obj, path) == value) == equal)
    return lambda obj: all(check(obj) for check in checks)


# --------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, None deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """One entry of the store's change log: what a watch would have seen."""

    rv: int
    type: str  # ADDED, MODIFIED or DELETED
    key: Key
    object: Object  # the object after the change (the last state for DELETED)


class ObjectStore:
    """Objects by (resource, namespace, name), with a change log for watches.

    Mutations are synchronous (so they are atomic on the event loop and can be
    made from tests and the kubelet without awaiting); every one gets the next
    resourceVersion and is appended to ``log``, which watches replay and
    follow. The log is never compacted: tests are short.
    """

    def __init__(self) -> None:
        # kmock's container keeps every version of every object, so tests can
        # use kmock's history and pattern matching (``>=``) on it.
        self.objects = kmock.ObjectsArray()
        self.log: list[Change] = []
        self._rv = 0
        # Watches from before this resourceVersion get 410 Expired (see compact()).
        self.compacted_rv = 0
        # Pod logs by (namespace, pod name), written by tests.
        self.pod_logs: dict[tuple[str, str], str] = {}
        # Replaced after each change: waiters grab the current one, so none
        # misses a change made between its last look at the log and its wait.
        self._changed = asyncio.Event()
        # The API server's defaulting, per resource (see FakeKube.default).
        self.defaulters: dict[kmock.resource, list[Callable[[Object], None]]] = {}
        # Bumped by drop_watches(): watches started before end.
        self.watch_generation = 0

    @property
    def resource_version(self) -> int:
        return self._rv

    # ---- reading

    def _current(self, key: Key) -> Object | None:
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def get(self, res: kmock.resource, namespace: str | None, name: str) -> Object | None:
        obj = self._current((res, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def require(self, res: kmock.resource, namespace: str | None, name: str) -> Object:
        obj = self.get(res, namespace, name)
        if obj is None:
            raise api_error(404, f'{res.plural} "{name}" not found', resource=res, name=name)
        return obj

    def _live(self) -> Iterator[tuple[Key, Object]]:
        for key, obj in list(self.objects.items()):
            if not obj.deleted:
                yield key, obj.raw

    def items(self, res: kmock.resource, namespace: str | None = None,
              match: Predicate = lambda obj: True) -> list[Object]:
        """Live objects of a resource (in all namespaces when namespace is None), sorted by key."""
        found = [
            (key, obj) for key, obj in self._live()
            if key[0] == res and (namespace is None or key[1] == namespace) and match(obj)
        ]
        found.sort(key=lambda item: (item[0][1] or "", item[0][2]))
        return [copy.deepcopy(obj) for _, obj in found]

    # ---- writing

    def _default(self, res: kmock.resource, obj: Object) -> None:
        for fill in self.defaulters.get(res, ()):
            fill(obj)

    def _commit(self, kind: str, key: Key, obj: Object) -> Object:
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        if kind == "DELETED":
            self.objects[key].delete()
        elif key in self.objects:
            self.objects[key].create(obj)  # a new version, the history is kept
        else:
            self.objects[key] = obj
        # The log keeps its own copy: tests may edit stored objects in place.
        self.log.append(Change(self._rv, kind, key, copy.deepcopy(obj)))
        self._changed.set()
        self._changed = asyncio.Event()
        return copy.deepcopy(obj)

    def create(self, res: kmock.resource, namespace: str | None, body: Object) -> Object:
        if not isinstance(body, dict):
            raise api_error(400, "the request body must be a JSON object", resource=res)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise api_error(422, f"{res.plural} is invalid: metadata.name: Required value: "
                                 "name or generateName is required", resource=res)
        if namespace is not None and meta.get("namespace") not in (None, "", namespace):
            raise api_error(400, "the namespace of the provided object does not match "
                                 "the namespace sent on the request", resource=res, name=name)
        key = (res, namespace, name)
        if self._current(key) is not None:
            raise api_error(409, f'{res.plural} "{name}" already exists',
                            resource=res, name=name, reason="AlreadyExists")
        meta["name"] = name
        if namespace is not None:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        for server_only in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(server_only, None)
        obj.setdefault("apiVersion", _api_version(res))
        obj.setdefault("kind", _kind(res))
        if res.group == "" and res.plural in _SERVER_OWNED_STATUS:
            obj["status"] = copy.deepcopy(_SERVER_OWNED_STATUS[res.plural])
        self._default(res, obj)
        return self._commit("ADDED", key, obj)

    def _write(self, res: kmock.resource, namespace: str | None, name: str,
               make: Callable[[Object], Object], *, subresource: str | None,
               expected_rv: str | None = None) -> Object:
        """Replace an object with ``make(current)``, keeping what clients cannot change."""
        current = self.require(res, namespace, name)
        if expected_rv and expected_rv != current["metadata"]["resourceVersion"]:
            raise api_error(409, f'Operation cannot be fulfilled on {res.plural} "{name}": the object '
                                 "has been modified; please apply your changes to the latest version "
                                 "and try again", resource=res, name=name)
        new = make(copy.deepcopy(current))
        if not isinstance(new, dict):
            raise api_error(422, "the result is not an object", resource=res, name=name)
        if subresource == "status":
            # Writes to /status change the status only.
            new = {**current, "status": new.get("status")}
        elif res.group == "" and res.plural in _SERVER_OWNED_STATUS:
            new["status"] = current.get("status")
        meta = new.setdefault("metadata", {})
        for immutable in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"):
            if immutable in current["metadata"]:
                meta[immutable] = current["metadata"][immutable]
            else:
                meta.pop(immutable, None)
        self._default(res, new)
        generation = current["metadata"].get("generation", 1)
        meta["generation"] = generation + 1 if new.get("spec") != current.get("spec") else generation
        key = (res, namespace, name)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone: the pending deletion completes.
            return self._remove(key, new)
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            # As the real API: a write that changes nothing is no write (same resourceVersion, no event).
            return current
        return self._commit("MODIFIED", key, new)

    def replace(self, res: kmock.resource, namespace: str | None, name: str, body: Object,
                *, subresource: str | None = None) -> Object:
        if not isinstance(body, dict):
            raise api_error(400, "the request body must be a JSON object", resource=res, name=name)
        if (body.get("metadata") or {}).get("name", name) != name:
            raise api_error(400, "the name of the object does not match the name on the URL",
                            resource=res, name=name)
        return self._write(res, namespace, name, lambda current: copy.deepcopy(body),
                           subresource=subresource,
                           expected_rv=(body.get("metadata") or {}).get("resourceVersion"))

    def patch(self, res: kmock.resource, namespace: str | None, name: str, patch: Object | list,
              *, subresource: str | None = None) -> Object:
        """A merge patch (dict) or a JSON patch (list of operations)."""
        def apply(current: Object) -> Object:
            if isinstance(patch, list):
                try:
                    return jsonpatch.apply_patch(current, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise api_error(422, f"the JSON patch cannot be applied: {e}", resource=res, name=name)
            if isinstance(patch, dict):
                return merge_patch(current, patch)
            raise api_error(400, "the patch must be a JSON object or a JSON patch list",
                            resource=res, name=name)

        expected_rv = ((patch.get("metadata") or {}).get("resourceVersion")
                       if isinstance(patch, dict) else None)
        return self._write(res, namespace, name, apply, subresource=subresource, expected_rv=expected_rv)

    def delete(self, res: kmock.resource, namespace: str | None, name: str) -> Object:
        current = self.require(res, namespace, name)
        key = (res, namespace, name)
        meta = current["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current  # already terminating, waiting for its finalizers
            meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
            return self._commit("MODIFIED", key, current)
        return self._remove(key, current)

    def _remove(self, key: Key, last: Object) -> Object:
        gone = self._commit("DELETED", key, last)
        # What the garbage collector and the namespace controller do, at once.
        uid = last["metadata"].get("uid")
        for dep_key, dep in list(self._live()):
            owners = (dep.get("metadata") or {}).get("ownerReferences") or []
            owned = any(ref.get("uid") == uid for ref in owners)
            in_namespace = key[0] == NAMESPACES and dep_key[1] == key[2]
            if (owned or in_namespace) and self._current(dep_key) is not None:
                self.delete(*dep_key)
        return gone

    def compact(self) -> None:
        """Forget the history, as etcd compaction does: older watches must list again."""
        self.compacted_rv = self._rv

    def drop_watches(self) -> None:
        """End every watch now open (each sees the end of its stream)."""
        self.watch_generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def write_log(self, namespace: str, pod: str, text: str) -> None:
        """Append to a pod's log (followers see it at once)."""
        self.pod_logs[(namespace, pod)] = self.pod_logs.get((namespace, pod), "") + text
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- watching

    async def wait_for_change(self, timeout: float | None) -> bool:
        """Wait until the next change; False if ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def watch(self, res: kmock.resource, namespace: str | None = None, *,
                    match: Predicate = lambda obj: True, since: str | None = None,
                    timeout: float | None = None, droppable: bool = True) -> AsyncIterator[Object]:
        """Watch events, as the API streams them.

        ``since`` None or "0" starts with an ADDED event per matching object;
        a resourceVersion replays the changes after it. Objects that start or
        stop matching ``match`` are ADDED or DELETED, as for the real API.
        The stream ends after ``timeout`` seconds (``timeoutSeconds``).
        """
        def selected(key: Key, obj: Object) -> bool:
            return key[0] == res and (namespace is None or key[1] == namespace) and match(obj)

        visible: set[Key] = set()
        if not since or since == "0":
            position = len(self.log)
            initial = [(key, copy.deepcopy(obj)) for key, obj in self._live() if selected(key, obj)]
        else:
            try:
                since_rv = int(since)
            except ValueError:
                raise api_error(400, f"invalid resourceVersion: {since!r}")
            if since_rv < self.compacted_rv:
                # As the real API: a 200 stream with one ERROR event, then the end.
                yield {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 410,
                    "reason": "Expired", "message": f"too old resource version: {since_rv} ({self.compacted_rv})"}}
                return
            # The objects as they were at `since`, to know which ones the client has seen.
            state: dict[Key, Object] = {}
            position = 0
            for position, change in enumerate(self.log):
                if change.rv > since_rv:
                    break
                if change.type == "DELETED":
                    state.pop(change.key, None)
                else:
                    state[change.key] = change.object
            else:
                position = len(self.log)
            visible = {key for key, obj in state.items() if selected(key, obj)}
            initial = []

        for key, obj in initial:
            visible.add(key)
            yield {"type": "ADDED", "object": obj}

        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        generation = self.watch_generation
        while True:
            if droppable and self.watch_generation != generation:
                return  # dropped (drop_watches)
            while position < len(self.log):
                change = self.log[position]
                position += 1
                now_selected = change.type != "DELETED" and selected(change.key, change.object)
                if now_selected:
                    kind = "MODIFIED" if change.key in visible else "ADDED"
                    visible.add(change.key)
                elif change.key in visible:
                    kind = "DELETED"
                    visible.discard(change.key)
                else:
                    continue
                yield {"type": kind, "object": change.object}
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if remaining is not None and remaining <= 0:
                return
            if not await self.wait_for_change(remaining):
                return


# --------------------------------------------------------------------------
# The HTTP side: requests, failures, kmock handler
# --------------------------------------------------------------------------

def _verb(request: kmock.Request) -> str | None:
    """The RBAC verb of a resource request (None for discovery and other paths)."""
    if request.resource is None or request.resource.plural is None:
        return None
    method = str(request.method.value).upper()
    if method == "GET":
        if _truthy(request.params.get("watch")):
            return "watch"
        return "get" if request.name else "list"
    if method == "DELETE":
        return "delete" if request.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _header(request: kmock.Request, name: str) -> str:
    # kmock keeps the headers as a plain dict, in the case the client sent.
    return next((value for key, value in request.headers.items() if key.lower() == name.lower()), "")


@dataclass
class ApiCall:
    """One request the fake API received."""

    method: str
    path: str
    query: dict[str, str]
    verb: str | None  # get, list, watch, create, update, patch, delete, deletecollection
    group: str | None  # "" for the core group
    resource: str | None  # the plural, e.g. "pods"
    subresource: str | None
    namespace: str | None
    name: str | None
    token: str | None  # the bearer token it came with
    body: Any = field(default=None, repr=False)
    status: int | None = None  # None while a watch is still streaming

    @classmethod
    def from_request(cls, request: kmock.Request) -> ApiCall:
        res = request.resource
        auth = _header(request, "Authorization")
        return cls(
            method=str(request.method.value).upper(),
            path=request.url.path,
            query=dict(request.params),
            verb=_verb(request),
            group=res.group if res is not None else None,
            resource=res.plural if res is not None else None,
            subresource=request.subresource,
            namespace=request.namespace,
            name=request.name,
            token=auth[len("Bearer "):] if auth.startswith("Bearer ") else None,
            body=request.data,
        )

    @property
    def key(self) -> str:
        """``"<verb> <resource>[/<subresource>]"``, e.g. ``"create pods"``, for tallies."""
        target = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {target}" if self.verb else f"{self.method} {self.path}"

    def __str__(self) -> str:
        query = f"?{urllib.parse.urlencode(self.query)}" if self.query else ""
        return f"{self.method} {self.path}{query} -> {self.status}"


@dataclass
class Failure:
    """A rule making matching requests fail: answer an error instead of being served
    (``mode`` "error"), answer nothing for ``seconds`` ("hang", served first if ``serve``),
    or be served and then lose their answer (``"drop"``: the connection closes)."""

    verb: str
    resource: kmock.resource
    namespace: str | None
    name: str | None
    status: int
    reason: str | None
    message: str | None
    times: int | None  # None: for ever
    hits: int = 0
    mode: str = "error"  # error | hang | drop
    seconds: float = 0.0  # how long a hang lasts (at most: it ends when the fake stops)
    serve: bool = False  # hang: serve the request first (applied, but the answer comes too late)

    def matches(self, call: ApiCall) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and call.verb == self.verb
            and call.group == self.resource.group
            and call.resource == self.resource.plural
            and (self.namespace is None or call.namespace == self.namespace)
            and (self.name is None or call.name == self.name)
        )

    def error(self, call: ApiCall) -> kmock.KubernetesError:
        message = self.message
        if message is None and self.status == 403:
            where = f' in the namespace "{call.namespace}"' if call.namespace else " at the cluster scope"
            message = (f'{call.resource} is forbidden: User "{FAKE_USER}" cannot {call.verb} '
                       f'resource "{call.resource}" in API group "{call.group}"{where}')
        if message is None:
            message = f"injected failure: {call.key}"
        return api_error(self.status, message, resource=self.resource, name=call.name, reason=self.reason)


#: The environment variable naming a file: when set, every request any FakeKube
#: received during the pytest session is written there as JSON lines at its end
#: (tests/test_rbac.py checks them against deploy/rbac.yaml).
RECORD_CALLS_ENV = "KUBEAI_RECORD_KUBE_CALLS"


class CallRecorder:
    """Every request that any ``FakeKube`` of this process received, with the test that made it.

    ``FakeKube.calls`` is one test's record; this one spans the session, so
    the RBAC test can ask which (group, resource, verb) the spawner and the
    backends really use.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, ApiCall]] = []

    def add(self, call: ApiCall) -> None:
        # PYTEST_CURRENT_TEST is "<nodeid> (<phase>)"; calls outside a test record "".
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        self.calls.append((test, call))

    def records(self) -> list[dict[str, Any]]:
        return [
            {"test": test, "method": call.method, "path": call.path, "verb": call.verb, "group": call.group,
             "resource": call.resource, "subresource": call.subresource, "namespace": call.namespace,
             "status": call.status}
            for test, call in self.calls
        ]

    def dump(self, path: Path) -> None:
        path.write_text("".join(json.dumps(record) + "\n" for record in self.records()))


SESSION_CALLS = CallRecorder()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the session's calls where ``$KUBEAI_RECORD_KUBE_CALLS`` says (a plugin hook)."""
    path = os.environ.get(RECORD_CALLS_ENV)
    if path:
        SESSION_CALLS.dump(Path(path))


def rbac_allows(objects: Iterable[Object], attributes: dict[str, str]) -> bool:
    """Whether the rules of these Roles and ClusterRoles allow a review's ``resourceAttributes``.

    A Role's rules hold in its namespace, a ClusterRole's everywhere (the
    bindings are taken as binding us: tests/test_rbac.py checks them). A rule
    with ``resourceNames`` allows only a request naming one of them, as the
    real authorizer: a review without a ``name`` asks about every object.
    """
    resource = attributes.get("resource", "")
    if attributes.get("subresource"):
        resource += "/" + attributes["subresource"]
    for obj in objects:
        if obj.get("kind") not in ("Role", "ClusterRole"):
            continue
        if obj["kind"] == "Role" and obj["metadata"].get("namespace") != attributes.get("namespace"):
            continue
        for rule in obj.get("rules") or []:
            names = rule.get("resourceNames")
            if (attributes.get("group", "") in rule.get("apiGroups", ())
                    and resource in rule.get("resources", ())
                    and attributes.get("verb") in rule.get("verbs", ())
                    and (not names or attributes.get("name") in names)):
                return True
    return False


def _is_resource_request(request: kmock.Request) -> bool:
    return request.resource is not None and request.resource.plural is not None


def _is_create(request: kmock.Request) -> bool:
    return _is_resource_request(request) and _verb(request) == "create"


@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesScaffold):
    """kmock's Kubernetes scaffold (discovery, Status errors, DSL) serving an ObjectStore."""

    store: ObjectStore = attrs.field(factory=ObjectStore)
    calls: list[ApiCall] = attrs.field(factory=list, init=False)
    failures: list[Failure] = attrs.field(factory=list, init=False)
    denied: list[tuple[str, str, str | None]] = attrs.field(factory=list, init=False)  # see FakeKube.deny
    rbac: list[Object] | None = attrs.field(default=None, init=False)  # see FakeKube.authorize
    # Set when the fake stops: hanging requests end then, so the server can close.
    stopping: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Fallbacks, so reactions added with kmock's DSL take precedence.
        # Creates answer 201: clients map response types by status, and
        # CustomObjectsApi only knows 201 for a create.
        self.fallback[_is_create] << 201 << self._serve
        self.fallback[lambda request: _is_resource_request(request) and not _is_create(request)] << self._serve
        # kmock serves /version; kubernetes_asyncio's VersionApi asks for /version/.
        self.fallback["get /version/"] << self._serve_server_version
        for plural, (kind, namespaced) in _CORE_KINDS.items():
            self.resources[f"v1/{plural}"] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, subresources={"status"},
                verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
            )

    def _get_resources(self) -> list[kmock.resource]:
        # Discovery also lists whatever resources hold objects (custom resources included).
        return list(set(super()._get_resources()) | {key[0] for key in self.store.objects})

    async def _handle(self, request: kmock.Request) -> Any:
        call = ApiCall.from_request(request)
        self.calls.append(call)
        SESSION_CALLS.add(call)
        try:
            failure = next((f for f in self.failures if f.matches(call)), None)
            if failure is not None:
                failure.hits += 1
                if failure.mode == "error":
                    raise failure.error(call)
                if failure.mode == "hang" and not failure.serve:
                    await self._hang(failure.seconds)
                    raise api_error(504, "the request timed out (injected hang)")
            response = await super()._handle(request)
            if failure is not None and failure.mode == "hang":
                await self._hang(failure.seconds)
            if failure is not None and failure.mode == "drop":
                # Applied, and the answer is lost: the client sees the connection close.
                call.status = 0
                transport = request._raw_request.transport if request._raw_request is not None else None
                if transport is not None:
                    transport.close()
                return response
        except kmock.KubernetesError as e:
            call.status = e.status
            raise
        except Exception:
            call.status = 500
            raise
        call.status = response.status
        return response

    async def _hang(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _serve(self, request: kmock.Request) -> Any:
        res, namespace, name = request.resource, request.namespace, request.name
        verb, subresource, params = _verb(request), request.subresource, request.params
        if subresource == "log" and res == PODS and verb == "get":
            return await self._serve_log(namespace, name, params)
        if subresource not in (None, "status"):
            raise api_error(404, f"the {res.plural}/{subresource} subresource is not emulated by "
                                 "tests/kubefake.py", resource=res, name=name)
        if verb == "get":
            return self.store.require(res, namespace, name)
        if verb in ("list", "watch", "deletecollection"):
            match = self._selection(params, name)
            if verb == "watch":
                # Checked here, so bad values answer 400 before the stream starts.
                since = params.get("resourceVersion") or None
                if since is not None and not since.isdigit():
                    raise api_error(400, f"invalid resourceVersion: {since!r}", resource=res)
                try:
                    timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
                except ValueError:
                    raise api_error(400, "invalid timeoutSeconds", resource=res)
                return self._stream(self.store.watch(res, namespace, match=match, since=since,
                                                     timeout=timeout))
            items = self.store.items(res, namespace, match)
            if verb == "deletecollection":
                items = [self.store.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                         for obj in items]
            return {
                "apiVersion": _api_version(res),
                "kind": f"{_kind(res)}List",
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": items,
            }
        if verb == "create" and (res.group, res.plural) == ("authorization.k8s.io", "selfsubjectaccessreviews"):
            return self._review(request.data)
        if verb == "create":
            return self.store.create(res, namespace, request.data)
        if verb == "update":
            return self.store.replace(res, namespace, name, request.data, subresource=subresource)
        if verb == "patch":
            if "apply-patch" in _header(request, "Content-Type"):
                return self._apply(res, namespace, name, request.data, params)
            return self.store.patch(res, namespace, name, request.data, subresource=subresource)
        if verb == "delete":
            return self.store.delete(res, namespace, name)
        raise api_error(405, f"{request.method.value} is not supported on {request.url.path}", resource=res)

    def _apply(self, res: kmock.resource, namespace: str | None, name: str, body: Any,
               params: dict[str, str]) -> Object:
        """Server-side apply, as a merge patch of the applied fields (or a create)."""
        if not params.get("fieldManager"):
            raise api_error(422, "PATCH with apply requires a fieldManager", resource=res, name=name)
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise api_error(400, "an applied configuration must be an object with apiVersion and kind",
                            resource=res, name=name)
        if (body.get("metadata") or {}).get("name") != name:
            raise api_error(400, "the name of the applied object does not match the name on the URL",
                            resource=res, name=name)
        if self.store.get(res, namespace, name) is None:
            return self.store.create(res, namespace, body)
        return self.store.patch(res, namespace, name, body)

    def _review(self, review: Object) -> Object:
        """A SelfSubjectAccessReview, answered from ``denied`` (everything else is allowed),
        or by the rules of ``rbac`` when set."""
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        if self.rbac is not None:
            allowed = rbac_allows(self.rbac, attributes)
            status = {"allowed": allowed, **({} if allowed else {"reason": "no RBAC rule allows it"})}
            return {**review, "metadata": {"creationTimestamp": None}, "status": status}
        target = attributes.get("resource", "")
        if attributes.get("group"):
            target += "." + attributes["group"]
        if attributes.get("subresource"):
            target += "/" + attributes["subresource"]
        denied = any(verb == attributes.get("verb") and resource == target
                     and namespace in (None, attributes.get("namespace"))
                     for verb, resource, namespace in self.denied)
        status = {"allowed": not denied, **({"reason": "denied by the test"} if denied else {})}
        return {**review, "metadata": {"creationTimestamp": None}, "status": status}

    async def _serve_log(self, namespace: str, name: str, params: dict[str, str]) -> Any:
        pod = self.store.require(PODS, namespace, name)
        if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            container = params.get("container") or pod["spec"]["containers"][0]["name"]
            raise api_error(400, f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        text = self.store.pod_logs.get((namespace, name), "")
        if params.get("tailLines"):
            text = "".join(text.splitlines(keepends=True)[-int(params["tailLines"]):])
        if not _truthy(params.get("follow")):
            return text.encode()
        return self._follow_log(namespace, name, text)

    async def _follow_log(self, namespace: str, name: str, sent: str) -> AsyncIterator[bytes]:
        yield sent.encode()
        position = len(self.store.pod_logs.get((namespace, name), ""))
        while True:
            text = self.store.pod_logs.get((namespace, name), "")
            if len(text) > position:
                yield text[position:].encode()
                position = len(text)
            pod = self.store.get(PODS, namespace, name)
            if pod is None or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            await self.store.wait_for_change(0.05)

    @staticmethod
    def _selection(params: dict[str, str], name: str | None) -> Predicate:
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"))
        return lambda obj: (
            (name is None or obj["metadata"]["name"] == name) and labels(obj) and fields(obj)
        )

    @staticmethod
    async def _stream(events: AsyncIterator[Object]) -> AsyncIterator[Any]:
        # kmock sends the response headers with the first chunk, and the
        # client waits for them before it reads events: send them at once.
        yield b""
        async for event in events:
            yield event


# --------------------------------------------------------------------------
# kmock's request parser, fixed while a FakeKube runs
# --------------------------------------------------------------------------

_original_parse_path = _kmock_parsing.parse_path
_original_guess_k8s = _kmock_parsing.guess_k8s
_parser_users = 0


def _parse_path(path: str) -> Any:
    # kmock takes ".../namespaces/<x>" for a namespace prefix, so the
    # Namespace resource itself (/api/v1/namespaces[/name[/status]]) fails.
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        return _kmock_parsing.ParsedPath(
            group="", version="v1", plural="namespaces",
            name=parts[3] if len(parts) > 3 else None,
            subresource=parts[4] if len(parts) > 4 else None,
        )
    return _original_parse_path(path)


def _guess_k8s(k8s: Any, method: Any, query: dict[str, str]) -> Any:
    # kubernetes_asyncio sends watch=True; kmock only knows watch=true.
    if _truthy(query.get("watch")):
        query = {**query, "watch": "true"}
    return _original_guess_k8s(k8s, method, query)


@contextlib.contextmanager
def _kmock_parser_fixed() -> Iterator[None]:
    """Wrap kmock's parser functions while any FakeKube runs (they are module-global)."""
    global _parser_users
    if _parser_users == 0:
        _kmock_parsing.parse_path = _parse_path
        _kmock_parsing.guess_k8s = _guess_k8s
    _parser_users += 1
    try:
        yield
    finally:
        _parser_users -= 1
        if _parser_users == 0:
            _kmock_parsing.parse_path = _original_parse_path
            _kmock_parsing.guess_k8s = _original_guess_k8s


# --------------------------------------------------------------------------
# The kubelet
# --------------------------------------------------------------------------

def _condition(kind: str, status: str, **extra: str) -> Object:
    return {"type": kind, "status": status, "lastTransitionTime": _now(), **extra}


def _container_status(container: Object, state: Object, *, ready: bool) -> Object:
    image = container.get("image", "")
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"{image}@sha256:{'0' * 64}",
        "containerID": f"containerd://{uuid.uuid4().hex}",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }


class Kubelet:
    """Plays the scheduler and the node agent for the pods in a store.

    It follows the store directly (not over HTTP, so its writes are not in
    the request record) and treats each new pod by its mode, set for all
    pods or per pod name with ``set_mode``:

    * ``"run"`` (default): scheduled on ``node_name``, images pulled,
      containers started (with the Events a node emits), then Running and
      Ready with a pod IP (``pod_ip``, or the next of 10.244.x.y);
    * ``"unschedulable"``: Pending for ever, PodScheduled=False (reason
      Unschedulable) and a FailedScheduling warning Event;
    * ``"ignore"``: left Pending without events, for tests that write the
      status themselves.

    ``step_delay`` seconds pass between the steps of "run", so tests can see
    a pod Pending. ``terminate()`` makes a running pod's containers exit.
    """

    MODES = ("run", "unschedulable", "ignore")
    UNSCHEDULABLE = ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                     "available: 1 No preemption victims found for incoming pod.")

    def __init__(self, store: ObjectStore, *, pod_ip: str | None = None,
                 node_name: str = "fake-node", step_delay: float = 0.0) -> None:
        self.store = store
        self.pod_ip = pod_ip
        self.node_name = node_name
        self.host_ip = "172.18.0.2"
        self.step_delay = step_delay
        self.mode = "run"
        self.pod_modes: dict[str, str] = {}
        self.errors: list[BaseException] = []
        self._ips = itertools.count()
        self._pods: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._running: set[tuple[str, str]] = set()
        self._last_event_ns = 0
        self._follower: asyncio.Task[None] | None = None

    def set_mode(self, mode: str, *, pod: str | None = None) -> None:
        """Set the mode for all pods, or for the pod named ``pod``."""
        if mode not in self.MODES:
            raise ValueError(f"unknown kubelet mode {mode!r}; use one of {self.MODES}")
        if pod is None:
            self.mode = mode
        else:
            self.pod_modes[pod] = mode

    async def start(self) -> None:
        self._follower = self._spawn(self._follow_pods())

    async def stop(self) -> None:
        tasks = [task for task in (self._follower, *self._pods.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._follower = None
        self._pods.clear()

    def terminate(self, namespace: str, name: str, exit_code: int = 0) -> Object:
        """The pod's containers exit with ``exit_code``: Succeeded (0) or Failed."""
        pod = self.store.require(PODS, namespace, name)
        now = _now()
        terminated = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                     "startedAt": pod["status"].get("startTime", now), "finishedAt": now}}
        self._running.discard((namespace, name))
        return self._set_status(pod, {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [
                _condition(kind, "False" if kind in ("Ready", "ContainersReady") else "True")
                for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [_container_status(c, terminated, ready=False)
                                  for c in pod["spec"].get("containers", [])],
        })

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        task.add_done_callback(self._keep_error)
        return task

    def _keep_error(self, task: asyncio.Task[None]) -> None:
        # Background failures would vanish; FakeKube.errors reports them.
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())

    async def _follow_pods(self) -> None:
        async for event in self.store.watch(PODS, droppable=False):
            pod = event["object"]
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if event["type"] == "ADDED":
                self._pods[key] = self._spawn(self._run(*key))
            elif event["type"] == "DELETED":
                task = self._pods.pop(key, None)
                if task is not None:
                    task.cancel()
                if key in self._running:
                    self._running.discard(key)
                    for container, field_path in self._containers(pod, init=False):
                        self._emit(pod, "Normal", "Killing", f"Stopping container {container['name']}",
                                   field_path=field_path)

    async def _run(self, namespace: str, name: str) -> None:
        try:
            await self._lifecycle(namespace, name)
        except kmock.KubernetesError as e:
            if e.status != 404:  # 404: the pod was deleted meanwhile
                raise

    async def _lifecycle(self, namespace: str, name: str) -> None:
        pod = self.store.require(PODS, namespace, name)
        mode = self.pod_modes.get(name, self.mode)
        if mode == "ignore":
            return
        if mode == "unschedulable":
            self._set_status(pod, {"conditions": [
                _condition("PodScheduled", "False", reason="Unschedulable", message=self.UNSCHEDULABLE),
            ]})
            self._emit(pod, "Warning", "FailedScheduling", self.UNSCHEDULABLE, component="default-scheduler")
            return

        self.store.patch(PODS, namespace, name, {"spec": {"nodeName": self.node_name}})
        self._set_status(pod, {"conditions": [_condition("PodScheduled", "True")]})
        self._emit(pod, "Normal", "Scheduled", f"Successfully assigned {namespace}/{name} to {self.node_name}",
                   component="default-scheduler")
        for container, field_path in self._containers(pod):
            await asyncio.sleep(self.step_delay)
            image, cname = container.get("image", ""), container["name"]
            for reason, message in (
                ("Pulling", f'Pulling image "{image}"'),
                ("Pulled", f'Successfully pulled image "{image}" in 0s (0s including waiting)'),
                ("Created", f"Created container {cname}"),
                ("Started", f"Started container {cname}"),
            ):
                self._emit(pod, "Normal", reason, message, field_path=field_path)
        await asyncio.sleep(self.step_delay)
        self._set_status(pod, self._running_status(pod))
        self._running.add((namespace, name))

    @staticmethod
    def _containers(pod: Object, *, init: bool = True) -> Iterator[tuple[Object, str]]:
        kinds = ("initContainers", "containers") if init else ("containers",)
        for kind in kinds:
            for container in pod["spec"].get(kind) or []:
                yield container, f"spec.{kind}{{{container['name']}}}"

    def _running_status(self, pod: Object) -> Object:
        now = _now()
        n = next(self._ips)
        ip = self.pod_ip or f"10.244.{n // 250}.{n % 250 + 2}"
        status: Object = {
            "phase": "Running",
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                _condition(kind, "True")
                for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [_container_status(c, {"running": {"startedAt": now}}, ready=True)
                                  for c in pod["spec"].get("containers") or []],
        }
        if pod["spec"].get("initContainers"):
            done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
            status["initContainerStatuses"] = [_container_status(c, done, ready=True)
                                               for c in pod["spec"]["initContainers"]]
        return status

    def _set_status(self, pod: Object, status: Object) -> Object:
        meta = pod["metadata"]
        return self.store.patch(PODS, meta["namespace"], meta["name"], {"status": status}, subresource="status")

    def _event_suffix(self) -> int:
        # Like Kubernetes' event recorder: the time in ns, in hex, so that
        # lists (sorted by name) keep the events of a pod in order.
        self._last_event_ns = max(time.time_ns(), self._last_event_ns + 1)
        return self._last_event_ns

    def _emit(self, pod: Object, kind: str, reason: str, message: str, *,
              component: str = "kubelet", field_path: str | None = None) -> None:
        meta = pod["metadata"]
        now = _now()
        involved = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": meta["namespace"],
                    "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        if field_path:
            involved["fieldPath"] = field_path
        self.store.create(EVENTS, meta["namespace"], {
            "metadata": {"name": f"{meta['name']}.{self._event_suffix():x}"},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component, **({"host": self.node_name} if component == "kubelet" else {})},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": None,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": self.node_name if component == "kubelet" else "",
        })


# --------------------------------------------------------------------------
# The whole fake, and the wiring of kubernetes_asyncio/KubeSpawner to it
# --------------------------------------------------------------------------

class FakeKube:
    """The fake API server on a free loopback port, with its store, kubelet and request record.

    ``async with FakeKube() as kube:`` starts it; ``kube.url`` is its address.
    Without the ``kube`` fixture, use ``fake_kubernetes()`` to also point
    kubernetes_asyncio and KubeSpawner at it.
    """

    def __init__(self, *, kubelet: bool = True, pod_ip: str | None = None, step_delay: float = 0.0) -> None:
        self.store = ObjectStore()
        # The kmock handler: its DSL adds reactions that take precedence, e.g.
        # kube.kmock["get /version"] << {...}; iterating it gives kmock's requests.
        self.kmock = FakeApiServer(store=self.store)
        self.kubelet = Kubelet(self.store, pod_ip=pod_ip, step_delay=step_delay)
        self._with_kubelet = kubelet
        self._server: kmock.Server | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._served_errors: list[BaseException] = []

    async def __aenter__(self) -> FakeKube:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(_kmock_parser_fixed())
            await stack.enter_async_context(self.kmock)
            # kmock forgets its errors when its context exits; keep them for `errors`.
            stack.callback(lambda: self._served_errors.extend(self.kmock.errors))
            self._server = await stack.enter_async_context(kmock.Server(self.kmock))
            if self._with_kubelet:
                await self.kubelet.start()
                stack.push_async_callback(self.kubelet.stop)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._stack is not None
        self.kmock.stopping.set()
        await self._stack.aclose()
        self._stack = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake API is not running")
        return str(self._server.url).rstrip("/")

    @property
    def errors(self) -> list[BaseException]:
        """Failures of the fake itself (bugs), not the Kubernetes errors it answers on purpose."""
        served = self.kmock.errors if self.kmock.active else self._served_errors
        return [e for e in served if not isinstance(e, kmock.KubernetesError)] + self.kubelet.errors

    # ---- objects

    @property
    def objects(self) -> kmock.ObjectsArray:
        """kmock's view of every object and its versions: ``kube.objects["v1/pods", "ns", "name"]``."""
        return self.store.objects

    def get(self, resource: Any, namespace: str | None, name: str) -> Object | None:
        """The object, or None. ``resource``: see ``resource_of`` (``"pods"``, ``"batch/v1/jobs"``...)."""
        return self.store.get(resource_of(resource), namespace, name)

    def list(self, resource: Any, namespace: str | None = None, *,
             labels: str | None = None, fields: str | None = None) -> list[Object]:
        """Objects of a resource, optionally filtered by label and field selectors."""
        label_match, field_match = parse_label_selector(labels), parse_field_selector(fields)
        return self.store.items(resource_of(resource), namespace, lambda obj: label_match(obj) and field_match(obj))

    def create(self, resource: Any, obj: Object, namespace: str | None = None) -> Object:
        """Store an object as if a client created it (ADDED for watchers, not in ``calls``)."""
        if namespace is None:
            namespace = (obj.get("metadata") or {}).get("namespace")
        return self.store.create(resource_of(resource), namespace, obj)

    def patch(self, resource: Any, namespace: str | None, name: str, patch: Object | list,
              *, subresource: str | None = None) -> Object:
        return self.store.patch(resource_of(resource), namespace, name, patch, subresource=subresource)

    def delete(self, resource: Any, namespace: str | None, name: str) -> Object:
        return self.store.delete(resource_of(resource), namespace, name)

    def serve_kind(self, resource: Any, kind: str, *, namespaced: bool = True) -> None:
        """Declare a custom resource, as installing its CRD does: API discovery lists it."""
        self.kmock.resources[resource_of(resource)] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, subresources={"status"},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
        )

    def write_log(self, namespace: str, pod: str, text: str) -> None:
        """Append ``text`` to the pod's log (``pods/log``; followers get it at once)."""
        self.store.write_log(namespace, pod, text)

    def compact(self) -> None:
        """Forget the change history: watches resuming from before now get 410 Expired."""
        self.store.compact()

    def history(self, resource: Any, namespace: str | None, name: str) -> list[tuple[str, Object]]:
        """(event type, object) for every change of one object, oldest first."""
        key = (resource_of(resource), namespace, name)
        return [(change.type, change.object) for change in self.store.log if change.key == key]

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``condition()`` is truthy (and return it); checked on each change
        to the store and every 50 ms, for conditions on clients' views (reflectors)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := condition()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            await self.store.wait_for_change(min(remaining, 0.05))
        return result

    # ---- requests

    @property
    def calls(self) -> list[ApiCall]:
        """Every request received, in order (kept across the test; slice it per phase)."""
        return self.kmock.calls

    def find_calls(self, verb: str | None = None, resource: Any = None, *,
                   namespace: str | None = None, name: str | None = None,
                   calls: Iterable[ApiCall] | None = None) -> list[ApiCall]:
        """The calls matching all the given criteria (resource as for ``resource_of``)."""
        res = resource_of(resource) if resource is not None else None
        return [
            call for call in (self.calls if calls is None else calls)
            if (verb is None or call.verb == verb)
            and (res is None or (call.group, call.resource) == (res.group, res.plural))
            and (namespace is None or call.namespace == namespace)
            and (name is None or call.name == name)
        ]

    def tally(self, calls: Iterable[ApiCall] | None = None) -> Counter[str]:
        """How many calls of each ``ApiCall.key`` (e.g. ``{"create pods": 1, ...}``)."""
        return Counter(call.key for call in (self.calls if calls is None else calls))

    def deny(self, verb: str, resource: str, *, namespace: str | None = None) -> None:
        """Make SelfSubjectAccessReviews of ``verb`` on ``resource`` answer ``allowed: false``.

        ``resource`` as ``kubectl auth can-i`` names it: ``pods``, ``pods/log``,
        ``pytorchjobs.kubeflow.org``; ``namespace`` None: in every namespace and cluster-wide.
        Only the reviews change: the requests themselves are still served (see ``fail``).
        """
        self.kmock.denied.append((verb, resource, namespace))

    def fail(self, verb: str, resource: Any, *, namespace: str | None = None, name: str | None = None,
             status: int = 500, reason: str | None = None, message: str | None = None,
             times: int | None = None) -> Failure:
        """Answer matching requests with an error (a Kubernetes Status), without serving them.

        ``verb`` is an RBAC verb (create, get, list, watch, patch, delete...).
        A 403 gets the real API's "forbidden" message unless ``message`` is
        given. ``times`` limits how many requests fail; ``Failure.hits`` counts them.
        """
        failure = Failure(verb, resource_of(resource), namespace, name, status, reason, message, times)
        self.kmock.failures.append(failure)
        return failure

    def hang(self, verb: str, resource: Any, seconds: float, *, namespace: str | None = None,
             name: str | None = None, serve: bool = False, times: int | None = None) -> Failure:
        """Answer matching requests only after ``seconds`` (past the client's timeout).

        ``serve``: the request is applied at once and only its answer is late
        (the client, having given up, cannot know it was); else it is not
        applied (and answers 504 Timeout, to nobody).
        """
        failure = Failure(verb, resource_of(resource), namespace, name, 504, None, None, times,
                          mode="hang", seconds=seconds, serve=serve)
        self.kmock.failures.append(failure)
        return failure

    def drop(self, verb: str, resource: Any, *, namespace: str | None = None, name: str | None = None,
             times: int | None = None) -> Failure:
        """Serve matching requests, then close the connection without the answer (a lost answer)."""
        failure = Failure(verb, resource_of(resource), namespace, name, 0, None, None, times, mode="drop")
        self.kmock.failures.append(failure)
        return failure

    def drop_watches(self) -> None:
        """End every open watch stream now, as an API server restart or a proxy does."""
        self.store.drop_watches()

    def default(self, resource: Any, fill: Callable[[Object], None]) -> None:
        """Let ``fill(obj)`` default fields of every written ``resource`` object in place
        (on create, update, patch and apply), as the API server does from a CRD's schema."""
        self.store.defaulters.setdefault(resource_of(resource), []).append(fill)

    def authorize(self, rbac_objects: Iterable[Object]) -> None:
        """Answer SelfSubjectAccessReviews by these RBAC objects' rules (see ``rbac_allows``)."""
        self.kmock.rbac = list(rbac_objects)

    # ---- clients

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this server (JSON, which YAML readers accept)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "hub", "user": {"token": FAKE_TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "hub"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config, indent=2))
        return path


def _reflector_owners() -> list[type[KubeSpawner]]:
    """KubeSpawner and its subclasses that keep their own ``reflectors`` dict."""
    owners, pending = [], [KubeSpawner]
    while pending:
        cls = pending.pop()
        if "reflectors" in vars(cls):
            owners.append(cls)
        pending.extend(cls.__subclasses__())
    return owners


async def _reset_kubespawner() -> None:
    """Forget KubeSpawner's process-wide state: its reflectors and shared API clients.

    Both would outlive a test and talk to its (stopped) server from the next
    one: reflectors are class-level singletons, and kubespawner.clients caches
    one client per event loop, closed only when its closer task is cancelled
    (which JupyterHub does at shutdown, and which we do here).
    """
    for cls in _reflector_owners():
        await cls._stop_all_reflectors()
    closers = [task for task in asyncio.all_tasks()
               if getattr(task.get_coro(), "__qualname__", "") == "shared_client.<locals>.close_client_task"]
    for task in closers:
        task.cancel()
    await asyncio.gather(*closers, return_exceptions=True)
    loop = asyncio.get_running_loop()
    for cache_key, client in list(kubespawner.clients._client_cache.items()):
        # Clients of earlier tests' loops cannot be closed any more (their
        # loops are gone); they are only dropped.
        del kubespawner.clients._client_cache[cache_key]
        if cache_key[0] is loop:
            await client.api_client.close()


@contextlib.asynccontextmanager
async def kubernetes_clients_for(kube: FakeKube, kubeconfig: Path) -> AsyncIterator[None]:
    """Point kubernetes_asyncio (hence KubeSpawner) at ``kube`` until exit.

    Writes ``kubeconfig``, makes it the default (``KUBECONFIG`` too, for
    subprocesses), hides in-cluster settings, loads it as the default client
    configuration, and resets KubeSpawner's cached config, clients and
    reflectors on entry and exit, so every test talks to its own server.
    """
    kube.write_kubeconfig(kubeconfig)
    env = {key: value for key, value in os.environ.items()
           if key not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    env["KUBECONFIG"] = str(kubeconfig)
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.dict(os.environ, env, clear=True))
        # Read once, at import, from $KUBECONFIG.
        patches.enter_context(mock.patch.object(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)))
        # The process-wide default configuration, restored afterwards.
        patches.enter_context(mock.patch.object(Configuration, "_default", None))
        await kubernetes_asyncio.config.load_kube_config(config_file=str(kubeconfig))
        # KubeSpawner loads the config once per process (lru_cache); make it
        # load ours (it finds the same file), and forget it afterwards.
        kubespawner.clients.load_config.cache_clear()
        await _reset_kubespawner()
        try:
            yield
        finally:
            await _reset_kubespawner()
            kubespawner.clients.load_config.cache_clear()


@contextlib.asynccontextmanager
async def fake_kubernetes(kubeconfig: Path, **options: Any) -> AsyncIterator[FakeKube]:
    """A running FakeKube (``options`` as for it) with the clients pointed at it."""
    async with FakeKube(**options) as kube, kubernetes_clients_for(kube, kubeconfig):
        yield kube


@pytest_asyncio.fixture
async def kube(tmp_path: Path) -> AsyncIterator[FakeKube]:
    """A fake Kubernetes API for one test, with kubernetes_asyncio and KubeSpawner pointed at it.

    The test fails if the fake itself broke (``FakeKube.errors``).
    """
    async with fake_kubernetes(tmp_path / "kubeconfig") as fake:
        yield fake
    if fake.errors:
        pytest.fail("the fake Kubernetes API failed internally:\n"
                    + "\n".join(f"{type(e).__name__}: {e}" for e in fake.errors), pytrace=False)


# --------------------------------------------------------------------------
# Spawners
# --------------------------------------------------------------------------

NAMESPACE = "jupyter"


class FakeUser:
    """What KubeSpawner reads from a JupyterHub user (as kubespawner's own tests mock it)."""

    def __init__(self, name: str, *, id: int = 1, groups: Iterable[str] = ()) -> None:
        self.name = name
        self.id = id
        self.groups = [SimpleNamespace(name=group) for group in groups]
        self.server = Server(base_url=f"/user/{self.escaped_name}/")

    @property
    def escaped_name(self) -> str:
        return urllib.parse.quote(self.name, safe="@~")

    @property
    def url(self) -> str:
        return f"/user/{self.escaped_name}/"

    def progress_url(self, server_name: str = "") -> str:
        return f"/hub/api/users/{self.escaped_name}/servers/{server_name}/progress"


def make_spawner(user: str | FakeUser = "alice", *, spawner_class: type[KubeSpawner] = KubeSpawner,
                 **traits: Any) -> KubeSpawner:
    """A spawner for ``user`` as the hub would make one, with timeouts short enough for tests.

    Call it inside the ``kube`` fixture: KubeSpawner makes its API client on
    construction. ``traits`` override the defaults (namespace ``NAMESPACE``).
    """
    settings: dict[str, Any] = {
        "namespace": NAMESPACE,
        "start_timeout": 10,
        "http_timeout": 5,
        "k8s_api_request_timeout": 3,
        "k8s_api_request_retry_timeout": 5,
        "api_token": "fake-api-token",
        "oauth_client_id": "fake-oauth-client",
        "cmd": ["jupyterhub-singleuser"],
        **traits,
    }
    return spawner_class(user=user if isinstance(user, FakeUser) else FakeUser(user), _mock=True, **settings)
