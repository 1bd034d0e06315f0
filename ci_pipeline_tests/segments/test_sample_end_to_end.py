"""Activities, measures and segments over the bundled sample, end to end through `ci-pipeline run`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ci_pipeline import cli
from ci_pipeline.outputs import CUSTOMER_MEASURE_COLUMNS, SEGMENT_MEMBERSHIP_COLUMNS, UNIFIED_ACTIVITY_COLUMNS

OURS = "group:activities or group:measures or group:predictions or group:enrich or group:segments"


def read(sample, key: str) -> pd.DataFrame:
    return pd.read_parquet(sample / "lake" / "ci_pipeline" / f"{key}.parquet")


@pytest.mark.slow
def test_sample_runs_end_to_end_and_reruns_identically(sample_run_copy, capsys):
    # The sample after the session's one `ci-pipeline run` of every stage (conftest's sample_run_copy).
    sample_copy = sample_run_copy
    config = str(sample_copy / "ci_pipeline.yaml")

    unified = read(sample_copy, "activities/unified_activity")
    corrupt = read(sample_copy, "activities/unified_activity_corrupt")
    assert list(unified.columns) == UNIFIED_ACTIVITY_COLUMNS
    types = {"SalesOrder", "SalesOrderLine", "WebLog", "Loyalty", "Feedback", "SupportCase"}
    assert set(unified["ActivityType"]) == types
    read_rows = sum(
        len(read(sample_copy, f"{s}/{t}"))
        for s, t in [
            ("ecommerce", "orders"),
            ("ecommerce", "order_lines"),
            ("ecommerce", "web_sessions"),
            ("loyalty", "points"),
            ("support", "surveys"),
            ("support", "tickets"),
        ]
    )
    assert read_rows == len(unified) + len(corrupt)
    profile = read(sample_copy, "unify/customer_profile")
    assert set(unified["CustomerId"]) <= set(profile["CustomerId"])

    measures = read(sample_copy, "measures/customer_measure")
    assert list(measures.columns) == CUSTOMER_MEASURE_COLUMNS
    assert sorted(measures["CustomerId"]) == sorted(profile["CustomerId"])
    first = json.loads(measures["Measures"].iloc[0])
    assert list(first) == sorted(first) and "total_spend" in first and "rfm_recency_score" in first
    assert read(sample_copy, "measures/total_revenue")["Value"].iloc[0] > 0

    membership = read(sample_copy, "segments/segment_membership")
    assert list(membership.columns) == SEGMENT_MEMBERSHIP_COLUMNS
    names = set().union(*(json.loads(s) for s in membership["Segments"]))
    assert {"high_value", "lapsed", "new_this_quarter", "loyal_members", "unhappy"} <= names
    history = read(sample_copy, "segments/segment_member_history")

    assert cli.main(["--config", config, "run", "--select", OURS]) == 0
    first_run = {
        "activities/unified_activity": unified,
        "measures/customer_measure": measures,
        "segments/segment_membership": membership,
    }
    for key, frame in first_run.items():
        pd.testing.assert_frame_equal(read(sample_copy, key), frame)
    again = read(sample_copy, "segments/segment_member_history")
    assert len(again) == 2 * len(history)
    assert (again.iloc[len(history) :]["Added"] == 0).all() and (again.iloc[len(history) :]["Removed"] == 0).all()
    capsys.readouterr()
    preview = ["segment", "preview", "--field", "measure.order_count", "--op", ">=", "--value", "1"]
    assert cli.main(["--config", config, *preview]) == 0
    assert "estimated size:" in capsys.readouterr().out
