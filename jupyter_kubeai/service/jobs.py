"""``JobManager``: the service's one way to submit, observe and stop jobs.

It joins the records (:class:`~jupyter_kubeai.store.jobs.JobStore`), the
backend that runs the jobs and the catalog, and applies the one access rule
(:mod:`.access`) to jobs:

- a job is seen by its owner, the members of its project and hub admins;
  anyone else gets 404, as if it did not exist;
- only its owner (or an admin) cancels, deletes or resubmits it, and each
  of those is an event with who did it (:class:`~jupyter_kubeai.store.events.EventStore`);
- an admin's resubmission of someone's job is that owner's new job: the
  same project, snapshot and choices, checked against the owner's groups,
  catalog rights and quotas as if they had resubmitted it (the event names
  the admin);
- a submission is checked against the catalog, the owner's groups and the
  project's GPU quota, then reserved (a Pending record) before the backend
  starts it; if the backend refuses, the reservation is removed.
  Checking the quota and reserving happen with no ``await`` between them,
  so two submissions in this one-process service cannot both pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

from ..backends.base import JobBackend
from ..catalog.access import user_view
from ..errors import Forbidden, InvalidInput, NotFound
from ..jobs.folder import inside
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.spec import JobSpec
from ..jobs.status import JobStatus
from ..jobs.submission import Submission, build_spec, job_folder, new_job_id
from ..local.share import LocalShare
from ..store.catalog import CatalogStore
from ..store.events import EventStore
from ..store.jobs import JobRecord, JobStore
from .access import Item, may_change, may_see, require_change
from .identity import Identity
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)

#: Fields of the stored submission shown at the top level of a job's JSON.
SHOWN_FIELDS = ("name", "notebook", "workers", "parameter_servers", "procs_per_worker", "profile", "image",
                "custom_image", "gpus", "parameters", "env")


def job_item(record: JobRecord) -> Item:
    """The job as the access rule sees it."""
    return Item(label=f"job {record.job_id!r}", owner=record.owner, project=record.project)


def job_json(record: JobRecord, who: Identity | None = None, events: list[dict] | None = None) -> dict:
    """A job as the REST API shows it: ``may_change`` for ``who``, and its ``events`` in the detail."""
    out = record.to_json()
    for name in SHOWN_FIELDS:
        out[name] = record.spec.get(name)
    out["total_gpus"] = record.gpus
    out["folder"] = f"{JOBS_FOLDER}/{record.job_id}"
    if who is not None:
        out["may_change"] = may_change(who, job_item(record))
    if events is not None:
        out["events"] = events
    return out


#: Looks up a hub user by name (their current groups): for an admin's resubmission on their behalf.
OwnerLookup = Callable[[str], Awaitable[Identity]]


class JobManager:
    def __init__(self, store: JobStore, backend: JobBackend, catalog: CatalogStore, *,
                 project_gpu_quota: dict[str, int] | None = None, personal_gpu_quota: int = -1,
                 metrics: ServiceMetrics | None = None, share: LocalShare | None = None,
                 events: EventStore | None = None):
        self.store = store
        self.events = events or EventStore(store.engine)
        self.backend = backend
        self.catalog = catalog
        self.share = share
        self.project_gpu_quota = dict(project_gpu_quota or {})
        self.personal_gpu_quota = personal_gpu_quota
        self.metrics = metrics or ServiceMetrics()

    # --- who may see what -----------------------------------------------------------------

    def visible(self, who: Identity, record: JobRecord) -> bool:
        return may_see(who, job_item(record))

    def get(self, who: Identity, job_id: str) -> JobRecord:
        """The record, or 404 for a job the caller may not see (as for one that does not exist)."""
        try:
            record = self.store.get(job_id)
        except NotFound:
            record = None
        if record is None or not self.visible(who, record):
            raise NotFound(f"There is no job {job_id!r} that you can see.")
        return record

    def folder(self, who: Identity, job_id: str) -> Path:
        """The job's folder as this service sees it: in the owner's home on the share.

        For the panel of a project member, whose lab cannot read the owner's home.
        404 where the homes are not on the share (per-user PVCs) or the folder is gone.
        """
        record = self.get(who, job_id)
        home = self.share.user_dir(record.owner) if self.share is not None else None
        folder = job_folder(home, record.job_id) if home is not None else None
        if folder is None or not folder.is_dir() or not inside(folder, home):
            raise NotFound(f"The folder of job {job_id!r} is not on the share this service reads "
                           f"(it is in {record.owner}'s home, {JOBS_FOLDER}/{job_id}).")
        return folder

    def owned(self, who: Identity, job_id: str, action: str) -> JobRecord:
        """The record, if the caller may change it (403 naming who may; 404 if they may not even see it)."""
        record = self.get(who, job_id)
        require_change(who, job_item(record), action)
        return record

    def detail(self, who: Identity, record: JobRecord) -> dict:
        """The job's JSON with its events (who did what), for ``GET api/jobs/{id}``."""
        return job_json(record, who, self.events.of("job", record.job_id, since=record.created))

    # --- submitting ------------------------------------------------------------------------

    def quota_for(self, project: str | None) -> int:
        """Max concurrent GPUs: the project's (or ``*``), or the personal quota; -1 = no limit."""
        if project is None:
            return self.personal_gpu_quota
        return int(self.project_gpu_quota.get(project, self.project_gpu_quota.get("*", -1)))

    def check_quota(self, spec: JobSpec) -> None:
        quota = self.quota_for(spec.project)
        if quota < 0 or spec.total_gpus == 0:
            return
        owner = spec.owner if spec.project is None else None
        held = self.store.project_gpus_in_use(spec.project, owner)
        if held + spec.total_gpus > quota:
            who = f"Project {spec.project!r}" if spec.project else "Your personal jobs"
            raise Forbidden(
                f"{who} may use {quota} GPU(s) at once: running and pending jobs hold {held}, and this job "
                f"needs {spec.total_gpus} ({spec.workers} worker(s) x {spec.selection.gpus}). Wait for a job "
                "to finish, use fewer workers or GPUs, or ask a hub admin for a larger quota.",
                reason="quota",
            )

    async def submit(self, who: Identity, sub: Submission, *, snapshot_dir: str = "",
                     actor: Identity | None = None, detail: str = "") -> JobRecord:
        """Check and start ``who``'s job; ``actor``: who asked, when not ``who`` (an admin resubmitting)."""
        with self.metrics.submission(sub.framework):  # accepted, refused or failed
            record = await self._submit(who, sub, snapshot_dir)
        self.events.add("job", record.job_id, "created", (actor or who).name, detail)
        return record

    async def _submit(self, who: Identity, sub: Submission, snapshot_dir: str) -> JobRecord:
        if who.kind != "user":
            raise Forbidden("Jobs are submitted by users (with their own hub token), not by services.")
        view = user_view(self.catalog.catalog(), who.groups)
        job_dir = self.backend.job_dir(who.name, sub.job_id)
        spec = build_spec(sub, who.name, who.groups, view, job_dir, snapshot_dir)
        self.check_quota(spec)
        selection = spec.selection
        stored = {
            **sub.to_json(),
            "profile": selection.profile.name,
            "image": selection.image_name,
            "image_ref": selection.image_ref,
            "gpus": selection.gpus,
            "snapshot_dir": snapshot_dir or job_dir,
        }
        record = JobRecord(
            job_id=spec.job_id, owner=who.name, project=spec.project, framework=spec.framework,
            backend=self.backend.name, state="Pending", reason=selection.notice, job_dir=job_dir,
            spec=stored, gpus=spec.total_gpus, created=time.time(),
        )
        self.store.add(record)  # the reservation: Conflict if the id is taken
        try:
            with self.metrics.backend_call(self.backend.name, "submit"):
                details = await self.backend.submit(spec)
        except BaseException:
            self.store.discard(spec.job_id)
            raise
        log.info("Job %s submitted by %s (%s, %d worker(s))", spec.job_id, who.name, spec.framework, spec.workers)
        return self.store.attach(spec.job_id, details)

    async def resubmit(self, who: Identity, job_id: str, owner_lookup: OwnerLookup | None = None) -> JobRecord:
        """The same notebook snapshot and choices again, as a new job of the same owner (checked anew).

        An admin resubmits on the owner's behalf: the new job is the owner's,
        under the same project, checked against the owner's groups as the hub
        knows them now (``owner_lookup``; without one, the job's project is
        taken as theirs), so it runs with the owner's mounts and rights, never
        the admin's.
        """
        old = self.owned(who, job_id, "resubmit")
        fields = {k: v for k, v in old.spec.items() if k in Submission.__dataclass_fields__}
        sub = Submission(**{**fields, "job_id": new_job_id(old.spec.get("name") or old.job_id),
                            "project": old.project})
        owner = who
        if old.owner != who.name:
            if owner_lookup is not None:
                owner = await owner_lookup(old.owner)
            else:
                owner = Identity(name=old.owner, groups=(old.project,) if old.project else ())
        behalf = f" on {old.owner}'s behalf" if owner.name != who.name else ""
        record = await self.submit(owner, sub, snapshot_dir=old.spec.get("snapshot_dir") or old.job_dir, actor=who,
                                   detail=f"resubmitted from job {job_id}{behalf}")
        self.events.add("job", job_id, "resubmitted", who.name, f"as job {record.job_id}{behalf}")
        return record

    # --- observing -------------------------------------------------------------------------

    async def refresh(self, record: JobRecord) -> JobRecord:
        """Ask the backend about an active job and keep what it says."""
        if not record.active or record.backend != self.backend.name:
            return record
        try:
            status: JobStatus = await self.backend.status(record)
        except Exception:
            self.metrics.backend_error(self.backend.name, "status")
            log.exception("Could not get the status of job %s", record.job_id)
            return record
        if status.state == record.state and status.reason == record.reason:
            if status.started and not record.started:
                return self.store.set_state(record.job_id, status.state, status.reason, started=status.started)
            return record
        return self.store.set_state(record.job_id, status.state, status.reason,
                                    started=status.started, finished=status.finished)

    async def reconcile(self) -> list[JobRecord]:
        """Refresh every active record: re-attach at start, and keep lists current."""
        changed = []
        for record in self.store.active():
            new = await self.refresh(record)
            if new != record:
                changed.append(new)
                log.info("Job %s: %s -> %s %s", record.job_id, record.state, new.state, new.reason[:200])
        return changed

    async def collect_garbage(self) -> list[str]:
        """Let the backend clean up long-finished jobs, never one whose record is still active.

        Run right after :meth:`reconcile`, so every end the backend has seen is stored
        before what witnessed it can be deleted.
        """
        return await self.backend.collect_garbage({record.job_id for record in self.store.active()})

    async def reconcile_forever(self, interval: float) -> None:
        """Reconcile as soon as the backend sees a change (at most ``interval`` s apart), then sweep."""
        while True:
            await self.backend.wait_for_change(interval)
            try:
                await self.reconcile()
                await self.collect_garbage()
            except Exception:
                log.exception("Reconciling jobs failed; trying again in %.0f s", interval)
                await asyncio.sleep(interval)  # not at once, should the backend keep reporting changes

    # --- stopping --------------------------------------------------------------------------

    async def cancel(self, who: Identity, job_id: str) -> JobRecord:
        record = self.owned(who, job_id, "cancel")
        if not record.active:
            raise InvalidInput(f"Job {job_id!r} has already ended ({record.state}); nothing to cancel.")
        with self.metrics.backend_call(self.backend.name, "cancel"):
            await self.backend.cancel(record)
        self.events.add("job", job_id, "cancelled", who.name)
        return self.store.set_state(job_id, "Cancelled", f"Cancelled by {who.name}.")

    async def delete(self, who: Identity, job_id: str) -> None:
        record = await self.refresh(self.owned(who, job_id, "delete"))
        self.store.delete(job_id)  # Conflict while active
        self.events.add("job", job_id, "deleted", who.name)
        try:
            await self.backend.cleanup(record)
        except Exception:
            self.metrics.backend_error(self.backend.name, "cleanup")
            log.exception("Cleaning up after job %s failed; its record is deleted", job_id)

