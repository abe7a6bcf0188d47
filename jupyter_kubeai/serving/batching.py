"""Running ``predict``: in a thread, one request at a time or in adaptive batches.

:class:`Runner` calls ``predict`` for each request in a thread pool
(batching off): requests run concurrently, up to ``workers`` at once.

:class:`Batcher` gathers concurrent requests into one ``predict`` call
(batching on) and splits the outputs back, one batch running at a time:

- A batch starts with the oldest waiting request and takes every waiting
  request whose instances can be stacked with it (same dtype and instance
  shape), up to ``max_batch_size`` instances.
- A batch is sent as soon as it is full. Otherwise it waits only for
  requests the server is already reading (headers in, not yet handed to the
  batcher: ``arriving()``), and never longer than ``max_latency`` after its
  oldest request arrived. Nothing is waited for on speculation: a lone
  request on an idle server is sent at once (batching adds no latency at low
  load), and with 8 clients and room for 16 the batch does not sit out
  ``max_latency`` for requests that cannot come before it answers.
- Requests already sent but not yet read count as arriving too: when more
  connections are active (``peers()``: a request in the last 50 ms) than
  the batch and the queue account for, the batch lets the event loop run a
  few turns (``PEEK_TURNS``, microseconds each) before it goes, so requests
  sitting unread in other connections' sockets are read and join it. Under
  load from many clients this is what makes batches form at all: the loop
  reads one socket per callback, and without it each batch would leave
  with the one request read so far. With one active client it costs nothing.
- While one batch runs, the next one gathers; under load batches grow by
  themselves up to ``max_batch_size``.
- If a batched ``predict`` fails, each request of the batch is retried on its
  own, so one bad request fails alone.

Both run a *fast predict inline* (:class:`InlinePolicy`): when nothing else
is queued, running or being read (for the batcher: and no other client is
active, whose request could join a batch), and this predictor's recent calls
took under ``inline_max`` seconds each (measured over at least
``InlinePolicy.WARMUP`` calls; a new or reloaded predictor starts in the
thread pool), ``predict`` runs on the event loop thread itself. At
concurrency 1 the hop to a pool thread and back (two thread wake-ups and
two event-loop turns, ~0.1-0.2 ms) costs as much as a small model's
``predict``; inline, a request is read, predicted and answered in one turn.
The price: while it runs (under ``inline_max``, 1 ms by default) the server
reads nothing else, exactly as if the pool thread held the GIL, which a
pure-Python or small numpy ``predict`` does anyway. A slow call (a
``time.sleep``, I/O, a big input) raises the average, and later calls go
back to the pool until fast calls bring it down again; requests with more
instances than usual are estimated in proportion. A gathered batch whose
estimate is under ``inline_max`` is predicted on the loop too: batching
then saves the per-request model call without adding a thread hop. ``inline_max = 0`` turns
this off (every call in the pool).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Executor
from typing import Callable

import numpy as np

from .protocol import Work

#: Work keys that never share a batch: several named inputs, or a predictor with ``batchable = False``.
UNBATCHABLE = ("dict", "solo")


class BatchMismatch(RuntimeError):
    """``predict`` returned a number of outputs other than the number of instances."""


def _concat(payloads: list):
    if isinstance(payloads[0], np.ndarray):
        return np.concatenate(payloads)
    out = []
    for p in payloads:
        out.extend(p)
    return out


def _split(outputs, counts: list[int]) -> list:
    if isinstance(outputs, dict) or not hasattr(outputs, "__len__"):
        raise BatchMismatch(f"predict returned {type(outputs).__name__}, expected one output per instance")
    total = sum(counts)
    if len(outputs) != total:
        raise BatchMismatch(f"predict returned {len(outputs)} outputs for {total} instances")
    parts, start = [], 0
    for n in counts:
        parts.append(outputs[start:start + n])
        start += n
    return parts


class InlinePolicy:
    """When a lone request may call ``predict`` on the event loop: see the module docstring.

    ``record`` sees every one-request call (in the pool or inline) with its
    duration measured around ``predict`` alone; the averages are
    exponentially weighted (recent calls count most) and start over when the
    predict function changes (a reload).
    """

    WARMUP = 8  # calls measured before any is inlined
    ALPHA = 0.25

    __slots__ = ("max_seconds", "predict", "calls", "seconds", "instances")

    def __init__(self, max_seconds: float):
        self.max_seconds = max_seconds
        self.predict = None
        self.calls = 0
        self.seconds = 0.0
        self.instances = 1.0

    def allows(self, predict, count: int) -> bool:
        if predict is not self.predict or self.calls < self.WARMUP:
            return False
        estimate = self.seconds * (count / self.instances if count > self.instances else 1.0)
        return estimate < self.max_seconds

    def record(self, predict, count: int, seconds: float) -> None:
        if predict is not self.predict:
            self.predict, self.calls, self.seconds, self.instances = predict, 0, seconds, float(max(count, 1))
        a = self.ALPHA
        self.seconds += a * (seconds - self.seconds)
        self.instances += a * (max(count, 1) - self.instances)
        self.calls += 1


def timed_predict_batch(predict, works: list[Work]) -> tuple[list[tuple[bool, object]], float]:
    """:func:`predict_batch` and the seconds it took, measured where it runs."""
    t0 = time.perf_counter()
    results = predict_batch(predict, works)
    return results, time.perf_counter() - t0


def predict_batch(predict, works: list[Work]) -> list[tuple[bool, object]]:
    """Run ``predict`` on the stacked payloads of ``works`` (in a worker thread).

    Returns ``(ok, outputs or exception)`` per work. A failed batch of more
    than one is retried one work at a time, so an error belongs to its request.
    """
    if len(works) == 1:
        try:
            return [(True, predict(works[0].payload))]
        except Exception as e:
            return [(False, e)]
    try:
        outputs = predict(_concat([w.payload for w in works]))
        return [(True, part) for part in _split(outputs, [w.count for w in works])]
    except Exception:
        return [predict_batch(predict, [w])[0] for w in works]


#: What :meth:`Runner.try_now` / :meth:`Batcher.try_now` return when the request must go through :meth:`submit`.
LATER = object()


class Runner:
    """Batching off: each request's ``predict`` in the pool, concurrently (a fast one inline when idle)."""

    def __init__(self, executor: Executor, metrics, *, inline_max: float = 0.0, arriving: Callable[[], int] = lambda: 0):
        self.executor = executor
        self.metrics = metrics
        self.inline = InlinePolicy(inline_max)
        self.arriving = arriving
        self.running = 0  # calls in the pool now

    def try_now(self, predict, work: Work):
        """``(ok, outputs or exception)`` when ``predict`` may run inline now (it has), else LATER."""
        if self.running or self.arriving() or not self.inline.allows(predict, work.count):
            return LATER
        (result,), seconds = timed_predict_batch(predict, [work])
        self.inline.record(predict, work.count, seconds)
        self.metrics.observe_batch(1, work.count, seconds)
        return result

    async def submit(self, predict, work: Work):
        result = self.try_now(predict, work)
        if result is LATER:
            loop = asyncio.get_running_loop()
            self.running += 1
            try:
                (result,), seconds = await loop.run_in_executor(self.executor, timed_predict_batch, predict, [work])
            finally:
                self.running -= 1
            self.inline.record(predict, work.count, seconds)
            self.metrics.observe_batch(1, work.count, seconds)
        ok, value = result
        if not ok:
            raise value
        return value

    async def close(self):
        pass


class _Pending:
    __slots__ = ("work", "predict", "future", "t0")

    def __init__(self, work: Work, predict, future: asyncio.Future):
        self.work = work
        self.predict = predict
        self.future = future
        self.t0 = time.monotonic()


class Batcher:
    """Batching on: see the module docstring."""

    #: Event-loop turns a batch lets run for requests sent on other connections but not yet read.
    PEEK_TURNS = 2

    def __init__(self, executor: Executor, metrics, *, max_batch_size: int, max_latency: float,
                 arriving: Callable[[], int] = lambda: 0, inline_max: float = 0.0,
                 peers: Callable[[], int] = lambda: 0):
        self.executor = executor
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.arriving = arriving
        self.peers = peers
        self.inline = InlinePolicy(inline_max)
        self._active = False  # a batch is being gathered or predicted
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # introspection: batches sent, and requests in them
        self.batched_requests = 0

    def try_now(self, predict, work: Work):
        """``(ok, outputs or exception)`` when ``predict`` may run inline now (it has), else LATER.

        Only on an idle batcher (nothing queued, gathering or running, nothing
        being read that could join): then this request would be a batch of
        one sent at once anyway, and one call at a time still holds.
        """
        if (self._active or self._queue or self.arriving() or self.peers() > 1
                or not self.inline.allows(predict, work.count)):
            return LATER
        (result,), seconds = timed_predict_batch(predict, [work])
        self.inline.record(predict, work.count, seconds)
        self.metrics.observe_batch(1, work.count, seconds)
        self.batches += 1
        self.batched_requests += 1
        return result

    async def submit(self, predict, work: Work):
        result = self.try_now(predict, work)
        if result is not LATER:
            ok, value = result
            if not ok:
                raise value
            return value
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run())
        pending = _Pending(work, predict, loop.create_future())
        self._queue.append(pending)
        self._wake()
        return await pending.future

    def notify(self) -> None:
        """Something changed for a waiting batch (a request arrived, or failed before reaching the batcher)."""
        self._wake()

    def _wake(self):
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(self, timeout: float | None):
        """Until a request arrives (or ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        self._wakeup = wakeup = loop.create_future()
        timer = loop.call_later(timeout, self._wake) if timeout is not None else None
        try:
            await wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _take(self, batch: list[_Pending], size: int) -> int:
        """Move waiting requests that fit the batch from the queue into it; returns the new size."""
        first = batch[0]
        skipped = []
        while self._queue and size < self.max_batch_size:
            p = self._queue.popleft()
            if p.work.key != first.work.key or p.predict != first.predict or size + p.work.count > self.max_batch_size:
                skipped.append(p)
                continue
            batch.append(p)
            size += p.work.count
        self._queue.extendleft(reversed(skipped))
        return size

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                await self._wait(None)
            first = self._queue.popleft()
            if first.future.done():  # cancelled (client went away)
                continue
            self._active = True
            try:
                await self._send(loop, first)
            finally:
                self._active = False

    async def _send(self, loop, first: _Pending):
        """Gather a batch starting with ``first``, predict it, answer its requests."""
        batch = [first]
        size = first.work.count
        if first.work.key[0] not in UNBATCHABLE:
            size = self._take(batch, size)
            turns = 0
            while size < self.max_batch_size:
                remaining = first.t0 + self.max_latency - time.monotonic()
                if remaining <= 0:
                    break
                if self.arriving() > 0:
                    await self._wait(remaining)
                elif turns < self.PEEK_TURNS and self.peers() > len(batch) + len(self._queue):
                    turns += 1
                    await asyncio.sleep(0)  # let the loop read what other connections have sent
                else:
                    break
                size = self._take(batch, size)
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        t0 = time.perf_counter()
        count = sum(p.work.count for p in batch)
        try:
            if self.inline.allows(first.predict, count):
                # A fast predict: on the loop, as for a lone request (no thread hop per batch).
                results, seconds = timed_predict_batch(first.predict, [p.work for p in batch])
            else:
                results, seconds = await loop.run_in_executor(self.executor, timed_predict_batch, first.predict,
                                                              [p.work for p in batch])
        except BaseException as e:  # the executor itself failed (shut down): fail the batch
            results, seconds = [(False, e)] * len(batch), time.perf_counter() - t0
        else:
            self.inline.record(first.predict, count, seconds)
        self.metrics.observe_batch(len(batch), count, seconds)
        self.batches += 1
        self.batched_requests += len(batch)
        for p, (ok, value) in zip(batch, results):
            if p.future.done():
                continue
            if ok:
                p.future.set_result(value)
            else:
                p.future.set_exception(value)

    async def close(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
