"""Measures and segment conditions over the stored facts read in parts of whole customers give exactly what they
give over the whole table: every aggregate and option, the same values, types and row order, the same errors."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.rules import parse_rules
from ci_pipeline.lake import Lake
from ci_pipeline.measures import StoredFacts, compute_measures
from ci_pipeline.measures.facts import INDEXED, FactIndex, run_end
from ci_pipeline.segments.evaluate import SegmentEngine

AS_OF = dt.date(2026, 6, 30)
END = run_end(AS_OF)
#: Customers of the profile; "Z" has activities but is no customer, "C39" has none.
CUSTOMERS = pd.Series([f"C{i:02d}" for i in range(40)], dtype="string")
IDS = pd.Index(sorted(CUSTOMERS), dtype="string")
AGGREGATES = ("sum", "average", "count", "count_distinct", "min", "max", "first", "last", "argmax", "argmin")
DAYS = ("days_since_latest", "days_since_earliest", "span_days")


def facts(rows: int = 400) -> pd.DataFrame:
    """Activities in no customer order, with equal timestamps and amounts (ties), gaps, rows after the run date
    and rows of someone who is not a customer."""
    rng = np.random.default_rng(5)
    owner = np.array([f"C{i:02d}" for i in rng.integers(0, 39, rows)], dtype=object)
    owner[rng.random(rows) < 0.03] = "Z"
    days = rng.integers(-3, 700, rows)
    amount = np.round(rng.gamma(2.0, 30.0, rows), 2)
    amount[rng.random(rows) < 0.1] = np.nan
    amount[rng.random(rows) < 0.2] = 25.0
    points = pd.array(rng.integers(-50, 200, rows), dtype="Int64")
    points[rng.random(rows) < 0.2] = pd.NA
    frame = pd.DataFrame(
        {
            "ActivityId": pd.Series([f"a{i:04d}" for i in range(rows)], dtype="string"),
            "CustomerId": pd.Series(owner, dtype="string"),
            "Activity": pd.Series(rng.choice(["orders", "points", "visits"], rows), dtype="string"),
            "ActivityType": pd.Series(rng.choice(["SalesOrder", "Loyalty", "WebLog"], rows), dtype="string"),
            "ActivityTimeStamp": END - pd.to_timedelta(days, unit="D") - pd.to_timedelta(rng.integers(0, 2, rows), "h"),
            "amount": amount,
            "points": points,
            "channel": pd.Series(rng.choice(["web", "store", "phone", None], rows), dtype="string"),
            "is_return": rng.random(rows) < 0.1,
        }
    )
    return frame


def stored(tmp_path, frame: pd.DataFrame, rows_per_part: int) -> StoredFacts:
    """The frame as a stored table of many small row groups (so it is read in many batches)."""
    lake = Lake.local(tmp_path)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=16)
    lake.write_bytes("facts.parquet", buffer.getvalue())
    return StoredFacts(lake.dataset("facts.parquet"), rows_per_part=rows_per_part)


def config() -> MeasuresConfig:
    attributes = {}
    for how in AGGREGATES:
        field = "channel" if how in ("count_distinct", "first", "last", "argmax", "argmin") else "amount"
        spec = {"activity": "orders", "aggregate": how, "field": field}
        if how in ("argmax", "argmin"):
            spec["order_by"] = "amount"
        attributes[f"a_{how}"] = spec
    for how in DAYS:
        attributes[f"a_{how}"] = {"activity": ["orders", "visits"], "aggregate": how}
    attributes |= {
        "points_sum": {"activity": "points", "aggregate": "sum", "field": "points", "null_value": 0},
        "points_min": {"activity": "points", "aggregate": "min", "field": "points"},
        "returned": {"activity": "orders", "aggregate": "max", "field": "is_return"},
        "web_spend": {
            "activity": "orders",
            "aggregate": "sum",
            "field": "amount",
            "where": [{"field": "channel", "op": "=", "value": "web"}],
            "window": {"last": 6, "unit": "months"},
            "divide_by": 6,
        },
        "monetary": {"template": "rfm_monetary_score", "activity": "orders"},
        "recency": {"template": "rfm_recency_score", "activity": "orders"},
        "per_order": {"expression": "a_sum / a_count"},
    }
    customer = {
        f"c_{how}": {"activity": "orders", "aggregate": how, "field": "amount", "dimensions": ["channel"]}
        for how in ("sum", "count", "max", "last")
    }
    business = {f"b_{how}": dict(attributes[f"a_{how}"]) for how in AGGREGATES}
    business |= {f"b_{how}": {"activity": "orders", "aggregate": how} for how in DAYS}
    business |= {
        f"bd_{how}": {"activity": "orders", "aggregate": how, "field": "amount", "dimensions": ["channel"]}
        for how in AGGREGATES
        if how not in ("argmax", "argmin")
    }
    business |= {
        "this_year": {"activity": "orders", "aggregate": "sum", "field": "amount", "window": {"period": "this_year"}},
        "buyers": {"of_measure": "a_sum", "aggregate": "count"},
        "per_buyer": {"expression": "this_year / buyers"},
    }
    return MeasuresConfig.model_validate(
        {"as_of": AS_OF, "attributes": attributes, "customer": customer, "business": business}
    )


def test_every_measure_over_the_stored_facts_in_parts_equals_the_whole_table(tmp_path):
    frame = facts()
    whole = compute_measures(config(), CUSTOMERS, frame, AS_OF)
    for rows_per_part in (10_000, 80):
        parted = compute_measures(config(), CUSTOMERS, stored(tmp_path, frame, rows_per_part), AS_OF)
        pd.testing.assert_frame_equal(parted.attributes, whole.attributes)
        for name in sorted(whole.customer):
            pd.testing.assert_frame_equal(parted.customer[name], whole.customer[name], obj=name)
        for name in sorted(whole.business):
            pd.testing.assert_frame_equal(parted.business[name], whole.business[name], obj=name)
        assert parted.non_finite == whole.non_finite
    # The data has the cases that tell a wrong combination from the right one.
    assert whole.attributes["a_first"].notna().sum() > 20 and whole.business["bd_last"]["Value"].notna().all()


def test_parts_cover_the_customers_in_order_and_keep_the_table_order(tmp_path):
    frame = facts()
    # A dictionary encoded column (a pandas category) brings a dictionary per row group; parts read its values.
    frame["channel"] = frame["channel"].astype("category")
    parts = list(stored(tmp_path, frame, 60).parts(IDS, END, [*INDEXED, "channel", "absent"]))
    assert len(parts) == 7
    assert pd.Index(np.concatenate([p.customers.to_numpy() for p in parts])).equals(pd.Index(IDS.to_numpy()))
    for part in parts:
        assert set(part.facts["CustomerId"]) <= set(part.customers)
        assert (np.diff(part.positions) > 0).all()
        assert list(part.facts.columns) == [*INDEXED, "channel"] and part.fields == list(frame.columns)
        expected = frame.iloc[part.positions]
        assert part.facts["CustomerId"].tolist() == expected["CustomerId"].tolist()
        assert part.facts["channel"].dtype != "category"
        assert part.facts["channel"].fillna("-").tolist() == expected["channel"].astype(object).fillna("-").tolist()
    kept = FactIndex(frame, IDS, END)
    assert sum(len(p.facts) for p in parts) == len(kept.facts)
    (whole,) = stored(tmp_path, frame, 10_000).parts(IDS, END, [*INDEXED, "channel"])
    assert whole.facts["channel"].dtype == parts[0].facts["channel"].dtype


def test_bad_fields_and_values_are_refused_the_same_over_the_stored_facts(tmp_path):
    frame = facts()
    unknown = MeasuresConfig.model_validate(
        {"as_of": AS_OF, "attributes": {"m": {"activity": "orders", "aggregate": "sum", "field": "amont"}}}
    )
    for source in (frame, stored(tmp_path, frame, 7)):
        with pytest.raises(
            UserError,
            match=r"measures\.attributes\.m: unknown field 'amont' \(did you mean 'amount'\?\); the activity data has ",
        ):
            compute_measures(unknown, CUSTOMERS, source, AS_OF)
    # A text column of numbers with words among them: the count covers every part, not the first one.
    text = frame.assign(amount=frame["amount"].map(lambda v: None if pd.isna(v) else f"{v:g}").astype("string"))
    text.loc[text.index[::40], "amount"] = "n/a"
    summed = MeasuresConfig.model_validate(
        {"as_of": AS_OF, "attributes": {"m": {"activity": "orders", "aggregate": "sum", "field": "amount"}}}
    )
    messages = []
    for source in (text, stored(tmp_path, text, 7)):
        with pytest.raises(UserError, match=r"measures\.attributes\.m: sum needs numbers") as caught:
            compute_measures(summed, CUSTOMERS, source, AS_OF)
        messages.append(str(caught.value).split(", e.g.")[0])
    assert messages[0] == messages[1]


def segment_engine(source, rules: dict, frozen=None) -> SegmentEngine:
    parsed = {name: parse_rules(r, f"segments.definitions.{name}.rules") for name, r in rules.items()}
    return SegmentEngine(IDS, None, None, source, END, parsed, frozen)


def test_activity_conditions_over_the_stored_facts_in_parts_equal_the_whole_table(tmp_path):
    frame = facts()
    rules = {
        "recent": [{"activity": "orders", "within": "90 days"}],
        "regular": [{"activity": "SalesOrder", "count": {"op": ">=", "value": 4}}],
        "web_buyers": [
            {
                "all": [
                    {"activity": "orders", "where": [{"field": "channel", "op": "=", "value": "web"}]},
                    {"not": {"activity": "visits", "within": "1 year", "count": {"op": ">", "value": 2}}},
                ]
            }
        ],
        "no_points": [{"activity": "points", "where": [{"field": "points", "op": ">", "value": 0}]}],
    }
    whole = segment_engine(FactIndex(frame, IDS, END), rules).evaluate_all()
    parted = segment_engine(stored(tmp_path, frame, 7), rules).evaluate_all()
    assert sorted(whole) == sorted(parted)
    for name in whole:
        assert whole[name].tolist() == parted[name].tolist(), name
    assert all(0 < mask.sum() < len(IDS) for mask in whole.values())
    # A frozen segment's rules are not evaluated, so its condition on a field the facts lack is not refused; an
    # evaluated one is, with the key and the fields there are.
    bad = {"bad": [{"activity": "orders", "where": [{"field": "colour", "op": "=", "value": "red"}]}]}
    frozen = segment_engine(stored(tmp_path, frame, 7), {**rules, **bad}, {"bad": pd.Series(["C01"])})
    assert frozen.evaluate_all()["bad"].sum() == 1
    for source in (FactIndex(frame, IDS, END), stored(tmp_path, frame, 7)):
        with pytest.raises(UserError, match=r"segments\.definitions\.bad\.rules\[0\]\.where\[0\]: unknown field"):
            segment_engine(source, bad).evaluate_all()
