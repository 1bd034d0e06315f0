"""The Prediction table and the prediction fields built from each model's scores."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import weakref

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

from ci_pipeline.config.predictions import PredictionsConfig
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.rules import parse_rules
from ci_pipeline.outputs import PREDICTION_COLUMNS
from ci_pipeline.predictions import (
    ModelRuns,
    Trained,
    clv,
    fact_columns,
    lines_from_facts,
    published,
    purchases_from_facts,
    read_facts,
    signals_from_facts,
)
from ci_pipeline.predictions.data import EvaluationFailed, ModelFailed
from ci_pipeline.predictions.published import (
    json_objects,
    models_at_once,
    prediction_table,
    scoring_cutoff,
    segment_fields,
)
from ci_pipeline.predictions.settings import PredictionSettings, PurchaseSource
from ci_pipeline.segments.evaluate import SegmentEngine
from ci_pipeline_tests.predictions.test_assets import CONFIG as SHOP_CONFIG
from ci_pipeline_tests.predictions.test_assets import facts as shop_facts


def churn() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "CustomerId": pd.array(["B", "A"], dtype="string"),
            "ChurnScore": [0.1 + 0.2, np.nan],
            "IsChurn": [False, True],
            "Likelihood": pd.array(["Low", None], dtype="string"),
            "Reason1": pd.array(['no "purchase" for 143 days: +0.21', "café: -0.1"], dtype="string"),
            "Basis": pd.array(["model", "model"], dtype="string"),
        }
    )


def test_json_objects_write_what_json_dumps_writes_for_each_row():
    frame = churn().drop(columns="CustomerId").assign(Big=[1e17, np.inf], Rank=[1, 2])
    # Values that repeat or differ only in their sign bit, texts that need escaping, a missing count.
    frame = pd.concat([frame] * 2, ignore_index=True).assign(
        Zero=[0.0, -0.0, 0.0, np.nan],
        Count=pd.array([3, None, 3, 4], dtype="Int64"),
        Note=pd.array(["tab\there", 'back\\slash "q"', "naïve €", "bell\x07"], dtype="string"),
    )
    expected = [
        json.dumps(
            {k: None if v is pd.NA or (isinstance(v, float) and not np.isfinite(v)) else v for k, v in row.items()},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        for row in frame.astype(object).to_dict("records")
    ]
    assert json_objects(frame).tolist() == expected


def test_prediction_rows_per_customer_and_model_with_recommendations_in_rank_order():
    recs = pd.DataFrame(
        {
            "CustomerId": pd.array(["A", "B", "A"], dtype="string"),
            "Rank": [2, 1, 1],
            "Product": pd.array(["mug", "pen", "tea"], dtype="string"),
            "Score": [0.5, 0.9, 0.75],
            "Reason": pd.array(["popular", "bought before", "bought together"], dtype="string"),
        }
    )
    table = prediction_table({"churn": churn(), "recommendation": recs}, "shop")
    assert list(table.columns) == PREDICTION_COLUMNS
    values = {
        (m, c): json.loads(v) for m, c, v in zip(table["Model"], table["CustomerId"], table["Values"], strict=True)
    }
    assert values["TransactionalChurn", "A"] == {
        "Basis": "model",
        "ChurnScore": None,
        "IsChurn": True,
        "Likelihood": None,
        "Reason1": "café: -0.1",
    }
    assert [p["Product"] for p in values["ProductRecommendation", "A"]["Products"]] == ["tea", "mug"]
    assert values["ProductRecommendation", "B"]["Products"] == [
        {"Product": "pen", "Rank": 1, "Reason": "bought before", "Score": 0.9}
    ]
    assert prediction_table({"recommendation": recs.iloc[:0]}, "shop").empty
    assert prediction_table({}, "shop").empty


def test_prediction_fields_keep_their_types_where_a_model_scored_only_some_customers():
    clv = pd.DataFrame(
        {
            "CustomerId": pd.array(["C", "A"], dtype="string"),
            "PredictedValue": [10.0, 20.0],
            "ValueLow": [0.0, 1.0],
            "ValueHigh": [30.0, 40.0],
            "ValueBand": pd.array(["Low", "High"], dtype="string"),
            "Basis": pd.array(["model", "population prior"], dtype="string"),
        }
    )
    fields = segment_fields({"churn": churn(), "clv": clv})
    assert fields["CustomerId"].tolist() == ["A", "B", "C"]
    assert str(fields["IsChurn"].dtype) == "boolean" and fields["IsChurn"].isna().tolist() == [False, False, True]
    assert fields["ClvValue"].tolist()[0] == 20.0 and np.isnan(fields["ClvValue"].iloc[1])
    assert list(segment_fields({}).columns) == ["CustomerId"]
    # A configured model that did not score leaves its fields empty rather than unknown.
    failed = segment_fields({"clv": clv}, ["churn", "clv"])
    assert failed["ChurnScore"].isna().all() and str(failed["IsChurn"].dtype) == "boolean"


def test_a_segment_can_leave_out_customers_scored_by_the_population_prior():
    ids = pd.Index(["A", "B", "C"], dtype="string")
    scores = pd.DataFrame(
        {
            "CustomerId": pd.array(["A", "B", "C"], dtype="string"),
            "ChurnScore": [0.9, 0.8, 0.2],
            "IsChurn": [True, True, False],
            "Likelihood": pd.array(["High", "High", "Low"], dtype="string"),
            "Basis": pd.array(["model", "population prior", "model"], dtype="string"),
        }
    )
    fields = segment_fields({"churn": scores}, ["churn", "clv"])
    assert fields["ChurnBasis"].tolist() == ["model", "population prior", "model"]
    # A model that did not score leaves its Basis empty, like its other fields.
    assert fields["ClvBasis"].isna().all()
    rule = {
        "all": [
            {"field": "prediction.ChurnScore", "op": ">=", "value": 0.5},
            {"field": "prediction.ChurnBasis", "op": "=", "value": "model"},
        ]
    }
    rules = {"s": parse_rules([rule], "segments.definitions.s.rules")}
    end = pd.Timestamp("2026-07-01", tz="UTC")
    engine = SegmentEngine(ids, pd.DataFrame({"CustomerId": ids}), None, None, end, rules, predictions=fields)
    assert ids[engine.evaluate_all()["s"]].tolist() == ["A"]


def test_the_scoring_cutoff_is_the_end_of_the_configured_day():
    end_of = pd.Timestamp("2026-07-01", tz="UTC")
    assert scoring_cutoff(dt.date(2026, 6, 30), "today") == end_of
    assert scoring_cutoff(None, dt.date(2026, 6, 30)) == end_of
    assert scoring_cutoff("last_purchase", dt.date(2026, 6, 30)) is None
    today = scoring_cutoff("today", None)
    assert today == pd.Timestamp(dt.datetime.now(dt.UTC).date(), tz="UTC") + pd.Timedelta(days=1)


def timeline() -> pd.DataFrame:
    """Activity facts of four activities, with a wide column the models never read."""
    return pd.DataFrame(
        {
            "CustomerId": pd.array(["A", "A", "B", "B", "C", "C"], dtype="string"),
            "Activity": pd.array(["orders", "order_lines", "orders", "web_sessions", "surveys", "orders"], "string"),
            "ActivityTimeStamp": pd.to_datetime(
                ["2026-01-02", "2026-01-02", "2026-02-03", "2026-02-01", "2026-03-01", "2026-03-04"], utc=True
            ),
            "amount": [10.0, None, 25.5, None, None, 7.0],
            "is_return": pd.array([False, None, True, None, None, False], dtype="boolean"),
            "product": pd.array([None, "mug", None, None, None, None], dtype="string"),
            "comment": pd.array(["x" * 50] * 6, dtype="string"),
        }
    )


def test_the_models_read_only_their_activities_and_fields_from_the_stored_facts(tmp_path):
    facts = timeline()
    facts.to_parquet(tmp_path / "facts.parquet")
    settings = PredictionSettings(purchases=PurchaseSource(is_return="is_return"), signal_activities=["web_sessions"])
    activities, fields = fact_columns(settings, ["churn", "clv", "recommendation"])
    read = read_facts(ds.dataset(tmp_path / "facts.parquet"), activities, fields)
    assert list(read.columns) == ["CustomerId", "Activity", "ActivityTimeStamp", "amount", "is_return", "product"]
    assert sorted(read["Activity"].unique()) == ["order_lines", "orders", "web_sessions"]
    # What the models take from it is what they take from the whole table.
    for take in (purchases_from_facts, lines_from_facts):
        pd.testing.assert_frame_equal(take(read, settings.purchases), take(facts, settings.purchases))
    pd.testing.assert_frame_equal(
        signals_from_facts(read, ["web_sessions"]), signals_from_facts(facts, ["web_sessions"])
    )
    # Churn alone reads no order lines; measures as features need every activity.
    assert fact_columns(settings, ["churn"]) == (["orders", "web_sessions"], ["amount", "is_return"])
    assert fact_columns(settings.model_copy(update={"measure_fields": ["spend"]}), ["churn"]) is None


def test_an_activity_missing_from_the_stored_facts_is_named_with_those_there_are(tmp_path):
    timeline().to_parquet(tmp_path / "facts.parquet")
    settings = PredictionSettings(purchases=PurchaseSource(activity="purchases"))
    read = read_facts(ds.dataset(tmp_path / "facts.parquet"), *fact_columns(settings, ["churn"]))
    with pytest.raises(
        UserError,
        match=r"no activity named 'purchases' on the timeline \(it has order_lines, orders, surveys, web_sessions\)",
    ):
        purchases_from_facts(read, settings.purchases)


def test_model_runs_do_not_hold_the_facts_and_keep_each_frames_error_for_its_model():
    facts = timeline()
    settings = PredictionSettings(purchases=PurchaseSource(is_return="is_return", product_activity="basket_lines"))
    runs = ModelRuns(settings, facts, facts["CustomerId"], None, None)
    held = weakref.ref(facts)
    del facts
    assert held() is None
    assert runs.purchases["CustomerId"].tolist() == ["A", "B", "C"]
    # Only the model that reads the order lines fails, each time it asks, with the message naming the fix.
    for _ in range(2):
        with pytest.raises(UserError, match="no activity named 'basket_lines' on the timeline"):
            runs.lines  # noqa: B018


def test_models_run_side_by_side_give_what_they_give_one_after_another():
    facts = shop_facts()
    section = json.loads(json.dumps(SHOP_CONFIG["predictions"]))
    section["minimums"]["clv_customers"] = 5000  # one model without enough data: its error is its result
    settings = PredictionSettings.model_validate(PredictionsConfig.model_validate(section).settings())
    customers = pd.Series(sorted(set(facts["CustomerId"])), dtype="string")
    latest = scoring_cutoff(None, dt.date(2026, 6, 30))
    models = ["churn", "clv", "recommendation"]

    def run(stored: dict, workers: int) -> dict:
        return ModelRuns(settings, facts, customers, None, latest).run_all(stored, workers=workers)

    alone, together = run(dict.fromkeys(models), 1), run(dict.fromkeys(models), 2)
    assert list(together) == models
    assert isinstance(together["clv"], UserError) and str(together["clv"]) == str(alone["clv"])
    assert "at least 5000 are needed" in str(together["clv"])
    for model in ("churn", "recommendation"):
        assert isinstance(together[model], Trained)
        pd.testing.assert_frame_equal(together[model].table, alone[model].table)
    # Scoring with the stored models, side by side, gives the scores training gave.
    scored = run({m: together[m].stored for m in ("churn", "recommendation")}, 2)
    for model, frame in scored.items():
        pd.testing.assert_frame_equal(frame, alone[model].table)


def shop_runs() -> ModelRuns:
    """The models of the shop configuration on its generated timeline, scored at the end of June 2026."""
    facts = shop_facts()
    settings = PredictionSettings.model_validate(
        PredictionsConfig.model_validate(SHOP_CONFIG["predictions"]).settings()
    )
    customers = pd.Series(sorted(set(facts["CustomerId"])), dtype="string")
    return ModelRuns(settings, facts, customers, None, scoring_cutoff(None, dt.date(2026, 6, 30)))


def test_an_unexpected_error_in_one_models_evaluation_fails_that_model_alone(monkeypatch):
    def broken(*args):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(clv, "evaluate", broken)
    runs = shop_runs()
    done = runs.run_all(dict.fromkeys(["clv", "recommendation"]), workers=1)
    assert isinstance(done["clv"], EvaluationFailed) and isinstance(done["clv"], UserError)
    assert "CustomerLifetimeValue: the backtest evaluation failed" in str(done["clv"])
    assert "ZeroDivisionError: float division by zero" in str(done["clv"])
    assert isinstance(done["recommendation"], Trained)


def test_an_unexpected_error_training_or_scoring_one_model_fails_that_model_alone(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("window shape cannot be larger than input array shape")

    monkeypatch.setattr(published, "run_clv", broken)
    monkeypatch.setattr(clv, "score_stored", broken)
    runs = shop_runs()
    done = runs.run_all({"clv": None, "recommendation": None}, workers=2)
    assert isinstance(done["recommendation"], Trained)
    failed = done["clv"]
    # A UserError, so the stage reports it as that model's failed check and publishes the others.
    assert isinstance(failed, ModelFailed) and isinstance(failed, UserError)
    assert str(failed).startswith(
        "CustomerLifetimeValue: training failed with an unexpected error (ValueError: window shape cannot be larger"
    )
    assert "the other models go on" in str(failed) and "run the job train_predictions again" in str(failed)
    assert "in broken" in failed.details and failed.__traceback__ is None
    scored = runs.run_all({"clv": object()}, workers=1)["clv"]
    assert str(scored).startswith("CustomerLifetimeValue: scoring with its stored model failed")
    assert "retrain it (job train_predictions)" in str(scored)


def test_auto_runs_two_models_at_once_up_to_three_million_purchases_and_a_number_is_kept():
    assert models_at_once("auto", 214_000) == 2 and models_at_once("auto", 2_144_000) == 2
    assert models_at_once("auto", 3_000_000) == 2 and models_at_once("auto", 3_000_001) == 1
    assert models_at_once(3, 10) == 3 and models_at_once(1, 10) == 1
    assert PredictionsConfig().parallel_models == "auto"
    assert PredictionsConfig.model_validate({"parallel_models": 2}).parallel_models == 2
    for wrong in (0, 4, "many"):
        with pytest.raises(ValueError, match="parallel_models"):
            PredictionsConfig.model_validate({"parallel_models": wrong})


def test_each_model_run_side_by_side_keeps_the_configured_thread_limit(monkeypatch):
    # A thread limit set on the caller's thread does not reach a new thread: each model's thread sets its own, or
    # scikit-learn's trees would use every core and give other scores than one after another.
    seen = {}

    def train(self, model):
        seen[model] = (threading.current_thread().name, _openmp_effective_n_threads())
        return model

    monkeypatch.setattr(ModelRuns, "train", train)
    settings = PredictionSettings.model_validate(PredictionsConfig().settings())
    runs = ModelRuns(settings, shop_facts(), pd.Series(["C1"], dtype="string"), None, None)
    assert runs.run_all(dict.fromkeys(["churn", "clv", "recommendation"]), workers=2) == {
        "churn": "churn",
        "clv": "clv",
        "recommendation": "recommendation",
    }
    assert {threads for _, threads in seen.values()} == {1}
    if (os.cpu_count() or 1) > 1:
        assert all(name.startswith("predictions") for name, _ in seen.values())
