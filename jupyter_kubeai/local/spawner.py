"""``LocalKubeAISpawner``: each user's JupyterLab as a local process.

It is JupyterHub's ``SimpleLocalProcessSpawner`` (no system users needed)
with the user's home on the local share (:mod:`.share`): the server starts
in ``users/<user>``, with links to the user's project folders and the global
folder. All users run as the hub's own OS user: local mode is for one
person's machine and for tests, not for isolation between people.
"""

from __future__ import annotations

import os
import sys

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default

from ..spawnerbase import KubeAISpawnerMixin
from .share import LocalShare


class LocalKubeAISpawner(KubeAISpawnerMixin, SimpleLocalProcessSpawner):
    """Start JupyterLab locally, at home in the user's share folder."""

    share_root = Unicode(
        config=True,
        help="""Root folder of the local share (``users/``, ``projects/``, ``global/``).

        Each user's server starts in ``<share_root>/users/<user>``, where links
        ``projects/<group>`` (one per hub group the user is in, re-evaluated at
        every spawn) and ``global`` lead to the shared folders. Default:
        ``$KUBEAI_STATE_DIR/share``, as set by ``jupyter_kubeai.hubconfig``.
        """,
    )

    @default("share_root")
    def _default_share_root(self):
        return os.path.join(os.environ.get("KUBEAI_STATE_DIR", ".kubeai"), "share")

    @default("cmd")
    def _default_cmd(self):
        # The hub's own interpreter: the single-user server then has this
        # package and its lab extension whatever $PATH the hub started with.
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @default("home_dir")
    def _default_home_dir(self):
        return str(self.share.user_dir(self.user.name))

    @property
    def share(self) -> LocalShare:
        return LocalShare(self.share_root)

    def get_args(self):
        args = super().get_args()
        # The single-user server refuses to run as root without this flag,
        # and JupyterHub then only reports "Exception is not set".
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    async def start(self):
        self.share.ensure_user(self.user.name, self.project_names)
        return await super().start()
