"""``KubernetesBackend``: training jobs as Kubeflow objects, observed through a watch cache.

- **Kinds.** Each framework runs as one kind: PyTorch DDP as ``PyTorchJob``
  (Kubeflow training operator) or ``TrainJob`` (Kubeflow Trainer, with a
  ``TrainingRuntime`` per project, see :mod:`jupyter_kubeai.kube.trainjob`),
  TensorFlow as ``TFJob``, MPI as ``MPIJob`` (kubeflow.org/v2beta1), a
  single process as a batch ``Job``. Which ones the cluster serves is
  discovered from the API at start (and again before refusing a
  submission); ``kinds`` forces one.
- **Placement.** The same mounts as the notebook (the storage settings of
  :class:`~jupyter_kubeai.kube.settings.KubeSettings`), the catalog image
  and size, GPU tolerations, the project's resource pool (node affinity),
  GPU packing (pod affinity), and gang scheduling by Volcano or Kueue with a
  queue per project.
- **Observing.** One list+watch per resource (each job kind in use, pods,
  events) in the namespace (:mod:`jupyter_kubeai.kube.watch`); status,
  replicas and events are answered from memory with no API request.
- **Cleaning.** Finished objects carry ``ttlSecondsAfterFinished`` and the
  backend also deletes finished objects older than the TTL itself (TrainJob
  and batch operators do not all honour it), once the service has stored how
  they ended (:meth:`KubernetesBackend.collect_garbage`); the service keeps the
  record, and the job folder keeps the outputs and every replica's log.
- **Logs after the pods.** Each replica tees its output into the job folder
  (``logs/<replica>.log``, and its exit status in ``logs/<replica>.exit``: see
  :func:`~jupyter_kubeai.kube.training.in_job_dir`). The service sees the
  share at ``share_root``; once a job's pods are gone, its replicas and logs
  are read from there.
- **Faults.** Requests are retried with backoff on 5xx, timeouts and dropped
  connections (:class:`~jupyter_kubeai.kube.client.KubeClient`); the job object
  is created by its job id, so a create whose answer was lost is found, not
  doubled. A submission that still fails deletes what it may have made, so
  no object outlives the record the service then drops; the project's
  TrainingRuntime is one server-side apply. A dropped watch resumes from its
  resourceVersion, and lists again after 410 Gone (:mod:`~jupyter_kubeai.kube.watch`).
- **Restarts.** The watch cache remembers deleted objects only while the
  service runs. A record still active whose object was deleted while the
  service was down ends as its replicas' exit statuses in the folder say
  (:func:`~jupyter_kubeai.kube.jobstate.ended_while_away`): Succeeded only if
  every replica left 0, else Failed with the reason and where the logs are.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import posixpath
import time
from collections import deque
from collections.abc import AsyncIterator, Collection
from pathlib import Path

from traitlets import CaselessStrEnum, Dict, Float, Int, Unicode, default, validate

from .. import safefiles
from ..errors import Conflict, InvalidInput, NotFound, Unavailable
from ..jobs.logfiles import DEFAULT_TAIL_BYTES, MAX_LOG_BYTES, LogText, read_log, whole_chars
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.spec import JobSpec
from ..jobs.status import JobEvent, JobStatus
from ..kube.client import EVENT, POD, ApiError, KubeClient, path_for
from ..kube.jobstate import (
    ended_while_away,
    failed_replica,
    job_events,
    job_status,
    replica_name,
    timestamp,
)
from ..kube.settings import ApiSettings, KubeSettings
from ..kube.training import (
    BATCHJOB,
    LABEL_JOB,
    LOG_DIR,
    MANAGED_BY,
    MPIJOB,
    PYTORCHJOB,
    TFJOB,
    GangScheduling,
    Kind,
    Placement,
    ResourcePools,
    make_batch_job,
    make_mpijob,
    make_pytorchjob,
    make_tfjob,
)
from ..kube.trainjob import TRAININGRUNTIME, TRAINJOB, make_training_runtime, make_trainjob
from ..kube.watch import Reflector
from ..local.share import LocalShare
from ..naming import slug
from ..store.jobs import JobRecord
from .base import JobBackend

#: Every kind the backend can create: name -> (kind, builder, what to install when it is missing).
KINDS = {
    "PyTorchJob": (PYTORCHJOB, make_pytorchjob, "the Kubeflow training operator (kubeflow.org/v1 PyTorchJob)"),
    "TrainJob": (TRAINJOB, make_trainjob, "Kubeflow Trainer (trainer.kubeflow.org/v1alpha1 TrainJob)"),
    "TFJob": (TFJOB, make_tfjob, "the Kubeflow training operator (kubeflow.org/v1 TFJob)"),
    "MPIJob": (MPIJOB, make_mpijob, "the MPI operator (kubeflow.org/v2beta1 MPIJob)"),
    "Job": (BATCHJOB, make_batch_job, "the batch/v1 Job API"),
}
#: framework -> the kinds it can run as, the preferred first.
FRAMEWORK_KINDS = {"pytorch": ("PyTorchJob", "TrainJob"), "tensorflow": ("TFJob",), "mpi": ("MPIJob",), "single": ("Job",)}
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KubernetesBackend(KubeSettings, ApiSettings, JobBackend):
    """Training jobs in one namespace of the cluster the hub service runs in."""

    name = "kubernetes"

    namespace = Unicode(
        config=True,
        help="""Namespace the training jobs, their pods and the TrainingRuntimes live in.
        Default: the service's own namespace when it runs in a pod, else ``default``.
        It must hold the shared PVC (``share_claim_name``).""",
    )

    @default("namespace")
    def _default_namespace(self):
        try:
            with open(_SA_NAMESPACE) as f:
                return f.read().strip()
        except OSError:
            return os.environ.get("POD_NAMESPACE", "default")

    kinds = Dict(
        config=True,
        help="""Force the kind a framework runs as, e.g. ``{"pytorch": "TrainJob"}``.

        Frameworks: ``pytorch`` (``PyTorchJob`` or ``TrainJob``), ``tensorflow``
        (``TFJob``), ``mpi`` (``MPIJob``), ``single`` (``Job``). By default the
        kind is discovered from the API at start: PyTorch prefers ``PyTorchJob``
        and falls back to ``TrainJob``. A forced kind the cluster lacks makes
        submissions of that framework fail with a message naming the operator.""",
    )

    @validate("kinds")
    def _validate_kinds(self, proposal):
        for framework, kind in proposal["value"].items():
            if kind not in FRAMEWORK_KINDS.get(framework, ()):
                allowed = {f: list(k) for f, k in FRAMEWORK_KINDS.items()}
                raise ValueError(f"kinds[{framework!r}] = {kind!r} is not one of {allowed}")
        return proposal["value"]

    gang_scheduler = CaselessStrEnum(
        ["none", "volcano", "kueue"],
        "none",
        config=True,
        help="""Gang scheduling, so all pods of a job start together or not at all.

        ``volcano``: pods use the Volcano scheduler and the operator makes a
        PodGroup with ``minMember`` = the job's pods, in the queue of
        ``queue_template``. ``kueue``: jobs carry ``kueue.x-k8s.io/queue-name``
        (a LocalQueue in ``namespace``) and are created suspended until Kueue
        admits them (shown as Pending, "waiting for Kueue admission").
        ``none`` (default): the default scheduler.""",
    )
    queue_template = Unicode(
        "{project}",
        config=True,
        help="""The Volcano queue or Kueue LocalQueue of a project's jobs; ``{project}`` is the
        project's (hub group's) slug. Personal jobs use ``personal_queue``.""",
    )
    personal_queue = Unicode("default", config=True, help="""Queue of personal jobs (submitted under no project).""")
    priority_class = Unicode("", config=True, help="""PriorityClass of the jobs' pods with Volcano (``""``: none).""")

    ttl_seconds_after_finished = Int(
        7 * 24 * 3600,
        config=True,
        help="""Seconds a finished job's object and pods stay (for events and the pods' logs) before
        they are deleted: set as ``ttlSecondsAfterFinished`` on the objects, and enforced by the
        backend every ``cleanup_interval`` seconds, never before the job's record holds how it
        ended. The record and the job folder (outputs, snapshot, each replica's
        ``logs/<replica>.log``, read through ``share_root``) stay.""",
    )
    cleanup_interval = Float(
        300,
        config=True,
        help="""Seconds between two sweeps for finished objects older than the TTL. The service sweeps
        right after a reconcile round (``KubeAIService.reconcile_interval``), so every end seen is
        stored first; ``0``: at every round; negative: never (only the operators' own TTL).""",
    )
    share_root = Unicode(
        config=True,
        help="""Where this service sees the share (its ``users/<user>`` folders), to read a job's
        ``logs/<replica>.log`` from its folder once its pods are gone, and the exit statuses of
        a job that ended while the service was down. Default: the service's own
        ``KubeAIService.share_root`` (the share's PVC mounted in the service's pod, as the model
        registry uses it). ``""``, ``share_type = "none"`` or ``user_pvc`` (homes not on the
        share): logs only while the pods exist.""",
    )

    @default("share_root")
    def _default_share_root(self):
        return getattr(self.parent, "share_root", "") or ""

    pool_label = Unicode(
        "",
        config=True,
        help="""Node label naming each node's resource pool (e.g. ``kubeai.jupyter.org/pool``).
        When set, a project's job pods require nodes whose label is the project's pool
        (``project_pools``, default: the project's slug). ``""`` (default): no pool affinity.""",
    )
    project_pools = Dict(config=True, help="""project (hub group) -> pool name, where it differs from the project's slug.""")
    personal_pool = Unicode("", config=True, help="""Pool of personal jobs (``""``: any node).""")
    pack_gpu_workers = Unicode(
        "",
        config=True,
        help="""Topology key GPU pods of one job prefer to share (a preferred pod affinity),
        e.g. ``kubernetes.io/hostname`` (same node) or a rack/zone label; ``""``: no packing.""",
    )
    user_pvc_name_template = Unicode(
        "claim-{username}",
        config=True,
        help="""With ``user_pvc``: the name of the owner's home PVC, as the spawner names it
        (``{username}``: the owner's slug). Keep it equal to the spawner's ``pvc_name_template``.""",
    )
    watch_timeout = Int(300, config=True, help="""Seconds a watch request lasts before it is renewed (``timeoutSeconds``).""")
    max_events = Int(5000, config=True, help="""Events kept in memory for the namespace (the oldest are dropped).""")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.client: KubeClient | None = None
        self.available: set[str] = set()  # kind names the cluster serves
        self.reflectors: dict[str, Reflector] = {}  # kind name, "pods", "events"
        self._started = False
        self._start_lock = asyncio.Lock()
        self._last_sweep = float("-inf")
        self._submitting: set[str] = set()  # job ids whose objects are being created
        self._cancelled: set[str] = set()
        self._failure_tails: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            self.client = self.client or await self.connect_api()
            await self.discover()
            await self._reflector("pods", POD, label_selector=MANAGED_SELECTOR,
                                  index=lambda pod: (pod["metadata"].get("labels") or {}).get(LABEL_JOB))
            await self._reflector("events", EVENT, index=lambda e: (e.get("involvedObject") or {}).get("name"),
                                  keep=lambda e: bool((e.get("involvedObject") or {}).get("name")), max_objects=self.max_events)
            for framework in FRAMEWORK_KINDS:
                kind = self.kind_for(framework)
                if kind is not None:
                    await self._reflector(kind, KINDS[kind][0], label_selector=MANAGED_SELECTOR)
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

    async def discover(self) -> set[str]:
        """Ask the API which job kinds it serves (one request per API group version)."""
        found = {"Job"}
        by_group: dict[tuple[str, str], list[str]] = {}
        for name, (kind, _, _) in KINDS.items():
            if kind.group != "batch":
                by_group.setdefault((kind.group, kind.version), []).append(name)
        for (group, version), names in by_group.items():
            served = await self.client.group_version_resources(group, version)
            found.update(name for name in names if KINDS[name][0].plural in served)
        if found != self.available:
            self.log.info("Training kinds served by the cluster: %s", ", ".join(sorted(found)))
        self.available = found
        return found

    def kind_for(self, framework: str) -> str | None:
        """The kind name ``framework`` runs as here, or None when the cluster has none of its kinds."""
        forced = self.kinds.get(framework)
        if forced:
            return forced if forced in self.available else None
        return next((k for k in FRAMEWORK_KINDS[framework] if k in self.available), None)

    # --- submitting --------------------------------------------------------------------------------

    def job_dir(self, owner: str, job_id: str) -> str:
        return f"{self.home_mount_path.rstrip('/')}/{JOBS_FOLDER}/{job_id}"

    def placement(self, owner: str, project: str | None) -> Placement:
        """The cluster settings as the builders take them, for one owner and project."""
        queue = self.queue_template.format(project=slug(project)) if project else self.personal_queue
        scheduler = "" if self.gang_scheduler == "none" else self.gang_scheduler
        return Placement(
            storage=self.make_storage_config(self.user_pvc_name_template.format(username=slug(owner))),
            gpu=self.gpu_scheduling,
            gang=GangScheduling(scheduler=scheduler, queue=queue if scheduler else "", priority_class=self.priority_class),
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            pools=ResourcePools(label=self.pool_label, pools=tuple(sorted(self.project_pools.items())),
                                personal=self.personal_pool),
            pack_topology_key=self.pack_gpu_workers,
        )

    async def submit(self, spec: JobSpec) -> dict:
        # Its record exists already (Pending): a reconcile round meanwhile must not find it "deleted".
        self._submitting.add(spec.job_id)
        try:
            return await self._submit(spec)
        finally:
            self._submitting.discard(spec.job_id)

    async def _submit(self, spec: JobSpec) -> dict:
        await self.start()
        name = self.kind_for(spec.framework)
        if name is None:
            await self.discover()  # an operator installed since the start
            name = self.kind_for(spec.framework)
        if name is None:
            wanted = self.kinds.get(spec.framework) or FRAMEWORK_KINDS[spec.framework][0]
            operators = " or ".join(KINDS[k][2] for k in ((wanted,) if spec.framework in self.kinds else FRAMEWORK_KINDS[spec.framework]))
            raise InvalidInput(
                f"This cluster cannot run {spec.framework} jobs: {operators} is not installed. "
                "Ask a cluster admin to install it, or pick another framework.",
                reason="operator_missing",
            )
        kind, build, _ = KINDS[name]
        where = self.placement(spec.owner, spec.project)
        reflector = await self._reflector(name, kind, label_selector=MANAGED_SELECTOR)
        try:
            if kind is TRAINJOB:
                # One server-side apply: the fields we set, as ours; what the API server
                # defaulted (replicas, groupName) stays, so an unchanged runtime is not rewritten.
                await self.client.apply(TRAININGRUNTIME, self.namespace, make_training_runtime(spec.project, where))
            created = await self.client.create(kind, self.namespace, build(spec, where))
        except ApiError as e:
            if e.status == 409:
                raise Conflict(f"A {name} named {spec.job_id!r} exists already in the cluster.") from None
            if e.status in (400, 422):
                raise InvalidInput(f"The cluster refused the {name}: {e.message}") from None
            if e.uncertain:
                # The create may have been made although no answer said so; the service drops
                # the record of a failed submission, so nothing of it may stay running.
                await self._forget(name, spec.job_id)
            raise Unavailable(f"The cluster did not accept the job ({e.status} {e.reason}): {e.message}") from None
        reflector.upsert(created)
        # "logs": where the replicas' logs stay once the pods are gone (the pods' path of the folder).
        return {"kind": name, "api_version": kind.api_version, "namespace": self.namespace, "name": spec.job_id,
                "logs": posixpath.join(spec.job_dir, LOG_DIR)}

    async def _forget(self, kind: str, name: str) -> None:
        """Delete what a failed submission may have made (best effort: the API may still be away)."""
        try:
            await self._delete(kind, name)
        except Unavailable as e:
            self.log.error("Job %s failed to submit and its %s may exist without a record: %s. "
                           "Delete it with: kubectl delete %s %s -n %s", name, kind, e, KINDS[kind][0].plural,
                           name, self.namespace)

    # --- observing (from the cache: no API requests) ----------------------------------------------

    def _ref(self, record: JobRecord) -> tuple[str, str]:
        ref = record.spec.get("backend") or {}
        return ref.get("kind") or (FRAMEWORK_KINDS.get(record.framework) or ("",))[0], ref.get("name") or record.job_id

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

    def _kept(self, record: JobRecord) -> JobStatus:
        return JobStatus(record.state, record.reason, started=record.started, finished=record.finished)

    async def status(self, record: JobRecord) -> JobStatus:
        await self.start()
        kind, name = self._ref(record)
        reflector = self.reflectors.get(kind)
        if reflector is None:
            if not record.active:
                return self._kept(record)
            return JobStatus("Failed", f"The cluster no longer serves {kind}: {KINDS.get(kind, (None, None, kind))[2]} "
                                       "is not installed, so the job cannot be followed.", finished=time.time())
        obj = reflector.get(name)
        if obj is None:
            if not reflector.synced.is_set() or not record.active or name in self._submitting:
                return self._kept(record)
            if name in self._cancelled:
                return JobStatus("Cancelled", "Cancelled.", started=record.started, finished=time.time())
            last = reflector.gone.get(name)
            if last is None:  # never seen since the service started: deleted while it was down
                return await self._ended_while_away(record, kind)
            ended = job_status(last, [], [])
            if not ended.active:
                return ended
            return JobStatus("Failed", f"The job's {kind} was deleted outside jupyter_kubeai (by a cluster admin or "
                                       "another tool) before it ended.", started=record.started, finished=time.time())
        pods = self._pods(name)
        status = job_status(obj, pods, self._events(name, pods))
        if status.state == "Failed":
            tail = await self._failure_tail(name, pods)
            if tail:
                status = JobStatus("Failed", f"{status.reason}\n{tail}", status.exit_code, status.started, status.finished)
        return status

    async def _ended_while_away(self, record: JobRecord, kind: str) -> JobStatus:
        """A job whose objects went while the service was down: what its folder says (see the module)."""
        exits = await asyncio.to_thread(_exit_statuses, self._logs_folder(record))
        state, reason, failed = ended_while_away(kind, record.spec.get("workers") or 1,
                                                 {r: code for r, (code, _) in exits.items()}, self._logs_pointer(record))
        if failed:
            tail = await asyncio.to_thread(_tail, self._log_file(record, failed), 20)
            reason = f"{reason}\n{tail}" if tail else reason
        finished = max((when for _, when in exits.values()), default=None) or time.time()
        return JobStatus(state, reason, exit_code=exits[failed][0] if failed else (0 if state == "Succeeded" else None),
                         started=record.started, finished=finished)

    async def _failure_tail(self, name: str, pods: list[dict]) -> str:
        """The last lines of the failed replica's log, fetched once per job (a failure is rare),
        unless its termination message already says what happened."""
        if name in self._failure_tails:
            return self._failure_tails[name]
        pod, terminated = failed_replica(pods)
        tail = ""
        if pod is not None and not terminated.get("message"):
            try:
                tail = await self.client.text(_log_path(self.namespace, pod["metadata"]["name"]),
                                              query={"container": _container(pod), "tailLines": "20"})
            except ApiError:
                tail = ""
        self._failure_tails[name] = tail.strip()
        return self._failure_tails[name]

    async def replicas(self, record: JobRecord) -> list[str]:
        """The pods' replicas; once the pods are gone, the replicas that left a log in the folder."""
        await self.start()
        pods = self._pods(self._ref(record)[1])
        if pods:
            return sorted(replica_name(pod) for pod in pods)
        return sorted(await asyncio.to_thread(_log_files, self._logs_folder(record)))

    async def events(self, record: JobRecord) -> list[JobEvent]:
        await self.start()
        name = self._ref(record)[1]
        pods = self._pods(name)
        return job_events(self._events(name, pods), {p["metadata"]["name"]: replica_name(p) for p in pods})

    # --- logs: from the pod while it exists, then from the job folder ------------------------------

    def _logs_pointer(self, record: JobRecord) -> str:
        """The replicas' log folder as the user sees it (kept in the record, see ``submit``)."""
        return (record.spec.get("backend") or {}).get("logs") or posixpath.join(record.job_dir, LOG_DIR)

    def _logs_folder(self, record: JobRecord) -> Path | None:
        """The replicas' log folder as this service sees it on the share (None where it cannot)."""
        if not self.share_root or self.share_type == "none" or self.user_pvc:
            return None
        home = posixpath.normpath(self.home_mount_path)
        folder = posixpath.normpath(self._logs_pointer(record))
        if not folder.startswith(home.rstrip("/") + "/"):
            return None
        inside = folder[len(home.rstrip("/")) + 1:]
        if ".." in inside.split("/"):
            return None
        return LocalShare(self.share_root).user_dir(record.owner) / inside

    def _log_file(self, record: JobRecord, replica: str) -> Path | None:
        source = self._log_source(record, replica)
        return source[0].joinpath(*source[1]) if source else None

    def _log_source(self, record: JobRecord, replica: str) -> tuple[Path, tuple[str, ...]] | None:
        """The owner's home on the share (trusted) and the replica's log file's names below it:
        read from there with no link followed (the folder is the job's to change). None where it cannot."""
        folder = self._logs_folder(record)
        if folder is None or not replica or "/" in replica or "\0" in replica or replica.startswith("."):
            return None
        home = LocalShare(self.share_root).user_dir(record.owner)
        return home, (*folder.relative_to(home).parts, f"{replica}.log")

    def _find_pod(self, record: JobRecord, replica: str) -> dict | None:
        return next((pod for pod in self._pods(self._ref(record)[1]) if replica_name(pod) == replica), None)

    def _no_replica(self, record: JobRecord, replica: str) -> NotFound:
        return NotFound(
            f"Job {record.job_id!r} has no replica {replica!r}: no pod (pods are deleted "
            f"{self.ttl_seconds_after_finished}s after the job ends) and no {replica}.log in "
            f"{self._logs_pointer(record)}. Its outputs stay in {record.job_dir}."
        )

    async def _file_log(self, record: JobRecord, replica: str, **read) -> LogText:
        source = self._log_source(record, replica)
        if source is None:
            raise self._no_replica(record, replica)
        try:
            return await asyncio.to_thread(read_log, source[0], [source[1]], required=True, **read)
        except safefiles.Missing:
            raise self._no_replica(record, replica) from None

    async def _pod_log(self, pod: dict, *, tail: int | None = DEFAULT_TAIL_BYTES, offset: int | None = None,
                       length: int | None = None) -> LogText:
        """A bounded part of a pod's log, streamed: never more than the part asked for is held.

        The API has no byte tail (only ``tailLines``), so a tail streams the log
        keeping its last lines (the kubelet rotates a container's log at 10 MiB by
        default, so that is what the API serves at most); a range asks for
        ``limitBytes`` up to its end and drops what comes before it.
        """
        path = _log_path(self.namespace, pod["metadata"]["name"])
        query = {"container": _container(pod)}
        seen = 0
        if offset is not None:
            length = min(MAX_LOG_BYTES if length is None else length, MAX_LOG_BYTES)
            query["limitBytes"] = str(offset + length) if offset + length > 0 else None
            kept = bytearray()
            async for line in self.client.stream(path, query=query):
                skip = max(0, offset - seen)
                seen += len(line)
                if skip < len(line) and len(kept) < length:
                    kept += line[skip:skip + length - len(kept)]
            data = whole_chars(bytes(kept), at_end=offset + len(kept) >= seen)
            # Past limitBytes the API says nothing of the size; short of it, the log ended there.
            size = seen if seen < offset + length else None
            return LogText(data.decode("utf-8", errors="replace"), min(offset, seen), min(offset, seen) + len(data), size)
        want = min(DEFAULT_TAIL_BYTES if tail is None else tail, MAX_LOG_BYTES)
        lines: deque[bytes] = deque()
        held = 0
        async for line in self.client.stream(path, query=query):
            seen += len(line)
            lines.append(line)
            held += len(line)
            while held > want and len(lines) > 1:  # whole lines only: the tail starts at a line start
                held -= len(lines.popleft())
        data = b"".join(lines)
        data = data[len(data) - want:] if len(data) > want else data
        return LogText(data.decode("utf-8", errors="replace"), seen - len(data), seen, seen)

    async def logs(self, record: JobRecord, replica: str, *, tail: int | None = DEFAULT_TAIL_BYTES,
                   offset: int | None = None, length: int | None = None) -> LogText:
        await self.start()
        read = {"tail": tail, "offset": offset, "length": length}
        pod = self._find_pod(record, replica)
        if pod is None:
            return await self._file_log(record, replica, **read)
        try:
            return await self._pod_log(pod, **read)
        except ApiError as e:
            if e.status == 400:  # the container has not started yet: nothing logged
                return LogText("", offset or 0, offset or 0, 0)
            if e.status == 404:  # the pod went meanwhile
                return await self._file_log(record, replica, **read)
            raise Unavailable(f"The cluster did not give the log ({e.status}): {e.message}") from None

    async def follow_logs(self, record: JobRecord, replica: str, offset: int | None = None,
                          poll: float = 0.5) -> AsyncIterator[str]:
        """The API's own follow (``follow=true``), once the replica's container has started, from byte
        ``offset`` (default: the current tail); for a replica whose pod is gone, its file in the job
        folder, reading only what is appended, to its end once the job has ended."""
        await self.start()
        pods = self.reflectors["pods"]
        while True:
            pod = self._find_pod(record, replica)
            if pod is None:
                async for chunk in super().follow_logs(record, replica, offset, poll):
                    yield chunk
                return
            if (pod.get("status") or {}).get("phase") != "Pending":
                break
            if not (await self.status(record)).active:
                return
            await pods.wait_for_change(poll)
        try:
            if offset is None:
                first = await self._pod_log(pod)
                if first:
                    yield str(first)
                offset = first.end
            # The API cannot start at a byte: what comes before ``offset`` is streamed past, not kept.
            query = {"container": _container(pod), "follow": "true"}
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            seen = 0
            async for line in self.client.stream(_log_path(self.namespace, pod["metadata"]["name"]), query=query):
                skip = max(0, offset - seen)
                seen += len(line)
                if skip < len(line):
                    text = decoder.decode(line[skip:])
                    if text:
                        yield text
        except ApiError as e:
            if e.status != 400:
                raise Unavailable(f"The cluster did not give the log ({e.status}): {e.message}") from None

    # --- stopping and cleaning ---------------------------------------------------------------------

    async def _delete(self, kind: str, name: str) -> bool:
        """Delete the job object and its pods; True if anything was there."""
        # Seen by the watch: it was there, even if the delete's own answer got lost and a
        # repeat (ours, or aiohttp's own on a dropped keep-alive connection) found it gone.
        reflector = self.reflectors.get(kind)
        deleted = reflector is not None and reflector.get(name) is not None
        try:
            await self.client.delete(KINDS[kind][0], self.namespace, name)
            deleted = True
        except ApiError as e:
            if e.status != 404:
                raise Unavailable(f"The cluster did not delete the {kind} ({e.status}): {e.message}") from None
        # The operators' own pod cleanup is not relied on (cleanPodPolicy None keeps pods for logs).
        try:
            gone = await self.client.delete_collection(POD, self.namespace, f"{MANAGED_SELECTOR},{LABEL_JOB}={name}")
        except ApiError as e:
            raise Unavailable(f"The cluster did not delete the pods of {name!r} ({e.status}): {e.message}") from None
        return deleted or bool(gone.get("items"))

    async def cancel(self, record: JobRecord) -> bool:
        await self.start()
        kind, name = self._ref(record)
        if kind not in KINDS:
            return False
        self._cancelled.add(name)
        try:
            return await self._delete(kind, name)
        except Unavailable:
            # Not cancelled after all (the API stayed away): the job's end is what the cluster says.
            self._cancelled.discard(name)
            raise

    async def cleanup(self, record: JobRecord) -> None:
        await self.start()
        kind, name = self._ref(record)
        if kind in KINDS:
            await self._delete(kind, name)

    async def collect_garbage(self, active: Collection[str] = (), now: float | None = None) -> list[str]:
        """Delete finished job objects (and pods) older than the TTL; returns their names.

        Never the object of a job in ``active`` (its record is still Pending/Running): until
        the record holds how the job ended, the object is the only witness. Sweeps at most
        every ``cleanup_interval`` seconds (the service calls it after every reconcile round).
        """
        if self.cleanup_interval < 0 or time.monotonic() - self._last_sweep < self.cleanup_interval:
            return []
        self._last_sweep = time.monotonic()
        now = time.time() if now is None else now
        keep = set(active)
        removed = []
        for kind in KINDS:
            reflector = self.reflectors.get(kind)
            for name, obj in list(reflector.objects.items()) if reflector else []:
                if name in keep:
                    continue
                pods = self._pods(name)
                status = job_status(obj, pods, [])
                ended = status.finished or timestamp((obj.get("metadata") or {}).get("creationTimestamp"))
                if not status.active and ended is not None and now - ended > self.ttl_seconds_after_finished:
                    await self._delete(kind, name)
                    removed.append(name)
        if removed:
            self.log.info("Deleted finished jobs past their TTL: %s", ", ".join(removed))
        return removed

    async def wait_for_change(self, timeout: float) -> None:
        """Until a job object changes (the watch saw it) or ``timeout``; pods and events are left
        to the next round (a state's end is in the job object's conditions)."""
        watched = [r for key, r in self.reflectors.items() if key in KINDS]
        if not watched:
            await asyncio.sleep(timeout)
            return
        waits = [asyncio.ensure_future(r.wait_for_change(timeout)) for r in watched]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        await asyncio.sleep(min(0.1, timeout))  # a burst of changes makes one round


def _log_path(namespace: str, pod: str) -> str:
    return path_for(POD, namespace, pod, "log")


def _container(pod: dict) -> str:
    return pod["spec"]["containers"][0]["name"]


# --- the job folder on the share (run in a thread: it may be NFS) -----------------------------------

def _tail(path: Path | None, lines: int) -> str:
    """The last lines of a replica's log file (its last 64 KiB at most; not a link, FIFO or device)."""
    if path is None:
        return ""
    try:
        text = read_log(path.parent, [(path.name,)], tail=64 * 1024)
    except (safefiles.Missing, safefiles.Unsafe):
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _log_files(folder: Path | None) -> list[str]:
    """Replicas with a ``<replica>.log`` (a regular file, not a link) in the folder."""
    try:
        return [name[:-4] for name, _ in safefiles.walk_files(folder) if "/" not in name and name.endswith(".log")] \
            if folder else []
    except (safefiles.Missing, safefiles.Unsafe):
        return []


def _exit_statuses(folder: Path | None) -> dict[str, tuple[int, float]]:
    """replica -> (the exit status its ``<replica>.exit`` holds, when it was written)."""
    found = {}
    try:
        # Regular files only, no link, a few bytes each: the folder is the job's to change (a FIFO here
        # would otherwise hold a thread of the service forever).
        exits = [(n, info) for n, info in safefiles.walk_files(folder) if "/" not in n and n.endswith(".exit")] \
            if folder else []
    except (safefiles.Missing, safefiles.Unsafe):
        return {}
    for name, info in exits:
        try:
            found[name[:-5]] = (int(safefiles.read_bytes(folder, name, limit=64).strip()), info.st_mtime)
        except (safefiles.Missing, safefiles.Unsafe, ValueError):
            continue  # half-written, replaced or unreadable: no evidence
    return found
