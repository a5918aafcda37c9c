"""Alembic environment: forged passes its live connection in, so migrations run inside its start-up."""

from __future__ import annotations

from alembic import context

from forged.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("forged runs its migrations itself at start-up; run `forged`, not `alembic upgrade`")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
