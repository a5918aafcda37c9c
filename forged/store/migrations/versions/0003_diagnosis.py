"""A failed job's diagnosis (cause and fix) and the brain that wrote it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("diagnosis", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("diagnosis_brain", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("diagnosis_brain")
        batch.drop_column("diagnosis")
