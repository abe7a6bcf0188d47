"""Notebook snapshots: parameters injected papermill-style, scripts that really run."""

import json
import subprocess
import sys

import nbformat
import pytest

from jupyter_kubeai.errors import InvalidInput
from jupyter_kubeai.jobs.snapshot import inject_parameters, notebook_to_script, write_snapshot


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source) if not source.startswith("# md:") else nbformat.v4.new_markdown_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


NB = notebook(
    ("import os", []),
    ("epochs = 1\nlr = 0.1\nname = 'default'", ["parameters"]),
    ("# md: some prose", []),
    ("%env KUBEAI_TEST=from-magic\n!echo shell says $KUBEAI_TEST", []),
    ("%%bash\necho bash cell", []),
    ("%matplotlib inline", []),
    ("raise SystemExit('this cell is only for the notebook')", ["skip"]),
    ("print(f'epochs={epochs} lr={lr} name={name} tags={tags}')", []),
)


def test_parameters_go_right_after_the_parameters_cell():
    nb = inject_parameters(NB, {"epochs": 3, "name": "run-1", "tags": ["a", "b"]})
    assert [c.metadata.get("tags") for c in nb.cells[:3]] == [None, ["parameters"], ["injected-parameters"]]
    assert nb.cells[2].source == "# Parameters of this job\nepochs = 3\nname = 'run-1'\ntags = ['a', 'b']\n"
    again = inject_parameters(nb, {"epochs": 4})  # a resubmission replaces, never stacks
    assert sum("injected-parameters" in c.metadata.get("tags", []) for c in again.cells) == 1
    assert NB.cells[2].cell_type == "markdown"  # the original is untouched


def test_without_a_parameters_cell_they_come_first():
    nb = inject_parameters(notebook(("print(x)", [])), {"x": 1})
    assert nb.cells[0].source.endswith("x = 1\n")


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"import": 1}, "not a Python variable name"),
        ({"a b": 1}, "not a Python variable name"),
        ({"x": object()}, "only text, numbers"),
        ({"x": {1: 2}}, "only text, numbers"),
    ],
)
def test_bad_parameters_are_refused(parameters, message):
    with pytest.raises(InvalidInput, match=message):
        inject_parameters(NB, parameters)


def test_the_script_runs_like_the_notebook(tmp_path):
    script = write_snapshot(tmp_path / "job", NB, {"epochs": 3, "tags": ["x"]}, "train.ipynb")
    source = script.read_text()
    assert source.startswith("# Converted by jupyter_kubeai from train.ipynb")
    assert "only for the notebook" not in source  # the skip-tagged cell is gone
    assert "some prose" in source  # markdown stays, as comments
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "shell says from-magic" in result.stdout
    assert "bash cell" in result.stdout
    assert "epochs=3 lr=0.1 name=default tags=['x']" in result.stdout
    assert json.loads((tmp_path / "job/parameters.json").read_text()) == {"epochs": 3, "tags": ["x"]}
    saved = nbformat.read(tmp_path / "job/notebook.ipynb", as_version=4)
    assert saved.cells[2].metadata["tags"] == ["injected-parameters"]


def test_a_failing_notebook_fails_its_script(tmp_path):
    nb = notebook(("print('before')", []), ("1 / 0", []))
    script = write_snapshot(tmp_path / "job", nb, {}, "bad.ipynb")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ZeroDivisionError" in result.stderr and "before" in result.stdout


def test_invalid_notebooks_and_existing_job_folders_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match="not a valid notebook"):
        write_snapshot(tmp_path / "job", {"cells": "nope"}, {}, "x.ipynb")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        write_snapshot(tmp_path / "taken", NB, {}, "x.ipynb")


def test_notebook_to_script_is_pure():
    assert notebook_to_script(NB) == notebook_to_script(NB)


def test_a_notebook_as_saved_on_disk_with_sources_as_lists_of_lines(tmp_path):
    raw = json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1\nprint(a)")])))
    raw["cells"][0]["source"] = ["a = 1\n", "print(a)"]
    write_snapshot(tmp_path / "job", raw, {}, "saved.ipynb")
    assert "a = 1\nprint(a)" in (tmp_path / "job" / "main.py").read_text()
