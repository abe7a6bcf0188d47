"""``python -m jupyter_kubeai.serving``: the model server (the runtime image's command).

    python -m jupyter_kubeai.serving --model-dir DIR --name NAME --port PORT \\
        [--host 127.0.0.1] [--max-batch-size N] [--max-latency-ms X] [--version V]

Every setting is a ``ServingApp`` trait below (``--ServingApp.<name>=...``
on the command line, or a config file); the short forms are aliases. Signals:
SIGTERM/SIGINT shut down gracefully (readiness false, stop accepting, drain,
exit 0); SIGHUP reloads the model folder in place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from tornado.httpserver import HTTPServer
from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import Application

from .. import __version__
from ..errors import KubeAIError
from .handlers import DEFAULT_MAX_BODY_SIZE, make_server_delegate
from .model_dir import MODEL_JSON, read_model_dir
from .runtime import ModelRuntime, default_workers


class ServingApp(Application):
    """Serve one model folder over KServe v1 and the Open Inference Protocol v2."""

    name = "kubeai-serving"
    version = __version__
    description = "Serve a model folder (scikit-learn, TorchScript or a predictor.py) over HTTP: KServe v1 and Open Inference v2."

    aliases = {
        "model-dir": "ServingApp.model_dir",
        "name": "ServingApp.model_name",
        "model-version": "ServingApp.model_version",
        "host": "ServingApp.host",
        "port": "ServingApp.port",
        "max-batch-size": "ServingApp.max_batch_size",
        "max-latency-ms": "ServingApp.max_latency_ms",
        "workers": "ServingApp.workers",
        "log-level": "Application.log_level",
        "config": "ServingApp.config_file",
    }
    flags = {
        "no-batching": ({"ServingApp": {"max_batch_size": 1}}, "Call predict() once per request (same as --max-batch-size 1)."),
        "access-log": ({"ServingApp": {"access_log": True}}, "Log every request, not only failed ones."),
        "debug": ({"Application": {"log_level": logging.DEBUG}}, "Debug logging."),
    }

    @default("log_level")
    def _default_log_level(self):
        return logging.INFO

    config_file = Unicode("", config=True, help="""A Python config file to load (``c.ServingApp...``); the command line wins.""")

    model_dir = Unicode(
        config=True,
        help="""The model folder to serve (required). Default: ``$KUBEAI_MODEL_DIR``.

        Holds ``predictor.py`` (a class ``Predictor``: it wins), or
        ``model.joblib``/``model.pkl`` (scikit-learn), or ``model.pt``
        (TorchScript), and optionally ``model.json`` (format, signature,
        predictor config; see ``jupyter_kubeai.serving.model_dir``).
        """,
    )

    @default("model_dir")
    def _default_model_dir(self):
        return os.environ.get("KUBEAI_MODEL_DIR", "")

    model_name = Unicode(
        config=True,
        help="""The name clients use in ``/v1/models/<name>`` and ``/v2/models/<name>``.

        Default: ``$KUBEAI_MODEL_NAME``, else ``name`` in model.json, else ``model``.
        Other names get 404.
        """,
    )

    @default("model_name")
    def _default_model_name(self):
        if os.environ.get("KUBEAI_MODEL_NAME"):
            return os.environ["KUBEAI_MODEL_NAME"]
        try:
            return str(read_model_dir(self.model_dir).metadata.get("name") or "model") if self.model_dir else "model"
        except KubeAIError:
            return "model"

    @validate("model_name")
    def _validate_model_name(self, proposal):
        if not proposal.value or "/" in proposal.value or ":" in proposal.value:
            raise ValueError(f"Model name {proposal.value!r} must be non-empty, without '/' or ':'.")
        return proposal.value

    model_version = Unicode(
        config=True,
        help="""The model version reported in v2 metadata and responses (``--version V``).

        Default: ``$KUBEAI_MODEL_VERSION`` (set in the pods jupyter_kubeai
        deploys, which also pass ``--version``), else ``version`` in
        model.json, else none. Requests to
        ``/v2/models/<name>/versions/<v>/...`` with another version get 404.
        """,
    )

    @default("model_version")
    def _default_model_version(self):
        return os.environ.get("KUBEAI_MODEL_VERSION", "")

    host = Unicode(
        "127.0.0.1",
        config=True,
        help="""Address to listen on. Default ``127.0.0.1`` (local mode: only the hub service, on the same
        machine, reaches it). In a container pass ``--host 0.0.0.0`` (the Kubernetes deployments do), or
        probes and the Service cannot reach it.""",
    )

    port = Integer(8080, config=True, help="""Port to listen on (8080: KServe's default).""")

    max_batch_size = Integer(
        16,
        config=True,
        help="""Most instances sent to one ``predict()`` call by adaptive batching; 1 turns batching off.

        With batching, concurrent requests are stacked into one call (one call
        at a time) and the outputs split back; a lone request is never
        delayed. Off, each request calls ``predict()`` on its own, up to
        ``workers`` at once. See ``max_latency_ms``.
        """,
    )

    @validate("max_batch_size")
    def _validate_max_batch_size(self, proposal):
        if proposal.value < 1:
            raise ValueError("max_batch_size must be at least 1 (1: batching off).")
        return proposal.value

    max_latency_ms = Float(
        5.0,
        config=True,
        help="""The longest (ms) a batch waits for requests the server is already reading to join it.

        With batching on, a batch is sent when full, or when no request is
        being read (nothing to wait for: a lone request goes at once), or
        after this many ms from its oldest request. Requests that queue while
        a batch runs go together in the next. 0: never wait.
        """,
    )

    @validate("max_latency_ms")
    def _validate_max_latency_ms(self, proposal):
        if proposal.value < 0:
            raise ValueError("max_latency_ms must be >= 0.")
        return proposal.value

    workers = Integer(
        config=True,
        help="""Threads running ``predict()`` at once when batching is off. Default: min(4, CPUs).

        Set 1 for a predictor that is not thread-safe. With batching on, one
        batch runs at a time whatever this says.
        """,
    )

    @default("workers")
    def _default_workers(self):
        return default_workers()

    inline_max_ms = Float(
        1.0,
        config=True,
        help="""Run ``predict`` on the event loop, not in a thread, for a lone request when recent calls took under this (ms).

        Only when nothing else is queued, running or being read, after a few
        calls measured in the pool. Saves the thread hop (~0.1-0.2 ms) at low
        load; meanwhile the server reads no other request (at most about this
        long). 0: always in the pool thread(s).
        """,
    )

    @validate("inline_max_ms")
    def _validate_inline_max_ms(self, proposal):
        if proposal.value < 0:
            raise ValueError("inline_max_ms must be >= 0.")
        return proposal.value

    predictor_config = Dict(
        config=True,
        help="""Settings passed to the predictor's ``__init__(model_dir, config)``, over model.json's ``config``.

        Built-ins: scikit-learn ``{"predict_proba": true}`` (probabilities
        instead of labels); TorchScript ``{"device": "cpu"}``, ``{"num_threads": N}``.
        """,
    )

    shutdown_delay = Float(
        0.0,
        config=True,
        help="""Seconds between readiness going false and closing the listener on SIGTERM.

        Gives load balancers time to stop sending new requests (on Kubernetes,
        a few seconds; the pod's terminationGracePeriodSeconds must cover this
        plus ``shutdown_timeout``).
        """,
    )

    shutdown_timeout = Float(
        30.0,
        config=True,
        help="""The longest (seconds) a graceful shutdown waits for in-flight requests before exiting anyway (exit code 1).""",
    )

    max_body_size = Integer(
        DEFAULT_MAX_BODY_SIZE,
        config=True,
        help="""The largest request body (bytes) the server reads; larger ones get 413 with a message. Default 64 MiB.

        Checked from the Content-Length before the body is read (a chunked
        body over it is cut off with a plain 400). Bodies are held in memory
        while parsed, so this bounds what one request costs.
        """,
    )

    @validate("max_body_size")
    def _validate_max_body_size(self, proposal):
        if proposal.value < 1024:
            raise ValueError("max_body_size must be at least 1024 bytes.")
        return proposal.value

    access_log = Bool(False, config=True, help="""Log every request (INFO); failed requests are always logged.""")

    def parse_command_line(self, argv=None):
        # traitlets reserves --version (print the app version and exit); here it is the model version.
        argv = list(sys.argv[1:] if argv is None else argv)
        out = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--version" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                out.append(f"--model-version={argv[i + 1]}")
                i += 2
                continue
            if arg.startswith("--version="):
                arg = "--model-version=" + arg.split("=", 1)[1]
            out.append(arg)
            i += 1
        super().parse_command_line(out)

    def load_config(self, argv=None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.parse_command_line(argv)

    def make_runtime(self) -> ModelRuntime:
        return ModelRuntime(
            self.model_dir,
            self.model_name,
            version=self.model_version,
            predictor_config=self.predictor_config,
            max_batch_size=self.max_batch_size,
            max_latency=self.max_latency_ms / 1000,
            workers=self.workers,
            inline_max=self.inline_max_ms / 1000,
        )

    async def serve(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        if not self.model_dir:
            self.log.error("No model folder: pass --model-dir DIR (or set $KUBEAI_MODEL_DIR).")
            return 2
        runtime = self.make_runtime()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(runtime.reload()))

        server = HTTPServer(make_server_delegate(runtime, access_log=self.access_log, max_body_size=self.max_body_size),
                            max_body_size=self.max_body_size)
        server.listen(self.port, self.host)
        self.log.info(
            "Serving %s as %r at http://%s:%d (batching %s)", self.model_dir, self.model_name, self.host, self.port,
            f"up to {self.max_batch_size}, {self.max_latency_ms} ms" if runtime.batching else "off",
        )
        try:
            await runtime.load()
        except Exception as e:
            if isinstance(e, KubeAIError):
                self.log.error("Cannot serve %s: %s", self.model_dir, e.message)
            else:
                self.log.exception("Loading the model from %s failed (see %s and the traceback)", self.model_dir, MODEL_JSON)
            server.stop()
            return 1

        await stop.wait()
        self.log.info("Shutting down: readiness false, draining %d in-flight request(s)", runtime.inflight)
        runtime.begin_shutdown()
        if self.shutdown_delay > 0:
            await asyncio.sleep(self.shutdown_delay)
        server.stop()  # stop accepting; open connections finish their requests
        drained = await runtime.drain(self.shutdown_timeout)
        if not drained:
            self.log.warning("%d request(s) still in flight after %.0fs; exiting anyway", runtime.inflight, self.shutdown_timeout)
        await server.close_all_connections()
        await runtime.close()
        self.log.info("Stopped")
        return 0 if drained else 1

    def start(self) -> int:
        return asyncio.run(self.serve())


def main(argv=None) -> None:
    app = ServingApp()
    app.load_config(argv)
    sys.exit(app.start())
