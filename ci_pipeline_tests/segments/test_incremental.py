"""Segments evaluated again only for the customers whose inputs changed: after a sequence of increments (a profile
attribute, a measure, a prediction, activity rows appended and deleted, customers new and gone) every output
equals evaluating every customer; a changed run date or refreshed static segment evaluates everyone."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.lake import Lake
from ci_pipeline.segments import Reuse, SegmentInputs, evaluate_segments
from ci_pipeline.segments.incremental import aligned, input_digests, read_state, write_state
from ci_pipeline_tests.measures.test_stored_facts import AS_OF, CUSTOMERS, facts, stored

RUN_TIME = pd.Timestamp("2026-06-30T12:00:00", tz="UTC")
SECTION = SegmentsConfig.model_validate(
    {
        "definitions": {
            "gold": {"rules": [{"field": "profile.Tier", "op": "in", "value": ["Gold", "Platinum"]}]},
            "big": {"rules": [{"field": "measure.spend", "op": ">=", "value": 100}]},
            "churny": {"rules": [{"field": "prediction.ChurnScore", "op": ">=", "value": 0.5}]},
            "web_buyers": {
                "rules": [
                    {
                        "activity": "orders",
                        "within": "1 year",
                        "where": [{"field": "channel", "op": "=", "value": "web"}],
                    }
                ]
            },
            "regulars": {"rules": [{"activity": "visits", "count": {"op": ">=", "value": 3}}]},
            "gold_regulars": {"rules": [{"segment": "gold"}, {"combine": "intersect", "segment": "regulars"}]},
            "kept": {"type": "static", "rules": [{"segment": "big"}, {"combine": "except", "segment": "churny"}]},
            "kept_gold": {"rules": [{"segment": "kept"}, {"combine": "intersect", "segment": "gold"}]},
        }
    }
)


def _inputs(customers: pd.Series) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(4)
    n = len(customers)
    ids = pd.Series(customers.to_numpy(), dtype="string")
    profile = pd.DataFrame({"CustomerId": ids, "Tier": rng.choice(["Gold", "Silver", "Platinum", None], n)})
    measures = pd.DataFrame({"CustomerId": ids, "spend": np.round(rng.gamma(2.0, 60.0, n), 2)})
    # Not every customer has a score: the model left some out.
    scored = ids.iloc[::3].reset_index(drop=True)
    predictions = pd.DataFrame({"CustomerId": scored, "ChurnScore": rng.random(len(scored))})
    return {"profile": profile, "measures": measures, "predictions": predictions}


def _run(tables, frame, facts_now, previous, reuse):
    return evaluate_segments(
        SECTION,
        AS_OF,
        SegmentInputs(facts=facts_now, **tables),
        previous_membership=previous[0] if previous else None,
        previous_history=previous[1] if previous else None,
        previous_static=previous[2] if previous else None,
        refresh_static=[],
        provider="test",
        run_time=RUN_TIME,
        reuse=reuse,
    )


def _same(mine, theirs) -> None:
    assert sorted(mine.masks) == sorted(theirs.masks)
    for name, mask in theirs.masks.items():
        assert mine.masks[name].tolist() == mask.tolist(), name
    for table in ("membership", "history", "static"):
        pd.testing.assert_frame_equal(getattr(mine, table), getattr(theirs, table), obj=table)


def _increments(tables: dict, frame: pd.DataFrame):
    """(what, tables, facts): each step changes what the step before it left."""
    tables = {k: v.copy() for k, v in tables.items()}
    tables["profile"].loc[3, "Tier"] = "Platinum" if tables["profile"].loc[3, "Tier"] != "Platinum" else "Silver"
    yield "profile attribute", tables, frame
    tables = {k: v.copy() for k, v in tables.items()}
    tables["measures"].loc[5, "spend"] += 500
    tables["predictions"] = tables["predictions"].iloc[1:].reset_index(drop=True)
    yield "measure and prediction", tables, frame
    added = frame[frame["Activity"] == "visits"].head(6).assign(CustomerId="C09")
    added["ActivityId"] = pd.Series([f"b{i:04d}" for i in range(len(added))], dtype="string")
    appended = pd.concat([frame, added], ignore_index=True)
    yield "activity rows appended", tables, appended
    trimmed = appended[~appended["ActivityId"].isin(appended["ActivityId"].iloc[::11])].reset_index(drop=True)
    yield "activity rows deleted", tables, trimmed
    tables = {k: v[v["CustomerId"] != "C02"].reset_index(drop=True) for k, v in tables.items()}
    new = pd.DataFrame({"CustomerId": pd.Series(["C40"], dtype="string"), "Tier": ["Gold"]})
    tables["profile"] = pd.concat([tables["profile"], new], ignore_index=True)
    yield "customers gone and new", tables, trimmed


@pytest.mark.parametrize("rows_per_part", [10_000, 60])
def test_a_sequence_of_increments_equals_evaluating_every_customer(tmp_path, rows_per_part):
    tables, frame = _inputs(CUSTOMERS), facts()
    first = _run(tables, frame, stored(tmp_path, frame, rows_per_part), None, Reuse(None))
    assert not first.report["incremental"] and first.report["customers_evaluated"] == len(CUSTOMERS)
    _same(first, _run(tables, frame, frame, None, None))
    assert first.masks["kept"].sum() > 0 and first.masks["gold_regulars"].sum() > 0
    # The static segment's members are kept from the first run on, and another segment refers to it: the second
    # run evaluates everyone once more.
    previous = (first.membership, first.history, first.static)
    second = _run(tables, frame, stored(tmp_path, frame, rows_per_part), previous, Reuse(first.state))
    assert not second.report["incremental"] and "static segment" in second.report["reason"]
    _same(second, _run(tables, frame, frame, previous, None))
    state, previous = second.state, (second.membership, second.history, second.static)
    for step, (what, tables_now, frame_now) in enumerate(_increments(tables, frame)):
        facts_now = stored(tmp_path / str(step), frame_now, rows_per_part)
        mine = _run(tables_now, frame_now, facts_now, previous, Reuse(state))
        assert mine.report["incremental"], what
        assert 0 < mine.report["customers_evaluated"] < mine.report["customers"], (what, mine.report)
        _same(mine, _run(tables_now, frame_now, frame_now, previous, None))
        state, previous = mine.state, (mine.membership, mine.history, mine.static)


def test_everyone_is_evaluated_when_the_run_date_changes_or_a_static_segment_is_refreshed(tmp_path):
    tables, frame = _inputs(CUSTOMERS), facts()
    facts_now = stored(tmp_path, frame, 10_000)
    zeroth = _run(tables, frame, facts_now, None, Reuse(None))
    first = _run(tables, frame, facts_now, (zeroth.membership, zeroth.history, zeroth.static), Reuse(zeroth.state))
    previous = (first.membership, first.history, first.static)
    again = _run(tables, frame, facts_now, previous, Reuse(first.state))
    assert again.report["incremental"] and again.report["customers_evaluated"] == 0
    _same(again, _run(tables, frame, frame, previous, None))
    later = evaluate_segments(
        SECTION,
        AS_OF + dt.timedelta(days=1),
        SegmentInputs(facts=facts_now, **tables),
        *previous,
        refresh_static=["kept"],
        provider="test",
        run_time=RUN_TIME,
        reuse=Reuse(first.state),
    )
    assert not later.report["incremental"] and "run date" in later.report["reason"]
    lake = Lake.local(tmp_path / "lake")
    write_state(lake, first.state)
    state, why = read_state(lake)
    assert why == "" and state.masks.equals(first.state.masks)
    lake.write_bytes("ci_pipeline/_state/segments/meta.json", b'{"format": 1, "customers": 2}')
    assert read_state(lake)[0] is None


def test_input_digests_tell_rows_apart_even_of_values_pandas_cannot_hash():
    customers = pd.Index(["a", "b", "c"], dtype="string")
    before = pd.DataFrame({"CustomerId": ["a", "b"], "Tags": [["x"], ["y", "z"]], "Tier": ["Gold", "Silver"]})
    now = before.assign(Tags=[["x"], ["y"]])
    first = input_digests(customers, {"profile": aligned(before, customers)}, None, [])
    second = input_digests(customers, {"profile": aligned(now, customers)}, None, [])
    assert (first["profile"] == second["profile"]).tolist() == [True, False, True]
