"""``KubernetesServing``: inference services as KServe InferenceServices or Deployments, watched from a cache.

- **Shape.** With KServe (its ``InferenceService`` CRD is served, found by API
  discovery at start and again before a deployment falls back; ``use_kserve``
  forces either way): one ``InferenceService`` in raw mode whose model is
  ``pvc://<share claim>/<model_subpath>``. Without: a ``Deployment``, a
  ``Service`` and, when autoscaled, a ``HorizontalPodAutoscaler``, the model
  mounted read-only from the share. Builders and the choices behind them
  (NFS shares, built-in runtimes) are in :mod:`jupyter_kubeai.kube.serving`.
- **Switching versions.** An update or a rollback is a merge patch of the
  InferenceService's predictor or the Deployment's pod template: the model
  path and version labels (and replicas, resources) change, the image the
  deployment runs stays. The rollout starts new pods before it stops old ones
  (``maxUnavailable: 0``); a pod takes traffic once ``/v2/health/ready``
  answers, and a stopping pod pauses (``preStop``) while the endpoints forget
  it, then drains on SIGTERM: no request fails during the switch.
- **Observing.** One list+watch each for the InferenceServices, Deployments,
  pods of services and Events of the namespace (:class:`~jupyter_kubeai.kube.watch.Reflector`);
  :meth:`status` answers from memory with no API request.
- **Faults.** Requests are retried with backoff on 5xx, timeouts and dropped
  connections (:class:`~jupyter_kubeai.kube.client.KubeClient`); each object
  is created by the service's name, so a create whose answer was lost is
  found, not doubled; a deployment that still fails removes what it made.
"""

from __future__ import annotations

import asyncio
import datetime
import os

from traitlets import Bool, CaselessStrEnum, Int, List, Unicode, Union, default, validate

from ..errors import Conflict, InvalidInput, NotFound, Unavailable
from ..kube.client import EVENT, POD, ApiError, KubeClient, path_for
from ..kube.serving import (
    DEPLOYMENT,
    HPA,
    INFERENCESERVICE,
    KSERVE_BUILTIN,
    LABEL_SERVICE,
    LABEL_VERSION,
    NETWORKPOLICY,
    SERVICE,
    ServingPlacement,
    autoscaled,
    deployment_status,
    inference_service_status,
    live_image,
    make_autoscaler,
    make_inference_service,
    make_serving_deployment,
    make_serving_objects,
    make_serving_service,
    service_url,
    update_patch,
)
from ..kube.settings import ApiSettings, KubeSettings
from ..kube.training import MANAGED_BY, Kind
from ..kube.watch import Reflector
from ..models.deploy import ServingBackend
from ..models.spec import DeploymentSpec, ServiceStatus

SERVICE_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_SERVICE}"
#: What ``kubectl rollout restart`` sets on a pod template: a change that makes new pods.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MERGE_PATCH = "application/merge-patch+json"


class KubernetesServing(KubeSettings, ApiSettings, ServingBackend):
    """Inference services in one namespace of the cluster the hub service runs in."""

    name = "kubernetes"

    namespace = Unicode(
        config=True,
        help="""Namespace the inference services and their pods live in. It must hold the shared
        PVC (``share_claim_name``), where the model registry is (``models/...``).
        Default: the service's own namespace when it runs in a pod, else ``default``.""",
    )

    @default("namespace")
    def _default_namespace(self):
        try:
            with open(_SA_NAMESPACE) as f:
                return f.read().strip()
        except OSError:
            return os.environ.get("POD_NAMESPACE", "default")

    use_kserve = Union(
        [Bool(), CaselessStrEnum(["auto"])],
        default_value="auto",
        config=True,
        help="""Serve through KServe ``InferenceService`` objects.

        ``"auto"`` (default): when the cluster serves the
        ``serving.kserve.io/v1beta1`` InferenceService kind (asked at start,
        and again before a deployment falls back), else a ``Deployment`` +
        ``Service`` (+ ``HorizontalPodAutoscaler``). ``True``: always KServe;
        deployments fail with a message when it is not installed. ``False``:
        never (plain Kubernetes objects only). Existing deployments of either
        shape are observed, updated and deleted whatever this says.""",
    )
    kserve_deployment_mode = CaselessStrEnum(
        ["RawDeployment", "Standard"],
        "RawDeployment",
        config=True,
        help="""The ``serving.kserve.io/deploymentMode`` annotation of InferenceServices: KServe's
        raw mode (plain Deployments and HPAs, no Knative). ``RawDeployment`` (default) is
        understood by every KServe release (0.15 and later read it as ``Standard``);
        set ``Standard``, its current name, for KServe >= 0.15 only.""",
    )
    kserve_builtin_formats = List(
        Unicode(),
        config=True,
        help=f"""Model formats served by KServe's own runtime instead of ``jupyter_kubeai.serving``
        (one of {list(KSERVE_BUILTIN)}), e.g. ``["sklearn"]``: the InferenceService then names
        the format and its ``storageUri``, and the cluster's ``kserve-sklearnserver`` runtime
        loads ``model.joblib``/``model.pkl`` from the version's folder. Only with KServe and a
        PVC share. Default: none (the project's runtime serves every format, with its
        batching, metrics and ``predictor.py`` support).""",
    )

    @validate("kserve_builtin_formats")
    def _validate_builtin(self, proposal):
        unknown = set(proposal["value"]) - set(KSERVE_BUILTIN)
        if unknown:
            raise ValueError(f"KServe has no built-in runtime for {sorted(unknown)}; it has {list(KSERVE_BUILTIN)}")
        return proposal["value"]

    runtime_image = Unicode(
        "",
        config=True,
        help="""Image of the model runtime (it must run ``python -m jupyter_kubeai.serving``).
        ``""`` (default): the image of the catalog selection the deployment was made with.
        Updates and rollbacks keep the image a deployment runs.""",
    )
    url_scheme = Unicode("http", config=True, help="""Scheme of the services' in-cluster URLs (``https`` behind a mesh that terminates TLS).""")
    cluster_domain = Unicode("cluster.local", config=True, help="""The cluster's DNS domain, for the in-cluster URLs (``<svc>.<ns>.svc.<domain>``).""")
    drain_seconds = Int(
        5,
        config=True,
        help="""Seconds a stopping runtime pod keeps answering (its ``preStop`` pause) while the
        Service's endpoints drop it; it then gets SIGTERM and drains what is in flight.""",
    )
    termination_grace_seconds = Int(
        30,
        config=True,
        help="""Seconds a stopping runtime pod has in all (the pause, then draining) before it is
        killed. Must exceed ``drain_seconds``.""",
    )
    autoscale_cpu_percent = Int(
        70,
        config=True,
        help="""Without KServe: the average CPU use (% of the size's request) the autoscaler of an
        autoscaled service (``max_replicas > replicas``) keeps. KServe uses its own default.""",
    )
    owner_namespace_template = Unicode(
        "",
        config=True,
        help="""Where users' notebooks run when KubeSpawner gives each user a namespace of their own
        (``enable_user_namespaces``): its ``user_namespace_template``, with ``{username}`` the
        owner's slug, e.g. ``"jupyterhub-{username}"``. When set, every service gets a
        NetworkPolicy (named as the service) letting its owner's namespace reach its pods on the
        runtime's port, beside the hub that deploy/networkpolicy-serving.yaml lets in. ``""``
        (default): no such policy; notebooks call services through the hub.""",
    )
    watch_timeout = Int(300, config=True, help="""Seconds a watch request lasts before it is renewed (``timeoutSeconds``).""")
    max_events = Int(5000, config=True, help="""Events kept in memory for the namespace (the oldest are dropped).""")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.client: KubeClient | None = None
        self.kserve_available = False
        self.reflectors: dict[str, Reflector] = {}
        self._started = False
        self._start_lock = asyncio.Lock()
        self._deleted: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            self.client = self.client or await self.connect_api()
            await self._reflector("pods", POD, label_selector=SERVICE_SELECTOR,
                                  index=lambda pod: (pod["metadata"].get("labels") or {}).get(LABEL_SERVICE))
            await self._reflector("events", EVENT, index=lambda e: (e.get("involvedObject") or {}).get("name"),
                                  keep=lambda e: bool((e.get("involvedObject") or {}).get("name")),
                                  max_objects=self.max_events)
            await self._reflector(DEPLOYMENT.kind, DEPLOYMENT, label_selector=SERVICE_SELECTOR)
            await self.discover()
            self._started = True

    async def stop(self) -> None:
        for reflector in self.reflectors.values():
            await reflector.stop()
        self.reflectors.clear()
        if self.client is not None:
            await self.client.close()
            self.client = None
        self._started = False

    async def _reflector(self, key: str, kind: Kind, **options) -> Reflector:
        if key not in self.reflectors:
            self.reflectors[key] = Reflector(self.client, kind, self.namespace, timeout_seconds=self.watch_timeout, **options)
            await self.reflectors[key].start()
        return self.reflectors[key]

    async def discover(self) -> bool:
        """Ask the API whether it serves InferenceServices (one request), and follow them if it does.

        Asked whatever ``use_kserve`` says: existing InferenceServices are
        observed, updated and deleted even where new deployments are not made so.
        """
        served = await self.client.group_version_resources(INFERENCESERVICE.group, INFERENCESERVICE.version)
        found = INFERENCESERVICE.plural in served
        if found != self.kserve_available:
            self.log.info("KServe InferenceServices are %savailable in the cluster.", "" if found else "not ")
        self.kserve_available = found
        if found:
            await self._reflector(INFERENCESERVICE.kind, INFERENCESERVICE, label_selector=SERVICE_SELECTOR)
        return found

    async def _use_kserve(self) -> bool:
        """Whether a new deployment is an InferenceService (asking the API again before falling back)."""
        if self.use_kserve is False:
            return False
        if not self.kserve_available:
            await self.discover()  # installed since the start?
        if self.use_kserve is True and not self.kserve_available:
            raise InvalidInput(
                "This cluster cannot serve models through KServe: the serving.kserve.io/v1beta1 InferenceService "
                "kind is not installed. Ask a cluster admin to install KServe, or to set use_kserve to auto.",
                reason="operator_missing",
            )
        return self.kserve_available

    def placement(self, image: str = "") -> ServingPlacement:
        """The cluster settings as the builders take them (``image``: the runtime image to use)."""
        return ServingPlacement(
            namespace=self.namespace,
            storage=self.make_storage_config(),
            gpu=self.gpu_scheduling,
            image=image or self.runtime_image,
            kserve_mode=next(m for m in ("RawDeployment", "Standard") if m.lower() == self.kserve_deployment_mode.lower()),
            builtin_formats=tuple(self.kserve_builtin_formats),
            drain_seconds=self.drain_seconds,
            termination_grace_seconds=self.termination_grace_seconds,
            cpu_target_percent=self.autoscale_cpu_percent,
            cluster_domain=self.cluster_domain,
            url_scheme=self.url_scheme,
            owner_namespace_template=self.owner_namespace_template,
        )

    # --- finding -----------------------------------------------------------------------------------

    def _live(self, name: str) -> dict | None:
        """The deployment's main object (InferenceService or Deployment) from the cache, or None."""
        for key in (INFERENCESERVICE.kind, DEPLOYMENT.kind):
            reflector = self.reflectors.get(key)
            if reflector is not None and (obj := reflector.get(name)) is not None:
                return obj
        return None

    def _pods(self, name: str) -> list[dict]:
        reflector = self.reflectors.get("pods")
        return reflector.indexed(name) if reflector else []

    def _events(self, name: str, pods: list[dict]) -> list[dict]:
        reflector = self.reflectors.get("events")
        if reflector is None:
            return []
        found = [e for e in reflector.indexed(name) if (e.get("involvedObject") or {}).get("kind") != "Pod"]
        for pod in pods:
            found.extend(reflector.indexed(pod["metadata"]["name"]))
        return found

    def _url(self, name: str, kserve: bool) -> str:
        where = ServingPlacement(namespace=self.namespace, url_scheme=self.url_scheme, cluster_domain=self.cluster_domain)
        return service_url(name, where, kserve=kserve)

    def _details(self, spec: DeploymentSpec | None, obj: dict, objects: list[dict]) -> dict:
        """What the service stores of a deployment (``spec`` None: as the object says)."""
        kserve = obj["kind"] == INFERENCESERVICE.kind
        name = spec.name if spec else obj["metadata"]["name"]
        version = spec.version if spec else int(((obj["metadata"].get("labels") or {}).get(LABEL_VERSION)) or 0)
        return {
            "kind": obj["kind"],
            "api_version": obj["apiVersion"],
            "namespace": self.namespace,
            "name": name,
            "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in objects],
            "url": self._url(name, kserve),
            "image": live_image(obj),
            "version": version,
        }

    # --- changing ----------------------------------------------------------------------------------

    def _check_storage(self) -> None:
        if self.share_type == "none":
            raise InvalidInput(
                "Models cannot be served on this cluster: there is no shared storage (share_type 'none') "
                "to hold the model registry. Ask a hub admin to configure the share.",
                reason="no_storage",
            )

    async def deploy(self, spec: DeploymentSpec) -> dict:
        await self.start()
        self._check_storage()
        kserve = await self._use_kserve()
        if self._live(spec.name) is not None:
            raise Conflict(f"A service named {spec.name!r} is deployed already; update it, or pick another name.")
        objects = make_serving_objects(spec, self.placement(), kserve=kserve)
        created: list[dict] = []
        try:
            for obj in objects:
                created.append(await self.client.create(_KINDS[obj["kind"]], self.namespace, obj))
        except ApiError as e:
            # All or nothing: no half-made service stays (the refused one too, when the
            # answer was lost: it may have been made).
            made = objects[:len(created) + 1] if e.uncertain else created
            for obj in reversed(made):
                try:
                    await self._delete_quietly(_KINDS[obj["kind"]], spec.name)
                except ApiError as cleanup:
                    self.log.error("Service %s failed to deploy and its %s may be left (%s); delete it with: "
                                   "kubectl delete %s %s -n %s", spec.name, obj["kind"], cleanup,
                                   _KINDS[obj["kind"]].plural, spec.name, self.namespace)
            raise _refused(e, objects[len(created)]["kind"], spec.name) from None
        self._deleted.discard(spec.name)
        main = created[0]
        reflector = self.reflectors.get(main["kind"])
        if reflector is not None:
            reflector.upsert(main)
        return self._details(spec, main, created)

    async def update(self, spec: DeploymentSpec) -> dict:
        await self.start()
        self._check_storage()
        live = self._live(spec.name)
        if live is None:
            raise NotFound(f"No service named {spec.name!r} is deployed; deploy it first.")
        where = self.placement(live_image(live))  # the image it runs stays
        name = spec.name
        try:
            if live["kind"] == INFERENCESERVICE.kind:
                desired = make_inference_service(spec, where)
                main = await self._patch(INFERENCESERVICE, name, update_patch(live, desired))
                objects = [main]
            else:
                desired = make_serving_deployment(spec, where)
                main = await self._patch(DEPLOYMENT, name, update_patch(live, desired, scale=not autoscaled(spec)))
                service = make_serving_service(spec, where)
                objects = [main, await self._patch(SERVICE, name, {"metadata": {"labels": service["metadata"]["labels"]}})]
                hpa = await self._sync_autoscaler(spec, where)
                objects += [hpa] if hpa else []
        except ApiError as e:
            raise _refused(e, live["kind"], name) from None
        self.reflectors[main["kind"]].upsert(main)
        return self._details(spec, main, objects)

    async def restart(self, name: str) -> dict:
        """A rollout restart (as ``kubectl rollout restart``): new pods, same version and settings.

        The pod template gets a ``kubectl.kubernetes.io/restartedAt`` annotation
        (KServe copies the predictor's annotations to its pods), so the
        Deployment replaces its pods the way an update does: new ones first,
        the old ones once the new answer.
        """
        await self.start()
        live = self._live(name)
        if live is None:
            raise NotFound(f"No service named {name!r} is deployed; deploy it first.")
        stamp = {RESTARTED_AT: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            if live["kind"] == INFERENCESERVICE.kind:
                main = await self._patch(INFERENCESERVICE, name, {"spec": {"predictor": {"annotations": stamp}}})
                objects = [main]
            else:
                main = await self._patch(DEPLOYMENT, name, {"spec": {"template": {"metadata": {"annotations": stamp}}}})
                objects = [main] + [obj for kind in (SERVICE, HPA) if (obj := await self._get_quietly(kind, name))]
        except ApiError as e:
            raise _refused(e, live["kind"], name) from None
        self.reflectors[main["kind"]].upsert(main)
        return self._details(None, main, objects)

    async def _get_quietly(self, kind: Kind, name: str) -> dict | None:
        try:
            return await self.client.get(kind, self.namespace, name)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def _patch(self, kind: Kind, name: str, patch: dict) -> dict:
        return await self.client.request("PATCH", path_for(kind, self.namespace, name), body=patch, content_type=MERGE_PATCH)

    async def _sync_autoscaler(self, spec: DeploymentSpec, where: ServingPlacement) -> dict | None:
        """Create, change or remove the HPA so it matches ``spec``; the HPA, or None."""
        desired = make_autoscaler(spec, where)
        if desired is None:
            await self._delete_quietly(HPA, spec.name)
            return None
        try:
            return await self.client.create(HPA, self.namespace, desired)
        except ApiError as e:
            if e.status != 409:
                raise
        return await self._patch(HPA, spec.name, {"metadata": {"labels": desired["metadata"]["labels"]}, "spec": desired["spec"]})

    async def _delete_quietly(self, kind: Kind, name: str) -> bool:
        """Delete one object; False if it was not there."""
        try:
            await self.client.delete(kind, self.namespace, name)
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise

    async def delete(self, name: str) -> bool:
        await self.start()
        kinds = [HPA, SERVICE, DEPLOYMENT] + ([INFERENCESERVICE] if self.kserve_available else []) \
            + ([NETWORKPOLICY] if self.owner_namespace_template else [])
        # Seen by the watch: it was there, even if a delete's answer got lost and its repeat found it gone.
        found = self._live(name) is not None
        try:
            for kind in kinds:
                found = await self._delete_quietly(kind, name) or found
        except ApiError as e:
            raise Unavailable(f"The cluster did not delete service {name!r} ({e.status}): {e.message}") from None
        self._deleted.add(name)
        for key in (INFERENCESERVICE.kind, DEPLOYMENT.kind):
            reflector = self.reflectors.get(key)
            if reflector is not None and (obj := reflector.get(name)) is not None:
                reflector.remove(obj)
        return found

    # --- observing (from the cache: no API requests) -----------------------------------------------

    async def status(self, name: str) -> ServiceStatus:
        await self.start()
        obj = self._live(name)
        kserve = obj is not None and obj["kind"] == INFERENCESERVICE.kind
        url = self._url(name, kserve)
        if obj is None:
            if name in self._deleted:
                return ServiceStatus("Failed", reason="Deleted.")
            if not all(r.synced.is_set() for r in self.reflectors.values()):
                return ServiceStatus("Pending", reason="waiting for the cluster's first answer")
            return ServiceStatus("Failed", reason=f"The service's objects are gone from namespace {self.namespace!r}: "
                                                  "deleted outside jupyter_kubeai (by a cluster admin or another tool). "
                                                  "Delete the service and deploy it again.")
        pods = self._pods(name)
        events = self._events(name, pods)
        if kserve:
            return inference_service_status(obj, pods, events, url)
        return deployment_status(obj, pods, events, url)


_KINDS = {kind.kind: kind for kind in (INFERENCESERVICE, DEPLOYMENT, SERVICE, HPA, NETWORKPOLICY)}


def _refused(e: ApiError, kind: str, name: str) -> Exception:
    """The user-facing error for an API error on one of the service's objects."""
    if e.status == 409:
        return Conflict(f"A {kind} named {name!r} exists already in the cluster; pick another service name.")
    if e.status == 404:
        return NotFound(f"The {kind} of service {name!r} is gone from the cluster.")
    if e.status in (400, 422):
        return InvalidInput(f"The cluster refused the {kind}: {e.message}")
    return Unavailable(f"The cluster did not accept the {kind} ({e.status} {e.reason}): {e.message}")

