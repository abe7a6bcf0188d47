"""The one handler of the server extension: an authenticated forwarder."""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

# A forwarded path is plain API path segments: no "..", no empty segment,
# nothing that could make the URL leave the service's /api/ folder.
_SEGMENT = re.compile(r"^[A-Za-z0-9_.~:@-]+$")

# Headers passed on from the service's answer (never cookies); X-Log-*: where a log part starts, the log's size.
_ANSWER_HEADERS = ("Content-Type", "Cache-Control", "Content-Disposition", "X-Log-Offset", "X-Log-Size")


def checked_api_path(path: str) -> str:
    """Return ``path`` if it is a safe relative API path, else raise 400."""
    segments = path.split("/")
    if path == "":
        raise web.HTTPError(400, "Name an API path under /kubeai/api/.")
    for segment in segments:
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise web.HTTPError(400, f"Not a valid KubeAI API path: {path!r}")
    return path


class ServiceHandler(ExtensionHandlerMixin, APIHandler):
    """Base of the extension's handlers: JSON errors, and calls to the hub service as the user."""

    def write_error(self, status_code, **kwargs):
        # JSON with "message" and "reason", like the hub service's errors.
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(error, "log_message", None) or self._reason
        reason = getattr(error, "kubeai_reason", "server_extension")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"message": message, "reason": reason}))

    def _target_url(self, path: str) -> str:
        base = self.extensionapp.service_url
        if not base:
            error = web.HTTPError(
                503,
                "This Jupyter server does not know where the KubeAI service is: "
                "KUBEAI_SERVICE_URL is not set. Start the server from the hub with a "
                "KubeAI spawner, or set KubeAIServerExtension.service_url.",
            )
            error.kubeai_reason = "not_configured"
            raise error
        if not self.extensionapp.hub_api_token:
            error = web.HTTPError(
                503,
                "This Jupyter server has no hub token (JUPYTERHUB_API_TOKEN): "
                "the KubeAI service can only be used from a server started by JupyterHub.",
            )
            error.kubeai_reason = "not_configured"
            raise error
        url = base.rstrip("/") + "/api/" + checked_api_path(path)
        query = self.request.query_arguments
        if query:
            url += "?" + urlencode([(k, v.decode()) for k, vs in query.items() for v in vs])
        return url

    def _unreachable(self, e: Exception) -> web.HTTPError:
        error = web.HTTPError(
            502,
            f"The KubeAI service at {self.extensionapp.service_url} is unreachable ({e}). "
            "It may be restarting; try again in a moment, or ask a hub admin to check it.",
        )
        error.kubeai_reason = "service_unreachable"
        return error

    async def call_service(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """One JSON call to the hub service as the user: (status, decoded answer)."""
        url = self._target_url(path)
        request = HTTPRequest(
            url, method=method, body=None if body is None else json.dumps(body),
            headers={"Authorization": f"token {self.extensionapp.hub_api_token}", "Content-Type": "application/json"},
            follow_redirects=False, connect_timeout=10, request_timeout=self.extensionapp.request_timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as e:
            raise self._unreachable(e) from e
        if response.code == 599:
            raise self._unreachable(response.error)
        try:
            return response.code, json.loads(response.body or b"null")
        except ValueError:
            return response.code, {"message": response.body.decode(errors="replace")[:500], "reason": "service"}


class ServiceProxyHandler(ServiceHandler):
    """Forward ``/kubeai/api/<path>`` to the hub service as the user."""

    async def _forward(self, path: str) -> None:
        url = self._target_url(path)
        headers = {"Authorization": f"token {self.extensionapp.hub_api_token}"}
        for name in ("Content-Type", "Accept"):
            if name in self.request.headers:
                headers[name] = self.request.headers[name]
        method = self.request.method
        body = self.request.body if method in ("POST", "PUT", "PATCH") else None
        started = False

        def on_header(line: str) -> None:
            nonlocal started
            line = line.strip()
            if line.startswith("HTTP/"):
                parts = line.split(" ", 2)
                self.set_status(int(parts[1]), parts[2] if len(parts) > 2 else None)
            elif ":" in line:
                name, value = line.split(":", 1)
                if name.strip().title() in _ANSWER_HEADERS:
                    self.set_header(name.strip(), value.strip())

        def on_chunk(chunk: bytes) -> None:
            nonlocal started
            started = True
            self.write(chunk)
            self.flush()

        request = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=body if body is not None else (b"" if method in ("POST", "PUT", "PATCH") else None),
            allow_nonstandard_methods=True,
            follow_redirects=False,
            connect_timeout=10,
            # A followed log streams as long as the job runs: no overall limit.
            request_timeout=0 if self.get_argument("follow", "0") not in ("0", "") else self.extensionapp.request_timeout,
            header_callback=on_header,
            streaming_callback=on_chunk,
        )
        try:
            await AsyncHTTPClient().fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as e:
            if started:
                # The answer was under way: end it, a client sees a cut stream.
                self.log.warning("KubeAI service stream from %s broke: %s", url, e)
                self.finish()
                return
            self.clear_header("Content-Type")
            raise self._unreachable(e) from e
        self.finish()

    @web.authenticated
    async def get(self, path):
        await self._forward(path)

    @web.authenticated
    async def post(self, path):
        await self._forward(path)

    @web.authenticated
    async def put(self, path):
        await self._forward(path)

    @web.authenticated
    async def patch(self, path):
        await self._forward(path)

    @web.authenticated
    async def delete(self, path):
        await self._forward(path)
