"""Alembic environment: always run on a connection handed in by gateway.infra.sql.schema."""

from __future__ import annotations

from alembic import context

from gateway.infra.sql.tables import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
