"""``ServingBackend``: the interface the hub service runs inference services through.

Like :class:`~jupyter_kubeai.backends.base.JobBackend`, a backend keeps no
records of its own (the service's store does); it starts, switches and
stops the runtime (``python -m jupyter_kubeai.serving``) for a
:class:`~.spec.DeploymentSpec`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection

from traitlets.config import LoggingConfigurable

from ..backends.base import _BackendMeta
from ..errors import Conflict
from .spec import DeploymentSpec, ServiceStatus


class ServingBackend(LoggingConfigurable, metaclass=_BackendMeta):
    name = "base"

    async def start(self) -> None:
        """Called once when the service starts (re-attach to running deployments)."""

    async def reconcile(self, names: Collection[str]) -> None:
        """Called once at start, after :meth:`start`, with the names of every service in the store.

        A backend that runs what it recorded itself stops what belongs to a
        service not among ``names`` (deleted while nobody watched). This
        default has nothing to reconcile: a cluster keeps its own objects.
        """

    async def stop(self) -> None:
        """Called once when the service stops (what a backend does with its deployments is its own rule)."""

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

    async def restart(self, name: str) -> dict:
        """Start the deployment's model server(s) anew, same version and settings; returns what :meth:`deploy` does.

        For a service that failed (its server kept dying) once the cause is
        fixed, or to reload a predictor. A backend that cannot raises Conflict.
        """
        raise Conflict(f"Restarting service {name!r} is not supported by the {self.name} serving backend; "
                       "update it (e.g. to the same version) instead.", reason="not_supported")
