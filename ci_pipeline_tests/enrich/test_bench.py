"""`bench enrich`: the AUC it reports and its time-split evaluation, on data made in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ci_pipeline.benchmarks.enrich import _mean_auc, evaluate


def test_the_mean_auc_is_the_average_of_each_columns_auc_with_ties_counting_half():
    rng = np.random.default_rng(3)
    score = rng.integers(0, 4, size=(200, 3)).astype(float)
    label = rng.random((200, 3)) < 0.3
    expected = np.mean([roc_auc_score(label[:, j], score[:, j]) for j in range(3)])
    assert _mean_auc(score, label) == round(expected, 4)
    # A column without buyers says nothing and is left out.
    label[:, 2] = False
    assert _mean_auc(score, label) == round(np.mean([roc_auc_score(label[:, j], score[:, j]) for j in range(2)]), 4)


def test_customers_who_keep_buying_their_brand_are_found_better_than_by_the_baselines():
    rng = np.random.default_rng(5)
    brands = np.array(["A", "B", "C", "D"])
    rows = []
    for i in range(300):
        favourite = brands[i % 4]
        for day in np.sort(rng.choice(720, size=rng.integers(1, 8), replace=False)):
            brand = favourite if rng.random() < 0.8 else rng.choice(brands)
            rows.append((f"C{i:03d}", pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=int(day)), brand))
    frame = pd.DataFrame(rows, columns=["CustomerId", "ActivityTimeStamp", "brand"])
    facts = frame.assign(Activity="order_lines", amount=20.0, category="X").astype(
        {"CustomerId": "string", "brand": "string", "Activity": "string", "category": "string"}
    )
    # Two customers who never bought: reported as their own group, beside those with history.
    profile = pd.DataFrame({"CustomerId": [*sorted(set(frame["CustomerId"])), "NEW1", "NEW2"]}, dtype="string")
    latest = frame["ActivityTimeStamp"].max()
    report = evaluate(facts, profile, "brand_affinity", latest - pd.Timedelta(days=180), latest)
    assert report["names"] == 4 and report["positives"] > 0
    assert report["customers_with_history"] + report["buyers_without_history"] <= 300
    assert 0 <= report["affinity"]["auc_customers_without_history"] <= 1
    assert report["affinity"]["auc_customers_with_history"] > report["segment_prior"]["auc_customers_with_history"]
    assert report["affinity"]["auc"] > max(report["segment_prior"]["auc"], report["last_name"]["auc"])
    assert report["auc_over_best_baseline"] > 0
