"""``ModelRuntime``: one served model — its predictor, how predict runs, readiness.

The HTTP handlers call :meth:`ModelRuntime.predict` with checked work
(:mod:`.protocol`); this module owns the predictor, the thread pool, the
batcher, the in-flight count that graceful shutdown waits on, and reload.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import InvalidInput, NotFound, Unavailable
from .batching import LATER, Batcher, Runner
from .metrics import Metrics
from .model_dir import ModelInfo, Signature, parse_signature, read_model_dir
from .predictors import load_predictor
from .protocol import Work

log = logging.getLogger("jupyter_kubeai.serving")

#: The v2 metadata ``platform`` of each format.
PLATFORMS = {"sklearn": "sklearn", "torchscript": "pytorch_torchscript", "custom": "jupyter_kubeai_custom"}


class ModelRuntime:
    def __init__(
        self,
        model_dir: str,
        name: str,
        *,
        version: str = "",
        predictor_config: dict | None = None,
        max_batch_size: int = 16,
        max_latency: float = 0.005,
        workers: int = 4,
        inline_max: float = 0.001,
    ):
        self.model_dir = model_dir
        self.name = name
        self._version = version
        self.predictor_config = dict(predictor_config or {})
        self.metrics = Metrics(name)
        self.metrics.inflight.set_function(lambda: self.inflight)
        self.batching = max_batch_size > 1
        # Batching runs one batch at a time: one thread. Off: ``workers`` threads.
        self.executor = ThreadPoolExecutor(max_workers=1 if self.batching else max(1, workers), thread_name_prefix="predict")
        # A lone request on an idle server runs a fast predict on the event loop (see .batching).
        self.runner = (
            Batcher(self.executor, self.metrics, max_batch_size=max_batch_size, max_latency=max_latency,
                    arriving=lambda: self.arriving, inline_max=inline_max, peers=self.active_connections)
            if self.batching else
            Runner(self.executor, self.metrics, inline_max=inline_max, arriving=lambda: self.arriving)
        )
        self.info: ModelInfo | None = None
        self.predictor = None
        self._predict = None  # the bound predict (one object, so batches can compare it)
        self.loaded = False
        self.shutting_down = False
        self.inflight = 0
        self.arriving = 0  # predictions being read: headers in, not yet handed to the batcher
        # open HTTP connection -> when its last request started (the batcher's peers: see active_connections)
        self.connections: dict = {}
        self._reloading: asyncio.Future | None = None

    # --- state -----------------------------------------------------------

    @property
    def version(self) -> str:
        return self._version or (self.info.version if self.info else "")

    @property
    def ready(self) -> bool:
        return self.loaded and not self.shutting_down

    def _set_ready_gauge(self):
        self.metrics.ready.set(1 if self.ready else 0)

    def check_model(self, name: str, version: str | None = None) -> None:
        """NotFound unless ``name`` (and ``version``, when given) is the model served here."""
        if name != self.name:
            raise NotFound(f"No model named {name!r} here; this server serves {self.name!r}.")
        if version is not None and version != self.version:
            raise NotFound(f"Model {name!r} has no version {version!r}; this server serves version {self.version or '(none)'}.")

    @property
    def reported_signature(self) -> Signature:
        """What the v2 metadata reports: model.json's signature, else the loaded predictor's ``signature()``.

        Only model.json's is checked against requests; the predictor's is a hint (e.g. for a sample request).
        """
        if self.info.signature.inputs or self.info.signature.outputs:
            return self.info.signature
        learnt = getattr(self.predictor, "signature", None)
        if not callable(learnt):
            return self.info.signature
        try:
            return parse_signature(learnt())
        except Exception:  # a user's predictor.py: its hint is not worth a failed metadata request
            log.warning("The predictor's signature() failed; the metadata reports none", exc_info=True)
            return self.info.signature

    def require_loaded(self) -> None:
        if not self.loaded:
            raise Unavailable(f"Model {self.name!r} is still loading; retry when /v2/health/ready answers 200.")

    # --- loading ---------------------------------------------------------

    def _load(self):
        info = read_model_dir(self.model_dir)
        predictor = load_predictor(info, self.predictor_config)
        return info, predictor

    async def load(self) -> None:
        """Load the model in a thread (the server answers liveness meanwhile)."""
        t0 = time.monotonic()
        info, predictor = await asyncio.get_running_loop().run_in_executor(None, self._load)
        self._install(info, predictor)
        self.loaded = True
        self._set_ready_gauge()
        log.info("Model %r (%s, version %s) loaded from %s in %.2fs",
                 self.name, info.format, self.version or "-", self.model_dir, time.monotonic() - t0)

    def _install(self, info: ModelInfo, predictor) -> None:
        self.info = info
        self.predictor = predictor
        self._predict = predictor.predict
        self.platform = PLATFORMS[info.format]

    def _reload_sync(self):
        info = read_model_dir(self.model_dir)
        current = self.predictor
        if info.format == self.info.format and callable(getattr(current, "reload", None)):
            current.reload(str(info.path))
            return info, current
        return info, load_predictor(info, self.predictor_config)

    async def reload(self) -> None:
        """Load the model folder again (SIGHUP): the predictor's ``reload`` when it has one, else a new predictor.

        Requests keep being served by the old model until the new one is loaded; a failed reload keeps the old one.
        """
        if self._reloading is not None:
            return
        self._reloading = asyncio.get_running_loop().create_future()
        try:
            info, predictor = await asyncio.get_running_loop().run_in_executor(None, self._reload_sync)
            self._install(info, predictor)
            log.info("Model %r reloaded from %s (version %s)", self.name, self.model_dir, self.version or "-")
        except Exception:
            log.exception("Reloading model %r from %s failed; still serving the previous one", self.name, self.model_dir)
        finally:
            self._reloading.set_result(None)
            self._reloading = None

    # --- predict ---------------------------------------------------------

    #: A connection counts as active this long after its last request started.
    ACTIVE_WINDOW = 0.05

    def connection_request(self, conn) -> None:
        self.connections[conn] = time.monotonic()

    def connection_closed(self, conn) -> None:
        self.connections.pop(conn, None)

    def active_connections(self) -> int:
        """Connections whose last request started within ``ACTIVE_WINDOW``: the clients sending now.

        An idle keep-alive connection (a probe, a pooled client at rest) does not count, so a lone
        client still gets the inline path.
        """
        cutoff = time.monotonic() - self.ACTIVE_WINDOW
        return sum(1 for started in self.connections.values() if started >= cutoff)

    def request_arriving(self) -> None:
        self.arriving += 1

    def request_arrived(self) -> None:
        """The request is read: handed to predict next (or failed); a batch waiting for it may go on."""
        self.arriving -= 1
        if self.batching:
            self.runner.notify()

    async def predict(self, work: Work):
        """The outputs for ``work``; a predictor's ValueError/TypeError becomes InvalidInput (400)."""
        if not getattr(self.predictor, "batchable", True):
            work.key = ("solo",)
        try:
            return await self.runner.submit(self._predict, work)
        except (ValueError, TypeError) as e:
            raise _invalid(e) from e

    def predict_now(self, work: Work):
        """The outputs for ``work`` when a fast predict may run inline right now, else ``LATER`` (then: ``predict``)."""
        result = self.runner.try_now(self._predict, work)
        if result is LATER:
            return LATER
        ok, value = result
        if ok:
            return value
        if isinstance(value, (ValueError, TypeError)):
            raise _invalid(value) from value
        raise value

    # --- shutdown --------------------------------------------------------

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        self._set_ready_gauge()

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.inflight == 0

    async def close(self) -> None:
        await self.runner.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _invalid(e: Exception) -> InvalidInput:
    return InvalidInput(f"The model could not take this input: {e}")


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
