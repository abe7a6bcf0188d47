"""The hub service in process against a fake hub API: fixtures shared by its tests."""

import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.service.app import KubeAIService

from fakehub import ACCESS, SERVICE_TOKEN, FakeHubState, make_fake_hub

PREFIX = "/services/kubeai/"
INITIAL_CATALOG = {
    "images": [
        {"name": "base", "image": "python:3.11", "default": True},
        {"name": "vision-lab", "image": "registry.example.org/vision/lab:1", "groups": ["vision"]},
    ],
    "profiles": [{"name": "small", "default": True}, {"name": "gpu", "gpus": 1, "groups": ["vision"]}],
    "image_rules": [{"name": "nlp-own", "pattern": "registry.example.org/nlp/.+", "groups": ["nlp"]}],
}


@pytest.fixture
def hub():
    state = FakeHubState()
    state.add_user("alice", groups=["vision"], token="alice-token")
    state.add_user("bob", groups=["vision", "nlp"], token="bob-token")
    state.add_user("admin", admin=True, token="admin-token")
    state.add_user("carol", token="carol-no-access", scopes=["read:users:name!user=carol"])
    return state


@pytest.fixture
async def service(hub, serve, monkeypatch, tmp_path):
    hub_url = serve(make_fake_hub(hub))
    monkeypatch.setenv("JUPYTERHUB_API_URL", hub_url + "/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", SERVICE_TOKEN)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", PREFIX)
    monkeypatch.setenv("JUPYTERHUB_OAUTH_ACCESS_SCOPES", json.dumps([ACCESS]))
    monkeypatch.setenv("JUPYTERHUB_CLIENT_ID", "service-kubeai")
    monkeypatch.setenv("JUPYTERHUB_OAUTH_CALLBACK_URL", PREFIX + "oauth_callback")
    app = make_service(tmp_path)
    return serve(app.make_app()) + PREFIX


def make_service(tmp_path, **traits) -> KubeAIService:
    """A service on a SQLite file in ``tmp_path`` (the same file for every call: a restart)."""
    traits = {"mode": "local", "identity_cache_seconds": 0, "db_url": f"sqlite:///{tmp_path / 'kubeai.sqlite'}",
              "initial_catalog": INITIAL_CATALOG, **traits}
    return KubeAIService(**traits)


async def call(url, token=None, method="GET", **kwargs):
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"token {token}"
    response = await AsyncHTTPClient().fetch(url, method=method, headers=headers, raise_error=False, **kwargs)
    return response.code, json.loads(response.body) if response.body else None


