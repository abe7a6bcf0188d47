"""``KubeAISpawner``: the KubeSpawner of Kubernetes mode.

Each user's JupyterLab runs in a pod started by KubeSpawner; this subclass
adds what jupyter_kubeai needs on top:

- ``profile_list`` from the catalog, per user (only what their groups
  allow; the last choice preselected), the choice checked before anything
  is created (see :mod:`jupyter_kubeai.spawnerbase`);
- the shared storage: the user's folder at home, one folder per project
  (hub group, re-read at every spawn), the global folder read-only, from
  one CephFS/NFS PVC with subPaths, a direct NFS export, or a per-user PVC
  for the home (the storage traits below are the reference);
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
from traitlets import Bool, Dict, List, Unicode, default

from .catalog.access import Selection, profile_list
from .kube.events import readable_event
from .kube.objects import GPUScheduling, StorageConfig, make_scheduling, make_volumes, project_mount_path
from .spawnerbase import KubeAISpawnerMixin


class KubeAISpawner(KubeAISpawnerMixin, KubeSpawner):
    """KubeSpawner with the catalog, the shared storage and GPUs of jupyter_kubeai."""

    @default("kubeai_mode")
    def _default_kubeai_mode(self):
        return "kubernetes"

    # --- storage ---------------------------------------------------------------------------------

    share_type = Unicode(
        "pvc",
        config=True,
        help="""How pods reach the shared storage.

        ``pvc`` (default): one PersistentVolumeClaim (``share_claim_name``,
        ReadWriteMany: CephFS or NFS behind it) mounted once per folder with
        ``subPath``: ``users/<user>`` at ``home_mount_path``,
        ``projects/<group>`` at ``projects_mount_path/<group>`` for each hub
        group of the user, ``global`` at ``global_mount_path``.
        ``nfs``: the same folders straight from an NFS export
        (``nfs_server``, ``nfs_path``), no PVC. ``none``: no shared storage.
        Folder names are KubeSpawner's safe slugs of user and group names, so
        no name can point outside its base folder.
        """,
    )
    share_claim_name = Unicode("kubeai-share", config=True, help="""Name of the shared PVC (``share_type = "pvc"``), in the users' namespace.""")
    nfs_server = Unicode("", config=True, help="""NFS server of the share (``share_type = "nfs"``).""")
    nfs_path = Unicode("/", config=True, help="""Exported path of the share on ``nfs_server``; ``users/``, ``projects/`` and ``global/`` are below it.""")
    home_mount_path = Unicode("/home/jovyan", config=True, help="""Where the user's own folder is mounted (the server's home).""")
    projects_mount_path = Unicode("/mnt/projects", config=True, help="""Folder under which each of the user's projects is mounted as ``<group>``.""")
    global_mount_path = Unicode("/mnt/global", config=True, help="""Where the global folder is mounted.""")
    global_writable = Bool(False, config=True, help="""Mount the global folder read-write (default: read-only for everyone).""")

    user_pvc = Bool(
        False,
        config=True,
        help="""Give each user a PVC of their own for the home instead of ``users/<user>`` on the share.

        It is KubeSpawner's per-user PVC: named by ``pvc_name_template``, of
        ``storage_class`` and ``storage_capacity``, created at the first spawn
        if missing (``storage_pvc_ensure`` follows this setting). Projects and
        global still come from the share.
        """,
    )

    @default("storage_pvc_ensure")
    def _default_storage_pvc_ensure(self):
        return self.user_pvc

    @property
    def storage_config(self) -> StorageConfig:
        return StorageConfig(
            share=self.share_type,
            claim_name=self.share_claim_name,
            nfs_server=self.nfs_server,
            nfs_path=self.nfs_path,
            user_claim_name=self.pvc_name if self.user_pvc else "",
            home_mount=self.home_mount_path,
            projects_mount=self.projects_mount_path,
            global_mount=self.global_mount_path,
            global_writable=self.global_writable,
        )

    # --- GPUs ------------------------------------------------------------------------------------

    gpu_tolerations = List(
        Dict(),
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        config=True,
        help="""Tolerations given to pods of sizes with GPUs, and to no others.

        Taint your GPU nodes to match (the default fits the NVIDIA GPU
        operator's ``nvidia.com/gpu:NoSchedule``), and CPU-only servers never
        land on them. Set per vendor as needed, e.g. ``amd.com/gpu``.
        """,
    )
    gpu_node_selector = Dict(
        config=True,
        help="""Node selector added to pods of sizes with GPUs (e.g. ``{"accelerator": "nvidia"}``).""",
    )

    @property
    def gpu_scheduling(self) -> GPUScheduling:
        return GPUScheduling(
            tolerations=tuple(self.gpu_tolerations),
            node_selector=tuple(sorted(self.gpu_node_selector.items())),
        )

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
