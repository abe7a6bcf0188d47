"""A fake JupyterHub API at the HTTP boundary, for in-process service tests.

It answers the two calls the kubeai service makes to the hub: ``GET
/hub/api/user`` (whose is this token, with which scopes: what HubAuth asks)
and ``GET /hub/api/users/<name>`` (groups and admin flag, asked with the
service's own token). The end-to-end tests use the real hub instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tornado import web

SERVICE_TOKEN = "service-token-0123456789"
ACCESS = "access:services!service=kubeai"


@dataclass
class FakeHubState:
    # token -> (user name, scopes)
    tokens: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    # user name -> {"admin": bool, "groups": [...]}
    users: dict[str, dict] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    down: bool = False

    def add_user(self, name, *, admin=False, groups=(), token=None, scopes=(ACCESS,)):
        self.users[name] = {"name": name, "admin": admin, "groups": list(groups), "kind": "user", "servers": {}}
        if token:
            self.tokens[token] = (name, list(scopes))


class _Base(web.RequestHandler):
    def initialize(self, state: FakeHubState):
        self.state = state

    def prepare(self):
        self.state.calls.append(f"{self.request.method} {self.request.path}")
        if self.state.down:
            raise web.HTTPError(503)

    def token(self) -> str:
        header = self.request.headers.get("Authorization", "")
        return header.split(" ", 1)[1] if " " in header else ""


class WhoAmI(_Base):
    def get(self):
        owner = self.state.tokens.get(self.token())
        if owner is None:
            raise web.HTTPError(403)
        name, scopes = owner
        self.finish(json.dumps({"kind": "user", "name": name, "scopes": scopes, "groups": []}))


class UserList(_Base):
    """``GET /hub/api/users?state=active``, paginated as the real hub does."""

    def get(self):
        if self.token() != SERVICE_TOKEN:
            raise web.HTTPError(403)
        active = [u for u in self.state.users.values() if u["servers"]]
        offset, limit = int(self.get_argument("offset", "0")), int(self.get_argument("limit", "200"))
        page = active[offset : offset + limit]
        following = {"offset": offset + limit} if offset + limit < len(active) else None
        self.finish(json.dumps({"items": page, "_pagination": {"offset": offset, "limit": limit, "next": following}}))


class UserModel(_Base):
    def get(self, name):
        if self.token() != SERVICE_TOKEN:
            raise web.HTTPError(403)
        if name not in self.state.users:
            raise web.HTTPError(404)
        self.finish(json.dumps(self.state.users[name]))


def make_fake_hub(state: FakeHubState) -> web.Application:
    return web.Application(
        [
            (r"/hub/api/user", WhoAmI, {"state": state}),
            (r"/hub/api/users", UserList, {"state": state}),
            (r"/hub/api/users/([^/]+)", UserModel, {"state": state}),
        ]
    )
