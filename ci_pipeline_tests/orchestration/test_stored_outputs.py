"""A step with several large tables stores them itself, two at a time, and the IO manager records and loads them
as if it had stored them."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from ci_pipeline.defs.resources import LakeParquetIOManager, LakeResource, asset_path, stored_outputs


def test_tables_stored_side_by_side_are_recorded_and_read_like_the_io_managers_own(tmp_path):
    lake = LakeResource(url=str(tmp_path / "lake"), base_dir=str(tmp_path))
    scores = pd.DataFrame({"CustomerId": pd.array(["c2", "c1", None], dtype="string"), "Score": [0.5, 0.25, 1.0]})
    counts = pd.DataFrame({"Model": pd.array(["churn"], dtype="string"), "Rows": pd.array([3], dtype="Int64")})

    @dg.multi_asset(
        outs={
            "scores": dg.AssetOut(key=["predictions", "scores"]),
            "counts": dg.AssetOut(key=["predictions", "counts"]),
        },
        required_resource_keys={"lake"},
    )
    def two_tables(context):
        frames = {"scores": scores, "counts": counts}
        yield from stored_outputs(context, context.resources.lake.get_lake(), frames, {"counts": {"models": 1}})

    @dg.asset(key=["predictions", "read_back"], ins={"table": dg.AssetIn(["predictions", "scores"])})
    def read_back(table: pd.DataFrame) -> pd.DataFrame:
        return table

    result = dg.materialize(
        [two_tables, read_back], resources={"lake": lake, "io_manager": LakeParquetIOManager(lake=lake)}
    )
    assert result.success
    store = lake.get_lake()
    for key, frame in (("scores", scores), ("counts", counts)):
        stored = store.read_parquet(asset_path(dg.AssetKey(["predictions", key])))
        pd.testing.assert_frame_equal(stored, frame)
    recorded = {tuple(m.asset_key.path): m.metadata for m in result.asset_materializations_for_node("two_tables")}
    assert recorded[("predictions", "scores")]["dagster/row_count"].value == 3
    assert [c.name for c in recorded[("predictions", "scores")]["dagster/column_schema"].schema.columns] == [
        "CustomerId",
        "Score",
    ]
    assert recorded[("predictions", "counts")]["models"].value == 1
    # The step after reads the table the step stored, as it would one the IO manager stored.
    pd.testing.assert_frame_equal(result.output_for_node("predictions__read_back"), scores)
