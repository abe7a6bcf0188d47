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


def start_lab(page, hub_url: str, username: str, password: str) -> None:
    """Log in, submit the spawn form as it comes, and wait until JupyterLab is up."""
    hub_login(page, hub_url, username, password)
    page.wait_for_selector("#kubeai-spawn-form", timeout=60_000)
    start_server_from_form(page)


def open_kubeai_panel(page):
    """Open the KubeAI sidebar panel in JupyterLab; returns its locator.

    Its sidebar tab toggles the panel, so an open panel (restored from the
    workspace, or opened by a submission) is left open.
    """
    panel = page.locator("#jp-kubeai-panel")
    if not panel.is_visible():
        page.click('.jp-SideBar [data-id="jp-kubeai-panel"]')
    return panel


class JobsUI:
    """Page object for the jobs parts of the lab extension: submit dialog, Jobs list, job detail.

    Everything is found by the extension's ``data-kubeai-*`` attributes.
    """

    def __init__(self, page):
        self.page = page

    def dismiss_news(self) -> None:
        """Answer Lab's "notified about Jupyter news?" toast, which covers the lower right."""
        no = self.page.locator(".Toastify__toast:has-text('Jupyter news') button:has-text('No')")
        if no.count():
            no.first.click()

    def open_notebook(self, lab_url: str, path: str):
        """Open ``path`` in Lab (``lab_url`` ends in ``/lab``); returns the notebook panel."""
        self.page.goto(f"{lab_url}/tree/{path}")
        notebook = self.page.locator(".jp-NotebookPanel:visible")
        notebook.locator(".jp-Cell").first.wait_for(timeout=60_000)
        return notebook

    def submit_dialog(self, notebook):
        """Click the notebook toolbar's "Submit as job"; returns the dialog's form."""
        notebook.locator('[data-kubeai-action="submit-job"]').click()
        form = self.page.locator('[data-kubeai-dialog="submit-job"]')
        form.wait_for(timeout=30_000)
        return form

    def fill(self, form, **fields) -> None:
        """Set form fields by name (``framework="pytorch"``, ``workers=2``, ``parameters="a = 1"``)."""
        for name, value in fields.items():
            control = form.locator(f'[data-kubeai-field="{name}"]')
            if control.evaluate("e => e.tagName") == "SELECT":
                control.select_option(str(value))
            else:
                control.fill(str(value))

    def submit(self) -> None:
        self.page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    def submit_and_open(self, form):
        """Submit the dialog; once the service accepted the job, its detail (opened by the submission) and id."""
        from playwright.sync_api import expect

        self.submit()
        expect(form).to_have_count(0, timeout=30_000)
        detail = self.detail()
        expect(detail).to_have_count(1, timeout=30_000)
        return detail, detail.get_attribute("data-kubeai-job")

    def submit_error(self, form):
        return form.locator('[data-kubeai-field="submit-error"]')

    def job_row(self, job_id: str):
        return open_kubeai_panel(self.page).locator(f'[data-kubeai-job="{job_id}"]')

    def detail(self, job_id: str | None = None):
        """The job detail in the main area (the one of ``job_id``, or the visible one)."""
        if job_id is None:
            return self.page.locator(".jp-KubeAI-job-detail:visible")
        return self.page.locator(f'.jp-KubeAI-job-detail[data-kubeai-job="{job_id}"]')


class ModelsUI:
    """Page object for the models and services parts: Register/Deploy dialogs, Models and
    Services lists, model detail (versions) and service detail (status, "Try it").
    """

    def __init__(self, page):
        self.page = page

    def dialog(self, name: str):
        """An open KubeAI dialog's form: ``register-model``, ``deploy``, ``set-alias``."""
        form = self.page.locator(f'[data-kubeai-dialog="{name}"]')
        form.wait_for(timeout=30_000)
        return form

    def fill(self, form, **fields) -> None:
        JobsUI(self.page).fill(form, **fields)

    def accept(self) -> None:
        self.page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    def confirm_warning(self) -> None:
        self.page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-warn").click()

    def model_row(self, name: str):
        return open_kubeai_panel(self.page).locator(f'[data-kubeai-model="{name}"]')

    def service_row(self, name: str):
        return open_kubeai_panel(self.page).locator(f'[data-kubeai-service="{name}"]')

    def model_detail(self, name: str | None = None):
        if name is None:
            return self.page.locator(".jp-KubeAI-model-detail:visible")
        return self.page.locator(f'.jp-KubeAI-model-detail[data-kubeai-model="{name}"]')

    def version_row(self, detail, version: int):
        return detail.locator(f'tr[data-kubeai-version="{version}"]')

    def service_detail(self, name: str | None = None):
        if name is None:
            return self.page.locator(".jp-KubeAI-service-detail:visible")
        return self.page.locator(f'.jp-KubeAI-service-detail[data-kubeai-service="{name}"]')

    def try_it(self, detail, body: str):
        """Send ``body`` from the detail's "Try it" box; returns (status locator, response locator)."""
        detail.locator('[data-kubeai-field="try-request"]').fill(body)
        detail.locator('[data-kubeai-action="try-send"]').click()
        return detail.locator('[data-kubeai-field="try-status"]'), detail.locator('[data-kubeai-field="try-response"]')
