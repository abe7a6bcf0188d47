"""Pure builders for the notebook pod's storage and scheduling.

``make_volumes`` turns the storage settings, a user and their groups into
pod ``volumes`` and container ``volumeMounts``: the user's folder at home,
one folder per project, the global folder (read-only unless configured).
``make_scheduling`` turns a checked selection into node selector,
tolerations and resource limits. No I/O, no spawner: easy to test whole.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Iterable

from kubespawner.slugs import safe_slug

from ..catalog.access import Selection
from ..naming import GLOBAL_SUBPATH, project_subpath, slug, user_subpath

SHARE_VOLUME = "kubeai-share"
HOME_VOLUME = "kubeai-home"


@dataclass(frozen=True)
class StorageConfig:
    """Where the share is and where it is mounted (see KubeAISpawner's storage traits)."""

    #: "pvc": one ReadWriteMany PVC (CephFS, NFS...) with a subPath per volume;
    #: "nfs": an NFS export mounted directly; "none": no shared storage.
    share: str = "pvc"
    claim_name: str = "kubeai-share"
    nfs_server: str = ""
    nfs_path: str = "/"
    #: The user's own PVC (KubeSpawner's per-user PVC) instead of users/<name> on the share.
    user_claim_name: str = ""
    home_mount: str = "/home/jovyan"
    projects_mount: str = "/mnt/projects"
    global_mount: str = "/mnt/global"
    global_writable: bool = False

    def __post_init__(self):
        if self.share not in ("pvc", "nfs", "none"):
            raise ValueError(f"share must be pvc, nfs or none, not {self.share!r}")
        if self.share == "nfs" and not self.nfs_server:
            raise ValueError("an NFS share needs nfs_server")
        for path in (self.home_mount, self.projects_mount, self.global_mount, self.nfs_path):
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"{path!r} must be an absolute path without '..'")


@dataclass(frozen=True)
class Mount:
    """One folder the user sees: where (in the container) and what (on the share)."""

    name: str  # the volume's name in the pod
    path: str  # mount path in the container
    sub_path: str  # folder on the share ("" for a whole volume)
    read_only: bool = False


def project_mount_path(storage: StorageConfig, group: str) -> str:
    return posixpath.join(storage.projects_mount, slug(group))


def mounts_for(storage: StorageConfig, username: str, groups: Iterable[str]) -> list[Mount]:
    """The user's mounts, in order: home, each project (sorted), global."""
    if storage.share == "none":
        return [Mount(HOME_VOLUME, storage.home_mount, "")] if storage.user_claim_name else []
    share_volume = SHARE_VOLUME
    mounts = []
    if storage.user_claim_name:
        mounts.append(Mount(HOME_VOLUME, storage.home_mount, ""))
    else:
        mounts.append(Mount(share_volume, storage.home_mount, user_subpath(username)))
    for group in sorted(set(groups)):
        mounts.append(Mount(share_volume, project_mount_path(storage, group), project_subpath(group)))
    mounts.append(Mount(share_volume, storage.global_mount, GLOBAL_SUBPATH, read_only=not storage.global_writable))
    return mounts


def mount_volume_name(mount: Mount) -> str:
    """The name of a volume of its own for one mount (the NFS layout, and TrainJob patches)."""
    return safe_slug(f"kubeai-{mount.sub_path.replace('/', '-')}", max_length=63)


def make_volumes(storage: StorageConfig, username: str, groups: Iterable[str], *,
                 volume_per_mount: bool = False) -> tuple[list[dict], list[dict]]:
    """Pod ``volumes`` and container ``volumeMounts`` for a user in ``groups``.

    With a PVC share, one volume serves every mount through ``subPath``;
    with NFS, each mount is its own NFS volume at ``<nfs_path>/<subPath>``
    (the NFS server cannot be narrowed by subPath for read-only global).
    ``volume_per_mount`` gives every PVC mount a volume of its own too: a
    TrainJob's runtime patches key volume mounts by volume name, so two
    mounts of one volume cannot be patched in (see :mod:`.trainjob`).
    """
    mounts = mounts_for(storage, username, groups)
    volumes: dict[str, dict] = {}
    volume_mounts = []
    for mount in mounts:
        if mount.name == HOME_VOLUME:
            volumes[HOME_VOLUME] = {"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": storage.user_claim_name}}
            volume_mounts.append({"name": HOME_VOLUME, "mountPath": mount.path})
            continue
        if storage.share == "pvc":
            name = mount_volume_name(mount) if volume_per_mount else mount.name
            volumes.setdefault(name, {"name": name, "persistentVolumeClaim": {"claimName": storage.claim_name}})
            entry = {"name": name, "mountPath": mount.path, "subPath": mount.sub_path}
        else:  # nfs: a volume per mount, so read-only applies to the export itself
            name = mount_volume_name(mount)
            volumes[name] = {
                "name": name,
                "nfs": {
                    "server": storage.nfs_server,
                    "path": posixpath.join(storage.nfs_path, mount.sub_path),
                    **({"readOnly": True} if mount.read_only else {}),
                },
            }
            entry = {"name": name, "mountPath": mount.path}
        if mount.read_only:
            entry["readOnly"] = True
        volume_mounts.append(entry)
    return list(volumes.values()), volume_mounts


@dataclass(frozen=True)
class GPUScheduling:
    """Cluster-wide GPU scheduling settings (see KubeAISpawner's gpu_* traits)."""

    #: Tolerations every GPU pod gets (for the admins' taint on GPU nodes).
    tolerations: tuple[dict, ...] = ()
    #: Node selector every GPU pod gets (e.g. a GPU node label).
    node_selector: tuple[tuple[str, str], ...] = ()


def make_scheduling(selection: Selection, gpu: GPUScheduling, project: str | None = None) -> dict:
    """Node selector, tolerations and extra resource limits for a selection.

    A CPU-only selection gets neither the GPU tolerations nor the GPU node
    selector: with GPU nodes tainted, it can never land on one.
    """
    placement = selection.placement(project)
    node_selector = dict(placement.node_selector)
    tolerations = [t.to_k8s() for t in placement.tolerations]
    limits = {}
    if selection.gpus:
        node_selector.update(dict(gpu.node_selector))
        tolerations.extend(t for t in gpu.tolerations if t not in tolerations)
        limits[selection.profile.gpu_resource] = str(selection.gpus)
    return {"node_selector": node_selector, "tolerations": tolerations, "extra_resource_limits": limits}
