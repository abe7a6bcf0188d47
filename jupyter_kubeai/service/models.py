"""``ModelManager``: the registry and the inference services, with who may do what.

- Who may see and change what is the one rule of :mod:`.access`: a model,
  a version or a service is seen by its owner, its project's members and
  hub admins (anyone else gets 404, as if it did not exist), and changed
  by its owner and hub admins (403 naming who may). A member adds versions
  of their own to a project model and deploys a project model's version as
  a service of their own; a model's aliases are its owner's; a version is
  its registrant's, and the model's owner may curate it too.
- Every change is an event with who made it (``events`` in the detail of a
  model and of a service).
- Registering copies files from the caller's own volumes only (see
  :mod:`jupyter_kubeai.models.registry`), optionally from one of the
  caller's own jobs once it has finished (409 while Pending or Running), whose lineage (notebook snapshot, image, parameters,
  last metrics) the version keeps.
- A service serves one version; changing version (update, rollback) goes
  through the serving backend without failed requests, and a version a
  service uses (or could roll back to) cannot be deleted.
- The model answers under the service's name (:meth:`ModelManager.served_name`),
  locally and on Kubernetes, with our runtime or KServe's built-in one.
- The last failed requests the hub forwarded to each service
  (:class:`RecentErrors`) are part of its status, Ready or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque

from ..catalog.access import GPUS, IMAGE, PROFILE, select, user_view
from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from ..jobs.metrics import METRICS_FILE, read_metrics
from ..jobs.snapshot import JOBS_FOLDER, NOTEBOOK_FILE
from ..jobs.status import ACTIVE_STATES
from ..local.share import LocalShare
from ..models import registry
from ..models.deploy import ServingBackend
from ..models.spec import DeploymentSpec
from ..safefiles import Unsafe
from ..store.catalog import CatalogStore
from ..store.events import EventStore
from ..store.models import DeploymentRecord, ModelRecord, ModelStore, VersionRecord, scope_of, scopes_of
from .access import Item, may_change, may_see, require_change
from .identity import Identity
from .jobs import JobManager
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)

MODEL_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ALIAS_RE = re.compile(r"^[a-z][-a-z0-9]{0,62}$")
REGISTER_FIELDS = {"name", "project", "path", "job_id", "format", "signature", "metrics", "tags", "description"}
DEPLOY_FIELDS = {"name", "model_id", "version", "alias", "replicas", "max_replicas", "profile", "gpus", "image",
                 "max_batch_size", "max_latency_ms"}


#: The largest id or version number the store holds (a signed 64-bit integer).
MAX_ID = 2**63 - 1


def _fields(body: dict, allowed: set[str]) -> dict:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"Unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(allowed))}.")
    return body


def _typed(body: dict, name: str, kind, default=None):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        words = {int: "a whole number", str: "text", dict: "an object", float: "a number"}
        raise InvalidInput(f"Field {name!r} must be {words.get(kind, kind.__name__)}.")
    return value


#: Failed requests kept per service (the newest) in its ``recent_errors``.
RECENT_ERRORS_KEPT = 20
#: The longest message kept of a failed request.
ERROR_MESSAGE_CHARS = 500


class RecentErrors:
    """The last failed requests the hub forwarded to each service's model server, in memory.

    Kept since the hub service started (a restart forgets them), at most
    ``keep`` per service; what a model server was never asked (the hub
    refused the caller) is not kept. Requests sent to a service in the
    cluster without the hub are not seen here: the runtime's ``/metrics``
    counts those.
    """

    def __init__(self, keep: int = RECENT_ERRORS_KEPT):
        self.keep = keep
        self._by_service: dict[str, deque] = {}

    def record(self, name: str, status: int, message: str, when: float | None = None) -> None:
        errors = self._by_service.setdefault(name, deque(maxlen=self.keep))
        errors.append({"time": time.time() if when is None else when, "status": status,
                       "message": message[:ERROR_MESSAGE_CHARS]})

    def of(self, name: str) -> list[dict]:
        """The service's failed requests, newest first."""
        return [dict(e) for e in reversed(self._by_service.get(name, ()))]

    def forget(self, name: str) -> None:
        self._by_service.pop(name, None)


def error_message(body: bytes | None) -> str:
    """What a model server's error answer says: ``{"error": ...}`` (ours and KServe's), else the text."""
    text = (body or b"").decode(errors="replace").strip()
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested to the decoder's limit (a hostile predictor)
        return text
    if isinstance(answer, dict):
        for key in ("error", "message", "detail"):
            if isinstance(answer.get(key), str):
                return answer[key]
    return text


def model_item(model: ModelRecord) -> Item:
    return Item(label=f"model {model.name!r}", owner=model.owner, project=model.project)


def version_item(model: ModelRecord, version: VersionRecord) -> Item:
    """A version is its registrant's; the model's owner may curate it too."""
    return Item(label=f"version {version.version} of model {model.name!r}", owner=version.created_by,
                project=model.project, also=((model.owner, "the model's owner"),))


def service_item(record: DeploymentRecord) -> Item:
    return Item(label=f"service {record.name!r}", owner=record.owner, project=record.project)


class ModelManager:
    def __init__(self, store: ModelStore, share: LocalShare, catalog: CatalogStore, jobs: JobManager,
                 serving: ServingBackend | None = None, *, metrics: ServiceMetrics | None = None,
                 recent_errors: RecentErrors | None = None, events: EventStore | None = None):
        self.store, self.share, self.catalog, self.jobs, self.serving = store, share, catalog, jobs, serving
        self.metrics = metrics or ServiceMetrics()
        self.recent_errors = recent_errors or RecentErrors()
        self.events = events or EventStore(store.engine)

    # --- who may see what ----------------------------------------------------------------------

    def model(self, who: Identity, model_id: int) -> ModelRecord:
        try:
            # Beyond 64 bits no row can have it (and the database driver would overflow).
            model = self.store.model(model_id) if 0 <= model_id <= MAX_ID else None
        except NotFound:
            model = None
        if model is None or not may_see(who, model_item(model)):
            raise NotFound(f"There is no model {model_id} that you can see.")
        return model

    def models(self, who: Identity, project: str | None = None) -> list[ModelRecord]:
        return self.store.models(None if who.admin else scopes_of(who.name, who.groups), project=project)

    def version(self, who: Identity, model_id: int, version: int) -> tuple[ModelRecord, VersionRecord]:
        model = self.model(who, model_id)
        if not 0 <= version <= MAX_ID:
            raise NotFound(f"Model {model_id} has no version {version}.")
        return model, self.store.version(model_id, version)

    # --- as the API shows them ---------------------------------------------------------------------

    def model_json(self, who: Identity, model: ModelRecord, *, detail: bool = False) -> dict:
        """A model; ``may_change``: the caller may set its aliases. The detail adds its versions and events."""
        out = {**model.to_json(), "may_change": may_change(who, model_item(model))}
        if detail:
            out["versions"] = [self.version_json(who, model, v) for v in self.store.versions(model.id)]
            out["events"] = self.events.of("model", str(model.id), since=model.created)
        return out

    def version_json(self, who: Identity, model: ModelRecord, version: VersionRecord) -> dict:
        return {**version.to_json(), "may_change": may_change(who, version_item(model, version))}

    # --- registering ---------------------------------------------------------------------------

    def _lineage(self, who: Identity, job_id: str) -> tuple[str, dict, dict]:
        """The job folder (relative to the owner's home), lineage and last metrics of the caller's own job."""
        record = self.jobs.get(who, job_id)
        if record.owner != who.name:
            raise Forbidden(f"Job {job_id!r} is {record.owner}'s: register models from your own jobs.")
        if record.state in ACTIVE_STATES:
            # Its outputs are still being written: a copy now could be half a model, and its metrics not final.
            raise Conflict(f"Job {job_id!r} is still {record.state}; register its model once it has finished.")
        folder = f"{JOBS_FOLDER}/{job_id}"
        snapshot = record.spec.get("snapshot_dir") or record.job_dir
        lineage = {
            "job_id": job_id,
            "notebook": record.spec.get("notebook", ""),
            "snapshot": f"{snapshot.rstrip('/')}/{NOTEBOOK_FILE}",
            "image": record.spec.get("image_ref", ""),
            "parameters": record.spec.get("parameters", {}),
            "framework": record.framework,
            "state": record.state,
        }
        metrics: dict = {}
        home = self.share.user_dir(who.name)
        try:
            # From the home down with no link followed (the folder is the user's to change), finite values only.
            points = read_metrics(home / folder / METRICS_FILE, home)
        except Unsafe as e:
            log.warning("Registering from job %s without its metrics: %s", job_id, e.message)
            points = []
        for point in points:
            metrics.update(point.get("values", {}))
        return folder, lineage, metrics

    async def register(self, who: Identity, body: dict) -> tuple[ModelRecord, VersionRecord]:
        body = _fields(body, REGISTER_FIELDS)
        name = _typed(body, "name", str, "")
        if not MODEL_NAME_RE.match(name):
            raise InvalidInput(f"Model name {name!r} is not valid: lowercase letters, digits and '-', starting with a letter.")
        project = _typed(body, "project", str) or None
        if project is not None and project not in who.groups:
            raise InvalidInput(f"You are not in project {project!r}; register it under one of yours, or as your own.")
        path = _typed(body, "path", str, "")
        lineage, metrics = {}, {}
        if body.get("job_id") is not None:
            folder, lineage, metrics = self._lineage(who, _typed(body, "job_id", str))
            path = f"{folder}/{path.strip('/')}" if path.strip("/") else folder
        if not path:
            raise InvalidInput("Name the model's files: a path in your volumes, or a job_id (and a path in its folder).")
        metrics = {**metrics, **_typed(body, "metrics", dict, {})}
        signature = registry.check_signature(body.get("signature"))
        tags = _typed(body, "tags", dict, {})
        description = _typed(body, "description", str, "")
        source = registry.resolve_source(self.share, who.name, who.groups, path)
        model_format = _typed(body, "format", str) or None
        scope = scope_of(project, who.name)
        folder = registry.scope_folder(project, who.name)
        lineage = {**lineage, "source": path}
        # Format and signature (when not given) are learnt from the copy, never from the user's own files.
        staged = await asyncio.to_thread(registry.stage, self.share, folder, name, source, model_format, signature)
        paths: dict[int, str] = {}
        try:
            model = self.store.ensure_model(scope, name, project, who.name, description)
            version = self.store.add_version(
                model.id,
                # A folder left by another (or a restored) store is skipped, not overwritten: see free_version_path.
                path_for=lambda v: paths.setdefault(v, registry.free_version_path(self.share, folder, name, v)),
                place=lambda v: registry.place(self.share, staged.folder, paths[v]),
                checksum=staged.checksum, format=staged.format, signature=staged.signature, metrics=metrics,
                tags=tags, lineage=lineage, created_by=who.name,
            )
        except BaseException:
            registry.remove(self.share, str(staged.folder.relative_to(self.share.root)))
            raise
        log.info("%s registered %s version %d (%s)", who.name, name, version.version, staged.checksum)
        source = f" from job {lineage['job_id']}" if lineage.get("job_id") else ""
        self.events.add("model", str(model.id), "registered", who.name, f"version {version.version}{source}")
        return self.store.model(model.id), version

    # --- changing versions and aliases -----------------------------------------------------------

    def set_alias(self, who: Identity, model_id: int, alias: str, version: int) -> ModelRecord:
        model = self.model(who, model_id)
        require_change(who, model_item(model), f"point alias {alias!r} of")
        if not ALIAS_RE.match(alias):
            raise InvalidInput(f"Alias {alias!r} is not valid: lowercase letters, digits and '-'.")
        if self.version(who, model_id, version)[1].archived:
            raise InvalidInput(f"Version {version} is archived; unarchive it before pointing an alias at it.")
        self.store.set_alias(model_id, alias, version)
        self.events.add("model", str(model_id), "alias_set", who.name, f"{alias} -> version {version}")
        return self.store.model(model_id)

    def delete_alias(self, who: Identity, model_id: int, alias: str) -> ModelRecord:
        model = self.model(who, model_id)
        require_change(who, model_item(model), f"delete alias {alias!r} of")
        self.store.delete_alias(model_id, alias)
        self.events.add("model", str(model_id), "alias_deleted", who.name, alias)
        return self.store.model(model_id)

    def update_version(self, who: Identity, model_id: int, version: int, body: dict) -> VersionRecord:
        model, record = self.version(who, model_id, version)
        require_change(who, version_item(model, record), "change")
        body = _fields(body, {"archived", "tags"})
        archived = body.get("archived")
        if archived is not None and not isinstance(archived, bool):
            raise InvalidInput("Field 'archived' must be true or false.")
        tags = _typed(body, "tags", dict)
        record = self.store.update_version(model_id, version, archived=archived, tags=tags)
        if archived is not None:
            self.events.add("model", str(model_id), "archived" if archived else "unarchived", who.name,
                            f"version {version}")
        if tags is not None:
            self.events.add("model", str(model_id), "updated", who.name, f"tags of version {version}")
        return record

    def delete_version(self, who: Identity, model_id: int, version: int) -> None:
        model, record = self.version(who, model_id, version)
        require_change(who, version_item(model, record), "delete")
        record = self.store.delete_version(model_id, version)  # Conflict while a service uses it
        registry.remove(self.share, record.path)
        self.events.add("model", str(model_id), "version_deleted", who.name, f"version {version}")

    # --- services ------------------------------------------------------------------------------

    def deployment(self, who: Identity, name: str) -> DeploymentRecord:
        try:
            record = self.store.deployment(name)
        except NotFound:
            record = None
        if record is None or not may_see(who, service_item(record)):
            raise NotFound(f"There is no service {name!r} that you can see.")
        return record

    def owned_deployment(self, who: Identity, name: str, action: str) -> DeploymentRecord:
        """The service, if the caller may change it (403 naming who may; 404 if they may not see it)."""
        record = self.deployment(who, name)
        require_change(who, service_item(record), action)
        return record

    def deployments(self, who: Identity) -> list[DeploymentRecord]:
        return self.store.deployments(None if who.admin else who.name, who.groups)

    def _resolve_version(self, model: ModelRecord, body: dict) -> VersionRecord:
        alias = _typed(body, "alias", str)
        version = _typed(body, "version", int)
        if alias:
            if alias not in model.aliases:
                raise InvalidInput(f"Model {model.name!r} has no alias {alias!r}; it has {', '.join(model.aliases) or 'none'}.")
            version = model.aliases[alias]
        if version is None:
            version = model.latest
        if version is None:
            raise InvalidInput(f"Model {model.name!r} has no version yet.")
        if not 0 <= version <= MAX_ID:
            raise InvalidInput(f"Model {model.name!r} has no version {version}.")
        record = self.store.version(model.id, version)
        if record.archived:
            raise InvalidInput(f"Version {version} of {model.name!r} is archived; pick another version.")
        return record

    def _spec(self, who: Identity, name: str, model: ModelRecord, version: VersionRecord, options: dict,
              owner: str | None = None, groups: tuple[str, ...] | None = None) -> DeploymentSpec:
        """The checked spec; the size and image must be ones the caller (or ``groups``, the owner's) may use."""
        groups = tuple(who.groups if groups is None else groups)
        view = user_view(self.catalog.catalog(), groups)
        choice = {PROFILE: options.get("profile") or "", IMAGE: options.get("image") or ""}
        if options.get("gpus") is not None:
            choice[GPUS] = str(options["gpus"])
        return DeploymentSpec(
            name=name, owner=owner or who.name, owner_groups=groups, project=model.project, model=model.name,
            version=version.version, model_path=self.serving.model_path(str(self.share.root), version.path), model_subpath=version.path,
            model_format=version.format, selection=select(view, choice),
            replicas=options.get("replicas", 1), max_replicas=options.get("max_replicas", 0),
            max_batch_size=options.get("max_batch_size", 16), max_latency_ms=float(options.get("max_latency_ms", 5.0)),
        )

    @staticmethod
    def _options(body: dict) -> dict:
        options = {}
        for key, kind in (("replicas", int), ("max_replicas", int), ("profile", str), ("gpus", int), ("image", str),
                          ("max_batch_size", int)):
            if body.get(key) is not None:
                options[key] = _typed(body, key, kind)
        if body.get("max_latency_ms") is not None:
            value = body["max_latency_ms"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput("Field 'max_latency_ms' must be a number.")
            options["max_latency_ms"] = float(value)
        return options

    async def deploy(self, who: Identity, body: dict) -> DeploymentRecord:
        """A service of the caller's own, of any model version they may see (a project model's too)."""
        if who.kind != "user":
            raise Forbidden("Services are deployed by users (with their own hub token), not by services.")
        body = _fields(body, DEPLOY_FIELDS)
        name = _typed(body, "name", str, "")
        model = self.model(who, _typed(body, "model_id", int, -1))
        version = self._resolve_version(model, body)
        options = self._options(body)
        spec = self._spec(who, name, model, version, options)
        now = time.time()
        record = DeploymentRecord(
            name=spec.name, owner=who.name, project=model.project, model_id=model.id, version=version.version,
            previous_version=None, backend=self.serving.name, state="Pending", reason="",
            spec={"options": options, "model": model.name, "owner_groups": list(who.groups)}, created=now, updated=now,
        )
        self.store.add_deployment(record)
        self.recent_errors.forget(spec.name)  # a new service of an old name starts clean
        try:
            with self.metrics.backend_call(self.serving.name, "deploy"):
                details = await self.serving.deploy(spec)
        except BaseException:
            self.store.delete_deployment(spec.name)
            raise
        self.events.add("service", spec.name, "created", who.name, f"model {model.name} version {version.version}")
        return self.store.update_deployment(spec.name, spec={**record.spec, "backend": details})

    async def update(self, who: Identity, name: str, body: dict) -> DeploymentRecord:
        record = self.owned_deployment(who, name, "update")
        body = _fields(body, DEPLOY_FIELDS - {"name", "model_id"})
        model = self.store.model(record.model_id)
        if "version" in body or "alias" in body:
            version = self._resolve_version(model, body)
        else:
            version = self.store.version(model.id, record.version)
        options = {**record.spec.get("options", {}), **self._options(body)}
        changes = [f"version {record.version} -> {version.version}"] if version.version != record.version else []
        changes += [f"{k} {v}" for k, v in sorted(options.items()) if record.spec.get("options", {}).get(k) != v]
        updated = await self._switch(who, record, model, version, options)
        self.events.add("service", name, "updated", who.name, ", ".join(changes) or "no change")
        return updated

    async def rollback(self, who: Identity, name: str) -> DeploymentRecord:
        record = self.owned_deployment(who, name, "roll back")
        if record.previous_version is None:
            raise InvalidInput(f"Service {name!r} has served only version {record.version}; there is nothing to roll back to.")
        model = self.store.model(record.model_id)
        version = self.store.version(model.id, record.previous_version)
        updated = await self._switch(who, record, model, version, record.spec.get("options", {}))
        self.events.add("service", name, "rolled_back", who.name, f"version {record.version} -> {version.version}")
        return updated

    async def _switch(self, who, record, model, version, options) -> DeploymentRecord:
        # The size and image stay checked against the owner's rights, also when an admin changes the service.
        groups = None if who.name == record.owner else record.spec.get("owner_groups", [record.project] if record.project else [])
        spec = self._spec(who, record.name, model, version, options, owner=record.owner, groups=groups)
        with self.metrics.backend_call(self.serving.name, "update"):
            details = await self.serving.update(spec)
        previous = record.version if version.version != record.version else record.previous_version
        return self.store.update_deployment(
            record.name, version=version.version, previous_version=previous,
            spec={**record.spec, "options": options, "backend": details},
        )

    async def delete(self, who: Identity, name: str) -> None:
        record = self.owned_deployment(who, name, "delete")
        with self.metrics.backend_call(self.serving.name, "delete"):
            await self.serving.delete(record.name)
        self.store.delete_deployment(record.name)
        self.recent_errors.forget(record.name)
        self.events.add("service", name, "deleted", who.name)

    # --- requests to a service's model server ----------------------------------------------------

    @staticmethod
    def served_name(record: DeploymentRecord) -> str:
        """The name the model answers under in ``/v1/models/<name>`` and ``/v2/models/<name>``: the service's.

        The same everywhere: the local runtime and the Kubernetes pods are
        started with ``--name <service>``, and KServe's built-in runtimes
        serve a model under its InferenceService's name (the service's).
        """
        return record.name

    def predict_path(self, record: DeploymentRecord, body: dict) -> str:
        """The model server's path for one prediction: KServe v1 with ``instances``, else Open Inference v2."""
        name = self.served_name(record)
        return f"v1/models/{name}:predict" if "instances" in body else f"v2/models/{name}/infer"

    def note_answer(self, name: str, status: int, body: bytes | None) -> None:
        """Keep a model server's failed answer (status 400 or more) in the service's recent errors."""
        if status >= 400:
            self.recent_errors.record(name, status, error_message(body) or f"HTTP {status}")

    def note_failure(self, name: str, status: int, message: str) -> None:
        """Keep a request that reached no model server (not running, not answering) in the recent errors."""
        self.recent_errors.record(name, status, message)

    async def status_json(self, record: DeploymentRecord, prefix: str, who: Identity | None = None,
                          *, detail: bool = False) -> dict:
        """A service as the API shows it: ``may_change`` for ``who``; the detail adds its events."""
        with self.metrics.backend_call(self.serving.name, "status"):
            status = await self.serving.status(record.name)
        model = self.store.model(record.model_id)
        out = record.to_json()
        # The owner's groups are kept for an admin's later changes, not shown to teammates.
        out["spec"] = {k: v for k, v in record.spec.items() if k != "owner_groups"}
        served = self.served_name(record)
        out.update(model=model.name, state=status.state, reason=status.reason, ready_replicas=status.ready_replicas,
                   serving_version=status.version, endpoint=f"{prefix}serve/{record.name}/", served_name=served,
                   predict_url=f"{prefix}serve/{record.name}/v2/models/{served}/infer",
                   recent_errors=self.recent_errors.of(record.name))
        if who is not None:
            out["may_change"] = may_change(who, service_item(record))
        if detail:
            out["events"] = self.events.of("service", record.name, since=record.created)
        return out


    async def restart(self, who: Identity, name: str) -> DeploymentRecord:
        """Start the service's model server anew, same version (owner or admin): after it failed, or to reload it.

        Backends that cannot (see :meth:`ServingBackend.restart`) answer 409 with what to do instead.
        """
        record = self.owned_deployment(who, name, "restart")
        with self.metrics.backend_call(self.serving.name, "restart"):
            details = await self.serving.restart(record.name)
        self.recent_errors.forget(record.name)  # what failed before the restart is history
        self.events.add("service", name, "restarted", who.name, f"version {record.version}")
        return self.store.update_deployment(record.name, spec={**record.spec, "backend": details})
