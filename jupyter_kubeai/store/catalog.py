"""``CatalogStore``: catalog entries in SQL, with the rules that span entries.

Single-entry validation is :mod:`jupyter_kubeai.catalog.model`'s; this
module keeps what needs the others: unique names (409), one default image
and one default profile, a deprecated image's replacement must exist and be
usable, an image that replaces another cannot go. Every write bumps
``version``, so readers (the spawner in the hub process) reload only when
something changed.
"""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import Iterable

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..catalog.access import Catalog
from ..catalog.model import (
    Image,
    ImageRule,
    Profile,
    image_from_dict,
    image_rule_from_dict,
    profile_from_dict,
    to_dict,
)
from ..errors import Conflict, InvalidInput, NotFound
from .tables import ImageRow, ImageRuleRow, ProfileRow, Setting

VERSION_KEY = "catalog_version"
SEEDED_KEY = "catalog_seeded"

# kind -> (row class, dataclass, parser, words for messages)
_KINDS = {
    "image": (ImageRow, Image, image_from_dict),
    "profile": (ProfileRow, Profile, profile_from_dict),
    "image rule": (ImageRuleRow, ImageRule, image_rule_from_dict),
}


def _row_values(entry) -> dict:
    return to_dict(entry)


def _entry(kind: str, row) -> object:
    _, cls, parse = _KINDS[kind]
    return parse({f.name: getattr(row, f.name) for f in fields(cls)})


class CatalogStore:
    """Catalog entries in the SQL store behind ``engine``."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = threading.Lock()

    # --- reading -----------------------------------------------------------------------------

    def version(self) -> int:
        with self.sessions() as session:
            row = session.get(Setting, VERSION_KEY)
            return int(row.value) if row else 0

    def catalog(self) -> Catalog:
        with self.sessions() as session:
            return Catalog(
                images=tuple(self._all(session, "image")),
                profiles=tuple(self._all(session, "profile")),
                rules=tuple(self._all(session, "image rule")),
            )

    def _all(self, session: Session, kind: str) -> list:
        row_cls = _KINDS[kind][0]
        rows = session.scalars(select(row_cls).order_by(row_cls.position, row_cls.name))
        return [_entry(kind, row) for row in rows]

    def get(self, kind: str, name: str):
        with self.sessions() as session:
            row = session.get(_KINDS[kind][0], name)
            if row is None:
                raise NotFound(f"There is no {kind} named {name!r}.")
            return _entry(kind, row)

    # --- writing -----------------------------------------------------------------------------

    def create(self, kind: str, entry) -> object:
        return self._write(kind, entry, create=True)

    def replace(self, kind: str, name: str, entry) -> object:
        if entry.name != name:
            raise InvalidInput(f"The {kind} in the body is named {entry.name!r}, not {name!r}; names cannot change.")
        return self._write(kind, entry, create=False)

    def delete(self, kind: str, name: str) -> None:
        row_cls = _KINDS[kind][0]
        with self._lock, self.sessions.begin() as session:
            row = session.get(row_cls, name)
            if row is None:
                raise NotFound(f"There is no {kind} named {name!r}.")
            if kind == "image":
                replaced = session.scalars(select(ImageRow.name).where(ImageRow.replacement == name)).all()
                if replaced:
                    raise Conflict(
                        f"Image {name!r} replaces deprecated image(s) {', '.join(replaced)}; "
                        "give those another replacement first."
                    )
            session.delete(row)
            self._bump(session)

    def _write(self, kind: str, entry, *, create: bool):
        row_cls = _KINDS[kind][0]
        values = _row_values(entry)
        with self._lock, self.sessions.begin() as session:
            row = session.get(row_cls, entry.name)
            if create and row is not None:
                raise Conflict(f"A {kind} named {entry.name!r} exists already; edit it instead.")
            if not create and row is None:
                raise NotFound(f"There is no {kind} named {entry.name!r}.")
            if kind == "image":
                self._check_image(session, entry)
            if getattr(entry, "default", False):
                # One default of a kind: choosing a new one unsets the old.
                session.execute(update(row_cls).where(row_cls.name != entry.name).values(default=False))
            if row is None:
                last = session.scalars(select(row_cls.position).order_by(row_cls.position.desc())).first()
                row = row_cls(position=(last or 0) + 1, **values)
                session.add(row)
            else:
                for key, value in values.items():
                    setattr(row, key, value)
            self._bump(session)
        return entry

    def _check_image(self, session: Session, image: Image) -> None:
        if image.replacement:
            target = session.get(ImageRow, image.replacement)
            if target is None:
                raise InvalidInput(f"Image {image.name!r}: replacement {image.replacement!r} is not in the catalog.")
            if target.deprecated:
                raise InvalidInput(f"Image {image.name!r}: replacement {image.replacement!r} is deprecated itself.")
        if image.deprecated:
            dependants = session.scalars(select(ImageRow.name).where(ImageRow.replacement == image.name)).all()
            if dependants:
                raise Conflict(
                    f"Image {image.name!r} replaces deprecated image(s) {', '.join(dependants)}; "
                    "it cannot be deprecated while it does."
                )

    def _bump(self, session: Session) -> None:
        row = session.get(Setting, VERSION_KEY)
        if row is None:
            session.add(Setting(key=VERSION_KEY, value="1"))
        else:
            row.value = str(int(row.value) + 1)

    # --- first start ---------------------------------------------------------------------------

    def seed(self, images: Iterable[dict] = (), profiles: Iterable[dict] = (), rules: Iterable[dict] = ()) -> bool:
        """Load the initial catalog from config, once in the store's life.

        Returns whether it did: a store that was seeded before keeps its
        (admin-edited) entries, even if they were all deleted since.
        """
        entries = (
            [("image rule", image_rule_from_dict(d)) for d in rules]
            + [("profile", profile_from_dict(d)) for d in profiles]
            # Replacements first, so a deprecated image finds its target.
            + sorted((("image", image_from_dict(d)) for d in images), key=lambda e: e[1].deprecated)
        )
        with self.sessions() as session:
            if session.get(Setting, SEEDED_KEY) is not None:
                return False
        for kind, entry in entries:
            self._write(kind, entry, create=True)
        with self._lock, self.sessions.begin() as session:
            if session.get(Setting, SEEDED_KEY) is None:
                session.add(Setting(key=SEEDED_KEY, value="1"))
        return True
