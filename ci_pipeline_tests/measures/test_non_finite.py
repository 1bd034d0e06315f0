"""Measures never publish NaN or infinity: a result that is not a finite number is null, and counted."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.measures.compute import compute_measures, customer_measure_table, distribution

AS_OF = dt.date(2026, 6, 30)
CUSTOMERS = pd.Series(["A", "B", "C", "D"], dtype="string")


def facts(amounts: dict[str, list[float]]) -> pd.DataFrame:
    """Order facts: customer -> the amounts of their orders (all on 2026-06-01)."""
    rows = [(customer, amount) for customer, values in amounts.items() for amount in values]
    frame = pd.DataFrame(
        {
            "ActivityId": [f"o{i}" for i in range(len(rows))],
            "CustomerId": pd.Series([c for c, _ in rows], dtype="string"),
            "Activity": "orders",
            "ActivityType": "SalesOrder",
            "ActivityTimeStamp": pd.Timestamp("2026-06-01", tz="UTC"),
            "amount": pd.Series([a for _, a in rows], dtype="float64"),
        }
    )
    return frame


# A: two huge amounts whose sum overflows; B: an infinity (older lake data); C: a NaN (older lake data) and a
# normal amount; D: no orders at all.
AMOUNTS = {"A": [1e308, 1e308], "B": [5.0, np.inf], "C": [np.nan, 4.0]}


def compute(attributes=None, customer=None, business=None, amounts=AMOUNTS):
    config = MeasuresConfig.model_validate(
        {"as_of": AS_OF, "attributes": attributes or {}, "customer": customer or {}, "business": business or {}}
    )
    return compute_measures(config, CUSTOMERS, facts(amounts), AS_OF)


def finite_or_null(values) -> bool:
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return not np.isinf(numbers).any()


def test_attribute_measures_turn_overflow_and_infinity_into_counted_nulls():
    result = compute(
        {
            "total": {"activity": "orders", "aggregate": "sum", "field": "amount"},
            "avg": {"activity": "orders", "aggregate": "average", "field": "amount", "null_value": 0},
            "biggest": {"activity": "orders", "aggregate": "max", "field": "amount"},
            "monthly": {"activity": "orders", "aggregate": "sum", "field": "amount", "divide_by": 1e-308},
            "per_order": {"expression": "total / orders"},
            "orders": {"activity": "orders", "aggregate": "count"},
            "score": {"activity": "orders", "aggregate": "sum", "field": "amount", "score": 5},
        }
    )
    values = result.attributes.set_index("CustomerId")
    assert values["total"].isna().tolist() == [True, True, False, True]
    assert values.loc["C", "total"] == 4.0
    # null_value fills customers without activity (D), never a result that overflowed (A, B)
    assert values["avg"].isna().tolist() == [True, True, False, False]
    assert values.loc["D", "avg"] == 0
    assert values["biggest"].isna().tolist() == [False, True, False, True]
    assert values.loc["A", "biggest"] == 1e308
    assert values["monthly"].isna().tolist() == [True, True, True, True]  # 4.0 / 1e-308 overflows too
    assert values["per_order"].isna().tolist() == [True, True, False, True]
    assert values["score"].isna().tolist() == [True, True, False, True]
    assert values["orders"].tolist() == [2, 2, 2, 0]
    for column in values.columns:
        assert finite_or_null(values[column]), column
    assert result.non_finite == {"avg": 2, "biggest": 1, "monthly": 3, "score": 2, "total": 2}
    stats = distribution(result.attributes["total"], result.non_finite["total"])
    assert stats == {"customers": 4, "nulls": 3, "non_finite": 2, "min": 4.0, "mean": 4.0, "median": 4.0, "max": 4.0}
    assert "non_finite" not in distribution(result.attributes["orders"])
    # the published JSON holds null, never NaN or Infinity (which are not JSON)
    measures_json = customer_measure_table(result.attributes).set_index("CustomerId")["Measures"]
    assert json.loads(measures_json["A"])["total"] is None
    assert "Infinity" not in "".join(measures_json) and "NaN" not in "".join(measures_json)


def test_customer_and_business_measures_never_hold_infinity():
    result = compute(
        {"total": {"activity": "orders", "aggregate": "sum", "field": "amount"}},
        customer={
            "by_type": {"activity": "orders", "aggregate": "sum", "field": "amount", "dimensions": ["ActivityType"]}
        },
        business={
            "revenue": {"activity": "orders", "aggregate": "sum", "field": "amount"},
            "revenue_by_type": {
                "activity": "orders",
                "aggregate": "sum",
                "field": "amount",
                "dimensions": ["Activity"],
            },
            "of_customers": {"of_measure": "total", "aggregate": "sum"},
            "ratio": {"expression": "revenue / of_customers"},
        },
    )
    by_type = result.customer["by_type"].set_index("CustomerId")["Value"]
    assert by_type.isna().tolist() == [True, True, False]
    assert result.business["revenue"]["Value"].isna().all()
    assert result.business["revenue_by_type"]["Value"].isna().all()
    # of_measure sees only the finite customer total (C: 4.0)
    assert result.business["of_customers"]["Value"].tolist() == [4.0]
    assert result.business["ratio"]["Value"].isna().all()
    for table in [*result.customer.values(), *result.business.values()]:
        assert finite_or_null(table["Value"])
    assert result.non_finite == {"by_type": 2, "revenue": 1, "revenue_by_type": 1, "total": 2}


def test_sum_across_customers_that_overflows_is_null():
    result = compute(
        {"total": {"activity": "orders", "aggregate": "sum", "field": "amount"}},
        business={"all_spend": {"of_measure": "total", "aggregate": "sum"}},
        amounts={"A": [1e308], "B": [1e308]},
    )
    assert result.attributes["total"].tolist()[:2] == [1e308, 1e308]
    assert result.business["all_spend"]["Value"].isna().all()
    assert result.non_finite == {"all_spend": 1}


def test_finite_data_reports_nothing():
    result = compute(
        {"total": {"activity": "orders", "aggregate": "sum", "field": "amount"}},
        amounts={"A": [1.0, 2.0], "B": [3.0]},
    )
    assert result.attributes["total"].tolist()[:2] == [3.0, 3.0]
    assert result.non_finite == {}


def test_integer_sums_do_not_wrap_around():
    frame = facts({"A": [1.0, 2.0], "B": [3.0]})
    frame["points"] = pd.array([9_000_000_000_000_000_000, 9_000_000_000_000_000_000, 7], dtype="Int64")
    spec = {"activity": "orders", "aggregate": "sum", "field": "points"}
    config = MeasuresConfig.model_validate(
        {"as_of": AS_OF, "attributes": {"points": spec}, "customer": {"by": {**spec, "dimensions": ["Activity"]}}}
    )
    result = compute_measures(config, CUSTOMERS, frame, AS_OF)
    assert result.attributes["points"].tolist()[:2] == [1.8e19, 7.0]
    assert result.customer["by"]["Value"].tolist() == [1.8e19, 7.0]
    assert result.customer["by"]["Activity"].tolist() == ["orders", "orders"]
