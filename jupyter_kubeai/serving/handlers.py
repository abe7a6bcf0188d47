"""HTTP handlers: KServe v1, Open Inference Protocol v2, health, metrics.

Thin: parse the body (:mod:`.protocol`), call the runtime, write JSON.
Errors map to a status in one place (:meth:`BaseHandler.write_error` with
``jupyter_kubeai.errors.http_status``): bad input 400, unknown model 404,
loading or shutting down 503, anything else 500 with a generic message and
the traceback in the log. Every error body is the project's one error shape,
``{"message": ..., "reason": ...}``, plus ``"error"`` (the same message) as
KServe's model servers answer, for their clients.
A body larger than ``max_body_size`` is refused from its Content-Length
(413) before it is read.

The runtime has no authentication of its own, like KServe's model servers:
in local mode the hub proxies it at an authenticated URL; on Kubernetes it is
reached through the cluster's Service/ingress.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from urllib.parse import unquote

from tornado import httputil, iostream, web

from .. import __version__
from ..errors import KubeAIError, NotFound, TooLarge, http_status
from . import protocol
from .batching import LATER
from .runtime import ModelRuntime

log = logging.getLogger("jupyter_kubeai.serving")

ERROR_KINDS = {400: "invalid_input", 404: "not_found", 405: "invalid_input", 503: "unavailable"}


# Each predict endpoint in two halves around the predict call: the request
# parsed into work (or a KubeAIError), and the outputs into the response
# document. ``request`` is whatever the second half needs from the first.

def v1_parse(rt: ModelRuntime, name: str, version: str | None, body: bytes) -> tuple[None, protocol.Work]:
    """``POST /v1/models/<name>:predict``: the checked instances."""
    rt.check_model(name)
    rt.require_loaded()
    return None, protocol.payload_from_v1(protocol.v1_instances(body), rt.predictor, rt.info.signature)


def v1_answer(rt: ModelRuntime, request: None, outputs) -> dict:
    return protocol.v1_response(outputs)


def v2_parse(rt: ModelRuntime, name: str, version: str | None, body: bytes) -> tuple[dict, protocol.Work]:
    """``POST /v2/models/<name>[/versions/<v>]/infer``: the request object and its checked input."""
    rt.check_model(name, version)
    rt.require_loaded()
    request, inputs = protocol.v2_request(body)
    return request, protocol.payload_from_v2(inputs, rt.predictor, rt.info.signature)


def v2_answer(rt: ModelRuntime, request: dict, outputs) -> dict:
    return protocol.v2_response(outputs, model_name=rt.name, model_version=rt.version, request=request,
                                signature=rt.info.signature)


async def v1_predict(rt: ModelRuntime, name: str, body: bytes) -> dict:
    """``POST /v1/models/<name>:predict``: the response document (or a KubeAIError)."""
    request, work = v1_parse(rt, name, None, body)
    return v1_answer(rt, request, await rt.predict(work))


async def v2_infer(rt: ModelRuntime, name: str, version: str | None, body: bytes) -> dict:
    """``POST /v2/models/<name>[/versions/<v>]/infer``: the response document (or a KubeAIError)."""
    request, work = v2_parse(rt, name, version, body)
    return v2_answer(rt, request, await rt.predict(work))


def error_answer(exc: BaseException | None, status: int, reason: str) -> tuple[int, str]:
    """The status and message for an error: ours say what to do; anything else is a generic 500."""
    if isinstance(exc, KubeAIError):
        return http_status(exc), exc.message
    if isinstance(exc, web.HTTPError):
        return exc.status_code, exc.log_message or reason
    if status < 500:
        return status, reason
    return 500, "Internal error in the model server; its log has the details."


def error_document(exc: BaseException | None, status: int, reason: str) -> tuple[int, bytes]:
    """The status and JSON body of an error answer: ``{"message", "reason", "error"}``."""
    status, message = error_answer(exc, status, reason)
    kind = exc.reason if isinstance(exc, KubeAIError) else error_kind(status)
    return status, protocol.dumps({"message": message, "reason": kind, "error": message})


def error_kind(status: int) -> str | None:
    if status < 400:
        return None
    return ERROR_KINDS.get(status, "internal" if status >= 500 else "invalid_input")


class BaseHandler(web.RequestHandler):
    endpoint = "other"
    _counted = False

    @property
    def runtime(self) -> ModelRuntime:
        return self.settings["runtime"]

    def set_default_headers(self):
        self.set_header("Content-Type", "application/json")

    def prepare(self):
        self._t0 = time.perf_counter()
        self._counted = True
        self.runtime.inflight += 1
        if self.runtime.shutting_down:
            # Draining: answer, then close the connection so clients go elsewhere.
            conn = self.request.connection
            if hasattr(conn, "_disconnect_on_finish"):
                conn._disconnect_on_finish = True

    def _uncount(self):
        if self._counted:
            self._counted = False
            self.runtime.inflight -= 1

    def on_finish(self):
        self._uncount()
        status = self.get_status()
        elapsed = time.perf_counter() - getattr(self, "_t0", time.perf_counter())
        self.runtime.metrics.observe_request(self.endpoint, status, elapsed, error_kind(status))

    def on_connection_close(self):
        self._uncount()

    def write_json(self, doc, status: int = 200) -> None:
        self.set_status(status)
        self.finish(protocol.dumps(doc))

    def log_exception(self, typ, value, tb):
        if isinstance(value, (KubeAIError, web.HTTPError)):
            return  # an answer, not a bug
        log.error("Internal error in %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs):
        status_code, body = error_document(kwargs.get("exc_info", (None, None, None))[1], status_code, self._reason)
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


class NotFoundHandler(BaseHandler):
    def prepare(self):
        super().prepare()
        raise NotFound(f"No such endpoint: {self.request.method} {self.request.path}. "
                       "See /v1/models/<name>:predict and /v2/models/<name>/infer.")


class LiveHandler(BaseHandler):
    endpoint = "health"

    def get(self):
        self.write_json({"live": True})


class ReadyHandler(BaseHandler):
    endpoint = "health"

    def get(self):
        ready = self.runtime.ready
        self.write_json({"ready": ready}, 200 if ready else 503)


class RootHandler(BaseHandler):
    """KServe's ``GET /`` liveness answer."""

    endpoint = "health"

    def get(self):
        self.write_json({"status": "alive"})


class ServerMetadataHandler(BaseHandler):
    endpoint = "metadata"

    def get(self):
        self.write_json({"name": "jupyter_kubeai.serving", "version": __version__, "extensions": []})


class MetricsHandler(BaseHandler):
    endpoint = "metrics"

    def get(self):
        self.set_header("Content-Type", self.runtime.metrics.content_type)
        self.finish(self.runtime.metrics.render())


class V1ModelsHandler(BaseHandler):
    endpoint = "v1_models"

    def get(self):
        self.write_json({"models": [self.runtime.name]})


class V1ModelHandler(BaseHandler):
    endpoint = "v1_model"

    def get(self, name):
        self.runtime.check_model(name)
        ready = self.runtime.ready
        self.write_json({"name": name, "ready": ready}, 200 if ready else 503)


class V1PredictHandler(BaseHandler):
    endpoint = "v1_predict"

    async def post(self, name):
        self.write_json(await v1_predict(self.runtime, name, self.request.body))


class V2ModelHandler(BaseHandler):
    endpoint = "v2_metadata"

    def get(self, name, version=None):
        rt = self.runtime
        rt.check_model(name, version)
        rt.require_loaded()
        sig = rt.reported_signature
        self.write_json({
            "name": rt.name,
            "versions": [rt.version] if rt.version else [],
            "platform": rt.platform,
            "inputs": [t.to_json() for t in sig.inputs],
            "outputs": [t.to_json() for t in sig.outputs],
        })


class V2ModelReadyHandler(BaseHandler):
    endpoint = "v2_ready"

    def get(self, name, version=None):
        self.runtime.check_model(name, version)
        ready = self.runtime.ready
        self.write_json({"name": name, "ready": ready}, 200 if ready else 503)


class V2InferHandler(BaseHandler):
    endpoint = "v2_infer"

    async def post(self, name, version=None):
        self.write_json(await v2_infer(self.runtime, name, version, self.request.body))


_NAME = r"([^/:]+)"
_VERSION = r"(?:/versions/([^/]+))?"

ROUTES = [
    (r"/", RootHandler),
    (r"/metrics", MetricsHandler),
    (r"/v1/models", V1ModelsHandler),
    (rf"/v1/models/{_NAME}", V1ModelHandler),
    (rf"/v1/models/{_NAME}:predict", V1PredictHandler),
    (r"/v2", ServerMetadataHandler),
    (r"/v2/health/live", LiveHandler),
    (r"/v2/health/ready", ReadyHandler),
    (rf"/v2/models/{_NAME}{_VERSION}", V2ModelHandler),
    (rf"/v2/models/{_NAME}{_VERSION}/ready", V2ModelReadyHandler),
    (rf"/v2/models/{_NAME}{_VERSION}/infer", V2InferHandler),
]


def log_request(handler: web.RequestHandler) -> None:
    """Access log: errors always, the rest only with ``access_log``."""
    status = handler.get_status()
    quiet = status < 400 or (status == 503 and getattr(handler, "endpoint", "") in ("health", "v1_model", "v2_ready"))
    if quiet and not handler.settings.get("access_log"):
        return  # readiness probes answer 503 while loading or draining: expected, not worth a line
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    log.log(level, "%d %s %s %.2fms", status, handler.request.method, handler.request.uri, 1000 * handler.request.request_time())


def make_app(runtime: ModelRuntime, *, access_log: bool = False) -> web.Application:
    return web.Application(
        ROUTES,
        default_handler_class=NotFoundHandler,
        runtime=runtime,
        access_log=access_log,
        log_function=log_request,
        compress_response=False,
    )


# --- the prediction fast path ---------------------------------------------------
#
# Predictions are the hot path: at a few hundred microseconds of predict()
# per batch, tornado's RequestHandler machinery (routing, handler object,
# header bookkeeping, flush layers, a task per request) costs more than the
# model. POSTs to the two predict endpoints are therefore answered by a lean
# HTTPMessageDelegate on tornado's own HTTP/1.1 connection (same parsing,
# limits, keep-alive), sharing the parse/answer halves above, error_answer
# and the metrics with the handlers; every other request goes to the tornado
# Application.
#
# When the runtime can predict inline (an idle server, a fast model: see
# .batching), the whole request is answered within the delegate's finish():
# parse, predict, write, in the event-loop turn that read the body, with no
# task, future or thread hop. Otherwise a task awaits the runtime's predict.

_FAST_ROUTES = [
    (re.compile(rf"^/v1/models/{_NAME}:predict$"), "v1_predict", v1_parse, v1_answer),
    (re.compile(rf"^/v2/models/{_NAME}{_VERSION}/infer$"), "v2_infer", v2_parse, v2_answer),
]
_OK_LINE = httputil.ResponseStartLine("HTTP/1.1", 200, "OK")
_JSON_HEADERS = (("Content-Type", "application/json"),)
_OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "


class _HTTPDate:
    """The Date header, formatted once a second (formatting costs more than a small prediction)."""

    second = -1
    value = ""
    raw = b""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.value = t, email.utils.formatdate(t, usegmt=True)
            cls.raw = cls.value.encode()
        return cls.value


class _PredictDelegate(httputil.HTTPMessageDelegate):
    __slots__ = ("router", "conn", "endpoint", "parse", "answer", "args", "chunks", "t0", "closed", "responding")

    def __init__(self, router: "ServingRouter", conn, route: tuple, args: tuple):
        self.router, self.conn, self.args = router, conn, args
        _, self.endpoint, self.parse, self.answer = route
        self.chunks: list[bytes] = []
        self.t0 = time.perf_counter()
        self.closed = False
        self.responding = False
        rt = router.runtime
        rt.inflight += 1
        rt.request_arriving()
        if rt.shutting_down and hasattr(conn, "_disconnect_on_finish"):
            conn._disconnect_on_finish = True  # draining: answer, then close so the client goes elsewhere

    def data_received(self, chunk):
        self.chunks.append(chunk)

    def finish(self):
        """The body is in: parse it and hand it to predict in this turn, before any await."""
        self.responding = True
        rt = self.router.runtime
        rt.request_arrived()
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        try:
            name, version = self.args
            request, work = self.parse(rt, unquote(name), version and unquote(version), body)
            outputs = rt.predict_now(work)
            if outputs is LATER:
                asyncio.get_running_loop().create_task(self._respond(request, work))
                return
            status, payload = 200, protocol.dumps(self.answer(rt, request, outputs))
        except Exception as e:
            status, payload = self._failed(e)
        self._send(status, payload)

    async def _respond(self, request, work):
        rt = self.router.runtime
        try:
            status, payload = 200, protocol.dumps(self.answer(rt, request, await rt.predict(work)))
        except Exception as e:
            status, payload = self._failed(e)
        self._send(status, payload)

    def _failed(self, e: Exception) -> tuple[int, bytes]:
        if not isinstance(e, KubeAIError):
            log.error("Internal error in %s", self.endpoint, exc_info=e)
        return error_document(e, 500, "")

    def on_connection_close(self):
        self.closed = True
        if not self.responding:  # the client went away mid-request: nothing will answer it
            rt = self.router.runtime
            rt.inflight -= 1
            rt.request_arrived()

    def _send(self, status: int, payload: bytes) -> None:
        rt = self.router.runtime
        conn = self.conn
        try:
            if self.closed:
                pass
            elif (status == 200 and getattr(conn, "_pending_write", False) is None
                  and getattr(conn, "_disconnect_on_finish", True) is False
                  and getattr(getattr(conn, "_request_start_line", None), "version", "") == "HTTP/1.1"):
                # (Tornado internals read with getattr: a tornado without them takes the plain path below.)
                # The common answer, written as bytes: tornado's write_headers spends ~40 us building and
                # checking header lines that are constant here. Then finish() as usual (keep-alive,
                # Nagle), which waits for this write through _pending_write, as it does for its own.
                _HTTPDate.now()
                conn._pending_write = conn.stream.write(b"%s%d\r\nDate: %s\r\n\r\n%s" % (
                    _OK_HEAD, len(payload), _HTTPDate.raw, payload))  # raises StreamClosedError when closed
                conn.finish()
            else:
                headers = httputil.HTTPHeaders(_JSON_HEADERS)
                headers["Content-Length"] = str(len(payload))
                headers["Date"] = _HTTPDate.now()
                start_line = _OK_LINE if status == 200 else httputil.ResponseStartLine(
                    "HTTP/1.1", status, httputil.responses.get(status, "Unknown"))
                self.conn.write_headers(start_line, headers, payload)
                self.conn.finish()
        except iostream.StreamClosedError:
            pass
        finally:
            rt.inflight -= 1
            elapsed = time.perf_counter() - self.t0
            rt.metrics.observe_request(self.endpoint, status, elapsed, error_kind(status) if status != 200 else None)
            if status >= 400 or self.router.app.settings.get("access_log"):
                level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
                log.log(level, "%d POST %s %.2fms", status, self.endpoint, 1000 * elapsed)


#: The largest request body the model server reads by default (``ServingApp.max_body_size``).
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024


class _Forward(httputil.HTTPMessageDelegate):
    """Decides on the start line: a 413, the fast path, or the tornado Application."""

    __slots__ = ("router", "server_conn", "conn", "target")

    def __init__(self, router: "ServingRouter", server_conn, conn):
        self.router, self.server_conn, self.conn = router, server_conn, conn
        self.target = None

    def _too_large(self, length: str) -> None:
        """Answer 413 from the Content-Length, without reading the body, and close.

        The connection is detached from tornado first: left to it, it would
        read up to its own limit and then write a bare ``400 Bad Request``.
        (A chunked body over the limit still gets that bare 400: its size is
        known only while it is read.)
        """
        limit = self.router.max_body_size
        status, body = error_document(TooLarge(
            f"The request body ({length} bytes) is larger than this model server takes ({limit} bytes): "
            "send fewer instances per request."), 413, "")
        stream = self.conn.detach()
        head = b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" \
               b"Connection: close\r\nDate: %s\r\n\r\n" % (len(body), _HTTPDate.now().encode())
        stream.write(head + body).add_done_callback(lambda _: stream.close())
        self.router.runtime.metrics.observe_request("other", status, 0.0, error_kind(status))
        log.warning("413 %s body of %s bytes refused (max_body_size %d)", self.server_conn.context, length, limit)

    def headers_received(self, start_line, headers):
        length = headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and int(length) > self.router.max_body_size:
            self._too_large(length)
            return None
        if start_line.method == "POST" and "?" not in start_line.path:
            for route in _FAST_ROUTES:
                m = route[0].match(start_line.path)
                if m:
                    groups = m.groups()
                    self.target = _PredictDelegate(self.router, self.conn, route, groups if len(groups) == 2 else (groups[0], None))
                    return None
        self.target = self.router.app.start_request(self.server_conn, self.conn)
        return self.target.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.target.data_received(chunk)

    def finish(self):
        self.target.finish()

    def on_connection_close(self):
        if self.target is not None:
            self.target.on_connection_close()


class ServingRouter(httputil.HTTPServerConnectionDelegate):
    """What the HTTPServer serves: the prediction fast path, then the Application."""

    def __init__(self, app: web.Application, runtime: ModelRuntime, max_body_size: int = DEFAULT_MAX_BODY_SIZE):
        self.app = app
        self.runtime = runtime
        self.max_body_size = max_body_size

    def start_request(self, server_conn, request_conn):
        self.runtime.connection_request(server_conn)
        return _Forward(self, server_conn, request_conn)

    def on_close(self, server_conn):
        self.runtime.connection_closed(server_conn)
        self.app.on_close(server_conn)


def make_server_delegate(runtime: ModelRuntime, *, access_log: bool = False,
                         max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> ServingRouter:
    """What to serve; pass the same ``max_body_size`` to the HTTPServer (it bounds chunked bodies)."""
    return ServingRouter(make_app(runtime, access_log=access_log), runtime, max_body_size)
