"""Blocking: which pairs of records are scored at all, apart from how they are scored.

A blocking rule is a list of keys, each a column or a function of one (``prefix(last_name, 3)``,
``soundex(last_name)``, ``year(birth_date)``, ``user(email)``); two records form a candidate pair under the rule when
every key is known and equal on both. Rules are OR-ed: a pair found by several rules is scored once and counted under
the first rule that found it. The pairs a rule would generate are counted from its key frequencies before any pair is
built, and a rule over the configured limit is refused with its count and its most common key value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ci_pipeline.arrays import pairs_sharing_code
from ci_pipeline.grammar.blocking_keys import BlockingKeyError, KeyText, parse_key, rule_problem
from ci_pipeline.side_by_side import each
from ci_pipeline.unify.probabilistic.comparisons import SettingsError, date_parts, nickname_codes
from ci_pipeline.unify.probabilistic.table import Table


@dataclass(frozen=True)
class Key(KeyText):
    """One part of a blocking rule (its written form: :class:`~ci_pipeline.grammar.blocking_keys.KeyText`)."""

    @classmethod
    def parse(cls, text: str, where: str) -> Key:
        """Read ``last_name`` or ``function(column[, argument])`` (see ``grammar.blocking_keys.FUNCTIONS``)."""
        try:
            spec = parse_key(text)
        except BlockingKeyError as exc:
            raise SettingsError(f"{where}: {exc}") from None
        return cls(spec.column, spec.function, spec.length, spec.other)

    def codes(self, table: Table) -> np.ndarray:
        """Per record, an integer code of the key's value (-1 = unknown)."""
        col = table.column(self.column)
        if self.function is None:
            return col.codes
        if self.function == "unordered":
            return self._unordered(table)
        mapped = table.derived(self.column, f"block:{self}", self._apply)
        return np.append(mapped, -1)[col.codes]

    def _unordered(self, table: Table) -> np.ndarray:
        a, b = table.column(self.column), table.column(self.other)
        shared = pd.Index(np.union1d(a.values.astype(str), b.values.astype(str)))
        ia = np.append(shared.get_indexer(a.values.astype(str)), -1)[a.codes]
        ib = np.append(shared.get_indexer(b.values.astype(str)), -1)[b.codes]
        low, high = np.minimum(ia, ib), np.maximum(ia, ib)
        known = low >= 0
        # Compact codes: the pair counts index arrays by code.
        out = np.full(len(low), -1, dtype=np.int64)
        out[known] = pd.factorize(low[known] * np.int64(len(shared)) + high[known])[0]
        return out

    def _apply(self, values: np.ndarray) -> np.ndarray:
        if self.function == "nickname":
            codes = nickname_codes(values)[:-1]
            return np.where(codes >= 0, codes, -1).astype(np.int64)
        return pd.factorize(self.texts(values), use_na_sentinel=True)[0].astype(np.int64)

    def texts(self, values: np.ndarray) -> pd.Series:
        """The key of each of the column's ``values`` as text, as blocking compares it (``prefix(last_name, 3)``
        of "evans": "eva"); a key without a text of its own (a nickname fold, an unordered pair) is the value."""
        text = pd.Series(values, dtype="string")
        if self.function == "prefix":
            return text.str[: self.length]
        if self.function == "soundex":
            return pd.Series(soundex(values), dtype="string")
        if self.function == "user":
            return text.str.replace(r"@[^@]*$", "", regex=True).replace("", pd.NA)
        if self.function == "year":
            years = date_parts(values)[:, 0]
            return pd.Series(np.where(years >= 0, years.astype(str), None), dtype="string")
        if self.function == "birthday":
            parts = date_parts(values)
            known = (parts[:, 1] > 0) & (parts[:, 2] > 0)
            return pd.Series(np.where(known, (parts[:, 1] * 100 + parts[:, 2]).astype(str), None), dtype="string")
        return text


def key_columns(text: str) -> tuple[str, ...]:
    """The columns a key written as text reads (``nickname(first_name)`` reads ``first_name``)."""
    return Key.parse(text, "key").columns


@dataclass(frozen=True)
class BlockingRule:
    """Records pair up when all ``keys`` agree; written as a list (``[first_name, last_name]``)."""

    keys: tuple[Key, ...]

    def __str__(self) -> str:
        return " & ".join(map(str, self.keys))

    @classmethod
    def parse(cls, spec: str | list[str] | tuple[str, ...], where: str) -> BlockingRule:
        """A rule from a list of keys or one key (``[first_name, prefix(last_name, 3)]`` or ``email``)."""
        problem = rule_problem(spec)
        if problem:
            raise SettingsError(f"{where}: {problem}")
        return cls(tuple(Key.parse(k, where) for k in ([spec] if isinstance(spec, str) else spec)))

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the rule's keys read, each once, in key order."""
        return tuple(dict.fromkeys(c for k in self.keys for c in k.columns))

    def to_list(self) -> list[str]:
        """The rule as it is written in settings."""
        return [str(k) for k in self.keys]

    def codes(self, table: Table) -> np.ndarray:
        """One integer code per record for the combined key (-1 when any part is unknown); made once per table
        (read-only)."""
        return table.remember(("rule", str(self)), lambda: self._combined(table))

    def _combined(self, table: Table) -> np.ndarray:
        parts = [k.codes(table) for k in self.keys]
        known = np.logical_and.reduce([p >= 0 for p in parts])
        combined = parts[0][known]
        for part in parts[1:]:
            # Mixed radix, re-compacted after each key so the codes stay small.
            combined = pd.factorize(combined * np.int64(part.max(initial=0) + 1) + part[known])[0]
        out = np.full(table.n, -1, dtype=np.int64)
        out[known] = combined
        return out


@dataclass(frozen=True)
class RuleCount:
    """What one rule generated: ``pairs`` in all, ``new`` not found by an earlier rule."""

    rule: str
    pairs: int
    new: int


@dataclass(frozen=True)
class Blocked:
    """Candidate pairs (``left < right`` record positions, each pair once) and the count per rule."""

    left: np.ndarray
    right: np.ndarray
    rule: np.ndarray
    counts: tuple[RuleCount, ...]


def pair_count(codes: np.ndarray, source: np.ndarray, link_only: bool) -> tuple[int, int]:
    """Pairs a key generates and the position of a record holding its most common value."""
    known = codes >= 0
    if not known.any():
        return 0, -1
    if link_only:
        sources = int(source.max()) + 1
        sizes = np.bincount(codes[known] * sources + source[known]).astype(np.float64)
        sizes = np.pad(sizes, (0, -len(sizes) % sources)).reshape(-1, sources)
        total = (sizes.sum(axis=1) ** 2 - (sizes**2).sum(axis=1)) / 2
        return int(total.sum()), int(np.flatnonzero(codes == int(np.argmax(total)))[0])
    sizes = np.bincount(codes[known])
    return int((sizes * (sizes - 1) // 2).sum()), int(np.flatnonzero(codes == int(np.argmax(sizes)))[0])


def _rule_pairs(codes: np.ndarray, source: np.ndarray, link_only: bool, touched: np.ndarray | None) -> np.ndarray:
    """Pair keys ``left * n + right`` (left < right) of records sharing a known code (``link_only``: and not of one
    source; ``touched``: and one of them touched)."""
    if touched is not None:
        # Only the blocks holding a touched record can hold such a pair: the others are left out before pairing.
        reached = np.zeros(max(int(codes.max(initial=-1)), 0) + 1, dtype=bool)
        reached[codes[touched & (codes >= 0)]] = True
        codes = np.where((codes >= 0) & reached[np.maximum(codes, 0)], codes, -1)
    left, right = pairs_sharing_code(codes)
    keep = None if touched is None else touched[left] | touched[right]
    if link_only:
        other = source[left] != source[right]
        keep = other if keep is None else keep & other
    if keep is not None:
        left, right = left[keep], right[keep]
    return left * np.int64(len(codes)) + right


def _value(table: Table, column: str, position: int):
    code = table.column(column).codes[position]
    return None if code < 0 else table.column(column).values[code]


def block(
    table: Table,
    rules: tuple[BlockingRule, ...],
    max_pairs_per_rule: int,
    link_only: bool,
    touched: np.ndarray | None = None,
    where: str = "blocking",
) -> Blocked:
    """The candidate pairs of ``rules`` (OR-ed) over ``table``.

    Args:
        table: the prepared records.
        rules: the blocking rules, in order.
        max_pairs_per_rule: a rule generating more pairs than this is refused (counted over every record).
        link_only: pair only records of different sources (``table.source``).
        touched: per record, whether it is new or changed: when given, only the pairs holding one are formed
            (with the first rule that finds each, as without it); ``counts`` then count those pairs only.
        where: the settings key the rules are listed under: a refused rule is named by its key path
            (``blocking[10]``), as ``validate`` names it.

    Raises:
        SettingsError: a rule generates more than ``max_pairs_per_rule`` pairs; the message gives the count and
            the most common key value so the user can add a key or drop the rule.
    """
    if not rules:
        raise SettingsError("blocking: no blocking rule; list at least one (for example [first_name, last_name])")

    def pairs_of(index: int) -> np.ndarray:
        rule = rules[index]
        codes = rule.codes(table)
        expected, top = pair_count(codes, table.source, link_only)
        if expected > max_pairs_per_rule:
            common = ", ".join(f"{c}={_value(table, c, top)!r}" for c in rule.columns)
            raise SettingsError(
                f"{where}[{index}] [{rule}] would generate {expected:,} pairs, more than the limit of "
                f"{max_pairs_per_rule:,} (its most common key holds {common}): add a key to the rule, drop it, or "
                "raise max_pairs_per_rule"
            )
        return _rule_pairs(codes, table.source, link_only, touched)

    # Two rules at a time: their sorts and hashes run in NumPy and pandas outside Python's lock. In the rules'
    # order either way, and the first rule over the limit is the one named.
    found = each(pairs_of, range(len(rules)), 2, "model-blocking")
    # One integer per found pair and rule; sorted, each pair's first entry holds the first rule that found it.
    width = np.int64(len(rules))
    tagged = np.sort(np.concatenate([f * width + i for i, f in enumerate(found)]))
    first = tagged[np.r_[True, tagged[1:] // width != tagged[:-1] // width]] if len(tagged) else tagged
    keys, rule_index = first // width, (first % width).astype(np.int16)
    new = np.bincount(rule_index, minlength=len(rules))
    counts = tuple(RuleCount(str(r), len(f), int(n)) for r, f, n in zip(rules, found, new, strict=True))
    return Blocked(keys // table.n, keys % table.n, rule_index, counts)


_SOUNDEX = str.maketrans("bfpvcgjkqsxzdtlmnr", "111122222222334556")


_NOT_A_LETTER = re.compile(r"[^a-z]")


def soundex(values: np.ndarray) -> list[str | None]:
    """American Soundex of each value's first word (``robert`` -> ``r163``); ``None`` when it has no letter."""
    # Distinct values often share their first word ("mary", "mary ann"): each word is coded once.
    coded: dict[str, str | None] = {}
    out = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        first = str(value).lower().split(" ")[0]
        if first not in coded:
            coded[first] = _soundex_word(_NOT_A_LETTER.sub("", first))
        out.append(coded[first])
    return out


def _soundex_word(word: str) -> str | None:
    if not word:
        return None
    digits, last = [], word[0].translate(_SOUNDEX)
    for ch in word[1:]:
        code = ch.translate(_SOUNDEX)
        if code.isdigit() and code != last:
            digits.append(code)
        # h and w do not separate equal codes; vowels do.
        if ch not in "hw":
            last = code
    return (word[0] + "".join(digits) + "000")[:4]
