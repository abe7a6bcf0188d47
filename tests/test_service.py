"""The hub service in process, against a fake hub API at the HTTP boundary."""

import json
from urllib.parse import urlencode

import pytest
from openapi_spec_validator import validate
from serviceapp import PREFIX, call
from tornado.httpclient import AsyncHTTPClient

from jupyter_kubeai.service.app import PATH_PARAMETERS, KubeAIService


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
        "servers": [],
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
async def test_requests_without_a_hub_identity_get_401(service, headers):
    code, body = await call(service + "api/me", headers=headers)
    assert code == 401
    assert body["reason"] == "not_authenticated"
    assert "JupyterHub identity" in body["message"]


async def test_a_token_without_access_to_the_service_gets_403(service):
    """Known to the hub, but its token may not use this service: not allowed (403), not unknown (401)."""
    code, body = await call(service + "api/me", "carol-no-access")
    assert code == 403
    assert body["reason"] == "forbidden" and "carol" in body["message"] and "not allowed" in body["message"]


async def test_unknown_routes_are_json(service):
    assert (await call(service + "api/nope"))[0] == 401
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
    # Path parameters: the document's enums are what the routes accept.
    assert doc["components"]["parameters"]["collection"]["schema"]["enum"] == PATH_PARAMETERS["collection"].split("|")


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


ADMIN_CALLS = [
    ("GET", "api/admin/catalog", None),
    ("GET", "api/admin/images", None),
    ("POST", "api/admin/images", {"name": "x", "image": "python:3.12"}),
    ("GET", "api/admin/images/base", None),
    ("PUT", "api/admin/images/base", {"name": "base", "image": "evil/miner:1"}),
    ("DELETE", "api/admin/images/base", None),
    ("GET", "api/admin/profiles", None),
    ("POST", "api/admin/profiles", {"name": "huge", "gpus": 8}),
    ("PUT", "api/admin/profiles/small", {"name": "small", "cpu_limit": "64"}),
    ("DELETE", "api/admin/profiles/small", None),
    ("GET", "api/admin/image-rules", None),
    ("POST", "api/admin/image-rules", {"name": "all", "pattern": ".*", "groups": ["vision"]}),
    ("DELETE", "api/admin/image-rules/nlp-own", None),
    ("GET", "api/admin/doctor", None),
]


@pytest.mark.parametrize("method, path, body", ADMIN_CALLS, ids=[f"{m} {p}" for m, p, _ in ADMIN_CALLS])
async def test_non_admins_get_403_on_every_admin_route(service, method, path, body):
    kwargs = {"body": json.dumps(body)} if body is not None else {}
    if method in ("POST", "PUT") and body is None:
        kwargs["body"] = "{}"
    for token, status in (("alice-token", 403), (None, 401)):
        code, answer = await call(service + path, token, method=method, **kwargs)
        assert code == status, (token, answer)
    # Nothing changed.
    code, catalog = await call(service + "api/admin/catalog", "admin-token")
    assert [i["name"] for i in catalog["images"]] == ["base", "vision-lab"]
    assert [p["name"] for p in catalog["profiles"]] == ["small", "gpu"]
    assert [r["name"] for r in catalog["image_rules"]] == ["nlp-own"]


async def test_every_admin_route_is_in_the_forbidden_table():
    admin_templates = {p for p, _ in KubeAIService().routes() if p.startswith("api/admin")}
    covered = {"api/admin/catalog", "api/admin/{collection}", "api/admin/{collection}/{name}", "api/admin/doctor"}
    assert admin_templates == covered


async def test_users_see_their_groups_part_of_the_catalog(service):
    _, alice = await call(service + "api/catalog", "alice-token")
    assert [i["name"] for i in alice["images"]] == ["base", "vision-lab"]
    assert [p["name"] for p in alice["profiles"]] == ["small", "gpu"]
    assert alice["image_rules"] == []
    _, bob = await call(service + "api/catalog", "bob-token")
    assert [r["name"] for r in bob["image_rules"]] == ["nlp-own"]
    _, admin = await call(service + "api/catalog", "admin-token")
    assert [i["name"] for i in admin["images"]] == ["base"]


async def test_admin_manages_entries_over_rest(service):
    admin = "admin-token"
    code, created = await call(service + "api/admin/images", admin, method="POST",
                               body=json.dumps({"name": "torch", "image": "quay.io/kubeai/torch:2.13", "tags": ["gpu"]}))
    assert code == 201 and created["image"] == "quay.io/kubeai/torch:2.13"
    code, body = await call(service + "api/admin/images", admin, method="POST", body=json.dumps({"name": "torch", "image": "x:1"}))
    assert code == 409 and "exists already" in body["message"]
    # Deprecate base in favour of torch: users are redirected.
    code, body = await call(service + "api/admin/images/base", admin, method="PUT",
                            body=json.dumps({"image": "python:3.11", "deprecated": True, "replacement": "torch"}))
    assert code == 200 and body["deprecated"] is True
    _, alice = await call(service + "api/catalog", "alice-token")
    assert [i["name"] for i in alice["images"]] == ["vision-lab", "torch"]
    assert [i["name"] for i in alice["deprecated"]] == ["base"]
    code, body = await call(service + "api/admin/images/torch", admin, method="DELETE")
    assert code == 409 and "replaces deprecated image" in body["message"]
    code, _ = await call(service + "api/admin/images/vision-lab", admin, method="DELETE")
    assert code == 204
    code, body = await call(service + "api/admin/images/vision-lab", admin)
    assert code == 404


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("api/admin/images", "not json", "not valid JSON"),
        ("api/admin/images", "[1]", "must be a JSON object"),
        ("api/admin/images", json.dumps({"name": "Bad Name", "image": "x:1"}), "is not valid"),
        ("api/admin/profiles", json.dumps({"name": "p", "cpu_limit": "lots"}), "not a Kubernetes quantity"),
        ("api/admin/profiles", json.dumps({"name": "p", "memory": "4Gi"}), "unknown field(s) memory"),
        ("api/admin/image-rules", json.dumps({"name": "r", "pattern": "(", "groups": ["g"]}), "not a valid regular expression"),
    ],
)
async def test_bad_admin_input_is_a_clear_400(service, path, body, message):
    code, answer = await call(service + path, "admin-token", method="POST", body=body)
    assert code == 400
    assert message in answer["message"]
    _, catalog = await call(service + "api/admin/catalog", "admin-token")
    assert len(catalog["images"]) == 2 and len(catalog["profiles"]) == 2


async def test_admin_catalog_counts_running_servers(service, hub):
    hub.users["alice"]["servers"] = {"": {"name": "", "user_options": {"profile": "gpu", "image": "vision-lab"}}}
    hub.users["bob"]["servers"] = {
        "": {"name": "", "user_options": {"profile": "small", "image": "base"}},
        "two": {"name": "two", "user_options": {"profile": "small", "image--unlisted-choice": "registry.example.org/nlp/x:1"}},
    }
    _, catalog = await call(service + "api/admin/catalog", "admin-token")
    assert {i["name"]: i["running_servers"] for i in catalog["images"]} == {"base": 1, "vision-lab": 1}
    assert {p["name"]: p["running_servers"] for p in catalog["profiles"]} == {"small": 2, "gpu": 1}
    assert catalog["own_images_running"] == 1


async def page(service, path, token, method="GET", form=None):
    body = urlencode(form) if form is not None else None
    response = await AsyncHTTPClient().fetch(
        service + path, method=method, body=body, follow_redirects=False, raise_error=False,
        headers={"Authorization": f"token {token}"} if token else {},
    )
    return response.code, response.body.decode(), response.headers.get("Location", "")


async def test_admin_page_is_for_hub_admins_only(service):
    code, html, _ = await page(service, "admin/", "alice-token")
    assert code == 403 and "Only hub admins may manage the catalog." in html
    code, html, _ = await page(service, "admin/", "alice-token", "POST", {"collection": "images", "action": "delete", "name": "base"})
    assert code == 403
    code, _, location = await page(service, "admin/", None)
    assert code == 302 and "oauth2/authorize" in location
    _, catalog = await call(service + "api/admin/catalog", "admin-token")
    assert [i["name"] for i in catalog["images"]] == ["base", "vision-lab"]


async def test_admin_page_lists_and_creates(service, hub):
    hub.users["alice"]["servers"] = {"": {"name": "", "user_options": {"profile": "small", "image": "base"}}}
    code, html, _ = await page(service, "admin/", "admin-token")
    assert code == 200
    assert '<tr data-image="base">' in html and '<tr data-profile="gpu">' in html
    assert 'id="admin-link"' in html
    form = {"collection": "images", "action": "create", "name": "torch", "image": "quay.io/kubeai/torch:2",
            "display_name": "PyTorch", "groups": "vision, nlp", "tags": "gpu"}
    code, _, location = await page(service, "admin/", "admin-token", "POST", form)
    assert code == 302 and "done=Added+image+torch" in location
    _, torch = await call(service + "api/admin/images/torch", "admin-token")
    assert torch["groups"] == ["nlp", "vision"] and torch["tags"] == ["gpu"] and torch["display_name"] == "PyTorch"


async def test_admin_page_shows_errors_with_what_was_typed(service):
    form = {"collection": "profiles", "action": "create", "name": "big", "cpu_request": "2", "cpu_limit": "1",
            "memory_request": "1Gi", "memory_limit": "2Gi", "gpus": "0"}
    code, html, _ = await page(service, "admin/", "admin-token", "POST", form)
    assert code == 400
    # In the page's words: "size", and the form's labels (the REST API keeps its field names).
    assert "Size &#x27;big&#x27;: CPU request 2 is more than CPU limit 1" in html
    assert 'value="big"' in html  # the admin does not type it all again
    code, html, _ = await page(service, "admin/", "admin-token", "POST", {**form, "cpu_request": "1", "gpus": "two"})
    assert code == 400 and "GPUs must be a whole number" in html
    _, catalog = await call(service + "api/admin/catalog", "admin-token")
    assert [p["name"] for p in catalog["profiles"]] == ["small", "gpu"]


async def test_admin_page_edits_deprecates_and_deletes(service):
    code, html, _ = await page(service, "admin/?edit=profiles/gpu", "admin-token")
    assert code == 200 and 'value="update"' in html and "Save size" in html
    form = {"collection": "profiles", "action": "update", "name": "gpu", "cpu_request": "1", "cpu_limit": "4",
            "memory_request": "4Gi", "memory_limit": "8Gi", "gpus": "1", "max_gpus": "2", "gpu_resource": "amd.com/gpu",
            "node_selector": "pool=gpu", "tolerations": "team=vision:NoSchedule\nspot:NoExecute", "groups": "vision"}
    assert (await page(service, "admin/", "admin-token", "POST", form))[0] == 302
    _, gpu = await call(service + "api/admin/profiles/gpu", "admin-token")
    assert gpu["gpu_resource"] == "amd.com/gpu" and gpu["max_gpus"] == 2
    assert gpu["placement"] == {
        "node_selector": {"pool": "gpu"},
        "tolerations": [
            {"key": "team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
        ],
    }
    form = {"collection": "images", "action": "deprecate", "name": "base", "replacement": "vision-lab"}
    assert (await page(service, "admin/", "admin-token", "POST", form))[0] == 302
    _, base = await call(service + "api/admin/images/base", "admin-token")
    assert (base["deprecated"], base["replacement"]) == (True, "vision-lab")
    code, html, _ = await page(service, "admin/", "admin-token", "POST", {"collection": "images", "action": "delete", "name": "vision-lab"})
    assert code == 409 and "replaces deprecated image" in html
    code, _, _ = await page(service, "admin/", "admin-token", "POST", {"collection": "image-rules", "action": "delete", "name": "nlp-own"})
    assert code == 302


async def test_me_tells_users_on_a_deprecated_image(service, hub):
    hub.users["alice"]["servers"] = {"": {"name": "", "user_options": {"profile": "small", "image": "base"}}}
    _, me = await call(service + "api/me", "alice-token")
    assert me["servers"] == [{"name": "", "profile": "small", "image": "base", "notice": ""}]
    await call(service + "api/admin/images/base", "admin-token", method="PUT",
               body=json.dumps({"image": "python:3.11", "deprecated": True, "replacement": "vision-lab"}))
    _, me = await call(service + "api/me", "alice-token")
    assert me["servers"][0]["notice"] == "Image 'base' is deprecated; restart your server to get 'vision-lab'."


def test_help_documents_the_backends_settings():
    from jupyter_kubeai.backends.kubernetes import KubernetesBackend
    from jupyter_kubeai.backends.local import LocalBackend

    classes = KubeAIService().classes
    assert LocalBackend in classes and KubernetesBackend in classes


async def test_adding_a_size_with_gpus_needs_no_maximum(service):
    """The form's Max GPUs left empty (or 0, its old default) means "the count", through the page and the API."""
    base = {"collection": "profiles", "action": "create", "cpu_request": "1", "cpu_limit": "2",
            "memory_request": "1Gi", "memory_limit": "2Gi", "gpus": "2"}
    for name, extra in (("two-gpus", {"max_gpus": ""}), ("two-gpus-zero", {"max_gpus": "0"}), ("two-gpus-absent", {})):
        code, html, location = await page(service, "admin/", "admin-token", "POST", {**base, **extra, "name": name})
        assert code == 302, html
        assert f"done=Added+size+{name}" in location
        _, size = await call(service + f"api/admin/profiles/{name}", "admin-token")
        assert (size["gpus"], size["max_gpus"]) == (2, 2)
    code, size = await call(service + "api/admin/profiles", "admin-token", method="POST",
                            body=json.dumps({"name": "api-gpus", "gpus": 1, "max_gpus": 0}))
    assert code == 201 and size["max_gpus"] == 1
    code, size = await call(service + "api/admin/profiles", "admin-token", method="POST",
                            body=json.dumps({"name": "api-gpus-null", "gpus": 3, "max_gpus": None}))
    assert code == 201 and size["max_gpus"] == 3
    # A maximum below the count is still an error, in the page's words.
    code, html, _ = await page(service, "admin/", "admin-token", "POST", {**base, "name": "bad", "max_gpus": "1"})
    assert code == 400 and "Size &#x27;bad&#x27;: Max GPUs 1 is less than GPUs 2" in html


async def test_a_new_error_does_not_stand_beside_an_old_success(service):
    form = {"collection": "images", "action": "create", "name": "torch", "image": "quay.io/kubeai/torch:2"}
    code, _, location = await page(service, "admin/", "admin-token", "POST", form)
    assert code == 302
    assert 'id="admin-done"' in (await page(service, location.split(PREFIX, 1)[1], "admin-token"))[1]
    # The same form again from the page the redirect landed on: a conflict, and no stale "Added".
    code, html, _ = await page(service, location.split(PREFIX, 1)[1], "admin-token", "POST", form)
    assert code == 409 and 'id="admin-error"' in html and 'id="admin-done"' not in html
    assert "Added image torch" not in html


async def test_the_admin_page_looks_like_the_hubs_own(service):
    code, html, _ = await page(service, "admin/", "admin-token")
    assert code == 200
    assert '<link rel="stylesheet" href="/hub/static/css/style.min.css">' in html
    assert 'class="navbar' in html and 'src="/hub/logo"' in html
    assert 'class="table' in html and 'class="btn btn-primary"' in html
    assert f'action="{PREFIX}admin/"' in html  # forms post to the clean page, not to ?done=...
