"""Each comparison level on tiny pairs, and the settings errors a user can make."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.unify.probabilistic import (
    DamerauLevenshteinAtThresholds,
    DateComparison,
    EmailComparison,
    ExactMatch,
    IdentifierComparison,
    JaroWinklerAtThresholds,
    LevenshteinAtThresholds,
    NameComparison,
    PostalCodeComparison,
    Settings,
    SettingsError,
    comparison_from_dict,
    option_path,
    prepare,
)
from ci_pipeline.unify.probabilistic.comparisons import NULL
from ci_pipeline.unify.probabilistic.model import gamma_matrix


def levels(comparison, pairs: list[tuple], other: list[tuple] | None = None) -> list[str]:
    """The level name each (left, right) value pair reaches; ``other`` gives the swap column's values."""
    column = comparison.column
    data = {column: [v for pair in pairs for v in pair]}
    if other is not None:
        data[comparison.swap_with] = [v for pair in other for v in pair]
    table = prepare(pd.DataFrame(data, dtype="string"), list(data))
    left = np.arange(0, 2 * len(pairs), 2)
    gamma = comparison.gamma(table, left, left + 1)
    return ["null" if g == -1 else comparison.levels[g] for g in gamma]


def test_exact_match():
    assert levels(ExactMatch("c"), [("a", "a"), ("a", "b"), ("a", None), (None, None)]) == [
        "exact",
        "else",
        "null",
        "null",
    ]


def test_jaro_winkler_thresholds_pick_the_first_level_reached():
    comparison = JaroWinklerAtThresholds("city", thresholds=(0.95, 0.8))
    # martha/marhta: 0.961; dwayne/duane: 0.84; dixon/dicksonx: 0.813; abc/xyz: 0.
    got = levels(comparison, [("berlin", "berlin"), ("martha", "marhta"), ("dwayne", "duane"), ("abc", "xyz")])
    assert got == ["exact", "jaro_winkler>=0.95", "jaro_winkler>=0.8", "else"]


def test_a_street_is_similar_only_where_its_house_numbers_agree():
    pairs = [("15 new st", "15 new st"), ("15 new st", "15 neww st"), ("15 new st", "10 new st"), ("new st", "new st.")]
    plain = JaroWinklerAtThresholds("street", thresholds=(0.92, 0.8))
    assert levels(plain, pairs) == ["exact", "jaro_winkler>=0.92", "jaro_winkler>=0.92", "jaro_winkler>=0.92"]
    # Neighbours are no typo; a value without a number still compares by its text.
    street = JaroWinklerAtThresholds("street", thresholds=(0.92, 0.8), same_numbers=True)
    assert levels(street, pairs) == ["exact", "jaro_winkler>=0.92", "else", "jaro_winkler>=0.92"]
    assert comparison_from_dict(street.to_dict()) == street
    with pytest.raises(SettingsError, match=r"same_numbers: 'yes' is not a yes or no"):
        comparison_from_dict({"kind": "jaro_winkler", "column": "street", "same_numbers": "yes"}, "comparisons[0]")


def test_levenshtein_and_damerau_levenshtein_differ_on_a_transposition():
    pairs = [("abcd", "abcd"), ("abcd", "abdc"), ("abcd", "abxy"), ("abcd", "wxyz")]
    assert levels(LevenshteinAtThresholds("c", thresholds=(1, 2)), pairs) == [
        "exact",
        "levenshtein<=2",
        "levenshtein<=2",
        "else",
    ]
    assert levels(DamerauLevenshteinAtThresholds("c", thresholds=(1, 2)), pairs) == [
        "exact",
        "damerau_levenshtein<=1",
        "damerau_levenshtein<=2",
        "else",
    ]


def test_name_levels_exact_swapped_nickname_initial_fuzzy():
    comparison = NameComparison("first", swap_with="last")
    first = [("john", "john"), ("john", "smith"), ("bob", "robert"), ("j", "john"), ("jonathan", "jonathon")]
    first.append(("ann", "zoe"))
    last = [("smith", "smith"), ("smith", "john"), ("jones", "jones"), ("doe", "doe"), ("lee", "lee"), ("kay", "kay")]
    assert levels(comparison, first, last) == [
        "exact",
        "swapped",
        "nickname",
        "initial",
        "jaro_winkler>=0.92",
        "else",
    ]


def test_a_nickname_beside_its_formal_name_written_with_one_typing_error_is_a_nickname():
    comparison = NameComparison("first")
    pairs = [("jimmy", "jaems"), ("eilzabeth", "liz"), ("tina", "christiaa"), ("jimmy", "jmaes")]
    # Two errors are another name; a formal name under five letters is another name after one (Molly is Mary).
    pairs += [("jimmy", "jaeems"), ("molly", "mark"), ("jimmy", "jameson")]
    found = levels(comparison, pairs)
    assert found[:4] == ["nickname"] * 4 and "nickname" not in found[4:]


def test_a_swap_of_first_and_last_name_is_counted_once():
    # Both comparisons reach `swapped` on the same pairs: weighed in both, one swap would count twice (on Splink's
    # fake_20000 data +12.0 and +11.7 bits, outweighing birth dates years apart).
    records = pd.DataFrame({"first": ["anna", "berg", "anna"], "last": ["berg", "anna", "holm"]}, dtype="string")
    comparisons = (NameComparison("first", swap_with="last"), NameComparison("last", swap_with="first"))
    gamma = gamma_matrix(prepare(records, ["first", "last"]), comparisons, np.array([0, 0]), np.array([1, 2]))
    swapped, exact = comparisons[0].levels.index("swapped"), comparisons[0].levels.index("exact")
    assert gamma.tolist() == [[swapped, NULL], [exact, comparisons[1].levels.index("else")]]
    # In the other order, the last name weighs the swap.
    gamma = gamma_matrix(prepare(records, ["first", "last"]), comparisons[::-1], np.array([0]), np.array([1]))
    assert gamma.tolist() == [[swapped, NULL]]


def test_name_swap_needs_both_columns_swapped():
    comparison = NameComparison("first", swap_with="last")
    # Only one direction agrees (john = john), the other does not (smith vs brown): no swap.
    got = levels(comparison, [("john", "smith")], [("brown", "john")])
    assert got == ["else"]


def test_date_levels_by_component():
    pairs = [
        ("1980-03-04", "1980-03-04"),
        ("1980-03-04", "1980-04-03"),
        ("19800304", "19800305"),  # one keyed digit
        ("1980-03-04", "1980-03-28"),  # same year and month (two digits differ)
        ("1980-03-04", "1995-03-04"),  # the birthday kept, the year wrong or filled in
        ("1980-03-04", "1980-11-20"),
        ("1980-03-04", "1984-07-20"),
        ("1980-03-04", "2001-07-20"),
        ("1980-03-04", "not a date"),
    ]
    assert levels(DateComparison("dob"), pairs) == [
        "exact",
        "day_month_transposed",
        "one_typo",
        "same_year_month",
        "same_month_day",
        "within_1_year",
        "within_5_years",
        "else",
        "null",
    ]


def test_a_date_known_only_in_part_reaches_the_levels_of_the_parts_both_know():
    # A year alone or a year and month (00 for the part not known, as read_birth_dates writes 1843---- and 1843-05)
    # never agrees exactly: two people born in 1843 are not one birth date; one year is a level of its own.
    pairs = [
        ("1843-00-00", "1843-00-00"),
        ("1843-05-00", "1843-05-17"),
        ("1843-05-00", "1843-05-00"),
        ("1843-00-00", "1843-05-17"),
        ("1843-05-00", "1843-06-00"),
        ("1843-00-00", "1847-00-00"),
        ("1843-00-00", "1850-05-17"),
        ("1843-05-00", "1834-05-00"),
        ("1949-07-13", "1949-00-13"),  # a month keyed 00 before a known day: one typing error
        ("1843-12-00", "1844-01-03"),  # a year apart in whole dates' terms, but not of one year
    ]
    assert levels(DateComparison("dob"), pairs) == [
        "same_year",
        "same_year_month",
        "same_year_month",
        "same_year",
        "same_year",
        "within_5_years",
        "else",
        "else",
        "one_typo",
        "within_1_year",
    ]


def test_date_in_other_formats_goes_through_the_parser():
    assert levels(DateComparison("dob"), [("03/04/1980", "1980-03-04")]) == ["exact"]


def test_identifier_one_typo():
    pairs = [("5304218", "5304218"), ("5304218", "5304228"), ("5304218", "5302418"), ("5304218", "1111111")]
    assert levels(IdentifierComparison("ssn"), pairs) == ["exact", "one_typo", "one_typo", "else"]


def test_email_levels():
    pairs = [
        ("ann@x.com", "ann@x.com"),
        ("ann@x.com", "ann@y.org"),
        ("ann@x.com", "bob@x.com"),
        ("ann@x.com", "bob@y.org"),
    ]
    assert levels(EmailComparison("email"), pairs) == ["exact", "same_user", "same_domain", "else"]


def test_postal_code_levels():
    pairs = [("4223", "4223"), ("4223", "4232"), ("4223", "4299"), ("4223", "5111")]
    assert levels(PostalCodeComparison("zip", prefix_length=2), pairs) == [
        "exact",
        "one_typo",
        "same_prefix_2",
        "else",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "soundalike", "column": "x"}, "unknown comparison kind 'soundalike'"),
        ({"kind": "jaro_winkler", "column": "x", "level": 2}, "unknown key(s) level"),
        ({"kind": "jaro_winkler", "column": "x", "thresholds": [0.8, 0.9]}, "out of order"),
        ({"kind": "jaro_winkler", "column": "x", "thresholds": [1.5]}, "strictly between 0 and 1"),
        ({"kind": "levenshtein", "column": "x", "thresholds": [3, 1]}, "out of order"),
        ({"kind": "levenshtein", "column": "x", "thresholds": [0.5]}, "whole edit distances"),
        ({"kind": "name", "column": "x", "swap_with": "x"}, "names the column itself"),
        ({"kind": "postal_code", "column": "x", "prefix_length": 0}, "prefix_length"),
        ({"kind": "exact"}, "needs 'column'"),
    ],
)
def test_bad_comparisons_are_clear_errors(spec, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        comparison_from_dict(spec, "comparisons[0]")


def test_comparison_round_trips_through_its_description():
    for comparison in (
        NameComparison("first", swap_with="last", term_frequency=True, thresholds=(0.9, 0.8)),
        PostalCodeComparison("zip", prefix_length=2),
        DateComparison("dob"),
    ):
        assert comparison_from_dict(comparison.to_dict()) == comparison


def test_a_comparison_on_a_missing_column_names_it():
    comparisons = [{"kind": "exact", "column": "email"}, {"kind": "date", "column": "dob"}]
    settings = Settings.from_dict({"comparisons": comparisons, "blocking": ["email"]})
    with pytest.raises(SettingsError, match=r"comparison 'dob' reads column 'dob', which is not mapped"):
        settings.check_columns(["email", "name"])


def test_unknown_settings_key_and_duplicate_comparison():
    with pytest.raises(SettingsError, match="treshold: not a setting"):
        Settings.from_dict({"comparisons": [{"kind": "exact", "column": "a"}], "blocking": ["a"], "treshold": 0.5})
    with pytest.raises(SettingsError, match="compared twice"):
        Settings.from_dict({"comparisons": [{"kind": "exact", "column": "a"}] * 2, "blocking": ["a"]})
    with pytest.raises(SettingsError, match="no match probability"):
        Settings.from_dict({"comparisons": [{"kind": "exact", "column": "a"}], "blocking": ["a"], "threshold": 1.5})
    with pytest.raises(SettingsError, match=r"between 0 and 1 \(for 90%, 0.9\)") as raised:
        Settings.from_dict({"comparisons": [{"kind": "exact", "column": "a"}], "blocking": ["a"], "threshold": 90})
    # Told under the key's own path, so that the configuration's error points at its line.
    assert option_path(str(raised.value)).startswith("unify.match.probabilistic.threshold: 90")
    assert option_path("unknown key(s) x, y") == "unify.match.probabilistic: unknown key(s) x, y"
    assert option_path("x: not a setting; ...") == "unify.match.probabilistic.x: not a setting; ..."


def test_a_level_left_out_falls_to_the_next_that_holds():
    comparison = NameComparison("first", without=("nickname",))
    assert comparison.levels == (
        "exact",
        "initial",
        "jaro_winkler>=0.92",
        "jaro_winkler>=0.88",
        "jaro_winkler>=0.7",
        "else",
    )
    # bob / robert: no nickname level any more; their Jaro-Winkler similarity is below 0.7.
    assert levels(comparison, [("bob", "robert"), ("jon", "john")]) == ["else", "jaro_winkler>=0.92"]


def test_an_unknown_level_is_named_with_the_levels_there_are():
    with pytest.raises(SettingsError, match=r"unknown level\(s\) 'nick' in without; a 'name' comparison has levels"):
        comparison_from_dict({"kind": "name", "column": "first", "without": ["nick"]})
    with pytest.raises(SettingsError, match="unknown level"):
        comparison_from_dict({"kind": "date", "column": "dob", "without": ["else"]})


@pytest.mark.parametrize("pairs", [200, 20_000], ids=["hashed", "looked-up"])
def test_levels_per_distinct_value_pair_equal_levels_pair_by_pair(pairs):
    """Levels are computed once per distinct value pair (pairs with a null side not even hashed) or, for the
    cheap comparisons, straight on every pair: either way each pair gets the level of its two values."""
    rng = np.random.default_rng(4)
    words = np.array(["ann", "anne", "bob", "rob", "robert", "lee", "li", "x.y@a.com", "x.y@b.org", "z@a.com"])
    values = [
        None if rng.random() < 0.2 else f"{rng.choice(words)}{rng.integers(0, 9)}{rng.choice(['', 'a'])}"
        for _ in range(300)
    ]
    comparisons = [
        ExactMatch("c"),
        JaroWinklerAtThresholds("c"),
        IdentifierComparison("c"),
        EmailComparison("c"),
        NameComparison("c"),
        PostalCodeComparison("c"),
    ]
    table = prepare(pd.DataFrame({"c": values}, dtype="string"), ["c"])
    left, right = rng.integers(0, 300, pairs), rng.integers(0, 300, pairs)
    codes = table.column("c").codes
    for comparison in comparisons:
        one_by_one = comparison._levels(table, codes[left], codes[right])
        assert np.array_equal(comparison.gamma(table, left, right), one_by_one), comparison.kind
        assert (one_by_one[(codes[left] < 0) | (codes[right] < 0)] == NULL).all()


def test_one_typo_on_digit_strings_is_the_edit_distance_of_one_that_text_gives():
    """Phone numbers and numeric ids are compared as rows of digits; the level is the one rapidfuzz's optimal
    string alignment distance gives on the text: one digit changed, added or dropped, or two neighbours swapped."""
    from rapidfuzz.distance import OSA

    from ci_pipeline.unify.probabilistic.comparisons import _digit_rows, _one_edit_digits

    rng = np.random.default_rng(2)
    originals, typed = [], []
    for _ in range(2000):
        digits = list(map(str, rng.integers(0, 10, rng.integers(1, 19))))
        originals.append("".join(digits))
        edit = rng.integers(0, 5)
        if edit == 0:
            digits[rng.integers(len(digits))] = str(rng.integers(10))
        elif edit == 1 and len(digits) > 1:
            i = rng.integers(len(digits) - 1)
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
        elif edit == 2 and len(digits) < 18:
            digits.insert(rng.integers(len(digits) + 1), str(rng.integers(10)))
        elif edit == 3 and len(digits) > 1:
            del digits[rng.integers(len(digits))]
        typed.append("".join(digits))
    values = np.array(sorted(set(originals + typed)), dtype=object)
    position = {v: i for i, v in enumerate(values)}
    left = np.array([position[v] for v in originals] + list(rng.integers(0, len(values), 5000)))
    right = np.array([position[v] for v in typed] + list(rng.integers(0, len(values), 5000)))
    differ = values[left] != values[right]
    left, right = left[differ], right[differ]
    rows = _digit_rows(values)
    expected = [OSA.distance(a, b) <= 1 for a, b in zip(values[left], values[right], strict=True)]
    assert sum(expected) > 1000
    assert _one_edit_digits(rows[left], rows[right]).tolist() == expected
    # Text that is not all digits, or longer, is compared as text.
    assert _digit_rows(np.array(["555-0101"], dtype=object)) is None
    assert _digit_rows(np.array(["1" * 19], dtype=object)) is None
    digits_only = [("5550101", "5550110"), ("5550101", "555010"), ("5550101", "5551100"), ("5550101", None)]
    assert levels(IdentifierComparison("phone"), digits_only) == ["one_typo", "one_typo", "else", "null"]
    assert levels(IdentifierComparison("id"), [("A550101", "A550110"), ("A550101", "A551100")]) == ["one_typo", "else"]


@pytest.mark.parametrize(
    "comparison",
    [
        ExactMatch("v"),
        JaroWinklerAtThresholds("v"),
        LevenshteinAtThresholds("v"),
        DamerauLevenshteinAtThresholds("v"),
        NameComparison("v"),
        DateComparison("v"),
        IdentifierComparison("v"),
        EmailComparison("v"),
        PostalCodeComparison("v"),
    ],
    ids=lambda c: c.kind,
)
def test_a_column_with_no_value_at_all_is_null_on_every_pair(comparison):
    # Every row quarantined for its date, say, leaves a mapped column empty: no level, never a crash.
    assert levels(comparison, [(None, None), (None, None)]) == ["null", "null"]
