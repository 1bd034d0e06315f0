"""Features at a cutoff read nothing after it; purchases and lines come from the activity facts with clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.errors import UserError
from ci_pipeline.predictions import btyd
from ci_pipeline.predictions.data import lines_from_facts, purchases_from_facts
from ci_pipeline.predictions.features import purchase_features, purchasers_at
from ci_pipeline.predictions.settings import PurchaseSource
from ci_pipeline_tests.predictions import synthetic

CUTOFF = synthetic.END - pd.Timedelta(days=120)


def test_features_do_not_change_when_anything_after_the_cutoff_changes():
    purchases = synthetic.purchases()
    later = purchases["Time"] > CUTOFF
    assert later.sum() > 100
    altered = purchases.copy()
    # Move every later purchase, change its amount, drop a third of them and add new ones for other customers.
    altered.loc[later, "Time"] = altered.loc[later, "Time"] + pd.Timedelta(days=3)
    altered.loc[later, "Amount"] = -999.0
    altered = altered.drop(altered.index[later.to_numpy() & (np.arange(len(altered)) % 3 == 0)])
    extra = pd.DataFrame(
        {"CustomerId": pd.array(["C00001", "C00002"], dtype="string"), "Time": [CUTOFF + pd.Timedelta(seconds=1)] * 2}
    ).assign(Amount=5.0)
    altered = pd.concat([altered, extra], ignore_index=True)
    customers = purchasers_at(purchases, CUTOFF)
    assert purchasers_at(altered, CUTOFF).equals(customers)
    pd.testing.assert_frame_equal(
        purchase_features(purchases, customers, CUTOFF), purchase_features(altered, customers, CUTOFF)
    )
    pd.testing.assert_frame_equal(
        btyd.rfm_summary(purchases, customers, CUTOFF), btyd.rfm_summary(altered, customers, CUTOFF)
    )


def test_recency_frequency_and_returns_of_a_known_history():
    day = pd.Timestamp("2026-01-01T00:00:00Z")
    purchases = pd.DataFrame(
        {
            "CustomerId": pd.array(["a", "a", "a", "b"], dtype="string"),
            "Time": [day, day + pd.Timedelta(days=10), day + pd.Timedelta(days=20), day],
            "Amount": [100.0, -40.0, 60.0, 30.0],
        }
    )
    customers = pd.Index(["a", "b", "c"], dtype="string")
    X = purchase_features(purchases, customers, day + pd.Timedelta(days=30))
    assert X.loc["a", "days_since_last_purchase"] == 10
    assert X.loc["a", "purchase_days"] == 3
    assert X.loc["a", "total_amount"] == 120
    assert X.loc["a", "returns"] == 1
    assert X.loc["a", "mean_days_between_purchases"] == 10
    assert np.isnan(X.loc["b", "mean_days_between_purchases"])
    assert np.isnan(X.loc["c", "days_since_last_purchase"]) and X.loc["c", "purchase_days"] == 0


def facts():
    stamp = pd.Timestamp("2026-01-01T00:00:00Z")
    return pd.DataFrame(
        {
            "ActivityId": ["o1", "o2", "l1", "l2"],
            "CustomerId": pd.array(["a", "a", "a", "a"], dtype="string"),
            "Activity": ["orders", "orders", "order_lines", "order_lines"],
            "ActivityType": ["SalesOrder"] * 2 + ["SalesOrderLine"] * 2,
            "ActivityTimeStamp": [stamp] * 4,
            "amount": [50.0, 20.0, 10.0, 40.0],
            "is_return": [False, True, None, None],
            "product": [None, None, "tent", ""],
        }
    )


def test_returns_flagged_with_a_positive_amount_become_negative():
    out = purchases_from_facts(facts(), PurchaseSource(is_return="is_return"))
    assert out["Amount"].tolist() == [50.0, -20.0]
    lines = lines_from_facts(facts(), PurchaseSource())
    assert lines["Product"].tolist() == ["tent"]


def test_an_unknown_activity_or_field_names_what_exists():
    with pytest.raises(UserError, match="no activity named 'sales'.*order_lines, orders"):
        purchases_from_facts(facts(), PurchaseSource(activity="sales"))
    with pytest.raises(UserError, match="activity 'orders' has no field total"):
        purchases_from_facts(facts(), PurchaseSource(amount="total"))


def test_profile_fields_are_checked():
    purchases = synthetic.purchases(customers=120)
    customers = purchasers_at(purchases, CUTOFF)
    assert len(customers) > 60
    profile = pd.DataFrame({"CustomerId": customers, "Email": [f"{c}@x.example" for c in customers]})
    profile["Tier"] = np.where(np.arange(len(profile)) % 2 == 0, "gold", "silver")
    with pytest.raises(UserError, match="CustomerProfile has no column Country"):
        purchase_features(purchases, customers, CUTOFF, profile, ["Country"])
    with pytest.raises(UserError, match="CustomerProfile.Email has .* distinct values"):
        purchase_features(purchases, customers, CUTOFF, profile, ["Email"])
    X = purchase_features(purchases, customers, CUTOFF, profile, ["Tier"])
    assert list(X["profile.Tier"].cat.categories) == ["gold", "silver"]
