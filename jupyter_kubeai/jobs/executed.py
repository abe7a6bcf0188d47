"""The executed copy of a job's notebook: what each cell printed, written by rank 0.

The converted script calls ``__kubeai_cell__(i)`` before the code of
cell ``i`` of the snapshot notebook (see :func:`~.snapshot.notebook_to_script`).
On rank 0, :class:`ExecutedNotebook` tees ``sys.stdout``/``sys.stderr``
into the current cell's outputs and rewrites ``executed.ipynb`` in the job
folder at every cell boundary and at exit, so a running job's progress is
visible and a failed job's copy shows its traceback on the cell that
raised. Other ranks record nothing; their output stays in their logs.

Output written straight to the file descriptors (``!shell`` lines,
C extensions) is in the logs only.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from pathlib import Path

import nbformat

from .metrics import _rank
from .snapshot import NOTEBOOK_FILE

EXECUTED_FILE = "executed.ipynb"


class _Tee:
    def __init__(self, stream, sink, name: str):
        self._stream, self._sink, self._name = stream, sink, name

    def write(self, text: str) -> int:
        self._sink(self._name, text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class ExecutedNotebook:
    def __init__(self, notebook: Path, out: Path):
        self.out = out
        self.nb = nbformat.read(notebook, as_version=4)
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        self.current: int | None = None
        self.count = 0

    def _append(self, name: str, text: str) -> None:
        if self.current is None or not text:
            return
        outputs = self.nb.cells[self.current].outputs
        if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].name == name:
            outputs[-1].text += text
        else:
            outputs.append(nbformat.v4.new_output("stream", name=name, text=text))

    def enter(self, index: int) -> None:
        self.save()
        if 0 <= index < len(self.nb.cells):
            self.count += 1
            self.current = index
            self.nb.cells[index].execution_count = self.count

    def fail(self, error: BaseException) -> None:
        if self.current is None:
            return
        self.nb.cells[self.current].outputs.append(nbformat.v4.new_output(
            "error", ename=type(error).__name__, evalue=str(error),
            traceback=traceback.format_exception(error),
        ))
        self.current = None  # the printed traceback that follows is in the error output already

    def save(self) -> None:
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        try:
            nbformat.write(self.nb, tmp)
            os.replace(tmp, self.out)
        except OSError:
            pass  # a read-only or full job folder must not fail the training


def recorder(script: str):
    """The ``__kubeai_cell__`` function for the script at ``script`` (a no-op off rank 0)."""
    notebook = Path(script).with_name(NOTEBOOK_FILE)
    if _rank() != 0 or not notebook.exists():
        return lambda index: None
    job_dir = Path(os.environ.get("KUBEAI_JOB_DIR") or Path(script).parent)
    book = ExecutedNotebook(notebook, job_dir / EXECUTED_FILE)
    sys.stdout = _Tee(sys.stdout, book._append, "stdout")
    sys.stderr = _Tee(sys.stderr, book._append, "stderr")
    previous_hook = sys.excepthook

    def excepthook(kind, error, tb):
        book.fail(error)
        book.save()
        previous_hook(kind, error, tb)

    sys.excepthook = excepthook
    atexit.register(book.save)
    return book.enter
