"""jupyter_kubeai: JupyterHub for machine-learning teams on Kubernetes.

The package holds every Python part of the project:

- ``jupyter_kubeai.hubconfig``: the hub configuration used by the top-level
  ``jupyterhub_config.py`` (local or Kubernetes mode);
- ``jupyter_kubeai.spawner``: ``KubeAISpawner``, the KubeSpawner subclass;
- ``jupyter_kubeai.local``: local mode (share folders, spawner, demo login);
- ``jupyter_kubeai.service``: the hub service "kubeai", the control plane;
- ``jupyter_kubeai.labapp``: the single-user Jupyter Server extension.

The lab extension (TypeScript, ``src/``) is shipped inside this package.
"""

try:
    from ._version import __version__
except ImportError:  # pragma: no cover - only in a source tree never built
    __version__ = "0.0.0.dev0"


def log_metric(step=None, *, all_ranks=False, **values):
    """Record metrics from a training script for the Jobs panel's chart.

    ``jupyter_kubeai.log_metric(step=10, loss=0.3, accuracy=0.9)``; see
    :mod:`jupyter_kubeai.jobs.metrics`.
    """
    from .jobs.metrics import log_metric as _log_metric

    return _log_metric(step, all_ranks=all_ranks, **values)


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "jupyter-kubeai"}]


def _jupyter_server_extension_points():
    from .labapp.extension import KubeAIServerExtension

    return [{"module": "jupyter_kubeai.labapp.extension", "app": KubeAIServerExtension}]
