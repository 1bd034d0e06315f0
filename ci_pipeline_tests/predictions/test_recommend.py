"""Product recommendation on small hand-made and seeded purchases: reasons, fallback, repeats, filters, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from ci_pipeline.predictions import metrics, recommend
from ci_pipeline.predictions.data import InsufficientData
from ci_pipeline.predictions.settings import PredictionSettings, RecommendationSettings
from ci_pipeline_tests.predictions import synthetic

DAY = pd.Timestamp("2026-06-01T00:00:00Z")


def basket(rows):
    """(customer, product, days before DAY) rows as a lines frame."""
    return pd.DataFrame(
        {
            "CustomerId": pd.array([r[0] for r in rows], dtype="string"),
            "Time": [DAY - pd.Timedelta(days=r[2]) for r in rows],
            "Product": pd.array([r[1] for r in rows], dtype="string"),
        }
    )


def fitted(lines, **settings):
    rs = RecommendationSettings(**settings)
    customers = pd.Index(sorted(lines["CustomerId"].unique()), dtype="string")
    products = recommend._products(lines, DAY - pd.Timedelta(days=rs.lookback_days), DAY)
    history = recommend.interactions(lines, customers, products, DAY - pd.Timedelta(days=rs.lookback_days), DAY)
    return customers, products, history, recommend.fit(history, products, rs)


LINES = basket(
    [("a", "tent", 5), ("a", "stove", 5), ("b", "tent", 9), ("b", "stove", 9), ("c", "tent", 3), ("d", "mug", 2)]
    + [("e", "mug", 1), ("e", "mug", 20), ("f", "lamp", 4)]
)


def test_bought_together_bought_before_and_popular():
    customers, products, history, model = fitted(LINES, k=3)
    items, scores, reasons = recommend.recommend(model, history, 3, repeats=True)
    c = customers.get_loc("c")
    named = dict(zip([products[i] for i in items[c]], recommend.REASONS[reasons[c]], strict=True))
    # c bought the tent; the stove was bought with the tent by a and b; both score 1 and come first.
    assert list(named)[:2] == ["stove", "tent"] and scores[c, 0] == scores[c, 1] == 1
    assert named["tent"] == "bought before" and named["stove"] == "bought together"
    assert recommend.REASONS[reasons[c, 2]] == "popular" and scores[c, 2] == 0


def test_without_repeats_bought_products_are_never_recommended_and_excluded_ones_never():
    customers, products, history, model = fitted(LINES, k=3, exclude_products=["mug"])
    items, _, _ = recommend.recommend(model, history, 3, repeats=False)
    bought = history.toarray() > 0
    for row in range(len(customers)):
        chosen = items[row][items[row] >= 0]
        assert not bought[row, chosen].any()
        assert products.get_loc("mug") not in chosen


def test_a_single_product_catalog_still_recommends():
    lines = basket([(f"c{i}", "only", i * 3) for i in range(20)])
    settings = PredictionSettings.model_validate(
        {"minimums": {"recommendation_customers": 5}, "recommendation": {"k": 3}}
    )
    out = recommend.run_recommendation(lines, pd.Series([f"c{i}" for i in range(25)]), DAY, settings)
    assert set(out.recommendations["Product"]) == {"only"}
    assert out.recommendations.groupby("CustomerId").size().max() == 1
    assert out.recommendations["CustomerId"].nunique() == 25  # customers without history get the popular product
    assert out.report["with_repeats"]["model"]["success_at_3"] == 1.0


def test_no_purchase_before_the_held_out_period_is_reported_not_evaluated():
    lines = basket([(f"c{i}", "only", i % 20) for i in range(20)])
    settings = PredictionSettings.model_validate({"minimums": {"recommendation_customers": 5}})
    out = recommend.run_recommendation(lines, lines["CustomerId"], DAY, settings)
    assert out.report["not_evaluated"].startswith("no product was bought in the 730 days before")
    assert len(out.recommendations) == 20


def test_too_few_buyers_is_a_clear_failure():
    with pytest.raises(InsufficientData, match="3 customers bought a product .* at least 100 are needed"):
        recommend.run_recommendation(
            basket([("a", "x", 1), ("b", "x", 1), ("c", "y", 1)]), None, DAY, PredictionSettings()
        )


def test_model_beats_most_popular_on_a_held_out_month():
    purchases = synthetic.purchases(customers=600)
    lines = synthetic.lines(purchases)
    settings = PredictionSettings.model_validate(
        {"minimums": {"recommendation_customers": 50}, "recommendation": {"holdout_days": 90}}
    )
    out = recommend.run_recommendation(lines, purchases["CustomerId"], synthetic.END, settings)
    for mode in ("with_repeats", "new_items_only"):
        report = out.report[mode]
        assert report["model"]["customers"] > 50
        assert report["model"]["success_at_10"] > report["most_popular"]["success_at_10"]
    assert set(out.report["with_repeats"]) == {"model", "most_popular", "own_most_bought", "success_over_best_baseline"}
    again = recommend.run_recommendation(lines, purchases["CustomerId"], synthetic.END, settings)
    pd.testing.assert_frame_equal(out.recommendations, again.recommendations)


def test_ranking_metrics_on_a_hand_example():
    recommended = np.array([[0, 1, 2], [3, -1, -1], [2, 0, 1]])
    relevant = sparse.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
    out = metrics.ranking(recommended, relevant, 3)
    assert out["customers"] == 2  # the third customer bought nothing in the held-out period
    assert out["success_at_3"] == 0.5
    assert out["precision_at_3"] == round((1 / 3) / 2, 4)
    assert out["ndcg_at_3"] == round((1 / np.log2(3)) / 2, 4)


def test_top_k_is_every_rows_best_scores_with_ties_broken_by_column():
    rng = np.random.default_rng(4)
    # Few distinct scores, so ties straddle the k-th place; some rows empty, some shorter than k.
    dense = rng.integers(0, 4, (300, 40)) * (rng.random((300, 40)) < rng.random((300, 1)))
    dense[:5] = 0
    scores = sparse.csr_matrix(dense.astype(np.float64) / 3)
    items, values = recommend._top_k(scores, 7)
    for row in range(len(dense)):
        ranked = sorted((-v, c) for c, v in enumerate(scores[row].toarray().ravel()) if v > 0)[:7]
        expected = [c for _, c in ranked] + [-1] * (7 - len(ranked))
        assert items[row].tolist() == expected
        assert values[row].tolist() == [-v for v, _ in ranked] + [0.0] * (7 - len(ranked))


def test_neighbours_are_each_rows_largest_values_with_ties_settled_by_column_on_any_cpu():
    rng = np.random.default_rng(5)
    # Few distinct values: most rows tie at their cut, which argpartition settles differently on CPUs with AVX-512.
    co = rng.integers(0, 4, size=(60, 40)).astype(np.float64) / 3
    for keep_n in (1, 3, 7, 40):
        rows, cols = recommend._neighbours(co, keep_n)
        expected = []
        for r in range(co.shape[0]):
            order = sorted(range(co.shape[1]), key=lambda c: (-co[r, c], c))
            expected += [(r, c) for c in order[:keep_n] if co[r, c] > 0]
        assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == sorted(expected)
    assert len(recommend._neighbours(co[:, :1], 1)[0]) == 0


def test_a_product_bought_and_returned_is_not_bought():
    lines = basket([("a", "tent", 9), ("a", "stove", 9), ("a", "tent", 2), ("b", "mug", 9), ("b", "mug", 8)])
    lines = pd.concat([lines, basket([("b", "mug", 1), ("c", "lamp", 3)])], ignore_index=True)
    # a sent the tent back; b bought two mugs and returned one; c only returned a lamp bought before the window.
    lines["Quantity"] = [1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0]
    customers = pd.Index(["a", "b", "c"], dtype="string")
    products = recommend._products(lines, DAY - pd.Timedelta(days=30), DAY)
    assert list(products) == ["mug", "stove", "tent"]  # the lamp was only returned in the window
    counts = recommend.interactions(lines, customers, products, DAY - pd.Timedelta(days=30), DAY).toarray()
    assert counts.tolist() == [[0, 1, 0], [2, 0, 0], [0, 0, 0]]
    # Held out after a's purchase and before the return, the tent still counts: nothing after the cutoff is read.
    assert (
        recommend.interactions(lines, customers, products, DAY - pd.Timedelta(days=30), DAY - pd.Timedelta(days=5))[
            0, products.get_loc("tent")
        ]
        == 1
    )


def test_without_repeats_products_bought_before_the_look_back_window_are_not_recommended_either():
    from ci_pipeline.predictions.published import recommend_stored

    # Everyone bought the kettle long ago (before the 60-day window), then a mug or a lamp; some bought it again.
    rows = [(c, "kettle", 100) for c in "abcdef"] + [(c, "mug", 5) for c in "abc"] + [(c, "lamp", 5) for c in "def"]
    lines = basket(rows + [(c, "kettle", 4) for c in "ad"])
    settings = PredictionSettings.model_validate(
        {
            "minimums": {"recommendation_customers": 2},
            "recommendation": {"k": 3, "repeats": False, "lookback_days": 60, "holdout_days": 7},
        }
    )
    out = recommend.run_recommendation(lines, lines["CustomerId"], DAY, settings)
    stored = recommend_stored(out.stored, lines, lines["CustomerId"], DAY, settings.recommendation)
    for table in (out.recommendations, stored):
        assert "kettle" not in set(table["Product"])
        assert table[table["CustomerId"] == "b"]["Product"].tolist() == ["lamp"]


def test_exclude_products_that_match_no_product_are_named_with_near_misses_and_examples():
    products = pd.Series(["Kettle", "Mug", "Mug", "Beans"], dtype="string")
    assert recommend.unmatched_exclusions(["Mug"], products, "field 'product'") is None
    assert recommend.unmatched_exclusions([], products, "field 'product'") is None
    found = recommend.unmatched_exclusions(["SKU-0", "kettle", "Mug", "Beens"], products, "field 'product'")
    assert found["values"] == ["SKU-0", "kettle", "Beens"]
    message = found["message"]
    assert message.startswith("predictions.recommendation.exclude_products: 'SKU-0', 'kettle', 'Beens' match")
    assert "no product of field 'product'" in message and "'Mug', " in message  # examples, most bought first
    assert "did you mean 'kettle' -> 'Kettle', 'Beens' -> 'Beans'?" in message
    lines = basket([(f"c{i}", ["Kettle", "Mug"][i % 2], i) for i in range(6)])
    settings = PredictionSettings.model_validate(
        {"minimums": {"recommendation_customers": 2}, "recommendation": {"k": 2, "exclude_products": ["SKU-0"]}}
    )
    out = recommend.run_recommendation(lines, lines["CustomerId"], DAY, settings)
    assert out.report[recommend.UNMATCHED]["values"] == ["SKU-0"]
    assert "of field 'product' of activity 'order_lines'" in out.report[recommend.UNMATCHED]["message"]


def test_a_stored_model_scores_with_the_exclude_products_configured_now():
    from ci_pipeline.predictions.published import recommend_stored, settings_changes

    settings = PredictionSettings.model_validate(
        {"minimums": {"recommendation_customers": 2}, "recommendation": {"k": 3}}
    )
    out = recommend.run_recommendation(LINES, LINES["CustomerId"], DAY, settings)
    assert "mug" in set(out.recommendations["Product"])
    now = PredictionSettings.model_validate(
        settings.model_dump() | {"recommendation": {"k": 3, "exclude_products": ["mug"]}}
    )
    scored = recommend_stored(out.stored, LINES, LINES["CustomerId"], DAY, now.recommendation)
    assert "mug" not in set(scored["Product"]) and scored.groupby("CustomerId").size().max() == 3
    # Settings scoring applies itself need no retraining; those the model learnt from are named.
    then, later = settings.model_dump(mode="json"), now.model_dump(mode="json")
    assert settings_changes(then, later, "recommendation") == []
    assert settings_changes(then, later, "churn") == []
    later["recommendation"]["lookback_days"] = 365
    assert settings_changes(then, later, "recommendation") == ["recommendation.lookback_days: 730 -> 365"]
    assert settings_changes(then, later, "churn") == []
    later["churn"]["window_days"] = 60
    assert settings_changes(then, later, "churn") == ["churn.window_days: 90 -> 60"]


def test_a_baseline_that_beats_the_model_is_reported_and_the_grade_follows_the_reference():
    def group(model, popular, own=None):
        out = {"model": {"success_at_5": model}, "most_popular": {"success_at_5": popular}}
        return out | ({"own_most_bought": {"success_at_5": own}} if own is not None else {})

    report = {"with_repeats": group(0.40, 0.43, 0.30), "new_items_only": group(0.21, 0.20)}
    found = recommend.verdicts(report, RecommendationSettings(k=5))
    assert found["graded_on"] == "with_repeats" and found["reference_grade"] == "C"
    beaten = found["beaten_by_baseline"]
    assert (beaten["baseline"], beaten["difference"]) == ("most_popular", -0.03)
    assert beaten["message"].startswith("ProductRecommendation: on the backtest the baseline most_popular beat")
    assert "Success@5 (with_repeats) 0.43" in beaten["message"]
    found = recommend.verdicts(report, RecommendationSettings(k=5, repeats=False))
    assert found == {"graded_on": "new_items_only", "reference_grade": "B"}
    assert recommend.verdicts({"with_repeats": group(0.55, 0.5)}, RecommendationSettings(k=5))["reference_grade"] == "A"
    assert recommend.verdicts({"not_evaluated": "no product"}, RecommendationSettings(k=5)) == {}
