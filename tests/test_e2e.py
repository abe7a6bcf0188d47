"""End to end in local mode: the real hub, proxy, service, Lab and Chromium.

One hub for the module (starting it takes seconds); each test logs in as
the user it needs. Screenshots land in ``test-artifacts/``.
"""

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from processes import REPO, LocalHub, processes_under, wait_for_http

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    hub = LocalHub(tmp_path_factory.mktemp("hub")).start()
    yield hub
    left = hub.stop()
    assert left == [], f"processes left running after the hub stopped: {left}"


def spawn_form(session: requests.Session, hub: LocalHub, user: str, fields: dict) -> requests.Response:
    """Submit the spawn form as the browser does, with its field names (profile, image, gpus-<size>)."""
    return session.post(f"{hub.url}/hub/spawn/{user}", data={"_xsrf": session.cookies.get("_xsrf"), **fields})


def wait_for_server(session: requests.Session, hub: LocalHub, user: str, timeout=90, options=None):
    """Start the user's server (if needed), and log in to it as a browser does.

    Until the server is up, /user/<name>/lab leads to the hub's spawn page;
    once up, it passes the server's OAuth login and lands on Lab itself.
    """
    deadline = time.monotonic() + timeout
    spawn_form(session, hub, user, options or {"profile": "small"})
    lab = f"{hub.url}/user/{user}/lab"
    while time.monotonic() < deadline:
        r = session.get(lab)
        if r.status_code == 200 and r.url.split("?")[0] == lab:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{user}'s server did not start; hub log:\n" + hub.log.read_text()[-4000:])


def test_service_refuses_anyone_without_a_hub_identity(hub):
    me = hub.url + "/services/kubeai/api/me"
    assert requests.get(me).status_code == 401
    assert requests.get(me, headers={"Authorization": "token forged"}).status_code == 401
    # A session of the hub itself is not the service's: the browser must go
    # through the service's own OAuth login, which a plain API call does not.
    session = hub.login("alice")
    assert session.get(me, allow_redirects=False).status_code == 401
    body = requests.get(me).json()
    assert body["reason"] == "not_authenticated"


def test_user_tokens_identify_the_user_with_groups_and_admin(hub):
    me = hub.url + "/services/kubeai/api/me"
    alice = requests.get(me, headers={"Authorization": f"token {hub.token('alice')}"}).json()
    assert alice["name"] == "alice"
    assert alice["groups"] == ["vision"]
    assert alice["admin"] is False
    assert alice["mode"] == "local"
    admin = requests.get(me, headers={"Authorization": f"token {hub.token('admin')}"}).json()
    assert (admin["name"], admin["admin"], admin["groups"]) == ("admin", True, [])


def test_demo_login_wants_the_password(hub):
    session = requests.Session()
    session.get(hub.url + "/hub/login")
    for username, password in [("alice", "wrong-password"), ("mallory", hub.password)]:
        r = session.post(
            hub.url + "/hub/login",
            data={"username": username, "password": password, "_xsrf": session.cookies.get("_xsrf")},
            allow_redirects=False,
        )
        assert r.status_code == 403, (username, r.status_code)


def test_bob_server_lives_in_his_share_folder_and_reaches_the_service(hub):
    session = hub.login("bob")
    wait_for_server(session, hub, "bob")
    home = hub.state_dir / "share" / "users" / "bob"
    assert os.readlink(home / "projects" / "vision") == "../../../projects/vision"
    assert os.readlink(home / "global") == "../../global"
    # The lab's working directory is bob's folder: its contents API lists it.
    listing = session.get(f"{hub.url}/user/bob/api/contents").json()
    assert {"projects", "global"} <= {item["name"] for item in listing["content"]}
    # Running as root, the server needs --allow-root (and gets it).
    servers = processes_under(home)
    assert servers
    allow_root = [b"--allow-root" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in servers]
    assert any(allow_root) is (os.geteuid() == 0)
    # The server extension answers as bob, through the hub service.
    r = session.get(f"{hub.url}/user/bob/kubeai/api/me")
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["groups"]) == ("bob", ["vision"])


@pytest.mark.browser
def test_alice_logs_in_and_sees_her_panel(hub):
    from playwright.sync_api import expect

    from browser import chromium_page, hub_login, open_kubeai_panel, start_server_from_form

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        hub_login(page, hub.url, "alice", hub.password)
        # The spawn form offers alice's part of the catalog; the default size is preselected.
        page.wait_for_selector("#kubeai-spawn-form", timeout=60_000)
        expect(page.locator("#kubeai-size-small")).to_be_checked()
        page.screenshot(path=str(ARTIFACTS / "e2e-alice-spawn-form.png"), full_page=True)
        # The hub spawns alice's server and sends the browser on to Lab.
        start_server_from_form(page)
        assert "/user/alice/lab" in page.url
        panel = open_kubeai_panel(page)
        expect(panel.locator('[data-kubeai-field="status"]')).to_have_text(
            "Connected to the KubeAI service", timeout=60_000
        )
        expect(panel.locator('[data-kubeai-field="user"]')).to_have_text("alice")
        expect(panel.locator('[data-kubeai-field="projects"]')).to_contain_text("vision")
        expect(panel.locator('[data-kubeai-field="mode"]')).to_have_text("Local")
        page.screenshot(path=str(ARTIFACTS / "e2e-alice-kubeai-panel.png"))

        # The service goes away: the panel says so, in words, on Refresh.
        for pid in hub.service_pids():
            os.kill(pid, signal.SIGKILL)
        panel.locator(".jp-KubeAI-refresh").click()
        expect(panel.locator('[data-kubeai-field="status"]')).to_have_text(
            "The KubeAI service is unreachable.", timeout=30_000
        )
        expect(panel.locator('[data-kubeai-field="error"]')).to_contain_text("unreachable")
        page.screenshot(path=str(ARTIFACTS / "e2e-alice-service-unreachable.png"))

        # The hub restarts its managed service; Refresh connects again.
        wait_for_http(hub.url + "/services/kubeai/api/health", timeout=90)
        panel.locator(".jp-KubeAI-refresh").click()
        expect(panel.locator('[data-kubeai-field="user"]')).to_have_text("alice", timeout=30_000)


def test_hub_runs_as_an_ordinary_user(tmp_path):
    """The whole local hub as an ordinary user, not root.

    When the tests run as root, the hub runs in a user namespace where it is
    uid 1000 (files stay readable: the Python here lives under /root). The
    single-user server then must start without ``--allow-root``: Jupyter
    Server would refuse to run as root without it, so a started server proves
    the non-root path.
    """
    prefix = []
    if os.geteuid() == 0:
        prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    hub = LocalHub(tmp_path, user_cmd_prefix=prefix)
    try:
        hub.start()
        session = hub.login("alice")
        wait_for_server(session, hub, "alice")
        r = session.get(f"{hub.url}/user/alice/kubeai/api/me")
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "alice"
        servers = processes_under(hub.state_dir / "share" / "users" / "alice")
        assert servers, "alice's server process was not found"
        for pid in servers:
            assert b"--allow-root" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        left = hub.stop()
    assert left == []


def test_service_page_logs_in_through_hub_oauth(hub):
    session = hub.login("alice")
    r = session.get(hub.url + "/services/kubeai/")
    assert r.status_code == 200, r.text[:500]
    assert r.url == hub.url + "/services/kubeai/"
    assert '<span id="kubeai-user">alice</span>' in r.text
    assert '<dd id="kubeai-projects">vision</dd>' in r.text
    # Once logged in through OAuth, the browser's API calls work too.
    me = session.get(hub.url + "/services/kubeai/api/me")
    assert me.status_code == 200 and me.json()["name"] == "alice"
    # And the hub lists the service in its Services menu.
    assert "/services/kubeai/" in session.get(hub.url + "/hub/home").text


@pytest.mark.browser
def test_admin_adds_an_image_and_alice_starts_with_it(tmp_path):
    """Catalog edits apply to the next spawn, with no hub restart (local mode)."""
    from playwright.sync_api import expect

    from browser import chromium, hub_login, new_page, open_kubeai_panel, start_server_from_form

    ARTIFACTS.mkdir(exist_ok=True)
    hub = LocalHub(tmp_path).start()
    try:
        # First, a size this machine cannot give: refused on the spawn page, nothing started.
        session = hub.login("alice")
        r = spawn_form(session, hub, "alice", {"profile": "gpu"})
        assert r.status_code == 400
        assert "needs 1 GPU(s), but this machine has none; pick a CPU size." in r.text
        assert processes_under(hub.state_dir / "share" / "users" / "alice") == []
        # A tampered form: an image that is not in alice's catalog.
        r = spawn_form(session, hub, "alice", {"profile": "small", "image": "ghost"})
        assert r.status_code == 400 and "Image &#39;ghost&#39; is not one you may use" in r.text

        with chromium() as browser:
            admin = new_page(browser)
            hub_login(admin, hub.url, "admin", hub.password)
            admin.goto(hub.url + "/services/kubeai/admin/")
            admin.fill("#image-form input[name=name]", "torch-lab")
            admin.fill("#image-form input[name=display_name]", "PyTorch lab")
            admin.fill("#image-form input[name=image]", "jupyter-kubeai/torch:2.13")
            admin.fill("#image-form input[name=groups]", "vision")
            admin.click("#image-form button[type=submit]")
            expect(admin.locator("#admin-done")).to_have_text("Added image torch-lab.")
            expect(admin.locator('tr[data-image="torch-lab"]')).to_contain_text("vision")
            admin.screenshot(path=str(ARTIFACTS / "e2e-admin-catalog.png"), full_page=True)

            alice = new_page(browser)
            hub_login(alice, hub.url, "alice", hub.password)
            alice.wait_for_selector("#kubeai-spawn-form", timeout=60_000)
            images = alice.locator("#kubeai-image")
            expect(images.locator("option")).to_contain_text(["Python 3.11 (this machine)", "PyTorch lab"])
            images.select_option("torch-lab")
            alice.screenshot(path=str(ARTIFACTS / "e2e-alice-picks-new-image.png"), full_page=True)
            start_server_from_form(alice)
            panel = open_kubeai_panel(alice)
            expect(panel.locator('[data-kubeai-field="image"]')).to_have_text("torch-lab", timeout=60_000)
            expect(panel.locator('[data-kubeai-field="profile"]')).to_have_text("small")
            alice.screenshot(path=str(ARTIFACTS / "e2e-alice-on-new-image.png"))

        # Her server process really got that image.
        [server] = processes_under(hub.state_dir / "share" / "users" / "alice")
        environ = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        assert b"KUBEAI_IMAGE=torch-lab" in environ
        assert b"KUBEAI_PROFILE=small" in environ
    finally:
        left = hub.stop()
    assert left == []
