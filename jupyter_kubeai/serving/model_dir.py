"""The model folder: what the runtime serves, and how it knows the format.

One place reads (and writes) the folder's ``model.json``. The model registry
writes it into every version folder (``models/<project>/<model>/<version>/``);
a folder without one is still served, its format guessed from its files.

``model.json`` (every field optional except ``format``)::

    {
      "format": "sklearn",              # "sklearn" | "torchscript" | "custom"
      "name": "churn",                  # registered model name (informative)
      "version": 3,                     # version number; the runtime reports it
                                        # in the v2 metadata unless --version says otherwise
      "signature": {                    # input/output tensors, Open Inference Protocol v2 style
        "inputs":  [{"name": "input-0",  "datatype": "FP64",  "shape": [-1, 20]}],
        "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
      },
      "config": {"predict_proba": true} # settings passed to the predictor (see predictors.py)
    }

- ``format``: which built-in predictor loads the folder: ``sklearn`` (a
  joblib/pickle file ``model.joblib`` or ``model.pkl``), ``torchscript``
  (``model.pt``, saved with ``torch.jit.save``), or ``custom`` (a
  ``predictor.py`` with a class ``Predictor``).
- ``signature``: optional. When given, requests are checked against it
  (shape, ``-1`` meaning any size, the first dimension being the batch; and
  the v2 datatype) and a mismatch is a 400 that says what the model expects.
  It is also what ``GET /v2/models/<name>`` reports.
- ``config``: optional settings for the predictor, merged under the
  runtime's ``--ServingApp.predictor_config``.

A ``predictor.py`` in the folder always wins: it may load the folder's
joblib or TorchScript file itself (the user's own pre- and post-processing).
Without ``model.json`` the format is guessed: ``predictor.py``, then
``model.joblib``/``model.pkl``, then ``model.pt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput

MODEL_JSON = "model.json"
PREDICTOR_FILE = "predictor.py"
SKLEARN_FILES = ("model.joblib", "model.pkl")
TORCHSCRIPT_FILE = "model.pt"
FORMATS = ("sklearn", "torchscript", "custom")

#: Open Inference Protocol v2 datatypes and their numpy dtype names (BYTES: strings).
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the signature: ``shape`` uses -1 for any size."""

    name: str
    datatype: str | None = None
    shape: tuple[int, ...] | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype or "", "shape": list(self.shape) if self.shape is not None else []}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime learned about a model folder."""

    path: Path
    format: str  # one of FORMATS: the predictor that serves it
    signature: Signature = Signature()
    config: dict = field(default_factory=dict)
    version: str = ""  # from model.json, "" when it has none
    metadata: dict = field(default_factory=dict)  # model.json as written

    @property
    def model_file(self) -> Path | None:
        """The file the built-in predictor loads (None for ``custom``)."""
        if self.format == "sklearn":
            return next((self.path / f for f in SKLEARN_FILES if (self.path / f).is_file()), None)
        if self.format == "torchscript":
            return self.path / TORCHSCRIPT_FILE
        return None


def _tensor_specs(raw, where: str) -> tuple[TensorSpec, ...]:
    prefix = where.rstrip("s")  # "inputs" -> default names "input-0", ...
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput(f"{where} must be a list of {{name, datatype, shape}}.")
    specs = []
    for i, item in enumerate(raw):
        name = item.get("name", f"{prefix}-{i}") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise InvalidInput(f"{where}[{i}] must be an object with a string name.")
        datatype = item.get("datatype") or None
        if datatype is not None and datatype not in DATATYPES:
            raise InvalidInput(f"{where}[{i}] has datatype {datatype!r}; use one of {', '.join(DATATYPES)}.")
        shape = item.get("shape")
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape):
                raise InvalidInput(f"{where}[{i}].shape must be a list of sizes (-1 for any).")
            shape = tuple(shape)
        specs.append(TensorSpec(name, datatype, shape))
    return tuple(specs)


def parse_signature(raw) -> Signature:
    """A ``signature`` object of model.json (or None) as a :class:`Signature`."""
    if raw is None:
        return Signature()
    if not isinstance(raw, dict):
        raise InvalidInput("signature must be an object with inputs and outputs.")
    return Signature(_tensor_specs(raw.get("inputs"), "inputs"), _tensor_specs(raw.get("outputs"), "outputs"))


def guess_format(path: Path) -> str | None:
    """The format from the folder's files alone, or None when nothing servable is there."""
    if (path / PREDICTOR_FILE).is_file():
        return "custom"
    if any((path / f).is_file() for f in SKLEARN_FILES):
        return "sklearn"
    if (path / TORCHSCRIPT_FILE).is_file():
        return "torchscript"
    return None


def read_model_json(folder: Path, *, max_bytes: int | None = None) -> dict:
    """The folder's model.json as a dict ({} without one); InvalidInput saying what to fix when it is broken."""
    path = folder / MODEL_JSON
    if not path.is_file():
        return {}
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise InvalidInput(f"{path} is over {max_bytes // 1024} KiB; it should hold only the format, signature and config.")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidInput(f"{path} is not valid JSON ({e}); fix or remove it.") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path} must hold a JSON object; fix or remove it.")
    return doc


def read_model_dir(path: str | Path) -> ModelInfo:
    """Read a model folder: its model.json when present, else what its files say.

    Raises :class:`InvalidInput` with what to fix when the folder cannot be served.
    """
    path = Path(path)
    if not path.is_dir():
        raise InvalidInput(f"Model folder {path} does not exist or is not a folder.")
    metadata = read_model_json(path)
    meta_file = path / MODEL_JSON
    fmt = metadata.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"{meta_file} has format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if (path / PREDICTOR_FILE).is_file():
        fmt = "custom"  # the user's own predictor.py overrides the built-ins
    elif fmt is None:
        fmt = guess_format(path)
        if fmt is None:
            raise InvalidInput(
                f"Nothing to serve in {path}: put a {PREDICTOR_FILE}, {' or '.join(SKLEARN_FILES)}, or {TORCHSCRIPT_FILE} there."
            )
    info = ModelInfo(
        path=path,
        format=fmt,
        signature=parse_signature(metadata.get("signature")),
        config=dict(metadata.get("config") or {}),
        version=str(metadata["version"]) if metadata.get("version") is not None else "",
        metadata=metadata,
    )
    if fmt == "custom" and not (path / PREDICTOR_FILE).is_file():
        raise InvalidInput(f"{meta_file} says format custom but {path / PREDICTOR_FILE} is missing.")
    if fmt == "sklearn" and info.model_file is None:
        raise InvalidInput(f"{path} has format sklearn but neither {' nor '.join(SKLEARN_FILES)}.")
    if fmt == "torchscript" and not (path / TORCHSCRIPT_FILE).is_file():
        raise InvalidInput(f"{path} has format torchscript but no {TORCHSCRIPT_FILE}.")
    return info


def write_model_json(
    path: str | Path,
    *,
    format: str,
    signature: dict | None = None,
    config: dict | None = None,
    **extra,
) -> Path:
    """Write ``model.json`` into a model folder (the registry's side of the contract).

    ``extra`` (``name``, ``version``, lineage...) is stored as given.
    """
    if format not in FORMATS:
        raise InvalidInput(f"Model format {format!r} is not one of {', '.join(FORMATS)}.")
    parse_signature(signature)  # refuse what the runtime could not read
    doc = {"format": format, **extra}
    if signature is not None:
        doc["signature"] = signature
    if config:
        doc["config"] = config
    target = Path(path) / MODEL_JSON
    target.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return target
