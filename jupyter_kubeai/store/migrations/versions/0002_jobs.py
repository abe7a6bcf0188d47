"""Training jobs.

Revision ID: 0002_jobs
Revises: 0001_catalog
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_jobs"
down_revision = "0001_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("framework", sa.String(32), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("job_dir", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float, nullable=True),
        sa.Column("finished", sa.Float, nullable=True),
    )
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created"])
    op.create_index("ix_jobs_project_created", "jobs", ["project", "created"])
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    op.drop_table("jobs")
