"""End to end in the browser: a notebook submitted as a 2-rank DDP job from its toolbar.

The real local hub, proxy, service and Lab, and Chromium: alice opens a
notebook that trains a small torch model with DistributedDataParallel,
edits it in the editor (unsaved), submits it from the toolbar with a
parameter, and watches the job reach Succeeded in the Jobs panel, with
the metrics chart, per-rank logs and output files (one opened in Lab);
then resubmits it (the dialog prefilled from the job, a longer run), cancels
the new job (after a confirmation), and deletes the first one's record.
Screenshots land in ``test-artifacts/``.
"""

import json
import time

import pytest

from processes import REPO, processes_under

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = REPO / "test-artifacts"

TRAIN = """\
import os
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
import jupyter_kubeai

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(64, 4)
y = x.sum(1, keepdim=True)
for step in range(steps):
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    jupyter_kubeai.log_metric(step=step, loss=loss.item())
    print(f"rank {rank} of {dist.get_world_size()} step {step} loss {loss.item():.4f} marker {marker}", flush=True)
if rank == 0:
    torch.save(model.module.state_dict(), "model.pt")
    with open("summary.txt", "w") as f:
        f.write(f"trained {steps} steps on {dist.get_world_size()} ranks\\n")
dist.destroy_process_group()
"""


def notebook() -> dict:
    def cell(source, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "outputs": [],
                "execution_count": None}

    return {
        "cells": [cell("steps = 2", tags=["parameters"]), cell('marker = "saved"'), cell(TRAIN)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def wait_until(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def hub(local_hub):
    return local_hub


def test_alice_submits_a_ddp_job_from_the_notebook_toolbar(hub):
    from playwright.sync_api import expect

    from browser import JobsUI, chromium_page, hub_login, open_kubeai_panel, start_server_from_form

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        hub_login(page, hub.url, "alice", hub.password)
        page.wait_for_selector("#kubeai-spawn-form", timeout=60_000)
        start_server_from_form(page)
        home = hub.state_dir / "share" / "users" / "alice"
        (home / "train_ddp.ipynb").write_text(json.dumps(notebook()))

        ui = JobsUI(page)
        nb = ui.open_notebook(f"{hub.url}/user/alice/lab", "train_ddp.ipynb")
        # An edit in the editor, not saved: the job must run it.
        editor = nb.locator(".jp-Cell").nth(1).locator(".cm-content")
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.type("marker = 42")
        expect(editor).to_have_text("marker = 42")

        form = ui.submit_dialog(nb)
        expect(form.locator('[data-kubeai-field="name"]')).to_have_value("train_ddp")
        expect(form.locator('[data-kubeai-field="project"]')).to_have_value("vision")
        # TensorFlow asks for parameter servers; the others do not.
        ui.fill(form, framework="tensorflow")
        expect(form.locator('[data-kubeai-row="parameter_servers"]')).to_be_visible()
        ui.fill(form, framework="pytorch", workers=2, procs_per_worker=1, parameters="steps = 4")
        expect(form.locator('[data-kubeai-row="parameter_servers"]')).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "e2e-jobs-submit-dialog.png"))
        # The submission opens the job's detail, and the Jobs panel lists it.
        detail, job_id = ui.submit_and_open(form)
        assert job_id and job_id.startswith("train-ddp-"), job_id
        row = ui.job_row(job_id)
        expect(row).to_be_visible(timeout=30_000)
        expect(row.locator('[data-kubeai-field="framework"]')).to_have_text("PyTorch distributed (DDP)")
        expect(row.locator('[data-kubeai-field="workers"]')).to_have_text("2 workers")
        expect(row.locator('[data-kubeai-field="project"]')).to_have_text("vision")

        expect(row).to_have_attribute("data-kubeai-state", "Succeeded", timeout=120_000)
        expect(detail).to_have_attribute("data-kubeai-state", "Succeeded", timeout=30_000)
        expect(detail.locator('[data-kubeai-field="state"]')).to_have_text("Succeeded")

        # The metrics chart: one line of loss over the 4 steps the parameter asked for.
        chart = detail.locator('[data-kubeai-metric="loss"]')
        expect(chart.locator("svg path.jp-KubeAI-chart-line")).to_have_count(1, timeout=30_000)
        assert chart.locator("svg path.jp-KubeAI-chart-line").get_attribute("d").count("L") == 3
        expect(chart.locator("figcaption")).to_contain_text("(step 3)")

        # Logs per rank, from the editor's content (the unsaved edit).
        expect(detail.locator('[data-kubeai-field="replica"] option')).to_contain_text(
            ["main", "rank-0", "rank-1"], timeout=30_000
        )
        detail.locator('[data-kubeai-field="replica"]').select_option("rank-1")
        log = detail.locator('[data-kubeai-field="log"]')
        expect(log).to_contain_text("rank 1 of 2 step 3", timeout=30_000)
        expect(log).to_contain_text("marker 42")

        # Output files, openable in Lab (they live under the hidden .kubeai/ folder).
        files = detail.locator('[data-kubeai-section="files"]')
        folder = f".kubeai/jobs/{job_id}"
        expect(files.locator(f'[data-kubeai-file="{folder}/model.pt"]')).to_be_visible(timeout=30_000)
        summary = files.locator(f'[data-kubeai-file="{folder}/summary.txt"]')
        expect(summary).to_be_visible()
        detail.locator('[data-kubeai-section="metrics"]').scroll_into_view_if_needed()
        ui.dismiss_news()
        page.screenshot(path=str(ARTIFACTS / "e2e-jobs-detail-succeeded.png"))
        open_kubeai_panel(page)
        page.screenshot(path=str(ARTIFACTS / "e2e-jobs-panel.png"))

        summary.locator("a").click()
        opened = page.locator(".jp-FileEditor:visible .cm-content")
        expect(opened).to_contain_text("trained 4 steps on 2 ranks", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "e2e-jobs-output-opened.png"))

        # Resubmit runs the same snapshot as a new job (the dialog prefilled, a distinct name); Cancel stops it.
        page.locator(f'.lm-DockPanel-tabBar [data-id="kubeai-job-{job_id}"]').click()
        detail.locator('[data-kubeai-action="resubmit"]').click()
        form = page.locator('[data-kubeai-dialog="submit-job"]')
        expect(form.locator('[data-kubeai-field="name"]')).to_have_value("train_ddp-2", timeout=30_000)
        expect(form.locator('[data-kubeai-field="workers"]')).to_have_value("2")
        expect(form.locator('[data-kubeai-field="parameters"]')).to_have_value("steps = 4")
        ui.fill(form, parameters="steps = 400")
        ui.submit()
        expect(form).to_have_count(0, timeout=30_000)
        again = page.locator(f'.jp-KubeAI-job-detail:visible:not([data-kubeai-job="{job_id}"])')
        expect(again).to_have_count(1, timeout=30_000)
        again_id = again.get_attribute("data-kubeai-job")
        expect(ui.job_row(again_id)).to_be_visible(timeout=30_000)
        expect(again).to_have_attribute("data-kubeai-state", "Running", timeout=60_000)
        again.locator('[data-kubeai-action="cancel"]').click()
        page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-warn").click()  # "Cancel job?" confirmed
        expect(again).to_have_attribute("data-kubeai-state", "Cancelled", timeout=30_000)
        expect(ui.job_row(again_id)).to_have_attribute("data-kubeai-state", "Cancelled", timeout=30_000)
        expect(again.locator('[data-kubeai-action="cancel"]')).to_have_count(0)
        wait_until(lambda: processes_under(home / ".kubeai" / "jobs" / again_id) == [], "the cancelled job's ranks to end")
        page.screenshot(path=str(ARTIFACTS / "e2e-jobs-resubmitted-cancelled.png"))

        # A finished job's record can be deleted (after a confirmation); the list forgets it.
        page.locator(f'.lm-DockPanel-tabBar [data-id="kubeai-job-{job_id}"]').click()
        detail.locator('[data-kubeai-action="delete"]').click()
        page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-warn").click()
        expect(ui.detail(job_id)).to_have_count(0, timeout=30_000)
        expect(ui.job_row(job_id)).to_have_count(0, timeout=30_000)
        # Its folder (outputs and logs) stays in alice's files.
        assert (home / folder / "model.pt").is_file()
