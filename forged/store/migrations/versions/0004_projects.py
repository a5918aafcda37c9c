"""Projects (forgectl init), and each job's project as an indexed column so a project's jobs list cheaply.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("jobs", sa.Column("project", sa.String(32), nullable=False, server_default=""))
    op.create_index("ix_jobs_owner_project", "jobs", ["owner", "project", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_project", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:  # SQLite drops a column only by copying the table
        batch.drop_column("project")
    op.drop_table("projects")
