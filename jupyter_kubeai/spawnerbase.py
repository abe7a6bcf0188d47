"""What every KubeAI spawner shares, in local and in Kubernetes mode.

:class:`KubeAISpawnerMixin` (mixed in before the spawner class):

- the spawn form from the catalog: only what the user's groups allow, the
  last choice preselected (KubeSpawner's own profile form);
- the check of the user's choice before anything is created: a tampered
  form, a forbidden image or a GPU count outside the size gets a 400 with
  a message on the spawn page; a deprecated image is redirected;
- the ``KUBEAI_*`` environment the lab side reads (service URL, mode,
  projects, mount paths, image and size).

Each spawner says how a checked :class:`~.catalog.access.Selection` and the
storage become a running server (``apply_selection``, ``mount_paths``).
"""

from __future__ import annotations

import json

from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Unicode, default
from traitlets.config import Configurable

from .catalog.access import Selection, UserView, select, user_view
from .catalog.form import options_from_form, render_form
from .catalog.reader import CatalogReader
from .errors import InvalidInput, KubeAIError
from .store import default_db_url

#: The environment variables the lab side reads, one place for their names.
ENV_SERVICE_URL = "KUBEAI_SERVICE_URL"
ENV_MODE = "KUBEAI_MODE"
ENV_PROJECTS = "KUBEAI_PROJECTS"
ENV_MOUNTS = "KUBEAI_MOUNTS"
ENV_IMAGE = "KUBEAI_IMAGE"
ENV_PROFILE = "KUBEAI_PROFILE"

#: Lets Lab open job outputs under the hidden ``.kubeai/`` folder.
ALLOW_HIDDEN_ARG = "--ContentsManager.allow_hidden=True"


def as_options(value: object) -> dict:
    """``value`` if it is a dict of user options, else no options."""
    return dict(value) if isinstance(value, dict) else {}


def spawn_error(error: KubeAIError) -> web.HTTPError:
    """An HTTP error whose message the hub shows as it is on the spawn page."""
    status = error.status if 400 <= error.status < 600 else 400
    http_error = web.HTTPError(status, error.message)
    http_error.jupyterhub_message = error.message
    return http_error


class KubeAISpawnerMixin(Configurable):
    """Mixed into a JupyterHub spawner (before the spawner class)."""

    kubeai_service_url = Unicode(
        "",
        config=True,
        help="""URL at which single-user servers reach the hub service "kubeai".

        Its value, with a trailing slash, is given to the server as
        ``$KUBEAI_SERVICE_URL``; the server extension sends every
        ``/kubeai/api/...`` request there with the user's own hub token.
        ``jupyter_kubeai.hubconfig`` sets it: in local mode the service's own
        loopback address, in Kubernetes mode the hub's in-cluster address.
        Left empty, the lab panel says the service is not configured.
        """,
    )

    kubeai_mode = Unicode(
        "local",
        config=True,
        help="""The mode given to the lab as ``$KUBEAI_MODE``: ``local`` or ``kubernetes``.""",
    )

    catalog_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the kubeai service's store, where the catalog is read from.

        Must be the service's ``KubeAIService.db_url``. Default: the same
        default (``$KUBEAI_DB_URL``, else SQLite in ``$KUBEAI_STATE_DIR``).
        The spawn form reads it at every render (a version check; entries
        reload only after a change), so admin edits apply to the next spawn.
        """,
    )

    @default("catalog_url")
    def _default_catalog_url(self):
        return default_db_url()

    #: The checked choice of the current (or last) spawn.
    selection: Selection | None = None

    @property
    def project_names(self) -> list[str]:
        """The user's hub groups (their projects), read at every spawn.

        A user object without a list of groups (KubeSpawner's own tests build
        such users, e.g. a ``Mock``) has no projects, rather than failing the
        spawn.
        """
        groups = getattr(self.user, "groups", None)
        if not isinstance(groups, (list, tuple, set, frozenset)):
            return []
        return sorted({name for name in (getattr(group, "name", None) for group in groups) if isinstance(name, str)})

    def catalog_view(self) -> UserView:
        """What this user may use now."""
        return user_view(CatalogReader.for_url(self.catalog_url).current(), self.project_names)

    def last_options(self) -> dict:
        """The options of the user's last spawn (JupyterHub keeps them in its database).

        Stored options that are not a dict (an old or hand-edited database
        row, a test double) mean "no last choice": the form shows the defaults.
        """
        orm_spawner = getattr(self, "orm_spawner", None)
        return as_options(getattr(orm_spawner, "user_options", None)) or as_options(self.user_options)

    # --- the spawn form and the check of its answer -------------------------------------------

    @default("options_form")
    def _default_options_form(self):
        return KubeAISpawnerMixin._render_catalog_form

    async def _render_catalog_form(self) -> str:
        try:
            view = self.catalog_view()
        except KubeAIError as e:
            raise spawn_error(e) from e
        last = self.last_options()
        notice = ""
        try:
            notice = select(view, last).notice if last else ""
        except InvalidInput as e:
            notice = f"Your last choice is no longer available ({e.message}); the defaults are selected."
        return render_form(view, last, notice)

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return KubeAISpawnerMixin._apply_catalog_choice

    async def _apply_catalog_choice(self, options: dict) -> None:
        """Check the options against the catalog; refuse (400) before anything starts."""
        self.selection = None  # a refused choice leaves nothing of an earlier spawn's behind
        try:
            selection = select(self.catalog_view(), as_options(options))
            await maybe_future(self.apply_selection(selection))
            self.selection = selection
            # What is started (and kept as the last choice) is the checked
            # choice, with a deprecated image already redirected.
            self.user_options = selection.as_options()
        except KubeAIError as e:
            self.log.info("Spawn options of %s refused: %s", self.user.name, e.message)
            raise spawn_error(e) from e

    def apply_selection(self, selection: Selection) -> None:
        """Make the next start use ``selection`` (each spawner's own way); may refuse with a KubeAIError."""

    def choice_events(self) -> list[dict]:
        """The spawn page's first events: what was chosen, and where the storage is."""
        events = []
        if self.selection is not None:
            chosen = self.selection
            image = chosen.image_name or chosen.image_ref
            events.append({"progress": 1, "message": f"Starting {chosen.profile.label} ({chosen.profile.summary()}) with image {image}"})
            if chosen.notice:
                events.append({"progress": 1, "message": chosen.notice})
        mounts = self.mount_paths()
        if mounts:
            projects = ", ".join(f"{g} at {p}" for g, p in mounts.get("projects", {}).items()) or "none"
            events.append(
                {
                    "progress": 2,
                    "message": f"Storage: your folder at {mounts.get('home')}; projects: {projects}; "
                    f"global at {mounts.get('global')}{self.global_note}",
                }
            )
        return events

    #: Appended to the global folder in progress messages.
    global_note = ""

    # --- the lab's environment ----------------------------------------------------------------

    def mount_paths(self) -> dict:
        """Where the user's home, projects and global folder are, as the lab sees them."""
        return {}

    def kubeai_env(self) -> dict[str, str]:
        """The ``KUBEAI_*`` environment for the single-user server."""
        env = {
            ENV_MODE: self.kubeai_mode,
            ENV_PROJECTS: json.dumps(self.project_names),
            ENV_MOUNTS: json.dumps(self.mount_paths()),
        }
        if self.kubeai_service_url:
            env[ENV_SERVICE_URL] = self.kubeai_service_url.rstrip("/") + "/"
        if self.selection is not None:
            env[ENV_IMAGE] = self.selection.image_name or self.selection.image_ref
            env[ENV_PROFILE] = self.selection.profile.name
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.kubeai_env())
        return env

    def get_args(self):
        args = super().get_args()
        # Job folders live under the hidden ``.kubeai/jobs/<id>/`` of the
        # user's home; the Jobs panel opens their output files in Lab, which
        # Jupyter Server refuses for hidden paths unless this is set.
        if not any(a.startswith(ALLOW_HIDDEN_ARG.split("=")[0]) for a in args):
            args.append(ALLOW_HIDDEN_ARG)
        return args
