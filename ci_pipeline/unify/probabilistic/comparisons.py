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
- ``DateComparison``: exact, day and month transposed, one typing error, same year and month, within 1 year,
  within 5 years, else; dates compared by component, not as text.
- ``IdentifierComparison``: exact, one typing error (an edit or a transposition), else (identifiers, phones).
- ``EmailComparison``: exact, same user name, same domain, else.
- ``PostalCodeComparison``: exact, one typing error, same prefix, else.

All work on aligned pairs of record positions, vectorised: integer codes per record, and one batched rapidfuzz
call (``process.cpdist``) over the distinct value pairs that are neither null nor equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
import pandas as pd
from rapidfuzz import distance, process

from ci_pipeline.errors import UserError
from ci_pipeline.unify.normalize import alternative_nicknames, nicknames
from ci_pipeline.unify.probabilistic.table import Table
from ci_pipeline.unify.records import parse_times

NULL = -1


class SettingsError(UserError):
    """A probabilistic matching setting is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Side:
    """Codes of one column for the left and right records of each pair (-1 = null)."""

    left: np.ndarray
    right: np.ndarray
    values: np.ndarray

    @property
    def null(self) -> np.ndarray:
        return (self.left < 0) | (self.right < 0)

    @property
    def exact(self) -> np.ndarray:
        return (self.left == self.right) & (self.left >= 0)


def _side(table: Table, column: str, left: np.ndarray, right: np.ndarray) -> Side:
    col = table.column(column)
    return Side(col.codes[left], col.codes[right], col.values)


def _on_distinct(side: Side, todo: np.ndarray, measure: Callable[[np.ndarray, np.ndarray], np.ndarray], fill):
    """``measure`` over the (left value, right value) pairs selected by ``todo``, spread back per pair.

    Value pairs are deduplicated first when there are more pairs than possible value pairs (they must repeat);
    otherwise the sort costs more than measuring the repeats it might save.
    """
    out = np.full(len(side.left), fill, dtype=np.asarray(fill).dtype)
    count = int(todo.sum())
    if count == 0:
        return out
    width = np.int64(len(side.values))
    left, right = side.left[todo], side.right[todo]
    if width * width < count:
        keys, inverse = np.unique(left * width + right, return_inverse=True)
        out[todo] = measure(side.values[keys // width], side.values[keys % width])[inverse]
    else:
        out[todo] = measure(side.values[left], side.values[right])
    return out


def _jaro_winkler(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return process.cpdist(a, b, scorer=distance.JaroWinkler.normalized_similarity, workers=-1)


def _osa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return process.cpdist(a, b, scorer=distance.OSA.distance, workers=-1, dtype=np.int32)


def _levenshtein(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return process.cpdist(a, b, scorer=distance.Levenshtein.distance, workers=-1, dtype=np.int32)


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

    @property
    def name(self) -> str:
        """The comparison's name in a model and in its output columns: the column it compares."""
        return self.column

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the comparison reads."""
        return (self.column,)

    def __post_init__(self):
        unknown = [level for level in self.without if level not in self.all_levels[:-1]]
        if unknown:
            raise SettingsError(
                f"comparison {self.column!r}: unknown level(s) {', '.join(map(repr, unknown))} in without; a "
                f"{self.kind!r} comparison has levels {', '.join(self.all_levels[:-1])} (and else, always kept)"
            )

    @property
    def all_levels(self) -> tuple[str, ...]:
        """Every level the comparison can have, from the strongest to ``else``."""
        raise NotImplementedError

    @property
    def levels(self) -> tuple[str, ...]:
        """Level names from the strongest to ``else``, without those listed in ``without``."""
        return tuple(level for level in self.all_levels if level not in self.without)

    def _conditions(self, table: Table, left: np.ndarray, right: np.ndarray):
        """Per pair, whether it is null, and one condition per level of ``all_levels`` but ``else``."""
        raise NotImplementedError

    def gamma(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The level reached by each pair (``left[i]``, ``right[i]``) of record positions; -1 = null."""
        null, conditions = self._conditions(table, left, right)
        kept = [c for level, c in zip(self.all_levels, conditions, strict=False) if level not in self.without]
        return _select(null, kept)

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

    @property
    def all_levels(self) -> tuple[str, ...]:
        return ("exact", "else")

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        return (side.null, [side.exact])


def _check_similarities(where: str, thresholds: tuple[float, ...]) -> None:
    if not thresholds or any(not 0 < t < 1 for t in thresholds):
        raise SettingsError(f"{where}: thresholds {list(thresholds)} must be similarities strictly between 0 and 1")
    if any(a <= b for a, b in zip(thresholds, thresholds[1:], strict=False)):
        raise SettingsError(f"{where}: thresholds {list(thresholds)} are out of order; list them from high to low")


def _check_distances(where: str, thresholds: tuple[int, ...]) -> None:
    if not thresholds or any(int(t) != t or t < 1 for t in thresholds):
        raise SettingsError(f"{where}: thresholds {list(thresholds)} must be whole edit distances of 1 or more")
    if any(a >= b for a, b in zip(thresholds, thresholds[1:], strict=False)):
        raise SettingsError(f"{where}: thresholds {list(thresholds)} are out of order; list them from low to high")


@dataclass(frozen=True)
class JaroWinklerAtThresholds(Comparison):
    """exact, Jaro-Winkler similarity >= each threshold (high to low), else."""

    kind: ClassVar[str] = "jaro_winkler"
    thresholds: tuple[float, ...] = (0.92, 0.88, 0.7)

    def __post_init__(self):
        super().__post_init__()
        _check_similarities(f"comparison {self.column!r}", self.thresholds)

    @property
    def all_levels(self) -> tuple[str, ...]:
        return ("exact", *(f"jaro_winkler>={t:g}" for t in self.thresholds), "else")

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        sim = _on_distinct(side, ~side.null & ~exact, _jaro_winkler, np.float32(0))
        return (side.null, [exact, *(sim >= t for t in self.thresholds)])


@dataclass(frozen=True)
class LevenshteinAtThresholds(Comparison):
    """exact, Levenshtein distance <= each threshold (low to high), else."""

    kind: ClassVar[str] = "levenshtein"
    thresholds: tuple[int, ...] = (1, 2)
    _label: ClassVar[str] = "levenshtein"

    def __post_init__(self):
        super().__post_init__()
        _check_distances(f"comparison {self.column!r}", self.thresholds)

    @property
    def all_levels(self) -> tuple[str, ...]:
        return ("exact", *(f"{self._label}<={t}" for t in self.thresholds), "else")

    def _distance(self, a, b):
        return _levenshtein(a, b)

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        far = np.int32(np.iinfo(np.int32).max)
        dist = _on_distinct(side, ~side.null & ~exact, self._distance, far)
        return (side.null, [exact, *(dist <= t for t in self.thresholds)])


@dataclass(frozen=True)
class DamerauLevenshteinAtThresholds(LevenshteinAtThresholds):
    """exact, optimal-string-alignment distance <= each threshold (a transposition is one edit), else."""

    kind: ClassVar[str] = "damerau_levenshtein"
    _label: ClassVar[str] = "damerau_levenshtein"

    def _distance(self, a, b):
        return _osa(a, b)


def _codes(texts) -> np.ndarray:
    """Integer codes of texts (equal text, equal code), with a trailing -2 that the null code -1 reads: comparing
    codes is much faster than comparing strings, and a null never equals anything."""
    return np.append(pd.factorize(pd.Series(texts, dtype=object))[0], -2)


def _fold(table: dict[str, str]) -> Callable[[np.ndarray], np.ndarray]:
    """Codes of each value with every word replaced by its formal name (``bob smith`` -> ``robert smith``)."""

    def make(values: np.ndarray) -> np.ndarray:
        words = pd.Series(values, dtype=object).str.split(" ")
        return _codes([" ".join(table.get(w, w) for w in ws) for ws in words])

    return make


@dataclass(frozen=True)
class NameComparison(Comparison):
    """Personal names: exact, swapped with ``swap_with``, nickname, initial, Jaro-Winkler thresholds, else.

    ``swap_with`` names the other name column (first name <-> last name): the pair is at level ``swapped`` when
    each record's value equals the other record's value of the other column. ``nickname``: both values fold to the
    same formal name with the shipped nickname table (Bob, Robert). ``initial``: one side is a single letter, the
    other side's first letter.
    """

    kind: ClassVar[str] = "name"
    thresholds: tuple[float, ...] = (0.92, 0.88, 0.7)
    swap_with: str | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_similarities(f"comparison {self.column!r}", self.thresholds)
        if self.swap_with == self.column:
            raise SettingsError(f"comparison {self.column!r}: swap_with names the column itself; name the other one")

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,) if self.swap_with is None else (self.column, self.swap_with)

    @property
    def all_levels(self) -> tuple[str, ...]:
        swap = ("swapped",) if self.swap_with else ()
        return ("exact", *swap, "nickname", "initial", *(f"jaro_winkler>={t:g}" for t in self.thresholds), "else")

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        conditions = [exact]
        if self.swap_with:
            this, other = table.column(self.column), table.column(self.swap_with)
            # The two columns are factorized separately: translate the other column's codes into this one's.
            # The null code -1 reads the last entry: no value.
            as_this = table.derived(
                self.swap_with, f"as:{self.column}", lambda v: np.append(pd.Index(this.values).get_indexer(v), -1)
            )
            lo, ro = as_this[other.codes[left]], as_this[other.codes[right]]
            conditions.append((side.left >= 0) & (side.right >= 0) & (side.left == ro) & (side.right == lo) & ~exact)
        todo = ~side.null & ~exact
        folded = [table.derived(self.column, f"nickname{i}", _fold(t)) for i, t in enumerate(_nickname_tables())]
        nick = np.zeros(len(left), dtype=bool)
        for fold in folded:
            nick |= todo & (fold[side.left] == fold[side.right])
        conditions.append(nick)
        single = table.derived(
            self.column, "single", lambda v: np.append(np.fromiter(map(len, v), np.int64, len(v)) == 1, False)
        )
        first = table.derived(self.column, "first", lambda v: _codes([s[:1] for s in v]))
        conditions.append(todo & (single[side.left] | single[side.right]) & (first[side.left] == first[side.right]))
        sim = _on_distinct(side, todo, _jaro_winkler, np.float32(0))
        conditions.extend(sim >= t for t in self.thresholds)
        return (side.null, conditions)


def _nickname_tables() -> tuple[dict[str, str], dict[str, str]]:
    # A nickname of two formal names (Sam: Samuel or Samantha) agrees with either.
    return nicknames(), alternative_nicknames()


_ISO = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})")


def date_parts(values: np.ndarray) -> np.ndarray:
    """``(year, month, day)`` per value; -1 where it is no date.

    ``YYYY-MM-DD`` and ``YYYYMMDD`` are split as written, so a keyed date that is no calendar date (month 13, a
    transposed 31/12) keeps its components for comparison; other formats go through the project's date parser.
    """
    parts = np.full((len(values), 3), -1, dtype=np.int64)
    text = pd.Series(values, dtype="string")
    split = text.str.extract(_ISO)
    iso = split.notna().all(axis=1).to_numpy()
    parts[iso] = split[iso].astype(np.int64).to_numpy()
    rest = ~iso
    if rest.any():
        parsed = parse_times(text[rest])
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
    a, b = (left[:, None] // powers) % 10, (right[:, None] // powers) % 10
    differ = a != b
    count = differ.sum(axis=1)
    swap = (a[:, :-1] == b[:, 1:]) & (a[:, 1:] == b[:, :-1]) & differ[:, :-1] & differ[:, 1:]
    return (count == 1) | ((count == 2) & swap.any(axis=1))


@dataclass(frozen=True)
class DateComparison(Comparison):
    """Dates by component: exact, day/month transposed, one typing error, same year and month, within 1 year,
    within 5 years, else."""

    kind: ClassVar[str] = "date"

    @property
    def all_levels(self) -> tuple[str, ...]:
        return (
            "exact",
            "day_month_transposed",
            "one_typo",
            "same_year_month",
            "within_1_year",
            "within_5_years",
            "else",
        )

    def _conditions(self, table, left, right):
        parts = table.derived(self.column, "date", date_parts)
        side = _side(table, self.column, left, right)
        lp, rp = parts[np.maximum(side.left, 0)], parts[np.maximum(side.right, 0)]
        null = side.null | (lp[:, 0] < 0) | (rp[:, 0] < 0)
        (ly, lm, ld), (ry, rm, rd) = lp.T, rp.T
        exact = (ly == ry) & (lm == rm) & (ld == rd)
        transposed = (ly == ry) & (lm == rd) & (ld == rm)
        # One keyed digit changes one component, a swap across a boundary two: only those pairs are examined.
        near = ~null & ~exact & ((ly != ry).astype(np.int8) + (lm != rm) + (ld != rd) <= 2)
        typo = np.zeros(len(left), dtype=bool)
        typo[near] = _one_keying_error(
            ly[near] * 10000 + lm[near] * 100 + ld[near], ry[near] * 10000 + rm[near] * 100 + rd[near]
        )
        # Days on a 372-day calendar: no calendar arithmetic, so keyed dates that are no real date still compare.
        days = np.abs((ly - ry) * 372 + (lm - rm) * 31 + (ld - rd))
        return (
            null,
            [exact, transposed, typo, (ly == ry) & (lm == rm), days <= 372, days <= 5 * 372],
        )


@dataclass(frozen=True)
class IdentifierComparison(Comparison):
    """Identifiers and phone numbers: exact, one typing error (an edit or a transposition), else."""

    kind: ClassVar[str] = "identifier"

    @property
    def all_levels(self) -> tuple[str, ...]:
        return ("exact", "one_typo", "else")

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        dist = _on_distinct(side, ~side.null & ~exact, _osa, np.int32(99))
        return (side.null, [exact, dist <= 1])


def _split_email(values: np.ndarray) -> np.ndarray:
    """Codes of the user name and of the domain (-2 when there is none) per address."""
    parts = pd.Series(values, dtype=object).str.rpartition("@")
    has_at = (parts[1] == "@").to_numpy()
    user = _codes(np.where(has_at, parts[0], parts[2]))
    domain = np.where(np.append(has_at, False), _codes(parts[2]), -2)
    return np.stack([user, domain], axis=1)


@dataclass(frozen=True)
class EmailComparison(Comparison):
    """E-mail addresses: exact, same user name (another domain), same domain, else."""

    kind: ClassVar[str] = "email"

    @property
    def all_levels(self) -> tuple[str, ...]:
        return ("exact", "same_user", "same_domain", "else")

    def _conditions(self, table, left, right):
        parts = table.derived(self.column, "email", _split_email)
        side = _side(table, self.column, left, right)
        lp, rp = parts[side.left], parts[side.right]
        same_user = lp[:, 0] == rp[:, 0]
        same_domain = (lp[:, 1] == rp[:, 1]) & (lp[:, 1] >= 0)
        return (side.null, [side.exact, same_user, same_domain])


@dataclass(frozen=True)
class PostalCodeComparison(Comparison):
    """Postal codes: exact, one typing error, same first ``prefix_length`` characters, else."""

    kind: ClassVar[str] = "postal_code"
    prefix_length: int = 3

    def __post_init__(self):
        super().__post_init__()
        if int(self.prefix_length) != self.prefix_length or self.prefix_length < 1:
            raise SettingsError(f"comparison {self.column!r}: prefix_length must be a whole number of 1 or more")

    @property
    def all_levels(self) -> tuple[str, ...]:
        return ("exact", "one_typo", f"same_prefix_{self.prefix_length}", "else")

    def _conditions(self, table, left, right):
        side = _side(table, self.column, left, right)
        exact = side.exact
        typo = _on_distinct(side, ~side.null & ~exact, _osa, np.int32(99)) <= 1
        k = self.prefix_length
        prefix = table.derived(self.column, f"prefix{k}", lambda v: _codes([s[:k] for s in v]))
        return (side.null, [exact, typo, prefix[side.left] == prefix[side.right]])


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
    )
}


def comparison_from_dict(spec: dict, where: str = "comparisons") -> Comparison:
    """Build a comparison from its description (``{kind: jaro_winkler, column: city, thresholds: [0.9]}``).

    Raises:
        SettingsError: an unknown kind or key, a missing column, thresholds out of order.
    """
    if not isinstance(spec, dict):
        raise SettingsError(f"{where}: a comparison is a mapping with 'kind' and 'column', not {spec!r}")
    kind = spec.get("kind")
    if kind not in LIBRARY:
        raise SettingsError(f"{where}: unknown comparison kind {kind!r}; use one of {', '.join(sorted(LIBRARY))}")
    cls = LIBRARY[kind]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(spec) - allowed - {"kind"})
    if unknown:
        raise SettingsError(
            f"{where}: unknown key(s) {', '.join(unknown)} for a {kind!r} comparison; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    if not isinstance(spec.get("column"), str) or not spec["column"]:
        raise SettingsError(f"{where}: a {kind!r} comparison needs 'column' (the column it compares)")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "kind"}
    try:
        return cls(**args)
    except SettingsError as exc:
        # The classes name the comparison by its column; from a description, its place in the list says more.
        raise SettingsError(f"{where}: {exc}") from None
