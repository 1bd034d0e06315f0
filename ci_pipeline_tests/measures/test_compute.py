"""Every aggregation, filter, window, expression and template on tiny frames with known answers."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.expression import ExpressionError, parse
from ci_pipeline.measures.compute import compute_measures, customer_measure_table, distribution
from ci_pipeline.measures.expression import evaluate
from ci_pipeline.outputs import CUSTOMER_MEASURE_COLUMNS, guid

AS_OF = dt.date(2026, 6, 30)
CUSTOMERS = pd.Series(["A", "B", "C"], dtype="string")


def facts():
    rows = [
        # id, customer, activity, type, timestamp, amount, channel, product, points
        ("o1", "A", "orders", "SalesOrder", "2026-06-29", 10.0, "web", "hat", None),
        ("o2", "A", "orders", "SalesOrder", "2026-01-10", 30.0, "store", "shoe", None),
        ("o3", "A", "orders", "SalesOrder", "2025-06-30", 20.0, "web", "hat", None),
        ("o4", "B", "orders", "SalesOrder", "2026-06-01", 5.0, "web", "sock", None),
        ("o5", "B", "orders", "SalesOrder", "2026-07-05", 99.0, "web", "sock", None),
        ("p1", "A", "points", "Loyalty", "2026-02-01", None, None, None, 100),
        ("p2", "A", "points", "Loyalty", "2026-03-01", None, None, None, -40),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "ActivityId",
            "CustomerId",
            "Activity",
            "ActivityType",
            "ts",
            "amount",
            "channel",
            "product",
            "points",
        ],
    )
    frame["ActivityTimeStamp"] = pd.to_datetime(frame.pop("ts"), utc=True)
    frame["points"] = frame["points"].astype("Int64")
    return frame


def measures(attributes=None, customer=None, business=None):
    config = MeasuresConfig.model_validate(
        {"as_of": AS_OF, "attributes": attributes or {}, "customer": customer or {}, "business": business or {}}
    )
    return compute_measures(config, CUSTOMERS, facts(), AS_OF)


def attr(spec):
    result = measures({"m": {"activity": "orders", **spec}})
    return result.attributes["m"].tolist()


def test_aggregations_have_known_answers():
    assert attr({"aggregate": "sum", "field": "amount"}) == [60.0, 5.0, None] or np.isnan(
        attr({"aggregate": "sum", "field": "amount"})[2]
    )
    values = {
        "sum": [60.0, 5.0],
        "average": [20.0, 5.0],
        "count": [3.0, 1.0],
        "count_distinct": [2.0, 1.0],
        "min": [10.0, 5.0],
        "max": [30.0, 5.0],
        "days_since_latest": [1.0, 29.0],
        "days_since_earliest": [365.0, 29.0],
        "span_days": [364.0, 0.0],
    }
    for how, expected in values.items():
        field = "product" if how == "count_distinct" else "amount"
        got = attr({"aggregate": how, "field": field})
        assert got[:2] == expected, how
    assert attr({"aggregate": "first", "field": "product"})[:2] == ["hat", "sock"]
    assert attr({"aggregate": "last", "field": "channel"})[:2] == ["web", "web"]
    assert attr({"aggregate": "argmax", "field": "channel", "order_by": "amount"})[:2] == ["store", "web"]
    assert attr({"aggregate": "argmin", "field": "product", "order_by": "amount"})[:2] == ["hat", "sock"]


def test_a_sum_over_a_text_column_of_numbers_adds_them_and_refuses_text():
    # A CSV read without column types gives text; pandas would join the strings ("10.5" + "7" -> "10.57").
    text = facts()
    text["amount"] = text["amount"].map(lambda v: None if pd.isna(v) else f" {v:g}").astype("string")
    config = MeasuresConfig.model_validate(
        {
            "as_of": AS_OF,
            "attributes": {
                "total": {"activity": "orders", "aggregate": "sum", "field": "amount"},
                "mean": {"activity": "orders", "aggregate": "average", "field": "amount"},
            },
        }
    )
    result = compute_measures(config, CUSTOMERS, text, AS_OF)
    assert result.attributes["total"].tolist()[:2] == [60.0, 5.0]
    assert result.attributes["mean"].tolist()[:2] == [20.0, 5.0]
    text.loc[1, "amount"] = "thirty"
    with pytest.raises(UserError, match=r"measures\.attributes\.mean: average needs numbers.*'amount'.*'thirty'"):
        compute_measures(config, CUSTOMERS, text, AS_OF)


def test_null_rule_counts_are_zero_others_null_unless_configured():
    assert attr({"aggregate": "count"})[2] == 0
    assert pd.isna(attr({"aggregate": "sum", "field": "amount"})[2])
    assert attr({"aggregate": "sum", "field": "amount", "null_value": 0})[2] == 0
    assert pd.isna(attr({"aggregate": "first", "field": "product"})[2])


def test_filters_and_windows_relative_to_the_run_date():
    assert attr({"aggregate": "sum", "field": "amount", "where": [{"field": "channel", "op": "=", "value": "web"}]})[
        :2
    ] == [30.0, 5.0]
    assert attr({"aggregate": "sum", "field": "amount", "window": {"last": 90, "unit": "days"}})[:2] == [10.0, 5.0]
    assert attr({"aggregate": "count", "window": {"period": "this_year"}}) == [2.0, 1.0, 0.0]
    assert attr({"aggregate": "count", "window": {"period": "last_year"}}) == [1.0, 0.0, 0.0]
    assert attr({"aggregate": "count", "window": {"last": 12, "unit": "months"}}) == [2.0, 1.0, 0.0]


def test_a_measure_over_an_empty_window_has_a_defined_result():
    result = measures(
        {
            "n": {"activity": "orders", "aggregate": "count", "window": {"period": "last_month"}, "where": []},
            "s": {"activity": "orders", "aggregate": "sum", "field": "amount", "window": {"last": 1, "unit": "days"}},
        },
        business={"total": {"activity": "orders", "aggregate": "sum", "field": "amount", "window": {"last": 1}}},
    )
    assert result.attributes["n"].tolist() == [0.0, 0.0, 0.0]
    assert result.attributes["s"].isna().all()
    assert pd.isna(result.business["total"]["Value"].iloc[0])


def test_activities_after_the_run_date_are_ignored():
    assert attr({"aggregate": "max", "field": "amount"})[1] == 5.0


def test_an_expression_over_a_measure_of_text_is_a_clear_error_naming_both():
    spec = {"activity": "orders", "aggregate": "argmax", "field": "product", "order_by": "amount"}
    with pytest.raises(UserError) as failed:
        measures({"top": spec, "x": {"expression": "top / 2"}})
    assert str(failed.value) == (
        "measures.attributes.x.expression reads top, whose values are not numbers (e.g. 'shoe'): an expression "
        "computes with numbers; refer to measures of numbers only"
    )


def test_a_measure_over_an_activity_type_reads_every_activity_of_that_type():
    by = {"aggregate": "sum", "field": "amount"}
    result = measures({"by_type": {"activity": "SalesOrder", **by}, "by_name": {"activity": "orders", **by}})
    a = result.attributes.set_index("CustomerId")
    assert a["by_type"].fillna(-1).tolist() == a["by_name"].fillna(-1).tolist() == [60.0, 5.0, -1]


def test_expressions_measures_of_measures_and_templates():
    result = measures(
        {
            "spend": {"template": "total_transaction_value", "activity": "orders"},
            "orders_n": {"template": "transaction_count", "activity": "orders"},
            "aov": {"expression": "spend / orders_n"},
            "aov_plus": {"expression": "-(aov - 1) * 2"},
            "balance": {"template": "loyalty_balance", "activity": "points"},
            "monthly": {"template": "average_monthly_revenue", "activity": "orders"},
            "recency": {"template": "rfm_recency_score", "activity": "orders"},
            "monetary": {"template": "rfm_monetary_score", "activity": "orders"},
            "frequency": {"template": "rfm_frequency_score", "activity": "orders"},
            "lifespan": {"template": "active_lifespan", "activity": "orders"},
            "since": {"template": "days_since_last_purchase", "activity": "orders"},
            "atv": {"template": "average_transaction_value", "activity": "orders"},
        },
        business={
            "avg_spend": {"of_measure": "spend", "aggregate": "average"},
            "buyers": {"of_measure": "spend", "aggregate": "count"},
            "revenue": {"activity": "orders", "aggregate": "sum", "field": "amount"},
            "per_buyer": {"expression": "revenue / buyers"},
            "by_channel": {"activity": "orders", "aggregate": "sum", "field": "amount", "dimensions": ["channel"]},
        },
    )
    a = result.attributes.set_index("CustomerId")
    assert a.loc["A", "aov"] == 20.0 and a.loc["B", "aov"] == 5.0 and pd.isna(a.loc["C", "aov"])
    assert a.loc["A", "aov_plus"] == -38.0
    assert a.loc["A", "balance"] == 60 and pd.isna(a.loc["B", "balance"])
    assert a.loc["A", "monthly"] == pytest.approx(40.0 / 12)
    assert a.loc["A", "recency"] == 5 and a.loc["B", "recency"] == 3 and pd.isna(a.loc["C", "recency"])
    assert a.loc["A", "monetary"] == 5 and a.loc["B", "monetary"] == 3
    # Customers without orders get no frequency score, rather than the lowest one.
    assert a.loc["A", "frequency"] == 5 and a.loc["B", "frequency"] == 3 and pd.isna(a.loc["C", "frequency"])
    assert a.loc["A", "lifespan"] == 364 and a.loc["A", "since"] == 1 and a.loc["A", "atv"] == 20
    b = result.business
    assert b["avg_spend"]["Value"].tolist() == [32.5]
    assert b["buyers"]["Value"].tolist() == [2.0]
    assert b["per_buyer"]["Value"].tolist() == [32.5]
    assert b["by_channel"].to_dict("list") == {"channel": ["store", "web"], "Value": [30.0, 35.0]}


def test_customer_measures_have_dimensions():
    result = measures(
        customer={
            "spend_by_channel": {"activity": "orders", "aggregate": "sum", "field": "amount", "dimensions": ["channel"]}
        }
    )
    table = result.customer["spend_by_channel"]
    assert table.to_dict("list") == {
        "CustomerId": ["A", "A", "B"],
        "channel": ["store", "web", "web"],
        "Value": [30.0, 30.0, 5.0],
    }


def test_customer_measure_table_has_every_customer_and_sorted_json():
    result = measures(
        {
            "z": {"activity": "orders", "aggregate": "count"},
            "a": {"activity": "orders", "aggregate": "sum", "field": "amount"},
        }
    )
    table = customer_measure_table(result.attributes)
    assert list(table.columns) == CUSTOMER_MEASURE_COLUMNS
    assert table["CustomerId"].tolist() == ["A", "B", "C"]
    assert table["Measures"].iloc[0] == json.dumps({"a": 60, "z": 3}, sort_keys=True)
    assert json.loads(table["Measures"].iloc[2]) == {"a": None, "z": 0.0}
    assert table["msdynci_identifier"].iloc[0] == "Customer_Measure|A"
    assert table["msdynci_customermeasureid"].iloc[0] == guid("Customer_Measure|A")
    assert distribution(result.attributes["a"]) == {
        "customers": 3,
        "nulls": 1,
        "min": 5.0,
        "mean": 32.5,
        "median": 32.5,
        "max": 60.0,
    }


def test_expression_parser_builds_a_tree_and_never_evaluates_python():
    assert evaluate(parse("2 * (a + 1) / b"), {"a": 3.0, "b": 4.0}) == 2.0
    assert np.isnan(evaluate(parse("a / 0"), {"a": 1.0}))
    for bad in ["__import__('os')", "a +", "(a", "a ** 2", "a; b", "a b"]:
        with pytest.raises(ExpressionError):
            parse(bad)


def test_config_errors_name_the_key_path():
    from ci_pipeline.config.checks import find_cycles

    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}) == [["a", "b", "c", "a"], ["d", "d"]]
    with pytest.raises(ValueError, match="unknown template"):
        MeasuresConfig.model_validate({"attributes": {"x": {"template": "nope", "activity": "orders"}}})
    with pytest.raises(ValueError, match="needs 'field'"):
        MeasuresConfig.model_validate({"attributes": {"x": {"aggregate": "sum", "activity": "orders"}}})
    with pytest.raises(ValueError, match="unknown operator"):
        MeasuresConfig.model_validate(
            {"attributes": {"x": {"aggregate": "count", "activity": "o", "where": [{"field": "a", "op": "~"}]}}}
        )


def test_the_run_date_is_read_when_called_not_when_configured():
    from ci_pipeline.measures.conditions import run_date

    fixed = MeasuresConfig.model_validate({"as_of": "2026-01-02"})
    assert run_date(fixed.as_of) == dt.date(2026, 1, 2)
    today = MeasuresConfig.model_validate({})
    assert today.as_of == "today"
    before = dt.datetime.now(dt.UTC).date()
    resolved = run_date(today.as_of)
    assert before <= resolved <= dt.datetime.now(dt.UTC).date()


def test_fact_columns_are_the_indexed_ones_and_every_field_a_measure_names():
    from ci_pipeline.config.measures import MeasuresConfig
    from ci_pipeline.measures import fact_columns

    config = MeasuresConfig.model_validate(
        {
            "attributes": {
                "spend": {"activity": "orders", "aggregate": "sum", "field": "amount"},
                "top": {"activity": "orders", "aggregate": "argmax", "field": "product", "order_by": "price"},
            },
            "customer": {
                "by_channel": {
                    "activity": "orders",
                    "aggregate": "count",
                    "dimensions": ["channel"],
                    "where": [{"field": "status", "op": "=", "value": "done"}],
                }
            },
            "business": {"total": {"activity": "orders", "aggregate": "sum", "field": "amount"}},
        }
    )
    assert fact_columns(config) == [
        "CustomerId",
        "Activity",
        "ActivityType",
        "ActivityTimeStamp",
        "amount",
        "product",
        "price",
        "channel",
        "status",
    ]


def test_a_filter_that_matches_no_row_of_its_activities_is_warned_of_with_the_values_there():
    """channel = Web where the data holds web gave every customer 0 without a word."""
    result = measures(
        {
            "web_orders": {
                "activity": "orders",
                "aggregate": "count",
                "where": [{"field": "channel", "op": "=", "value": "Web"}],
            },
            "big": {
                "activity": "orders",
                "aggregate": "sum",
                "field": "amount",
                "where": [{"field": "amount", "op": ">", "value": 500}],
            },
            "fine": {
                "activity": "orders",
                "aggregate": "count",
                "where": [{"field": "channel", "op": "in", "value": ["web"]}],
            },
            # A window or a date matching nothing depends on the run date, not on how a value is written.
            "old": {
                "activity": "orders",
                "aggregate": "count",
                "where": [{"field": "ActivityTimeStamp", "op": "before", "value": "2001-01-01"}],
            },
        },
        business={
            "store_lines": {
                "activity": "points",
                "aggregate": "count",
                "where": [{"field": "channel", "op": "=", "value": "store"}],
            }
        },
    )
    assert result.attributes["web_orders"].tolist() == [0.0, 0.0, 0.0]
    assert result.warnings == [
        "measures.attributes.big.where[0]: amount > 500 matches none of the 4 rows of orders, so big is empty (null) "
        "for every customer; amount holds numbers from 5 to 30 there (values are compared as written)",
        "measures.attributes.web_orders.where[0]: channel = 'Web' matches none of the 4 rows of orders, so web_orders "
        "is 0 for every customer; channel holds 'store', 'web' there (did you mean 'web'?) (values are compared as "
        "written)",
        "measures.business.store_lines.where[0]: channel = 'store' matches none of the 2 rows of points, so "
        "store_lines is 0; channel holds no value there (values are compared as written)",
    ]


def test_the_stage_fails_a_warning_check_on_the_asset_of_a_measure_whose_filter_matches_nothing():
    """The run's summary prints failed checks with their description: the warning reaches the user there."""
    import dagster as dg

    from ci_pipeline.defs.measures import FILTERS_CHECK, _filter_checks, _outs_and_checks

    section = MeasuresConfig.model_validate(
        {
            "attributes": {
                "web": {"activity": "orders", "aggregate": "count", "where": [{"field": "c", "op": "=", "value": 1}]}
            },
            "customer": {
                "by": {
                    "activity": "orders",
                    "aggregate": "count",
                    "dimensions": ["c"],
                    "where": [{"field": "c", "op": "=", "value": 1}],
                }
            },
        }
    )
    section.attributes["store"] = section.attributes["web"]
    checks = [(c.asset_key.to_user_string(), c.name) for c in _outs_and_checks(section)[1] if c.name == FILTERS_CHECK]
    assert sorted(checks) == [("measures/by", FILTERS_CHECK), ("measures/customer_measure", FILTERS_CHECK)]
    warning = "measures.attributes.web.where[0]: c = 1 matches none of the 4 rows of orders, ..."
    results = {r.asset_key.to_user_string(): r for r in _filter_checks(section, [warning])}
    assert set(results) == {"measures/customer_measure", "measures/by"}
    told = results["measures/customer_measure"]
    assert (told.check_name, told.passed, told.severity) == (FILTERS_CHECK, False, dg.AssetCheckSeverity.WARN)
    assert told.description == warning and results["measures/by"].passed
