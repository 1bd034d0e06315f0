"""A default that needs no rules: comparisons and blocking rules chosen from the columns' semantic types.

Comparisons follow the kind of value a semantic type holds (names, dates, codes, addresses); a ``custom`` column
is compared as an identifier when its values are digits (account, membership, social-security numbers, house
numbers: typing errors, no spelling variants) and as text otherwise.

Blocking rules are chosen so that each kind of error one rule misses, another catches: every rule pairs two
fields (a typo in one field leaves the rules without that field), names are also blocked on their Soundex code
(spelling variants), and fields that identify a person alone (e-mail, phone, long numeric identifiers) are a rule
each. A rule whose pairs would exceed the limit on these records is left out and said so, since the user did not
write it. Then single fields (birth date, names) are a rule each while the pairs they add stay within a budget
proportional to the records (``PAIRS_PER_RECORD``): their pairs grow with the square of the records, so small and
mid-sized data get them and the recall they bring, and a million records keep the cost of the paired rules alone.
"""

from __future__ import annotations

import dataclasses
from itertools import combinations

import numpy as np
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
    PlaceComparison,
    PostalCodeComparison,
    SettingsError,
)
from ci_pipeline.unify.probabilistic.settings import LinkType, Settings
from ci_pipeline.unify.probabilistic.table import Table, prepare, prepare_raw

#: Normalizations before probabilistic comparison. Names keep their nicknames (the name comparison has a nickname
#: level of its own) and dates their written components (the date comparison reads them).
NORMALIZATIONS = {
    "full_name": ("ascii", "case", "name_plain", "titles", "whitespace"),
    "first_name": ("ascii", "case", "name_plain", "whitespace"),
    "birth_date": ("whitespace",),
    "birth_year": ("whitespace",),
    "custom": ("ascii", "case", "symbols", "whitespace", "identifier"),
}

#: Semantic types that identify a person on their own: exact agreement is a blocking rule by itself.
IDENTIFYING = ("email", "phone")

#: Semantic types several people may hold together (a household's e-mail address, landline or street address, a
#: company's switchboard): pairs sharing one are the first stratum fitted apart (``Settings.strata``); pairs of one
#: name (first and last, else full) are the second.
SHARED = ("email", "phone", "street")

#: A street is an address only within its place: "12 main st" is in many towns. Pairs of one street and the most
#: specific of these places that is mapped are pairs of one address. Keyed on the street alone, the stratum also
#: holds strangers of other towns, as many as the data are large: at a million generated people its two classes
#: came out as one surname (housemates taken for one person) against the rest, and pairwise precision fell to
#: 0.955; keyed on the address, 0.994, as at 100,000 people.
STREET_PLACES = ("postal_code", "city")

#: Semantic types paired with each other in two-field blocking rules, most selective first.
PAIRED = (
    "last_name",
    "first_name",
    "full_name",
    "birth_date",
    "birth_year",
    "postal_code",
    "street",
    "city",
    "company",
)

#: Semantic types members of one household do not share (they may share an address, a surname, a landline and an
#: e-mail address): a training rule needs one (see ``training_blocking``).
PERSONAL = ("first_name", "full_name", "middle_name", "birth_date", "birth_year")

#: Single-field blocking rules added while their pairs fit the budget, in this order: the field that fewest
#: strangers share first, so a budget that binds spends its pairs where they find the most matches. Each catches
#: pairs whose other fields all carry a typo or are missing. The e-mail user name (``user(email)``) is not among
#: them: namesakes share one at two providers (j.smith), and a model that takes the same user name for strong
#: evidence links them.
WIDE = ("birth_date", "last_name", "full_name", "first_name")

#: Names whose Soundex code the budget pairs with the birthday (see ``_wide_rules``), in this order.
BIRTHDAY_NAMES = ("last_name", "first_name", "full_name")

#: Candidate pairs the single-field rules may add, per record. Scoring runs at about a million pairs a second on two
#: cores (the speed target); 2 per record is at most 4 million pairs, about 4 s, for the 2 million records of a
#: million people, 2% of the 3-minute scoring run, and about as many pairs as the paired rules form per record on
#: mid-sized data, so scoring there at most doubles. A single field's pairs grow with the square of the records, so
#: the budget (which grows linearly) admits them on small and mid-sized data and leaves them out on large.
PAIRS_PER_RECORD = 2

#: Semantic types whose values differ much in frequency: exact agreement is term-frequency adjusted.
TERM_FREQUENCY = ("first_name", "last_name", "full_name", "middle_name", "city", "company", "street", "birth_date")


def _normalizations(frame: pd.DataFrame, mapping: dict[str, str], normalizer: Normalizer | None):
    """Per mapped column, the function normalizing it for probabilistic comparison."""
    normalizer = normalizer or Normalizer()
    out = {}
    for column, semantic in mapping.items():
        if column not in frame.columns:
            raise SettingsError(f"mapping: column {column!r} is not in the data (it holds {', '.join(frame.columns)})")
        steps = NORMALIZATIONS.get(semantic) or default_normalizations(semantic)
        out[column] = lambda values, steps=steps: normalizer.apply(values, steps)
    return out


def normalize_records(
    frame: pd.DataFrame, mapping: dict[str, str], normalizer: Normalizer | None = None
) -> pd.DataFrame:
    """The mapped columns of ``frame`` normalized for probabilistic comparison (same column names)."""
    normalize = _normalizations(frame, mapping, normalizer)
    return pd.DataFrame({column: f(frame[column]) for column, f in normalize.items()}, index=frame.index)


def normalized_table(
    frame: pd.DataFrame, mapping: dict[str, str], normalizer: Normalizer | None = None, source: str | None = None
) -> Table:
    """``prepare(normalize_records(frame, mapping, normalizer), mapping, source)``, normalizing each column's distinct
    values only (the normalizations work value by value)."""
    return prepare_raw(frame, _normalizations(frame, mapping, normalizer), source)


def _numeric(values: pd.Series) -> tuple[bool, float]:
    """Whether nearly all known values are digits (spaces and dashes aside), and their median length."""
    text = values.dropna().astype("string").str.replace(r"[\s\-]", "", regex=True)
    if text.empty:
        return False, 0.0
    digits = text.str.fullmatch(r"\d+").fillna(False).astype(bool)
    return bool(digits.mean() >= 0.95), float(text.str.len().median())


def _is_identifier(records: pd.DataFrame, column: str, semantic: str) -> bool:
    """A custom column of numbers of six digits or more: an identifier (account, membership, social security);
    shorter numbers (house numbers, counts) are shared by many."""
    if semantic != "custom":
        return False
    numeric, length = _numeric(records[column])
    return numeric and length >= 6


def _by_type(mapping: dict[str, str]) -> dict[str, str]:
    """Semantic type -> its column (the last one mapped when several are)."""
    return {t: c for c, t in mapping.items()}


def _text(column: str, term_frequency: bool) -> Comparison:
    """Free text (a street, a company, a town, a custom column of text): exact, Jaro-Winkler similarity of 0.92
    and of 0.8, else."""
    return JaroWinklerAtThresholds(column, term_frequency=term_frequency, thresholds=(0.92, 0.8))


def _street(column: str, term_frequency: bool) -> Comparison:
    """A street address as free text, similar only where its house numbers agree (neighbours are no typo)."""
    return JaroWinklerAtThresholds(column, term_frequency=term_frequency, thresholds=(0.92, 0.8), same_numbers=True)


#: The comparison of a column of each semantic type, made from the column and whether it is term-frequency
#: adjusted (``TERM_FREQUENCY``); a type not listed is compared exactly. First and last names, which may be swapped
#: with each other, and custom columns, digits or text, are chosen in ``_comparison``.
COMPARED_AS = {
    "full_name": NameComparison,
    "middle_name": NameComparison,
    "birth_date": DateComparison,
    # Four digits: exact, one typing error (1967/1968, 1967/1976), else.
    "birth_year": IdentifierComparison,
    "email": EmailComparison,
    "phone": IdentifierComparison,
    "postal_code": PostalCodeComparison,
    "street": _street,
    "company": _text,
    "city": _text,
}

#: The name a first or a last name may be written in place of.
SWAPPED_WITH = {"first_name": "last_name", "last_name": "first_name"}


def _comparison(column: str, semantic: str, mapping: dict[str, str], records: pd.DataFrame) -> Comparison:
    tf = semantic in TERM_FREQUENCY
    if semantic in SWAPPED_WITH:
        return NameComparison(column, term_frequency=tf, swap_with=_by_type(mapping).get(SWAPPED_WITH[semantic]))
    if semantic == "custom":
        numeric, _ = _numeric(records[column])
        return IdentifierComparison(column) if numeric else _text(column, term_frequency=True)
    return COMPARED_AS.get(semantic, ExactMatch)(column, term_frequency=tf)


def _redundant(mapping: dict[str, str]) -> set[str]:
    """Semantic types whose evidence others already hold: a full name beside its first and last name."""
    types = set(mapping.values())
    return {"full_name"} if {"first_name", "last_name"} <= types else set()


def _blocked_by_type(mapping: dict[str, str]) -> dict[str, str]:
    """``_by_type`` of the types default blocking rules read: not custom columns (an identifier among them is a
    rule of its own), nor types whose evidence others hold (``_redundant``)."""
    redundant = _redundant(mapping)
    return {t: c for t, c in _by_type(mapping).items() if t != "custom" and t not in redundant}


def default_columns(mapping: dict[str, str]) -> list[str]:
    """The mapped columns ``default_settings`` may read: all but those whose evidence others hold (a full name
    beside its first and last name is never compared nor blocked on), so the records need not hold them."""
    redundant = _redundant(mapping)
    return [c for c, t in mapping.items() if t not in redundant]


#: Location types from the most specific; one may imply the ones after it (a street address its postal code, a
#: postal code its city).
LOCATION = ("street", "postal_code", "city", "state", "country")

#: Share of different people in one place who share the more general place too, from which it counts as implied:
#: half or more. An implied place becomes a lower level of the specific place's comparison (text or postal code):
#: it counts only where the specific place is missing or differs. Among pairs agreeing on the specific place, its
#: own agreement is then worth at most log2(1 / share), a bit, where compared apart it counted its whole weight
#: again (several bits: a town shared by a thousandth of random pairs). Measured on Splink's historical persons,
#: whose postal codes share the place of birth for 78% of different people: customers F1 0.827 -> 0.895; the
#: other held-out sets unchanged.
IMPLIED_SHARE = 0.5


def _pairs(table, columns: list[str], known: np.ndarray) -> int:
    """Ordered pairs of distinct records among ``known`` agreeing on all ``columns``."""
    # A column's codes are already compact; mixed radix with each further column, re-compacted so the key stays
    # small.
    key = table.column(columns[0]).codes[known]
    for name in columns[1:]:
        column = table.column(name)
        key = pd.factorize(key * np.int64(len(column.values)) + column.codes[known])[0]
    sizes = np.bincount(key).astype(np.int64)
    return int((sizes * (sizes - 1)).sum())


def _implied(mapping: dict[str, str], table: Table, notes: list[str], within: dict[str, list[str]]):
    """Semantic types not compared on their own because a compared one already holds their evidence.

    The model counts each comparison as independent evidence. A full name beside its first and last name repeats
    them. A general place (city) repeats a specific one (postal code) when, among records of different people
    sharing the specific place (told apart by their first name), most share the general one too; that is measured,
    not assumed, since some data sets draw them independently. Such a place is added to ``within[specific]``: it
    becomes a lower level of the specific place's comparison when that one compares text or a postal code (see
    ``PlaceComparison`` and ``PostalCodeComparison.then``), so it still counts when the specific place is
    missing or differs.
    """
    implied = set(_redundant(mapping))
    by_type = _by_type(mapping)
    person = by_type.get("first_name") or by_type.get("full_name") or by_type.get("birth_date")
    if person is None:
        return implied
    kept = []
    for semantic in LOCATION:
        if semantic not in by_type:
            continue
        general = by_type[semantic]
        for specific in kept:
            # Pairs of different people: pairs agreeing on the place less those agreeing on the person's field too.
            known = np.logical_and.reduce([table.column(c).codes >= 0 for c in (specific, general, person)])
            people = _pairs(table, [specific], known) - _pairs(table, [specific, person], known)
            together = _pairs(table, [specific, general], known) - _pairs(table, [specific, general, person], known)
            share = together / people if people else 0.0
            if share >= IMPLIED_SHARE:
                implied.add(semantic)
                within.setdefault(specific, []).append(general)
                notes.append(
                    f"{semantic} ({general}) not compared: {share:.0%} of different people sharing a {specific} "
                    f"share the {general} too, so {specific} already holds that evidence"
                )
                break
        else:
            kept.append(general)
    return implied


def default_strata(mapping: dict[str, str]) -> tuple:
    """Pairs sharing a contact or an address (a street within its place, see ``STREET_PLACES``), then pairs of one
    name (see ``SHARED``)."""
    by_type = _by_type(mapping)
    place = next((by_type[t] for t in STREET_PLACES if t in by_type), None)
    shared = [((c, place),) if t == "street" and place else ((c,),) for c, t in mapping.items() if t in SHARED]
    # One name written as a nickname (Bob for Robert) is still one name: its pairs are one person or namesakes
    # like the others, not the random pairs of the main fit.
    if "first_name" in by_type and "last_name" in by_type:
        shared.append(((f"nickname({by_type['first_name']})", by_type["last_name"]),))
    elif "full_name" in by_type:
        shared.append(((f"nickname({by_type['full_name']})",),))
    return tuple(shared)


def _place(comparison: Comparison, general: list[str], notes: list[str]) -> Comparison:
    """A text place or postal code comparison with the general places it implies as its lower levels (unchanged
    without any)."""
    if not general or type(comparison) not in (JaroWinklerAtThresholds, PostalCodeComparison):
        return comparison
    notes.append(f"{', '.join(general)} compared after all, as lower levels of {comparison.column} (same_<place>)")
    if isinstance(comparison, PostalCodeComparison):
        return dataclasses.replace(comparison, then=tuple(general))
    return PlaceComparison(
        comparison.column,
        comparison.term_frequency,
        thresholds=comparison.thresholds,
        same_numbers=comparison.same_numbers,
        then=tuple(general),
    )


def _candidate_rules(mapping: dict[str, str], records: pd.DataFrame, implied: set[str]) -> list[BlockingRule]:
    by_type = _blocked_by_type(mapping)
    rules = [BlockingRule((Key(by_type[t]),)) for t in IDENTIFYING if t in by_type]
    rules += [BlockingRule((Key(c),)) for c, t in mapping.items() if _is_identifier(records, c, t)]
    paired = [t for t in PAIRED if t in by_type]
    rules += [
        BlockingRule((Key(by_type[a]), Key(by_type[b])))
        for a, b in combinations(paired, 2)
        # Two places one of which implies the other are one place: everybody living there, not a person.
        if not (a in LOCATION and b in LOCATION and {a, b} & implied)
    ]
    if "first_name" in by_type and "last_name" in by_type:
        # First and last name written the other way round.
        rules.append(BlockingRule((Key(by_type["first_name"], "unordered", other=by_type["last_name"]),)))
    for semantic in ("last_name", "first_name", "full_name"):
        if semantic in by_type:
            others = [by_type[t] for t in ("birth_date", "birth_year", "postal_code") if t in by_type]
            rules += [BlockingRule((Key(by_type[semantic], "soundex"), Key(o))) for o in others]
    return rules


def _wide_rules(mapping: dict[str, str]) -> list[BlockingRule]:
    """The rules the budget may add: a birthday with each name's Soundex code, both names' Soundex codes, then the
    single fields of ``WIDE``.

    A birthday (month and day, whatever the year) with a name's sound finds the pairs whose year of birth and
    names all carry a typing error (1959 keyed 1995, Velychko keyed Velyczko), which every rule of exact dates or
    names misses; it is far more selective than a single field, so it comes first."""
    by_type = _blocked_by_type(mapping)
    date = by_type.get("birth_date")
    birthday = [
        BlockingRule((Key(date, "birthday"), Key(by_type[t], "soundex")))
        for t in BIRTHDAY_NAMES
        if date and t in by_type
    ]
    # Both names by their sound: a typing error in each of them (Sammuel Brant for Samuel Brandt), where no date
    # or place is known on both sides to pair a name with.
    sounds = [Key(by_type[t], "soundex") for t in ("first_name", "last_name") if t in by_type]
    both = [BlockingRule(tuple(sounds))] if len(sounds) == 2 else []
    return birthday + both + [BlockingRule((Key(by_type[t]),)) for t in WIDE if t in by_type]


def _refines(rule: BlockingRule, wide: BlockingRule) -> bool:
    """Whether every pair ``rule`` finds agrees on each key of ``wide`` too: ``rule`` holds that key, or its column
    as is (a rule holding ``last_name`` and ``birth_date`` finds pairs of one birth date, and of one birthday)."""
    return all(any(k == key or (k.function is None and k.column == key.column) for k in rule.keys) for key in wide.keys)


def within_budget(
    candidates: list[BlockingRule],
    table: Table,
    link_only: bool,
    budget: int,
    notes: list[str],
    counted: dict[BlockingRule, int] | None = None,
) -> list[BlockingRule]:
    """The single-key ``candidates`` whose pairs, added up in order, stay within ``budget``; each one added or left
    out is noted with its pairs.

    A rule's pairs are counted from its key frequencies, the sum over its values of k * (k - 1) / 2 for the k
    records holding one, before any pair is built; less the pairs of the largest rule already chosen that refines
    it (``counted``: rule -> pairs), since it finds those pairs again. Other pairs found by earlier rules too are
    counted again, so the pairs actually added are at most the sum. A rule over what is left of the budget is left
    out and the next one is still considered: a smaller one may fit.
    """
    counted = counted or {}
    chosen, spent = [], 0
    for rule in candidates:
        count, _ = pair_count(rule.codes(table), table.source, link_only)
        count = max(0, count - max((n for r, n in counted.items() if _refines(r, rule)), default=0))
        if spent + count > budget:
            notes.append(
                f"blocking rule [{rule}] left out for the pair budget: {count:,} new pairs, more than the "
                f"{budget - spent:,} left of {budget:,}"
            )
            continue
        chosen.append(rule)
        spent += count
        notes.append(
            f"blocking rule [{rule}] added within the pair budget: {count:,} new pairs ({spent:,} of {budget:,} used)"
        )
    return chosen


def default_settings(
    records: pd.DataFrame,
    mapping: dict[str, str],
    link_type: LinkType = "dedupe",
    source: str | None = None,
    max_pairs_per_rule: int = Settings.max_pairs_per_rule,
    table: Table | None = None,
    pairs_per_record: float = PAIRS_PER_RECORD,
    blocking_given: bool = False,
) -> tuple[Settings, list[str]]:
    """Settings chosen from the semantic types of the mapped columns, and notes on the choice: the rules left out,
    and the single-field rules added within the pair budget or left out for it.

    Args:
        records: the normalized records (``normalize_records``); numeric custom columns and rule sizes are read.
        mapping: column -> semantic type, as in ``unify.tables.<table>.columns``.
        link_type: ``dedupe`` or ``link_only``.
        source: column naming each record's table (for ``link_only``).
        max_pairs_per_rule: blocking rules over this on ``records`` are left out (and noted).
        table: ``records`` already prepared (every mapped column), when the caller has it.
        pairs_per_record: the single-field rules (``WIDE``) may add this many candidate pairs per record (0: none).
        blocking_given: the user writes the blocking rules: none of the default's fitting is no error.

    Example:
        >>> frame = pd.DataFrame(
        ...     {"given_name": ["anna", "anna", "ben", "carl"], "surname": ["berg", "berg", "dahl", "berg"]}
        ... )
        >>> settings, notes = default_settings(frame, {"given_name": "first_name", "surname": "last_name"})
        >>> [str(rule) for rule in settings.blocking]
        ['surname & given_name', 'unordered(given_name, surname)', 'surname', 'given_name']
        >>> print(settings_yaml(settings, notes))  # doctest: +ELLIPSIS
        # blocking rule [surname] added within the pair budget: 2 new pairs (2 of 8 used)
        # blocking rule [given_name] added within the pair budget: 0 new pairs (2 of 8 used)
        method: probabilistic
        probabilistic:
          link_type: dedupe
        ...
    """
    notes: list[str] = []
    mapping = _held(records, mapping, notes)
    within: dict[str, list[str]] = {}
    if table is None:
        table = prepare(records, list(mapping), source)
    implied = _implied(mapping, table, notes, within)
    comparisons = tuple(
        _place(_comparison(c, t, mapping, records), within.get(c, []), notes)
        for c, t in mapping.items()
        if t not in implied
    )
    counted = {}
    for rule in _candidate_rules(mapping, records, implied):
        count, _ = pair_count(rule.codes(table), table.source, link_type == "link_only")
        if count > max_pairs_per_rule:
            notes.append(f"blocking rule [{rule}] left out: {count:,} pairs, over the limit of {max_pairs_per_rule:,}")
        else:
            counted[rule] = count
    rules = list(counted)
    personal = {c for c, t in mapping.items() if t in PERSONAL or _is_identifier(records, c, t)}
    budget = min(int(pairs_per_record * table.n), max_pairs_per_rule)
    wide = within_budget(_wide_rules(mapping), table, link_type == "link_only", budget, notes, counted)
    # A single personal field within the budget trains too. A comparison's m is learnt from the pairs of rules not
    # reading it; where those all pair two fields, its matches are the records that agree on both, and where a
    # copy's errors exclude one another (one altered field per copy, as test-data generators make them) these
    # matches nearly all differ in the third field: its exact agreement came out rare among matches. A rule of
    # one field conditions on less. Within the budget its pairs are few per record, so its matches are not lost
    # among strangers; over it (large data), training keeps the paired rules.
    # A rule that finds no pair trains nothing (under link_only, one on a field that only one table holds, such as
    # a census's year and month of birth): it would hide that the comparisons it leaves unmasked have no training
    # pair. The birthday rules block only: as training rules they cost precision on data whose names are common.
    single = [r for r in wide if len(r.keys) == 1]
    if link_type == "link_only":
        single = [r for r in single if pair_count(r.codes(table), table.source, True)[0] > 0]
    pairing = [r for r in rules if counted[r] > 0] + single
    training = tuple(r for r in pairing if personal & set(r.columns))
    training += _training_for_untrained(comparisons, training, pairing)
    rules += wide
    if not rules and not blocking_given:
        raise SettingsError(
            "no default blocking rule fits these records ("
            + "; ".join(notes or ["none of the mapped semantic types makes one"])
            + "): write blocking rules, or map names, birth dates, postal codes, e-mail or phone"
        )
    if not counted:
        # Only single fields block (no two fields pair up): the rule of all the others trains the one they read.
        trained_on = training or tuple(rules)
        if rest := _training_of_the_rest(
            comparisons, trained_on, list(mapping), table, link_type, max_pairs_per_rule, notes
        ):
            training = trained_on + rest
    settings = Settings(
        comparisons=comparisons,
        strata=default_strata(mapping),
        blocking=tuple(rules),
        training_blocking=training if training != tuple(rules) else (),
        link_type=link_type,
        max_pairs_per_rule=max_pairs_per_rule,
    )
    return settings, notes


def _held(records: pd.DataFrame, mapping: dict[str, str], notes: list[str]) -> dict[str, str]:
    """The mapped columns some record holds a value of; each of the others is noted and left out (a birth date
    whose every value unify could not read, a column empty in this extract): compared, it would carry no
    evidence, and a blocking or training rule on it would find no pair."""
    if not mapping:
        raise SettingsError("mapping: map at least one column to a semantic type")
    held = {c: t for c, t in mapping.items() if c not in records.columns or records[c].notna().any()}
    for column in [c for c in mapping if c not in held]:
        notes.append(
            f"{mapping[column]} ({column}) neither compared nor blocked on: no record holds a value of it (values "
            "unify cannot read count as none; the run's warnings name them)"
        )
    if not held:
        raise SettingsError(
            f"no record holds a value of any mapped column ({', '.join(mapping)}): map columns that hold the "
            "customers' names, birth dates or contacts, or see the run's warnings on values unify cannot read"
        )
    return held


def _training_for_untrained(comparisons, training: tuple, rules: list) -> tuple:
    """The other rules that leave unmasked a comparison every personal rule masks, so that it can be trained: where
    the first name is the only personal field mapped (first and last name, city, phone), every personal rule reads
    it, and a pair's first names are never compared in training. Their pairs may hold households (one surname,
    one street), whom the first name tells apart; without them training would stop."""
    untrained = [c for c in comparisons if _masked_by_all(c, training)]
    return tuple(
        r for r in rules if r not in training and any(not set(c.masked_by) & set(r.columns) for c in untrained)
    )


def _masked_by_all(comparison, rules) -> bool:
    """Whether every one of ``rules`` reads a column ``comparison`` reads, so that none of their pairs trains it."""
    return all(set(comparison.masked_by) & set(r.columns) for r in rules)


def _training_of_the_rest(
    comparisons, training: tuple, columns: list[str], table: Table, link_type: str, limit: int, notes: list[str]
) -> tuple:
    """For a comparison that every training rule still reads (a birth date the only personal field, beside a
    gender and a region), a training rule of every other of ``columns``, exact, where its pairs stay within
    ``limit``: its m is learnt from the pairs alike in all else, as a blocking rule that does not read a field
    lets it be learnt (none: training stops and says so)."""
    added = []
    for comparison in comparisons:
        if not _masked_by_all(comparison, (*training, *added)):
            continue
        rest = [c for c in columns if c not in comparison.masked_by]
        if not rest:
            continue
        rule = BlockingRule(tuple(Key(c) for c in rest))
        count, _ = pair_count(rule.codes(table), table.source, link_type == "link_only")
        if 0 < count <= limit:
            added.append(rule)
            notes.append(
                f"training rule [{rule}] added: every other rule reads {comparison.column}, whose m it learns from "
                f"the {count:,} pairs alike in all else"
            )
    return tuple(added)


def trainable(settings: Settings, table: Table, notes: list[str]) -> Settings:
    """``settings`` written by the user without training rules, with a training rule of all else added for each
    comparison every one of its blocking rules reads (noted; see ``_training_of_the_rest``): their pairs would
    leave it untrained, and training would stop. Unchanged when nothing needs one."""
    if settings.training_blocking:
        return settings
    columns = [c for c in settings.columns if c in table.columns]
    limit = settings.max_pairs_per_rule
    rest = _training_of_the_rest(
        settings.comparisons, settings.blocking, columns, table, settings.link_type, limit, notes
    )
    return dataclasses.replace(settings, training_blocking=settings.blocking + rest) if rest else settings


def settings_yaml(settings: Settings, notes: list[str] | tuple[str, ...] = ()) -> str:
    """The settings as YAML the user can paste under ``unify.match`` and edit (``method`` and ``probabilistic``),
    after ``notes`` on how they were chosen as comments (what was added, what left out and why)."""
    comments = "".join(f"# {' '.join(note.splitlines())}\n" for note in notes)
    return comments + yaml.safe_dump(
        {"method": "probabilistic", "probabilistic": settings.to_dict()},
        sort_keys=False,
        width=120,
        default_flow_style=None,
    )
