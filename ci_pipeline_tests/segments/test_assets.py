"""The activities, measures and segments assets materialised over a lake pre-filled with upstream tables."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from ci_pipeline.commands.run import CHECK_FAILED, print_summary
from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs import activities, measures, segments
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.lake import Lake
from ci_pipeline.outputs import (
    CUSTOMER_MEASURE_COLUMNS,
    SEGMENT_MEMBERSHIP_COLUMNS,
    UNIFIED_ACTIVITY_COLUMNS,
)

CONFIG = {
    "name": "demo",
    "sources": {
        "shop": {
            "owner": "web",
            "tables": {
                "customers": {"format": "parquet", "path": "c", "primary_key": "customer_id"},
                "orders": {"format": "parquet", "path": "o", "primary_key": "order_id"},
            },
        }
    },
    "activities": {
        "tables": {
            "orders": {
                "source": "shop",
                "table": "orders",
                "type": "SalesOrder",
                "timestamp": "order_date",
                "fields": {"amount": "total", "channel": "channel"},
                "customer": {"source": "shop", "table": "customers", "column": "customer_id"},
            }
        }
    },
    "measures": {
        "as_of": "2026-06-30",
        "attributes": {
            "spend": {"template": "total_transaction_value", "activity": "orders"},
            "orders_count": {"template": "transaction_count", "activity": "orders"},
        },
        "customer": {
            "spend_by_channel": {"activity": "orders", "aggregate": "sum", "field": "amount", "dimensions": ["channel"]}
        },
        "business": {"revenue": {"activity": "orders", "aggregate": "sum", "field": "amount"}},
    },
    "segments": {
        "definitions": {
            "big": {"rules": [{"field": "measure.spend", "op": ">=", "value": 50}]},
            "recent": {"type": "static", "rules": [{"activity": "orders", "within": "30 days"}]},
            "seattle": {"rules": [{"field": "profile.City", "op": "=", "value": "Seattle"}]},
        }
    },
}


def prefill(lake: Lake, orders: pd.DataFrame) -> None:
    lake.write_parquet(
        "ci_pipeline/unify/alternate_key.parquet",
        pd.DataFrame(
            {
                "DataSourceName": ["shop"] * 3,
                "EntityName": ["customers"] * 3,
                "AlternateValue": ["1", "2", "3"],
                "KeyRing": ["[]"] * 3,
                "CustomerId": ["A", "B", "C"],
                "AlternateKeyId": ["g1", "g2", "g3"],
                "msdynci_identifier": ["shop|customers|1", "shop|customers|2", "shop|customers|3"],
            }
        ),
    )
    lake.write_parquet(
        "ci_pipeline/unify/customer_profile.parquet",
        pd.DataFrame({"CustomerId": ["A", "B", "C"], "City": ["Seattle", "Boston", "Seattle"]}),
    )
    lake.write_parquet("ci_pipeline/shop/orders.parquet", orders)


def orders(rows):
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "order_date", "total", "channel"])
    frame["order_date"] = pd.to_datetime(frame["order_date"])
    return frame


def materialize(config: ProjectConfig, run_config=None, instance=None) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions.merge(activities.build(config), measures.build(config), segments.build(config))
    upstream = [
        dg.SourceAsset(key=key)
        for key in (["shop", "orders"], ["unify", "alternate_key"], ["unify", "customer_profile"])
    ]
    return dg.materialize(
        [*defs.assets, *upstream],
        resources=shared_resources(config),
        run_config=run_config,
        raise_on_error=True,
        instance=instance,
    )


@pytest.fixture
def project(tmp_path):
    config = ProjectConfig.model_validate({**CONFIG, "lake": {"url": str(tmp_path / "lake")}})
    assert [p for p in config.cross_reference_problems() if "unify" not in p] == []
    return config


def summarised(config: ProjectConfig, capsys) -> tuple[dg.AssetCheckEvaluation, int, str]:
    """The run's ``no_quarantined_activities`` check, the exit status `ci-pipeline run` gives it, and its summary."""
    capsys.readouterr()
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(config, instance=instance)
        status = print_summary(result, list(instance.all_logs(result.run_id)), config, 1.0)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_quarantined_activities"]
    return check, status, capsys.readouterr().out


def test_quarantined_activities_are_told_per_activity_and_one_that_placed_no_row_is_an_error(project, tmp_path, capsys):
    lake = Lake.local(tmp_path / "lake")
    prefill(lake, orders([("o1", 1, "2026-06-20 10:00", 40.0, "web"), ("o4", 9, "2026-01-01 10:00", 10.0, "web")]))
    check, status, out = summarised(project, capsys)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    # A warning leaves the run a success: a nightly job goes on exiting 0.
    assert status == 0 and "\nsucceeded in " in out
    assert check.description == (
        "rows quarantined in activities/unified_activity_corrupt: orders 1 of 2 row(s), most often: no "
        "shop.customers record with key '9'"
    )
    # Each segment's size, a first run without a change.
    assert f"\n\nsegment{' ' * 45} {'members':>10}\nbig{' ' * 49} {0:>10}\nrecent" in out
    assert f"\nseattle{' ' * 45} {2:>10}\n" in out
    prefill(lake, orders([("o4", 9, "2026-01-01 10:00", 10.0, "web"), ("o5", 8, "2026-01-02 10:00", 10.0, "web")]))
    # Customer 8 is in the customer file, but ingest quarantined its line: the activity says so, and where.
    quarantined = {"key": ["8"], "line": [3], "reason": ["expected 4 columns, found 5"]}
    lake.write_parquet("ci_pipeline/shop/customers_corrupt.parquet", pd.DataFrame(quarantined))
    check, status, out = summarised(project, capsys)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    # An activity that placed no row fails the command, so that a cron job or a CI step notices.
    assert status == CHECK_FAILED == 3
    assert "\nsucceeded with 1 failed check(s) of error severity (exit status 3) in " in out
    # The second run says each segment's change: the first's one member of recent is kept (a static segment).
    assert f"\nsegment (change: since the last run){' ' * 16} {'members':>10} {'change':>8}\n" in out
    assert f"\nseattle{' ' * 45} {2:>10} {'0':>8}\n" in out
    assert check.description.startswith(
        "orders placed no row at all (check its primary_key, timestamp and customer); rows quarantined in "
        "activities/unified_activity_corrupt: orders 2 of 2 row(s)"
    )
    corrupt = lake.read_parquet("ci_pipeline/activities/unified_activity_corrupt.parquet").set_index("SourceActivityId")
    assert corrupt.loc["o4", "Reason"] == "no shop.customers record with key '9'"
    assert corrupt.loc["o5", "Reason"] == (
        "the shop.customers record with key '8' was quarantined at ingest, see shop/customers_corrupt "
        "(lake.shop__customers_corrupt in SQL): line 3, expected 4 columns, found 5; fix that row of shop.customers: "
        "the activity is placed on the next run"
    )


def test_stages_materialise_with_checks_and_history_across_runs(project, tmp_path):
    lake = Lake.local(tmp_path / "lake")
    prefill(
        lake,
        orders(
            [
                ("o1", 1, "2026-06-20 10:00", 40.0, "web"),
                ("o2", 1, "2026-05-01 10:00", 20.0, "store"),
                ("o3", 2, "2026-01-01 10:00", 10.0, "web"),
                ("o4", 9, "2026-01-01 10:00", 10.0, "web"),
            ]
        ),
    )
    result = materialize(project)
    assert all(c.passed for c in result.get_asset_check_evaluations() if c.check_name != "no_quarantined_activities")

    unified = lake.read_parquet("ci_pipeline/activities/unified_activity.parquet")
    assert list(unified.columns) == UNIFIED_ACTIVITY_COLUMNS and len(unified) == 3
    corrupt = lake.read_parquet("ci_pipeline/activities/unified_activity_corrupt.parquet")
    assert corrupt["SourceActivityId"].tolist() == ["o4"]

    cm = lake.read_parquet("ci_pipeline/measures/customer_measure.parquet")
    assert list(cm.columns) == CUSTOMER_MEASURE_COLUMNS
    assert [json.loads(m) for m in cm["Measures"]] == [
        {"orders_count": 2.0, "spend": 60.0},
        {"orders_count": 1.0, "spend": 10.0},
        {"orders_count": 0.0, "spend": None},
    ]
    assert lake.read_parquet("ci_pipeline/measures/revenue.parquet")["Value"].tolist() == [70.0]
    assert len(lake.read_parquet("ci_pipeline/measures/spend_by_channel.parquet")) == 3
    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert mats["measures/revenue"]["value"].value == 70.0
    assert mats["measures/customer_measure"]["measure/spend max"].value == 60.0
    rows = mats["measures/customer_measure"]["distribution"].records
    assert {r.data["measure"]: r.data["max"] for r in rows}["spend"] == 60.0

    membership = lake.read_parquet("ci_pipeline/segments/segment_membership.parquet")
    assert list(membership.columns) == SEGMENT_MEMBERSHIP_COLUMNS
    assert dict(zip(membership["CustomerId"], membership["Segments"], strict=True)) == {
        "A": '["big","recent","seattle"]',
        "C": '["seattle"]',
    }
    assert set(membership["SegmentProvider"]) == {"demo"}

    # Second run: A's recent order is gone; the static segment keeps A until refreshed.
    prefill(lake, orders([("o2", 1, "2026-05-01 10:00", 20.0, "store"), ("o3", 2, "2026-06-25 10:00", 60.0, "web")]))
    materialize(project)
    membership = lake.read_parquet("ci_pipeline/segments/segment_membership.parquet")
    assert dict(zip(membership["CustomerId"], membership["Segments"], strict=True)) == {
        "A": '["recent","seattle"]',
        "B": '["big"]',
        "C": '["seattle"]',
    }
    history = lake.read_parquet("ci_pipeline/segments/segment_member_history.parquet")
    assert history[["Segment", "Members", "Added", "Removed"]].values.tolist() == [
        ["big", 1, 1, 0],
        ["recent", 1, 1, 0],
        ["seattle", 2, 2, 0],
        ["big", 1, 1, 1],
        ["recent", 1, 0, 0],
        ["seattle", 2, 0, 0],
    ]

    materialize(project, {"ops": {"evaluate_segments": {"config": {"refresh_static": ["recent"]}}}})
    membership = lake.read_parquet("ci_pipeline/segments/segment_membership.parquet")
    assert dict(zip(membership["CustomerId"], membership["Segments"], strict=True))["B"] == '["big","recent"]'
    assert "A" in set(membership["CustomerId"])  # still in seattle
