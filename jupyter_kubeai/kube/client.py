"""``KubeClient``: one small REST client for every kind, on kubernetes_asyncio's connection.

Custom resources are data (:class:`~.training.Kind`), so create, get, list,
watch, patch and delete are written once, by path, for all of them and for
pods and events alike; objects stay plain dicts (the builders' output, the
watch cache's content). kubernetes_asyncio still does what is hard:
configuration (in-cluster, else kubeconfig, as KubeSpawner loads it),
authentication and TLS.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import quote

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

from .training import Kind

POD = Kind("", "v1", "pods", "Pod")
EVENT = Kind("", "v1", "events", "Event")


class ApiError(Exception):
    """An error answer of the API server (a ``Status``)."""

    def __init__(self, status: int, reason: str = "", message: str = ""):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


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
    """Requests by path with dict bodies; errors as :class:`ApiError`."""

    def __init__(self, api_client: ApiClient, request_timeout: float = 30):
        self.api_client = api_client
        self.request_timeout = request_timeout

    @classmethod
    async def connect(cls, request_timeout: float = 30) -> KubeClient:
        return cls(ApiClient(await load_configuration()), request_timeout)

    async def close(self) -> None:
        await self.api_client.close()

    async def _send(self, method: str, path: str, query: dict | None, body, content_type: str, timeout):
        response = await self.api_client.call_api(
            path, method,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Content-Type": content_type, "Accept": "application/json, */*"},
            body=body, auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout,
        )
        if response.status >= 400:
            text = await response.text()
            response.release()
            try:
                status = json.loads(text)
            except ValueError:
                status = {"message": text}
            raise ApiError(response.status, status.get("reason", ""), status.get("message", ""))
        return response

    async def request(self, method: str, path: str, *, query: dict | None = None, body=None,
                      content_type: str = "application/json") -> dict:
        response = await self._send(method, path, query, body, content_type, self.request_timeout)
        try:
            return await response.json(content_type=None)
        finally:
            response.release()

    async def text(self, path: str, *, query: dict | None = None) -> str:
        response = await self._send("GET", path, query, None, "application/json", self.request_timeout)
        try:
            return await response.text(errors="replace")
        finally:
            response.release()

    async def stream(self, path: str, *, query: dict | None = None, timeout: float | None = None) -> AsyncIterator[bytes]:
        """The response body line by line, as it comes (watches, followed logs)."""
        response = await self._send("GET", path, query, None, "application/json", timeout)
        try:
            while line := await response.content.readline():
                yield line
        finally:
            response.release()

    # --- objects ----------------------------------------------------------------------------------

    async def create(self, kind: Kind, namespace: str, body: dict) -> dict:
        return await self.request("POST", path_for(kind, namespace), body=body)

    async def get(self, kind: Kind, namespace: str, name: str) -> dict:
        return await self.request("GET", path_for(kind, namespace, name))

    async def replace(self, kind: Kind, namespace: str, name: str, body: dict) -> dict:
        return await self.request("PUT", path_for(kind, namespace, name), body=body)

    async def delete(self, kind: Kind, namespace: str, name: str, propagation: str = "Background") -> dict:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        return await self.request("DELETE", path_for(kind, namespace, name), body=body)

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
