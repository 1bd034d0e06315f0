"""Helpers for ingestion tests: a configuration written next to the tiny files a test creates."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from ci_pipeline.config import ProjectConfig, load_config
from ci_pipeline.defs import ingest as ingest_defs
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.ingest import ingest_table
from ci_pipeline.lake import Lake


def write_config(folder: Path, tables: dict, source: str = "src", owner: str = "data@contoso.example", lake=None):
    """Write ``ci_pipeline.yaml`` with one source holding ``tables`` and load it."""
    document = {"lake": lake or {"url": "lake"}, "sources": {source: {"owner": owner, "tables": tables}}}
    path = folder / "ci_pipeline.yaml"
    path.write_text(json.dumps(document, indent=1))  # JSON is valid YAML
    return load_config(path)


@pytest.fixture
def ingest(tmp_path):
    """``ingest(tables, table="t")`` -> IngestResult of table ``t`` of source ``src`` (lake under tmp_path)."""

    def run(tables: dict, table: str = "t", **kwargs):
        config = write_config(tmp_path, tables)
        return ingest_table(config, Lake.local(tmp_path / "lake"), "src", table, **kwargs)

    return run


def materialize(config: ProjectConfig) -> dg.ExecuteInProcessResult:
    """Materialise every ingest asset of a configuration with the real lake IO manager."""
    defs = ingest_defs.build(config)
    return dg.materialize(list(defs.assets), resources=shared_resources(config), raise_on_error=False)


def metadata(result: dg.ExecuteInProcessResult, key: list[str]) -> dict:
    """The metadata values of an asset's materialisation, as plain values."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    assert events, f"{key} was not materialised"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    """Check name -> evaluation."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}
