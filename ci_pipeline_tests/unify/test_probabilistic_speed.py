"""The vectorised comparisons (each distinct value pair measured once, levels spread back by code) give exactly
the levels of a plain pair-by-pair reference written here from each level's definition, and scores are weights
looked up per level."""

from __future__ import annotations

import re
import threading
from functools import cache

import numpy as np
import pandas as pd
import pytest
from rapidfuzz import distance

from ci_pipeline.unify.dates import parse_times
from ci_pipeline.unify.normalize import alternative_nicknames, nicknames
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
    model,
    prepare,
)
from ci_pipeline.unify.probabilistic.comparisons import per_value_pair
from ci_pipeline.unify.probabilistic.model import gamma_matrix

FIRST = ["robert", "bob", "rob", "roberta", "r", "john", "jon", "johnny", "j", "sam", "samuel", "samantha", "ann"]
LAST = ["smith", "smyth", "smithe", "jones", "johns", "john", "bob", "doe", "dough", "lee", "li"]
DATES = ["1980-03-04", "1980-04-03", "19800305", "1980-03-28", "1980-11-20", "1984-07-20", "2001-07-20"]
DATES += [
    "03/04/1980",
    "1980-13-04",
    "not a date",
    "1981-03-04",
    "1980-00-00",
    "1980-03-00",
    "1981-00-00",
    "1980-00-04",
]
EMAILS = ["ann@x.com", "ann@y.org", "bob@x.com", "bob", "ann@x@y.com", "a@", "@x.com"]
CODES = ["4223", "4232", "4299", "5111", "42", "4223a"]


def _typo(rng: np.random.Generator, word: str) -> str:
    """One random edit: a substitution, a deletion or a swap of two neighbours."""
    if len(word) < 2:
        return word
    i = int(rng.integers(0, len(word) - 1))
    kind = rng.integers(0, 3)
    if kind == 0:
        return word[:i] + "xqz"[i % 3] + word[i + 1 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _column(rng: np.random.Generator, pool: list[str], n: int) -> list[str | None]:
    values = [pool[k] for k in rng.integers(0, len(pool), n)]
    values = [_typo(rng, v) if rng.random() < 0.2 else v for v in values]
    return [None if rng.random() < 0.1 else v for v in values]


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 400
    return pd.DataFrame(
        {
            "first": _column(rng, FIRST, n),
            "last": _column(rng, LAST + FIRST[:4], n),
            "dob": _column(rng, DATES, n),
            "email": _column(rng, EMAILS, n),
            "zip": _column(rng, CODES, n),
            "ssn": _column(rng, ["5304218", "5304228", "1111111", "5302418"], n),
        },
        dtype="string",
    )


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    # Far more pairs than distinct value pairs: every value pair repeats, as in candidate pairs.
    return rng.integers(0, n, 30_000), rng.integers(0, n, 30_000)


def _first_level(comparison, conditions: dict[str, bool]) -> str:
    return next((level for level in comparison.levels[:-1] if conditions[level]), "else")


def _jw_levels(comparison, a: str, b: str) -> dict[str, bool]:
    similarity = np.float32(distance.JaroWinkler.normalized_similarity(a, b))
    return {f"jaro_winkler>={t:g}": a != b and similarity >= np.float32(t) for t in comparison.thresholds}


def _name_level(comparison: NameComparison, a, b, a_other, b_other) -> str:
    fold = [lambda v, t=t: " ".join(t.get(w, w) for w in v.split(" ")) for t in (nicknames(), alternative_nicknames())]
    differ = a != b
    conditions = {
        "exact": a == b,
        "swapped": differ and a_other is not None and b_other is not None and a == b_other and b == a_other,
        "nickname": differ and (any(f(a) == f(b) for f in fold) or _typed_amiss(a, b) or _typed_amiss(b, a)),
        "initial": differ and (len(a) == 1 or len(b) == 1) and a[:1] == b[:1],
        **_jw_levels(comparison, a, b),
    }
    return _first_level(comparison, conditions)


def _typed_amiss(nickname: str, other: str) -> bool:
    """A one-word nickname whose formal name (five letters or more) is one edit from ``other``."""
    formal = [t[nickname] for t in (nicknames(), alternative_nicknames()) if nickname in t]
    return any(len(f) >= 5 and distance.OSA.distance(f, other) <= 1 for f in formal)


@cache
def _parts(value: str) -> tuple[int, int, int] | None:
    """ISO dates as written (even no calendar date); any other text as the project's date parser reads it."""
    iso = re.match(r"^(\d{4})-?(\d{2})-?(\d{2})", value)
    if iso:
        return tuple(int(x) for x in iso.groups())
    parsed = parse_times(pd.Series([value], dtype="string")).iloc[0]
    return None if pd.isna(parsed) else (parsed.year, parsed.month, parsed.day)


def _date_level(comparison: DateComparison, a: str, b: str) -> str:
    pa_, pb = _parts(a), _parts(b)
    if pa_ is None or pb is None:
        return "null"
    (ly, lm, ld), (ry, rm, rd) = pa_, pb
    # A day 00 is not known, nor a month 00 with it: only the parts both know are compared.
    full = ld > 0 and rd > 0
    months = (lm > 0 or ld > 0) and (rm > 0 or rd > 0)
    days = abs((ly - ry) * 372 + ((lm - rm) * 31 if months else 0) + ((ld - rd) if full else 0))
    conditions = {
        "exact": full and pa_ == pb,
        "day_month_transposed": full and (ly, lm, ld) == (ry, rd, rm),
        "one_typo": full and distance.OSA.distance(f"{ly:04d}{lm:02d}{ld:02d}", f"{ry:04d}{rm:02d}{rd:02d}") == 1,
        "same_year_month": months and (ly, lm) == (ry, rm),
        "same_month_day": full and (lm, ld) == (rm, rd),
        "same_year": not full and ly == ry,
        "within_1_year": days <= 372,
        "within_5_years": days <= 5 * 372,
    }
    return _first_level(comparison, conditions)


def _reference(comparison, a, b, a_other=None, b_other=None) -> str:
    """The level of one value pair, from the level definitions (documented in the comparisons module)."""
    if a is None or b is None:
        return "null"
    differ = a != b
    if isinstance(comparison, NameComparison):
        return _name_level(comparison, a, b, a_other, b_other)
    if isinstance(comparison, DateComparison):
        return _date_level(comparison, a, b)
    if isinstance(comparison, JaroWinklerAtThresholds):
        return _first_level(comparison, {"exact": a == b, **_jw_levels(comparison, a, b)})
    if isinstance(comparison, LevenshteinAtThresholds):
        scorer = distance.OSA if isinstance(comparison, DamerauLevenshteinAtThresholds) else distance.Levenshtein
        label = comparison.levels[1].split("<=")[0]
        edits = {f"{label}<={t}": differ and scorer.distance(a, b) <= t for t in comparison.thresholds}
        return _first_level(comparison, {"exact": a == b, **edits})
    if isinstance(comparison, IdentifierComparison):
        return _first_level(comparison, {"exact": a == b, "one_typo": differ and distance.OSA.distance(a, b) <= 1})
    if isinstance(comparison, EmailComparison):
        (ua, at_a, da), (ub, at_b, db) = a.rpartition("@"), b.rpartition("@")
        user_a, user_b = (ua if at_a else da), (ub if at_b else db)
        conditions = {"exact": a == b, "same_user": user_a == user_b, "same_domain": bool(at_a and at_b and da == db)}
        return _first_level(comparison, conditions)
    if isinstance(comparison, PostalCodeComparison):
        k = comparison.prefix_length
        conditions = {
            "exact": a == b,
            "one_typo": differ and distance.OSA.distance(a, b) <= 1,
            f"same_prefix_{k}": a[:k] == b[:k],
        }
        return _first_level(comparison, conditions)
    return "exact" if a == b else "else"


COMPARISONS = [
    ExactMatch("zip"),
    JaroWinklerAtThresholds("last", thresholds=(0.95, 0.8)),
    JaroWinklerAtThresholds("first", thresholds=(0.9, 0.7), without=("exact",)),
    LevenshteinAtThresholds("last", thresholds=(1, 2)),
    DamerauLevenshteinAtThresholds("last", thresholds=(1, 3)),
    NameComparison("first", swap_with="last"),
    NameComparison("last", swap_with="first", without=("nickname", "exact")),
    NameComparison("first", without=("initial",), thresholds=(0.85,)),
    DateComparison("dob"),
    DateComparison("dob", without=("one_typo", "same_year_month")),
    IdentifierComparison("ssn"),
    EmailComparison("email"),
    EmailComparison("email", without=("same_user",)),
    PostalCodeComparison("zip", prefix_length=2),
]


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: f"{c.kind}-{c.column}-{'-'.join(c.without)}")
def test_vectorised_levels_equal_the_pair_by_pair_reference(records, comparison):
    table = prepare(records, list(records.columns))
    left, right = _pairs(len(records))
    gamma = comparison.gamma(table, left, right)
    got = ["null" if g < 0 else comparison.levels[g] for g in gamma]
    values = records.astype(object).where(records.notna(), None)
    this = values[comparison.column].tolist()
    other = values[comparison.swap_with].tolist() if getattr(comparison, "swap_with", None) else [None] * len(this)
    expected = [_reference(comparison, this[a], this[b], other[a], other[b]) for a, b in zip(left, right, strict=True)]
    mismatches = [(int(a), int(b), g, e) for a, b, g, e in zip(left, right, got, expected, strict=True) if g != e]
    assert mismatches == []
    # Every level the values can reach is reached, so the comparison is not trivially right.
    assert len(set(got)) >= 3


def test_the_direct_lookup_and_the_hashed_path_give_the_same_levels():
    rng = np.random.default_rng(1)
    width = 50
    left, right = rng.integers(-1, width, 20_000), rng.integers(-1, width, 20_000)

    def levels(a, b):
        # Any function of the two codes: the level is the code sum modulo 7, -1 for a null.
        return np.where((a < 0) | (b < 0), -1, (a * 3 + b) % 7).astype(np.int8)

    expected = levels(left, right)
    assert (per_value_pair(left, right, width, levels) == expected).all()  # direct lookup (few codes)
    few = slice(0, 500)  # fewer pairs than possible code pairs: hashed
    assert (per_value_pair(left[few], right[few], width, levels) == expected[few]).all()


def test_comparisons_side_by_side_and_a_chunk_at_a_time_give_the_matrix_of_one_at_a_time(records, monkeypatch):
    table = prepare(records, list(records.columns))
    left, right = _pairs(len(records))
    monkeypatch.setattr(model, "PARALLEL_PAIRS", len(left) + 1)
    one_at_a_time = gamma_matrix(table, tuple(COMPARISONS), left, right)
    monkeypatch.setattr(model, "PARALLEL_PAIRS", 1)
    monkeypatch.setattr(model, "CHUNK_PAIRS", 4_099)  # 30,000 pairs: eight chunks, the last one short
    started = threading.active_count()
    seen = []
    original = ExactMatch.gamma

    def noting(self, *args):
        seen.append(threading.current_thread().name)
        return original(self, *args)

    monkeypatch.setattr(ExactMatch, "gamma", noting)
    side_by_side = gamma_matrix(table, tuple(COMPARISONS), left, right)
    assert np.array_equal(side_by_side, one_at_a_time)
    assert seen and all(name.startswith("comparisons") for name in seen)  # on the pool's threads
    assert threading.active_count() == started  # the pool is gone
