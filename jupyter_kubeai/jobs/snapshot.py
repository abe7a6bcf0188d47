"""The job's snapshot of a notebook: the notebook as it was, and a script to run.

- :func:`inject_parameters`: papermill's convention: a new cell tagged
  ``injected-parameters`` right after the cell tagged ``parameters`` (or
  first, when there is none), so the values win over the notebook's defaults;
- :func:`notebook_to_script`: nbconvert's own Python exporter, cells tagged
  ``skip`` dropped. Magics and shell lines (``%env``, ``%%bash``, ``!pip``)
  run through IPython's own shell at run time, as in the notebook;
  ``%matplotlib`` becomes a no-op with the Agg backend (no display in a job);
- :func:`write_snapshot`: the files in the job folder (the I/O at the edge).
"""

from __future__ import annotations

import copy
import json
import keyword
from pathlib import Path

import nbformat
from nbconvert.exporters import PythonExporter
from nbconvert.preprocessors import TagRemovePreprocessor

from ..errors import InvalidInput

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
SKIP_TAG = "skip"

#: Where job folders live, relative to the owner's home: ``<home>/.kubeai/jobs/<job-id>/``.
JOBS_FOLDER = ".kubeai/jobs"
NOTEBOOK_FILE = "notebook.ipynb"
SCRIPT_FILE = "main.py"
PARAMETERS_FILE = "parameters.json"

PRELUDE = '''\
# Converted by jupyter_kubeai from {notebook}: edit the notebook, not this file.
# Magics and shell lines run through IPython's own shell, as in the notebook.
import os as _os

_os.environ.setdefault("MPLBACKEND", "Agg")
from IPython.core.interactiveshell import InteractiveShell as _InteractiveShell  # noqa: E402

get_ipython = _InteractiveShell.instance
# No display in a job: %matplotlib only chooses a backend, and Agg is set above.
get_ipython().register_magic_function(lambda line: None, "line", "matplotlib")
# Rank 0 keeps an executed copy of the notebook (executed.ipynb): __kubeai_cell__(i) starts cell i.
try:
    from jupyter_kubeai.jobs.executed import recorder as _recorder

    __kubeai_cell__ = _recorder(__file__)
except ImportError:  # an image without jupyter_kubeai: no executed copy

    def __kubeai_cell__(index):
        pass

'''

#: The largest value of one parameter, and of all together, as JSON. The job record keeps them and
#: the panel re-reads the record while the job runs: data belongs in files, not in parameters.
MAX_PARAMETER_BYTES = 64 * 1024
MAX_PARAMETERS_BYTES = 256 * 1024
#: The most parameters one job takes.
MAX_PARAMETERS = 200
#: Whole numbers must fit 64 bits: JSON readers (the panel's, PostgreSQL's, other tools') turn larger ones
#: into floats, which would silently change the value the notebook sees.
INT_RANGE = (-(2**63), 2**63 - 1)


def check_parameters(parameters: object) -> dict:
    """``parameters`` if they are valid for a job (names, JSON values, sizes), else InvalidInput saying why."""
    if not isinstance(parameters, dict):
        raise InvalidInput("Parameters must be an object of name: value.")
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidInput(f"A job takes at most {MAX_PARAMETERS} parameters, not {len(parameters)}.")
    total = 0
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise InvalidInput(f"Parameter name {str(name)[:80]!r} is not a Python variable name.")
        _check_value(name, value)
        size = len(json.dumps(value).encode())
        if size > MAX_PARAMETER_BYTES:
            raise InvalidInput(
                f"Parameter {name!r} is {size} bytes as JSON; a parameter may have at most {MAX_PARAMETER_BYTES // 1024} KiB. "
                "Put large data in a file in your volumes and pass its path as the parameter.")
        total += size
    if total > MAX_PARAMETERS_BYTES:
        raise InvalidInput(f"The parameters are {total} bytes as JSON together; at most {MAX_PARAMETERS_BYTES // 1024} KiB "
                           "are allowed. Put large data in files and pass their paths.")
    return parameters


def _check_value(name: str, value, depth: int = 0) -> None:
    if depth > 10:
        raise InvalidInput(f"Parameter {name!r} is nested too deeply.")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise InvalidInput(f"Parameter {name!r} has a whole number beyond 64 bits; pass it as text if you need it.")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInput(f"Parameter {name!r} is not a finite number (NaN and Infinity are not JSON).")
        return
    if isinstance(value, list):
        for item in value:
            _check_value(name, item, depth + 1)
        return
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        for item in value.values():
            _check_value(name, item, depth + 1)
        return
    raise InvalidInput(f"Parameter {name!r}: only text, numbers, true/false, null, lists and objects are allowed.")


def parameters_source(parameters: dict) -> str:
    """Python source assigning the parameters (checked: names and JSON values only)."""
    lines = ["# Parameters of this job"]
    for name, value in check_parameters(parameters).items():
        lines.append(f"{name} = {value!r}")
    return "\n".join(lines) + "\n"


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict) -> nbformat.NotebookNode:
    """A copy of ``nb`` with the parameters cell injected (papermill's convention)."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    if not parameters:
        return nb
    cell = nbformat.v4.new_code_cell(parameters_source(parameters))
    cell.metadata["tags"] = [INJECTED_TAG]
    position = next(
        (i + 1 for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])),
        0,
    )
    nb.cells.insert(position, cell)
    return nb


def _with_cell_markers(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy with ``__kubeai_cell__(i)`` before each code cell ``i`` that runs (for the executed copy)."""
    marked = copy.deepcopy(nb)
    marked.cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and SKIP_TAG not in cell.get("metadata", {}).get("tags", []):
            marked.cells.append(nbformat.v4.new_code_cell(f"__kubeai_cell__({index})"))
        marked.cells.append(cell)
    return marked


def notebook_to_script(nb: nbformat.NotebookNode, notebook_name: str = "the notebook") -> str:
    """The notebook as a Python script: skip-tagged cells out, magics kept working."""
    nb = _with_cell_markers(nb)
    exporter = PythonExporter()
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={SKIP_TAG}, enabled=True), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    body = "\n".join(line for line in body.splitlines() if not line.startswith(("#!/usr/bin/env", "# coding:")))
    return PRELUDE.format(notebook=notebook_name) + body.lstrip("\n") + "\n"


def write_snapshot(job_dir: Path, notebook: dict, parameters: dict, notebook_name: str) -> Path:
    """Write the notebook (parameters injected), its script and the parameters into ``job_dir``.

    ``notebook`` is the editor's content (unsaved edits included), not the
    file on disk: the job runs exactly what the user saw.
    """
    try:
        # Through the reader: sources saved as lists of lines are joined, as Jupyter does.
        nb = nbformat.reads(json.dumps(notebook), as_version=4)
        nbformat.validate(nb)
    except (nbformat.ValidationError, nbformat.reader.NotJSONError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise InvalidInput(f"This is not a valid notebook: {e}") from None
    nb = inject_parameters(nb, parameters)
    script = notebook_to_script(nb, notebook_name)
    job_dir.mkdir(parents=True, exist_ok=False)
    nbformat.write(nb, job_dir / NOTEBOOK_FILE)
    (job_dir / SCRIPT_FILE).write_text(script)
    (job_dir / PARAMETERS_FILE).write_text(json.dumps(parameters, indent=2))
    return job_dir / SCRIPT_FILE
