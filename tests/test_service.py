"""The hub service in process, against a fake hub API at the HTTP boundary."""

import json

import pytest
from openapi_spec_validator import validate
from tornado.httpclient import AsyncHTTPClient

from fakehub import ACCESS, SERVICE_TOKEN, FakeHubState, make_fake_hub
from jupyter_kubeai.service.app import KubeAIService

PREFIX = "/services/kubeai/"


@pytest.fixture
def hub():
    state = FakeHubState()
    state.add_user("alice", groups=["vision"], token="alice-token")
    state.add_user("bob", groups=["vision", "nlp"], token="bob-token")
    state.add_user("admin", admin=True, token="admin-token")
    state.add_user("carol", token="carol-no-access", scopes=["read:users:name!user=carol"])
    return state


@pytest.fixture
async def service(hub, serve, monkeypatch):
    hub_url = serve(make_fake_hub(hub))
    monkeypatch.setenv("JUPYTERHUB_API_URL", hub_url + "/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", SERVICE_TOKEN)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", PREFIX)
    monkeypatch.setenv("JUPYTERHUB_OAUTH_ACCESS_SCOPES", json.dumps([ACCESS]))
    monkeypatch.setenv("JUPYTERHUB_CLIENT_ID", "service-kubeai")
    monkeypatch.setenv("JUPYTERHUB_OAUTH_CALLBACK_URL", PREFIX + "oauth_callback")
    app = KubeAIService(mode="local", identity_cache_seconds=0)
    return serve(app.make_app()) + PREFIX


async def call(url, token=None, method="GET", **kwargs):
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"token {token}"
    response = await AsyncHTTPClient().fetch(url, method=method, headers=headers, raise_error=False, **kwargs)
    return response.code, json.loads(response.body) if response.body else None


async def test_me_answers_who_is_asking(service):
    code, me = await call(service + "api/me", "alice-token")
    assert code == 200
    assert me == {
        "name": "alice",
        "kind": "user",
        "admin": False,
        "groups": ["vision"],
        "mode": "local",
        "service_version": me["service_version"],
    }
    code, me = await call(service + "api/me", "admin-token")
    assert (code, me["name"], me["admin"], me["groups"]) == (200, "admin", True, [])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "token forged-token"},
        {"Authorization": "bearer forged-token"},
        {"Authorization": "token "},
        {"Authorization": "Basic YWxpY2U6cGFzcw=="},
        {"Cookie": "jupyterhub-services-kubeai=forged"},
        {"X-Forwarded-User": "alice"},
    ],
    ids=["none", "forged", "forged-bearer", "empty", "basic", "forged-cookie", "header-spoof"],
)
async def test_requests_without_a_hub_identity_get_403(service, headers):
    code, body = await call(service + "api/me", headers=headers)
    assert code == 403
    assert body["reason"] == "not_authenticated"
    assert "JupyterHub identity" in body["message"]


async def test_a_token_without_access_to_the_service_gets_403(service):
    code, body = await call(service + "api/me", "carol-no-access")
    assert code == 403


async def test_unknown_routes_are_json(service):
    assert (await call(service + "api/nope"))[0] == 403
    code, body = await call(service + "api/nope", "alice-token")
    assert code == 404 and body["reason"] == "not_found"


async def test_groups_and_admin_come_fresh_from_the_hub(service, hub):
    assert (await call(service + "api/me", "alice-token"))[1]["groups"] == ["vision"]
    hub.users["alice"]["groups"] = ["vision", "audio"]
    hub.users["alice"]["admin"] = True
    _, me = await call(service + "api/me", "alice-token")
    assert me["groups"] == ["audio", "vision"] and me["admin"] is True


async def test_hub_down_is_503_not_403(service, hub):
    hub.down = True
    code, body = await call(service + "api/me", "alice-token")
    assert code == 503
    assert body["reason"] == "unavailable"


async def test_health_needs_no_identity_and_does_not_ask_the_hub(service, hub):
    hub.calls.clear()
    code, body = await call(service + "api/health")
    assert code == 200 and body["status"] == "ok" and body["mode"] == "local"
    assert hub.calls == []


async def test_openapi_document_is_valid_and_lists_every_route(service):
    code, doc = await call(service + "api/openapi.json")
    assert code == 200
    validate(doc)
    assert doc["servers"] == [{"url": "/services/kubeai"}]
    documented = set(doc["paths"])
    routes = {"/" + path for path, _ in KubeAIService().routes() if path.startswith("api/")}
    assert documented == routes


def test_bad_mode_is_refused():
    with pytest.raises(Exception, match="must be one of"):
        KubeAIService(mode="cloud")


async def test_home_page_sends_strangers_to_the_hub_login(service):
    response = await AsyncHTTPClient().fetch(service, follow_redirects=False, raise_error=False)
    assert response.code == 302
    assert "/hub/api/oauth2/authorize" in response.headers["Location"]
    assert "client_id=service-kubeai" in response.headers["Location"]


async def test_home_page_shows_the_caller(service):
    response = await AsyncHTTPClient().fetch(service, headers={"Authorization": "token bob-token"})
    page = response.body.decode()
    assert '<span id="kubeai-user">bob</span>' in page
    assert '<dd id="kubeai-projects">nlp, vision</dd>' in page
