"""The predictions section and prediction fields in segment rules: mistakes are reported with their key path."""

from __future__ import annotations

import copy

import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.errors import ConfigError
from ci_pipeline_tests.predictions.test_assets import CONFIG

UNIFY = {"tables": [{"source": "shop", "table": "customers", "columns": {"email": "email"}}]}


def problems(tmp_path, change) -> list[str]:
    raw = copy.deepcopy(CONFIG) | {"unify": UNIFY}
    change(raw)
    file = tmp_path / "ci_pipeline.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        load_config(file)
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_test_project_is_valid(tmp_path):
    assert problems(tmp_path, lambda raw: None) == []


def test_an_absent_section_leaves_existing_configurations_unchanged(tmp_path):
    def drop(raw):
        del raw["predictions"]
        raw["segments"] = {}

    assert problems(tmp_path, drop) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda raw: raw["predictions"].update(purchases={"activity": "order"}),
            "predictions.purchases.activity: unknown activity 'order' (did you mean 'orders'?); use one of "
            "order_lines, orders",
        ),
        (
            lambda raw: raw["predictions"].update(purchases={"amount": "amont"}),
            "predictions.purchases.amount: activity 'orders' has no field 'amont' (did you mean 'amount'?)",
        ),
        (
            lambda raw: raw["predictions"].update(purchases={"is_return": "returned"}),
            "predictions.purchases.is_return: activity 'orders' has no field 'returned'",
        ),
        (
            lambda raw: raw["predictions"].update(purchases={"where": [{"field": "state", "op": "=", "value": "x"}]}),
            "predictions.purchases.where[0].field: activity 'orders' has no field 'state'",
        ),
        (
            lambda raw: raw["predictions"].update(
                purchases={"where": [{"field": "amount", "op": "in last", "value": 9}]}
            ),
            "predictions.purchases.where[0].op: 'in the last' is relative to each model's cutoff",
        ),
        (
            lambda raw: raw["predictions"].update(
                purchases={"where": [{"field": "amount", "op": "bigger", "value": 9}]}
            ),
            "predictions.purchases.where[0].op: unknown operator 'bigger'",
        ),
        (
            lambda raw: raw["predictions"].update(purchases={"product": "sku"}),
            "predictions.purchases.product: activity 'order_lines' has no field 'sku'",
        ),
        (
            lambda raw: raw["predictions"].update(purchases={"product_activity": None}),
            "predictions.purchases.product_activity: the recommendation model needs an activity",
        ),
        (
            lambda raw: raw["predictions"].update(signal_activities=["web_sesions"]),
            "predictions.signal_activities[0]: unknown activity 'web_sesions'",
        ),
        (
            lambda raw: raw.pop("unify"),
            "predictions: the models score unified customers; add a 'unify' section",
        ),
    ],
)
def test_purchase_and_product_activities_and_fields_must_exist(tmp_path, change, expected):
    found = problems(tmp_path, change)
    assert any(expected in p for p in found), found


def test_only_the_models_that_run_need_their_activities(tmp_path):
    def churn_only(raw):
        raw["predictions"].update(models=["churn", "clv"], purchases={"product_activity": None})

    assert problems(tmp_path, churn_only) == []


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"field": "prediction.ChurnScor", "op": ">", "value": 0.7},
            "segments.definitions.s.rules[0].field: unknown prediction field 'ChurnScor' (did you mean "
            "'ChurnScore'?); prediction fields are ChurnScore, IsChurn, ChurnLikelihood, ChurnBasis, ClvValue",
        ),
        (
            {"field": "prediction.IsChurn", "op": "=", "value": 1},
            "segments.definitions.s.rules[0].value: prediction.IsChurn is true or false",
        ),
        (
            {"field": "predictions.ClvValue", "op": ">", "value": "high"},
            "segments.definitions.s.rules[0].value: prediction.ClvValue is a number",
        ),
        (
            # A value in another case selected no one without a word.
            {"field": "prediction.ChurnLikelihood", "op": "=", "value": "high"},
            "segments.definitions.s.rules[0].value: prediction.ChurnLikelihood is one of Low, Medium, High, not "
            "'high' (did you mean 'High'?) (values are compared as written)",
        ),
        (
            {"field": "prediction.ClvBand", "op": "in", "value": ["High", "Top"]},
            "segments.definitions.s.rules[0].value: prediction.ClvBand is one of Low, Medium, High, not 'Top'",
        ),
    ],
)
def test_segment_rules_on_prediction_fields_are_checked(tmp_path, rule, expected):
    found = problems(tmp_path, lambda raw: raw["segments"].update(definitions={"s": {"rules": [rule]}}))
    assert any(expected in p for p in found), found


def test_a_field_of_a_model_that_does_not_run_says_how_to_turn_it_on(tmp_path):
    def clv_only(raw):
        raw["predictions"]["models"] = ["clv"]

    found = problems(tmp_path, clv_only)
    assert (
        "segments.definitions.likely_to_churn.rules[0].field: prediction.IsChurn comes from the churn model, which "
        "does not run; add churn to predictions.models"
    ) in found
    found = problems(tmp_path, lambda raw: raw.pop("predictions"))
    assert any("add a 'predictions' section" in p for p in found), found


def test_keys_and_values_of_the_section_are_checked_with_their_path(tmp_path):
    found = problems(tmp_path, lambda raw: raw["predictions"]["churn"].update(windows_days=30))
    assert any(p.startswith("predictions.churn.windows_days") and "did you mean 'window_days'" in p for p in found)
    found = problems(tmp_path, lambda raw: raw["predictions"].update(models=["churn", "churn"]))
    assert any(p.startswith("predictions.models") and "a model is listed twice" in p for p in found), found
    found = problems(tmp_path, lambda raw: raw["predictions"].update(models=["churm"]))
    assert any(p.startswith("predictions.models[0]") for p in found), found


def test_the_training_schedule_takes_a_time_of_day_instead_of_the_monthly_default(tmp_path):
    file = tmp_path / "ci_pipeline.yaml"
    raw = copy.deepcopy(CONFIG) | {"unify": UNIFY}
    raw["predictions"]["training"] = {"at": "04:00", "days": ["sun"]}
    file.write_text(yaml.safe_dump(raw))
    training = load_config(file).predictions.training
    assert training.cron_schedules() == ["0 4 * * 0"]
    raw["predictions"]["as_of"] = "last_purchase"
    raw["predictions"].pop("training")
    file.write_text(yaml.safe_dump(raw))
    config = load_config(file)
    assert config.predictions.training.cron_schedules() == ["0 3 1 * *"]
    assert config.predictions.as_of == "last_purchase"
