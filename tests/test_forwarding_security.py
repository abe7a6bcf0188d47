"""What the hub does with a model server's answers: a hostile predictor cannot use it.

A tornado app stands in for the model server at the service's recorded URL
(a user's predictor.py runs in that process and can answer anything): it
redirects to a "secret" internal server, serves HTML with a script, and
echoes what it received. The hub must not fetch the secret, must not hand
a browser a redirect, and must serve every forwarded answer so that no
script can run on the hub's origin.
"""

import json

import pytest
from serviceapp import PREFIX, call, make_service
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.models.deploy import ServingBackend
from jupyter_kubeai.models.spec import ServiceStatus
from jupyter_kubeai.service.forwarding import SANDBOX_CSP, served_content_type, target_url


class StandInServing(ServingBackend):
    """Deploys nothing: every service answers at ``url`` (the stand-in model server)."""

    name = "local"
    running: dict = {}
    url = ""

    def model_path(self, share_root, relative):
        return "/models/" + relative

    async def deploy(self, spec):
        self.running[spec.name] = spec
        return {"url": self.url}

    async def update(self, spec):
        self.running[spec.name] = spec
        return {"url": self.url}

    async def delete(self, name):
        return self.running.pop(name, None) is not None

    async def status(self, name):
        spec = self.running.get(name)
        if spec is None:
            return ServiceStatus("Failed")
        return ServiceStatus("Ready", version=spec.version, ready_replicas=1, url=self.url)


def stand_in_app(secret_url: str, seen: list) -> web.Application:
    class Redirect(web.RequestHandler):
        """Redirects, unless the test has set ``seen`` to hold "answer": then a JSON answer with markup in it."""

        def get(self, *args):
            if "answer" in seen:
                self.finish({"predictions": ["<script>alert(1)</script>"]})
            else:
                self.redirect(secret_url, status=302)

        def post(self, *args):
            if "deep" in seen:  # an error answer nested past any decoder's limit
                self.set_status(400)
                self.finish("[" * 100_000 + "]" * 100_000)
            elif "answer" in seen:
                self.finish({"predictions": ["<script>alert(1)</script>"]})
            else:
                self.redirect(secret_url, status=307)

    class Page(web.RequestHandler):
        def get(self, kind):
            content_type, body = {
                "html": ("text/html; charset=utf-8", "<html><script>fetch('/hub/api/users')</script></html>"),
                "svg": ("image/svg+xml", "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"),
                "json": ("application/json", json.dumps({"ok": True})),
                "text": ("text/plain; charset=latin-1", "plain words"),
                "none": ("", "no type"),
            }[kind]
            if content_type:
                self.set_header("Content-Type", content_type)
            else:
                self.clear_header("Content-Type")
            self.finish(body)

    class Echo(web.RequestHandler):
        def get(self, rest):
            seen.append({"path": self.request.path, "query": self.request.query, "host": self.request.host,
                         "headers": dict(self.request.headers)})
            self.finish({"path": self.request.path})

    return web.Application([
        (r"/v1/models/[^/]+:predict", Redirect),
        (r"/v2/models/[^/]+", Redirect),
        (r"/redirect(/.*)?", Redirect),
        (r"/page/(\w+)", Page),
        (r"/echo(.*)", Echo),
    ])


@pytest.fixture
async def hub_and_stand_in(hub, serve, service, tmp_path):
    """The hub service with service ``web-api`` (alice's) whose model server is the stand-in; the secret's hit log."""
    secret_hits = []

    class Secret(web.RequestHandler):
        def get(self):
            secret_hits.append(self.request.path)
            self.finish({"secret": "internal credentials"})

        post = get

    secret_url = serve(web.Application([(r"/secret", Secret)])) + "/secret"
    seen = []
    StandInServing.running, StandInServing.url = {}, serve(stand_in_app(secret_url, seen))
    share = tmp_path / "share"
    (share / "users/alice").mkdir(parents=True)
    (share / "users/alice/m.joblib").write_bytes(b"pretend joblib")
    app = make_service(tmp_path, share_root=str(share), serving_backend_class=StandInServing)
    url = serve(app.make_app()) + PREFIX
    code, answer = await call(url + "api/models", "alice-token", method="POST", body=json.dumps({"name": "web", "path": "m.joblib"}))
    assert code == 201, answer
    code, answer = await call(url + "api/services", "alice-token", method="POST",
                              body=json.dumps({"name": "web-api", "model_id": answer["model"]["id"]}))
    assert code == 201, answer
    return url, secret_hits, seen


async def fetch(url, method="GET", body=None, token="alice-token"):
    return await AsyncHTTPClient().fetch(url, method=method, body=body, raise_error=False, follow_redirects=False,
                                         headers={"Authorization": f"token {token}", "Content-Type": "application/json"})


async def test_a_redirect_from_a_model_server_is_not_followed_anywhere(hub_and_stand_in):
    url, secret_hits, _ = hub_and_stand_in
    requests = [
        ("GET", "serve/web-api/redirect/x", None),
        ("POST", "serve/web-api/v1/models/web-api:predict", json.dumps({"instances": [[1]]})),
        ("POST", "api/services/web-api/predict", json.dumps({"instances": [[1]]})),
        ("GET", "api/services/web-api/metadata", None),
    ]
    for method, path, body in requests:
        response = await fetch(url + path, method, body)
        answer = json.loads(response.body)
        assert response.code == 502, (path, response.code, answer)
        assert answer["reason"] == "model_server" and "redirect" in answer["message"], (path, answer)
        assert "Location" not in response.headers, path  # a browser would follow it
        assert b"internal credentials" not in response.body
    assert secret_hits == []
    # The refused answers of the service's own traffic are its recent errors, for its owner to see.
    _, svc = await call(url + "api/services/web-api", "alice-token")
    assert any("redirect" in e["message"] for e in svc["recent_errors"]), svc["recent_errors"]


@pytest.mark.parametrize("kind, content_type, attachment", [
    ("html", "text/plain; charset=utf-8", False),
    ("svg", "application/octet-stream", True),
    ("json", "application/json", False),
    ("text", "text/plain; charset=latin-1", False),
    ("none", "text/plain; charset=utf-8", False),
])
async def test_forwarded_answers_cannot_run_script_on_the_hub_origin(hub_and_stand_in, kind, content_type, attachment):
    url, _, _ = hub_and_stand_in
    response = await fetch(url + f"serve/web-api/page/{kind}")
    assert response.code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Content-Security-Policy"] == SANDBOX_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert ("attachment" in response.headers.get("Content-Disposition", "")) is attachment
    assert response.body  # the bytes themselves are passed on unchanged


async def test_predict_and_metadata_answers_are_sandboxed_too(hub_and_stand_in):
    url, _, seen = hub_and_stand_in
    seen.append("answer")
    for method, path, body in [("POST", "api/services/web-api/predict", json.dumps({"instances": [[1]]})),
                               ("GET", "api/services/web-api/metadata", None)]:
        response = await fetch(url + path, method, body)
        assert response.code == 200 and b"<script>" in response.body, path
        assert response.headers["Content-Type"].startswith("application/json"), path
        assert response.headers["Content-Security-Policy"] == SANDBOX_CSP, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path


async def test_an_error_answer_nested_past_the_decoders_limit_is_passed_on_as_text(hub_and_stand_in):
    url, _, seen = hub_and_stand_in
    seen.append("deep")
    response = await fetch(url + "api/services/web-api/predict", "POST", json.dumps({"instances": [[1]]}))
    answer = json.loads(response.body)
    assert response.code == 400 and answer["reason"] == "model_server", answer
    assert answer["message"].startswith("[[[")
    _, svc = await call(url + "api/services/web-api", "alice-token")
    assert svc["recent_errors"][0]["message"].startswith("[[[")


async def test_the_path_cannot_change_the_host_or_the_request_line(hub_and_stand_in):
    url, secret_hits, seen = hub_and_stand_in
    # %0D%0A would split the request line into a forged header; %2F%2F and @ try another authority.
    response = await fetch(url + "serve/web-api/echo/a%0D%0AX-Injected:%201/@evil.example/%2F%2Fother?q=%0D%0AX-Q:%201&b=1")
    assert response.code == 200, response.body
    (got,) = seen
    assert got["host"] == StandInServing.url.split("//", 1)[1]
    assert "X-Injected" not in got["headers"] and "X-Q" not in got["headers"]
    assert "\r" not in got["path"] and "%0D%0A" in got["path"]
    assert "Authorization" not in got["headers"]  # the caller's hub token stays with the hub
    assert secret_hits == []


def test_target_url_stays_on_the_recorded_endpoint():
    base = "http://127.0.0.1:8123"
    for path in ("//evil.example/x", "@evil.example", "http://evil.example/", "..\\..\\x", "a\r\nHost: evil"):
        assert target_url(base, path).startswith(base + "/"), path
        assert "\r" not in target_url(base, path)
    assert target_url(base + "/", "v1/models/m:predict", "a=1&b=%2F") == base + "/v1/models/m:predict?a=1&b=%2F"


def test_served_content_types():
    assert served_content_type("application/json; charset=utf-8") == ("application/json", False)
    assert served_content_type("application/problem+json") == ("application/problem+json", False)
    assert served_content_type("text/html") == ("text/plain; charset=utf-8", False)
    assert served_content_type("text/html; charset=\"><script>") == ("text/plain; charset=utf-8", False)
    assert served_content_type("application/xhtml+xml") == ("application/octet-stream", True)
    assert served_content_type("image/png") == ("application/octet-stream", True)
    assert served_content_type(None) == ("text/plain; charset=utf-8", False)


async def test_the_service_pages_and_api_cannot_be_framed(service):
    for path, token in (("admin/", "admin-token"), ("", "alice-token"), ("api/me", "alice-token"), ("api/me", None)):
        response = await AsyncHTTPClient().fetch(service + path, raise_error=False, follow_redirects=False,
                                                 headers={"Authorization": f"token {token}"} if token else {})
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
