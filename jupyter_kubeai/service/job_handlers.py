"""Job routes: submit, list, get, events, logs (streamed), cancel, resubmit, delete.

Thin: every decision (who may, what is valid) is in
:class:`~jupyter_kubeai.service.jobs.JobManager`.
"""

from __future__ import annotations

from pathlib import Path

from tornado.iostream import StreamClosedError

from ..errors import InvalidInput, NotFound
from ..jobs.folder import list_files, metric_points, open_file
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.status import STATES
from ..jobs.submission import parse_submission
from .handlers import BaseHandler
from .jobs import JobManager, job_json

MAX_LIMIT = 500


class JobHandler(BaseHandler):
    @property
    def jobs(self) -> JobManager:
        return self.service.job_manager

    def int_argument(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInput(f"{name} must be a whole number, not {raw!r}.") from None
        if not low <= value <= high:
            raise InvalidInput(f"{name} must be from {low} to {high}, not {value}.")
        return value


class JobsHandler(JobHandler):
    """``GET api/jobs`` (the caller's and their projects'; a hub admin's: everyone's) and ``POST api/jobs`` (submit)."""

    async def get(self):
        who = self.identity
        state = self.get_argument("state", None) or None
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}, not {state!r}.")
        project = self.get_argument("project", None) or None
        if project is not None and project not in who.groups and not who.admin:
            raise NotFound(f"You are not in project {project!r}, so you cannot list its jobs.")
        owner = self.get_argument("owner", None) or None
        records = self.jobs.store.visible(
            None if who.admin else who.name, who.groups, project=project, state=state, owner=owner,
            limit=self.int_argument("limit", 100, 1, MAX_LIMIT), offset=self.int_argument("offset", 0, 0, 10**9),
        )
        self.write_json({"jobs": [job_json(r) for r in records]})

    async def post(self):
        record = await self.jobs.submit(self.identity, parse_submission(self.json_body()))
        self.write_json(job_json(record), status=201)


class JobEntryHandler(JobHandler):
    """``GET api/jobs/{job_id}`` and ``DELETE api/jobs/{job_id}`` (the record; 409 while active)."""

    async def get(self, job_id):
        record = await self.jobs.refresh(self.jobs.get(self.identity, job_id))
        self.write_json(job_json(record))

    async def delete(self, job_id):
        await self.jobs.delete(self.identity, job_id)
        self.set_status(204)
        self.finish()


class JobCancelHandler(JobHandler):
    async def post(self, job_id):
        self.write_json(job_json(await self.jobs.cancel(self.identity, job_id)))


class JobResubmitHandler(JobHandler):
    async def post(self, job_id):
        self.write_json(job_json(await self.jobs.resubmit(self.identity, job_id)), status=201)


class JobEventsHandler(JobHandler):
    async def get(self, job_id):
        record = self.jobs.get(self.identity, job_id)
        events = await self.jobs.backend.events(record)
        self.write_json({"events": [e.to_json() for e in events]})


class JobReplicasHandler(JobHandler):
    async def get(self, job_id):
        record = self.jobs.get(self.identity, job_id)
        self.write_json({"replicas": await self.jobs.backend.replicas(record)})


class JobLogHandler(JobHandler):
    """``GET api/jobs/{job_id}/logs/{replica}``: text; ``?follow=1`` streams until the job ends."""

    async def get(self, job_id, replica):
        record = self.jobs.get(self.identity, job_id)
        follow = self.get_argument("follow", "0") not in ("0", "false", "")
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        if not follow:
            self.finish(await self.jobs.backend.logs(record, replica))
            return
        if replica not in await self.jobs.backend.replicas(record):
            raise NotFound(f"Job {job_id!r} has no replica {replica!r}.")
        self.set_header("X-Accel-Buffering", "no")  # no proxy buffering of a live stream
        try:
            async for chunk in self.jobs.backend.follow_logs(record, replica):
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            return  # the reader went away
        self.finish()


class JobMetricsHandler(JobHandler):
    """``GET api/jobs/{job_id}/metrics``: what the job logged with ``log_metric``, from its folder on the share."""

    async def get(self, job_id):
        folder = self.jobs.folder(self.identity, job_id)
        self.write_json({"metrics": metric_points(folder)})


class JobFilesHandler(JobHandler):
    """``GET api/jobs/{job_id}/files``: the job folder's files (for members of the job's project)."""

    async def get(self, job_id):
        folder = self.jobs.folder(self.identity, job_id)
        self.write_json({"folder": f"{JOBS_FOLDER}/{job_id}", "files": list_files(folder)})


class JobFileHandler(JobHandler):
    """``GET api/jobs/{job_id}/files/{path}``: one file of the job folder, as a download."""

    CHUNK = 256 * 1024

    async def get(self, job_id, path):
        folder = self.jobs.folder(self.identity, job_id)
        with open_file(folder, path) as f:
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Disposition", f'attachment; filename="{Path(path).name}"')
            self.set_header("X-Content-Type-Options", "nosniff")
            while chunk := f.read(self.CHUNK):
                self.write(chunk)
                await self.flush()
        self.finish()
