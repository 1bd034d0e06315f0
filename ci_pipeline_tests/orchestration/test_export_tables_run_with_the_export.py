"""An incremental run that exports writes every table's files ahead, beside the stages, not only the stale ones."""

from __future__ import annotations

import dagster as dg

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs.refresh import stale_selection
from ci_pipeline.defs.registry import REFRESHED
from ci_pipeline.orchestration.refresh import RefreshPlan

EXPORT = ("publish", "export_warehouse")
ACTIVITY_FILES = dg.AssetKey(["publish", "unified_activity_to_warehouse"])


def _selection(sample_copy, stale: list[tuple[str, str]]) -> set[dg.AssetKey]:
    defs = build_definitions(load_config(sample_copy / "ci_pipeline.yaml"))
    graph = defs.resolve_asset_graph()
    plan = RefreshPlan(stale={path: "configuration or code changed" for path in stale}, history=True)
    return stale_selection(graph, plan, REFRESHED.resolve(graph))


def test_the_files_of_unchanged_tables_are_written_ahead_when_the_export_runs(sample_copy):
    chosen = _selection(sample_copy, [("segments", "segment_membership"), EXPORT])
    assert dg.AssetKey(list(EXPORT)) in chosen
    # The activities did not change; their files are still written by their own asset, beside the other steps.
    assert ACTIVITY_FILES in chosen and dg.AssetKey(["activities", "unified_activity"]) not in chosen
    assert dg.AssetKey(["publish", "customer_profile_to_warehouse"]) in chosen
    assert dg.AssetKey(["publish", "sink_unified_activity"]) not in chosen


def test_no_table_files_are_written_when_the_export_does_not_run(sample_copy):
    chosen = _selection(sample_copy, [("publish", "sink_capacity")])
    assert chosen == {dg.AssetKey(["publish", "sink_capacity"])}
