"""Measures computed again only for the affected customers: which customers are affected, how stored and fresh rows
are merged, when the stored values may not be reused, and that a sequence of increments (rows appended, changed,
deleted, moved by a merge of customers, customers new and gone) gives exactly what computing everyone gives."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.grammar.conditions import Condition
from ci_pipeline.lake import Lake
from ci_pipeline.measures import compute_measures
from ci_pipeline.measures.incremental import (
    META_FILE,
    affected_customers,
    compute_incremental,
    merge_rows,
    read_state,
    write_state,
)
from ci_pipeline_tests.measures.test_stored_facts import AS_OF, CUSTOMERS, config, facts, stored


def _digests(rows: dict[str, tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "CustomerId": pd.Series(list(rows), dtype="string"),
            "digest": [d for d, _ in rows.values()],
            "rows": [n for _, n in rows.values()],
        }
    )


def test_affected_customers_are_the_new_ones_and_those_whose_rows_differ():
    ids = pd.Index(["a", "b", "c", "d", "e", "f"], dtype="string")
    big = 2**62 + 12345
    before = _digests({"a": (big, 3), "b": (7, 2), "c": (9, 1), "e": (4, 4), "x": (1, 1)})
    now = _digests({"a": (big + 1, 3), "b": (7, 2), "d": (5, 1), "e": (4, 5), "f": (6, 1)})
    known = pd.Index(["a", "b", "c", "d", "e", "x"])
    # a: one changed row (digests close to 2**63 differ in their last bit); c: lost every row (moved away by a split
    # or deleted); d: rows moved to it; e: one row more; f: new to the profile. b is untouched, x is gone.
    assert list(affected_customers(ids, now, before, known)) == ["a", "c", "d", "e", "f"]
    # A customer without activity either time, known before, is not affected.
    assert list(affected_customers(pd.Index(["z"], dtype="string"), now, before, pd.Index(["z"]))) == []


def test_merge_keeps_untouched_customers_replaces_affected_and_drops_the_gone():
    stored_rows = pd.DataFrame(
        {
            "CustomerId": pd.Series(["a", "a", "b", "c", "d"], dtype="string"),
            "channel": pd.Series(["web", "store", "web", "web", "web"], dtype="string"),
            "Value": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    fresh = pd.DataFrame(
        {
            "CustomerId": pd.Series(["e", "b"], dtype="string"),
            "channel": pd.Series(["web", "store"], dtype="string"),
            "Value": [6.0, 7.0],
        }
    )
    ids = pd.Index(["a", "b", "d", "e"], dtype="string")
    # d is affected and lost its rows; c left the profile.
    merged = merge_rows(stored_rows, fresh, ids, pd.Index(["b", "d", "e"]), ["CustomerId", "channel"])
    assert merged.to_dict("list") == {
        "CustomerId": ["a", "a", "b", "e"],
        "channel": ["store", "web", "store", "web"],
        "Value": [2.0, 1.0, 7.0, 6.0],
    }
    assert merged["channel"].dtype == "string"


def _assert_same(mine, theirs) -> None:
    pd.testing.assert_frame_equal(mine.attributes, theirs.attributes)
    for kind in ("customer", "business"):
        for name, table in getattr(theirs, kind).items():
            pd.testing.assert_frame_equal(getattr(mine, kind)[name], table, obj=name)
    assert mine.non_finite == theirs.non_finite


def _increments(frame: pd.DataFrame, customers: pd.Series):
    """A sequence of (description, facts, customers): each step changes what the step before it left."""
    rng = np.random.default_rng(11)
    added = frame.sample(12, random_state=3).assign(
        ActivityId=pd.Series([f"b{i:04d}" for i in range(12)], dtype="string"),
        amount=np.round(rng.gamma(2.0, 30.0, 12), 2),
    )
    appended = pd.concat([frame, added], ignore_index=True).sort_values("ActivityId", ignore_index=True)
    yield "append", appended, customers
    changed = appended.copy()
    changed.loc[changed["CustomerId"] == "C05", "amount"] *= 2
    changed.loc[changed.index[7], "channel"] = "store"
    yield "change", changed, customers
    deleted = changed[~changed["ActivityId"].isin(changed["ActivityId"].iloc[::9])].reset_index(drop=True)
    yield "delete", deleted, customers
    # C07 merged into C03 (its rows move, it leaves the profile); C40 is new, without activity; C41 is new with some.
    merged = deleted.assign(CustomerId=deleted["CustomerId"].replace({"C07": "C03", "C12": "C41"}))
    profile = pd.concat([customers[customers != "C07"], pd.Series(["C40", "C41"], dtype="string")], ignore_index=True)
    yield "merge", merged, profile


@pytest.mark.parametrize("rows_per_part", [10_000, 90])
def test_a_sequence_of_increments_equals_computing_every_customer(tmp_path, rows_per_part):
    section = config()
    first, state, report = compute_incremental(
        section, CUSTOMERS, stored(tmp_path, facts(), rows_per_part), AS_OF, None
    )
    assert not report["incremental"] and report["reason"] == "no state of an earlier run"
    _assert_same(first, compute_measures(section, CUSTOMERS, facts(), AS_OF))
    for step, (what, frame, customers) in enumerate(_increments(facts(), CUSTOMERS)):
        facts_now = stored(tmp_path / str(step), frame, rows_per_part)
        mine, state, report = compute_incremental(section, customers, facts_now, AS_OF, state)
        assert report["incremental"], what
        assert 0 < report["customers_computed"] < report["customers"], (what, report)
        _assert_same(mine, compute_measures(section, customers, frame, AS_OF))


def test_stored_values_are_not_reused_when_the_run_date_or_the_measures_change(tmp_path):
    frame, section = facts(), config()
    _, state, _ = compute_incremental(section, CUSTOMERS, stored(tmp_path, frame, 10_000), AS_OF, None)
    later = AS_OF + dt.timedelta(days=1)
    result, _, report = compute_incremental(section, CUSTOMERS, stored(tmp_path, frame, 10_000), later, state)
    assert not report["incremental"] and "run date" in report["reason"]
    assert report["customers_computed"] == len(CUSTOMERS)
    _assert_same(result, compute_measures(section, CUSTOMERS, frame, later))
    other = section.model_copy(update={"customer": {}})
    _, _, report = compute_incremental(other, CUSTOMERS, stored(tmp_path, frame, 10_000), AS_OF, state)
    assert not report["incremental"] and "configuration" in report["reason"]


def test_the_state_is_kept_in_the_lake_and_a_damaged_one_is_not_used(tmp_path):
    frame, section = facts(), config()
    lake = Lake.local(tmp_path / "lake")
    state, why = read_state(lake)
    assert state is None and "no state of an earlier run" in why
    _, kept, _ = compute_incremental(section, CUSTOMERS, stored(tmp_path, frame, 10_000), AS_OF, None)
    write_state(lake, kept)
    state, why = read_state(lake)
    assert why == "" and list(state.values.customer) == sorted(section.customer)
    pd.testing.assert_frame_equal(state.values.raw, kept.values.raw)
    changed = frame.assign(amount=frame["amount"].where(frame["CustomerId"] != "C02", 1.0))
    mine, _, report = compute_incremental(section, CUSTOMERS, stored(tmp_path / "2", changed, 10_000), AS_OF, state)
    assert report["incremental"] and report["customers_computed"] == 1
    _assert_same(mine, compute_measures(section, CUSTOMERS, changed, AS_OF))
    lake.write_bytes(META_FILE, b'{"format": 1, "tables": ["c_sum"], "customers": 3}')
    state, why = read_state(lake)
    assert state is None and "incomplete" in why


def test_an_unchanged_rerun_computes_no_customer_and_still_the_business_measures(tmp_path):
    frame, section = facts(), config()
    facts_now = stored(tmp_path, frame, 10_000)
    _, state, _ = compute_incremental(section, CUSTOMERS, facts_now, AS_OF, None)
    again, _, report = compute_incremental(section, CUSTOMERS, facts_now, AS_OF, dataclasses.replace(state))
    assert report["incremental"] and report["customers_computed"] == 0
    _assert_same(again, compute_measures(section, CUSTOMERS, frame, AS_OF))


def test_an_incremental_run_warns_of_a_filter_that_matches_nothing_in_the_whole_table_only(tmp_path):
    """The changed customers' rows may match none of a filter that other customers' rows match."""
    frame = facts()
    # Nanoseconds, as the activities stage stores the timestamps.
    frame["ActivityTimeStamp"] = frame["ActivityTimeStamp"].dt.as_unit("ns")
    # Only C01 buys by phone; the run after the first changes C02's rows only.
    frame["channel"] = frame["channel"].where((frame["channel"] != "phone") | (frame["CustomerId"] == "C01"), "web")
    frame.loc[frame.index[frame["CustomerId"] == "C01"][0], ["Activity", "channel"]] = ["orders", "phone"]
    section = config().model_copy(update={"customer": {}, "business": {}})
    section.attributes["phone"] = section.attributes["a_count"].model_copy(
        update={"where": [Condition(field="channel", op="=", value="phone")]}
    )
    section.attributes["typo"] = section.attributes["a_count"].model_copy(
        update={"where": [Condition(field="channel", op="=", value="Phone")]}
    )
    first, state, _ = compute_incremental(section, CUSTOMERS, stored(tmp_path, frame, 10_000), AS_OF, None)
    assert [w.split(":")[0] for w in first.warnings] == ["measures.attributes.typo.where[0]"]
    changed = frame.assign(amount=frame["amount"].where(frame["CustomerId"] != "C02", 1.0))
    mine, _, report = compute_incremental(section, CUSTOMERS, stored(tmp_path / "2", changed, 10_000), AS_OF, state)
    assert report["incremental"] and report["customers_computed"] == 1
    assert mine.warnings == first.warnings
    assert "channel holds 'phone', 'store', 'web' there (did you mean 'phone'?)" in mine.warnings[0]
