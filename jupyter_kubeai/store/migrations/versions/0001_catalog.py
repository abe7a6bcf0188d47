"""The catalog: images, profiles, image rules; store settings.

Revision ID: 0001_catalog
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_catalog"
down_revision = None
branch_labels = None
depends_on = None


def _entry_columns():
    return [
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "catalog_images",
        *_entry_columns(),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("deprecated", sa.Boolean, nullable=False),
        sa.Column("replacement", sa.String(63), nullable=False),
    )
    op.create_table(
        "catalog_profiles",
        *_entry_columns(),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("cpu_request", sa.String(32), nullable=False),
        sa.Column("cpu_limit", sa.String(32), nullable=False),
        sa.Column("memory_request", sa.String(32), nullable=False),
        sa.Column("memory_limit", sa.String(32), nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("max_gpus", sa.Integer, nullable=False),
        sa.Column("gpu_resource", sa.String(253), nullable=False),
        sa.Column("placement", sa.JSON, nullable=False),
        sa.Column("project_placement", sa.JSON, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
    )
    op.create_table(
        "catalog_image_rules",
        *_entry_columns(),
        sa.Column("pattern", sa.Text, nullable=False),
    )
    op.create_table(
        "kubeai_settings",
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("kubeai_settings", "catalog_image_rules", "catalog_profiles", "catalog_images"):
        op.drop_table(table)
