"""Segment rules on tiny frames: every operator, AND/OR/NOT, union/intersect/except, references, errors."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.config.checks import segments_problems
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.rules import RuleError, parse_node, parse_rules
from ci_pipeline.measures.compute import FactIndex, run_end
from ci_pipeline.outputs import SEGMENT_MEMBERSHIP_COLUMNS, guid
from ci_pipeline.segments.evaluate import SegmentEngine
from ci_pipeline.segments.membership import (
    follow_retired_ids,
    frozen_members,
    history_rows,
    members_by_segment,
    membership_table,
    static_state,
)
from ci_pipeline.segments.run import parsed_rules

END = run_end(dt.date(2026, 6, 30))
IDS = pd.Index(["A", "B", "C", "D"], dtype="string")


def profile():
    return pd.DataFrame(
        {
            "CustomerId": ["A", "B", "C", "D"],
            "City": ["Seattle", "Boston", "seattle west", None],
            "BirthDate": ["1990-01-01", "1985-05-05", "2001-12-31", None],
            "Created": pd.to_datetime(["2026-06-01", "2024-01-01", "2026-04-15", "2026-06-29"], utc=True),
            "Age": [36, 41, 24, None],
        }
    ).astype({"City": "string", "BirthDate": "string"})


def measures():
    return pd.DataFrame(
        {"CustomerId": ["A", "B", "C", "D"], "spend": [500.0, 50.0, np.nan, 0.0], "orders": [5, 1, 0, 0]}
    )


def facts():
    frame = pd.DataFrame(
        {
            "ActivityId": ["1", "2", "3", "4"],
            "CustomerId": ["A", "A", "B", "C"],
            "Activity": ["orders", "orders", "surveys", "orders"],
            "ActivityType": ["SalesOrder", "SalesOrder", "Feedback", "SalesOrder"],
            "ActivityTimeStamp": pd.to_datetime(["2026-06-20", "2026-01-01", "2026-06-01", "2025-01-01"], utc=True),
            "rating": [np.nan, np.nan, 1.0, np.nan],
        }
    )
    return FactIndex(frame, IDS, END)


def engine(rules: dict, frozen=None):
    parsed = {name: parse_rules(r, f"segments.definitions.{name}.rules") for name, r in rules.items()}
    return SegmentEngine(IDS, profile(), measures(), facts(), END, parsed, frozen)


def members(condition) -> list[str]:
    masks = engine({"s": [condition]}).evaluate_all()
    return list(IDS[masks["s"]])


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "measure.spend", "op": "=", "value": 50}, ["B"]),
        ({"field": "measure.spend", "op": "!=", "value": 50}, ["A", "D"]),
        ({"field": "measure.spend", "op": "<", "value": 50}, ["D"]),
        ({"field": "measure.spend", "op": "<=", "value": 50}, ["B", "D"]),
        ({"field": "measure.spend", "op": ">", "value": 50}, ["A"]),
        ({"field": "measure.spend", "op": ">=", "value": 50}, ["A", "B"]),
        ({"field": "measure.spend", "op": "between", "value": [0, 100]}, ["B", "D"]),
        ({"field": "profile.City", "op": "in", "value": ["Boston", "Seattle"]}, ["A", "B"]),
        ({"field": "profile.City", "op": "not in", "value": ["Boston"]}, ["A", "C"]),
        ({"field": "profile.City", "op": "contains", "value": "SEATTLE"}, ["A", "C"]),
        ({"field": "profile.City", "op": "starts with", "value": "sea"}, ["A", "C"]),
        ({"field": "profile.City", "op": "ends_with", "value": "west"}, ["C"]),
        ({"field": "profile.City", "op": "is null"}, ["D"]),
        ({"field": "measure.spend", "op": "not_null"}, ["A", "B", "D"]),
        ({"field": "profile.Created", "op": "before", "value": "2026-05-01"}, ["B", "C"]),
        ({"field": "profile.Created", "op": "after", "value": dt.date(2026, 6, 1)}, ["D"]),
        ({"field": "profile.Created", "op": "in the last", "value": 30}, ["A", "D"]),
        ({"field": "profile.Created", "op": "in_last", "value": "3 months"}, ["A", "C", "D"]),
        ({"field": "profile.BirthDate", "op": "after", "value": "1989-01-01"}, ["A", "C"]),
        ({"activity": "orders", "within": "30 days"}, ["A"]),
        ({"activity": "SalesOrder"}, ["A", "C"]),
        ({"activity": "orders", "count": {"op": ">=", "value": 2}}, ["A"]),
        ({"activity": "orders", "count": {"op": "=", "value": 0}}, ["B", "D"]),
        ({"activity": "surveys", "where": [{"field": "rating", "op": "<=", "value": 2}]}, ["B"]),
        (
            {
                "all": [
                    {"field": "measure.orders", "op": ">", "value": 0},
                    {"field": "profile.Age", "op": "<", "value": 40},
                ]
            },
            ["A"],
        ),
        (
            {
                "any": [
                    {"field": "measure.orders", "op": ">", "value": 1},
                    {"field": "profile.Age", "op": "<", "value": 30},
                ]
            },
            ["A", "C"],
        ),
        ({"not": {"field": "measure.orders", "op": ">", "value": 0}}, ["C", "D"]),
    ],
)
def test_operators_and_groups(condition, expected):
    assert members(condition) == expected


def test_rules_combine_by_union_intersect_except_and_segments_reference_segments():
    rules = {
        "buyers": [{"field": "measure.orders", "op": ">", "value": 0}],
        "young": [{"field": "profile.Age", "op": "<", "value": 40}],
        "u": [{"segment": "buyers"}, {"combine": "union", "segment": "young"}],
        "i": [{"segment": "buyers"}, {"combine": "intersect", "segment": "young"}],
        "e": [{"segment": "buyers"}, {"combine": "except", "segment": "young"}],
    }
    masks = engine(rules).evaluate_all()
    got = {name: list(IDS[m]) for name, m in masks.items()}
    assert got["u"] == ["A", "B", "C"] and got["i"] == ["A"] and got["e"] == ["B"]


def test_masks_are_shared_across_segments():
    cond = {"field": "measure.spend", "op": ">", "value": 10}
    eng = engine({f"s{i}": [{"all": [cond, {"activity": "orders", "within": 90}]}] for i in range(50)})
    eng.evaluate_all()
    assert eng.conditions_evaluated == 2


def test_user_strings_are_values_never_code():
    assert members({"field": "profile.City", "op": "=", "value": "__import__('os').system('echo hi')"}) == []


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"field": "profile.Nope", "op": "=", "value": "x"}, "unknown profile attribute 'Nope'"),
        ({"field": "measure.spend", "op": ">", "value": "a lot"}, "is a number but the value 'a lot' is not"),
        ({"field": "profile.City", "op": "after", "value": "2026-01-01"}, "profile.City is text, not a date"),
        ({"field": "profile.City", "op": "=", "value": dt.date(2026, 1, 1)}, "profile.City is text, not a date"),
        ({"field": "profile.Created", "op": "=", "value": "soon"}, "is a date but the value 'soon' is not"),
        ({"field": "measure.spend", "op": "contains", "value": "5"}, "needs a text field"),
        (
            {"field": "profile.City", "op": ">=", "value": 5},
            "profile.City holds text (such as 'Seattle'), not numbers, so >= cannot compare it with a number",
        ),
        ({"field": "profile.BirthDate", "op": "between", "value": [1, 9]}, "holds text (such as '1990-01-01')"),
    ],
)
def test_type_mismatches_and_unknown_fields_name_the_key(condition, message):
    with pytest.raises(UserError, match="segments.definitions.s.rules\\[0\\]") as err:
        members(condition)
    assert message in str(err.value)


def test_an_unknown_enrichment_field_is_named_with_the_near_miss_among_that_enrichments_fields():
    fields = pd.DataFrame(
        {"CustomerId": list(IDS), "email.Class": "FreeMail", "email.Domain": "x.example", "address.City": "Oslo"}
    )
    parsed = {"s": parse_rules([{"field": "enrichment.email.class", "op": "=", "value": "FreeMail"}], "k.rules")}
    eng = SegmentEngine(IDS, profile(), measures(), facts(), END, parsed, None, enrichments=fields)
    with pytest.raises(UserError) as err:
        eng.evaluate_all()
    assert str(err.value) == (
        "k.rules[0].field: unknown enrichment field 'email.class' (did you mean 'email.Class'?); available: "
        "email.Class, email.Domain"
    )


def test_a_profile_date_column_read_back_from_the_lake_is_compared_as_dates():
    # Parquet dates come back from the lake as Python dates; a customer whose date is known in part has none.
    born = pd.Series([dt.date(1990, 1, 1), dt.date(1643, 5, 5), None, dt.date(2001, 12, 31)], dtype=object)
    rules = {
        "after": parse_rules([{"field": "profile.BirthDate", "op": "after", "value": "1989-01-01"}], "s.rules"),
        "known": parse_rules([{"field": "profile.BirthDate", "op": "is not null"}], "s.rules"),
    }
    engine = SegmentEngine(IDS, profile().assign(BirthDate=born), measures(), facts(), END, rules, None)
    masks = engine.evaluate_all()
    assert list(IDS[masks["after"]]) == ["A", "D"] and list(IDS[masks["known"]]) == ["A", "B", "D"]


def test_a_profile_attribute_of_numbers_written_as_text_is_ordered_as_numbers():
    # Profile attributes are text: a custom column of points reads "120", and 120 > 9 where "120" < "9".
    points = pd.Series(["120", "9", None, "40"], dtype="string")
    rules = {"s": parse_rules([{"field": "profile.Points", "op": ">", "value": 10}], "segments.definitions.s.rules")}
    masks = SegmentEngine(IDS, profile().assign(Points=points), measures(), facts(), END, rules, None).evaluate_all()
    assert list(IDS[masks["s"]]) == ["A", "D"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"field": "profile.City", "op": "~="}, "rules[0].op: unknown operator '~='"),
        ({"field": "City", "op": "=", "value": 1}, "rules[0].field: 'City' names no known field"),
        ({"field": "profile.City", "op": "between", "value": 1}, "between needs a list of two"),
        ({"all": [{"field": "profile.City", "op": "in", "value": "x"}]}, "rules[0].all[0]: operator in needs a list"),
        ({"activity": "orders", "within": "soon"}, "rules[0].within"),
        ({"activity": "orders", "colour": "red"}, "rules[0].colour: unknown key"),
        ({"wat": 1}, "rules[0]: a condition has"),
        ({"field": "enrichment.x", "op": ">", "value": 1}, "write enrichment.<enrichment name>.<field>"),
    ],
)
def test_bad_rules_are_reported_with_their_key_path(raw, message):
    with pytest.raises(RuleError) as err:
        parse_rules([raw], "segments.definitions.s.rules")
    assert message in str(err.value)


def test_config_problems_unknown_segment_measure_activity_and_cycles():
    from types import SimpleNamespace

    from ci_pipeline.config.measures import MeasuresConfig

    segments = SegmentsConfig.model_validate(
        {
            "definitions": {
                "a": {"rules": [{"segment": "b"}]},
                "b": {"rules": [{"segment": "c"}, {"combine": "except", "segment": "a"}]},
                "c": {"rules": [{"segment": "ghost"}]},
                "d": {"rules": [{"field": "measure.nope", "op": "=", "value": 1}]},
                "e": {"rules": [{"activity": "nowhere"}]},
                "f": {"rules": [{"field": "measure.spend", "op": ">", "value": "2026-01-01"}]},
                "g": {"rules": [{"field": "measure.spend", "op": "after", "value": "2026-01-01"}]},
            }
        }
    )
    measures = MeasuresConfig.model_validate(
        {"attributes": {"spend": {"aggregate": "sum", "field": "amount", "activity": "orders"}}}
    )
    project = SimpleNamespace(
        unify=object(), segments=segments, measures=measures, activities=SimpleNamespace(tables={}), sources={}
    )
    problems = segments_problems(project)
    text = "\n".join(problems)
    assert "segments.definitions.a: segments reference each other in a cycle a -> b -> a" in text
    assert "segments.definitions.c.rules[0].segment: unknown segment 'ghost'" in text
    assert "segments.definitions.d.rules[0].field: unknown measure 'nope'" in text
    assert "segments.definitions.e.rules[0].activity: unknown activity 'nowhere'" in text
    assert "segments.definitions.f.rules[0].value: measure spend is a number" in text
    assert "segments.definitions.g.rules[0].op: after does not apply to measure spend" in text


def test_membership_table_history_and_static_state():
    masks = engine(
        {
            "buyers": [{"field": "measure.orders", "op": ">", "value": 0}],
            "young": [{"field": "profile.Age", "op": "<", "value": 40}],
        }
    ).evaluate_all()
    table = membership_table(IDS, masks, "proj", "Customer", "Segments")
    assert list(table.columns) == SEGMENT_MEMBERSHIP_COLUMNS
    assert table["CustomerId"].tolist() == ["A", "B", "C"]
    assert [json.loads(s) for s in table["Segments"]] == [["buyers", "young"], ["buyers"], ["young"]]
    assert table["msdynci_identifier"].iloc[0] == "A|proj|Customer|Segments"
    assert table["msdynci_segmentmembershipid"].iloc[0] == guid("A|proj|Customer|Segments")

    previous = members_by_segment(table.iloc[1:])
    history = history_rows(pd.Timestamp("2026-07-01", tz="UTC"), IDS, masks, previous)
    assert history[["Segment", "Members", "Added", "Removed"]].values.tolist() == [
        ["buyers", 2, 1, 0],
        ["young", 2, 1, 0],
    ]
    gone = history_rows(pd.Timestamp("2026-07-02", tz="UTC"), IDS, {"young": masks["young"]}, members_by_segment(table))
    assert gone[["Segment", "Members", "Added", "Removed"]].values.tolist() == [["buyers", 0, 0, 2], ["young", 2, 0, 0]]

    state = static_state(IDS, masks, ["buyers"], None, pd.Timestamp("2026-07-01", tz="UTC"))
    assert state["CustomerId"].tolist() == ["A", "B"]
    kept = engine({"buyers": [{"field": "measure.orders", "op": ">", "value": 100}]}, frozen_members(state))
    assert list(IDS[kept.evaluate_all()["buyers"]]) == ["A", "B"]


def test_a_frozen_member_whose_id_was_retired_stays_with_their_records():
    at = pd.Timestamp("2026-07-01", tz="UTC")
    state = pd.DataFrame(
        {"Segment": ["loyal", "loyal", "loyal", "loyal", "vip"], "CustomerId": ["A", "X", "Y", "R", "X"]}
    ).assign(FrozenAt=at)
    log = pd.DataFrame(
        {
            # Run 2: X merged into B (most of its records; one went to C); Y into Z; R's records are gone.
            # Run 3: Z merged into A.
            "Run": [2, 2, 2, 2, 3],
            "OldCustomerId": ["X", "X", "Y", "R", "Z"],
            "NewCustomerId": ["C", "B", "Z", None, "A"],
            "Reason": ["merged", "merged", "merged", "removed", "merged"],
            "Records": [1, 2, 1, 3, 2],
        }
    )
    current = pd.Series(["A", "B", "C", "D"], dtype="string")
    followed = follow_retired_ids(state, log, current)
    # X follows to B in both segments; Y to A through Z (a member already: a member once); R stays and drops out
    # with its customer; each row keeps the id it was frozen under and when.
    assert followed[["Segment", "CustomerId", "FrozenCustomerId"]].values.tolist() == [
        ["loyal", "A", "A"],
        ["loyal", "A", "Y"],
        ["loyal", "B", "X"],
        ["loyal", "R", "R"],
        ["vip", "B", "X"],
    ]
    assert (followed["FrozenAt"] == at).all()
    assert frozen_members(followed)["loyal"].tolist() == ["A", "B", "R"]
    # Run 4 undoes the merge of X: X is given back to its records (a customer again), so the member is X, not B.
    undone = follow_retired_ids(followed, log, pd.Series(["A", "B", "C", "D", "X"], dtype="string"))
    assert undone[undone["FrozenCustomerId"] == "X"]["CustomerId"].tolist() == ["X", "X"]
    # Run 5 removes X after it was given back: its last change is a removal, it no longer follows the old merge.
    log5 = pd.concat([log, pd.DataFrame({"Run": [5], "OldCustomerId": ["X"], "Reason": ["removed"], "Records": [3]})])
    assert follow_retired_ids(undone, log5, current)["CustomerId"].tolist() == ["A", "A", "R", "X", "X"]


def test_an_empty_segment_whose_value_is_held_in_another_case_says_so():
    from ci_pipeline.segments.run import SegmentInputs, case_hints

    tiers = profile().assign(Tier=["Gold", "Platinum", "Gold", None])
    section = SegmentsConfig.model_validate(
        {
            "definitions": {
                "slip": {"rules": [{"field": "profile.Tier", "op": "in", "value": ["gold", "platinum"]}]},
                "fine": {"rules": [{"field": "profile.Tier", "op": "=", "value": "Gold"}]},
                "none": {"rules": [{"field": "profile.Tier", "op": "=", "value": "Bronze"}]},
            }
        }
    )
    hints = case_hints(section, ["slip", "none"], SegmentInputs(profile=tiers))
    assert hints == {"slip": "profile.Tier holds 'Gold', not 'gold' (values are compared as written)"}


def test_rfm_templates_parse():
    config = SegmentsConfig.model_validate({"definitions": {"champions": {"template": "rfm_champions"}}})
    assert parsed_rules(config)["champions"][0].node.items[0].name == "rfm_recency_score"
    with pytest.raises(RuleError):
        parse_node({"segment": 3}, "k")


def test_the_run_summary_gives_each_segments_size_and_change_capped_when_there_are_many():
    from ci_pipeline.commands.run import segment_lines
    from ci_pipeline.segments.membership import HISTORY_COLUMNS, run_sizes

    t1, t2 = pd.Timestamp("2026-06-01", tz="UTC"), pd.Timestamp("2026-06-02", tz="UTC")
    history = pd.DataFrame(
        [(t1, "gone", 4, 4, 0), (t1, "vip", 1500, 1500, 0), (t2, "vip", 1488, 3, 15), (t2, "fresh", 9, 9, 0)],
        columns=HISTORY_COLUMNS,
    )
    sizes = run_sizes(history)
    assert sizes.to_dict("list") == {
        "Segment": ["vip", "fresh"],
        "Members": [1488, 9],
        "Added": [3, 9],
        "Removed": [15, 0],
        # A segment the last run did not have grew from nothing.
        "Change": [-12, 9],
    }
    assert run_sizes(history[history["RunTime"] == t1])["Change"].isna().all()
    rows = [{"segment": f"s{i:02d}", "members": 1000 * i, "change": i - 1} for i in range(25)]
    lines = segment_lines(rows)
    assert lines[1:4] == [
        f"s00{' ' * 49} {0:>10} {'-1':>8}",
        f"s01{' ' * 49} {1000:>10,} {'0':>8}",
        f"s02{' ' * 49} {'2,000':>10} {'+1':>8}",
    ]
    assert (
        len(lines) == 22
        and lines[-1] == "... and 5 more segment(s): every one in the metadata of segments/segment_membership"
    )
