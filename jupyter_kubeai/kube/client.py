"""``KubeClient``: one small REST client for every kind, on kubernetes_asyncio's connection.

Custom resources are data (:class:`~.training.Kind`), so create, get, list,
watch, patch and delete are written once, by path, for all of them and for
pods and events alike; objects stay plain dicts (the builders' output, the
watch cache's content). kubernetes_asyncio still does what is hard:
configuration (in-cluster, else kubeconfig, as KubeSpawner loads it),
authentication and TLS.

Faults (see :class:`KubeClient`): a 5xx, a 429, a timeout or a dropped
connection is retried with exponential backoff for requests that are safe to
repeat (reads, deletes by name, patches, and creates by a fixed name, whose
"already exists" after a lost answer is checked to be our own object); what
is still failing after the retries is an :class:`ApiError` whose
``uncertain`` says the server may have applied it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

from .training import Kind

POD = Kind("", "v1", "pods", "Pod")
EVENT = Kind("", "v1", "events", "Event")
#: Server-side apply: the body is the whole intent of ``FIELD_MANAGER`` (JSON is YAML).
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "jupyter-kubeai"
#: Answers that say "try again": throttled, or the server (or a proxy before it) failed or timed out.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

log = logging.getLogger(__name__)
T = TypeVar("T")


class ApiError(Exception):
    """An error answer of the API server (a ``Status``), or no answer at all (``status`` 503).

    ``uncertain``: the request may have been applied although no success came
    back (a 5xx, a timeout, a dropped connection): a create may have created.
    """

    def __init__(self, status: int, reason: str = "", message: str = "", *, uncertain: bool | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.uncertain = status in RETRY_STATUSES and status != 429 if uncertain is None else uncertain

    @property
    def retriable(self) -> bool:
        return self.status in RETRY_STATUSES


def _unreachable(e: BaseException) -> ApiError:
    """A request that got no answer: the server may or may not have applied it."""
    what = "no answer in time" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}".rstrip(": ")
    return ApiError(503, "Unreachable", f"the API server did not answer ({what})", uncertain=True)


def is_ours(existing: dict, sent: dict) -> bool:
    """Whether ``existing`` is the object ``sent`` made: every label we set, with our value.

    Labels carry what makes our objects unique (the job id, service name,
    owner, version): an object of the same name made by someone else, or by
    an earlier use of the name, differs in them.
    """
    want = (sent.get("metadata") or {}).get("labels") or {}
    have = (existing.get("metadata") or {}).get("labels") or {}
    return bool(want) and all(have.get(k) == v for k, v in want.items())


async def load_configuration() -> Configuration:
    """In-cluster when running in a pod, else the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``).

    kubernetes_asyncio reads the kubeconfig location once, at import; it is
    looked up here at call time, so tests can point it elsewhere.
    """
    configuration = Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)
    except kube_config.ConfigException:
        path = kube_config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION
        await kube_config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


def path_for(kind: Kind, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{kind.plural}"
    if name:
        base += f"/{quote(name, safe='')}"
    if subresource:
        base += f"/{subresource}"
    return base


class KubeClient:
    """Requests by path with dict bodies; errors as :class:`ApiError`.

    Requests safe to repeat are retried ``retries`` times on a retriable
    answer or no answer, waiting ``backoff[0]`` seconds, doubling up to
    ``backoff[1]``: reads, deletes (a repeated delete that finds nothing
    after a lost answer counts as done), patches (merge and apply patches set
    values, so applying one twice is applying it once) and :meth:`create`
    (by name: "already exists" after a lost answer is success when the object
    is ours, see :func:`is_ours`). A ``PUT`` is retried too: it carries the
    resourceVersion it read, so a repeat of an applied one is refused (409).
    """

    def __init__(self, api_client: ApiClient, request_timeout: float = 30, *, retries: int = 3,
                 backoff: tuple[float, float] = (0.25, 4.0)):
        self.api_client = api_client
        self.request_timeout = request_timeout
        self.retries = retries
        self.backoff = backoff

    @classmethod
    async def connect(cls, request_timeout: float = 30, **options) -> KubeClient:
        return cls(ApiClient(await load_configuration()), request_timeout, **options)

    async def close(self) -> None:
        await self.api_client.close()

    async def _send(self, method: str, path: str, query: dict | None, body, content_type: str, timeout):
        try:
            response = await self.api_client.call_api(
                path, method,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params={"Content-Type": content_type, "Accept": "application/json, */*"},
                body=body, auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
            raise _unreachable(e) from e
        if response.status >= 400:
            try:
                text = await response.text()
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                raise _unreachable(e) from e
            finally:
                response.release()
            try:
                status = json.loads(text)
            except ValueError:
                status = {"message": text}
            if not isinstance(status, dict):
                status = {"message": text}
            raise ApiError(response.status, str(status.get("reason") or ""), str(status.get("message") or ""))
        return response

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, again after a retriable failure, at most ``retries`` more times."""
        delay = self.backoff[0]
        for tries_left in range(self.retries, -1, -1):
            try:
                return await attempt()
            except ApiError as e:
                if not e.retriable or tries_left == 0:
                    raise
                log.warning("%s failed (%s %s: %s); retrying in %.2fs.", what, e.status, e.reason, e.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, query: dict | None, body, content_type: str) -> dict:
        response = await self._send(method, path, query, body, content_type, self.request_timeout)
        try:
            return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
            raise _unreachable(e) from e
        except ValueError as e:  # not JSON: a proxy's page, a truncated body
            raise ApiError(502, "BadResponse", f"the API server's answer is not JSON ({e})", uncertain=True) from e
        finally:
            response.release()

    async def request(self, method: str, path: str, *, query: dict | None = None, body=None,
                      content_type: str = "application/json", retry: bool | None = None) -> dict:
        """One request; retried (see the class) unless it is a ``POST`` or ``retry`` is False."""
        once = lambda: self._once(method, path, query, body, content_type)  # noqa: E731
        if retry is False or (retry is None and method == "POST"):
            return await once()
        return await self._retrying(f"{method} {path}", once)

    async def text(self, path: str, *, query: dict | None = None) -> str:
        async def once() -> str:
            response = await self._send("GET", path, query, None, "application/json", self.request_timeout)
            try:
                return await response.text(errors="replace")
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                raise _unreachable(e) from e
            finally:
                response.release()
        return await self._retrying(f"GET {path}", once)

    async def stream(self, path: str, *, query: dict | None = None, timeout: float | None = None) -> AsyncIterator[bytes]:
        """The response body line by line, as it comes (watches, followed logs).

        Not retried: the caller resumes where it was (a watch from its last
        resourceVersion). A connection that drops mid-stream raises an
        unreachable :class:`ApiError`, as one that never answered.
        """
        response = await self._send("GET", path, query, None, "application/json", timeout)
        try:
            while line := await response.content.readline():
                yield line
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
            raise _unreachable(e) from e
        finally:
            response.release()

    # --- objects ----------------------------------------------------------------------------------

    async def _after_loss(self, what: str, method: str, path: str, body,
                          settle: Callable[[ApiError], Awaitable[dict | None]]) -> dict:
        """``method path`` retried; once an attempt may have been applied unseen (a lost
        answer), a later attempt's error goes to ``settle``, whose dict (if any) is the result."""
        lost = False

        async def once() -> dict:
            nonlocal lost
            try:
                return await self._once(method, path, None, body, "application/json")
            except ApiError as e:
                if lost and (settled := await settle(e)) is not None:
                    return settled
                lost = lost or e.uncertain
                raise

        return await self._retrying(what, once)

    async def create(self, kind: Kind, namespace: str, body: dict) -> dict:
        """Create ``body`` (named: no ``generateName``), retried after a lost answer.

        When an earlier attempt got no answer, or a 5xx, the object may exist:
        the repeat's "already exists" (409) is then success, with the object
        as the server has it, if it is ours (:func:`is_ours`); else the 409
        stands, as it does when the first attempt gets it.
        """
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return await self.request("POST", path_for(kind, namespace), body=body)

        async def ours(e: ApiError) -> dict | None:
            if e.status != 409:
                return None
            existing = await self.get(kind, namespace, name)
            if not is_ours(existing, body):
                return None
            log.info("%s %s/%s was created by an attempt whose answer was lost.", kind.kind, namespace, name)
            return existing

        return await self._after_loss(f"create {kind.kind} {name}", "POST", path_for(kind, namespace), body, ours)

    async def get(self, kind: Kind, namespace: str, name: str) -> dict:
        return await self.request("GET", path_for(kind, namespace, name))

    async def replace(self, kind: Kind, namespace: str, name: str, body: dict) -> dict:
        return await self.request("PUT", path_for(kind, namespace, name), body=body)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: dict,
                    content_type: str = "application/merge-patch+json") -> dict:
        return await self.request("PATCH", path_for(kind, namespace, name), body=patch, content_type=content_type)

    async def apply(self, kind: Kind, namespace: str, body: dict, *, force: bool = True) -> dict:
        """Server-side apply of ``body`` (created when missing) as :data:`FIELD_MANAGER`.

        The server merges the fields ``body`` sets into the object and owns
        them for us; fields it defaulted or others set stay, so applying an
        unchanged intent again changes nothing (no new resourceVersion).
        ``force``: take over fields another manager set (ours is the intent).
        """
        query = {"fieldManager": FIELD_MANAGER, "force": "true" if force else None}
        return await self.request("PATCH", path_for(kind, namespace, body["metadata"]["name"]), query=query,
                                  body=body, content_type=APPLY_PATCH)

    async def delete(self, kind: Kind, namespace: str, name: str, propagation: str = "Background") -> dict:
        """Delete by name; a repeat that finds nothing after a lost answer counts as done (``{}``).

        404 (``ApiError``) when the object was not there, as far as this call
        can tell: aiohttp itself repeats an idempotent request once when a
        kept-alive connection drops, so a lost answer may come back as a 404
        unseen here. Callers that know the object was there (a watch cache)
        count it as deleted.
        """
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}

        async def gone(e: ApiError) -> dict | None:
            return {} if e.status == 404 else None

        return await self._after_loss(f"delete {kind.kind} {name}", "DELETE", path_for(kind, namespace, name), body, gone)

    async def delete_collection(self, kind: Kind, namespace: str, label_selector: str) -> dict:
        return await self.request("DELETE", path_for(kind, namespace), query={"labelSelector": label_selector})

    async def group_version_resources(self, group: str, version: str) -> set[str]:
        """The resources (plurals) the API serves in ``group/version``; empty when it serves none."""
        try:
            found = await self.request("GET", f"/apis/{group}/{version}" if group else f"/api/{version}")
        except ApiError as e:
            if e.status in (403, 404):
                return set()
            raise
        return {r.get("name", "") for r in found.get("resources", []) if "/" not in r.get("name", "/")}
