"""``KubeAISpawner``: the KubeSpawner of Kubernetes mode.

Each user's JupyterLab runs in a pod started by KubeSpawner; this subclass
adds what jupyter_kubeai needs on top (the ``KUBEAI_*`` environment that
connects the lab panel to the hub service). Every KubeSpawner setting
(``c.KubeSpawner.*`` or ``c.KubeAISpawner.*``) applies as documented by
KubeSpawner.
"""

from __future__ import annotations

from kubespawner import KubeSpawner
from traitlets import default

from .spawnerbase import KubeAISpawnerMixin


class KubeAISpawner(KubeAISpawnerMixin, KubeSpawner):
    """KubeSpawner with the KubeAI lab environment."""

    @default("kubeai_mode")
    def _default_kubeai_mode(self):
        return "kubernetes"
