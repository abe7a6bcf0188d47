"""A shared watch cache: one list+watch per resource, answered from memory.

A :class:`Reflector` keeps every object of one resource in one namespace
(under a label or field selector) current: it lists once, then watches from
the list's resourceVersion; when the server says the version is too old
(410 Gone, as an HTTP status or an ``ERROR`` event) it lists again, and on
any other failure it reconnects with exponential backoff. Readers
(status, replicas, events of every job, for every poller) read its dicts and
make no request, so API traffic does not grow with pollers
(the model is KubeSpawner's ``reflector.py``, without its per-kind classes).

Deleted objects are remembered for a while (``gone``): a job whose object
the operator's TTL removed still reports how it ended. That memory ends with
the process; what outlives it is the job's record (the service stores each
end as soon as a reflector reports a change: :meth:`Reflector.wait_for_change`)
and the exit statuses the replicas leave in the job folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable

from .client import ApiError, KubeClient, path_for
from .training import Kind

log = logging.getLogger(__name__)


class Expired(Exception):
    """The watch's resourceVersion is too old: list again."""


class Reflector:
    """The objects of one resource in one namespace, kept current by a list and a watch."""

    def __init__(self, client: KubeClient, kind: Kind, namespace: str, *, label_selector: str = "",
                 field_selector: str = "", keep: Callable[[dict], bool] | None = None,
                 index: Callable[[dict], str | None] | None = None, max_objects: int = 0,
                 timeout_seconds: int = 300, backoff: tuple[float, float] = (0.5, 30.0), max_gone: int = 2000):
        self.client, self.kind, self.namespace = client, kind, namespace
        self.label_selector, self.field_selector = label_selector, field_selector
        self.keep = keep
        self.index_key = index
        self.max_objects = max_objects  # 0: no limit; else the oldest are dropped (events)
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff
        self.max_gone = max_gone
        self.objects: dict[str, dict] = {}
        self.index: dict[str, dict[str, dict]] = {}
        self.gone: OrderedDict[str, dict] = OrderedDict()
        self.synced = asyncio.Event()
        self.lists = 0  # how many times it listed (1 + resyncs)
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    # --- reading -----------------------------------------------------------------------------------

    def get(self, name: str) -> dict | None:
        return self.objects.get(name)

    def indexed(self, key: str) -> list[dict]:
        return list(self.index.get(key, {}).values())

    async def wait_for_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, wait: float | None = 10) -> None:
        """Start following; wait (at most ``wait`` seconds) for the first list."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"reflector-{self.kind.plural}")
        if wait:
            try:
                await asyncio.wait_for(self.synced.wait(), wait)
            except TimeoutError:
                log.warning("The first list of %s took over %ss; it goes on in the background.", self.kind.plural, wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # --- writing (from the API, or from our own create) --------------------------------------------

    def upsert(self, obj: dict) -> None:
        """Store ``obj`` unless the cache holds a newer version (our own create answers go here too)."""
        if self.keep is not None and not self.keep(obj):
            return
        name = obj["metadata"]["name"]
        current = self.objects.get(name)
        if current is not None and _rv(current) > _rv(obj):
            return
        if current is not None:
            self._unindex(current)
        self.objects[name] = obj
        self.gone.pop(name, None)
        if self.index_key is not None and (key := self.index_key(obj)) is not None:
            self.index.setdefault(key, {})[name] = obj
        if self.max_objects and len(self.objects) > self.max_objects:
            oldest = next(iter(self.objects))
            self._unindex(self.objects.pop(oldest))
        self._notify()

    def remove(self, obj: dict) -> None:
        name = obj["metadata"]["name"]
        current = self.objects.pop(name, None)
        if current is not None:
            self._unindex(current)
        self.gone[name] = obj
        while len(self.gone) > self.max_gone:
            self.gone.popitem(last=False)
        self._notify()

    def _unindex(self, obj: dict) -> None:
        if self.index_key is not None and (key := self.index_key(obj)) is not None:
            bucket = self.index.get(key, {})
            bucket.pop(obj["metadata"]["name"], None)
            if not bucket:
                self.index.pop(key, None)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the loop ----------------------------------------------------------------------------------

    def _query(self) -> dict:
        return {"labelSelector": self.label_selector or None, "fieldSelector": self.field_selector or None}

    async def _list(self) -> str:
        found = await self.client.request("GET", path_for(self.kind, self.namespace), query=self._query())
        self.lists += 1
        items = {item["metadata"]["name"]: item for item in found.get("items") or []}
        for name, obj in list(self.objects.items()):
            if name not in items:
                self.remove(obj)
        for item in items.values():
            item.setdefault("apiVersion", self.kind.api_version)
            item.setdefault("kind", self.kind.kind)
            self.upsert(item)
        self.synced.set()
        self._notify()
        return found.get("metadata", {}).get("resourceVersion", "")

    async def _watch(self, rv: str) -> str:
        query = {**self._query(), "watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(self.timeout_seconds)}
        try:
            async for line in self.client.stream(path_for(self.kind, self.namespace), query=query,
                                                 timeout=self.timeout_seconds + 30):
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise ApiError(obj.get("code", 500), obj.get("reason", ""), obj.get("message", ""))
                rv = obj.get("metadata", {}).get("resourceVersion") or rv
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.remove(obj)
                else:
                    self.upsert(obj)
        except ApiError as e:
            if e.status == 410:
                raise Expired() from None
            raise
        return rv

    async def _run(self) -> None:
        delay = self.backoff[0]
        rv = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                if rv is None:
                    rv = await self._list()
                started, since = loop.time(), rv
                rv = await self._watch(rv)
                if rv == since and loop.time() - started < min(1.0, self.timeout_seconds):
                    # Closed at once with nothing in it (a proxy or a restarting API server
                    # dropping watches): resume, but not in a tight loop.
                    log.info("The watch of %s ended at once; resuming in %.1fs.", self.kind.plural, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff[1])
                else:
                    delay = self.backoff[0]
            except asyncio.CancelledError:
                raise
            except Expired:
                # The history we would resume from is gone: what changed meanwhile (deletions
                # included) is only in a fresh list, whose resourceVersion the next watch starts at.
                log.info("The watch of %s expired; listing again.", self.kind.plural)
                rv = None
            except Exception as e:  # the API is away or failing: retry, slower each time
                log.warning("Watching %s failed (%s); retrying in %.1fs.", self.kind.plural, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])


def _rv(obj: dict) -> int:
    """resourceVersion as a number (opaque by contract, an etcd revision in practice)."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0
