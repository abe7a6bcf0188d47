"""The lab side of jobs: the snapshot is written here, in the user's own home.

- ``POST /kubeai/jobs``: snapshot the notebook as the editor has it
  (``content``; or, from the file browser, the saved file at
  ``notebook_path``) into ``.kubeai/jobs/<job-id>/``, then submit it to
  the hub service as the user. A refused submission's folder is removed.
- ``GET /kubeai/jobs/<job-id>/metrics``: what the job logged with
  ``jupyter_kubeai.log_metric``, read here, in the user's own home.
- ``GET /kubeai/jobs/<job-id>/files``: the job folder's files, openable in Lab.

A teammate's project job has its folder in the owner's home: its metrics
and files come from the hub service instead (``api/jobs/<id>/metrics``,
``files``), which reads them on the share; the panel falls back to those on
this handler's 404.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from jupyter_core.utils import ensure_async
from tornado import web

from ..errors import InvalidInput, KubeAIError
from ..jobs.folder import list_files, metric_points, model_file
from ..jobs.snapshot import JOBS_FOLDER
from ..jobs.submission import finish_submission, job_folder, prepare_submission
from .handlers import ServiceHandler


def _http_error(error: KubeAIError) -> web.HTTPError:
    http = web.HTTPError(error.status, error.message.replace("%", "%%"))
    http.kubeai_reason = error.reason
    return http


class JobFolderHandler(ServiceHandler):
    @property
    def home(self) -> Path:
        return Path(self.serverapp.root_dir).absolute()

    def folder(self, job_id: str) -> Path:
        try:
            folder = job_folder(self.home, job_id)
        except InvalidInput as e:
            raise _http_error(e) from None
        if not folder.is_dir():
            raise web.HTTPError(404, f"There is no job folder {JOBS_FOLDER}/{job_id} in your home.")
        return folder


class SubmitJobHandler(JobFolderHandler):
    """``POST /kubeai/jobs``: snapshot, then submit as the user."""

    async def _notebook(self, path: str) -> dict:
        if not path.endswith(".ipynb"):
            raise web.HTTPError(400, f"{path!r} is not a notebook (.ipynb).")
        try:
            model = await ensure_async(self.contents_manager.get(path, content=True, type="notebook"))
        except web.HTTPError as e:
            raise web.HTTPError(e.status_code, f"Cannot read {path!r}: {e.log_message}") from None
        return json.loads(json.dumps(model["content"]))

    @web.authenticated
    async def post(self):
        body = self.get_json_body()
        if not isinstance(body, dict):
            raise web.HTTPError(400, "The submission must be a JSON object.")
        path = body.pop("notebook_path", "")
        content = body.pop("content", None)
        if not isinstance(path, str):
            raise web.HTTPError(400, "notebook_path must be the notebook's path.")
        if content is None:
            content = await self._notebook(path)
        try:
            job_id, submission = prepare_submission(self.home, path, content, body)
        except KubeAIError as e:
            raise _http_error(e) from None
        status = 502
        answer: object = None
        try:
            status, answer = await self.call_service("POST", "jobs", submission)
        finally:
            finish_submission(self.home, job_id, status, answer)
        self.set_status(status)
        self.finish(json.dumps(answer))


class JobMetricsHandler(JobFolderHandler):
    @web.authenticated
    async def get(self, job_id):
        folder = self.folder(job_id)
        try:
            # In a thread: a FIFO or a slow disk in the job folder must not stall this server.
            points = await asyncio.to_thread(metric_points, folder)
        except KubeAIError as e:
            raise _http_error(e) from None
        self.finish(json.dumps({"metrics": points}))


class JobFilesHandler(JobFolderHandler):
    """The job's outputs (internal files hidden) and ``model_file``, the path to register by default."""

    @web.authenticated
    async def get(self, job_id):
        folder = self.folder(job_id)
        relative = folder.relative_to(self.home)
        try:
            listed = await asyncio.to_thread(list_files, folder)
        except KubeAIError as e:
            raise _http_error(e) from None
        files = [{**f, "path": str(relative / f["name"])} for f in listed]
        self.finish(json.dumps({"folder": str(relative), "files": files, "model_file": model_file(listed)}))
