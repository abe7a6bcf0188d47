"""Predictors: the plain Python classes that turn instances into predictions.

The contract (a user's ``predictor.py`` follows it with a class named
``Predictor``; subclassing :class:`Predictor` is optional)::

    class Predictor:
        def __init__(self, model_dir: str, config: dict): ...   # load the model
        def predict(self, payload): ...                          # -> one output per instance
        def reload(self, model_dir: str): ...                    # optional: load another model in place

- ``payload`` is the list of instances of a request: the v1 ``instances``,
  or the v2 input tensor with its first dimension as the instances. With
  adaptive batching on, the instances of several concurrent requests are
  concatenated into one payload, so ``predict`` must return exactly one
  output per instance, in order (a list or an array whose first dimension is
  the instances); the runtime splits it back.
- Class attributes tune what ``payload`` is:

  ``input_format``: ``"json"`` (default) — a Python list of what the client
  sent (nested lists, numbers, strings); ``"ndarray"`` — a numpy array,
  numeric only, checked before ``predict`` is called.

  ``input_dtype``: with ``ndarray``, the numpy dtype to cast to (e.g.
  ``"float32"``); None keeps the request's (v1 JSON numbers: float64 or int64).

  ``batchable``: False when ``predict`` cannot take several requests'
  instances at once; each request is then predicted on its own.

- Raise ``ValueError`` or ``TypeError`` for input the model cannot take: the
  client gets a 400 with the message. Any other exception is a bug: the
  client gets a 500 with a generic message and the traceback is logged.
- With batching off, ``predict`` may run in several threads at once
  (``--ServingApp.workers``); with batching on, one call runs at a time.
- Optional ``signature()``: the inputs/outputs the loaded model takes, as a
  model.json ``signature`` dict (or None). The v2 metadata reports it when
  the folder's model.json has none (it is not enforced on requests), so the
  Services panel's "Try it" sample can fit the model. scikit-learn models
  report ``n_features_in_``.

Built-ins: :class:`SklearnPredictor` (``model.joblib``/``model.pkl``) and
:class:`TorchScriptPredictor` (``model.pt``). scikit-learn, joblib and torch
are imported only when their format is served.
"""

from __future__ import annotations

import importlib.util
import logging
import numbers
import sys
from pathlib import Path

from ..errors import InvalidInput
from .model_dir import PREDICTOR_FILE, SKLEARN_FILES, TORCHSCRIPT_FILE, ModelInfo

log = logging.getLogger(__name__)


class Predictor:
    """Base class of predictors (optional for a user's ``predictor.py``)."""

    input_format = "json"
    input_dtype: str | None = None
    batchable = True

    def __init__(self, model_dir: str, config: dict):
        self.model_dir = model_dir
        self.config = config

    def predict(self, payload):
        raise NotImplementedError


class SklearnPredictor(Predictor):
    """A scikit-learn estimator (or pipeline) saved with joblib or pickle.

    ``payload``: a 2-D array (instances x features). ``predict`` by default;
    config ``{"predict_proba": true}`` returns class probabilities instead.
    """

    input_format = "ndarray"

    def __init__(self, model_dir: str, config: dict):
        super().__init__(model_dir, config)
        self.predict_proba = bool(config.get("predict_proba", False))
        self.model = None
        self.reload(model_dir)

    def reload(self, model_dir: str) -> None:
        path = next((Path(model_dir) / f for f in SKLEARN_FILES if (Path(model_dir) / f).is_file()), None)
        if path is None:
            raise InvalidInput(f"{model_dir} has neither {' nor '.join(SKLEARN_FILES)}.")
        try:
            import joblib

            model = joblib.load(path)
        except ImportError:  # joblib missing: a plain pickle still loads
            import pickle

            with open(path, "rb") as f:
                model = pickle.load(f)
        method = "predict_proba" if self.predict_proba else "predict"
        if not callable(getattr(model, method, None)):
            raise InvalidInput(f"The object in {path} ({type(model).__name__}) has no {method}() method.")
        self.model = model
        self._method = getattr(model, method)

    def signature(self) -> dict | None:
        """``[-1, n_features_in_]`` float64 (what v1 JSON numbers become), when the estimator knows it."""
        n = getattr(self.model, "n_features_in_", None)
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
            return None
        return {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, int(n)]}]}

    def predict(self, payload):
        if getattr(payload, "ndim", 2) != 2:
            raise ValueError(f"Expected a 2-D list of instances (instances x features), got shape {list(payload.shape)}.")
        return self._method(payload)


class TorchScriptPredictor(Predictor):
    """A TorchScript module (``torch.jit.save``) run on float32 tensors.

    On the GPU when one is available (config ``{"device": "cpu"}`` forces the
    CPU). The module's output must be one tensor whose first dimension is the
    instances. Config ``num_threads`` sets torch's intra-op threads.
    """

    input_format = "ndarray"
    input_dtype = "float32"

    def __init__(self, model_dir: str, config: dict):
        super().__init__(model_dir, config)
        import torch

        self._torch = torch
        device = config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        if config.get("num_threads"):
            torch.set_num_threads(int(config["num_threads"]))
        self.reload(model_dir)

    def reload(self, model_dir: str) -> None:
        module = self._torch.jit.load(str(Path(model_dir) / TORCHSCRIPT_FILE), map_location=self.device)
        module.eval()
        self.module = module

    def predict(self, payload):
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(payload).to(self.device)
            try:
                y = self.module(x)
            except RuntimeError as e:
                # Shape mismatches surface as RuntimeError from TorchScript: the client's input.
                raise ValueError(f"The model could not take input of shape {list(payload.shape)}: {str(e).splitlines()[0]}") from e
        if isinstance(y, (tuple, list)):
            y = y[0]
        if not isinstance(y, torch.Tensor):
            raise RuntimeError(f"TorchScript module returned {type(y).__name__}, expected a tensor")
        return y.detach().cpu().numpy()


BUILTIN = {"sklearn": SklearnPredictor, "torchscript": TorchScriptPredictor}


def load_custom_class(model_dir: Path):
    """The ``Predictor`` class of ``model_dir/predictor.py`` (the folder goes on sys.path for its imports)."""
    file = model_dir / PREDICTOR_FILE
    folder = str(model_dir.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"kubeai_user_predictor_{abs(hash(folder))}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, "Predictor", None)
    if cls is None or not isinstance(cls, type):
        raise InvalidInput(f"{file} must define a class named Predictor.")
    return cls


def load_predictor(info: ModelInfo, config: dict | None = None):
    """Build the predictor for a model folder; ``config`` is merged over model.json's."""
    merged = {**info.config, **(config or {})}
    cls = load_custom_class(info.path) if info.format == "custom" else BUILTIN[info.format]
    predictor = cls(str(info.path), merged)
    if not callable(getattr(predictor, "predict", None)):
        raise InvalidInput(f"{cls.__name__} has no predict(payload) method.")
    return predictor
