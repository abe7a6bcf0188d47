"""The predictor runtime: serve one model folder over HTTP.

``python -m jupyter_kubeai.serving --model-dir DIR --name NAME --port PORT``
(:mod:`.app`) serves a scikit-learn/joblib pickle, a TorchScript module or a
user's ``predictor.py`` (:mod:`.predictors`, format from ``model.json``:
:mod:`.model_dir`) over KServe v1 and the Open Inference Protocol v2
(:mod:`.handlers`, :mod:`.protocol`), with adaptive batching
(:mod:`.batching`), Prometheus metrics (:mod:`.metrics`) and graceful
shutdown. The same runtime is the image's command on Kubernetes.

Importing this package is cheap: torch and scikit-learn are imported only
when a model of that format is loaded.
"""

from .predictors import Predictor

__all__ = ["Predictor"]
