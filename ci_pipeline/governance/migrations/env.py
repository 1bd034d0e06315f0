"""Alembic environment: migrates the connection :mod:`ci_pipeline.governance.store` hands over."""

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode lets later migrations alter SQLite tables (copy-and-move), and is a no-op elsewhere.
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
