"""Indexes for the fair queue: per-user counts of queued jobs and each user's last start, without scans.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_queue_by_owner", "jobs", ["state", "priority", "owner", "created_at"])
    op.create_index("ix_jobs_owner_started", "jobs", ["owner", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_started", table_name="jobs")
    op.drop_index("ix_jobs_queue_by_owner", table_name="jobs")
