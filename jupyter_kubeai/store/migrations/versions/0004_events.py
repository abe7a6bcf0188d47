"""Events: who did what to a job, a model or a service.

Revision ID: 0004_events
Revises: 0003_models
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_events"
down_revision = "0003_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_events_kind_key_time", "events", ["kind", "key", "time"])


def downgrade() -> None:
    op.drop_index("ix_events_kind_key_time", "events")
    op.drop_table("events")
