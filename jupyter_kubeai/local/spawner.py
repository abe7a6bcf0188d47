"""``LocalKubeAISpawner``: each user's JupyterLab as a local process.

It is JupyterHub's ``SimpleLocalProcessSpawner`` (no system users needed)
with the user's home on the local share (:mod:`.share`): the server starts
in ``users/<user>``, with links to the user's project folders and the global
folder. All users run as the hub's own OS user: local mode is for one
person's machine and for tests, not for isolation between people.

The catalog drives the spawn form as in Kubernetes mode. A catalog image
runs in the local Python environment mapped to it by ``image_environments``
(or in the hub's own environment, the image being recorded in
``$KUBEAI_IMAGE``); a size's CPU and memory are given to the server as
JupyterHub's ``CPU_LIMIT``/``MEM_LIMIT`` (informational: nothing enforces
them locally); a size with GPUs is refused when this machine has none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Dict, Integer, Unicode, default

from ..catalog.access import Selection
from ..catalog.model import quantity_value
from ..errors import InvalidInput
from ..naming import slug
from ..spawnerbase import KubeAISpawnerMixin
from .share import LocalShare, default_share_root


def count_local_gpus() -> int:
    """NVIDIA GPUs visible here (``nvidia-smi -L``); 0 when there is no driver."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


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
        return default_share_root()

    image_environments = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Local Python environments standing in for catalog images, in local mode.

        Maps a catalog image name (or its image reference) to the Python
        executable of an environment that has ``jupyterhub`` and this package
        installed, e.g. ``{"torch": "/opt/envs/torch/bin/python"}``. A server
        started with that image runs ``<python> -m jupyterhub.singleuser``. An
        image with no mapping runs in the hub's own environment; the image is
        still recorded (``$KUBEAI_IMAGE``) for jobs submitted from that server.
        """,
    )

    local_gpus = Integer(
        config=True,
        help="""GPUs this machine offers to local servers. Default: counted with ``nvidia-smi -L``.

        A size with more GPUs than this is refused with a message on the spawn page.
        """,
    )

    @default("local_gpus")
    def _default_local_gpus(self):
        return count_local_gpus()

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

    def apply_selection(self, selection: Selection) -> None:
        if selection.gpus > self.local_gpus:
            raise InvalidInput(
                f"Size {selection.profile.label!r} needs {selection.gpus} GPU(s), but this machine has "
                f"{self.local_gpus or 'none'}; pick a CPU size."
            )
        python = self.image_environments.get(selection.image_name) or self.image_environments.get(selection.image_ref)
        self.cmd = [python or sys.executable, "-m", "jupyterhub.singleuser"]
        self.cpu_limit = float(quantity_value(selection.profile.cpu_limit))
        self.mem_limit = int(quantity_value(selection.profile.memory_limit))

    def mount_paths(self) -> dict:
        home = self.share.user_dir(self.user.name)
        return {
            "home": str(home),
            "projects": {g: str(home / "projects" / slug(g)) for g in self.project_names},
            "global": str(home / "global"),
        }

    def get_env(self):
        """JupyterHub's environment for the server, with its Python environment's ``bin`` first on ``PATH``.

        The hub may have been started without the environment activated
        (``make run`` calls ``.venv/bin/jupyterhub``): the server, and every
        terminal and kernel it starts, then finds ``python``, ``pip`` and the
        ``kubeai`` command of the environment it runs in, as a pod finds its image's.
        """
        env = super().get_env()
        bin_dir = os.path.dirname(self.cmd[0]) if self.cmd and os.path.isabs(self.cmd[0]) else ""
        path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bin_dir]
        env["PATH"] = os.pathsep.join(([bin_dir] if bin_dir else []) + path)
        return env

    def get_args(self):
        args = super().get_args()
        # The single-user server refuses to run as root without this flag,
        # and JupyterHub then only reports "Exception is not set".
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    async def progress(self):
        """The spawn page's events: what was chosen and where the folders are."""
        for event in self.choice_events():
            yield event

    async def start(self):
        self.share.ensure_user(self.user.name, self.project_names)
        return await super().start()
