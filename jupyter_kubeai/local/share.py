"""The local share: a folder on disk laid out like the cluster share.

::

    <root>/
      users/<user>/            the user's home (Lab's root folder)
        projects/<group> -> ../../../projects/<group>   (one link per group)
        global -> ../../global
      projects/<group>/
      global/

Folder names are slugs (:func:`jupyter_kubeai.naming.slug`), so ``..``, ``/``
or odd characters in a user or group name can never reach outside ``root``.
:meth:`LocalShare.ensure_user` is idempotent and re-run at every spawn, so a
change of groups shows at the next start: links to projects the user left
are removed, files are never touched.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..naming import GLOBAL_SUBPATH, project_subpath, slug, user_subpath

log = logging.getLogger(__name__)


def default_share_root() -> str:
    """``$KUBEAI_STATE_DIR/share``: where the local spawner and backend find the share."""
    return os.path.join(os.environ.get("KUBEAI_STATE_DIR", ".kubeai"), "share")


@dataclass(frozen=True)
class UserFolders:
    """Where a user's volumes are on the local share."""

    home: Path
    projects: dict[str, Path]
    global_dir: Path


class LocalShare:
    """The local share rooted at ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()

    def _inside(self, relative: str) -> Path:
        path = (self.root / relative).absolute()
        # Slugs cannot hold "/" or "..", this is the second line of defence.
        if os.path.commonpath([path, self.root]) != str(self.root):
            raise ValueError(f"{relative!r} is outside the share {self.root}")
        return path

    def user_dir(self, username: str) -> Path:
        return self._inside(user_subpath(username))

    def project_dir(self, group: str) -> Path:
        return self._inside(project_subpath(group))

    @property
    def global_dir(self) -> Path:
        return self._inside(GLOBAL_SUBPATH)

    def ensure_user(self, username: str, groups: Iterable[str] = ()) -> UserFolders:
        """Create the user's folders and links; safe to call at every spawn."""
        home = self.user_dir(username)
        home.mkdir(parents=True, exist_ok=True)
        self.global_dir.mkdir(parents=True, exist_ok=True)
        _ensure_link(home / "global", self.global_dir)

        links = home / "projects"
        links.mkdir(exist_ok=True)
        projects: dict[str, Path] = {}
        for group in sorted(set(groups)):
            target = self.project_dir(group)
            target.mkdir(parents=True, exist_ok=True)
            _ensure_link(links / slug(group), target)
            projects[group] = target
        # Drop links to projects the user is no longer in (only our links:
        # a link pointing into <root>/projects; anything else is the user's).
        wanted = {slug(g) for g in projects}
        projects_root = self.root / "projects"
        for entry in links.iterdir():
            if entry.name in wanted or not entry.is_symlink():
                continue
            target = Path(os.path.normpath(entry.parent / os.readlink(entry)))
            if target.parent == projects_root:
                entry.unlink()
        return UserFolders(home=home, projects=projects, global_dir=self.global_dir)


def _ensure_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` with a relative symlink, idempotently."""
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == relative:
            return
        link.unlink()
    elif link.exists():
        # The user made a file or folder of that name: theirs wins, never
        # fail a spawn over it (the folder is still reachable by its path).
        log.warning("%s exists and is not a link; not linking it to %s", link, target)
        return
    link.symlink_to(relative, target_is_directory=True)
