"""Alembic migrations of the governance metadata store (run by :func:`ci_pipeline.governance.store.open_store`)."""
