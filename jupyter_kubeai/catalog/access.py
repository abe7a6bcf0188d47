"""What one user may use, and checking what they picked.

Pure functions over catalog entries and the user's hub groups:

- :func:`user_view`: the images, profiles and image rules a user may use;
- :func:`profile_list`: KubeSpawner's ``profile_list`` for that user (sizes,
  each with an image choice and, for GPU profiles, a GPU-count choice), the
  last choice preselected;
- :func:`select`: the user's options (from the spawn form or the REST API)
  checked against the view; a tampered or stale choice gets a clear
  :class:`InvalidInput` before anything is created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..errors import InvalidInput
from .model import IMAGE_RE, Image, ImageRule, Placement, Profile, quantity_value

#: The user_options keys of a spawn (KubeSpawner's form field names).
PROFILE, IMAGE, GPUS = "profile", "image", "gpus"
CUSTOM_IMAGE = f"{IMAGE}--unlisted-choice"


@dataclass(frozen=True)
class Catalog:
    """Everything in the store, as one value."""

    images: tuple[Image, ...] = ()
    profiles: tuple[Profile, ...] = ()
    rules: tuple[ImageRule, ...] = ()


def allowed(entry_groups: Iterable[str], user_groups: frozenset[str]) -> bool:
    """An entry with no groups is for everyone; else for members of one of them."""
    entry_groups = tuple(entry_groups)
    return not entry_groups or not user_groups.isdisjoint(entry_groups)


@dataclass(frozen=True)
class UserView:
    """The part of the catalog one user may use."""

    images: tuple[Image, ...]  # usable now (not deprecated)
    deprecated: Mapping[str, Image]  # allowed but deprecated: redirected
    profiles: tuple[Profile, ...]
    rules: tuple[ImageRule, ...]  # free-text images this user may type
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def default_image(self) -> Image | None:
        return next((i for i in self.images if i.default), self.images[0] if self.images else None)

    @property
    def default_profile(self) -> Profile | None:
        return next((p for p in self.profiles if p.default), self.profiles[0] if self.profiles else None)

    @property
    def custom_image_pattern(self) -> str:
        """One regex that admits what any of the user's image rules admits."""
        return "|".join(f"(?:{r.pattern})" for r in self.rules)


def user_view(catalog: Catalog, groups: Iterable[str]) -> UserView:
    groups = frozenset(groups)
    usable = tuple(i for i in catalog.images if allowed(i.groups, groups))
    return UserView(
        images=tuple(i for i in usable if not i.deprecated),
        deprecated={i.name: i for i in usable if i.deprecated},
        profiles=tuple(p for p in catalog.profiles if allowed(p.groups, groups)),
        rules=tuple(r for r in catalog.rules if allowed(r.groups, groups)),
        groups=groups,
    )


@dataclass(frozen=True)
class Selection:
    """A checked choice: what a server (or later a job) runs with."""

    profile: Profile
    image_ref: str  # the container image reference
    image_name: str = ""  # catalog name; "" for a custom (typed) image
    gpus: int = 0
    notice: str = ""  # e.g. "image X is deprecated, Y is used instead"

    def placement(self, project: str | None = None) -> Placement:
        """The profile's placement, or the project's own where it has one."""
        for group, placement in self.profile.project_placement:
            if group == project:
                return placement
        return self.profile.placement

    def as_options(self) -> dict:
        """The user_options that select this again (for the next spawn)."""
        options = {PROFILE: self.profile.name}
        if self.image_name:
            options[IMAGE] = self.image_name
        else:
            options[CUSTOM_IMAGE] = self.image_ref
        if self.profile.gpus:
            options[GPUS] = str(self.gpus)
        return options


def _resolve_image(view: UserView, name: str) -> tuple[Image, str]:
    for image in view.images:
        if image.name == name:
            return image, ""
    old = view.deprecated.get(name)
    if old is None:
        usable = ", ".join(i.name for i in view.images) or "none"
        raise InvalidInput(f"Image {name!r} is not one you may use. Available: {usable}.")
    new = next((i for i in view.images if i.name == old.replacement), None) or view.default_image
    if new is None:
        raise InvalidInput(f"Image {old.label!r} is deprecated and no other image is available to you.")
    return new, f"Image {old.label!r} is deprecated; {new.label!r} is used instead."


def select(view: UserView, options: Mapping[str, object] | None) -> Selection:
    """Check ``options`` against what the user may use; defaults fill the gaps."""
    options = dict(options or {})
    if not view.profiles:
        raise InvalidInput("No server size is available to you; ask a hub admin to give your project one.")
    profile_name = options.get(PROFILE) or view.default_profile.name
    profile = next((p for p in view.profiles if p.name == profile_name), None)
    if profile is None:
        usable = ", ".join(p.name for p in view.profiles)
        raise InvalidInput(f"Size {profile_name!r} is not one you may use. Available: {usable}.")

    custom = options.get(CUSTOM_IMAGE)
    notice = ""
    if custom:
        if not isinstance(custom, str) or not view.rules:
            raise InvalidInput("You may not type an image of your own; pick one from the list.")
        if not IMAGE_RE.match(custom):
            raise InvalidInput(f"Image {custom!r} is not an image reference (e.g. registry.example.org/team/lab:1.0).")
        if not any(re.fullmatch(rule.pattern, custom) for rule in view.rules):
            wanted = "; ".join(f"{r.description or r.pattern}" for r in view.rules)
            raise InvalidInput(f"Image {custom!r} is not allowed: it must match {wanted}.")
        image_ref, image_name = custom, ""
    else:
        name = options.get(IMAGE)
        if name:
            image, notice = _resolve_image(view, str(name))
        else:
            image = view.default_image
            if image is None:
                raise InvalidInput("No image is available to you; ask a hub admin to add one for your project.")
        image_ref, image_name = image.image, image.name

    raw_gpus = options.get(GPUS)
    if raw_gpus in (None, ""):
        gpus = profile.gpus
    else:
        try:
            gpus = int(str(raw_gpus))
        except ValueError:
            raise InvalidInput(f"GPU count {raw_gpus!r} is not a number.") from None
    if gpus not in profile.gpu_choices:
        choices = ", ".join(map(str, profile.gpu_choices))
        raise InvalidInput(f"Size {profile.label!r} allows {choices} GPU(s), not {gpus}.")
    return Selection(profile=profile, image_ref=image_ref, image_name=image_name, gpus=gpus, notice=notice)


def resource_settings(profile: Profile) -> dict:
    """KubeSpawner's CPU and memory settings for a profile."""
    return {
        "cpu_guarantee": float(quantity_value(profile.cpu_request)),
        "cpu_limit": float(quantity_value(profile.cpu_limit)),
        # Bytes: KubeSpawner's memory settings do not read Kubernetes' "Gi".
        "mem_guarantee": int(quantity_value(profile.memory_request)),
        "mem_limit": int(quantity_value(profile.memory_limit)),
    }


def resource_overrides(profile: Profile, gpus: int) -> dict:
    """A ``kubespawner_override`` for a profile's resources (and GPU count)."""
    return {
        **resource_settings(profile),
        "extra_resource_limits": {profile.gpu_resource: str(gpus)} if gpus else {},
    }


def profile_list(view: UserView, last: Mapping[str, object] | None = None) -> list[dict]:
    """KubeSpawner's ``profile_list`` for this user, ``last`` preselected.

    Each profile (size) offers the user's images as an ``image`` choice
    (plus a free-text entry if an image rule lets them), and GPU profiles
    with a range offer a ``gpus`` choice. A stale or now-forbidden ``last``
    is ignored; a deprecated last image preselects its replacement.
    """
    try:
        chosen = select(view, last) if last else None
    except InvalidInput:
        chosen = None
    default_profile = chosen.profile if chosen else view.default_profile
    default_image = (chosen.image_name if chosen else "") or (view.default_image.name if view.default_image else "")

    entries = []
    for profile in view.profiles:
        options: dict = {}
        image_choices = {
            image.name: {
                "display_name": image.label + (f" — {image.description}" if image.description else ""),
                "default": image.name == default_image,
                "kubespawner_override": {"image": image.image},
            }
            for image in view.images
        }
        # unlisted_choice always present: the shape KubeSpawner's form expects.
        options[IMAGE] = {"display_name": "Image", "choices": image_choices, "unlisted_choice": {"enabled": False}}
        if view.rules:
            options[IMAGE]["unlisted_choice"] = {
                "enabled": True,
                "display_name": "Your own image",
                "display_name_in_choices": "Other (type an image)…",
                "validation_regex": view.custom_image_pattern,
                "validation_message": "; ".join(r.description or r.pattern for r in view.rules),
                "kubespawner_override": {"image": "{value}"},
            }
        if len(profile.gpu_choices) > 1:
            picked = chosen.gpus if chosen and chosen.profile == profile else profile.gpus
            options[GPUS] = {
                "unlisted_choice": {"enabled": False},
                "display_name": "GPUs",
                "choices": {
                    str(n): {
                        "display_name": str(n),
                        "default": n == picked,
                        "kubespawner_override": {"extra_resource_limits": {profile.gpu_resource: str(n)}},
                    }
                    for n in profile.gpu_choices
                },
            }
        description = profile.summary() + (f". {profile.description}" if profile.description else "")
        entries.append(
            {
                "slug": profile.name,
                "display_name": profile.label,
                "description": description,
                "default": profile is default_profile,
                "kubespawner_override": resource_overrides(profile, profile.gpus),
                "profile_options": options,
            }
        )
    return entries
