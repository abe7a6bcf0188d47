"""The panel in the browser, as a new user meets it: what they tripped over, fixed.

The real local hub, service and Lab, and Chromium. alice opens a notebook
whose cell tagged ``parameters`` holds literals of every kind (and a few
lines that are not literals): the submit dialog lists exactly the literals.
Workers set to 0 grey out Submit *and say why* next to the field. A
running job is cancelled only after a confirmation (the first answer is
"no": it keeps running); its log shows the tail first and pages back on
"Load earlier", joined without gap or overlap. Resubmit opens the submit dialog prefilled from
the job under a distinct name; an edited parameter reaches the new job's
snapshot. The next dialog starts from her last choices. The job's outputs
list no internal files, and its detail shows its history. bob, a member of
the job's project, sees it without Resubmit, Cancel or Delete. The sidebar's
Connection section shows its Refresh button (and, once an admin deprecates
the session's image, the notice) whole at the default width.
Screenshots land in ``test-artifacts/``.
"""

import json

import pytest
import requests

from processes import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = REPO / "test-artifacts"

#: The parameters cell: literals of each kind, an annotation, comments, and lines that are not literals.
PARAMETERS = """\
import os
steps = 400  # how long it runs
lr: float = 2.5e-3
label = 'mnist'
layers = [64,
          (32, 16)]
options = {"shuffle": True, 'seed': None, "ratio": -0.5}
data_dir = os.path.join("data", "x")
steps2 = steps * 2
"""

#: What the dialog shows for it: one ``name = <JSON>`` a line, only the literals.
PREFILLED = "\n".join([
    "steps = 400",
    "lr = 0.0025",
    'label = "mnist"',
    "layers = [64,[32,16]]",
    'options = {"shuffle":true,"seed":null,"ratio":-0.5}',
])

#: Filler lines printed before the steps: more than the 256 KiB tail the log view loads first.
FILLER_LINES = 3000

BODY = f"""\
import time
print("starting", label, flush=True)
for i in range({FILLER_LINES}):
    print(f"filler {{i:05d}} " + "." * 90, flush=i == {FILLER_LINES - 1})
for step in range(steps):
    print("step", step, flush=True)
    time.sleep(0.5)
with open("result.txt", "w") as f:
    f.write(f"ran {{steps}} steps\\n")
"""


def notebook() -> dict:
    def cell(source, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": [],
                "execution_count": None}

    return {
        "cells": [cell(PARAMETERS, tags=["parameters"]), cell(BODY)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def connection_shows_refresh_whole(page, panel) -> None:
    """The Connection section's Refresh button lies wholly inside the section's visible box."""
    refresh = panel.locator(".jp-KubeAI-connection .jp-KubeAI-refresh")
    refresh.wait_for(state="visible")
    page.wait_for_timeout(300)  # the accordion refits on the next frame
    assert_inside(refresh.bounding_box(), panel.locator(".jp-KubeAI-connection").bounding_box())


def assert_inside(box: dict, outer: dict) -> None:
    """``box`` lies wholly within ``outer`` (bounding boxes: x, y, width, height)."""
    assert outer["x"] <= box["x"] and box["x"] + box["width"] <= outer["x"] + outer["width"] + 0.5, (box, outer)
    assert outer["y"] <= box["y"] and box["y"] + box["height"] <= outer["y"] + outer["height"] + 0.5, (box, outer)


@pytest.fixture(scope="module")
def hub(local_hub):
    return local_hub


def test_submit_cancel_and_resubmit_as_a_new_user_would(hub):
    from playwright.sync_api import expect

    from browser import JobsUI, chromium, new_page, open_kubeai_panel, start_lab

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        page = new_page(browser)
        start_lab(page, hub.url, "alice", hub.password)
        home = hub.state_dir / "share" / "users" / "alice"
        (home / "count.ipynb").write_text(json.dumps(notebook()))

        # The Connection section at the default sidebar width: its Refresh button is whole.
        panel = open_kubeai_panel(page)
        expect(panel.locator('[data-kubeai-field="user"]')).to_have_text("alice", timeout=60_000)
        connection_shows_refresh_whole(page, panel)
        page.screenshot(path=str(ARTIFACTS / "browser-panel-connection.png"))

        ui = JobsUI(page)
        ui.dismiss_news()
        nb = ui.open_notebook(f"{hub.url}/user/alice/lab", "count.ipynb")
        form = ui.submit_dialog(nb)
        # The parameters come from the cell tagged "parameters": its literals, nothing else.
        expect(form.locator('[data-kubeai-field="parameters"]')).to_have_value(PREFILLED)

        # 0 workers: Submit is greyed out, and the field says why.
        submit = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
        why = form.locator('[data-kubeai-field="workers-invalid"]')
        expect(why).to_be_hidden()
        ui.fill(form, framework="pytorch", workers=0)
        expect(submit).to_be_disabled()
        expect(why).to_be_visible()
        expect(why).to_have_text("Workers must be at least 1.")
        page.screenshot(path=str(ARTIFACTS / "browser-submit-zero-workers.png"))
        ui.fill(form, workers=-2)
        expect(why).to_have_text("Workers must be at least 1.")
        ui.fill(form, workers=1)
        expect(why).to_be_hidden()
        expect(submit).to_be_enabled()

        ui.fill(form, framework="single")
        detail, job_id = ui.submit_and_open(form)
        expect(detail).to_have_attribute("data-kubeai-state", "Running", timeout=60_000)
        # Opened on a long log, the detail shows its tail; "Load earlier" pages back to its
        # start, joined without gap or overlap.
        log = detail.locator('[data-kubeai-field="log"]')
        expect(log).to_contain_text("step 0", timeout=30_000)
        page.locator(f'.lm-DockPanel-tabBar [data-id="kubeai-job-{job_id}"] .lm-TabBar-tabCloseIcon').click()
        expect(detail).to_have_count(0)
        ui.job_row(job_id).click()
        expect(log).to_contain_text("step 0", timeout=30_000)
        expect(log).not_to_contain_text("starting mnist")
        earlier = detail.locator('[data-kubeai-action="log-earlier"]')
        expect(earlier).to_be_visible()
        earlier.click()
        expect(log).to_contain_text("starting mnist", timeout=30_000)
        expect(earlier).to_be_hidden()
        lines = log.text_content().splitlines()
        fillers = [line for line in lines if line.startswith("filler ")]
        assert [int(line.split()[1]) for line in fillers] == list(range(FILLER_LINES))
        assert lines[0] == "starting mnist"

        # The Jobs section grew: the Connection section still shows its Refresh button whole.
        connection_shows_refresh_whole(page, open_kubeai_panel(page))
        page.screenshot(path=str(ARTIFACTS / "browser-panel-with-a-job.png"))

        # Cancel asks first; "no" leaves the job running.
        detail.locator('[data-kubeai-action="cancel"]').click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Cancel job count?")
        page.screenshot(path=str(ARTIFACTS / "browser-cancel-confirmation.png"))
        dialog.locator(".jp-Dialog-button.jp-mod-reject").click()
        expect(dialog).to_have_count(0)
        detail.locator('[data-kubeai-action="refresh-job"]').click()
        expect(detail).to_have_attribute("data-kubeai-state", "Running")
        detail.locator('[data-kubeai-action="cancel"]').click()
        page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-warn").click()
        expect(detail).to_have_attribute("data-kubeai-state", "Cancelled", timeout=30_000)
        expect(ui.job_row(job_id)).to_have_attribute("data-kubeai-state", "Cancelled", timeout=30_000)
        # The list names the owner.
        expect(ui.job_row(job_id).locator('[data-kubeai-field="owner"]')).to_have_text("by alice")

        # Resubmit: the dialog, prefilled from the job, under a distinct name; an edited parameter.
        detail.locator('[data-kubeai-action="resubmit"]').click()
        again_form = page.locator('[data-kubeai-dialog="submit-job"]')
        expect(again_form).to_be_visible(timeout=30_000)
        expect(page.locator(".jp-Dialog-header")).to_contain_text("Resubmit count")
        expect(again_form.locator('[data-kubeai-field="name"]')).to_have_value("count-2")
        expect(again_form.locator('[data-kubeai-field="framework"]')).to_have_value("single")
        expect(again_form.locator('[data-kubeai-field="parameters"]')).to_have_value(PREFILLED)
        page.screenshot(path=str(ARTIFACTS / "browser-resubmit-dialog.png"))
        ui.fill(again_form, parameters=PREFILLED.replace("steps = 400", "steps = 2"))
        ui.submit()
        expect(again_form).to_have_count(0, timeout=30_000)
        again = page.locator(f'.jp-KubeAI-job-detail:visible:not([data-kubeai-job="{job_id}"])')
        expect(again).to_have_count(1, timeout=30_000)
        again_id = again.get_attribute("data-kubeai-job")
        expect(again.locator('[data-kubeai-field="job-name"]')).to_have_text("count-2")
        expect(again).to_have_attribute("data-kubeai-state", "Succeeded", timeout=90_000)
        folder = home / ".kubeai" / "jobs" / again_id
        assert json.loads((folder / "parameters.json").read_text())["steps"] == 2
        assert (folder / "result.txt").read_text() == "ran 2 steps\n"

        # Its outputs: what the notebook wrote and its executed copy, none of the machinery's files.
        files = again.locator('[data-kubeai-section="files"]')
        expect(files.locator(f'[data-kubeai-file=".kubeai/jobs/{again_id}/result.txt"]')).to_be_visible(timeout=30_000)
        listed = files.locator("[data-kubeai-file]").evaluate_all("nodes => nodes.map(n => n.dataset.kubeaiFile)")
        names = {name.split(f"{again_id}/", 1)[1] for name in listed}
        assert not names & {"state.json", "supervisor.pid", "main.py", "parameters.json", "job.json"}, names
        assert not any(n.startswith("logs/") for n in names), names
        # Its history: who created it.
        history = again.locator('[data-kubeai-section="history"]')
        expect(history.locator('[data-kubeai-field="history-event"]').first).to_contain_text("alice", timeout=30_000)
        expect(history).to_contain_text("created")
        page.screenshot(path=str(ARTIFACTS / "browser-resubmitted-detail.png"))

        # The next dialog starts from her last choices.
        page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab:has-text("count.ipynb")').click()
        form = ui.submit_dialog(nb)
        expect(form.locator('[data-kubeai-field="framework"]')).to_have_value("single")
        expect(form.locator('[data-kubeai-field="name"]')).to_have_value("count")
        page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-reject").click()
        expect(form).to_have_count(0)

        # bob, a member of the project, sees alice's job but none of what only she may do.
        bob = new_page(browser)
        start_lab(bob, hub.url, "bob", hub.password)
        row = open_kubeai_panel(bob).locator(f'[data-kubeai-job="{again_id}"]')
        expect(row.locator('[data-kubeai-field="owner"]')).to_have_text("by alice", timeout=60_000)
        row.click()
        seen = bob.locator(f'.jp-KubeAI-job-detail[data-kubeai-job="{again_id}"]')
        expect(seen).to_have_attribute("data-kubeai-state", "Succeeded", timeout=30_000)
        expect(seen.locator('[data-kubeai-field="owner"]')).to_have_text("alice")
        expect(seen.locator('[data-kubeai-action="refresh-job"]')).to_be_visible()
        # Its outputs come through the hub service (the folder is in alice's home): downloads.
        expect(seen.locator('[data-kubeai-file="result.txt"]')).to_be_visible(timeout=30_000)
        expect(seen.locator('[data-kubeai-field="log"]')).to_contain_text("step 1", timeout=30_000)
        for action in ("resubmit", "delete", "cancel"):
            expect(seen.locator(f'[data-kubeai-action="{action}"]')).to_have_count(0)
        bob.screenshot(path=str(ARTIFACTS / "browser-teammate-job.png"))

        # An admin deprecates the image alice's session runs: the Connection section shows the
        # notice and its Refresh button, both whole.
        api = f"{hub.url}/services/kubeai/api/admin/images"
        auth = {"Authorization": f"token {hub.token('admin')}"}
        python = requests.get(f"{api}/python", headers=auth, timeout=30).json()
        newer = {**python, "name": "python-next", "display_name": "Python next", "default": True}
        r = requests.post(api, json=newer, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        r = requests.put(f"{api}/python", json={**python, "default": False, "deprecated": True,
                                                 "replacement": "python-next"}, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        panel = open_kubeai_panel(page)
        panel.locator(".jp-KubeAI-connection .jp-KubeAI-refresh").click()
        notice = panel.locator('[data-kubeai-field="notice"]')
        expect(notice).to_contain_text("deprecated", timeout=30_000)
        connection_shows_refresh_whole(page, panel)
        assert_inside(notice.bounding_box(), panel.locator(".jp-KubeAI-connection").bounding_box())
        page.screenshot(path=str(ARTIFACTS / "browser-panel-deprecated-image.png"))
