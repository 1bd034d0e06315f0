"""Reasons: occlusion against the typical customer, and the phrases of each customer's top three features."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from ci_pipeline.predictions import explain


def frame(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    gap = rng.exponential(30, n)
    gap[rng.random(n) < 0.3] = np.nan
    return pd.DataFrame(
        {
            # Mostly at the median (0), as counts of recent purchases are.
            "purchases_last_30_days": np.where(rng.random(n) < 0.8, 0.0, rng.integers(1, 5, n)),
            "last_gap_days": gap,
            "total_amount": rng.gamma(2, 50, n),
            "profile.Channel": pd.Categorical(rng.choice(["web", "shop", "phone"], n)),
        },
        index=pd.Index([f"C{i}" for i in range(n)], dtype="string", name="CustomerId"),
    )


def test_contributions_equal_predicting_every_customer_again_with_each_feature_made_typical():
    X = frame()
    y = X["purchases_last_30_days"] * 3 + np.nan_to_num(X["last_gap_days"]) / 10 + (X["profile.Channel"] == "web") * 2
    model = HistGradientBoostingRegressor(max_iter=30, categorical_features="from_dtype", random_state=0).fit(X, y)
    typical = explain.typical_values(X)
    # A feature missing for most customers has a missing typical value: the customers missing it are typical.
    typical["last_gap_days"] = np.nan
    got = explain.contributions(model.predict, X, typical)
    expected = np.zeros_like(got)
    for j, column in enumerate(X.columns):
        changed = X.copy()
        if column == "profile.Channel":
            changed[column] = pd.Categorical([typical[column]] * len(X), categories=X[column].cat.categories)
        else:
            changed[column] = typical[column]
        expected[:, j] = model.predict(X) - model.predict(changed)
    np.testing.assert_array_equal(got, expected)
    assert (got[:, 0] != 0).any() and (got[X["purchases_last_30_days"].to_numpy() == 0, 0] == 0).all()


def test_each_customer_gets_the_phrases_of_their_three_largest_contributions_in_order():
    X = frame(3)
    contrib = np.array([[0.1, -0.5, 0.2, 0.0], [0.0, 0.0, 0.0, 0.3], [-0.2, 0.1, 0.05, 0.01]])
    reasons = explain.top_reasons(X, contrib)
    assert reasons.loc["C0", "Reason1"].endswith(": -0.50")
    assert reasons.loc["C0", "Reason2"].startswith("spent ") and reasons.loc["C0", "Reason2"].endswith(": +0.20")
    assert reasons.loc["C1", "Reason1"].startswith("profile.Channel is ")
    assert reasons.loc["C2", "Reason1"].endswith("purchases in the last 30 days: -0.20")
    assert list(reasons.columns) == ["Reason1", "Reason2", "Reason3"]
    assert reasons.notna().all().all()


@pytest.mark.parametrize("block_rows", [explain.ADDED_ROWS, 7], ids=["one block", "blocks of 7 rows"])
def test_boosted_trees_give_the_models_own_predictions_and_contributions_to_the_last_bit(monkeypatch, block_rows):
    # Blocks of 7 rows: the sums are added up block by block, with a block boundary inside most trees' changes.
    monkeypatch.setattr(explain, "ADDED_ROWS", block_rows)
    X = frame(2000)
    signal = X["purchases_last_30_days"] * 3 + np.nan_to_num(X["last_gap_days"]) / 10 + (X["profile.Channel"] == "web")
    settings = {"max_iter": 40, "max_leaf_nodes": 15, "categorical_features": "from_dtype", "random_state": 0}
    regressor = HistGradientBoostingRegressor(loss="poisson", **settings).fit(X, signal)
    classifier = HistGradientBoostingClassifier(**settings).fit(X, signal > signal.median())
    typical = explain.typical_values(X)
    typical["last_gap_days"] = np.nan

    def churn(features):
        return classifier.predict_proba(features)[:, 1]

    for predict, estimator in ((regressor.predict, regressor), (churn, classifier)):
        trees = explain.BoostedTrees(estimator, X, typical)
        np.testing.assert_array_equal(trees.output(), predict(X))

        def from_trees(frame, boosted, predict=predict):
            # The boosted output the trees give a frame is the model's own prediction of it.
            np.testing.assert_array_equal(boosted, predict(frame))
            return boosted

        got = explain.contributions(from_trees, X, typical, trees)
        np.testing.assert_array_equal(got, explain.contributions(predict, X, typical))


def test_features_worked_on_side_by_side_give_the_contributions_of_one_at_a_time(monkeypatch):
    X = frame(3000)
    signal = X["purchases_last_30_days"] * 2 + np.nan_to_num(X["last_gap_days"]) / 20 + (X["profile.Channel"] == "web")
    settings = {"max_iter": 30, "max_leaf_nodes": 15, "categorical_features": "from_dtype", "random_state": 0}
    regressor = HistGradientBoostingRegressor(loss="poisson", **settings).fit(X, signal)
    typical = explain.typical_values(X)
    trees = explain.BoostedTrees(regressor, X, typical)
    threads = []

    def predict(frame, boosted):
        threads.append(threading.current_thread().name)
        return boosted

    monkeypatch.setattr(explain, "PARALLEL_ROWS", len(X) + 1)
    one_at_a_time = explain.contributions(predict, X, typical, trees)
    assert not any(name.startswith("reasons") for name in threads)
    monkeypatch.setattr(explain, "PARALLEL_ROWS", 1)
    side_by_side = explain.contributions(predict, X, typical, trees)
    np.testing.assert_array_equal(side_by_side, one_at_a_time)
    assert any(name.startswith("reasons") for name in threads)
    assert np.abs(one_at_a_time).sum() > 0
