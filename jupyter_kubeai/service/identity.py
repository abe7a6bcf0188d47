"""Who is asking: the caller's hub identity, groups and admin flag.

A request proves who it is to the hub (a hub API token in the
``Authorization`` header, or the OAuth cookie set by this service's login);
``HubOAuth`` resolves that to a name and checks the token may access this
service (``access:services!service=kubeai``). The caller's groups and admin
flag are then read with the service's own token (:class:`HubDirectory`), so
they are fresh even while the hub's token cache is not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..errors import Unavailable


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    name: str
    kind: str = "user"  # "user" or "service"
    admin: bool = False
    groups: tuple[str, ...] = field(default_factory=tuple)
    #: The user's running servers: server name ("" for the default) -> its user_options.
    servers: tuple[tuple[str, dict], ...] = field(default_factory=tuple, compare=False)

    def in_group(self, group: str) -> bool:
        return group in self.groups

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "admin": self.admin,
            "groups": list(self.groups),
        }


class HubDirectory:
    """Reads user models from the hub API, caching each for ``ttl`` seconds.

    The service's token needs ``read:users`` (``jupyter_kubeai.hubconfig``
    grants it). A group change or a new admin shows within ``ttl`` seconds.
    """

    def __init__(self, api_url: str, api_token: str, ttl: float = 10.0):
        self.api_url = api_url.rstrip("/")
        self.api_token = api_token
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Identity]] = {}

    async def identify(self, model: dict) -> Identity:
        """Turn a HubAuth model (``name``, ``kind``) into an :class:`Identity`."""
        name = model["name"]
        if model.get("kind", "user") != "user":
            return Identity(name=name, kind=model.get("kind", "service"))
        cached = self._cache.get(name)
        now = time.monotonic()
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        user = await self._fetch_user(name)
        identity = Identity(
            name=user["name"],
            admin=bool(user.get("admin", False)),
            groups=tuple(sorted(user.get("groups") or ())),
            servers=tuple(
                (server_name, server.get("user_options") or {})
                for server_name, server in sorted((user.get("servers") or {}).items())
            ),
        )
        self._cache[name] = (now, identity)
        return identity

    async def _fetch_user(self, name: str) -> dict:
        return await self._get(f"/users/{quote(name, safe='')}", f"a lookup of user {name!r}")

    async def running_servers(self) -> list[dict]:
        """Every running server's model (with its ``user_options``), all pages."""
        servers, offset = [], 0
        while True:
            page = await self._get(
                f"/users?state=active&offset={offset}&limit=200",
                "the list of running servers",
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            for user in page["items"]:
                servers.extend((user.get("servers") or {}).values())
            following = (page.get("_pagination") or {}).get("next")
            if not following:
                return servers
            offset = following["offset"]

    async def _get(self, path: str, what: str, headers: dict | None = None) -> dict:
        try:
            response = await AsyncHTTPClient().fetch(
                self.api_url + path,
                headers={"Authorization": f"token {self.api_token}", **(headers or {})},
                request_timeout=10,
            )
        except (HTTPClientError, OSError) as e:
            raise Unavailable(
                f"The hub API did not answer {what} ({e}); check that the hub is "
                "running and that the kubeai service's role grants read:users and read:servers."
            ) from e
        return json.loads(response.body)
