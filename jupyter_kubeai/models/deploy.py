"""``ServingBackend``: the interface the hub service runs inference services through.

Like :class:`~jupyter_kubeai.backends.base.JobBackend`, a backend keeps no
records of its own (the service's store does); it starts, switches and
stops the runtime (``python -m jupyter_kubeai.serving``) for a
:class:`~.spec.DeploymentSpec`.
"""

from __future__ import annotations

from abc import abstractmethod

from traitlets.config import LoggingConfigurable

from ..backends.base import _BackendMeta
from .spec import DeploymentSpec, ServiceStatus


class ServingBackend(LoggingConfigurable, metaclass=_BackendMeta):
    name = "base"

    async def start(self) -> None:
        """Called once when the service starts (re-attach to running deployments)."""

    async def stop(self) -> None:
        """Called once when the service stops (deployments keep running)."""

    def model_path(self, share_root: str, relative: str) -> str:
        """Where the runtime sees a version's folder (``relative`` to the share, which the service sees at ``share_root``).

        On a cluster the folder is mounted read-only at KServe's usual place.
        """
        return "/mnt/models"

    @abstractmethod
    async def deploy(self, spec: DeploymentSpec) -> dict:
        """Create the deployment. InvalidInput (nothing created) if it cannot run here.

        Returns what the backend needs to find it again (kept with the record).
        """

    @abstractmethod
    async def update(self, spec: DeploymentSpec) -> dict:
        """Switch to ``spec`` (another version, replicas, size) with zero failed requests."""

    @abstractmethod
    async def delete(self, name: str) -> bool:
        """Stop and remove the deployment; False if there was none."""

    @abstractmethod
    async def status(self, name: str) -> ServiceStatus:
        """What the deployment is doing now (Failed with the reason if it vanished)."""
