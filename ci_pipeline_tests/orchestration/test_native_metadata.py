"""What the Dagster UI shows: statistics as native tables and plottable numbers, schedules described in words."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs.metadata import entries_table, human_size, number
from ci_pipeline.defs.predictions import _DESCRIPTIONS, _warn_beaten, report_metadata, score_counts
from ci_pipeline.lake import Lake
from ci_pipeline.orchestration.schedule import describe_cron
from ci_pipeline_tests.conftest import SAMPLE_DIR
from ci_pipeline_tests.orchestration.conftest import build_project, write_project
from ci_pipeline_tests.publish.test_assets import load as load_publish_project
from ci_pipeline_tests.publish.test_assets import run as run_publish

CONTACTS = (
    "contact_id,first_name,last_name,email,city\n"
    "c1,Ann,Lee,ann@x.example,Leeds\n"
    "c2,Ann,Lee,ann@x.example,Leeds\n"
    "c3,Bob,Stone,bob@x.example,York\n"
    "c4,Cy,Moss,cy@x.example,\n"
    "c4,Cy,Moss,dup@x.example,\n"
    "c5,Di,Fox,placeholder@x.example,Hull\n"
)
ACCOUNTS = "account_id,email,first_name\na1,ann@x.example,Ann\na2,eve@x.example,Eve\n"
ORDERS = (
    "order_id,account_id,order_date,amount,channel\n"
    "o1,a1,2026-01-05,10.5,web\no2,a1,2026-02-05,4.5,store\no3,a2,2026-03-01,7,web\n"
)


def _project(folder) -> dg.Definitions:
    (folder / "contacts.csv").write_text(CONTACTS)
    (folder / "accounts.csv").write_text(ACCOUNTS)
    (folder / "orders.csv").write_text(ORDERS)
    document = {
        "lake": {"url": "lake"},
        "sources": {
            "crm": {
                "owner": "team:crm",
                "tables": {"contacts": {"format": "csv", "path": "contacts.csv", "primary_key": "contact_id"}},
            },
            "shop": {
                "owner": "team:shop",
                "tables": {
                    "accounts": {"format": "csv", "path": "accounts.csv", "primary_key": "account_id"},
                    "orders": {
                        "format": "csv",
                        "path": "orders.csv",
                        "primary_key": "order_id",
                        "columns": {"amount": "double"},
                    },
                },
            },
        },
        "unify": {
            "tables": [
                {
                    "source": "crm",
                    "table": "contacts",
                    "columns": {"first_name": "first_name", "last_name": "last_name", "email": "email", "city": "city"},
                    "dedup": {"rules": [{"name": "same_email", "conditions": [{"field": "email"}]}]},
                },
                {"source": "shop", "table": "accounts", "columns": {"email": "email", "first_name": "first_name"}},
            ],
            "match": {"rules": [{"name": "email", "conditions": [{"field": "email"}]}]},
        },
        "activities": {
            "tables": {
                "orders": {
                    "source": "shop",
                    "table": "orders",
                    "type": "SalesOrder",
                    "timestamp": "order_date",
                    "fields": {"amount": "amount", "channel": "channel"},
                    "customer": {"source": "shop", "table": "accounts", "column": "account_id"},
                }
            }
        },
        "measures": {
            "business": {
                "orders": {"activity": "orders", "aggregate": "count"},
                "revenue_by_channel": {
                    "activity": "orders",
                    "aggregate": "sum",
                    "field": "amount",
                    "dimensions": ["channel"],
                },
            }
        },
        "segments": {
            "definitions": {
                "leeds": {
                    "description": "Customers living in Leeds.",
                    "rules": [{"field": "profile.City", "op": "=", "value": "Leeds"}],
                },
                "named": {"rules": [{"field": "profile.FirstName", "op": "is_not_null"}]},
            }
        },
        "publish": {"sink": {"kind": "none"}},
    }
    (folder / "ci_pipeline.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return build_definitions(load_config(folder / "ci_pipeline.yaml"))


def _latest(result: dg.ExecuteInProcessResult, *path: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(list(path))]
    assert events, f"{'/'.join(path)} was not materialized"
    return dict(events[-1].materialization.metadata)


def _rows(value: dg.TableMetadataValue) -> list[dict]:
    return [dict(record.data) for record in value.records]


def _no_big_json(metadata: dict, where: str) -> None:
    for label, value in metadata.items():
        if isinstance(value, dg.JsonMetadataValue):
            assert len(json.dumps(value.value)) < 2000, f"{where}: {label} is a JSON blob"
        assert not isinstance(value, dg.MarkdownMetadataValue) or "|---" not in value.value, (
            f"{where}: {label} is a Markdown table; use a native table"
        )


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("native_metadata")
    defs = _project(folder)
    selection = dg.AssetSelection.groups("ingest", "unify", "activities", "measures", "segments")
    result = dg.materialize(list(defs.assets), resources=defs.resources, selection=selection)
    assert result.success
    return folder, result


def test_ingest_metadata_is_a_profile_table_and_quarantine_numbers(materialized):
    _, result = materialized
    contacts = _latest(result, "crm", "contacts")
    profile = {row["column"]: row for row in _rows(contacts["profile"])}
    assert profile["city"]["type"] == "string" and profile["city"]["distinct"] == 3
    assert isinstance(contacts["rows_quarantined"], dg.IntMetadataValue) and contacts["rows_quarantined"].value == 1
    assert contacts["files"].value == 1 and "contacts.csv" in contacts["files (first 10)"].value
    corrupt = _latest(result, "crm", "contacts_corrupt")
    assert isinstance(corrupt["quarantined duplicate_key"], dg.IntMetadataValue)
    assert _rows(corrupt["reasons"]) == [{"reason": "duplicate_key", "rows": 1}]
    for key in (("crm", "contacts"), ("crm", "contacts_corrupt")):
        _no_big_json(_latest(result, *key), "/".join(key))


def test_unify_statistics_are_plottable_numbers_and_native_tables(materialized):
    folder, result = materialized
    profile = _latest(result, "unify", "customer_profile")
    assert isinstance(profile["customers"], dg.IntMetadataValue) and profile["customers"].value == 5
    sizes = {row["records per customer"]: row["customers"] for row in _rows(profile["cluster_sizes"])}
    assert sizes["1"] == 4 and sizes["3"] == 1, "Ann: two contacts and one account; the rest alone"
    # Ann's three records are linked pair by pair, not through a chain: no customer is weakly held.
    assert isinstance(profile["weakly_held_customers"], dg.IntMetadataValue)
    assert profile["weakly_held_customers"].value == 0 and _rows(profile["weakly_held_customers (weakest 100)"]) == []

    pairs = _latest(result, "unify", "match_pairs")
    assert isinstance(pairs["accepted match.email"], dg.IntMetadataValue) and pairs["accepted match.email"].value >= 1
    assert {(row["stage"], row["rule"]) for row in _rows(pairs["rules"])} >= {("dedup", "same_email")}

    changes = _latest(result, "unify", "id_change")
    assert {k: changes[f"id changes {k}"].value for k in ("new", "merged", "split", "removed")} == {
        "new": 5,
        "merged": 0,
        "split": 0,
        "removed": 0,
    }

    dedup = _latest(result, "unify", "dedup_records")
    assert {row["table"]: row["records"] for row in _rows(dedup["tables"])} == {"crm.contacts": 5, "shop.accounts": 2}

    stats = _latest(result, "unify", "unify_stats")
    assert stats["guard_events"].value == 0 and _rows(stats["guard_events (first 10)"]) == []
    assert stats["matched_records"].value + stats["unmatched_records"].value == 7
    assert isinstance(stats["guard_split groups"], dg.IntMetadataValue)
    lake = Lake.local(folder / "lake")
    assert json.loads(lake.read_bytes("ci_pipeline/unify/guard_events.json")) == []
    assert _rows(stats["uncomparable_records"]) == [] and _rows(stats["unreadable_dates"]) == []
    for name in ("customer_profile", "match_pairs", "id_change", "dedup_records", "unify_stats"):
        _no_big_json(_latest(result, "unify", name), name)
        assert not [k for k, v in _latest(result, "unify", name).items() if isinstance(v, dg.JsonMetadataValue)]


def test_segment_member_counts_are_numbers_per_segment(materialized):
    _, result = materialized
    membership = _latest(result, "segments", "segment_membership")
    assert membership["members leeds"].value == 1 and membership["members named"].value == 5
    assert isinstance(membership["members leeds"], dg.IntMetadataValue)
    rows = {row["segment"]: row for row in _rows(membership["segments"])}
    assert {name: row["members"] for name, row in rows.items()} == {"leeds": 1, "named": 5}
    # What each segment means, from the configuration, beside its size.
    assert rows["leeds"]["description"] == "Customers living in Leeds." and rows["leeds"]["type"] == "dynamic"
    assert rows["named"]["description"] == ""


def test_activity_counts_per_table_are_a_table_and_plotted_numbers(materialized):
    _, result = materialized
    unified = _latest(result, "activities", "unified_activity")
    assert _rows(unified["per_table"]) == [{"activity": "orders", "read": 3, "placed": 3, "quarantined": 0}]
    assert unified["placed orders"].value == 3 and _rows(unified["per_type"]) == [{"type": "SalesOrder", "rows": 3}]
    corrupt = _latest(result, "activities", "unified_activity_corrupt")
    assert isinstance(corrupt["quarantined orders"], dg.IntMetadataValue) and corrupt["quarantined orders"].value == 0
    for key in ("unified_activity", "unified_activity_corrupt"):
        _no_big_json(_latest(result, "activities", key), key)


def test_a_business_measure_by_dimension_shows_its_first_rows_as_a_table(materialized):
    _, result = materialized
    revenue = _latest(result, "measures", "revenue_by_channel")
    rows = _rows(revenue["values (first 10)"])
    assert {row["channel"]: float(row["Value"]) for row in rows} == {"store": 4.5, "web": 17.5}
    _no_big_json(revenue, "measures/revenue_by_channel")


def test_a_count_measure_is_a_whole_number_on_its_page(materialized):
    _, result = materialized
    orders = _latest(result, "measures", "orders")["value"]
    assert isinstance(orders, dg.IntMetadataValue) and orders.value == 3


def test_whole_numbers_show_without_a_decimal_and_sizes_in_units():
    assert isinstance(number(109.0), dg.IntMetadataValue) and number(109.0).value == 109
    assert isinstance(number(0.25), dg.FloatMetadataValue) and isinstance(number(3), dg.IntMetadataValue)
    assert [human_size(n) for n in (512, 20_373_446, 1_500, 7_200_000_000)] == [
        "512 bytes",
        "20.4 MB",
        "1.5 kB",
        "7.2 GB",
    ]


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("0 2 * * *", "every day at 02:00"),
        ("0 6 * * 1", "on Mondays at 06:00"),
        ("30 6,18 * * 1,5", "on Mondays and Fridays at 06:30 and 18:30"),
        ("5 3 1,15 * *", "on day 1 and 15 of each month at 03:05"),
        ("@hourly", "every hour at minute 00"),
        ("*/15 * * * *", "on cron '*/15 * * * *'"),
        ("0 0 1 1 *", "on cron '0 0 1 1 *'"),
    ],
)
def test_cron_in_words(cron, words):
    assert describe_cron(cron) == words


def test_schedules_say_what_runs_and_when(tmp_path):
    section = {
        "timezone": "Europe/Amsterdam",
        "refresh": {"at": ["01:00", "13:00"]},
        "schedules": [
            {"name": "weekly_publish", "select": "group:unify", "at": "06:00", "days": ["mon"]},
            {"name": "monthly", "select": "key:crm/contacts", "cron": "0 4 1 * *", "description": "Reload the CRM."},
        ],
    }
    config = load_config(write_project(tmp_path, section))
    schedules = {s.name: s.description for s in build_project(config).schedules}
    assert schedules["refresh"] == (
        "Runs what changed since the last run: changed tables, changed settings and every stage downstream of them "
        "(job incremental_refresh; everything on the first run), every day at 01:00 and 13:00 (Europe/Amsterdam)."
    )
    assert schedules["weekly_publish"] == (
        "Refreshes 'group:unify': 2 assets (group unify), on Mondays at 06:00 (Europe/Amsterdam)."
    )
    assert schedules["monthly"] == (
        "Reload the CRM: 2 assets (group ingest), on day 1 of each month at 04:00 (Europe/Amsterdam)."
    )
    assert not any("System refresh" in text for text in schedules.values())


def test_a_partial_refresh_names_its_selection(tmp_path):
    config = load_config(write_project(tmp_path, {"refresh": {"at": "02:00", "select": "group:ingest"}}))
    (refresh,) = [s for s in build_project(config).schedules if s.name == "refresh"]
    assert refresh.description == "Refreshes 'group:ingest': 3 assets (group ingest), every day at 02:00 (UTC)."


def test_prediction_charts_and_feature_importance_are_native_tables():
    report = {
        "charts": {"calibration": [{"bin": 1, "predicted": 0.1, "observed": 0.12}, {"bin": 2, "predicted": 0.5}]},
        "feature_importance": {"recency": 0.4, "frequency": 0.6},
    }
    metadata = report_metadata(report)
    calibration = _rows(metadata["chart/calibration"])
    assert calibration[0] == {"bin": 1, "predicted": 0.1, "observed": 0.12} and calibration[1]["observed"] is None
    assert [row["feature"] for row in _rows(metadata["feature_importance"])] == ["frequency", "recency"]
    _no_big_json(metadata, "prediction report")


def test_a_baseline_that_beat_the_model_is_told_in_the_metadata_and_the_run_log():
    beaten = {"baseline": "bgnbd_p_no_purchase", "message": "TransactionalChurn: on the backtest the baseline ..."}
    report = {"lift_grade": "A", "auc_over_best_baseline": -0.0087, "beaten_by_baseline": beaten}
    metadata = report_metadata(report)
    assert metadata["beaten_by_baseline"].value == beaten["message"] and metadata["lift_grade"] == "A"
    assert "beaten_by_baseline" not in report_metadata({"lift_grade": "A"})
    warned = []
    log = type("Log", (), {"warning": lambda self, text: warned.append(text)})()
    _warn_beaten(type("Context", (), {"log": log})(), report)
    _warn_beaten(type("Context", (), {"log": log})(), {"lift_grade": "A"})
    assert warned == [f"predictions: {beaten['message']}"]


def test_sink_capacity_lists_its_tables_as_a_native_table(tmp_path):
    published = run_publish(load_publish_project(tmp_path), ["C1", "C2", "C3"])
    capacity = published["publish/sink_capacity"]
    rows = {row["table"]: row for row in _rows(capacity["tables"])}
    assert len(rows) >= 7 and all(isinstance(row["rows"], int) for row in rows.values())
    assert any(row["rows"] == 3 for name, row in rows.items() if "profile" in name.lower())
    assert all(row["size"].endswith(("bytes", "kB", "MB", "GB", "TB")) for row in rows.values())


def test_a_scores_table_says_whom_the_model_and_the_prior_scored_and_who_churns():
    churn = pd.DataFrame(
        {
            "CustomerId": ["a", "b", "c", "d"],
            "IsChurn": pd.array([True, False, True, True], dtype="boolean"),
            "Likelihood": pd.array(["High", "Low", "High", "Medium"], dtype="string"),
            "Basis": pd.array(["model", "model", "population prior", "population prior"], dtype="string"),
        }
    )
    counts = {k: v.value for k, v in score_counts(churn).items()}
    assert counts == {
        "customers_by_model": 2,
        "customers_by_prior": 2,
        "customers_predicted_to_churn": 3,
        "likelihood High": 2,
        "likelihood Low": 1,
        "likelihood Medium": 1,
    }
    clv = churn.drop(columns=["IsChurn", "Likelihood"])
    assert {k: v.value for k, v in score_counts(clv).items()} == {"customers_by_model": 2, "customers_by_prior": 2}
    # Every customer has a row (the prior's too): the descriptions say so.
    assert not any("with a purchase:" in _DESCRIPTIONS[t] for t in ("churn_scores", "clv_scores"))


def test_a_long_prediction_report_is_a_table_of_entries_not_a_json_block():
    # A report grows with the baselines, the usability checks and the models' settings: 300 entries here.
    report = {
        "prediction": "churn",
        "usability": {"checks": [{"name": f"check {i}", "passed": i % 2 == 0} for i in range(100)]},
        "baselines": {f"rule_{i}": {"auc": 0.5 + i / 1000, "note": None} for i in range(100)},
        "charts": {"gain": [{"share": 0.1, "captured": 0.3}]},
        "feature_importance": {"recency": 0.4},
    }
    metadata = report_metadata(report)
    entries = {row["entry"]: row["value"] for row in _rows(metadata["report"])}
    assert entries["prediction"] == "churn" and entries["usability.checks.3.passed"] == "False"
    assert entries["baselines.rule_7.auc"] == "0.507" and entries["baselines.rule_7.note"] == ""
    assert not any(e.startswith(("charts", "feature_importance")) for e in entries), "those have their own tables"
    assert metadata["baseline/rule_7/auc"].value == 0.507
    assert not [k for k, v in metadata.items() if isinstance(v, dg.JsonMetadataValue)]


def test_entries_table_names_every_leaf_and_empty_branches():
    table = entries_table({"a": {"b": [1, {"c": 2.5}], "empty": {}}, "none": []})
    assert _rows(table) == [
        {"entry": "a.b.0", "value": "1"},
        {"entry": "a.b.1.c", "value": "2.5"},
        {"entry": "a.empty", "value": "none"},
        {"entry": "none", "value": "none"},
    ]


#: The Dagster UI cuts an asset's name in the graph beyond this many characters (ASSET_NODE_NAME_MAX_LENGTH).
GRAPH_LABEL = 31


def test_every_asset_name_of_the_sample_fits_its_graph_node():
    graph = build_definitions(load_config(SAMPLE_DIR / "ci_pipeline.yaml")).resolve_asset_graph()
    names = [key.path[-1] for key in graph.get_all_asset_keys()]
    assert [n for n in names if len(n) > GRAPH_LABEL] == []
    assert "web_sessions_corrupt" in names, "a quarantine's source is its key's prefix, not repeated in its name"
