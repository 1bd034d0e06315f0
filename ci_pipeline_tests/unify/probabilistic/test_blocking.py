"""Blocking rules: OR-ed, each pair once, counts per rule, key functions, and the refusal of explosive rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.unify.probabilistic import BlockingRule, SettingsError, block, prepare
from ci_pipeline.unify.probabilistic.blocking import soundex

RECORDS = pd.DataFrame(
    {
        "first": ["ann", "ann", "anne", "bob", "smith", None],
        "last": ["lee", "lee", "lee", "ray", "bob", "lee"],
        "dob": ["1980-01-02", "1980-01-02", "1980-05-05", "1970-01-01", "1971-02-02", "1980-09-09"],
        "src": ["a", "b", "a", "b", "a", "b"],
    },
    dtype="string",
)


def rules(*specs) -> tuple[BlockingRule, ...]:
    return tuple(BlockingRule.parse(s, f"blocking[{i}]") for i, s in enumerate(specs))


def pairs(blocked) -> list[tuple[int, int]]:
    return list(zip(blocked.left.tolist(), blocked.right.tolist(), strict=True))


def test_rules_are_ored_and_a_pair_found_twice_is_scored_once():
    table = prepare(RECORDS, ["first", "last", "dob"])
    blocked = block(table, rules(["first", "last"], ["last", "year(dob)"]), 100, link_only=False)
    # first+last: (0,1). last+year: (0,1) again, (0,2), (1,2), (0,5), (1,5), (2,5).
    assert pairs(blocked) == [(0, 1), (0, 2), (0, 5), (1, 2), (1, 5), (2, 5)]
    assert [(c.rule, c.pairs, c.new) for c in blocked.counts] == [
        ("first & last", 1, 1),
        ("last & year(dob)", 6, 5),
    ]
    assert blocked.rule.tolist() == [0, 1, 1, 1, 1, 1]


def test_a_rules_codes_are_made_once_per_table_and_kept_read_only():
    table = prepare(RECORDS, ["first", "last", "dob"])
    (rule,) = rules(["last", "year(dob)"])
    codes = rule.codes(table)
    # lee: 1980 (0, 1, 2, 5) is one code; ray 1970 and bob 1971 others.
    assert codes.tolist() == [0, 0, 0, 1, 2, 0]
    assert rule.codes(table) is codes and BlockingRule.parse(["last", "year(dob)"], "b").codes(table) is codes
    with pytest.raises(ValueError, match="read-only"):
        codes[0] = 5
    # Another table of the same records makes its own, equal codes.
    other = prepare(RECORDS, ["last", "dob"])
    assert rule.codes(other) is not codes and rule.codes(other).tolist() == codes.tolist()


def test_a_null_key_never_pairs():
    table = prepare(RECORDS, ["first"])
    blocked = block(table, rules("first"), 100, link_only=False)
    assert pairs(blocked) == [(0, 1)]


def test_link_only_pairs_records_of_different_sources():
    table = prepare(RECORDS, ["last"], source="src")
    blocked = block(table, rules("last"), 100, link_only=True)
    # lee: a = {0, 2}, b = {1, 5}: four cross pairs; never (0, 2) nor (1, 5).
    assert pairs(blocked) == [(0, 1), (0, 5), (1, 2), (2, 5)]
    assert blocked.counts[0].pairs == 4


def test_key_functions():
    table = prepare(RECORDS, ["first", "last"])
    assert pairs(block(table, rules("prefix(first, 3)"), 100, link_only=False)) == [(0, 1), (0, 2), (1, 2)]
    # Names in either order: "bob ray" (3) and "smith bob" (4) do not agree; first/last swapped would.
    frame = pd.DataFrame({"f": ["ann", "lee", "ann"], "l": ["lee", "ann", "kay"]}, dtype="string")
    swapped = prepare(frame, ["f", "l"])
    assert pairs(block(swapped, rules("unordered(f, l)"), 100, link_only=False)) == [(0, 1)]


def test_the_nickname_key_folds_every_word_to_its_formal_name():
    frame = pd.DataFrame({"f": ["bob", "robert", "rob", "ann", "bobby lee", "robert lee", None]}, dtype="string")
    table = prepare(frame, ["f"])
    # Bob, Rob and Robert are one name; so are "bobby lee" and "robert lee"; Ann and the missing name pair with none.
    assert pairs(block(table, rules("nickname(f)"), 100, link_only=False)) == [(0, 1), (0, 2), (1, 2), (4, 5)]
    assert BlockingRule.parse("nickname(f)", "blocking[0]").keys[0].columns == ("f",)


def test_soundex():
    assert soundex(["robert", "rupert", "ashcraft", "tymczak", "pfister", "lee smith", "42"]) == [
        "r163",
        "r163",
        "a261",
        "t522",
        "p236",
        "l000",
        None,
    ]


def test_an_exploding_rule_is_refused_with_its_count_and_value():
    frame = pd.DataFrame({"country": ["us"] * 2000, "email": [f"p{i}@x.com" for i in range(2000)]}, dtype="string")
    table = prepare(frame, ["country", "email"])
    with pytest.raises(SettingsError) as caught:
        block(table, rules("email", "country"), 10_000, link_only=False)
    message = str(caught.value)
    assert "blocking[1] [country] would generate 1,999,000 pairs" in message
    assert "country='us'" in message and "limit of 10,000" in message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("metaphone(last)", "unknown blocking function 'metaphone'; use one of prefix"),
        ("soundx(last)", r"unknown blocking function 'soundx' \(did you mean 'soundex'\?\); use one of"),
        ("prefix(last)", r"prefix\(last\): the length is missing; write prefix\(last, 3\) for its first 3 characters"),
        ("prefix(last, x)", r"prefix\(last, x\): 'x' is not a whole number; write prefix\(last, 3\)"),
        ("prefix(last, 0)", r"prefix\(last, 0\): a length of 0 keeps no character \(give 1 or more\); write"),
        ("unordered(last)", r"unordered\(last\): needs two different columns; write unordered\(last, <other column>\)"),
        ("soundex(last, 2)", r"soundex\(last, 2\): soundex takes one column \(one argument\); write soundex\(last\)"),
        ("nickname(last, 2)", r"write nickname\(last\)"),
        ("last, first", "cannot read blocking key"),
        ("prefix(last", "cannot read blocking key"),
        ([], "non-empty list"),
    ],
)
def test_bad_blocking_rules(spec, message):
    with pytest.raises(SettingsError, match=message):
        BlockingRule.parse(spec, "blocking[0]")


def test_a_column_named_with_spaces_is_a_key_alone_and_inside_a_function():
    # Exports name columns "Site name" or "Last Name"; a custom column keeps its own name in the model.
    frame = RECORDS.rename(columns={"last": "Last Name", "first": "First Name"})
    table = prepare(frame, ["First Name", "Last Name"])
    keys = BlockingRule.parse([" Last Name ", "prefix(First Name, 3)"], "blocking[0]").keys
    assert [str(k) for k in keys] == ["Last Name", "prefix(First Name, 3)"]
    assert [k.columns for k in keys] == [("Last Name",), ("First Name",)]
    assert BlockingRule.parse("unordered(First Name, Last Name)", "blocking[1]").keys[0].other == "Last Name"
    spaced = block(table, (BlockingRule(keys),), 100, link_only=False)
    plain = block(prepare(RECORDS, ["first", "last"]), rules(["last", "prefix(first, 3)"]), 100, link_only=False)
    assert pairs(spaced) == pairs(plain) == [(0, 1), (0, 2), (1, 2)]


def test_a_blocking_key_on_a_missing_column_names_it():
    table = prepare(RECORDS, ["first"])
    with pytest.raises(Exception, match="column 'email' is not in the records"):
        block(table, rules("email"), 100, link_only=False)


@pytest.mark.parametrize("link_only", [False, True])
def test_pairs_are_those_of_every_two_records_sharing_a_key(link_only):
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(0, 40))
        keys = rng.integers(0, 5, n).astype(str).astype(object)
        keys[rng.random(n) < 0.2] = None
        frame = pd.DataFrame({"k": pd.array(keys, dtype="string"), "src": rng.choice(["a", "b"], n)})
        table = prepare(frame, ["k"], source="src")
        blocked = block(table, rules("k"), 10_000, link_only=link_only)
        expected = [
            (i, j)
            for i in range(n)
            for j in range(i + 1, n)
            if keys[i] is not None
            and keys[i] == keys[j]
            and (not link_only or frame["src"].iloc[i] != frame["src"].iloc[j])
        ]
        assert pairs(blocked) == expected


def test_each_pair_once_under_the_first_rule_that_finds_it():
    """Several overlapping rules on random keys: every pair any rule finds comes out once, in order, counted
    under the first rule (in the settings' order) that finds it, as a pair-by-pair reference says."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        frame = pd.DataFrame({c: pd.array(rng.integers(0, 4, n).astype(str), dtype="string") for c in "abc"})
        frame.loc[rng.random(n) < 0.15, "b"] = None
        table = prepare(frame, ["a", "b", "c"])
        specs = (["a", "b"], ["c"], ["b", "c"], ["a"])
        blocked = block(table, rules(*specs), 10_000, link_only=False)
        expected = {}
        # The columns as plain values (None where missing): a data frame read a cell at a time was most of the test.
        column = {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in "abc"}
        for index, spec in enumerate(specs):
            for i in range(n):
                for j in range(i + 1, n):
                    values = [(column[c][i], column[c][j]) for c in spec]
                    if all(x is not None and y is not None and x == y for x, y in values):
                        expected.setdefault((i, j), index)
        assert pairs(blocked) == sorted(expected)
        assert blocked.rule.tolist() == [expected[p] for p in sorted(expected)]
        assert [c.new for c in blocked.counts] == [list(expected.values()).count(i) for i in range(len(specs))]


@pytest.mark.parametrize("link_only", [False, True])
def test_blocking_the_touched_records_forms_every_pair_holding_one_under_the_same_rule(link_only):
    """With ``touched``, exactly the pairs of blocking everything that hold a touched record, each under the same
    first rule: what an incremental run scores besides the kept pairs of untouched records."""
    rng = np.random.default_rng(11)
    for _ in range(25):
        n = int(rng.integers(0, 50))
        frame = pd.DataFrame({c: pd.array(rng.integers(0, 4, n).astype(str), dtype="string") for c in "abc"})
        frame.loc[rng.random(n) < 0.2, "b"] = None
        frame["src"] = rng.choice(["x", "y"], n)
        table = prepare(frame, ["a", "b", "c"], source="src")
        specs = rules(["a", "b"], ["c"], ["b", "c"])
        everything = block(table, specs, 10_000, link_only=link_only)
        touched = rng.random(n) < 0.2
        found = block(table, specs, 10_000, link_only=link_only, touched=touched)
        holding = touched[everything.left] | touched[everything.right]
        assert pairs(found) == [p for p, h in zip(pairs(everything), holding, strict=True) if h]
        assert found.rule.tolist() == everything.rule[holding].tolist()


def test_blocking_the_touched_records_when_no_record_holds_a_key():
    frame = pd.DataFrame({"k": pd.array([None, None, None], dtype="string")})
    blocked = block(prepare(frame, ["k"]), rules("k"), 100, link_only=False, touched=np.array([True, False, True]))
    assert pairs(blocked) == []


def test_a_birthday_key_is_the_month_and_day_whatever_the_year_and_unknown_without_them():
    (rule,) = [BlockingRule.parse(["birthday(dob)"], "blocking[0]")]
    dates = ["1959-03-27", "1995-03-27", "1959-04-27", "1843-05-00", None]
    codes = rule.codes(prepare(pd.DataFrame({"dob": pd.Series(dates, dtype="string")}), ["dob"]))
    assert codes[0] == codes[1] and codes[2] not in (codes[0], -1)
    assert (codes[3:] == -1).all()  # a day never written is no birthday
