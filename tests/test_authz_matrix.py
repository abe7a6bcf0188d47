"""The authorization matrix: every operation x every kind of caller x a personal and a project item.

Generated from the service's own route table and OpenAPI document, checked
against :data:`EXPECT`, one rule per operation:

- ``public``: anyone; ``user``: any hub user; ``admin``: hub admins only;
- ``see``: the item's owner, its project's members and hub admins (anyone
  else: 404, as if it did not exist);
- ``change``: its owner and hub admins; a member who sees it gets 403
  naming who may; anyone else 404;
- ``create``: any user makes an item of their own; under a project only its
  members (anyone else: 400, "not in project");
- ``page``/``admin_page``: browser pages (no identity: to the hub's login).

A route added to the service without an entry here fails
:func:`test_every_route_has_an_expectation`, and one missing from the
OpenAPI document fails it too (unless it is listed in :data:`NOT_IN_DOCUMENT`).
The callers are alice (the owner of every item), bob (her teammate in
project ``vision``), dave (in no project), a hub admin in no project, and
no credentials at all. Jobs and services run nowhere (fakes named by what
they do); what runs is tested elsewhere.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import urllib.parse
from importlib.resources import files

import pytest
import yaml
from serviceapp import PREFIX, call, make_service
from test_job_api import InMemoryBackend
from test_models_api import RecordingServing, sklearn_file
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.service.app import KubeAIService

ACTORS = ("anonymous", "owner", "member", "outsider", "admin")
TOKENS = {"anonymous": None, "owner": "alice-token", "member": "bob-token", "outsider": "dave-token",
          "admin": "admin-token"}
SCOPES = ("personal", "project")
#: No credentials: 401 (a known caller who may not: 403).
ANONYMOUS = 401

#: (method, route template) -> (rule, the item it needs). Items: "job" (running), "ended-job", "model",
#: "version" (one to delete), "alias" (one to delete), "service", "new-service" (one to delete), "entry" (catalog).
EXPECT = {
    ("GET", ""): ("page", None),
    ("GET", "admin/"): ("admin_page", None),
    ("POST", "admin/"): ("admin_page", "entry"),
    ("GET", "api/me"): ("user", None),
    ("GET", "api/health"): ("public", None),
    ("GET", "api/ready"): ("public", None),
    ("GET", "metrics"): ("admin", None),
    ("GET", "api/openapi.json"): ("public", None),
    ("GET", "api/catalog"): ("user", None),
    ("GET", "api/admin/catalog"): ("admin", None),
    ("GET", "api/admin/doctor"): ("admin", None),
    ("GET", "api/admin/{collection}"): ("admin", None),
    ("POST", "api/admin/{collection}"): ("admin", None),
    ("GET", "api/admin/{collection}/{name}"): ("admin", "entry"),
    ("PUT", "api/admin/{collection}/{name}"): ("admin", "entry"),
    ("DELETE", "api/admin/{collection}/{name}"): ("admin", "entry"),
    ("GET", "api/jobs"): ("user", None),
    ("POST", "api/jobs"): ("create", None),
    ("GET", "api/jobs/{job_id}"): ("see", "job"),
    ("DELETE", "api/jobs/{job_id}"): ("change", "ended-job"),
    ("POST", "api/jobs/{job_id}/cancel"): ("change", "new-job"),
    ("POST", "api/jobs/{job_id}/resubmit"): ("change", "job"),
    ("GET", "api/jobs/{job_id}/events"): ("see", "job"),
    ("GET", "api/jobs/{job_id}/logs"): ("see", "job"),
    ("GET", "api/jobs/{job_id}/logs/{replica}"): ("see", "job"),
    ("GET", "api/jobs/{job_id}/metrics"): ("see", "job"),
    ("GET", "api/jobs/{job_id}/files"): ("see", "job"),
    ("GET", "api/jobs/{job_id}/files/{path}"): ("see", "job"),
    ("GET", "api/models"): ("user", None),
    ("POST", "api/models"): ("create", None),
    ("GET", "api/models/{model_id}"): ("see", "model"),
    ("GET", "api/models/{model_id}/versions/{version}"): ("see", "model"),
    ("PATCH", "api/models/{model_id}/versions/{version}"): ("change", "model"),
    ("DELETE", "api/models/{model_id}/versions/{version}"): ("change", "version"),
    ("PUT", "api/models/{model_id}/aliases/{alias}"): ("change", "model"),
    ("DELETE", "api/models/{model_id}/aliases/{alias}"): ("change", "alias"),
    ("GET", "api/services"): ("user", None),
    ("POST", "api/services"): ("see", "model"),  # deploying alice's model version: a service of one's own
    ("GET", "api/services/{service}"): ("see", "service"),
    ("PATCH", "api/services/{service}"): ("change", "service"),
    ("DELETE", "api/services/{service}"): ("change", "new-service"),
    ("POST", "api/services/{service}/rollback"): ("change", "service"),
    ("POST", "api/services/{service}/restart"): ("change", "service"),
    ("POST", "api/services/{service}/predict"): ("see", "service"),
    ("GET", "api/services/{service}/metadata"): ("see", "service"),
    ("GET", "serve/{service}/{path}"): ("see", "service"),
    ("POST", "serve/{service}/{path}"): ("see", "service"),
}

#: Routes the OpenAPI document leaves out, and why.
NOT_IN_DOCUMENT = {
    "": "the service's home page (HTML)",
    "admin/": "the admin page (HTML form)",
    "metrics": "Prometheus text exposition",
    "serve/{service}/{path}": "the model server's own API, passed through",
    "oauth_callback": "JupyterHub's OAuth login",
}
#: Not API operations: the hub's OAuth protocol, tested with the real hub in the end-to-end tests.
NOT_IN_MATRIX = {"oauth_callback"}

METHODS = ("get", "post", "put", "patch", "delete")


def service_operations() -> set[tuple[str, str]]:
    """(METHOD, route) for every method a route's handler defines."""
    ops = set()
    for route, handler in KubeAIService().routes():
        for method in METHODS:
            if getattr(handler, method) is not getattr(web.RequestHandler, method):
                ops.add((method.upper(), route))
    return ops


def document_operations() -> set[tuple[str, str]]:
    doc = yaml.safe_load(files("jupyter_kubeai.service").joinpath("openapi.yaml").read_text())
    return {(method.upper(), path.lstrip("/")) for path, item in doc["paths"].items() for method in item
            if method in METHODS}


def test_every_route_has_an_expectation():
    ops = {op for op in service_operations() if op[1] not in NOT_IN_MATRIX}
    missing = sorted(ops - set(EXPECT))
    assert not missing, f"routes without an entry in the authorization matrix's EXPECT: {missing}"
    stale = sorted(set(EXPECT) - ops)
    assert not stale, f"EXPECT names operations the service does not have: {stale}"
    documented = document_operations()
    undocumented = sorted(op for op in ops if op not in documented and op[1] not in NOT_IN_DOCUMENT)
    assert not undocumented, f"operations missing from openapi.yaml: {undocumented}"
    assert not sorted(documented - ops), "openapi.yaml documents operations the service does not have"


# --- what each rule expects --------------------------------------------------------------------------

OK, FORBIDDEN, HIDDEN, INVALID, LOGIN = "2xx", 403, 404, 400, 302


def expected(rule: str, actor: str, scope: str):
    if rule == "public":
        return OK
    if rule in ("page", "admin_page"):
        if actor == "anonymous":
            return LOGIN
        return FORBIDDEN if rule == "admin_page" and actor != "admin" else OK
    if actor == "anonymous":
        return ANONYMOUS
    if rule == "user":
        return OK
    if rule == "admin":
        return OK if actor == "admin" else FORBIDDEN
    sees = actor in ("owner", "admin") or (actor == "member" and scope == "project")
    if rule == "see":
        return OK if sees else HIDDEN
    if rule == "change":
        return OK if actor in ("owner", "admin") else FORBIDDEN if sees else HIDDEN
    if rule == "create":
        return OK if scope == "personal" or actor in ("owner", "member") else INVALID
    raise AssertionError(rule)


# --- the world: items alice owns, in her own name and in project vision ---------------------------------


class EchoServing(RecordingServing):
    """Every service answers at ``url``: a model server that says 200 to anything."""

    url = ""

    async def status(self, name):
        status = await super().status(name)
        return dataclasses.replace(status, url=self.url) if name in self.running else status

    async def restart(self, name):
        return {"url": f"http://fake/{name}"}


class Echo(web.RequestHandler):
    def get(self, path):
        self.finish({"name": "echo", "versions": ["1"], "platform": "custom", "inputs": [], "outputs": []})

    post = get


class World:
    """alice's items per scope, and makers of fresh ones for the operations that use one up."""

    def __init__(self, url: str, share):
        self.url, self.share = url, share
        self.count = itertools.count()
        self.items: dict[str, dict] = {}

    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self.count)}"

    async def as_alice(self, method, path, body=None, expect=(200, 201, 204)):
        code, answer = await call(self.url + path, "alice-token", method=method,
                                  body=json.dumps(body) if body is not None else None)
        assert code in expect, (method, path, code, answer)
        return answer

    def project(self, scope):
        return "vision" if scope == "project" else None

    async def job(self, scope) -> str:
        job_id = self.unique("job")
        await self.as_alice("POST", "api/jobs", {"job_id": job_id, "name": "m", "framework": "single",
                                                 "project": self.project(scope)})
        folder = self.share / "users/alice/.kubeai/jobs" / job_id
        sklearn_file(folder / "outputs/model.txt", b"weights")
        (folder / "metrics.jsonl").write_text('{"time": 1, "step": 0, "rank": 0, "values": {"loss": 0.5}}\n')
        return job_id

    async def model(self, scope) -> tuple[int, int]:
        body = {"name": self.unique("model"), "project": self.project(scope), "path": "m.joblib"}
        answer = await self.as_alice("POST", "api/models", body)
        for _ in range(2):
            await self.as_alice("POST", "api/models", body)
        model_id = answer["model"]["id"]
        await self.as_alice("PUT", f"api/models/{model_id}/aliases/production", {"version": 1})
        return model_id, answer["version"]["version"]

    async def service(self, scope, model_id) -> str:
        name = self.unique("svc")
        await self.as_alice("POST", "api/services", {"name": name, "model_id": model_id, "version": 1})
        await self.as_alice("PATCH", f"api/services/{name}", {"version": 2})  # something to roll back to
        return name

    async def setup(self):
        for scope in SCOPES:
            model_id, _ = await self.model(scope)
            self.items[scope] = {"job": await self.job(scope), "model": model_id,
                                 "service": await self.service(scope, model_id)}

    async def values(self, item, scope) -> dict:
        """Path parameters (and a body) for one case, making a fresh item where the operation uses one up."""
        shared = self.items[scope]
        values = {"job_id": shared["job"], "replica": "main", "path": "outputs/model.txt",
                  "model_id": shared["model"], "version": 1, "alias": "production",
                  "service": shared["service"], "collection": "images", "name": "base"}
        if item == "new-job":
            values["job_id"] = await self.job(scope)
        elif item == "ended-job":
            values["job_id"] = await self.job(scope)
            await self.as_alice("POST", f"api/jobs/{values['job_id']}/cancel", {})
        elif item == "version":
            answer = await self.as_alice("POST", "api/models", {
                "name": (await self.as_alice("GET", f"api/models/{shared['model']}"))["name"],
                "project": self.project(scope), "path": "m.joblib"})
            values["version"] = answer["version"]["version"]
        elif item == "alias":
            values["alias"] = self.unique("tmp")
            await self.as_alice("PUT", f"api/models/{shared['model']}/aliases/{values['alias']}", {"version": 1})
        elif item == "new-service":
            values["service"] = await self.service(scope, shared["model"])
        elif item == "entry":
            values["name"] = self.unique("img")
            await call(self.url + "api/admin/images", "admin-token", method="POST",
                       body=json.dumps({"name": values["name"], "image": "python:3.12"}))
        return values


def body_for(method: str, route: str, values: dict, world: World, scope: str) -> dict | None:
    project = world.project(scope)
    bodies = {
        ("POST", "api/jobs"): {"job_id": world.unique("made"), "name": "n", "framework": "single", "project": project},
        ("POST", "api/models"): {"name": world.unique("made"), "project": project, "path": "m.joblib"},
        ("POST", "api/services"): {"name": world.unique("made"), "model_id": values["model_id"], "version": 1},
        ("PATCH", "api/services/{service}"): {"replicas": 2},
        ("PATCH", "api/models/{model_id}/versions/{version}"): {"tags": {"checked": "yes"}},
        ("PUT", "api/models/{model_id}/aliases/{alias}"): {"version": 2},
        ("POST", "api/services/{service}/predict"): {"instances": [[1.0]]},
        ("POST", "api/admin/{collection}"): {"name": world.unique("img"), "image": "python:3.12"},
        ("PUT", "api/admin/{collection}/{name}"): {"name": values["name"], "image": "python:3.13"},
    }
    if (method, route) in bodies:
        return bodies[(method, route)]
    return {} if method in ("POST", "PUT", "PATCH") else None


@pytest.fixture
async def world(hub, serve, service, tmp_path):
    hub.add_user("dave", token="dave-token")
    share = tmp_path / "share"
    for user in ("alice", "bob", "dave", "admin"):
        sklearn_file(share / "users" / user / "m.joblib")
    InMemoryBackend.jobs, EchoServing.running = {}, {}
    EchoServing.url = serve(web.Application([(r"/(.*)", Echo)]))
    app = make_service(tmp_path, share_root=str(share), backend_class=InMemoryBackend,
                       serving_backend_class=EchoServing, metrics_public=False)
    app.started = True  # api/ready: the fakes need no start
    world = World(serve(app.make_app()) + PREFIX, share)
    await world.setup()
    return world


def matrix_operations():
    return sorted(op for op in service_operations() if op[1] not in NOT_IN_MATRIX and op in EXPECT)


@pytest.mark.parametrize("method, route", matrix_operations(), ids=lambda v: v or "home")
async def test_the_rule_holds_for_every_caller_and_item(world, method, route):
    rule, item = EXPECT[(method, route)]
    failures = []
    for actor, scope in itertools.product(ACTORS, SCOPES):
        values = await world.values(item, scope)
        path = re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), route)
        body = body_for(method, route, values, world, scope)
        headers = {"Authorization": f"token {TOKENS[actor]}"} if TOKENS[actor] else {}
        data = json.dumps(body) if body is not None else None
        if route == "admin/" and method == "POST":  # the page's form: delete an image
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urllib.parse.urlencode({"collection": "images", "action": "delete", "name": values["name"]})
        response = await AsyncHTTPClient().fetch(
            world.url + path, method=method, headers=headers, raise_error=False, follow_redirects=False,
            body=data, allow_nonstandard_methods=True)
        want = expected(rule, actor, scope)
        got = response.code
        location = response.headers.get("Location", "")
        ok = 200 <= got < 300 if want == OK else got == want
        if want == OK and got == 302 and rule == "admin_page":
            ok = location.startswith(PREFIX + "admin/")  # the form's post-redirect-get back to the page
        if want == LOGIN:
            ok = ok and "oauth2/authorize" in location
        if ok and want == OK and rule == "see" and method == "GET" and response.body.startswith(b"{"):
            # Every item's JSON says whether the caller may change it: its owner and hub admins.
            answer = json.loads(response.body)
            if "may_change" in answer:
                ok = answer["may_change"] is (actor in ("owner", "admin"))
            elif route in ("api/jobs/{job_id}", "api/models/{model_id}", "api/services/{service}",
                           "api/models/{model_id}/versions/{version}"):
                ok = False
        if ok and want == FORBIDDEN and rule == "change":
            message = json.loads(response.body)["message"]
            ok = message.startswith("Only alice (its owner)") and "or a hub admin may" in message
        if ok and want in (ANONYMOUS, FORBIDDEN, HIDDEN, INVALID) and route not in ("", "admin/"):
            answer = json.loads(response.body)
            ok = set(answer) >= {"message", "reason"}
        if not ok:
            failures.append(f"{actor:9} {scope:8} {method} {path}: wanted {want}, got {got} "
                            f"{response.body[:200].decode(errors='replace')}")
    assert not failures, "\n".join(failures)
