"""``KubeAISpawner``: the KubeSpawner of Kubernetes mode.

Each user's JupyterLab runs in a pod started by KubeSpawner; this subclass
adds what jupyter_kubeai needs on top:

- ``profile_list`` from the catalog, per user (only what their groups
  allow; the last choice preselected), the choice checked before anything
  is created (see :mod:`jupyter_kubeai.spawnerbase`);
- the shared storage: the user's folder at home, one folder per project
  (hub group, re-read at every spawn), the global folder read-only, from
  one CephFS/NFS PVC with subPaths, a direct NFS export, or a per-user PVC
  for the home (the traits of :class:`~.kube.settings.KubeSettings` are the reference);
- GPUs: the size's GPU count as the extended resource limit, with the GPU
  tolerations/node selector only for GPU sizes, so CPU sizes never land on
  tainted GPU nodes;
- readable progress events on the spawn page.

Every KubeSpawner setting (``c.KubeSpawner.*``) still applies.
"""

from __future__ import annotations

import posixpath

from kubernetes_asyncio.client.models import V1Toleration, V1Volume, V1VolumeMount
from kubespawner import KubeSpawner
from kubespawner.utils import get_k8s_model
from traitlets import default

from .catalog.access import Selection, profile_list
from .kube.events import readable_event
from .kube.objects import StorageConfig, make_scheduling, make_volumes, project_mount_path
from .kube.settings import KubeSettings
from .spawnerbase import KubeAISpawnerMixin


class KubeAISpawner(KubeAISpawnerMixin, KubeSettings, KubeSpawner):
    """KubeSpawner with the catalog, the shared storage and GPUs of jupyter_kubeai."""

    @default("kubeai_mode")
    def _default_kubeai_mode(self):
        return "kubernetes"

    # Storage and GPU settings (share_type, *_mount_path, user_pvc, gpu_tolerations...)
    # come from KubeSettings, shared with the job backend.

    @default("storage_pvc_ensure")
    def _default_storage_pvc_ensure(self):
        return self.user_pvc

    @property
    def storage_config(self) -> StorageConfig:
        return self.make_storage_config(self.pvc_name if self.user_pvc else "")

    # --- the catalog -----------------------------------------------------------------------------

    @default("profile_list")
    def _default_profile_list(self):
        return lambda spawner: profile_list(spawner.catalog_view(), spawner.user_options or spawner.last_options())

    def project_for_placement(self, selection: Selection) -> str | None:
        """The first of the user's projects for which the size has a placement of its own."""
        placed = {group for group, _ in selection.profile.project_placement}
        return next((g for g in self.project_names if g in placed), None)

    def mount_paths(self) -> dict:
        storage = self.storage_config
        if storage.share == "none":
            return {"home": storage.home_mount} if self.user_pvc else {}
        return {
            "home": storage.home_mount,
            "projects": {g: project_mount_path(storage, g) for g in self.project_names},
            "global": posixpath.normpath(storage.global_mount),
        }

    async def get_pod_manifest(self):
        """KubeSpawner's pod, plus the user's volumes and the size's scheduling."""
        pod = await super().get_pod_manifest()
        volumes, mounts = make_volumes(self.storage_config, self.user.name, self.project_names)
        pod.spec.volumes = (pod.spec.volumes or []) + [get_k8s_model(V1Volume, v) for v in volumes]
        container = pod.spec.containers[0]
        container.volume_mounts = (container.volume_mounts or []) + [get_k8s_model(V1VolumeMount, m) for m in mounts]
        if self.selection is not None:
            scheduling = make_scheduling(self.selection, self.gpu_scheduling, self.project_for_placement(self.selection))
            pod.spec.node_selector = {**(pod.spec.node_selector or {}), **scheduling["node_selector"]} or None
            tolerations = [get_k8s_model(V1Toleration, t) for t in scheduling["tolerations"]]
            pod.spec.tolerations = (pod.spec.tolerations or []) + tolerations or None
            if scheduling["extra_resource_limits"]:
                limits = container.resources.limits or {}
                limits.update(scheduling["extra_resource_limits"])
                container.resources.limits = limits
        return pod

    @property
    def global_note(self) -> str:
        return "" if self.global_writable else " (read-only)"

    async def progress(self):
        """The spawn page's events: what was chosen, then the pod's events in words."""
        for event in self.choice_events():
            yield event
        async for event in super().progress():
            raw = event.get("raw_event")
            if raw:
                event = {**event, "message": readable_event(raw)}
            yield event
