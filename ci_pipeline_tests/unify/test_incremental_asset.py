"""The unify asset keeps its state in the lake and unifies the next run incrementally, saying so."""

from __future__ import annotations

import duckdb
import pandas as pd

from ci_pipeline.export.sql import _lake_views
from ci_pipeline.lake import Lake
from ci_pipeline.unify.incremental import META_FILE, STATE_DIR
from ci_pipeline_tests.unify.test_assets import project, run


def stats_metadata(result) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "unify_stats"]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_the_second_run_is_incremental_and_publishes_what_a_full_run_does(tmp_path):
    cfg, lake = project(tmp_path)
    first = stats_metadata(run(cfg))
    assert first["incremental"] is False and "no state of an earlier run" in first["incremental_reason"]
    assert lake.exists(META_FILE)
    shop = lake.read_parquet("ci_pipeline/shop/customers.parquet")
    extra = pd.DataFrame([{"customer_id": "s4", "full_name": "Robert Smith", "email": "bob.smith@example.com"}])
    lake.write_parquet("ci_pipeline/shop/customers.parquet", pd.concat([shop, extra.astype("string")]))
    second = stats_metadata(run(cfg))
    assert second["incremental"] is True and second["incremental records_new"] == 1
    incremental = lake.read_parquet("ci_pipeline/unify/alternate_key.parquet")
    # The same run without the state: a full unify, with the same published tables.
    lake.delete(STATE_DIR, recursive=True)
    third = stats_metadata(run(cfg))
    assert third["incremental"] is False
    pd.testing.assert_frame_equal(lake.read_parquet("ci_pipeline/unify/alternate_key.parquet"), incremental)


def test_the_state_is_no_table_of_the_lake_sql_views(tmp_path):
    lake = Lake.local(tmp_path)
    lake.write_parquet("ci_pipeline/unify/identity_map.parquet", pd.DataFrame({"CustomerId": ["a"]}))
    lake.write_parquet(f"{STATE_DIR}/records.parquet", pd.DataFrame({"key": ["c1"]}))
    with duckdb.connect() as con:
        assert _lake_views(con, lake) == [lake.path("ci_pipeline/unify/identity_map.parquet")]
