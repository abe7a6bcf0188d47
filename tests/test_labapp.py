"""The single-user server extension: Jupyter auth, XSRF, and honest forwarding."""

import json
import os
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
import requests
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.labapp.handlers import checked_api_path

from processes import free_port, jupyter_server, stop

USER_HUB_TOKEN = "alice-hub-token"
JUPYTER_TOKEN = "jupyter-login-token-for-tests"


class Echo(web.RequestHandler):
    """A stand-in hub service that answers with what it received."""

    def initialize(self, seen):
        self.seen = seen

    def _answer(self, path):
        self.seen.append(self.request)
        status = int(self.get_argument("status", "200"))
        self.set_status(status)
        self.set_header("Set-Cookie", "leak=1")
        self.finish(
            {
                "method": self.request.method,
                "path": self.request.path,
                "query": self.request.query,
                "authorization": self.request.headers.get("Authorization"),
                "cookie": self.request.headers.get("Cookie"),
                "body": self.request.body.decode(),
                "content_type": self.request.headers.get("Content-Type"),
            }
        )

    get = post = put = patch = delete = _answer


@dataclass
class Lab:
    base: str  # the server's base URL, like a hub user's /user/alice/
    token: str  # the server's own Jupyter token (the browser's credential)
    service_port: int  # where the extension sends /kubeai/api/ calls


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab")
    port, service_port = free_port(), free_port()
    proc = jupyter_server(
        port, JUPYTER_TOKEN, tmp, base_url="/user/alice/", log=tmp / "server.log",
        args=[f"--KubeAIServerExtension.service_url=http://127.0.0.1:{service_port}/services/kubeai/"],
        env={"JUPYTERHUB_API_TOKEN": USER_HUB_TOKEN},
    )
    yield Lab(f"http://127.0.0.1:{port}/user/alice/", JUPYTER_TOKEN, service_port)
    stop(proc)


@pytest.fixture
def seen():
    return []


@pytest.fixture
async def echo_service(lab, seen):
    app = web.Application([(r"/services/kubeai/api/(.*)", Echo, {"seen": seen})])
    server = app.listen(lab.service_port, "127.0.0.1")
    yield
    server.stop()


async def fetch(lab, path, *, token=True, **kwargs):
    headers = kwargs.pop("headers", {})
    if token:
        headers.setdefault("Authorization", f"token {lab.token}")
    return await AsyncHTTPClient().fetch(lab.base + path, headers=headers, raise_error=False, **kwargs)


async def test_forwards_with_the_users_own_hub_token(lab, echo_service):
    response = await fetch(
        lab, "kubeai/api/jobs/j-1?" + urlencode({"a": "1", "b": "x y"}), method="POST",
        body=json.dumps({"name": "train"}),
        headers={"Content-Type": "application/json", "Cookie": "browser=secret"},
    )
    assert response.code == 200
    answer = json.loads(response.body)
    assert answer["method"] == "POST"
    assert answer["path"] == "/services/kubeai/api/jobs/j-1"
    assert answer["query"] == urlencode({"a": "1", "b": "x y"})
    # The user's hub token, never the caller's Jupyter credentials or cookies.
    assert answer["authorization"] == f"token {USER_HUB_TOKEN}"
    assert lab.token not in json.dumps(answer)
    assert answer["cookie"] is None
    assert answer["body"] == '{"name": "train"}'
    assert answer["content_type"] == "application/json"
    # Nothing the service sets as a cookie reaches the browser.
    assert "leak" not in response.headers.get("Set-Cookie", "")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_every_method_and_status_passes_through(lab, echo_service, method):
    body = "{}" if method in ("PUT", "PATCH") else None
    response = await fetch(lab, "kubeai/api/x?status=409", method=method, body=body)
    assert response.code == 409
    assert json.loads(response.body)["method"] == method


async def test_needs_jupyter_authentication(lab, echo_service, seen):
    for headers in ({}, {"Authorization": "token wrong"}, {"Authorization": f"token {USER_HUB_TOKEN}"}):
        response = await fetch(lab, "kubeai/api/me", token=False, headers=headers)
        assert response.code == 403
    assert seen == []  # nothing reached the service


async def test_cookie_sessions_need_xsrf(lab, echo_service, seen):
    base = lab.base
    client = AsyncHTTPClient()
    # Log in as a browser does: the login form, with the token as password.
    login = await client.fetch(base + "login", raise_error=False)
    xsrf = login.headers.get_list("Set-Cookie")
    xsrf_cookie = next(c.split(";")[0] for c in xsrf if c.startswith("_xsrf="))
    xsrf_value = xsrf_cookie.split("=", 1)[1]
    response = await client.fetch(
        base + "login", method="POST", follow_redirects=False, raise_error=False,
        body=urlencode({"password": lab.token, "_xsrf": xsrf_value}),
        headers={"Cookie": xsrf_cookie},
    )
    assert response.code == 302
    session = [c.split(";")[0] for c in response.headers.get_list("Set-Cookie") if c.startswith("username-")]
    cookies = "; ".join([xsrf_cookie, *session])

    # A GET with the session cookie is fine.
    response = await client.fetch(base + "kubeai/api/me", headers={"Cookie": cookies}, raise_error=False)
    assert response.code == 200
    # A POST with the cookie but no XSRF token is refused before forwarding.
    seen.clear()
    response = await client.fetch(base + "kubeai/api/jobs", method="POST", body="{}", headers={"Cookie": cookies}, raise_error=False)
    assert response.code == 403
    assert seen == []
    # With the XSRF header it goes through.
    response = await client.fetch(
        base + "kubeai/api/jobs", method="POST", body="{}",
        headers={"Cookie": cookies, "X-XSRFToken": xsrf_value}, raise_error=False,
    )
    assert response.code == 200


@pytest.mark.parametrize(
    "path",
    ["", "..", "a/../../hub", "a//b", "./x", "a/%2e%2e/b", "a b", "a\\b", "me/"],
)
def test_only_plain_api_paths_are_forwarded(path):
    with pytest.raises(web.HTTPError) as error:
        checked_api_path(path)
    assert error.value.status_code == 400


@pytest.mark.parametrize("path", ["me", "jobs/j-1/logs", "models/m1/versions/3", "jobs/a.b_c~d"])
def test_plain_api_paths_pass(path):
    assert checked_api_path(path) == path


@pytest.mark.parametrize("path", ["kubeai/api/a/%2e%2e/%2e%2e/hub", "kubeai/api/%2e%2e", "kubeai/api/a%2f..%2fb"])
async def test_dotdot_in_the_url_never_reaches_the_service(lab, echo_service, seen, path):
    response = await fetch(lab, path)
    assert response.code in (400, 404)
    assert seen == []


async def test_service_down_is_a_clear_502(lab):
    response = await fetch(lab, "kubeai/api/me")  # nothing listens on service_port
    assert response.code == 502
    body = json.loads(response.body)
    assert body["reason"] == "service_unreachable"
    assert "unreachable" in body["message"]


def test_without_hub_settings_it_says_what_is_missing(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTERHUB_API_TOKEN", "KUBEAI_SERVICE_URL")}
    proc = jupyter_server(port, JUPYTER_TOKEN, tmp_path, log=tmp_path / "server.log", env=env)
    try:
        url = f"http://127.0.0.1:{port}/kubeai/api/me"
        r = requests.get(url, headers={"Authorization": f"token {JUPYTER_TOKEN}"})
        assert r.status_code == 503
        assert r.json()["reason"] == "not_configured"
        assert "KUBEAI_SERVICE_URL" in r.json()["message"]
    finally:
        stop(proc)


class LogPart(web.RequestHandler):
    """A stand-in for the service's logs route: a part of a log, and where it is."""

    def get(self, path):
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("X-Log-Offset", "100")
        self.set_header("X-Log-Size", "5000")
        self.set_header("X-Internal", "not for the browser")
        self.finish(f"{path}?{self.request.query}")


async def test_a_log_parts_query_and_headers_pass_through(lab):
    server = web.Application([(r"/services/kubeai/api/(.*)", LogPart)]).listen(lab.service_port, "127.0.0.1")
    try:
        response = await fetch(lab, "kubeai/api/jobs/j-1/logs/main?offset=100&length=50")
    finally:
        server.stop()
    assert response.code == 200 and response.body == b"jobs/j-1/logs/main?offset=100&length=50"
    assert (response.headers["X-Log-Offset"], response.headers["X-Log-Size"]) == ("100", "5000")
    assert "X-Internal" not in response.headers
