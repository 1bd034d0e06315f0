"""The predictions stage materialised over a lake pre-filled with a generated timeline: train, score, publish."""

from __future__ import annotations

import json
import sqlite3

import dagster as dg
import pandas as pd
import pytest
import yaml

from ci_pipeline.commands.run import failed_checks
from ci_pipeline.config import ProjectConfig, load_config
from ci_pipeline.config.activities import field_origin
from ci_pipeline.defs import build_definitions, predictions, publish, segments
from ci_pipeline.defs.registry import REFRESHED, produced_tables
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.defs.stages import STAGES
from ci_pipeline.lake import Lake
from ci_pipeline.orchestration import MODE_TAG
from ci_pipeline.outputs import PREDICTION_COLUMNS, guid
from ci_pipeline_tests.conftest import SAMPLE_DIR
from ci_pipeline_tests.predictions import synthetic

SHOP = {
    "owner": "web",
    "tables": {
        name: {"format": "parquet", "path": name, "primary_key": key}
        for name, key in (("customers", "customer_id"), ("orders", "order_id"), ("order_lines", "line_id"))
    },
}
CONFIG = {
    "name": "demo",
    "sources": {"shop": SHOP},
    "activities": {
        "tables": {
            "orders": {
                "source": "shop",
                "table": "orders",
                "type": "SalesOrder",
                "timestamp": "order_date",
                "fields": {"amount": "total"},
                "customer": {"source": "shop", "table": "customers", "column": "customer_id"},
            },
            "order_lines": {
                "source": "shop",
                "table": "order_lines",
                "type": "SalesOrderLine",
                "timestamp": "order_date",
                "fields": {"product": "product_name"},
                "customer": {"source": "shop", "table": "customers", "column": "customer_id"},
            },
        }
    },
    "measures": {"as_of": "2026-06-30"},
    "predictions": {
        "minimums": {"churn_customers": 100, "clv_customers": 100, "recommendation_customers": 20},
        "churn": {"window_days": 60},
        "clv": {"period_months": 6},
        "recommendation": {"k": 3},
    },
    "segments": {
        "definitions": {
            "likely_to_churn": {"rules": [{"field": "prediction.IsChurn", "op": "=", "value": True}]},
            "valuable": {"rules": [{"field": "prediction.ClvValue", "op": ">=", "value": 200}]},
        }
    },
    "publish": {"sink": {"kind": "sqlite", "path": "sink.sqlite"}, "exports": [{"name": "warehouse"}]},
}
UPSTREAM = (["activities", "activity_facts"], ["unify", "customer_profile"])


def facts(customers: int = 600) -> pd.DataFrame:
    """The activities stage's typed facts of a generated shop: orders with an amount, lines with a product."""
    purchases = synthetic.purchases(customers=customers)
    lines = synthetic.lines(purchases)
    orders = pd.DataFrame(
        {
            "CustomerId": purchases["CustomerId"],
            "Activity": "orders",
            "ActivityType": "SalesOrder",
            "ActivityTimeStamp": purchases["Time"],
            "amount": purchases["Amount"],
        }
    )
    bought = pd.DataFrame(
        {
            "CustomerId": lines["CustomerId"],
            "Activity": "order_lines",
            "ActivityType": "SalesOrderLine",
            "ActivityTimeStamp": lines["Time"],
            "product": lines["Product"],
        }
    )
    frame = pd.concat([orders, bought], ignore_index=True)
    frame.insert(0, "ActivityId", pd.array([f"a{i}" for i in range(len(frame))], dtype="string"))
    return frame.astype({"CustomerId": "string", "Activity": "string", "ActivityType": "string", "product": "string"})


def prefill(lake: Lake, customers: int = 600) -> pd.DataFrame:
    timeline = facts(customers)
    # Customers without any purchase are customers too: they get the popular products.
    ids = sorted(set(timeline["CustomerId"])) + ["NEVER_BOUGHT"]
    lake.write_parquet("ci_pipeline/activities/activity_facts.parquet", timeline)
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", pd.DataFrame({"CustomerId": ids}))
    return timeline


def project(tmp_path, **changes) -> ProjectConfig:
    raw = json.loads(json.dumps(CONFIG))
    for section, value in changes.items():
        raw[section] = value
    raw["lake"] = {"url": str(tmp_path / "lake")}
    config = ProjectConfig.model_validate(raw)
    # The lake resource reads the configuration file of the run (run access), so the file must exist.
    config._path = tmp_path / "ci_pipeline.yaml"
    config._path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return config


def materialize(config: ProjectConfig, selection=REFRESHED, raise_on_error=True, instance=None, tags=None):
    """A refresh (the training assets run on demand only) or the given selection."""
    # The tables of the stages before are published empty: only what this stage and segments make is real.
    produced = {t: k for t, k in produced_tables(config, STAGES).items() if t in ("Prediction", "SegmentMembership")}
    defs = dg.Definitions.merge(predictions.build(config), segments.build(config), publish.build(config, produced))
    assets = [a for a in defs.assets if not isinstance(a, dg.SourceAsset)]
    return dg.materialize(
        [*assets, *(dg.SourceAsset(key=k) for k in UPSTREAM)],
        resources=shared_resources(config),
        selection=selection,
        raise_on_error=raise_on_error,
        instance=instance,
        tags=tags,
    )


def read(lake: Lake, name: str) -> pd.DataFrame:
    return lake.read_parquet(f"ci_pipeline/predictions/{name}.parquet")


def materializations(result) -> dict[str, dict]:
    return {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One refresh on a fresh lake (the models are trained in it), then a second refresh from the stored models."""
    folder = tmp_path_factory.mktemp("predictions")
    config = project(folder)
    lake = Lake.local(folder / "lake")
    prefill(lake)
    first = materialize(config)
    tables = {name: read(lake, name) for name in ("churn_scores", "clv_scores", "product_recommendations")}
    tables["prediction"] = read(lake, "prediction")
    second = materialize(config)
    return config, lake, first, tables, second


def test_a_fresh_lake_trains_each_model_stores_it_and_shows_its_evaluation_report(trained):
    config, lake, first, _, _ = trained
    metadata = materializations(first)
    for model in ("churn", "clv", "recommendation"):
        assert lake.exists(f"ci_pipeline/predictions/{model}_model.pkl")
        summary = json.loads(lake.read_bytes(f"ci_pipeline/predictions/{model}_model.json"))
        assert {"features", "data_window", "library_versions", "metrics"} <= set(summary)
        assert {"scikit-learn", "numpy", "pandas", "python"} <= set(summary["library_versions"])
    # The stored lifetime value model says which value it publishes and why, with its inner backtest's figures.
    method = json.loads(lake.read_bytes("ci_pipeline/predictions/clv_model.json"))["metrics"]["published_method"]
    assert method["why"].startswith("inner backtest") and "deviance_by_weight" in method["inner"]
    churn = metadata["predictions/churn_model"]
    # Metrics of the model and of each baseline are numbers the UI plots, next to each other.
    assert 0.5 < churn["model/auc"].value <= 1
    assert {"baseline/bgnbd_p_no_purchase/auc", "reference_grade", "lift_grade", "chart/calibration"} <= set(churn)
    assert any(k.startswith("baseline/rule_no_purchase_") for k in churn)
    assert churn["feature_importance"].schema.columns[0].name == "feature"
    assert "top_share" in [column.name for column in churn["chart/gain"].schema.columns]
    clv = metadata["predictions/clv_model"]
    assert {"model/top_capture", "baseline/bgnbd_gamma_gamma/top_capture", "model/interval_coverage"} <= set(clv)
    entries = {record.data["entry"] for record in clv["report"].records}
    assert {"method.why", "published_method.why", "published_method.weight_gradient_boosting"} <= entries
    assert {
        "with_repeats/model/success_at_3",
        "with_repeats/baseline/own_most_bought/success_at_3",
        "new_items_only/success_over_best_baseline",
    } <= set(metadata["predictions/recommendation_model"])
    assert all(c.passed for c in first.get_asset_check_evaluations())


def test_each_model_writes_its_table_and_its_rows_of_prediction(trained):
    _, _, _, tables, _ = trained
    churn, clv, recs = tables["churn_scores"], tables["clv_scores"], tables["product_recommendations"]
    assert {"ChurnScore", "IsChurn", "Likelihood", "Reason1", "Reason2", "Reason3"} <= set(churn.columns)
    assert churn["ChurnScore"].between(0, 1).all() and churn["Reason1"].notna().all()
    assert {"PredictedValue", "ValueLow", "ValueHigh", "ValueBand"} <= set(clv.columns)
    assert recs.groupby("CustomerId").size().eq(3).all()
    assert recs.loc[recs["CustomerId"] == "NEVER_BOUGHT", "Reason"].eq("popular").all()

    prediction = tables["prediction"]
    assert list(prediction.columns) == PREDICTION_COLUMNS
    counts = prediction["Model"].value_counts().to_dict()
    assert counts == {
        "ProductRecommendation": recs["CustomerId"].nunique(),
        "TransactionalChurn": len(churn),
        "CustomerLifetimeValue": len(clv),
    }
    row = prediction[prediction["Model"] == "TransactionalChurn"].iloc[0]
    assert row["msdynci_identifier"] == f"TransactionalChurn|demo|{row['CustomerId']}"
    assert row["msdynci_predictionid"] == guid(row["msdynci_identifier"])
    values = json.loads(row["Values"])
    scored = churn.set_index("CustomerId").loc[row["CustomerId"]]
    assert values["ChurnScore"] == scored["ChurnScore"] and values["IsChurn"] == bool(scored["IsChurn"])
    products = json.loads(prediction.loc[prediction["Model"] == "ProductRecommendation", "Values"].iloc[0])
    assert [p["Rank"] for p in products["Products"]] == [1, 2, 3]


def test_the_second_refresh_scores_with_the_stored_models_and_gives_the_same_scores(trained):
    _, lake, _, tables, second = trained
    assert "predictions/churn_model" not in materializations(second)
    for name, table in tables.items():
        pd.testing.assert_frame_equal(read(lake, name), table, check_like=False)


def test_a_refresh_after_a_change_scores_only_customers_whose_features_changed_and_equals_scoring_everyone(
    tmp_path,
):
    config = project(tmp_path)
    lake = Lake.local(tmp_path / "lake")
    timeline = prefill(lake)
    materialize(config)  # trains the models, scores everyone with them and keeps the scores
    unchanged = materialize(config)  # scores with the stored models
    for table in ("churn_scores", "clv_scores"):
        # Everyone kept the scores of the run that trained the model (one row is scored for the columns' types).
        assert materializations(unchanged)[f"predictions/{table}"]["customers_scored"].value == 1
    # Some customers buy again, one customer's rows are gone, a new customer arrives.
    orders = timeline[timeline["Activity"] == "orders"]
    again = orders[orders["CustomerId"].isin(sorted(set(orders["CustomerId"]))[:20])].drop_duplicates("CustomerId")
    again = again.assign(
        ActivityId=pd.array([f"again{i}" for i in range(len(again))], dtype="string"),
        ActivityTimeStamp=pd.Timestamp("2026-06-20", tz="UTC"),
    )
    newcomer = again.head(1).assign(CustomerId=pd.array(["NEWCOMER"], dtype="string"), ActivityId="new0")
    changed = pd.concat([timeline[timeline["CustomerId"] != "C00100"], again, newcomer], ignore_index=True)
    lake.write_parquet("ci_pipeline/activities/activity_facts.parquet", changed)
    ids = sorted(set(changed["CustomerId"])) + ["NEVER_BOUGHT"]
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", pd.DataFrame({"CustomerId": ids}))

    incremental = materialize(config)
    names = ("churn_scores", "clv_scores", "prediction", "prediction_fields")
    kept = {name: read(lake, name) for name in names}
    full = materialize(config, tags={MODE_TAG: "full"})
    for name in names:
        pd.testing.assert_frame_equal(kept[name], read(lake, name))

    for table in ("churn_scores", "clv_scores"):
        reused = materializations(incremental)[f"predictions/{table}"]
        purchasers = len(read(lake, table)[lambda t: t["Basis"] == "model"])
        # The 20 who bought again and the newcomer; the others kept their scores.
        assert reused["customers_scored"].value == 21
        assert reused["customers_kept_from_last_run"].value == purchasers - 21
        everyone = materializations(full)[f"predictions/{table}"]
        assert everyone["customers_scored"].value == purchasers
        assert "full refresh" in everyone["scores_not_kept_because"].value


def test_prediction_reaches_the_sqlite_sink_and_the_export(trained):
    config, lake, _, tables, _ = trained
    with sqlite3.connect(config.base_dir / "sink.sqlite") as db:
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT msdynci_predictionid) FROM msdynci_prediction").fetchone()
    assert rows == (len(tables["prediction"]),) * 2
    exported = [p for p in lake.find("exports") if "/Prediction/" in p and p.endswith(".csv")]
    assert exported


def test_segments_select_customers_by_prediction_fields(trained):
    _, lake, _, tables, _ = trained
    membership = lake.read_parquet("ci_pipeline/segments/segment_membership.parquet")
    members = {
        name: {c for c, s in zip(membership["CustomerId"], membership["Segments"], strict=True) if name in s}
        for name in ("likely_to_churn", "valuable")
    }
    churn, clv = tables["churn_scores"], tables["clv_scores"]
    assert members["likely_to_churn"] == set(churn.loc[churn["IsChurn"], "CustomerId"])
    assert members["valuable"] == set(clv.loc[clv["PredictedValue"] >= 200, "CustomerId"])
    assert members["likely_to_churn"] and members["valuable"]


def test_too_few_customers_fails_that_model_clearly_and_the_rest_of_the_run_goes_on(tmp_path):
    settings = json.loads(json.dumps(CONFIG["predictions"]))
    settings["minimums"]["churn_customers"] = 5000
    config = project(
        tmp_path,
        predictions=settings,
        segments={"definitions": {"valuable": {"rules": [{"field": "prediction.ClvValue", "op": ">=", "value": 1}]}}},
    )
    lake = Lake.local(tmp_path / "lake")
    prefill(lake)

    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(config, instance=instance)
        # The run's closing summary names the failed check, so a model that could not run is not missed.
        (summary, *_) = failed_checks(list(instance.all_logs(result.run_id)))
    assert summary.startswith("CHECK FAILED predictions/churn_scores enough_data: ")
    assert "at least 5000 are needed" in summary and "predictions.minimums" in summary

    check = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    failed = check[("predictions/churn_scores", "enough_data")]
    assert not failed.passed
    assert "at least 5000 are needed" in failed.metadata["error"].text
    assert "predictions.minimums" in failed.metadata["error"].text
    assert not lake.exists("ci_pipeline/predictions/churn_scores.parquet")
    assert not lake.exists("ci_pipeline/predictions/churn_model.pkl")
    assert check[("predictions/clv_scores", "enough_data")].passed
    prediction = read(lake, "prediction")
    assert set(prediction["Model"]) == {"CustomerLifetimeValue", "ProductRecommendation"}
    # Segments, every sink table and the export still ran.
    assert lake.exists("ci_pipeline/segments/segment_membership.parquet")
    with sqlite3.connect(tmp_path / "sink.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM msdynci_prediction").fetchone()[0] == len(prediction)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"msdynci_customerprofile", "msdynci_segmentmembership", "msdynci_unifiedactivity"} <= tables
    assert materializations(result).keys() >= {"publish/export_warehouse", "publish/sink_segment_membership"}

    # The training asset of that model fails outright, with the same message.
    trained = materialize(config, selection=[predictions.model_key("churn")], raise_on_error=False)
    assert not trained.success
    failure = next(e for e in trained.all_events if e.event_type_value == "STEP_FAILURE")
    assert "at least 5000 are needed" in failure.event_specific_data.error_display_string


def test_a_segment_on_a_model_that_failed_selects_no_one_and_segments_are_published(tmp_path):
    settings = json.loads(json.dumps(CONFIG["predictions"]))
    settings["minimums"]["churn_customers"] = 5000
    config = project(tmp_path, predictions=settings)
    lake = Lake.local(tmp_path / "lake")
    prefill(lake)
    result = materialize(config)
    membership = lake.read_parquet("ci_pipeline/segments/segment_membership.parquet")
    assert not any("likely_to_churn" in s for s in membership["Segments"])
    assert any("valuable" in s for s in membership["Segments"])
    empty = next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_empty_segments")
    assert not empty.passed and "- likely_to_churn" in empty.metadata["empty_segments"].value.splitlines()
    assert empty.description.startswith("1 segment(s) with no member: likely_to_churn")  # the run summary's reason
    assert "publish/export_warehouse" in materializations(result)


def test_training_is_on_demand_and_monthly_and_refreshes_only_score():
    defs = build_definitions(load_config(SAMPLE_DIR / "ci_pipeline.yaml"))
    schedule = defs.resolve_schedule_def("train_predictions")
    assert (schedule.cron_schedule, schedule.job_name) == ("0 3 1 * *", "train_predictions")
    assert schedule.execution_timezone == "Europe/Amsterdam"
    train = defs.resolve_job_def("train_predictions").asset_layer.selected_asset_keys
    assert train == {predictions.model_key(m) for m in ("churn", "clv", "recommendation")}
    refresh = defs.resolve_job_def("full_refresh").asset_layer.selected_asset_keys
    assert not train & refresh
    assert {predictions.PREDICTION, predictions.table_key("churn")} <= refresh


def test_no_predictions_section_means_no_predictions_stage(tmp_path):
    config = project(tmp_path, predictions=None, segments={})
    assert not predictions.build(config).assets
    assert "Prediction" not in produced_tables(config, STAGES)


def test_a_stored_model_whose_feature_is_gone_fails_that_model_and_says_retrain(tmp_path):
    settings = json.loads(json.dumps(CONFIG["predictions"])) | {"profile_fields": ["Tier"], "models": ["churn", "clv"]}
    config = project(tmp_path, predictions=settings, segments={})
    lake = Lake.local(tmp_path / "lake")
    ids = prefill(lake)["CustomerId"].drop_duplicates().sort_values()
    tiers = pd.DataFrame({"CustomerId": ids, "Tier": ["Gold" if i % 3 else "Silver" for i in range(len(ids))]})
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", tiers)
    materialize(config)
    assert lake.exists("ci_pipeline/predictions/churn_model.pkl")

    # The profile lost the field the stored models were trained on; the settings no longer list it either.
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", tiers[["CustomerId"]])
    settings["profile_fields"] = []
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(project(tmp_path, predictions=settings, segments={}), instance=instance)

    check = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()}
    message = check["predictions/churn_scores"].metadata["error"].text
    assert not check["predictions/churn_scores"].passed
    assert "profile.Tier" in message and "retrain the model" in message
    logs = [r.user_message for r in instance.all_logs(result.run_id)]
    said = [m for m in logs if "trained with other predictions settings" in m and "train_predictions" in m]
    assert said and all('(profile_fields: ["Tier"] -> [])' in m for m in said)
    assert read(lake, "prediction").empty


def test_messages_about_amounts_name_the_source_column_the_amount_field_is_read_from():
    tables = ProjectConfig.model_validate(CONFIG).activities.tables
    assert field_origin("orders", "amount", tables) == "column total of shop.orders"
    assert field_origin("SalesOrder", "amount", tables) == "column total of shop.orders"
    assert field_origin("orders", "currency", tables) is None


def test_a_report_not_graded_shows_why_in_the_metadata_and_the_run_log():
    why = "not graded: only 40 customers in the backtest (38 churned, 2 bought again), at least 100 of each ..."
    report = {"prediction": "TransactionalChurn", "reference_grade": None, "lift_grade": None, "not_graded": why}
    metadata = predictions.report_metadata(report)
    assert metadata["reference_grade"] == metadata["lift_grade"] == "not graded"
    assert metadata["not_graded"].value == why
    warned = []
    log = type("Log", (), {"warning": lambda self, text: warned.append(text)})()
    predictions._warn_beaten(type("Context", (), {"log": log})(), report)
    assert warned == [f"predictions: TransactionalChurn: {why}"]
