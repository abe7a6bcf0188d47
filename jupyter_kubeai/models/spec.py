"""``DeploymentSpec``: one inference service, checked, independent of where it runs.

A deployment serves one registered model version. The model is decoupled
from the image: the runtime image (``python -m jupyter_kubeai.serving``)
reads the version's folder, so updating or rolling back changes only
``version``/``model_path``, never the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..catalog.access import Selection
from ..errors import InvalidInput
from ..serving.model_dir import FORMATS

SERVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
MAX_REPLICAS = 32


@dataclass(frozen=True)
class DeploymentSpec:
    name: str  # the service's name: unique, a DNS-1035 label (also the Kubernetes object name)
    owner: str
    owner_groups: tuple[str, ...]
    project: str | None  # the model's project (None: the owner's own model)
    model: str  # registered model name
    version: int
    model_path: str  # the version's folder as the runtime sees it (registry storage, read-only)
    model_subpath: str  # the same folder relative to the share root (``models/<project>/<model>/<version>``)
    model_format: str  # one of FORMATS
    selection: Selection  # size, image (the runtime image) and GPUs per replica
    replicas: int = 1
    max_replicas: int = 0  # > replicas: autoscale between them (HPA / KServe's own)
    max_batch_size: int = 16
    max_latency_ms: float = 5.0

    def __post_init__(self):
        if not SERVICE_NAME_RE.match(self.name):
            raise InvalidInput(
                f"Service name {self.name!r} is not valid: 1-40 lowercase letters, digits and '-', starting with a letter."
            )
        if self.model_format not in FORMATS:
            raise InvalidInput(f"Model format {self.model_format!r} is not one of {', '.join(FORMATS)}.")
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise InvalidInput(f"Replicas must be from 1 to {MAX_REPLICAS}, not {self.replicas}.")
        if self.max_replicas and not self.replicas <= self.max_replicas <= MAX_REPLICAS:
            raise InvalidInput(f"Max replicas must be from {self.replicas} to {MAX_REPLICAS}, not {self.max_replicas}.")
        if not 1 <= self.max_batch_size <= 1024:
            raise InvalidInput(f"Max batch size must be from 1 to 1024, not {self.max_batch_size}.")
        if not 0 <= self.max_latency_ms <= 1000:
            raise InvalidInput(f"Max batching latency must be from 0 to 1000 ms, not {self.max_latency_ms}.")
        if ".." in self.model_subpath.split("/") or self.model_subpath.startswith("/"):
            raise InvalidInput(f"Model path {self.model_subpath!r} must be inside the registry.")


#: What a deployment is doing.
SERVICE_STATES = ("Pending", "Ready", "Updating", "Failed")


@dataclass(frozen=True)
class ServiceStatus:
    state: str  # one of SERVICE_STATES
    version: int | None = None  # the version answering requests now
    ready_replicas: int = 0
    url: str = ""  # where the backend reaches it (in-cluster URL, or the local port)
    reason: str = ""  # why it is not Ready (e.g. "Unschedulable: ...", the runtime's last error lines)
