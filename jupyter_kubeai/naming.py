"""Names on shared storage and in the cluster, derived from hub names.

User and group names come from the hub and may hold anything (``/``, ``..``,
unicode, upper case). Everything that turns them into folder names, subPaths
or object names goes through :func:`slug`, so the local share and the
Kubernetes share agree and no name can escape its base folder.
"""

from __future__ import annotations

import posixpath

from kubespawner.slugs import safe_slug


def slug(name: str) -> str:
    """Return a safe, collision-free slug for a hub user or group name.

    A name that is already a valid DNS label (lowercase letters, digits and
    single ``-``, starting with a letter) is kept as it is; any other name
    becomes ``<stripped>---<hash>``. It is KubeSpawner's own "safe" scheme,
    so pods, PVCs and folders all use the same names. The result only has
    ``[a-z0-9-]``: it can never be ``..`` nor contain ``/``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a user or group name must be a non-empty string")
    return safe_slug(name)


def user_subpath(username: str) -> str:
    """The user's folder on the share, relative to its root."""
    return posixpath.join("users", slug(username))


def project_subpath(group: str) -> str:
    """A project's (hub group's) folder on the share, relative to its root."""
    return posixpath.join("projects", slug(group))


#: The global folder on the share, relative to its root.
GLOBAL_SUBPATH = "global"
