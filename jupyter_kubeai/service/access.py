"""The one access rule for every item the service keeps: jobs, models, versions, aliases, services.

- **See**: the item's owner, the members of its project, and hub admins.
  Anyone else gets 404 from the managers, as if the item did not exist.
- **Change or delete**: its owner and hub admins. Anyone else who may see
  it gets 403 with a message naming who may (:func:`require_change`).
- **Create**: what a member creates is theirs. A member may add a version
  of their own to a project model and deploy a project model's version as
  a service of their own.

Who owns what:

- a job: who submitted it (an admin's resubmission stays the owner's job);
- a model: who registered its first version; the model's aliases are its
  owner's (they decide what ``production`` means);
- a version: who registered it (``created_by``), and the model's owner may
  curate it too (archive, tag, delete), since the model is theirs;
- a service: who deployed it.

:class:`Item` is what the rule needs of any of them; the managers
(:mod:`.jobs`, :mod:`.models`) build one per record and call only these
functions, so the rule lives here alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Forbidden
from .identity import Identity


@dataclass(frozen=True)
class Item:
    """An item as the access rule sees it."""

    #: What to call it in a message: ``job 'train-x'``, ``version 2 of model 'iris'``.
    label: str
    #: Its owner's hub name.
    owner: str
    #: The hub group it belongs to; None: its owner's alone.
    project: str | None
    #: Others who may change it besides its owner and admins, with the role that lets them,
    #: e.g. ``(("alice", "the model's owner"),)`` for a teammate's version of alice's model.
    also: tuple[tuple[str, str], ...] = ()


def may_see(who: Identity, item: Item) -> bool:
    """Owner, project members, hub admins."""
    return who.admin or who.name == item.owner or (item.project is not None and item.project in who.groups)


def may_change(who: Identity, item: Item) -> bool:
    """Owner (or one of ``item.also``) and hub admins, and only users (a service's token changes nothing)."""
    if who.kind != "user":
        return False
    return who.admin or who.name == item.owner or any(who.name == name for name, _ in item.also)


def require_change(who: Identity, item: Item, action: str) -> None:
    """403 naming who may ``action`` the item, unless the caller may change it."""
    if may_change(who, item):
        return
    who_may = [f"{item.owner} (its owner)"] + [f"{name} ({role})" for name, role in item.also if name != item.owner]
    raise Forbidden(f"Only {', '.join(who_may)} or a hub admin may {action} {item.label}.")
