"""A default that needs no rules: comparisons and blocking rules chosen from the columns' semantic types.

Comparisons follow the kind of value a semantic type holds (names, dates, codes, addresses); a ``custom`` column
is compared as an identifier when its values are digits (account, membership, social-security numbers, house
numbers: typing errors, no spelling variants) and as text otherwise.

Blocking rules are chosen so that each kind of error one rule misses, another catches: every rule pairs two
fields (a typo in one field leaves the rules without that field), names are also blocked on their Soundex code
(spelling variants), and fields that identify a person alone (e-mail, phone, long numeric identifiers) are a rule
each. A rule whose pairs would exceed the limit on these records is left out and said so, since the user did not
write it.
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd
import yaml

from ci_pipeline.unify.normalize import Normalizer, default_normalizations
from ci_pipeline.unify.probabilistic.blocking import BlockingRule, Key, pair_count
from ci_pipeline.unify.probabilistic.comparisons import (
    Comparison,
    DateComparison,
    EmailComparison,
    ExactMatch,
    IdentifierComparison,
    JaroWinklerAtThresholds,
    NameComparison,
    PostalCodeComparison,
    SettingsError,
)
from ci_pipeline.unify.probabilistic.settings import LinkType, Settings
from ci_pipeline.unify.probabilistic.table import prepare

#: Normalizations before probabilistic comparison. Names keep their nicknames (the name comparison has a nickname
#: level of its own) and dates their written components (the date comparison reads them).
NORMALIZATIONS = {
    "full_name": ("ascii", "case", "name_plain", "whitespace"),
    "first_name": ("ascii", "case", "name_plain", "whitespace"),
    "birth_date": ("whitespace",),
    "custom": ("ascii", "case", "symbols", "whitespace"),
}

#: Semantic types that identify a person on their own: exact agreement is a blocking rule by itself.
IDENTIFYING = ("email", "phone")

#: Semantic types paired with each other in two-field blocking rules, most selective first.
PAIRED = ("last_name", "first_name", "full_name", "birth_date", "postal_code", "street", "city", "company")

#: Semantic types whose values differ much in frequency: exact agreement is term-frequency adjusted.
TERM_FREQUENCY = ("first_name", "last_name", "full_name", "middle_name", "city", "company", "street")


def normalize_records(frame: pd.DataFrame, mapping: dict[str, str], normalizer: Normalizer | None = None):
    """The mapped columns of ``frame`` normalized for probabilistic comparison (same column names)."""
    normalizer = normalizer or Normalizer()
    out = {}
    for column, semantic in mapping.items():
        if column not in frame.columns:
            raise SettingsError(f"mapping: column {column!r} is not in the data (it holds {', '.join(frame.columns)})")
        steps = NORMALIZATIONS.get(semantic) or default_normalizations(semantic)
        out[column] = normalizer.apply(frame[column], steps)
    return pd.DataFrame(out, index=frame.index)


def _numeric(values: pd.Series) -> tuple[bool, float]:
    """Whether nearly all known values are digits (spaces and dashes aside), and their median length."""
    text = values.dropna().astype("string").str.replace(r"[\s\-]", "", regex=True)
    if text.empty:
        return False, 0.0
    digits = text.str.fullmatch(r"\d+").fillna(False).astype(bool)
    return bool(digits.mean() >= 0.95), float(text.str.len().median())


def _comparison(column: str, semantic: str, mapping: dict[str, str], records: pd.DataFrame) -> Comparison:
    by_type = {t: c for c, t in mapping.items()}
    tf = semantic in TERM_FREQUENCY
    if semantic == "first_name":
        return NameComparison(column, term_frequency=tf, swap_with=by_type.get("last_name"))
    if semantic == "last_name":
        return NameComparison(column, term_frequency=tf, swap_with=by_type.get("first_name"))
    if semantic in ("full_name", "middle_name"):
        return NameComparison(column, term_frequency=tf)
    if semantic == "birth_date":
        return DateComparison(column)
    if semantic == "email":
        return EmailComparison(column)
    if semantic == "phone":
        return IdentifierComparison(column)
    if semantic == "postal_code":
        return PostalCodeComparison(column)
    if semantic in ("street", "company", "city"):
        return JaroWinklerAtThresholds(column, term_frequency=tf, thresholds=(0.92, 0.8))
    if semantic == "custom":
        numeric, _ = _numeric(records[column])
        if numeric:
            return IdentifierComparison(column)
        return JaroWinklerAtThresholds(column, term_frequency=True, thresholds=(0.92, 0.8))
    return ExactMatch(column)


def _candidate_rules(mapping: dict[str, str], records: pd.DataFrame) -> list[BlockingRule]:
    by_type = {t: c for c, t in mapping.items() if t != "custom"}
    rules = [BlockingRule((Key(by_type[t]),)) for t in IDENTIFYING if t in by_type]
    for column, semantic in mapping.items():
        if semantic == "custom":
            numeric, length = _numeric(records[column])
            # Six digits and more: an identifier; shorter numbers (house numbers, counts) are shared by many.
            if numeric and length >= 6:
                rules.append(BlockingRule((Key(column),)))
    paired = [by_type[t] for t in PAIRED if t in by_type]
    rules += [BlockingRule((Key(a), Key(b))) for a, b in combinations(paired, 2)]
    if "first_name" in by_type and "last_name" in by_type:
        # First and last name written the other way round.
        rules.append(BlockingRule((Key(by_type["first_name"], "unordered", other=by_type["last_name"]),)))
    for semantic in ("last_name", "first_name", "full_name"):
        if semantic in by_type:
            others = [by_type[t] for t in ("birth_date", "postal_code") if t in by_type]
            rules += [BlockingRule((Key(by_type[semantic], "soundex"), Key(o))) for o in others]
    return rules


def default_settings(
    records: pd.DataFrame,
    mapping: dict[str, str],
    link_type: LinkType = "dedupe",
    source: str | None = None,
    max_pairs_per_rule: int = Settings.max_pairs_per_rule,
) -> tuple[Settings, list[str]]:
    """Settings chosen from the semantic types of the mapped columns, and notes on what was left out.

    Args:
        records: the normalized records (``normalize_records``); numeric custom columns and rule sizes are read.
        mapping: column -> semantic type, as in ``unify.tables.<table>.columns``.
        link_type: ``dedupe`` or ``link_only``.
        source: column naming each record's table (for ``link_only``).
        max_pairs_per_rule: blocking rules over this on ``records`` are left out (and noted).

    Example:
        >>> settings, notes = default_settings(frame, {"given_name": "first_name", "surname": "last_name"})
        >>> print(settings_yaml(settings))
    """
    if not mapping:
        raise SettingsError("mapping: map at least one column to a semantic type")
    comparisons = tuple(_comparison(c, t, mapping, records) for c, t in mapping.items())
    table = prepare(records, list(mapping), source)
    rules, notes = [], []
    for rule in _candidate_rules(mapping, records):
        count, _ = pair_count(rule.codes(table), table.source, link_type == "link_only")
        if count > max_pairs_per_rule:
            notes.append(f"blocking rule [{rule}] left out: {count:,} pairs, over the limit of {max_pairs_per_rule:,}")
        else:
            rules.append(rule)
    if not rules:
        raise SettingsError(
            "no default blocking rule fits these records ("
            + "; ".join(notes or ["none of the mapped semantic types makes one"])
            + "): write blocking rules, or map names, birth dates, postal codes, e-mail or phone"
        )
    settings = Settings(
        comparisons=comparisons,
        blocking=tuple(rules),
        link_type=link_type,
        max_pairs_per_rule=max_pairs_per_rule,
    )
    return settings, notes


def settings_yaml(settings: Settings) -> str:
    """The settings as YAML the user can paste under ``unify.match`` and edit."""
    return yaml.safe_dump(
        {"method": "probabilistic", **settings.to_dict()}, sort_keys=False, width=120, default_flow_style=None
    )
