"""What ingestion remembers between runs, kept in the lake: each table's schema and a Delta table's version."""

from __future__ import annotations

import json

from ci_pipeline.lake import Lake

STATE_ROOT = "ci_pipeline/_state/ingest"


def state_path(source: str, table: str, name: str) -> str:
    """Lake-relative path of one state document, e.g. ``ci_pipeline/_state/ingest/crm/contacts/schema.json``."""
    return f"{STATE_ROOT}/{source}/{table}/{name}.json"


def load(lake: Lake, source: str, table: str, name: str) -> dict | None:
    """A state document, or None when there is none yet."""
    relative = state_path(source, table, name)
    if not lake.exists(relative):
        return None
    return json.loads(lake.read_bytes(relative).decode("utf-8"))


def save(lake: Lake, source: str, table: str, name: str, value: dict) -> None:
    """Write a state document atomically."""
    lake.write_bytes(state_path(source, table, name), json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))
