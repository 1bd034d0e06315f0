"""Metrics and grades on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from ci_pipeline.predictions import metrics


def test_calibration_error_and_chart_points():
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.95, 0.95, 0.95, 0.15, 0.15, 0.15])
    # Two bins: mean score 0.95 against 2/3 churned, 0.15 against 1/3: |gap| weighted by 3/6 each.
    assert metrics.calibration_error(y, p) == pytest.approx(0.5 * (0.95 - 2 / 3) + 0.5 * (1 / 3 - 0.15))
    table = metrics.calibration_table(y, p)
    assert [(row["bin"], row["customers"], row["observed_rate"]) for row in table] == [
        ("0.1-0.2", 3, 0.3333),
        ("0.9-1.0", 3, 0.6667),
    ]


def test_gain_table_and_top_capture():
    actual = np.array([100.0, 0, 50, 0, 0, 0, 0, 0, 0, 50])
    predicted = np.arange(10, 0, -1).astype(float)  # ranks customer 0 first, customer 9 last
    gain = metrics.gain_table(actual, predicted)
    assert gain[0] == {"top_share": 0.1, "captured": 0.5, "lift": 5.0}
    assert gain[2]["captured"] == 0.75 and gain[-1]["captured"] == 1.0
    assert metrics.top_capture(actual, predicted, 0.2) == 0.5  # true top 2: customers 0 and 2 (stable order)


def test_normalized_gini_is_one_for_the_perfect_order_and_about_zero_for_a_constant():
    actual = np.array([5.0, 1, 0, 3, 9])
    assert metrics.normalized_gini(actual, actual) == pytest.approx(1.0)
    assert metrics.normalized_gini(actual, -actual) < 0


def test_normalized_gini_is_undefined_when_everyone_spent_the_same():
    # The perfect order's Gini is 0 then: dividing by it crashed the whole scoring step.
    same = np.full(6, 20.0)
    assert np.isnan(metrics.normalized_gini(same, np.arange(6.0)))
    assert np.isnan(metrics.normalized_gini(np.zeros(4), np.arange(4.0)))
    out = metrics.regression(same, np.arange(6.0), 0.2)
    assert out["normalized_gini"] is None and out["spearman"] is None and out["top_capture"] is not None


def test_churn_grades():
    rule = {"recall": 0.90, "accuracy": 0.70, "errors": 100}
    assert metrics.reference_churn_grade({"recall": 0.95, "accuracy": 0.8, "errors": 60}, rule) == "B"
    assert metrics.reference_churn_grade({"recall": 1.0, "accuracy": 0.8, "errors": 60}, rule) == "A"
    assert metrics.reference_churn_grade({"recall": 1.0, "accuracy": 0.4, "errors": 60}, rule) == "C"
    assert metrics.error_reduction({"errors": 60}, rule) == 0.4
    assert metrics.lift_grade(0.4) == "A" and metrics.lift_grade(0.1) == "B" and metrics.lift_grade(-0.1) == "C"


def test_grades_need_enough_customers_of_each_outcome_for_their_margin_to_exceed_two_standard_errors():
    assert metrics.churn_grade_withheld(100, 100) is None
    assert metrics.churn_grade_withheld(38, 2).startswith(
        "not graded: only 40 customers in the backtest (38 churned, 2 bought again), at least 100 of each"
    )
    assert metrics.churn_grade_withheld(5_000, 99) is not None
    assert metrics.clv_grade_withheld(2_000, 400, 0.2) is None
    assert metrics.clv_grade_withheld(40, 8, 0.2).startswith(
        "not graded: only 40 customers in the backtest, 8 of them in the top 20%; at least 400"
    )
    assert metrics.top_count(40, 0.2) == 8 and metrics.top_count(0, 0.2) == 0 and metrics.top_count(3, 0.2) == 1


def test_a_baseline_that_beats_the_model_is_named_with_both_figures_and_what_it_means():
    # The sample's churn backtest: graded A against the rule, yet BG/NBD ranked customers better.
    baselines = {"rule_no_purchase_90_days": {"auc": 0.81}, "bgnbd_p_no_purchase": {"auc": 0.9452}}
    found = metrics.beaten_by_baseline("TransactionalChurn", {"auc": 0.9365}, baselines, "auc", "AUC")
    assert found["baseline"] == "bgnbd_p_no_purchase" and found["difference"] == -0.0087
    assert found["model"] == 0.9365 and found["baseline_value"] == 0.9452
    message = found["message"]
    assert "bgnbd_p_no_purchase beat the model: AUC 0.9452 against the model's 0.9365 (-0.0087)" in message
    assert message.startswith("TransactionalChurn: ") and "published scores come from the model" in message
    assert metrics.beaten_by_baseline("TransactionalChurn", {"auc": 0.95}, baselines, "auc", "AUC") is None
    assert metrics.beaten_by_baseline("TransactionalChurn", {"auc": 0.9452}, baselines, "auc", "AUC") is None
    assert metrics.beaten_by_baseline("TransactionalChurn", {"auc": None}, baselines, "auc", "AUC") is None


def test_clv_grade_reads_five_points_as_absolute():
    assert metrics.reference_clv_grade({"top_capture": 0.65}, {"top_capture": 0.60}) == "A"
    assert metrics.reference_clv_grade({"top_capture": 0.63}, {"top_capture": 0.60}) == "B"  # +5% relative only
    assert metrics.reference_clv_grade({"top_capture": 0.60}, {"top_capture": 0.60}) == "C"
