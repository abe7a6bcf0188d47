"""Headless Chromium for browser tests: Debian's chromium, driven by Playwright.

Never downloads a browser: it launches /usr/bin/chromium (``make test``
installs it), with the flags a closed network needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("KUBEAI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        raise RuntimeError("Chromium is missing: `make test` installs it (apt-get install chromium)")
    return path


@contextlib.contextmanager
def chromium():
    """A headless Chromium; ``new_page(browser)`` gives each user their own cookies."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, viewport=(1400, 900)):
    return browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()


@contextlib.contextmanager
def chromium_page(viewport=(1400, 900)):
    with chromium() as browser:
        yield new_page(browser, viewport)


def hub_login(page, hub_url: str, username: str, password: str) -> None:
    """Log in through the hub's login page, as a person does."""
    page.goto(hub_url + "/hub/login")
    page.fill("#username_input", username)
    page.fill("#password_input", password)
    page.click("#login_submit")


def start_server_from_form(page) -> None:
    """Submit the hub's spawn form and wait until JupyterLab is up."""
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url("**/lab**", timeout=120_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)


def open_kubeai_panel(page):
    """Open the KubeAI sidebar panel in JupyterLab; returns its locator."""
    page.click('.jp-SideBar [data-id="jp-kubeai-panel"]')
    return page.locator("#jp-kubeai-panel")
