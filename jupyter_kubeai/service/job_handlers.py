"""Job routes: submit, list, get, events, logs (streamed), cancel, resubmit, delete.

Thin: every decision (who may, what is valid) is in
:class:`~jupyter_kubeai.service.jobs.JobManager`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from urllib.parse import quote

from tornado.iostream import StreamClosedError

from ..errors import InvalidInput, KubeAIError, NotFound
from ..jobs.folder import job_home, list_files, metric_points, model_file, open_file
from ..jobs.logfiles import DEFAULT_TAIL_BYTES, MAX_LOG_BYTES
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.status import STATES
from ..jobs.submission import parse_submission
from .handlers import BaseHandler
from .jobs import JobManager, job_json

MAX_LIMIT = 500

log = logging.getLogger(__name__)


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
        self.write_json({"jobs": [job_json(r, who) for r in records]})

    async def post(self):
        record = await self.jobs.submit(self.identity, parse_submission(self.json_body()))
        self.write_json(job_json(record, self.identity), status=201)


class JobEntryHandler(JobHandler):
    """``GET api/jobs/{job_id}`` and ``DELETE api/jobs/{job_id}`` (the record; 409 while active)."""

    async def get(self, job_id):
        record = await self.jobs.refresh(self.jobs.get(self.identity, job_id))
        self.write_json(self.jobs.detail(self.identity, record))

    async def delete(self, job_id):
        await self.jobs.delete(self.identity, job_id)
        self.set_status(204)
        self.finish()


class JobCancelHandler(JobHandler):
    async def post(self, job_id):
        self.write_json(job_json(await self.jobs.cancel(self.identity, job_id), self.identity))


class JobResubmitHandler(JobHandler):
    async def post(self, job_id):
        record = await self.jobs.resubmit(self.identity, job_id, self.hub_user)
        self.write_json(job_json(record, self.identity), status=201)

    async def hub_user(self, name: str):
        """A hub user's identity now (an admin resubmits with the owner's current groups)."""
        return await self.settings["kubeai_directory"].identify({"name": name, "kind": "user"})


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
    """``GET api/jobs/{job_id}/logs/{replica}``: a bounded part of the log, as text.

    ``tail=<bytes>`` (default 256 KiB, at most 4 MiB): the last bytes, cut at a
    line start; or ``offset=<N>&length=<M>`` (M at most 4 MiB): bytes ``[N, N+M)``.
    ``X-Log-Offset`` says where the text starts, ``X-Log-Size`` how big the log is
    now, so a reader pages back with ``offset``/``length`` below ``X-Log-Offset``.
    ``follow=1`` streams from ``offset`` (default: the tail) what is appended,
    until the job ends; the backend reads only the new bytes.
    """

    async def get(self, job_id, replica):
        record = self.jobs.get(self.identity, job_id)
        follow = self.get_argument("follow", "0") not in ("0", "false", "")
        offset = self.int_argument("offset", -1, 0, 2**62)
        offset = None if offset < 0 else offset
        tail = self.int_argument("tail", DEFAULT_TAIL_BYTES, 0, MAX_LOG_BYTES)
        length = self.int_argument("length", MAX_LOG_BYTES, 0, MAX_LOG_BYTES)
        if offset is None and self.get_argument("length", None) is not None:
            raise InvalidInput("length goes with offset: ask for bytes [offset, offset + length), or for a tail.")
        backend = self.jobs.backend
        if follow and replica not in await backend.replicas(record):
            raise NotFound(f"Job {job_id!r} has no replica {replica!r}.")
        first = None
        if not follow or offset is None:
            first = await backend.logs(record, replica, tail=tail, offset=offset, length=length)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Log-Offset", str(first.offset if first is not None else offset))
        size = first.size if first is not None else None
        if size is not None:
            self.set_header("X-Log-Size", str(size))
        if not follow:
            self.finish(str(first))
            return
        self.set_header("X-Accel-Buffering", "no")  # no proxy buffering of a live stream
        try:
            if first:
                self.write(str(first))
                await self.flush()
            start = first.end if first is not None else offset
            async for chunk in backend.follow_logs(record, replica, offset=start):
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            return  # the reader went away
        except KubeAIError as e:
            # The status went out with the first bytes: end the stream, saying why (the log became a link...).
            log.info("Following the log of %s/%s ended: %s", job_id, replica, e.message)
        self.finish()


class JobMetricsHandler(JobHandler):
    """``GET api/jobs/{job_id}/metrics``: what the job logged with ``log_metric``, from its folder on the share.

    Read in a thread, from the owner's home without following links (see :mod:`jupyter_kubeai.jobs.folder`).
    """

    async def get(self, job_id):
        folder = self.jobs.folder(self.identity, job_id)
        self.write_json({"metrics": await asyncio.to_thread(metric_points, folder, job_home(folder))})


class JobFilesHandler(JobHandler):
    """``GET api/jobs/{job_id}/files``: the job folder's outputs (for members of the job's project),
    and ``model_file``: what to register by default (a path in the folder, or null)."""

    async def get(self, job_id):
        folder = self.jobs.folder(self.identity, job_id)
        files = await asyncio.to_thread(list_files, folder, job_home(folder))
        self.write_json({"folder": f"{JOBS_FOLDER}/{job_id}", "files": files, "model_file": model_file(files)})


def attachment(name: str) -> str:
    """A ``Content-Disposition`` for a file the user named: quotes, newlines or non-ASCII cannot break the header."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "download"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


class JobFileHandler(JobHandler):
    """``GET api/jobs/{job_id}/files/{path}``: one file of the job folder, as a download."""

    CHUNK = 256 * 1024

    async def get(self, job_id, path):
        folder = self.jobs.folder(self.identity, job_id)
        f = await asyncio.to_thread(open_file, folder, path, job_home(folder))
        try:
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Disposition", attachment(Path(path).name))
            self.set_header("X-Content-Type-Options", "nosniff")
            while chunk := await asyncio.to_thread(f.read, self.CHUNK):
                self.write(chunk)
                await self.flush()
        finally:
            f.close()
        self.finish()
