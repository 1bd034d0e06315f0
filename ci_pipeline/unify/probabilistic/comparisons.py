"""The comparison library: each comparison maps a pair of records to one of a few ordered levels.

Levels run from the strongest agreement (``exact``) to ``else``; a pair where either side is null gets level
``-1`` (null), which carries no evidence either way. The first level whose condition holds wins. Comparisons are
named by algorithm and thresholds, as in Splink's comparison library:

- ``ExactMatch``: exact, else.
- ``JaroWinklerAtThresholds``: exact, then Jaro-Winkler similarity at each threshold (descending), else.
- ``LevenshteinAtThresholds`` / ``DamerauLevenshteinAtThresholds``: exact, then edit distance at each threshold
  (ascending); Damerau-Levenshtein is the optimal-string-alignment variant, a transposition counting as one edit.
- ``NameComparison``: exact, first/last swapped (across two columns), nickname, initial vs full name, then
  Jaro-Winkler thresholds, else.
- ``DateComparison``: exact, day and month transposed, one typing error, same year and month, same month and
  day, within 1 year, within 5 years, else; dates compared by component, not as text.
- ``IdentifierComparison``: exact, one typing error (an edit or a transposition), else (identifiers, phones).
- ``EmailComparison``: exact, same user name, same domain, else.
- ``PostalCodeComparison``: exact, one typing error, same prefix, else.
- ``PlaceComparison``: a place (a street) and the more general places it implies (postal code, city) as one
  comparison: exact, Jaro-Winkler thresholds, then ``same_<column>`` per general place, else.

All work on aligned pairs of record positions, vectorised: integer codes per record, and one batched rapidfuzz
call (``process.cpdist``) over the distinct value pairs that are neither null nor equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import distance, process

from ci_pipeline.errors import UserError
from ci_pipeline.grammar.comparisons import KINDS, comparison_problems, parameters_of
from ci_pipeline.unify.dates import parse_times
from ci_pipeline.unify.normalize import alternative_nicknames, nicknames
from ci_pipeline.unify.probabilistic.table import Table
from ci_pipeline.unify.text import map_words

NULL = -1


class SettingsError(UserError):
    """A probabilistic matching setting is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Side:
    """Codes of one column for the two values of each distinct value pair (-1 = null), and the column's values."""

    left: np.ndarray
    right: np.ndarray
    values: np.ndarray

    @cached_property
    def null(self) -> np.ndarray:
        return (self.left < 0) | (self.right < 0)

    @cached_property
    def exact(self) -> np.ndarray:
        return (self.left == self.right) & (self.left >= 0)


def _side(table: Table, column: str, left: np.ndarray, right: np.ndarray) -> Side:
    return Side(left, right, table.column(column).values)


def per_value_pair(left: np.ndarray, right: np.ndarray, width: int, levels: Callable) -> np.ndarray:
    """``levels(a, b)`` computed once per distinct pair of codes (``left[i]``, ``right[i]``) and spread back.

    Codes run from -1 (null) to ``width - 1``; ``levels`` must give a pair with a null side the null level (-1),
    as every comparison does. Candidate pairs repeat value pairs a lot (one e-mail address on several records, a
    few thousand first names over millions of pairs), so every measure and every level condition runs on the
    distinct value pairs only; per pair there is one hash (or, when the codes are few, one direct lookup) and one
    gather.
    """
    radix = np.int64(width + 1)
    key = (left + 1) * radix + (right + 1)
    space = int(radix * radix)
    if space <= 2 * len(key):
        present = np.flatnonzero(np.bincount(key, minlength=space))
        lookup = np.zeros(space, dtype=np.int8)
        lookup[present] = levels(present // radix - 1, present % radix - 1)
        return lookup[key]
    # Many codes: the hash is most of the cost, so the pairs with a null side (a third to a half of them for a
    # phone or a street) are not hashed at all.
    known = (left >= 0) & (right >= 0)
    out = np.full(len(key), NULL, dtype=np.int8)
    # Arrow's hash finds the distinct pairs a fifth faster than pandas' factorize, in the same order.
    encoded = pa.array(key[known]).dictionary_encode()
    distinct = encoded.dictionary.to_numpy()
    out[known] = levels(distinct // radix - 1, distinct % radix - 1)[encoded.indices.to_numpy()]
    return out


def _measured(side: Side, todo: np.ndarray, measure: Callable[[np.ndarray, np.ndarray], np.ndarray], fill):
    """``measure`` over the (left value, right value) pairs selected by ``todo``; ``fill`` elsewhere."""
    out = np.full(len(side.left), fill, dtype=np.asarray(fill).dtype)
    if todo.any():
        out[todo] = measure(side.values[side.left[todo]], side.values[side.right[todo]])
    return out


def _jaro_winkler(lowest: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    # Below the lowest threshold the similarity is not needed (it is the else level): rapidfuzz may stop early.
    # Levels compare the float32 similarity, so a similarity just below a threshold can round up to it: the cutoff
    # stays below that rounding.
    cutoff = lowest - 1e-4
    return lambda a, b: process.cpdist(
        a, b, scorer=distance.JaroWinkler.normalized_similarity, workers=-1, score_cutoff=cutoff
    )


def _edits(scorer, cutoff: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    # Beyond the highest threshold the distance is not needed: rapidfuzz returns cutoff + 1 and may stop early.
    return lambda a, b: process.cpdist(a, b, scorer=scorer, workers=-1, dtype=np.int32, score_cutoff=cutoff)


def _select(null: np.ndarray, conditions: list[np.ndarray]) -> np.ndarray:
    """Level per pair: -1 where null, else the first condition that holds, else the last level."""
    gamma = np.select(conditions, np.arange(len(conditions)), default=len(conditions)).astype(np.int8)
    gamma[null] = NULL
    return gamma


@dataclass(frozen=True)
class Comparison:
    """Base of the library: a named comparison of one column (``column``) with ordered levels."""

    kind: ClassVar[str] = ""
    column: str
    #: Exact agreement on a rare value counts for more than on a common one (see the model's TF adjustment).
    term_frequency: bool = False
    #: Levels left out: a pair that would reach one reaches the next level that holds.
    without: tuple[str, ...] = ()
    #: Whether the levels are worth computing once per distinct value pair (:func:`per_value_pair`): so when they
    #: measure text. Levels that are a few comparisons of codes cost less per pair than finding the distinct pairs.
    per_distinct: ClassVar[bool] = True

    @property
    def name(self) -> str:
        """The comparison's name in a model and in its output columns: the column it compares."""
        return self.column

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the comparison reads."""
        return (self.column,)

    @property
    def masked_by(self) -> tuple[str, ...]:
        """The columns on which blocking makes the comparison's levels among non-matches unlike those of random
        pairs: EM leaves the comparison out of the pairs a training rule on one of them finds."""
        return self.columns

    def __post_init__(self):
        # The catalogue's checks (thresholds, parameters, levels left out), as for a description in the settings.
        found = comparison_problems(self.to_dict(), f"comparison {self.column!r}")
        if found:
            raise SettingsError("; ".join(found))

    @property
    def all_levels(self) -> tuple[str, ...]:
        """Every level the comparison can have, from the strongest to ``else`` (the catalogue's levels)."""
        return KINDS[self.kind].all_levels({f.name: getattr(self, f.name) for f in fields(self)})

    @property
    def levels(self) -> tuple[str, ...]:
        """Level names from the strongest to ``else``, without those listed in ``without``."""
        return tuple(level for level in self.all_levels if level not in self.without)

    def _conditions(self, table: Table, left: np.ndarray, right: np.ndarray):
        """Per pair of codes of ``column`` (-1 = null), whether it is null, and one condition per level of
        ``all_levels`` but ``else``."""
        raise NotImplementedError

    def _levels(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The level reached by each pair of codes of ``column``."""
        null, conditions = self._conditions(table, left, right)
        kept = [c for level, c in zip(self.all_levels, conditions, strict=False) if level not in self.without]
        return _select(null, kept)

    def gamma(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The level reached by each pair (``left[i]``, ``right[i]``) of record positions; -1 = null."""
        column = table.column(self.column)
        if not self.per_distinct:
            return self._levels(table, column.codes[left], column.codes[right])
        return per_value_pair(
            column.codes[left],
            column.codes[right],
            len(column.values),
            lambda a, b: self._levels(table, a, b),
        )

    def to_dict(self) -> dict:
        """A JSON-able description (``kind`` plus the fields that differ from their default)."""
        out = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "column" or value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class ExactMatch(Comparison):
    """exact, else."""

    kind: ClassVar[str] = "exact"
    per_distinct: ClassVar[bool] = False

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        return (side.null, [side.exact])


@dataclass(frozen=True)
class JaroWinklerAtThresholds(Comparison):
    """exact, Jaro-Winkler similarity >= each threshold (high to low), else.

    With ``same_numbers`` a pair reaches a similarity level only where the numbers written in both values agree
    (or one holds none): ``15 new st`` and ``10 new st`` are neighbours, not one address typed twice."""

    kind: ClassVar[str] = "jaro_winkler"
    thresholds: tuple[float, ...] = KINDS["jaro_winkler"].parameters["thresholds"]
    same_numbers: bool = False

    @property
    def all_levels(self) -> tuple[str, ...]:
        # The plain Jaro-Winkler levels, also for kinds built on this one that add levels of their own.
        return KINDS["jaro_winkler"].all_levels({"thresholds": self.thresholds})

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        sim = _measured(side, ~side.null & ~exact, _jaro_winkler(min(self.thresholds)), np.float32(0))
        if self.same_numbers:
            numbers = table.derived(self.column, "numbers", number_codes)
            ln, rn = numbers[side.left], numbers[side.right]
            sim[(ln >= 0) & (rn >= 0) & (ln != rn)] = 0
        return (side.null, [exact, *(sim >= t for t in self.thresholds)])


def number_codes(values: np.ndarray) -> np.ndarray:
    """Per value, a code of the numbers written in it (``12b main st 3`` -> ``12 3``), -1 where it holds none;
    one more -1 last, where a null's position (-1) reads."""
    digits = pc.utf8_trim_whitespace(pc.replace_substring_regex(pa.array(values, pa.string()), r"[^0-9]+", " "))
    codes = pd.factorize(pd.Series(digits.to_pandas(), dtype="string").replace("", pd.NA), use_na_sentinel=True)[0]
    return np.append(codes, -1).astype(np.int64)


@dataclass(frozen=True)
class LevenshteinAtThresholds(Comparison):
    """exact, Levenshtein distance <= each threshold (low to high), else."""

    kind: ClassVar[str] = "levenshtein"
    thresholds: tuple[int, ...] = KINDS["levenshtein"].parameters["thresholds"]
    _scorer: ClassVar = staticmethod(distance.Levenshtein.distance)

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        cutoff = max(self.thresholds)
        dist = _measured(side, ~side.null & ~exact, _edits(self._scorer, cutoff), np.int32(cutoff + 1))
        return (side.null, [exact, *(dist <= t for t in self.thresholds)])


@dataclass(frozen=True)
class DamerauLevenshteinAtThresholds(LevenshteinAtThresholds):
    """exact, optimal-string-alignment distance <= each threshold (a transposition is one edit), else."""

    kind: ClassVar[str] = "damerau_levenshtein"
    _scorer: ClassVar = staticmethod(distance.OSA.distance)


def _text(values: np.ndarray) -> pa.Array:
    """A column's distinct values as Arrow text, for vectorised string functions."""
    return pa.array(values, type=pa.string())


def _codes(texts: pa.Array) -> np.ndarray:
    """Integer codes of texts (equal text, equal code; -2 for null), with a trailing -2 that the null code -1
    reads: comparing codes is much faster than comparing strings, and a null never equals anything."""
    codes = pc.fill_null(pc.dictionary_encode(texts).indices, -2)
    return np.append(codes.to_numpy(zero_copy_only=False).astype(np.int64), -2)


def _fold(table: dict[str, str]) -> Callable[[np.ndarray], np.ndarray]:
    """Codes of each value with every word replaced by its formal name (``bob smith`` -> ``robert smith``)."""

    def make(values: np.ndarray) -> np.ndarray:
        return _codes(pa.array(map_words(pd.Series(values, dtype="string"), table), type=pa.string()))

    return make


@dataclass(frozen=True)
class NameComparison(Comparison):
    """Personal names: exact, swapped with ``swap_with``, nickname, initial, Jaro-Winkler thresholds, else.

    ``swap_with`` names the other name column (first name <-> last name): the pair is at level ``swapped`` when
    each record's value equals the other record's value of the other column. ``nickname``: both values fold to the
    same formal name with the shipped nickname table (Bob, Robert), or one is a nickname whose formal name is one
    typing error from the other (Jimmy, Jaems). ``initial``: one side is a single letter, the other side's first
    letter.
    """

    kind: ClassVar[str] = "name"
    thresholds: tuple[float, ...] = KINDS["name"].parameters["thresholds"]
    swap_with: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,) if self.swap_with is None else (self.column, self.swap_with)

    @property
    def masked_by(self) -> tuple[str, ...]:
        # Pairs found by the other name column are hardly ever swapped, matches or not, and compare this column like
        # any pairs otherwise; left out there, a first and a last name compared with nothing else (birth date aside)
        # would have no training rule left (every rule pairs two of them).
        return (self.column,)

    def gamma(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The level reached by each pair of record positions; ``swapped`` reads the other column per pair."""
        gamma = super().gamma(table, left, right)
        if not self.swap_with or "swapped" in self.without:
            return gamma
        this, other = table.column(self.column), table.column(self.swap_with)
        # The two columns are factorized separately: translate the other column's codes into this one's.
        # The null code -1 reads the last entry: no value.
        as_this = table.derived(
            self.swap_with, f"as:{self.column}", lambda v: np.append(pd.Index(this.values).get_indexer(v), -1)
        )
        a, b = this.codes[left], this.codes[right]
        swapped = (a >= 0) & (b >= 0) & (a == as_this[other.codes[right]]) & (b == as_this[other.codes[left]])
        # Only exact (never a swap: a != b) comes before swapped, so a swap takes any level it beats.
        level = np.int8(self.levels.index("swapped"))
        gamma[swapped & (a != b)] = level
        return gamma

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        conditions = [exact]
        if self.swap_with:
            # Whether a pair is swapped depends on the other column: ``gamma`` sets it per pair of records.
            conditions.append(np.zeros(len(left), dtype=bool))
        todo = ~side.null & ~exact
        folded = [table.derived(self.column, f"nickname{i}", _fold(t)) for i, t in enumerate(_nickname_tables())]
        nick = np.zeros(len(left), dtype=bool)
        for fold in folded:
            nick |= todo & (fold[side.left] == fold[side.right])
        nick |= self._nickname_typed_amiss(table, side, todo & ~nick)
        conditions.append(nick)
        single = table.derived(
            self.column, "single", lambda v: np.append(pc.utf8_length(_text(v)).to_numpy() == 1, False)
        )
        first = table.derived(self.column, "first", lambda v: _codes(pc.utf8_slice_codeunits(_text(v), 0, 1)))
        conditions.append(todo & (single[side.left] | single[side.right]) & (first[side.left] == first[side.right]))
        sim = _measured(side, todo, _jaro_winkler(min(self.thresholds)), np.float32(0))
        conditions.extend(sim >= t for t in self.thresholds)
        return (side.null, conditions)

    def _nickname_typed_amiss(self, table: Table, side: Side, todo: np.ndarray) -> np.ndarray:
        """Pairs of a nickname and its formal name written with one typing error (Jimmy and Jaems, Liz and
        Eilzabeth): the formal name (of five letters or more) within one edit, a transposition counting as one, of
        the other side. A nickname folds to its formal name only when the latter is written right."""
        found = np.zeros(len(todo), dtype=bool)
        for i, names in enumerate(_nickname_tables()):
            formal = table.derived(self.column, f"formal{i}", _formal_of(names))
            for mine, theirs in ((side.left, side.right), (side.right, side.left)):
                ask = todo & ~found & (formal[mine] != "")
                if ask.any():
                    near = process.cpdist(
                        formal[mine[ask]], side.values[theirs[ask]], scorer=distance.OSA.distance, score_cutoff=1
                    )
                    found[np.flatnonzero(ask)[near <= 1]] = True
        return found


def _formal_of(names: dict[str, str]) -> Callable[[np.ndarray], np.ndarray]:
    """Per value, the formal name of a one-word nickname when it has five letters or more (a single edit in a
    shorter name makes another name: Mary, Mark), else ""; then "" for the null code -1."""

    def make(values: np.ndarray) -> np.ndarray:
        formal = np.asarray([names.get(v, "") for v in values.tolist()], dtype=object)
        long = np.asarray([len(f) >= 5 for f in formal.tolist()], dtype=bool)
        return np.append(np.where(long, formal, ""), "")

    return make


def nickname_codes(values: np.ndarray) -> np.ndarray:
    """Codes of ``values`` with every word folded to its formal name by the shipped nickname table (equal fold,
    equal code; negative for null), then a trailing negative entry that the null code -1 reads."""
    return _fold(_nickname_tables()[0])(values)


def _nickname_tables() -> tuple[dict[str, str], dict[str, str]]:
    # A nickname of two formal names (Sam: Samuel or Samantha) agrees with either.
    return nicknames(), alternative_nicknames()


_ISO = r"^(?P<year>[0-9]{4})-?(?P<month>[0-9]{2})-?(?P<day>[0-9]{2})"


def date_parts(values: np.ndarray) -> np.ndarray:
    """``(year, month, day)`` per value; -1 where it is no date.

    ``YYYY-MM-DD`` and ``YYYYMMDD`` are split as written, so a keyed date that is no calendar date (month 13, a
    transposed 31/12) keeps its components for comparison; other formats go through the project's date parser.
    """
    parts = np.full((len(values), 3), -1, dtype=np.int64)
    split = pc.extract_regex(pa.array(values, type=pa.string(), from_pandas=True), _ISO)
    iso = split.is_valid().to_numpy(zero_copy_only=False)
    for j in range(3):
        parts[iso, j] = pc.cast(split.field(j).filter(iso), pa.int64()).to_numpy()
    rest = ~iso
    if rest.any():
        parsed = parse_times(pd.Series(values, dtype="string")[rest])
        ok = parsed.notna().to_numpy()
        where = np.flatnonzero(rest)[ok]
        parts[where, 0] = parsed[ok].dt.year.to_numpy()
        parts[where, 1] = parsed[ok].dt.month.to_numpy()
        parts[where, 2] = parsed[ok].dt.day.to_numpy()
    return parts


def _one_keying_error(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Whether two 8-digit numbers (YYYYMMDD) differ by one digit or by one swap of adjacent digits: the
    optimal-string-alignment distance <= 1 of equal-length digit strings, computed on integers."""
    powers = 10 ** np.arange(7, -1, -1, dtype=np.int64)
    return _one_change_aligned((left[:, None] // powers) % 10, (right[:, None] // powers) % 10)


def _one_change_aligned(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of two aligned digit matrices (equal lengths): whether they differ in exactly one position, or in
    two neighbouring positions that hold each other's digit (one swap)."""
    differ = a != b
    count = differ.sum(axis=1)
    swap = (a[:, :-1] == b[:, 1:]) & (a[:, 1:] == b[:, :-1]) & differ[:, :-1] & differ[:, 1:]
    return (count == 1) | ((count == 2) & swap.any(axis=1))


@dataclass(frozen=True)
class DateComparison(Comparison):
    """Dates by component: exact, day/month transposed, one typing error, same year and month, same month and day
    (a birthday kept with a year typed wrong or filled in by a form that asked only for the birthday), within 1
    year, within 5 years, else. A date known only in part (``1843-00-00``, ``1843-05-00``) reaches the levels of the
    parts both sides know (same year and month, or ``same_year``, a level only such dates reach), never ``exact``."""

    kind: ClassVar[str] = "date"

    def _conditions(self, table, left, right):
        # A last row of -1 stands for a missing value (position -1): there is one even when no value is present.
        parts = table.derived(self.column, "date", lambda v: np.vstack([date_parts(v), np.full((1, 3), -1)]))
        side = _side(table, self.column, left, right)
        lp, rp = parts[side.left], parts[side.right]
        null = side.null | (lp[:, 0] < 0) | (rp[:, 0] < 0)
        (ly, lm, ld), (ry, rm, rd) = lp.T, rp.T
        # A day written 00 is not known, nor a month written 00 with it (a year of birth alone, 1843----, or a year
        # and month): such a date agrees with another on what both know and reaches the levels of the parts compared:
        # same_year_month, else same_year, a level of its own (whole dates a year apart are no such agreement). A
        # month 00 before a known day is a keyed month, compared as written.
        full = (ld > 0) & (rd > 0)
        months = ((lm > 0) | (ld > 0)) & ((rm > 0) | (rd > 0))
        exact = full & (ly == ry) & (lm == rm) & (ld == rd)
        transposed = full & (ly == ry) & (lm == rd) & (ld == rm)
        # One keyed digit changes one component, a swap across a boundary two: only those pairs are examined.
        near = full & ~null & ~exact & ((ly != ry).astype(np.int8) + (lm != rm) + (ld != rd) <= 2)
        typo = np.zeros(len(left), dtype=bool)
        typo[near] = _one_keying_error(
            ly[near] * 10000 + lm[near] * 100 + ld[near], ry[near] * 10000 + rm[near] * 100 + rd[near]
        )
        # Days on a 372-day calendar: no calendar arithmetic, so keyed dates that are no real date still compare.
        days = np.abs((ly - ry) * 372 + np.where(months, lm - rm, 0) * 31 + np.where(full, ld - rd, 0))
        return (
            null,
            [
                exact,
                transposed,
                typo,
                months & (ly == ry) & (lm == rm),
                full & (lm == rm) & (ld == rd),
                ~full & (ly == ry),
                days <= 372,
                days <= 5 * 372,
            ],
        )


#: Digit strings up to this long are compared as digit rows (:func:`_digit_rows`) rather than as text.
DIGITS = 18


def _digit_rows(values: np.ndarray) -> np.ndarray | None:
    """Each value's digits as a row of small integers, left-aligned and padded with -1 (one extra column, so that
    every row ends in padding), with the last column the value's length; None when a value is not a string of at
    most :data:`DIGITS` digits."""
    text = _text(values)
    if len(text) == 0 or not pc.all(pc.match_substring_regex(text, f"^[0-9]{{1,{DIGITS}}}$")).as_py():
        return None
    padded = pc.utf8_rpad(text, DIGITS + 1, "/")  # '/' is the character before '0': -1 once '0' is subtracted
    # Every padded value is DIGITS + 1 bytes long, one after the other in the array's data buffer.
    raw = np.frombuffer(padded.buffers()[2], dtype=np.uint8, count=len(text) * (DIGITS + 1))
    rows = raw.reshape(len(text), DIGITS + 1).astype(np.int8) - ord("0")
    rows[:, DIGITS] = pc.utf8_length(text).to_numpy()
    return rows


def _one_edit_digits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether the optimal-string-alignment distance of two different digit strings is 1 (one digit changed,
    inserted or dropped, or two neighbours swapped), from their :func:`_digit_rows`; vectorised."""
    la, lb = a[:, DIGITS].astype(np.int64), b[:, DIGITS].astype(np.int64)
    da, db = a[:, :DIGITS], b[:, :DIGITS]
    out = np.zeros(len(a), dtype=bool)
    same = np.flatnonzero(la == lb)
    if len(same):
        out[same] = _one_change_aligned(da[same], db[same])
    near = np.flatnonzero(np.abs(la - lb) == 1)
    if len(near):
        # One digit dropped from the longer gives the shorter: their common start and common end cover it.
        longer = la[near] > lb[near]
        short = np.where(longer[:, None], db[near], da[near])
        long_ = np.where(longer[:, None], da[near], db[near])
        ls = np.minimum(la[near], lb[near])
        cols = np.arange(DIGITS)
        start = np.cumprod(short == long_, axis=1).sum(axis=1)
        # The ends aligned: position k from the end of each, for k below the shorter length.
        back_s = np.take_along_axis(short, np.clip(ls[:, None] - 1 - cols, 0, DIGITS - 1), axis=1)
        back_l = np.take_along_axis(long_, np.clip(ls[:, None] - cols, 0, DIGITS - 1), axis=1)
        end = np.cumprod((back_s == back_l) & (cols < ls[:, None]), axis=1).sum(axis=1)
        out[near] = start + end >= ls
    return out


@dataclass(frozen=True)
class IdentifierComparison(Comparison):
    """Identifiers and phone numbers: exact, one typing error (an edit or a transposition), else."""

    kind: ClassVar[str] = "identifier"

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        todo = ~side.null & ~exact
        # Phone numbers and numeric ids: digit rows compared in NumPy, without gathering millions of texts.
        digits = table.derived(self.column, "digits", _digit_rows)
        if digits is not None:
            # A digit row is 19 bytes and each step makes a few such matrices per pair: the memory stays bounded
            # since the pairs come a chunk at a time (``model.CHUNK_PAIRS``).
            typo = np.zeros(len(left), dtype=bool)
            typo[todo] = _one_edit_digits(digits[side.left[todo]], digits[side.right[todo]])
            return (side.null, [exact, typo])
        dist = _measured(side, todo, _edits(distance.OSA.distance, 1), np.int32(2))
        return (side.null, [exact, dist <= 1])


def _split_email(values: np.ndarray) -> np.ndarray:
    """Codes of the user name (the whole value without an @) and of the domain (-2 when there is none) per
    address; the last @ splits them."""
    text = _text(values)
    parts = pc.extract_regex(text, r"(?s)^(?P<user>.*)@(?P<domain>[^@]*)$")
    has_at = parts.is_valid()
    user = pc.if_else(has_at, parts.field("user"), text)
    domain = pc.if_else(has_at, parts.field("domain"), pa.scalar(None, pa.string()))
    return np.stack([_codes(user), _codes(domain)], axis=1)


@dataclass(frozen=True)
class EmailComparison(Comparison):
    """E-mail addresses: exact, same user name (another domain), same domain, else."""

    kind: ClassVar[str] = "email"
    per_distinct: ClassVar[bool] = False

    def _conditions(self, table, left, right):
        parts = table.derived(self.column, "email", _split_email)
        # Each part as its own narrow array: the levels are computed on every pair, so the gathers are the cost.
        user = table.derived(self.column, "email_user", lambda _: parts[:, 0].astype(np.int32))
        domain = table.derived(self.column, "email_domain", lambda _: parts[:, 1].astype(np.int32))
        side = _side(table, self.column, left, right)
        same_user = user[side.left] == user[side.right]
        domain_left = domain[side.left]
        same_domain = (domain_left == domain[side.right]) & (domain_left >= 0)
        return (side.null, [side.exact, same_user, same_domain])


@dataclass(frozen=True)
class PostalCodeComparison(Comparison):
    """Postal codes: exact, one typing error, same first ``prefix_length`` characters, then ``same_<column>`` for
    each more general place of ``then`` (see :func:`with_general_places`), else."""

    kind: ClassVar[str] = "postal_code"
    prefix_length: int = KINDS["postal_code"].parameters["prefix_length"]
    then: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column, *self.then)

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        typo = _measured(side, ~side.null & ~exact, _edits(distance.OSA.distance, 1), np.int32(2)) <= 1
        k = self.prefix_length
        prefix = table.derived(self.column, f"prefix{k}", lambda v: _codes(pc.utf8_slice_codeunits(_text(v), 0, k)))
        return (side.null, [exact, typo, prefix[side.left] == prefix[side.right]])

    def gamma(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if not self.then:
            return super().gamma(table, left, right)
        own = replace(self, then=(), without=())
        return with_general_places(self, own.gamma(table, left, right), table, left, right)


def with_general_places(comparison: Comparison, own: np.ndarray, table: Table, left, right) -> np.ndarray:
    """The levels of a place comparison with more general places (``comparison.then``, from the most specific)
    below its own: ``own`` holds the levels its own column reached (all of them, NULL where unknown on a side);
    a pair whose own column says nothing (else or null) reaches ``same_<c>`` for the first general place c both
    records know alike, else ``else``. Null only when no place is known on both sides.

    The model takes its comparisons as independent evidence; nested places are not (records of different people
    sharing a postal code mostly share its town), so the general places count only where the specific one does
    not.
    """
    reached = own != NULL
    # A condition holds from its level up, so a level left out (``without``) falls through to the next one.
    own_levels = len(comparison.all_levels) - len(comparison.then) - 1
    conditions = [reached & (own <= i) for i in range(own_levels)]
    null = ~reached
    for column in comparison.then:
        codes = table.column(column).codes
        a, b = codes[left], codes[right]
        known = (a >= 0) & (b >= 0)
        conditions.append(known & (a == b))
        null &= ~known
    kept = [c for level, c in zip(comparison.all_levels, conditions, strict=False) if level not in comparison.without]
    return _select(null, kept)


@dataclass(frozen=True)
class PlaceComparison(JaroWinklerAtThresholds):
    """A place and the more general places it implies: exact, Jaro-Winkler similarity of ``column`` at each
    threshold, then ``same_<column>`` for each column of ``then`` (from the most specific), else.

    Places nested in one another are no independent evidence: two records on one street share its postal code and
    city. Compared apart, a pair agreeing on all three would count the same evidence three times; left out, the
    postal code would say nothing when the street is missing on one side. One comparison keeps them, its levels
    running from the most specific place to the most general, each with its own m and u (a postal code takes the
    same ``then``: ``PostalCodeComparison``).

    A pair reaches ``same_postal_code`` when its postal codes agree and its streets differ or one is missing. The
    comparison is null only when no place is known on both sides.
    """

    kind = "place"
    thresholds: tuple[float, ...] = (0.92, 0.8)
    then: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.then:
            raise SettingsError(
                f"comparison {self.column!r}: a 'place' comparison needs 'then', the more general places (for "
                "example [postal_code, city]); without them use 'jaro_winkler'"
            )
        repeated = [c for c in self.then if c == self.column or list(self.then).count(c) > 1]
        if repeated:
            raise SettingsError(f"comparison {self.column!r}: then names {', '.join(sorted(set(repeated)))} twice")
        super().__post_init__()

    @property
    def columns(self) -> tuple[str, ...]:
        """The place and the general places."""
        return (self.column, *self.then)

    @property
    def all_levels(self) -> tuple[str, ...]:
        return (*super().all_levels[:-1], *(f"same_{c}" for c in self.then), "else")

    def gamma(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The level reached by each pair of record positions; -1 when no place is known on both sides."""
        # The specific place's own levels (exact, then each threshold), as a plain Jaro-Winkler comparison has them.
        own = JaroWinklerAtThresholds(self.column, thresholds=self.thresholds, same_numbers=self.same_numbers).gamma(
            table, left, right
        )
        return with_general_places(self, own, table, left, right)


LIBRARY: dict[str, type[Comparison]] = {
    c.kind: c
    for c in (
        ExactMatch,
        JaroWinklerAtThresholds,
        LevenshteinAtThresholds,
        DamerauLevenshteinAtThresholds,
        NameComparison,
        DateComparison,
        IdentifierComparison,
        EmailComparison,
        PostalCodeComparison,
        PlaceComparison,
    )
}


def comparison_from_dict(spec: dict, where: str = "comparisons") -> Comparison:
    """Build a comparison from its description (``{kind: jaro_winkler, column: city, thresholds: [0.9]}``).

    Raises:
        SettingsError: every mistake the catalogue finds (an unknown kind, key or level, a missing column,
            thresholds out of order), each with its key path under ``where``.
    """
    found = comparison_problems(spec, where)
    if found:
        raise SettingsError("; ".join(found))
    args = {k: v for k, v in parameters_of(spec).items() if k != "kind"}
    return LIBRARY[spec["kind"]](**args)
