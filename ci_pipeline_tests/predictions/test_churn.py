"""Transactional churn on small seeded histories: scores, reasons, determinism, and every bad input of the issue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.config.predictions import ChurnSettings
from ci_pipeline.errors import UserError
from ci_pipeline.predictions import churn, clv
from ci_pipeline.predictions.data import InsufficientData
from ci_pipeline.predictions.features import Measures
from ci_pipeline.predictions.settings import PredictionSettings
from ci_pipeline.predictions.stored import StoredModel
from ci_pipeline_tests.predictions import synthetic
from ci_pipeline_tests.predictions.test_features import MEASURES, measure_facts

LOW = {"churn_customers": 50, "clv_customers": 50, "recommendation_customers": 5}
SETTINGS = PredictionSettings.model_validate({"minimums": LOW, "churn": {"window_days": 60}})


@pytest.fixture(scope="module")
def purchases():
    return synthetic.purchases(customers=700)


@pytest.fixture(scope="module")
def result(purchases):
    return churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, SETTINGS)


def test_every_purchaser_gets_a_calibrated_score_a_band_and_three_signed_reasons(purchases, result):
    scores = result.scores
    assert scores["CustomerId"].tolist() == sorted(purchases["CustomerId"].unique())
    assert scores["ChurnScore"].between(0, 1).all()
    assert (scores["IsChurn"] == (scores["ChurnScore"] >= 0.5)).all()
    assert set(scores["Likelihood"]) <= {"Low", "Medium", "High"}
    for column in ("Reason1", "Reason2", "Reason3"):
        assert scores[column].str.fullmatch(r".+: [+-]\d+\.\d\d").all()
    assert scores["Reason1"].str.contains("no purchase for|BG/NBD").any()


def test_report_holds_model_and_baselines_side_by_side(result):
    report = result.report
    assert report["model"]["auc"] > 0.6
    rule = f"rule_no_purchase_{report['best_rule_days']}_days"
    assert set(report["baselines"]) == {rule, "bgnbd_p_no_purchase"}
    assert report["best_rule_days"] in churn.rule_windows(60) == [60, 30]
    # 689 customers evaluated, over 100 of each outcome: graded.
    assert report["churners"] + report["bought_again"] == report["customers"]
    assert min(report["churners"], report["bought_again"]) >= 100 and "not_graded" not in report
    assert report["reference_grade"] in "ABC" and report["lift_grade"] in "ABC"
    assert report["usability"]["purchasers"] == 700
    best = max(b["auc"] for b in report["baselines"].values())
    assert ("beaten_by_baseline" in report) == (report["model"]["auc"] < best)
    assert set(report["feature_importance"]) == set(result.stored.features)


def test_a_backtest_of_few_customers_is_not_graded_and_a_rate_over_no_one_is_no_figure():
    small = synthetic.purchases(customers=150)
    # Only customers who had bought by the backtest's training cutoff: none is without a purchase at either cutoff.
    first = small.groupby("CustomerId")["Time"].min()
    early = pd.Series(first.index[first <= synthetic.END - pd.Timedelta(days=120)], dtype="string")
    settings = SETTINGS.model_copy(update={"minimums": SETTINGS.minimums.model_copy(update={"churn_customers": 10})})
    report = churn.run_churn(small, early, synthetic.END, settings, score_everyone=False).report
    assert report["reference_grade"] is None and report["lift_grade"] is None
    assert report["not_graded"].startswith(
        f"not graded: only {report['customers']:,} customers in the backtest ({report['churners']:,} churned, "
        f"{report['bought_again']:,} bought again), at least 100 of each are needed"
    )
    assert report["model"]["auc"] is not None  # the metrics are still reported, with their counts
    prior = report["no_purchase_prior"]
    assert prior["actual_customers_without_purchase"] == 0 and prior["actual_p_no_purchase"] is None


def test_same_input_gives_the_same_scores(purchases, result):
    again = churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, SETTINGS)
    pd.testing.assert_frame_equal(result.scores, again.scores)


def test_one_time_buyers_are_scored_and_bgnbd_tells_them_apart():
    purchases = synthetic.purchases(customers=700, one_time_share=0.6, seed=4)
    out = churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, SETTINGS)
    once = purchases.groupby("CustomerId").size().loc[lambda s: s == 1].index
    scored = out.scores.set_index("CustomerId").loc[once]
    assert scored["ChurnScore"].nunique() > 5
    assert out.report["baselines"]["bgnbd_p_no_purchase"]["auc"] > 0.5


def test_rule_windows_halve_to_a_month():
    assert churn.rule_windows(90) == [90, 45, 22]
    assert churn.rule_windows(365) == [365, 182, 91, 46, 23]
    assert churn.rule_windows(30) == [30]


def test_too_few_customers_is_a_clear_failure(purchases):
    strict = SETTINGS.model_copy(update={"minimums": SETTINGS.minimums.model_copy(update={"churn_customers": 5000})})
    with pytest.raises(
        InsufficientData,
        match=r"700 customers have a purchase, at least 5000 are needed \(add purchase history or lower "
        r"predictions\.minimums\.churn_customers \(5000\)\)",
    ):
        churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, strict)


def test_too_short_a_history_is_a_clear_failure():
    short = synthetic.purchases(customers=700, days=100)
    with pytest.raises(
        InsufficientData,
        match=r"at least 120 are needed \(a longer history, a shorter predictions\.churn\.\w+_days \(60\)",
    ):
        churn.run_churn(short, short["CustomerId"], synthetic.END, SETTINGS)


def test_everyone_churned_or_no_one_churned_is_a_clear_failure(purchases):
    once = synthetic.purchases(customers=700, one_time_share=1.0)
    with pytest.raises(InsufficientData, match=r"churned and 0 bought again within 60 days; at least 10 of each"):
        churn.run_churn(once, once["CustomerId"], synthetic.END, SETTINGS)
    weekly = pd.DataFrame(
        {
            "CustomerId": pd.array(np.repeat([f"C{i}" for i in range(60)], 100), dtype="string"),
            "Time": np.tile(synthetic.END - pd.to_timedelta(np.arange(100) * 7, unit="D"), 60),
            "Amount": 10.0,
        }
    )
    with pytest.raises(InsufficientData, match=r" 0 customers churned"):
        churn.run_churn(weekly, weekly["CustomerId"], synthetic.END, SETTINGS)


def test_a_cutoff_after_the_last_purchase_is_refused(purchases):
    late = synthetic.END + pd.Timedelta(days=400)
    with pytest.raises(InsufficientData, match="is after the last purchase"):
        churn.run_churn(purchases, purchases["CustomerId"], late, SETTINGS)


def test_negative_amounts_are_returns_and_do_not_break_training(purchases):
    returns = purchases.copy()
    returns.loc[returns.index % 7 == 0, "Amount"] *= -1
    out = churn.run_churn(returns, returns["CustomerId"], synthetic.END, SETTINGS)
    assert out.report["usability"]["share_negative_amount"] > 0.1
    assert out.scores["ChurnScore"].between(0, 1).all()


def test_a_stored_model_scores_again_and_refuses_features_that_are_gone(purchases):
    profile = pd.DataFrame({"CustomerId": pd.array(sorted(purchases["CustomerId"].unique()), dtype="string")})
    profile["Tier"] = np.where(np.arange(len(profile)) % 3 == 0, "gold", "basic")
    settings = SETTINGS.model_copy(update={"profile_fields": ["Tier"]})
    trained = churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, settings, profile)
    stored = StoredModel.from_bytes(trained.stored.to_bytes())
    assert stored.library_versions["scikit-learn"]
    assert "profile.Tier" in stored.features
    again = churn.score_stored(stored, purchases, synthetic.END, profile, customers=purchases["CustomerId"])
    pd.testing.assert_frame_equal(again, trained.scores)
    with pytest.raises(UserError, match=r"uses feature\(s\) profile.Tier that the data no longer has; retrain"):
        churn.score_stored(stored, purchases, synthetic.END, profile.drop(columns="Tier"))


def test_bytes_that_are_not_a_model_are_refused():
    with pytest.raises(UserError, match="lake/models/churn.pkl: not a readable stored model"):
        StoredModel.from_bytes(b"not a pickle", "lake/models/churn.pkl")


def test_a_profile_field_missing_for_most_customers_is_refused(purchases):
    profile = pd.DataFrame({"CustomerId": pd.array(sorted(purchases["CustomerId"].unique()), dtype="string")})
    profile["Income"] = np.where(np.arange(len(profile)) % 4 == 0, 50_000.0, np.nan)
    settings = SETTINGS.model_copy(update={"profile_fields": ["Income"]})
    with pytest.raises(InsufficientData, match="CustomerProfile.Income is missing for 75% of the customers"):
        churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, settings, profile)


def test_signal_activities_become_features_and_must_be_given(purchases):
    sessions = purchases.assign(Time=purchases["Time"] - pd.Timedelta(days=2), Activity="web_sessions")
    sessions = sessions[["CustomerId", "Time", "Activity"]]
    settings = SETTINGS.model_copy(update={"signal_activities": ["web_sessions"]})
    out = churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, settings, signals=sessions)
    assert "web_sessions.days_since_last" in out.stored.features
    stored = StoredModel.from_bytes(out.stored.to_bytes())
    again = churn.score_stored(stored, purchases, synthetic.END, signals=sessions, customers=purchases["CustomerId"])
    pd.testing.assert_frame_equal(again, out.scores)
    gone = "web_sessions.days_since_last, web_sessions.last_90_days, web_sessions.last_365_days that the data no"
    with pytest.raises(UserError, match=gone):
        churn.score_stored(stored, purchases, synthetic.END, signals=sessions.iloc[:0])


def test_no_latest_cutoff_means_the_last_purchase(purchases):
    last = purchases["Time"].max()
    by_default = churn.run_churn(purchases, purchases["CustomerId"], None, SETTINGS)
    explicit = churn.run_churn(purchases, purchases["CustomerId"], last, SETTINGS)
    pd.testing.assert_frame_equal(by_default.scores, explicit.scores)
    assert by_default.stored.data_window["labels_until"] == last.isoformat()


def test_customers_without_a_purchase_get_the_population_prior(purchases):
    # Customers in the list who never bought: the model cannot read them, the prior of such customers can.
    everyone = pd.concat([purchases["CustomerId"], pd.Series([f"N{i:03d}" for i in range(40)], dtype="string")])
    out = churn.run_churn(purchases, everyone, synthetic.END, SETTINGS)
    scores = out.scores.set_index("CustomerId")
    assert len(scores) == everyone.nunique()
    never = scores.loc["N000":"N039"]
    assert (never["Basis"] == "population prior").all()
    assert never["Reason1"].str.startswith("no purchase yet: population prior").all()
    assert never["ChurnScore"].nunique() == 1 and never["Reason2"].isna().all()
    # The prior: of the customers without a purchase at the training cutoff (the 40 and those who joined later),
    # the share who bought nothing in the window after it, with add-one smoothing.
    cutoff = synthetic.END - pd.Timedelta(days=60)
    first = purchases.groupby("CustomerId")["Time"].min()
    later = int((first > cutoff).sum())
    bought = int((first <= synthetic.END).loc[first > cutoff].sum())
    expected = (40 + later - bought + 1) / (40 + later + 2)
    assert never["ChurnScore"].iloc[0] == pytest.approx(expected, abs=1e-4)
    assert (scores.drop(never.index)["Basis"] == "model").all()
    backtest = out.report["no_purchase_prior"]
    assert backtest["customers_without_purchase"] > 40 and 0 <= backtest["actual_p_no_purchase"] <= 1
    stored = StoredModel.from_bytes(out.stored.to_bytes())
    pd.testing.assert_frame_equal(churn.score_stored(stored, purchases, synthetic.END, customers=everyone), out.scores)


def test_measures_become_features_recomputed_at_each_cutoff_and_must_still_exist(purchases):
    measures = Measures(MEASURES, measure_facts(purchases))
    settings = SETTINGS.model_copy(update={"measure_fields": ["average_order"]})
    out = churn.run_churn(purchases, purchases["CustomerId"], synthetic.END, settings, measures=measures)
    assert "measure.average_order" in out.stored.features
    stored = StoredModel.from_bytes(out.stored.to_bytes())
    again = churn.score_stored(stored, purchases, synthetic.END, customers=purchases["CustomerId"], measures=measures)
    pd.testing.assert_frame_equal(again, out.scores)
    gone = Measures(MeasuresConfig(attributes={"spend": MEASURES.attributes["spend"]}), measures.facts)
    with pytest.raises(UserError, match="measure.average_order that the data no longer has"):
        churn.score_stored(stored, purchases, synthetic.END, measures=gone)


def test_models_fit_on_a_seeded_sample_of_their_training_rows_beyond_the_limit(monkeypatch):
    from ci_pipeline.predictions import data

    assert data.training_sample(data.MAX_TRAINING_ROWS, 7) is None
    monkeypatch.setattr(data, "MAX_TRAINING_ROWS", 300)
    picked = data.training_sample(1000, 7)
    assert len(picked) == 300 == len(set(picked)) and (np.diff(picked) > 0).all() and picked[-1] < 1000
    assert (picked == data.training_sample(1000, 7)).all() and not (picked == data.training_sample(1000, 8)).all()
    # Both models still train and score everyone on their sample, the same way twice.
    purchases = synthetic.purchases()
    customers = purchases["CustomerId"]
    first = churn.run_churn(purchases, customers, synthetic.END, SETTINGS).scores
    pd.testing.assert_frame_equal(first, churn.run_churn(purchases, customers, synthetic.END, SETTINGS).scores)
    assert first["CustomerId"].nunique() == customers.nunique()
    settings = SETTINGS.model_copy(update={"clv": SETTINGS.clv.model_copy(update={"period_months": 3})})
    assert (
        clv.run_clv(purchases, customers, synthetic.END, settings).scores["CustomerId"].nunique() == customers.nunique()
    )


@pytest.mark.parametrize("model", [churn, clv])
def test_training_without_scores_explains_the_same_sample_as_scoring_everyone(monkeypatch, purchases, model):
    """A model trained by its own step scores no one: its importance comes from a seeded sample of the customers,
    and equals the importance over the same rows of everyone's contributions (a customer's contributions do not
    depend on the other rows)."""
    from ci_pipeline.predictions import explain

    customers = purchases["CustomerId"]
    full = model.run_churn if model is churn else model.run_clv
    settings = (
        SETTINGS
        if model is churn
        else PredictionSettings.model_validate({"minimums": LOW, "clv": {"period_months": 3}})
    )
    monkeypatch.setattr(explain, "IMPORTANCE_ROWS", 300)
    scored = full(purchases, customers, synthetic.END, settings)
    alone = full(purchases, customers, synthetic.END, settings, score_everyone=False)
    assert alone.scores is None and len(scored.scores) == 700
    assert alone.report == scored.report
    sample = explain.importance_rows(700, settings.seed)
    assert len(sample) == 300 and (np.diff(sample) > 0).all()
    assert sample.tolist() == explain.importance_rows(700, settings.seed).tolist()
    # A sample indeed: everyone's importance (up to IMPORTANCE_ROWS customers, all 700) differs from it.
    monkeypatch.setattr(explain, "IMPORTANCE_ROWS", 20_000)
    everyone = full(purchases, customers, synthetic.END, settings, score_everyone=False).report["feature_importance"]
    assert everyone != scored.report["feature_importance"]
    assert everyone == full(purchases, customers, synthetic.END, settings).report["feature_importance"]


def test_window_days_beside_a_different_churn_days_is_warned_about_naming_both_keys_and_the_fix():
    both = ChurnSettings.model_validate({"window_days": 180, "churn_days": 90})
    warning = both.ignored_window()
    assert warning.startswith("predictions.churn.window_days: 180 has no effect while churn_days (90) is set")
    assert warning.endswith("To predict 180 days ahead, remove churn_days; to keep 90, remove window_days")
    # Only churn_days set (window_days at its default), or both the same: nothing is ignored that the user set.
    assert ChurnSettings.model_validate({"churn_days": 60}).ignored_window() is None
    assert ChurnSettings.model_validate({"window_days": 60, "churn_days": 60}).ignored_window() is None
    assert ChurnSettings.model_validate({"window_days": 60}).ignored_window() is None
    # The refusal of a window without churners names the key that set it.
    assert churn.label_key(both) == "predictions.churn.churn_days"
    assert churn.label_key(ChurnSettings()) == "predictions.churn.window_days"


def test_validate_warns_of_window_days_beside_a_different_churn_days_at_its_line(tmp_path):
    from ci_pipeline.config import SAMPLE_CONFIG, load_config
    from ci_pipeline.validation import setting_warnings

    assert setting_warnings(load_config(SAMPLE_CONFIG)) == []
    churn = "  churn:\n    window_days: 90\n"
    text = SAMPLE_CONFIG.read_text().replace(churn, "  churn:\n    window_days: 180\n    churn_days: 90\n")
    (tmp_path / "ci_pipeline.yaml").write_text(text)
    config = load_config(tmp_path / "ci_pipeline.yaml")
    line = text.splitlines().index("    window_days: 180") + 1
    (warning,) = config.located(setting_warnings(config))
    assert warning.startswith(f"line {line}: predictions.churn.window_days: 180 has no effect while churn_days (90)")
