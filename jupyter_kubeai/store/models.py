"""``ModelStore``: registered models, their versions and aliases, and inference services.

A model lives in a *scope*: a project (``project:<group>``, shared by its
members) or one user alone (``user:<name>``). Who may see what is decided
here, once (:func:`scopes_of`). Versions number themselves; a version's
files are immutable (see :mod:`jupyter_kubeai.models.registry`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from ..errors import Conflict, NotFound
from .tables import DeploymentRow, ModelAliasRow, ModelRow, ModelVersionRow


def scope_of(project: str | None, owner: str) -> str:
    return f"project:{project}" if project else f"user:{owner}"


def scopes_of(user: str, groups: tuple[str, ...]) -> list[str]:
    """The scopes whose models ``user`` may see and use: their own and their projects'."""
    return [scope_of(None, user), *(scope_of(g, user) for g in groups)]


@dataclass(frozen=True)
class VersionRecord:
    model_id: int
    version: int
    path: str
    checksum: str
    format: str
    signature: dict
    metrics: dict
    tags: dict
    lineage: dict
    archived: bool
    created: float
    created_by: str

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelRecord:
    id: int
    scope: str
    name: str
    project: str | None
    owner: str
    description: str
    created: float
    aliases: dict[str, int] = field(default_factory=dict)
    latest: int | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DeploymentRecord:
    name: str
    owner: str
    project: str | None
    model_id: int
    version: int
    previous_version: int | None
    backend: str
    state: str
    reason: str
    spec: dict
    created: float
    updated: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _version(row: ModelVersionRow) -> VersionRecord:
    return VersionRecord(**{name: getattr(row, name) for name in VersionRecord.__dataclass_fields__})


def _deployment(row: DeploymentRow) -> DeploymentRecord:
    return DeploymentRecord(**{name: getattr(row, name) for name in DeploymentRecord.__dataclass_fields__})


class ModelStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    # --- models ------------------------------------------------------------------------------

    def _model(self, session, row: ModelRow) -> ModelRecord:
        aliases = {a.alias: a.version for a in session.scalars(select(ModelAliasRow).where(ModelAliasRow.model_id == row.id))}
        latest = session.scalar(select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == row.id))
        return ModelRecord(id=row.id, scope=row.scope, name=row.name, project=row.project, owner=row.owner,
                           description=row.description, created=row.created, aliases=aliases, latest=latest)

    def models(self, scopes: list[str] | None, *, project: str | None = None) -> list[ModelRecord]:
        """Models in ``scopes`` (None: all, for admins), by name."""
        query = select(ModelRow).order_by(ModelRow.name, ModelRow.scope)
        if scopes is not None:
            query = query.where(ModelRow.scope.in_(scopes))
        if project is not None:
            query = query.where(ModelRow.project == project)
        with self.sessions() as session:
            return [self._model(session, row) for row in session.scalars(query)]

    def model(self, model_id: int) -> ModelRecord:
        with self.sessions() as session:
            row = session.get(ModelRow, model_id)
            if row is None:
                raise NotFound(f"There is no model {model_id}.")
            return self._model(session, row)

    def find(self, scope: str, name: str) -> ModelRecord | None:
        with self.sessions() as session:
            row = session.scalar(select(ModelRow).where(ModelRow.scope == scope, ModelRow.name == name))
            return None if row is None else self._model(session, row)

    def ensure_model(self, scope: str, name: str, project: str | None, owner: str, description: str = "") -> ModelRecord:
        existing = self.find(scope, name)
        if existing is not None:
            return existing
        try:
            with self.sessions.begin() as session:
                session.add(ModelRow(scope=scope, name=name, project=project, owner=owner,
                                     description=description, created=time.time()))
        except IntegrityError:
            pass  # registered at the same moment by someone else: use theirs
        return self.find(scope, name)

    # --- versions ----------------------------------------------------------------------------

    def add_version(self, model_id: int, path_for, place, **fields) -> VersionRecord:
        """The next version: its number is taken, then ``place(version)`` puts its files at ``path_for(version)``.

        Both happen in one transaction: if placing fails, no record stays.
        """
        for _ in range(5):
            try:
                with self.sessions.begin() as session:
                    latest = session.scalar(
                        select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == model_id))
                    version = (latest or 0) + 1
                    row = ModelVersionRow(model_id=model_id, version=version, path=path_for(version),
                                          archived=False, created=time.time(), **fields)
                    session.add(row)
                    session.flush()  # IntegrityError here if another registration took the number
                    place(version)
                    return _version(row)
            except IntegrityError:
                continue
        raise Conflict("The model is being registered by others right now; try again.")

    def versions(self, model_id: int) -> list[VersionRecord]:
        query = select(ModelVersionRow).where(ModelVersionRow.model_id == model_id).order_by(ModelVersionRow.version.desc())
        with self.sessions() as session:
            return [_version(r) for r in session.scalars(query)]

    def version(self, model_id: int, version: int) -> VersionRecord:
        with self.sessions() as session:
            row = session.scalar(select(ModelVersionRow).where(
                ModelVersionRow.model_id == model_id, ModelVersionRow.version == version))
            if row is None:
                raise NotFound(f"Model {model_id} has no version {version}.")
            return _version(row)

    def update_version(self, model_id: int, version: int, *, archived: bool | None = None,
                       tags: dict | None = None) -> VersionRecord:
        with self.sessions.begin() as session:
            row = session.scalar(select(ModelVersionRow).where(
                ModelVersionRow.model_id == model_id, ModelVersionRow.version == version))
            if row is None:
                raise NotFound(f"Model {model_id} has no version {version}.")
            if archived is not None:
                row.archived = archived
            if tags is not None:
                row.tags = tags
            return _version(row)

    def delete_version(self, model_id: int, version: int) -> VersionRecord:
        with self.sessions.begin() as session:
            row = session.scalar(select(ModelVersionRow).where(
                ModelVersionRow.model_id == model_id, ModelVersionRow.version == version))
            if row is None:
                raise NotFound(f"Model {model_id} has no version {version}.")
            users = session.scalars(select(DeploymentRow.name).where(
                DeploymentRow.model_id == model_id,
                (DeploymentRow.version == version) | (DeploymentRow.previous_version == version))).all()
            if users:
                raise Conflict(
                    f"Version {version} is used by service(s) {', '.join(users)} (serving it, or to roll back to); "
                    "archive it instead, or move those services to another version first."
                )
            session.execute(ModelAliasRow.__table__.delete().where(
                ModelAliasRow.model_id == model_id, ModelAliasRow.version == version))
            session.delete(row)
            return _version(row)

    # --- aliases -----------------------------------------------------------------------------

    def set_alias(self, model_id: int, alias: str, version: int) -> None:
        self.version(model_id, version)  # NotFound for a version that does not exist
        with self.sessions.begin() as session:
            row = session.get(ModelAliasRow, (model_id, alias))
            if row is None:
                session.add(ModelAliasRow(model_id=model_id, alias=alias, version=version))
            else:
                row.version = version

    def delete_alias(self, model_id: int, alias: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(ModelAliasRow, (model_id, alias))
            if row is None:
                raise NotFound(f"Model {model_id} has no alias {alias!r}.")
            session.delete(row)

    # --- deployments -------------------------------------------------------------------------

    def add_deployment(self, record: DeploymentRecord) -> DeploymentRecord:
        with self.sessions.begin() as session:
            if session.get(DeploymentRow, record.name) is not None:
                raise Conflict(f"A service named {record.name!r} exists already; pick another name.")
            session.add(DeploymentRow(**record.__dict__))
        return record

    def deployment(self, name: str) -> DeploymentRecord:
        with self.sessions() as session:
            row = session.get(DeploymentRow, name)
            if row is None:
                raise NotFound(f"There is no service {name!r}.")
            return _deployment(row)

    def deployments(self, owner: str | None = None, groups: tuple[str, ...] = ()) -> list[DeploymentRecord]:
        """Services ``owner`` may see (their own and their projects'); all when ``owner`` is None."""
        query = select(DeploymentRow).order_by(DeploymentRow.created.desc())
        if owner is not None:
            query = query.where((DeploymentRow.owner == owner) | DeploymentRow.project.in_(groups or ("",)))
        with self.sessions() as session:
            return [_deployment(r) for r in session.scalars(query)]

    def update_deployment(self, name: str, **changes) -> DeploymentRecord:
        with self.sessions.begin() as session:
            row = session.get(DeploymentRow, name)
            if row is None:
                raise NotFound(f"There is no service {name!r}.")
            for key, value in changes.items():
                setattr(row, key, value)
            row.updated = time.time()
            return _deployment(row)

    def delete_deployment(self, name: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(DeploymentRow, name)
            if row is not None:
                session.delete(row)
