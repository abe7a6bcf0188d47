"""The store's tables. Change them only together with a new migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class _Entry:
    """Columns every catalog entry has."""

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    groups: Mapped[list] = mapped_column(JSON, default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class ImageRow(_Entry, Base):
    __tablename__ = "catalog_images"

    image: Mapped[str] = mapped_column(String(512))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    tags: Mapped[list] = mapped_column(JSON, default=list)
    default: Mapped[bool] = mapped_column("is_default", Boolean, default=False)
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False)
    replacement: Mapped[str] = mapped_column(String(63), default="")


class ProfileRow(_Entry, Base):
    __tablename__ = "catalog_profiles"

    display_name: Mapped[str] = mapped_column(String(200), default="")
    cpu_request: Mapped[str] = mapped_column(String(32))
    cpu_limit: Mapped[str] = mapped_column(String(32))
    memory_request: Mapped[str] = mapped_column(String(32))
    memory_limit: Mapped[str] = mapped_column(String(32))
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    max_gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_resource: Mapped[str] = mapped_column(String(253), default="nvidia.com/gpu")
    placement: Mapped[dict] = mapped_column(JSON, default=dict)
    project_placement: Mapped[dict] = mapped_column(JSON, default=dict)
    default: Mapped[bool] = mapped_column("is_default", Boolean, default=False)


class ImageRuleRow(_Entry, Base):
    __tablename__ = "catalog_image_rules"

    pattern: Mapped[str] = mapped_column(Text)


class Setting(Base):
    """Small facts about the store itself (e.g. whether it was seeded from config)."""

    __tablename__ = "kubeai_settings"

    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class JobRow(Base):
    """A training job: who submitted what, where it ran, how it ended.

    The record stays after the job's objects or processes are cleaned up:
    it is the history and the pointer to the job folder (logs, outputs).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created"),
        Index("ix_jobs_project_created", "project", "created"),
        Index("ix_jobs_state", "state"),
    )

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    project: Mapped[str | None] = mapped_column(String(255), nullable=True)
    framework: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32))  # "local" or "kubernetes"
    state: Mapped[str] = mapped_column(String(32), default="Pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    job_dir: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict] = mapped_column(JSON)  # the submission as accepted
    gpus: Mapped[int] = mapped_column(Integer, default=0)  # total, for project quotas
    created: Mapped[float] = mapped_column(Float)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)


class ModelRow(Base):
    """A registered model: a name within a scope (a project, or one user alone)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_models_scope_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(300))  # "project:<group>" or "user:<name>"
    name: Mapped[str] = mapped_column(String(63))
    project: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner: Mapped[str] = mapped_column(String(255))  # who registered it first
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[float] = mapped_column(Float)


class ModelVersionRow(Base):
    """One immutable version: a folder in registry storage, its checksum and where it came from."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)  # relative to the share root: models/<scope>/<model>/<version>
    checksum: Mapped[str] = mapped_column(String(80))  # "sha256:<hex>" over the files and their names
    format: Mapped[str] = mapped_column(String(32))
    signature: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict] = mapped_column(JSON, default=dict)  # job, notebook snapshot, image, parameters
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(255))


class ModelAliasRow(Base):
    """``production`` -> version 3 of a model."""

    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class DeploymentRow(Base):
    """An inference service: which model version it serves, where, and how it is doing."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    project: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # for rollback
    backend: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32), default="Pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict] = mapped_column(JSON)  # the request as accepted, and the backend's details
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """Who did what to an item, and when: ``alice`` ``rolled_back`` service ``iris-api``.

    Rows outlive their item (an audit trail); the detail of an item shows
    the events since it was created, so a reused name starts clean.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_key_time", "kind", "key", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # "job", "model" or "service"
    key: Mapped[str] = mapped_column(String(255))  # the job id, the model id, the service name
    time: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(255))  # the hub user who did it
    action: Mapped[str] = mapped_column(String(32))  # created, updated, rolled_back, ...
    detail: Mapped[str] = mapped_column(Text, default="")
