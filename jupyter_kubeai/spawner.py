"""``KubeAISpawner``: the KubeSpawner of Kubernetes mode.

Each user's JupyterLab runs in a pod started by KubeSpawner; this subclass
adds what jupyter_kubeai needs on top:

- the spawn form from the catalog, per user (only what their groups
  allow; the last choice preselected), the choice checked before anything
  is created (see :mod:`jupyter_kubeai.spawnerbase`); an admin's own
  ``profile_list`` is honoured as stock KubeSpawner honours it, instead of
  or merged with the catalog (``profile_list_mode``);
- the shared storage: the user's folder at home, one folder per project
  (hub group, re-read at every spawn), the global folder read-only, from
  one CephFS/NFS PVC with subPaths, a direct NFS export, or a per-user PVC
  for the home (the traits of :class:`~.kube.settings.KubeSettings` are the reference);
- GPUs: the size's GPU count as the extended resource limit, with the GPU
  tolerations/node selector only for GPU sizes, so CPU sizes never land on
  tainted GPU nodes;
- readable progress events on the spawn page (the kubelet's own text kept
  after the readable phrase).

Every KubeSpawner setting (``c.KubeSpawner.*``) still applies.
"""

from __future__ import annotations

import copy
import posixpath
import re

from jupyterhub.utils import maybe_future
from kubernetes_asyncio.client.models import V1Toleration, V1Volume, V1VolumeMount
from kubespawner import KubeSpawner
from kubespawner.utils import get_k8s_model
from slugify import slugify
from traitlets import Enum, default

from .catalog.access import PROFILE, Selection, profile_list, resource_settings
from .catalog.form import options_from_form as catalog_options_from_form
from .errors import InvalidInput, KubeAIError
from .kube.events import readable_event
from .kube.objects import StorageConfig, make_scheduling, make_volumes, project_mount_path
from .kube.settings import KubeSettings
from .spawnerbase import KubeAISpawnerMixin, as_options, spawn_error

#: Where the spawn form's choices come from (``KubeAISpawner.profile_list_mode``).
CATALOG, ADMIN, MERGE, AUTO = "catalog", "admin", "merge", "auto"


def with_kubelet_text(readable: str, message: str | None) -> str:
    """The readable phrase, then the event's own text where the phrase does not already say it."""
    message = (message or "").strip()
    return f"{readable} ({message})" if message and message not in readable else readable


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

    # --- the spawn form: the catalog, the admin's profile_list, or both ---------------------------

    profile_list_mode = Enum(
        [AUTO, CATALOG, ADMIN, MERGE],
        default_value=AUTO,
        config=True,
        help="""Where the spawn form's choices come from: the catalog, ``profile_list``, or both.

        - ``catalog``: the catalog's images and sizes that the user's groups
          allow (the kubeai spawn form); ``profile_list`` is ignored.
        - ``admin``: the admin's own ``c.KubeSpawner.profile_list`` (a list,
          a dict or a callable), honoured as stock KubeSpawner honours it:
          its form, ``kubespawner_override``, ``profile_options`` with
          ``choices`` and ``unlisted_choice`` (free text checked against its
          ``validation_regex``). The catalog is not used for the spawn; the
          storage mounts and the ``KUBEAI_*`` environment still are.
        - ``merge``: one KubeSpawner form with the user's catalog sizes (each
          with its image choice and, for a GPU range, a GPU count) followed by
          the ``profile_list`` entries. An entry whose slug is a catalog
          size's name replaces that size; an entry marked ``default`` is the
          default (else the catalog's default size is). A catalog size is
          checked against the catalog, an entry as KubeSpawner checks it.
        - ``auto`` (default): ``admin`` when ``profile_list`` is set (not
          empty, or a callable), else ``catalog``.

        In every mode a choice that is not allowed is refused with a 400 and
        a message on the spawn page before anything is created.
        """,
    )

    @property
    def effective_profile_list_mode(self) -> str:
        """``profile_list_mode`` with ``auto`` resolved (read at every use: config may set it late)."""
        if self.profile_list_mode != AUTO:
            return self.profile_list_mode
        return ADMIN if self.profile_list else CATALOG

    #: The user_options applied by the last ``apply_user_options``: ``load_user_options``
    #: (KubeSpawner calls it in ``start``) then has nothing left to check or set.
    _applied_options: dict | None = None
    #: The display name of the chosen ``profile_list`` entry (None for a catalog size).
    _chosen_entry: str | None = None

    async def admin_profile_list(self) -> list[dict]:
        """The admin's ``profile_list`` as a list (a dict's values by key; a callable called)."""
        profiles = self._sorted_dict_values(self.profile_list)
        if callable(profiles):
            profiles = await maybe_future(profiles(self))
        return copy.deepcopy(list(self._sorted_dict_values(profiles) or []))

    async def offered_profiles(self) -> tuple[list[dict], frozenset[str]]:
        """The profile list of this mode, initialized as KubeSpawner does, and the slugs that are catalog sizes."""
        mode = self.effective_profile_list_mode
        admin = await self.admin_profile_list()
        if mode == ADMIN:
            return self._get_initialized_profile_list(admin), frozenset()
        sizes = profile_list(self.catalog_view(), self.last_options())
        taken = {entry.get("slug") or slugify(entry["display_name"]) for entry in admin}
        sizes = [size for size in sizes if size["slug"] not in taken]
        if any(entry.get("default") for entry in admin):
            for size in sizes:
                size["default"] = False
        return self._get_initialized_profile_list(sizes + admin), frozenset(size["slug"] for size in sizes)

    @default("options_form")
    def _default_options_form(self):
        return KubeAISpawner._render_form

    async def _render_form(self) -> str:
        if self.effective_profile_list_mode == CATALOG:
            return await self._render_catalog_form()
        try:
            profiles, _ = await self.offered_profiles()
        except KubeAIError as e:
            raise spawn_error(e) from e
        # As stock KubeSpawner: no form (a spawn with the defaults) for an empty list.
        return self._render_options_form(profiles) if profiles else ""

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._read_form

    def _read_form(self, formdata: dict) -> dict:
        if self.effective_profile_list_mode == CATALOG:
            return catalog_options_from_form(formdata)
        # KubeSpawner's form: profile-option-<slug>--<option>[--unlisted-choice]
        return self._options_from_form(formdata)

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return KubeAISpawner._apply_choice

    async def _apply_choice(self, options: dict) -> None:
        """Check the user's choice and apply it; refuse (400) before anything starts."""
        options = as_options(options)
        self._applied_options = None
        self._chosen_entry = None
        if self.effective_profile_list_mode == CATALOG:
            await self._apply_catalog_choice(options)
        else:
            try:
                profiles, sizes = await self.offered_profiles()
            except KubeAIError as e:
                raise spawn_error(e) from e
            slug = options.get(PROFILE) or next((p["slug"] for p in profiles if p.get("default")), None)
            if slug in sizes:
                await self._apply_catalog_choice({**options, PROFILE: slug})
            else:
                self._apply_entry(options, profiles)
        self._applied_options = as_options(self.user_options)

    def _apply_entry(self, options: dict, profiles: list[dict]) -> None:
        """A ``profile_list`` entry: KubeSpawner's own check and overrides, its errors as a 400."""
        self.selection = None
        self.user_options = options
        try:
            entry = check_entry_choice(self, options, profiles) if profiles else None
            if entry is not None:
                self._load_profile(entry["slug"], profiles)
                self._chosen_entry = entry["display_name"]
        except ValueError as e:
            self.log.info("Spawn options of %s refused: %s", self.user.name, e)
            raise spawn_error(InvalidInput(str(e))) from e

    async def load_user_options(self):
        """Apply ``user_options`` (KubeSpawner calls this first in ``start``).

        The hub has checked and applied them in ``apply_user_options``; this
        does it only for options that were not (a start without the hub's
        hook, or options changed since), so a spawn checks its choice once.
        In ``admin`` mode such a late check is stock KubeSpawner's own
        (a ``ValueError`` for a bad choice).
        """
        if self._applied_options is not None and self._applied_options == as_options(self.user_options):
            return
        if self.effective_profile_list_mode == ADMIN:
            self.selection = self._chosen_entry = None  # nothing of an earlier spawn's choice
            await super().load_user_options()
            self._applied_options = as_options(self.user_options)
        else:
            await self._apply_choice(self.user_options)

    def apply_selection(self, selection: Selection) -> None:
        """A checked catalog choice as KubeSpawner settings (the GPU count goes in through ``get_pod_manifest``)."""
        self.image = selection.image_ref
        for name, value in resource_settings(selection.profile).items():
            setattr(self, name, value)

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
        """The spawn page's events: what was chosen, then the pod's events in words and the kubelet's own."""
        if self._chosen_entry is not None:
            yield {"progress": 1, "message": f"Starting {self._chosen_entry} with image {self.image}"}
        for event in self.choice_events():
            yield event
        async for event in super().progress():
            raw = event.get("raw_event")
            if raw:
                event = {**event, "message": with_kubelet_text(readable_event(raw), raw.get("message"))}
            yield event


def check_entry_choice(spawner: KubeSpawner, options: dict, profiles: list[dict]) -> dict:
    """The ``profile_list`` entry ``options`` choose, checked; a ``ValueError`` that says what to do.

    KubeSpawner's own check (``_validate_user_options``) plus what it leaves
    to fail later as a ``KeyError`` or a bare message: an unknown choice, a
    free-text value that is not text, a regex failure without the
    ``validation_message``, an option with neither a choice nor a default.
    """
    entry = spawner._get_profile(options.get(PROFILE), profiles)
    for name, option in entry.get("profile_options", {}).items():
        label = option.get("display_name") or name
        unlisted = options.get(f"{name}--unlisted-choice")
        choice = options.get(name)
        choices = option.get("choices") or {}
        if unlisted:
            settings = option.get("unlisted_choice") or {}
            if not isinstance(unlisted, str) or not settings.get("enabled"):
                raise ValueError(f"{label} takes one of: {', '.join(choices) or 'nothing'}; no value of your own.")
            regex = settings.get("validation_regex")
            # re.match, as KubeSpawner: the regex anchors its own end.
            if regex and not re.match(regex, unlisted):
                wanted = settings.get("validation_message") or f"it must match {regex}"
                raise ValueError(f"{label} {unlisted!r} is not allowed: {wanted}.")
        elif choice:
            if not isinstance(choice, str) or choice not in choices:
                raise ValueError(f"{label} {choice!r} is not a choice; choose one of: {', '.join(choices)}.")
        elif not choices:
            raise ValueError(f"{label} has no default; type a value.")
    spawner._validate_user_options(profiles)  # anything KubeSpawner checks beyond the above
    return entry
