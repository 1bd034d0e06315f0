"""Features at a cutoff read nothing after it; purchases and lines come from the activity facts with clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.conditions import Condition
from ci_pipeline.predictions import btyd, prior
from ci_pipeline.predictions.churn import run_churn
from ci_pipeline.predictions.data import (
    AMOUNT_ATTR,
    InsufficientData,
    lines_from_facts,
    purchases_from_facts,
    require,
    signals_from_facts,
    stray_last_purchases,
    usability,
)
from ci_pipeline.predictions.features import (
    Context,
    Encoded,
    Measures,
    describe,
    future_purchases,
    purchase_features,
    purchasers_at,
)
from ci_pipeline.predictions.published import ModelRuns
from ci_pipeline.predictions.settings import PredictionSettings, PurchaseSource
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
    # The return on day 10 lowers the amount but is not an occasion to buy: two purchase days, 20 days apart.
    assert X.loc["a", "days_since_last_purchase"] == 10
    assert X.loc["a", "purchase_days"] == 2
    assert X.loc["a", "total_amount"] == 120
    assert X.loc["a", "mean_amount"] == 80
    assert X.loc["a", "returns"] == 1
    assert X.loc["a", "mean_days_between_purchases"] == 20
    assert X.loc["a", "last_gap_days"] == 20
    assert np.isnan(X.loc["b", "last_gap_days"])
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


def test_orders_the_purchases_filter_leaves_out_are_neither_purchases_nor_returns():
    rows = facts().assign(status=["cancelled", "done", None, None])
    where = [Condition(field="status", op="!=", value="cancelled")]
    out = purchases_from_facts(rows, PurchaseSource(is_return="is_return", where=where))
    assert out["Amount"].tolist() == [-20.0]
    with pytest.raises(UserError, match="activity 'orders' has no field state"):
        purchases_from_facts(rows, PurchaseSource(where=[Condition(field="state", op="=", value="x")]))


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
        Context(profile, ("Country",)).features(purchases, customers, CUTOFF)
    with pytest.raises(UserError, match="CustomerProfile.Email has .* distinct values"):
        Context(profile, ("Email",)).features(purchases, customers, CUTOFF)
    X = Context(profile, ("Tier",)).features(purchases, customers, CUTOFF)
    assert list(X["profile.Tier"].cat.categories) == ["gold", "silver"]


def test_signal_features_read_nothing_after_the_cutoff_and_read_as_reasons():
    day = CUTOFF
    signals = pd.DataFrame(
        {
            "CustomerId": pd.array(["a", "a", "b", "a"], dtype="string"),
            "Time": [day - pd.Timedelta(days=d) for d in (40, 100, 5, -3)],
            "Activity": pd.array(["web_sessions"] * 4, dtype="string"),
        }
    )
    purchases = pd.DataFrame(
        {"CustomerId": pd.array(["a", "b"], dtype="string"), "Time": [day - pd.Timedelta(days=50)] * 2, "Amount": 1.0}
    )
    customers = pd.Index(["a", "b", "c"], dtype="string")
    context = Context(signals=signals, signal_activities=("web_sessions",))
    X = context.features(purchases, customers, day)
    assert X["web_sessions.days_since_last"].tolist()[:2] == [40.0, 5.0]
    assert np.isnan(X.loc["c", "web_sessions.days_since_last"])
    assert X["web_sessions.last_90_days"].tolist() == [1.0, 1.0, 0.0]
    moved = signals.assign(Time=signals["Time"].where(signals["Time"] <= day, day + pd.Timedelta(days=30)))
    pd.testing.assert_frame_equal(
        X, Context(signals=moved, signal_activities=("web_sessions",)).features(purchases, customers, day)
    )
    assert list(describe("web_sessions.days_since_last", X["web_sessions.days_since_last"])) == [
        "no web_sessions for 40 days",
        "no web_sessions for 5 days",
        "no web_sessions yet",
    ]
    assert "web_sessions.last_90_days" in context.available()


def test_signals_come_from_the_named_activities():
    out = signals_from_facts(facts(), ["order_lines"])
    assert out.columns.tolist() == ["CustomerId", "Time", "Activity"] and len(out) == 2
    with pytest.raises(UserError, match="no activity named 'web_sessions'"):
        signals_from_facts(facts(), ["web_sessions"])


def test_purchases_without_an_amount_are_kept_and_counted_as_missing():
    rows = facts()
    rows.loc[0, "amount"] = None
    out = purchases_from_facts(rows, PurchaseSource())
    assert len(out) == 2 and out["Amount"].isna().sum() == 1
    report = usability(out, out["CustomerId"])
    assert report.share_missing_amount == 0.5
    with pytest.raises(
        InsufficientData,
        match="50% of the purchases have no amount in field 'amount' of activity 'orders', at most 20%",
    ):
        require(report, "TransactionalChurn", 1, 0, 0)


def test_amounts_that_are_text_but_no_number_are_warned_about_even_below_the_limit():
    # "$11.77" in a column not declared numeric: the purchase counts with no amount, and the run says so.
    rows = facts().astype({"amount": object})
    rows.loc[0, "amount"] = "$11.77"
    rows.loc[1, "amount"] = "20.00"
    origin = "column amount of shop.orders"
    out = purchases_from_facts(rows, PurchaseSource(), origin)
    assert out["Amount"].isna().tolist() == [True, False]
    read = out.attrs[AMOUNT_ATTR]
    assert (read.text_rows, read.purchases, read.example) == (1, 2, "$11.77")
    warning = read.warning()
    assert "field 'amount' of activity 'orders' (column amount of shop.orders)" in warning
    assert "holds text that is no number in 1 of 2 purchases, for example '$11.77'" in warning
    # What the usability check reads is the purchases up to the cutoff: the note goes with them.
    report = usability(out[out["Time"] <= out["Time"].max()], out["CustomerId"])
    assert report.as_dict()["amounts_not_a_number"] == {"rows": 1, "example": "$11.77"}
    require(report, "TransactionalChurn", 1, 0, 0, max_missing=0.6)
    settings = PredictionSettings()
    runs = ModelRuns(settings, rows, rows["CustomerId"], None, None, amount_origin=origin)
    assert runs.warnings(["churn", "clv"]) == [warning] and runs.warnings(["recommendation"]) == []
    # Blank text is no amount, not a wrong one: nothing to warn about.
    rows.loc[0, "amount"] = "  "
    assert purchases_from_facts(rows, PurchaseSource()).attrs[AMOUNT_ATTR].warning() is None


def test_an_amount_field_of_text_names_the_field_the_column_and_a_value():
    rows = facts().astype({"amount": object})
    rows["amount"] = "USD"
    out = purchases_from_facts(rows, PurchaseSource(), "column currency of shop.orders")
    with pytest.raises(InsufficientData) as caught:
        require(usability(out, out["CustomerId"]), "CustomerLifetimeValue", 1, 0, 0)
    assert (
        "100% of the purchases have no amount in field 'amount' of activity 'orders' (column currency of "
        "shop.orders), at most 20% may: field 'amount' of activity 'orders' (column currency of shop.orders) holds "
        "text that is no number in 2 of 2 purchases, for example 'USD'"
    ) in str(caught.value)


def test_the_share_with_two_or_more_purchases_counts_purchase_days_not_rows():
    day = pd.Timestamp("2026-01-05T09:00:00Z")
    rows = pd.DataFrame(
        {
            # a: two lines of one order (one day); b: two days; c: a purchase and a return on another day.
            "CustomerId": pd.array(["a", "a", "b", "b", "c", "c"], dtype="string"),
            "Time": [
                day,
                day + pd.Timedelta(hours=3),
                day,
                day + pd.Timedelta(days=2),
                day,
                day + pd.Timedelta(days=9),
            ],
            "Amount": [10.0, 5.0, 20.0, 30.0, 40.0, -40.0],
        }
    )
    report = usability(rows, rows["CustomerId"])
    assert report.purchases == 6 and report.purchasers == 3
    assert report.share_two_or_more_purchases == round(1 / 3, 4)


def test_a_return_is_not_a_purchase_for_the_label_or_the_btyd_summary():
    day = pd.Timestamp("2026-01-01T00:00:00Z")
    purchases = pd.DataFrame(
        {
            "CustomerId": pd.array(["a", "a", "b", "r"], dtype="string"),
            "Time": [day, day + pd.Timedelta(days=40), day, day + pd.Timedelta(days=5)],
            "Amount": [100.0, -100.0, 30.0, -20.0],
        }
    )
    customers = pd.Index(["a", "b", "r"], dtype="string")
    count, amount = future_purchases(purchases, customers, day + pd.Timedelta(days=1), 60)
    # "a" only brought something back: not a purchase, but the refund lowers the value of the window.
    assert count.tolist() == [0, 0, 0] and amount.tolist() == [-100.0, 0.0, -20.0]
    # A customer with only a return has not bought anything.
    assert purchasers_at(purchases, day + pd.Timedelta(days=60)).tolist() == ["a", "b"]
    summary = btyd.rfm_summary(purchases, customers, day + pd.Timedelta(days=60))
    assert summary.loc["a", "x"] == 0 and summary.loc["a", "t_x"] == 0


def test_a_customer_buying_less_often_lately_has_a_low_recent_rate_ratio():
    day = pd.Timestamp("2025-01-01T00:00:00Z")
    steady = [day + pd.Timedelta(days=30 * k) for k in range(18)]
    fading = [day + pd.Timedelta(days=30 * k) for k in range(12)] + [day + pd.Timedelta(days=450)]
    purchases = pd.DataFrame(
        {
            "CustomerId": pd.array(["steady"] * len(steady) + ["fading"] * len(fading) + ["new"], dtype="string"),
            "Time": steady + fading + [day + pd.Timedelta(days=500)],
            "Amount": 10.0,
        }
    )
    X = purchase_features(
        purchases, pd.Index(["steady", "fading", "new"], dtype="string"), day + pd.Timedelta(days=520)
    )
    assert X.loc["steady", "recent_rate_ratio"] == pytest.approx(1.0, abs=0.25)
    assert X.loc["fading", "recent_rate_ratio"] < 0.5
    assert np.isnan(X.loc["new", "recent_rate_ratio"])
    assert describe("recent_rate_ratio", X["recent_rate_ratio"])[2] == "first purchase in the last 180 days"


def measure_facts(purchases: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ActivityId": [f"o{i}" for i in range(len(purchases))],
            "CustomerId": purchases["CustomerId"].astype("string").to_numpy(),
            "Activity": "orders",
            "ActivityType": "SalesOrder",
            "ActivityTimeStamp": purchases["Time"].to_numpy(),
            "amount": purchases["Amount"].to_numpy(),
        }
    ).astype({"Activity": "string", "ActivityType": "string"})


MEASURES = MeasuresConfig.model_validate(
    {
        "attributes": {
            "spend": {"activity": "orders", "aggregate": "sum", "field": "amount"},
            "orders": {"activity": "orders", "aggregate": "count"},
            "average_order": {"expression": "spend / orders"},
            "unused": {"activity": "orders", "aggregate": "max", "field": "amount"},
        }
    }
)


def test_measures_are_recomputed_at_the_cutoff_and_read_nothing_after_it():
    purchases = synthetic.purchases(customers=80)
    customers = purchasers_at(purchases, CUTOFF)
    context = Context(measures=Measures(MEASURES, measure_facts(purchases)), measure_fields=("average_order",))
    X = context.features(purchases, customers, CUTOFF)
    past = purchases[purchases["Time"] <= CUTOFF].groupby("CustomerId")["Amount"]
    expected = (past.sum() / past.size()).reindex(customers)
    np.testing.assert_allclose(X["measure.average_order"].to_numpy(), expected.to_numpy())
    # Everything after the cutoff moved, re-priced, deleted or added: the measure at the cutoff stays the same.
    later = purchases["Time"] > CUTOFF
    altered = pd.concat(
        [
            purchases[~later],
            purchases[later].assign(Amount=lambda f: f["Amount"] * 7, Time=lambda f: f["Time"] + pd.Timedelta(days=3)),
            purchases[later].head(20).assign(CustomerId=customers[0]),
        ]
    )
    moved = Context(measures=Measures(MEASURES, measure_facts(altered)), measure_fields=("average_order",))
    pd.testing.assert_frame_equal(moved.features(altered, customers, CUTOFF), X)
    assert "measure.unused" in context.available() and "measure.average_order" in context.available()
    assert describe("measure.average_order", X["measure.average_order"].head(1))[0].startswith("measure.average_order")


def test_an_unknown_measure_names_the_measures_there_are():
    purchases = synthetic.purchases(customers=20)
    context = Context(measures=Measures(MEASURES, measure_facts(purchases)), measure_fields=("clv",))
    with pytest.raises(UserError, match=r"no customer measure clv in measures.attributes \(it has average_order, "):
        context.features(purchases, purchasers_at(purchases, CUTOFF), CUTOFF)
    with pytest.raises(UserError, match="measure_fields is set but no measures section"):
        Context(measure_fields=("spend",)).features(purchases, purchasers_at(purchases, CUTOFF), CUTOFF)


def test_encoded_purchases_give_the_same_features_and_rows_without_a_customer_belong_to_no_one():
    purchases = synthetic.purchases(customers=60)
    nobody = purchases.head(5).assign(CustomerId=pd.array([None] * 5, dtype="string"), Amount=1000.0)
    with_nobody = pd.concat([purchases, nobody], ignore_index=True)
    # "zz" sorts after every id: a customer without rows must not take the rows without a CustomerId.
    customers = purchasers_at(purchases, CUTOFF).append(pd.Index(["zz"], dtype="string", name="CustomerId"))
    encoded = Encoded.of(with_nobody)
    assert purchasers_at(encoded, CUTOFF).equals(customers[:-1])
    X = purchase_features(encoded, customers, CUTOFF)
    pd.testing.assert_frame_equal(X, purchase_features(purchases, customers, CUTOFF))
    assert np.isnan(X.loc["zz", "days_since_last_purchase"]) and X.loc["zz", "total_amount"] == 0
    summary = btyd.rfm_summary(encoded, customers, CUTOFF)
    pd.testing.assert_frame_equal(summary, btyd.rfm_summary(purchases, customers, CUTOFF))
    assert summary.loc["zz", "x"] == 0 and not summary.loc["zz", "purchased"]
    count, amount = future_purchases(encoded, customers, CUTOFF - pd.Timedelta(days=400), 1000)
    assert count["zz"] == 0 and amount["zz"] == 0.0


def test_a_training_run_computes_each_cutoffs_features_once(monkeypatch):
    purchases = synthetic.purchases(customers=400)
    cutoffs = []
    original = Context.features

    def counted(self, frame, customers, cutoff):
        cutoffs.append(cutoff)
        return original(self, frame, customers, cutoff)

    monkeypatch.setattr(Context, "features", counted)
    settings = PredictionSettings.model_validate({"minimums": {"churn_customers": 50}, "churn": {"window_days": 60}})
    run_churn(purchases, purchases["CustomerId"], synthetic.END, settings)
    # The backtest's and the final fit's training cutoffs overlap, and the evaluation reads the final fit's first.
    assert len(cutoffs) == len(set(cutoffs)) > 4


def test_customers_without_purchase_are_those_with_only_returns_or_nothing_in_code_point_order():
    purchases = pd.DataFrame(
        {
            "CustomerId": ["b", "a", "é", "z", "a", "late"],
            "Time": pd.to_datetime(["2020-01-01"] * 5 + ["2022-01-01"], utc=True),
            "Amount": [1.0, 1.0, 1.0, -1.0, 2.0, 5.0],  # z only returned something; late bought after the cutoff
        }
    )
    customers = pd.Series(["c", "a", "é", "b", "z", None, "Z", "c", "ä", "aa", "late"], dtype="string")
    got = prior.without_purchase(Encoded.of(purchases), customers, pd.Timestamp("2021-01-01", tz="UTC"))
    assert got.tolist() == ["Z", "aa", "c", "late", "z", "ä"]  # Python's order of code points, each once
    assert got.name == "CustomerId" and isinstance(got.dtype, pd.StringDtype)
    assert prior.without_purchase(purchases, None, pd.Timestamp("2021-01-01", tz="UTC")).empty


def test_a_few_purchases_far_after_the_rest_are_warned_about_when_the_last_purchase_is_the_cutoff():
    # 15 orders typed as September instead of June moved the cutoff three months: everyone looked churned.
    start = pd.Timestamp("1998-01-01T00:00:00Z")
    times = pd.Series(start + pd.to_timedelta(np.arange(20_000) % 181, unit="D"))
    assert stray_last_purchases(times) is None
    assert stray_last_purchases(times.iloc[:300]) is None and stray_last_purchases(times.iloc[:0]) is None
    late = times.copy()
    late.iloc[:15] = pd.Timestamp("1998-09-15T00:00:00Z")
    message = stray_last_purchases(late)
    assert "score at 1998-09-15T00:00:00+00:00, the latest purchase" in message
    assert "15 purchases are dated more than 30 days after 99.9% of the others (which end by 1998-06-30)" in message
    assert "for example 1998-09-15" in message and "set predictions.as_of to the date the data ends" in message
    rows = pd.DataFrame(
        {
            "CustomerId": pd.array([f"c{i % 500}" for i in range(len(late))], dtype="string"),
            "Activity": "orders",
            "ActivityTimeStamp": late,
            "amount": 10.0,
        }
    )
    customers = rows["CustomerId"]
    assert ModelRuns(PredictionSettings(), rows, customers, None, None).warnings(["churn"]) == [message]
    # A date as the cutoff is not moved by them.
    assert (
        ModelRuns(PredictionSettings(), rows, customers, None, pd.Timestamp("1998-07-01", tz="UTC")).warnings(["churn"])
        == []
    )


def test_return_lines_have_a_negative_quantity():
    stamp = pd.Timestamp("2026-01-01T00:00:00Z")
    lines = pd.DataFrame(
        {
            "CustomerId": pd.array(["a"] * 5, dtype="string"),
            "Activity": ["order_lines"] * 5,
            "ActivityTimeStamp": [stamp + pd.Timedelta(days=i) for i in range(5)],
            "product": ["tent", "tent", "mug", "lamp", "stove"],
            "quantity": [2, -2, None, 1, 3],
            "amount": [40.0, -40.0, 5.0, -7.0, 9.0],
            "is_return": [False, False, None, False, True],
        }
    )
    out = lines_from_facts(lines, PurchaseSource(is_return="is_return"))
    # Negative quantity, negative amount and the return flag each mark a return; no quantity counts as one.
    assert out["Quantity"].tolist() == [2.0, -2.0, 1.0, -1.0, -3.0]
    assert lines_from_facts(lines.drop(columns=["quantity", "is_return"]), PurchaseSource())["Quantity"].tolist() == [
        1.0,
        -1.0,
        1.0,
        -1.0,
        1.0,
    ]


def test_exclude_products_that_match_no_product_are_warned_about_in_the_run_log():
    settings = PredictionSettings.model_validate({"recommendation": {"exclude_products": ["SKU-1", "tent"]}})
    runs = ModelRuns(settings, facts(), facts()["CustomerId"], None, None)
    (warning,) = runs.warnings(["recommendation"])
    assert warning.startswith("predictions: predictions.recommendation.exclude_products: 'SKU-1' matches no product")
    assert runs.warnings(["churn"]) == []
