"""End to end in the browser: register a model from a finished job, deploy it, "try it".

The real local hub, proxy, service, Lab and model server (``python -m
jupyter_kubeai.serving``), and Chromium: alice submits a notebook that
trains a scikit-learn LogisticRegression on 20 features and dumps it with
joblib; once the job has Succeeded she clicks "Register model" in its
detail, sees version 1 with the job's metrics and lineage in the model's
detail, deploys it, waits for the service to be Ready, and sends a 1×20
input from the "Try it" box: the answer is what the registered model
predicts in this process. A malformed request is refused with 400 and the
service keeps answering. A second version (aliased "production") is
registered; the service is updated to it and rolled back; the version in
use cannot be deleted. A folder of her home is registered from the file
browser's context menu. Deleting the service stops its model server.
Screenshots land in ``test-artifacts/``.
"""

import json
import math
import time

import pytest
import requests

from processes import REPO, processes_under

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = REPO / "test-artifacts"

TRAIN = """\
import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
import jupyter_kubeai

rng = np.random.default_rng(0)
X = rng.normal(size=(400, 20))
w = rng.normal(size=20)
y = (X @ w > 0).astype(int)
model = LogisticRegression(max_iter=500).fit(X[:300], y[:300])
accuracy = float(model.score(X[300:], y[300:]))
jupyter_kubeai.log_metric(step=0, accuracy=accuracy, train_size=300)
joblib.dump(model, "model.joblib")
print("accuracy", accuracy, flush=True)
"""

#: The 1×20 input sent from the "Try it" box.
SAMPLE = [round(0.1 * ((i * 7) % 11) - 0.5, 2) for i in range(20)]


def notebook() -> dict:
    return {
        "cells": [{"cell_type": "code", "metadata": {}, "source": TRAIN, "outputs": [], "execution_count": None}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture(scope="module")
def hub(local_hub):
    return local_hub


def serving_processes(hub) -> list[int]:
    found = []
    for pid in processes_under(hub.workdir):
        try:
            if b"jupyter_kubeai.serving" in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(pid)
        except OSError:
            pass
    return found


def test_alice_registers_deploys_and_tries_a_model_from_a_job(hub):
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    from playwright.sync_api import expect

    from browser import JobsUI, ModelsUI, chromium_page, hub_login, open_kubeai_panel, start_server_from_form

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        hub_login(page, hub.url, "alice", hub.password)
        page.wait_for_selector("#kubeai-spawn-form", timeout=60_000)
        start_server_from_form(page)
        share = hub.state_dir / "share"
        home = share / "users" / "alice"
        (home / "train_sklearn.ipynb").write_text(json.dumps(notebook()))
        # A model saved by hand in a folder of alice's home, for the file browser's "Register as model".
        from sklearn.dummy import DummyClassifier

        (home / "exported").mkdir()
        joblib.dump(DummyClassifier(strategy="constant", constant=7).fit([[0], [1]], [7, 7]),
                    home / "exported" / "model.joblib")

        # A single-process job that trains and saves the model.
        jobs = JobsUI(page)
        nb = jobs.open_notebook(f"{hub.url}/user/alice/lab", "train_sklearn.ipynb")
        form = jobs.submit_dialog(nb)
        jobs.fill(form, framework="single")
        job, job_id = jobs.submit_and_open(form)
        expect(job).to_have_attribute("data-kubeai-state", "Succeeded", timeout=120_000)
        folder = home / ".kubeai" / "jobs" / job_id
        logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        accuracy = next(r.get("values", r)["accuracy"] for r in reversed(logged) if "accuracy" in r.get("values", r))

        # "Register model" on the finished job: name and project come from the job,
        # the files from its folder.
        ui = ModelsUI(page)
        expect(job.locator(f'[data-kubeai-file=".kubeai/jobs/{job_id}/model.joblib"]')).to_be_visible(timeout=30_000)
        job.locator('[data-kubeai-action="register-model"]').click()
        register = ui.dialog("register-model")
        expect(register.locator('[data-kubeai-field="name"]')).to_have_value("train-sklearn")
        expect(register.locator('[data-kubeai-field="project"]')).to_have_value("vision")
        # It proposes the model file the job wrote, not the whole folder.
        expect(register.locator('[data-kubeai-field="path"]')).to_have_value("model.joblib")
        page.screenshot(path=str(ARTIFACTS / "e2e-models-register-dialog.png"))
        ui.accept()
        expect(register).to_have_count(0, timeout=60_000)

        # The model's detail: version 1 with the job's metrics, format and lineage.
        model = ui.model_detail("train-sklearn")
        expect(model).to_be_visible(timeout=30_000)
        v1 = ui.version_row(model, 1)
        expect(v1).to_be_visible(timeout=30_000)
        expect(v1.locator('[data-kubeai-field="format"]')).to_have_text("sklearn")
        cell = v1.locator('td[data-kubeai-metric="accuracy"]')
        expect(cell).not_to_have_text("—")
        assert math.isclose(float(cell.inner_text()), accuracy, rel_tol=1e-3), (cell.inner_text(), accuracy)
        expect(v1.locator('td[data-kubeai-metric="train_size"]')).to_have_text("300")
        expect(v1.locator('[data-kubeai-field="lineage-job"]')).to_have_text(job_id)
        row = ui.model_row("train-sklearn")
        expect(row).to_be_visible(timeout=30_000)
        expect(row.locator('[data-kubeai-field="latest"]')).to_have_text("v1")
        expect(row.locator('[data-kubeai-field="project"]')).to_have_text("vision")
        jobs.dismiss_news()
        page.screenshot(path=str(ARTIFACTS / "e2e-models-detail.png"))

        # What the registered (copied, immutable) model predicts, computed here.
        [registered] = list((share / "models").rglob("train-sklearn/1/*.joblib"))
        expected = joblib.load(registered).predict([SAMPLE]).tolist()

        # Deploy version 1; the dialog closes once the service is up.
        v1.locator('[data-kubeai-action="deploy"]').click()
        deploy = ui.dialog("deploy")
        expect(deploy.locator('[data-kubeai-field="name"]')).to_have_value("train-sklearn")
        ui.fill(deploy, name="churn", replicas=1, max_batch_size=8)
        page.screenshot(path=str(ARTIFACTS / "e2e-models-deploy-dialog.png"))
        ui.accept()
        expect(deploy).to_have_count(0, timeout=120_000)
        service = ui.service_detail("churn")
        expect(service).to_be_visible(timeout=30_000)
        expect(service).to_have_attribute("data-kubeai-state", "Ready", timeout=60_000)
        expect(service.locator('[data-kubeai-field="serving-version"]')).to_have_text("v1")
        expect(service.locator('[data-kubeai-field="endpoint"]')).to_have_text(f"{hub.url}/services/kubeai/serve/churn/")
        expect(ui.service_row("churn")).to_have_attribute("data-kubeai-state", "Ready", timeout=30_000)
        expect(ui.service_row("churn").locator('[data-kubeai-field="model-version"]')).to_have_text("train-sklearn:v1")
        # Without a signature the box offers a KServe v1 template to edit.
        assert "instances" in json.loads(service.locator('[data-kubeai-field="try-request"]').input_value())

        # "Try it" with a 1×20 input: the model's own prediction.
        status, response = ui.try_it(service, json.dumps({"instances": [SAMPLE]}))
        expect(status).to_have_attribute("data-kubeai-status", "200", timeout=30_000)
        assert json.loads(response.inner_text())["predictions"] == expected
        page.screenshot(path=str(ARTIFACTS / "e2e-services-try-it.png"))

        # A malformed request is refused with the server's reason; the service still answers.
        status, response = ui.try_it(service, json.dumps({"instances": [[1, 2]]}))
        expect(status).to_have_attribute("data-kubeai-status", "400", timeout=30_000)
        expect(response).not_to_be_empty()
        status, response = ui.try_it(service, json.dumps({"instances": [SAMPLE, SAMPLE]}))
        expect(status).to_have_attribute("data-kubeai-status", "200", timeout=30_000)
        assert json.loads(response.inner_text())["predictions"] == expected * 2

        # The lineage link opens the job that produced the version.
        page.locator('.lm-DockPanel-tabBar [data-id^="kubeai-model-"]').click()
        v1.locator('[data-kubeai-field="lineage-job"]').click()
        expect(jobs.detail()).to_have_attribute("data-kubeai-job", job_id, timeout=30_000)

        # A second version (the whole job folder this time), aliased "production".
        job.locator('[data-kubeai-action="register-model"]').click()
        register = ui.dialog("register-model")
        ui.fill(register, path="")
        ui.accept()
        expect(register).to_have_count(0, timeout=60_000)
        v2 = ui.version_row(model, 2)
        expect(v2).to_be_visible(timeout=30_000)
        v2.locator('[data-kubeai-action="set-alias"]').click()
        alias = ui.dialog("set-alias")
        ui.fill(alias, alias="production")
        ui.accept()
        expect(v2.locator('[data-kubeai-alias="production"]')).to_be_visible(timeout=30_000)
        expect(row.locator('[data-kubeai-field="latest"]')).to_have_text("v2", timeout=30_000)
        expect(row.locator('[data-kubeai-field="aliases"]')).to_have_text("production → v2")

        # Update the service to v2, then roll back to v1.
        page.locator('.lm-DockPanel-tabBar [data-id="kubeai-service-churn"]').click()
        expect(service.locator('[data-kubeai-field="update-version"] option')).to_have_count(2, timeout=30_000)
        service.locator('[data-kubeai-field="update-version"]').select_option("2")
        service.locator('[data-kubeai-action="update"]').click()
        expect(page.locator(".jp-Dialog")).to_contain_text("Update churn to v2?")
        ui.accept()
        expect(service.locator('[data-kubeai-field="serving-version"]')).to_have_text("v2", timeout=60_000)
        expect(service.locator('[data-kubeai-field="previous-version"]')).to_have_text("v1")
        expect(service).to_have_attribute("data-kubeai-state", "Ready", timeout=60_000)
        status, response = ui.try_it(service, json.dumps({"instances": [SAMPLE]}))
        expect(status).to_have_attribute("data-kubeai-status", "200", timeout=30_000)
        assert json.loads(response.inner_text())["predictions"] == expected
        expect(service.locator('[data-kubeai-action="rollback"]')).to_have_text("Roll back to v1")
        service.locator('[data-kubeai-action="rollback"]').click()
        ui.confirm_warning()  # "Roll churn back to v1?"
        expect(service.locator('[data-kubeai-field="serving-version"]')).to_have_text("v1", timeout=60_000)
        expect(service).to_have_attribute("data-kubeai-state", "Ready", timeout=60_000)
        expect(service.locator('[data-kubeai-field="update-version"]')).to_have_value("1")
        expect(ui.service_row("churn").locator('[data-kubeai-field="model-version"]')).to_have_text(
            "train-sklearn:v1", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "e2e-services-rolled-back.png"))

        # A version a service uses cannot be deleted: the detail says why and keeps it.
        page.locator('.lm-DockPanel-tabBar [data-id^="kubeai-model-"]').click()
        v1.locator('[data-kubeai-action="delete-version"]').click()
        ui.confirm_warning()
        expect(model.locator('[data-kubeai-field="detail-error"]')).to_be_visible(timeout=30_000)
        expect(v1).to_be_visible()

        # From the file browser: right-click a folder of the home, "Register as model".
        page.click('.jp-SideBar [data-id="filebrowser"]')
        page.locator(".jp-DirListing-item", has_text="exported").click(button="right")
        page.locator(".lm-Menu-item", has_text="Register as model").click()
        register = ui.dialog("register-model")
        expect(register.locator('[data-kubeai-field="path"]')).to_have_value("exported")
        expect(register.locator('[data-kubeai-field="name"]')).to_have_value("exported")
        ui.accept()
        expect(register).to_have_count(0, timeout=60_000)
        exported = ui.model_detail("exported")
        expect(ui.version_row(exported, 1).locator('[data-kubeai-field="format"]')).to_have_text("sklearn", timeout=30_000)
        expect(ui.version_row(exported, 1).locator('[data-kubeai-field="lineage-source"]')).to_have_text("exported")
        expect(ui.model_row("exported")).to_be_visible(timeout=30_000)

        # A service deleted elsewhere (as the CLI would): its open detail says Deleted and the
        # list drops it, within one refresh. Its history says who did what.
        api = f"{hub.url}/services/kubeai/api"
        auth = {"Authorization": f"token {hub.token('alice')}"}
        exported_id = int(ui.model_detail("exported").get_attribute("data-kubeai-model-id"))
        r = requests.post(f"{api}/services", json={"name": "other", "model_id": exported_id, "version": 1},
                          headers=auth, timeout=120)
        assert r.status_code in (200, 201), r.text
        open_kubeai_panel(page).locator('[data-kubeai-action="refresh-services"]').click()
        ui.service_row("other").click()
        other = ui.service_detail("other")
        expect(other).to_have_attribute("data-kubeai-state", "Ready", timeout=60_000)
        history = other.locator('[data-kubeai-section="history"]')
        expect(history.locator('[data-kubeai-action="created"]')).to_contain_text("alice", timeout=30_000)
        assert requests.delete(f"{api}/services/other", headers=auth, timeout=60).status_code == 204
        other.locator('[data-kubeai-action="refresh-service"]').click()
        expect(other).to_have_attribute("data-kubeai-state", "Deleted", timeout=30_000)
        expect(other.locator('[data-kubeai-field="state"]')).to_have_text("Deleted")
        expect(other.locator('[data-kubeai-action="update"]')).to_be_hidden()
        expect(ui.service_row("other")).to_have_count(0, timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "e2e-services-deleted-elsewhere.png"))

        # Deleting the service (after a confirmation) stops its model server.
        assert serving_processes(hub), "no model server process while the service is Ready"
        page.locator('.lm-DockPanel-tabBar [data-id="kubeai-service-churn"]').click()
        service.locator('[data-kubeai-action="delete-service"]').click()
        ui.confirm_warning()
        expect(service).to_have_count(0, timeout=60_000)
        open_kubeai_panel(page)
        expect(ui.service_row("churn")).to_have_count(0, timeout=30_000)
        deadline = time.monotonic() + 30
        while serving_processes(hub) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serving_processes(hub) == []
