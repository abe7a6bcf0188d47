"""``KubeSettings``: the storage and GPU settings shared by the spawner and the job backend.

A notebook and the training jobs it submits must see the same folders at
the same paths and land on the same kind of node, so these settings are
declared once, here, and mixed into both :class:`~jupyter_kubeai.spawner.KubeAISpawner`
and :class:`~jupyter_kubeai.backends.kubernetes.KubernetesBackend`. Each can be
configured on its own (``c.KubeAISpawner.share_type``,
``c.KubernetesBackend.share_type``) or both at once (``c.KubeSettings.share_type``).
The pure builders take the :class:`~.objects.StorageConfig` and
:class:`~.objects.GPUScheduling` values made here.
"""

from __future__ import annotations

from traitlets import Bool, Dict, Float, Int, List, Unicode
from traitlets.config import Configurable

from .client import KubeClient
from .objects import GPUScheduling, StorageConfig


class KubeSettings(Configurable):
    """Where the shared storage is and how GPU pods are placed (one place for both)."""

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
        no name can point outside its base folder. Notebook servers and
        training jobs must agree on this (set ``c.KubeSettings.share_type``
        to set both).
        """,
    )
    share_claim_name = Unicode("kubeai-share", config=True, help="""Name of the shared PVC (``share_type = "pvc"``), in the users' namespace.""")
    nfs_server = Unicode("", config=True, help="""NFS server of the share (``share_type = "nfs"``).""")
    nfs_path = Unicode("/", config=True, help="""Exported path of the share on ``nfs_server``; ``users/``, ``projects/`` and ``global/`` are below it.""")
    home_mount_path = Unicode(
        "/home/jovyan",
        config=True,
        help="""Where the user's own folder is mounted (the server's home). Job folders are
        ``<home_mount_path>/.kubeai/jobs/<job-id>`` in training pods.""",
    )
    projects_mount_path = Unicode("/mnt/projects", config=True, help="""Folder under which each of the user's projects is mounted as ``<group>``.""")
    global_mount_path = Unicode("/mnt/global", config=True, help="""Where the global folder is mounted.""")
    global_writable = Bool(False, config=True, help="""Mount the global folder read-write (default: read-only for everyone).""")

    user_pvc = Bool(
        False,
        config=True,
        help="""Give each user a PVC of their own for the home instead of ``users/<user>`` on the share.

        For notebook servers it is KubeSpawner's per-user PVC: named by
        ``pvc_name_template``, of ``storage_class`` and ``storage_capacity``,
        created at the first spawn if missing (``storage_pvc_ensure`` follows
        this setting). Training jobs mount the same PVC (named by the
        backend's ``user_pvc_name_template``). Projects and global still come
        from the share.
        """,
    )

    def make_storage_config(self, user_claim_name: str = "") -> StorageConfig:
        """The storage settings as the builders take them; ``user_claim_name`` when ``user_pvc``."""
        return StorageConfig(
            share=self.share_type,
            claim_name=self.share_claim_name,
            nfs_server=self.nfs_server,
            nfs_path=self.nfs_path,
            user_claim_name=user_claim_name if self.user_pvc else "",
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
        operator's ``nvidia.com/gpu:NoSchedule``), and CPU-only servers and
        job roles never land on them. Set per vendor as needed, e.g. ``amd.com/gpu``.
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


class ApiSettings(Configurable):
    """How the backends talk to the API server when it is slow or failing (one place for both).

    Configured per backend (``c.KubernetesBackend.api_retries``) or for both
    (``c.ApiSettings.api_retries``); the spawner keeps KubeSpawner's own
    ``k8s_api_request_timeout``.
    """

    api_request_timeout = Float(
        30,
        config=True,
        help="""Seconds one API request may take before it counts as lost (a watch lasts
        ``watch_timeout`` instead). A lost request safe to repeat is repeated
        (``api_retries``); a lost create is repeated by name, and "already exists"
        then means it was made (when the object is ours).""",
    )
    api_retries = Int(
        3,
        config=True,
        help="""How many times a request safe to repeat (reads, deletes, patches, creates by name)
        is repeated after a 429 or 5xx answer, a timeout or a dropped connection, before the
        user sees "the cluster did not answer". ``0``: never.""",
    )
    api_retry_backoff = Float(
        0.25,
        config=True,
        help="""Seconds before the first repeat; each next one waits twice as long, at most 4 s.""",
    )

    async def connect_api(self) -> KubeClient:
        """A client with these settings (in-cluster configuration, else the kubeconfig)."""
        return await KubeClient.connect(self.api_request_timeout, retries=self.api_retries,
                                        backoff=(self.api_retry_backoff, max(4.0, self.api_retry_backoff)))
