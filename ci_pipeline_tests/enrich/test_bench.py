"""`bench enrich`: the AUC it reports and its time-split evaluation, on data made in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ci_pipeline.benchmarks.enrich import _mean_auc, evaluate, known_at


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


def test_the_evaluated_customers_are_those_that_exist_at_the_cutoff_and_later_accounts_are_reported_apart():
    cutoff = pd.Timestamp("2025-01-01", tz="UTC")
    days = [cutoff - pd.Timedelta(days=d) for d in (400, 300, 200, 100)]
    rows = [(f"C{i}", day, "AB"[i % 2]) for i in range(40) for day in days[: 1 + i % 4]]
    rows += [(f"C{i}", cutoff + pd.Timedelta(days=10 + i), "AB"[i % 2]) for i in range(0, 40, 3)]
    # Accounts opened after the cutoff, who buy in the holdout window only.
    rows += [(f"N{i}", cutoff + pd.Timedelta(days=20 + i), "AB"[i % 2]) for i in range(10)]
    frame = pd.DataFrame(rows, columns=["CustomerId", "ActivityTimeStamp", "brand"])
    facts = frame.assign(Activity="order_lines", amount=10.0, category="X").astype(
        {"CustomerId": "string", "brand": "string", "Activity": "string", "category": "string"}
    )
    ids = [f"C{i}" for i in range(40)] + [f"N{i}" for i in range(10)] + ["U1"]
    signup = ["2020-01-01"] * 40 + ["2025-01-05"] * 10 + [None]
    profile = pd.DataFrame({"CustomerId": ids, "SignupDate": signup}, dtype="string")

    known = known_at(profile, cutoff)
    # Opened before the cutoff, or of unknown opening date; never the accounts opened later.
    assert list(known["CustomerId"]) == [f"C{i}" for i in range(40)] + ["U1"]
    latest = frame["ActivityTimeStamp"].max()
    at_cutoff = evaluate(facts, known, "brand_affinity", cutoff, latest)
    assert "accounts_opened_after_cutoff" not in at_cutoff
    assert at_cutoff["buyers_without_history"] == 0
    every = evaluate(facts, profile, "brand_affinity", cutoff, latest)
    assert every["accounts_opened_after_cutoff"] == 10 and every["their_buyers"] == 10
    assert every["buyers_without_history"] == 10
    # The later accounts have no history: the cutoff's ranking cannot tell them apart, and they lower the figure.
    assert every["affinity"]["auc_accounts_opened_after_cutoff"] == 0.5
    assert every["affinity"]["auc"] < at_cutoff["affinity"]["auc"]
