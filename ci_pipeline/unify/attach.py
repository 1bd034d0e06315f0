"""Attachment: a customer that carries nothing but a name joins the only other customer of that name.

Matching compares two records, so a support ticket signed "Angel Newman" that gives no e-mail address, phone or
address matches nothing and becomes a customer of its own. Attachment looks at customers instead. After
clustering, a customer is *thin* when all its records come from the rule's tables and none has a usable value of
the ``without`` fields. A thin customer joins a *sole namesake*: the one customer that is not thin and has a record
with the same normalized values of the ``same`` fields. It is left alone when:

- two or more customers bear the name (``ambiguous``);
- no customer does (``no namesake``);
- its own records disagree on the name, or none has all the ``same`` fields (``no name``);
- the name is too common: more than ``max_expected_namesakes`` customers would be expected to share it by chance.
  The expectation is ``C * p1 * p2 * ...``, where ``C`` is the number of customers and ``p`` is the share of them
  that hold each field's value. This is the term-frequency idea of probabilistic record linkage: the sole
  "John Smith" among a million customers is not evidence that a "John Smith" ticket is his;
- the two customers hold different values of a ``must_not_differ`` field (``conflict``): both have a value and
  they share none, such as two different personal e-mail addresses. This lets a rule also consider customers
  whose contact details matched no one (``without: []``): a ticket signed with a work address or a home phone
  that no other system holds still joins the sole namesake, while one whose personal address is not the
  namesake's stays apart.

With ``among``, only customers holding a record of the given tables count as namesakes, and the expectation counts
only them. A name shared by several customers, or too common among all of them, can still be rare among the
customers who already wrote a ticket: the one namesake among them is the likeliest author of a name-only ticket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ci_pipeline.arrays import isin

#: Why a thin customer was or was not attached (the ``attach`` statistics use these names).
OUTCOMES = ("attached", "kept", "ambiguous", "no namesake", "too common", "conflict", "no name")


#: Notes of a thin record left alone with no bearer to list (its ``match_pairs`` row pairs it with itself).
NO_NAMESAKE = "not attached: no other customer bears this name"
NO_NAME = "not attached: no whole name to look for (a part is missing, or its records disagree on it)"

#: How many of an ambiguous or too common name's bearers are listed as rejected candidates of a thin record.
MAX_LISTED_BEARERS = 5


@dataclass(frozen=True)
class Attachment:
    """What one attach rule found: its links, the candidates it refused, and each thin customer's outcome."""

    #: One row per proposal: ``left`` (a thin record), ``right`` (a record of a customer bearing its name),
    #: ``accepted`` (the sole namesake) and ``note`` (why, with the namesakes expected by chance). Refused rows list
    #: up to :data:`MAX_LISTED_BEARERS` bearers of an ambiguous or too common name, so explain can show them. A thin
    #: record with no bearer to list (``no namesake``, ``no name``) gets one row with ``right == left`` that says
    #: so: it is the only trace of why the record stayed a customer of its own.
    proposals: pd.DataFrame
    #: Labels of the thin customers this rule considered (attached or not).
    thin_labels: np.ndarray
    #: Outcome name -> number of thin customers.
    outcomes: dict[str, int]

    @property
    def links(self) -> pd.DataFrame:
        return self.proposals[self.proposals["accepted"].to_numpy(bool)]


def sole_namesake_links(
    labels: np.ndarray,
    same_codes: list[np.ndarray],
    thin: np.ndarray,
    max_expected_namesakes: float,
    differ_codes: Sequence[np.ndarray] = (),
    differ_names: Sequence[str] = (),
    among: np.ndarray | None = None,
    among_text: str = "",
    previous: np.ndarray | None = None,
) -> Attachment:
    """Links from the records of thin customers to their sole namesake.

    Args:
        labels: the customer label of each record.
        same_codes: per ``same`` field, the integer code of each record's normalized value (-1 = missing).
        thin: per record, True when it may be attached: it is from one of the rule's tables and has no usable
            value of the ``without`` fields. A customer is thin when all its records are.
        max_expected_namesakes: the most customers that may be expected to share the name by chance.
        differ_codes: per ``must_not_differ`` field, the integer code of each record's normalized value (-1 =
            missing). A sole namesake is refused when both customers hold values of a field and share none.
        differ_names: the names of those fields, for the notes.
        among: per record, True when it is from one of the rule's ``among`` tables; when given, only a customer that
            is not thin and holds such a record is a namesake, and ``C`` of the expectation counts only those.
        among_text: how the notes name those customers ("holding support.tickets").
        previous: per record, a code of the CustomerId it had in the last run (-1 = none). A thin customer whose
            records were all one customer's last run stays with the namesake that holds a record of that customer,
            if exactly one does, though the name became ambiguous or too common since (``kept``): a namesake who
            arrives later does not move a ticket attached before. A conflict still refuses.

    Returns:
        The proposals (one accepted link per thin record carrying the name of a sole namesake) and the outcome for
        each thin customer.

    Examples:
        >>> labels = np.array([0, 1, 2])  # record 2 is a name-only ticket of the person of record 0
        >>> first, last = np.array([0, 1, 0]), np.array([0, 1, 0])
        >>> a = sole_namesake_links(labels, [first, last], np.array([False, False, True]), 2.0)
        >>> a.links[["left", "right"]].to_numpy().tolist()
        [[2, 0]]
    """
    labels = np.asarray(labels, np.int64)
    customers, _, thin_record = _thin(labels, thin)
    candidate = ~thin_record
    if among is not None:
        candidate &= _any_per_label(labels, among)[labels]
    # C of the expectation: the customers a thin one could be attached to.
    population = customers if among is None else int(np.count_nonzero(_any_per_label(labels, candidate)))

    valid, key, shares = _name_keys(labels, same_codes, customers)
    expected = population * shares

    # The customers that may be chosen and bear each name, each with one record to link to (its first).
    pos = np.flatnonzero(valid & candidate)
    first = ~pd.Series(key[pos] * (labels.max(initial=0) + 1) + labels[pos]).duplicated().to_numpy()
    pos = pos[first]
    bearers = pd.DataFrame({"key": key[pos], "label": labels[pos], "pos": pos})
    count = np.bincount(key[pos], minlength=key.max(initial=0) + 1)

    thin_rows, all_thin, named = _thin_names(labels, key, valid, expected, thin_record)
    named = named.assign(bearers=count[named["key"].to_numpy()])
    outcome = np.select(
        [named["bearers"] >= 2, named["bearers"] == 0, named["expected"] > max_expected_namesakes],
        ["ambiguous", "no namesake", "too common"],
        "attached",
    )
    named = named.assign(outcome=outcome, conflict="", was=outcome)
    # The bearer each thin customer would join (-1: none).
    sole = np.full(len(count), -1, dtype=np.int64)
    alone = count[key[pos]] == 1
    sole[key[pos][alone]] = labels[pos][alone]
    chosen = np.where(outcome == "attached", sole[named["key"].to_numpy()], -1)
    if previous is not None:
        rivalled = np.isin(outcome, ["ambiguous", "too common"])
        kept = _kept_bearers(named[rivalled], bearers, labels, previous)
        is_kept = named["label"].isin(kept.index).to_numpy() & rivalled
        chosen = np.where(is_kept, named["label"].map(kept).fillna(-1).to_numpy(), chosen)
        named = named.assign(outcome=np.where(is_kept, "kept", outcome))
    named = named.assign(chosen=chosen.astype(np.int64))
    if len(differ_codes):
        named = _refuse_conflicts(named, labels, differ_codes, differ_names)
    counts = _outcome_counts(named, all_thin)
    whose = f" {among_text}" if among is not None else ""
    proposals = _proposals(named, bearers, thin_rows, max_expected_namesakes, whose, among is None)
    return Attachment(proposals=proposals, thin_labels=np.sort(all_thin), outcomes=counts)


def _refuse_conflicts(
    named: pd.DataFrame, labels: np.ndarray, differ_codes: Sequence[np.ndarray], differ_names: Sequence[str]
) -> pd.DataFrame:
    """Thin customers whose chosen namesake holds a different value of a ``must_not_differ`` field: ``conflict``,
    chosen no one, and the fields named in ``conflict``."""
    chosen = named["chosen"].to_numpy()
    would = chosen >= 0
    pairs = pd.DataFrame({"thin": named["label"].to_numpy()[would], "bearer": chosen[would]}).drop_duplicates()
    differs = _differing_fields(pairs, labels, differ_codes, differ_names)
    found = named["label"].map(differs).fillna("").to_numpy(object)
    named = named.assign(
        outcome=np.where(would & (found != ""), "conflict", named["outcome"].to_numpy()), conflict=found
    )
    return named.assign(chosen=np.where(named["outcome"] == "conflict", -1, named["chosen"]))


def _proposals(
    named: pd.DataFrame,
    bearers: pd.DataFrame,
    thin_rows: pd.DataFrame,
    max_expected_namesakes: float,
    whose: str,
    everyone: bool,
) -> pd.DataFrame:
    """One row per thin record and listed bearer (accepted where it joins the chosen one), and one row pairing a
    thin record with itself where no bearer can be listed; each with its note."""
    listed = named[named["outcome"].isin(["attached", "kept", "ambiguous", "too common", "conflict"])]
    # Only a name's first bearers can be listed, and the chosen ones: the rest are left out before the join (a
    # common name has thousands of bearers and thousands of thin records).
    rank = bearers.groupby("key").cumcount().to_numpy()
    bearers = bearers[(rank < MAX_LISTED_BEARERS) | isin(bearers["label"].to_numpy(), listed["chosen"].to_numpy())]
    proposals = listed.merge(bearers[["key", "pos", "label"]].rename(columns={"label": "bearer"}), on="key")
    proposals = proposals.rename(columns={"pos": "right"}).sort_values(["left", "right"], kind="stable")
    joins = (proposals["bearer"] == proposals["chosen"]).to_numpy()
    listed_rows = (proposals.groupby("left").cumcount().to_numpy() < MAX_LISTED_BEARERS) | joins
    proposals, joins = proposals[listed_rows], joins[listed_rows]
    note = _notes(proposals, joins, max_expected_namesakes, whose)
    alone = pd.concat(
        [
            named[named["outcome"] == "no namesake"].assign(
                note=NO_NAMESAKE if everyone else f"not attached: no other customer{whose} bears this name"
            ),
            thin_rows[~thin_rows["label"].isin(named["label"])].assign(expected=np.nan, note=NO_NAME),
        ]
    )
    proposals = pd.DataFrame(
        {
            "left": np.concatenate([proposals["left"].to_numpy(np.int64), alone["left"].to_numpy(np.int64)]),
            "right": np.concatenate([proposals["right"].to_numpy(np.int64), alone["left"].to_numpy(np.int64)]),
            "accepted": np.concatenate([joins, np.zeros(len(alone), bool)]),
            "expected": np.concatenate([proposals["expected"].to_numpy(float), alone["expected"].to_numpy(float)]),
            "note": np.concatenate([note.astype(object), alone["note"].to_numpy(object)]),
        }
    ).sort_values(["left", "right"], kind="stable")
    return proposals.reset_index(drop=True)


def _notes(proposals: pd.DataFrame, joins: np.ndarray, max_expected_namesakes: float, whose: str) -> np.ndarray:
    """The ``match_pairs`` note of each listed proposal: why it joins, or why the thin customer stays apart."""
    limit = f"{max_expected_namesakes:g}"
    outcome = proposals["outcome"].to_numpy(object)
    was_ambiguous = (proposals["was"] == "ambiguous").to_numpy()
    kept = outcome == "kept"
    which = np.select(
        [
            outcome == "attached",
            kept & joins & was_ambiguous,
            kept & joins,
            (outcome == "ambiguous") | (kept & was_ambiguous),
            outcome == "conflict",
        ],
        [0, 1, 2, 3, 4],
        5,
    )

    # Each kind of note built for its own rows only: most rows are of one or two kinds.
    def expected_text(rows: np.ndarray) -> np.ndarray:
        return pd.Series(np.round(proposals["expected"].to_numpy()[rows], 2)).astype("string").to_numpy()

    def bearer_text(rows: np.ndarray) -> np.ndarray:
        return proposals["bearers"].iloc[rows].astype("string").to_numpy()

    kinds = [
        lambda r: f"sole namesake{whose}; namesakes expected by chance: " + expected_text(r),
        lambda r: "kept from the last run, though " + bearer_text(r) + f" customers{whose} bear this name now",
        lambda r: (
            "kept from the last run, though the name is too common now: "
            + expected_text(r)
            + f" namesakes expected by chance (limit {limit})"
        ),
        lambda r: "not attached: " + bearer_text(r) + f" customers{whose} bear this name",
        lambda r: (
            "not attached: the sole namesake holds a different " + proposals["conflict"].to_numpy(str)[r].astype(object)
        ),
        lambda r: (
            "not attached: name too common, " + expected_text(r) + " namesakes expected by chance (limit " + limit + ")"
        ),
    ]
    note = np.empty(len(proposals), dtype=object)
    for kind, build in enumerate(kinds):
        rows = np.flatnonzero(which == kind)
        if len(rows):
            note[rows] = build(rows)
    return note


def _kept_bearers(named: pd.DataFrame, bearers: pd.DataFrame, labels: np.ndarray, previous: np.ndarray) -> pd.Series:
    """Per thin customer label, the one bearer of its name holding a record of the customer all its records were
    last run. Thin customers with records of several (or no) previous customers, or two such bearers, are absent."""
    mine = isin(labels, named["label"].to_numpy())
    own = pd.DataFrame({"label": labels[mine], "prev": previous[mine]}).groupby("label")["prev"].agg(["min", "max"])
    one = own["min"][(own["min"] == own["max"]).to_numpy() & (own["min"] >= 0).to_numpy()]
    thin = named.drop_duplicates("label")[["label", "key"]]
    thin = thin[thin["label"].isin(one.index)]
    thin = thin.assign(prev=thin["label"].map(one).to_numpy())
    found = thin.merge(bearers[["key", "label"]].rename(columns={"label": "bearer"}), on="key")
    # The previous customers of the bearers found only (not of every record).
    theirs = isin(labels, found["bearer"].to_numpy()) & (previous >= 0)
    held = pd.DataFrame({"bearer": labels[theirs], "prev": previous[theirs]}).drop_duplicates()
    found = found.merge(held, on=["bearer", "prev"])
    many = found.groupby("label")["bearer"].nunique()
    found = found[found["label"].map(many).to_numpy() == 1]
    return found.drop_duplicates("label").set_index("label")["bearer"]


def _differing_fields(
    pairs: pd.DataFrame, labels: np.ndarray, codes: Sequence[np.ndarray], names: Sequence[str]
) -> pd.Series:
    """Per thin customer label, the ``must_not_differ`` fields (joined by " and ") its namesake holds a different
    value of: both customers have a value of the field and none in common. Labels with no conflict are absent."""
    found = pd.Series("", index=pairs["thin"].to_numpy(), dtype=object)
    # The values of the customers paired only (not of every record).
    involved = isin(labels, np.concatenate([pairs["thin"].to_numpy(), pairs["bearer"].to_numpy()]))
    for field_codes, name in zip(codes, names, strict=True):
        mine = involved & (field_codes >= 0)
        held = pd.DataFrame({"label": labels[mine], "code": field_codes[mine]}).drop_duplicates()
        holders = held["label"].to_numpy()
        both = pairs[isin(pairs["thin"].to_numpy(), holders) & isin(pairs["bearer"].to_numpy(), holders)]
        shared = both.merge(held, left_on="thin", right_on="label").merge(
            held, left_on=["bearer", "code"], right_on=["label", "code"]
        )
        conflict = both["thin"][~both["thin"].isin(shared["thin"]).to_numpy()].to_numpy()
        found.loc[conflict] = np.where(
            found.loc[conflict].to_numpy(object) == "", name, found.loc[conflict] + " and " + name
        )
    return found[found.to_numpy(object) != ""]


def thin_namesake_links(
    labels: np.ndarray,
    same_codes: list[np.ndarray],
    thin: np.ndarray,
    max_expected_namesakes: float,
    differ_codes: Sequence[np.ndarray] = (),
    differ_names: Sequence[str] = (),
) -> Attachment:
    """Links joining thin customers of one name to each other, when no customer that is not thin bears it.

    Two tickets of a person known only to support, one signed with an e-mail address and one with a phone, match
    nothing and have no namesake to join. Thin customers sharing a name that is rare among the thin customers
    (``C`` of the expectation is their number) and holding no two different values of a ``must_not_differ``
    field are taken for one person: each joins the one with the lowest label. A name some customer that is not
    thin bears is left to the rules looking for a sole namesake (counted as ``ambiguous``, with no rows).

    Args: as :func:`sole_namesake_links`.

    Examples:
        >>> labels = np.array([0, 1, 2])  # records 1 and 2 are two tickets of one person known only to support
        >>> name = np.array([0, 1, 1])
        >>> a = thin_namesake_links(labels, [name, name], np.array([False, True, True]), 2.0)
        >>> a.links[["left", "right"]].to_numpy().tolist()
        [[2, 1]]
    """
    labels = np.asarray(labels, np.int64)
    customers, thin_customers, thin_record = _thin(labels, thin)
    valid, key, shares = _name_keys(labels, same_codes, customers)
    expected = thin_customers * shares

    thin_rows, all_thin, named = _thin_names(labels, key, valid, expected, thin_record)
    elsewhere = isin(named["key"].to_numpy(), key[valid & ~thin_record])
    group = named.drop_duplicates("label").groupby("key")["label"]
    named = named.assign(
        bearers=named["key"].map(group.size()).to_numpy(), anchor=named["key"].map(group.min()).to_numpy()
    )
    differs = _group_conflicts(named, labels, differ_codes, differ_names)
    named = named.assign(conflict=named["key"].map(differs).fillna("").to_numpy(object))
    outcome = np.select(
        [elsewhere, named["bearers"] == 1, named["expected"] > max_expected_namesakes, named["conflict"] != ""],
        ["ambiguous", "no namesake", "too common", "conflict"],
        "attached",
    )
    named = named.assign(outcome=outcome)
    counts = _outcome_counts(named, all_thin)

    # Each record of a joining customer links to the first record of the anchor (the lowest label of the name).
    first_of = named.groupby("label")["left"].min()
    listed = named[named["outcome"].isin(["attached", "too common", "conflict"])]
    listed = listed.assign(right=listed["anchor"].map(first_of).to_numpy())
    listed = listed[listed["label"].to_numpy() != listed["anchor"].to_numpy()]
    expected_text = pd.Series(np.round(listed["expected"].to_numpy(), 2)).astype("string").to_numpy()
    limit = f"{max_expected_namesakes:g}"
    note = np.select(
        [listed["outcome"] == "attached", listed["outcome"] == "conflict"],
        [
            "same name as other customers known only to these tables; namesakes expected by chance: " + expected_text,
            "not joined: customers of this name hold a different " + listed["conflict"].to_numpy(str).astype(object),
        ],
        "not joined: name too common, " + expected_text + " namesakes expected by chance (limit " + limit + ")",
    )
    proposals = pd.DataFrame(
        {
            "left": listed["left"].to_numpy(np.int64),
            "right": listed["right"].to_numpy(np.int64),
            "accepted": (listed["outcome"] == "attached").to_numpy(),
            "expected": listed["expected"].to_numpy(float),
            "note": note.astype(object),
        }
    ).sort_values(["left", "right"], kind="stable")
    return Attachment(proposals=proposals.reset_index(drop=True), thin_labels=np.sort(all_thin), outcomes=counts)


def _outcome_counts(named: pd.DataFrame, all_thin: np.ndarray) -> dict[str, int]:
    """Thin customers per outcome; those without a whole name to look for are ``no name``."""
    per_customer = named.drop_duplicates("label")["outcome"].value_counts()
    counts = {o: int(per_customer.get(o, 0)) for o in OUTCOMES[:-1]}
    counts["no name"] = int(len(all_thin) - per_customer.sum())
    return counts


def _thin(labels: np.ndarray, thin: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The number of customers, of thin ones (all their records are thin), and per record whether its customer is
    thin. Labels are small non-negative integers (a record position): counted per label, not grouped."""
    size = int(labels.max(initial=-1)) + 1
    present = np.bincount(labels, minlength=size) > 0
    thin_label = present & ~_any_per_label(labels, ~np.asarray(thin, bool))
    return int(np.count_nonzero(present)), int(np.count_nonzero(thin_label)), thin_label[labels]


def _any_per_label(labels: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per label value (``0 .. labels.max()``), whether any of its records is flagged."""
    return np.bincount(labels[np.asarray(flags, bool)], minlength=int(labels.max(initial=-1)) + 1) > 0


def _thin_names(
    labels: np.ndarray, key: np.ndarray, valid: np.ndarray, expected: np.ndarray, thin_record: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """The records of thin customers (``key, label, left, expected``), their labels, and those of them whose
    customer bears exactly one whole name (the others have no name to look for)."""
    rows = pd.DataFrame({"key": key, "label": labels, "left": np.arange(len(labels)), "expected": expected})
    thin_rows = rows[thin_record]
    named = thin_rows[valid[thin_rows["left"].to_numpy()]]
    names_per_customer = named.drop_duplicates(["label", "key"]).groupby("label").size()
    named = named[named["label"].isin(names_per_customer.index[names_per_customer.to_numpy() == 1])]
    return thin_rows, thin_rows["label"].unique(), named


def _name_keys(
    labels: np.ndarray, same_codes: list[np.ndarray], customers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record: whether it has every ``same`` field, one integer key per whole name, and the product of the
    shares of customers holding each of its values (``p1 * p2 * ...`` of the expectation)."""
    n = len(labels)
    valid = np.ones(n, dtype=bool)
    key = np.zeros(n, dtype=np.int64)
    shares = np.ones(n)
    # One integer per (code, label): the distinct ones are the customers holding each value.
    width = np.int64(labels.max(initial=0)) + 1
    for codes in same_codes:
        valid &= codes >= 0
        held = pd.unique(codes[codes >= 0] * width + labels[codes >= 0])
        holders = np.bincount(held // width, minlength=int(codes.max(initial=0)) + 1)
        shares *= np.where(codes >= 0, holders[np.maximum(codes, 0)], 0) / max(customers, 1)
        key = pd.factorize(key * (int(codes.max(initial=0)) + 2) + (codes + 1))[0].astype(np.int64)
    return valid, key, shares


def _group_conflicts(
    named: pd.DataFrame, labels: np.ndarray, codes: Sequence[np.ndarray], names: Sequence[str]
) -> pd.Series:
    """Per name key, the ``must_not_differ`` fields (joined by " and ") of which its thin customers hold two or more
    different values. Keys with no conflict are absent."""
    found = pd.Series("", index=pd.Index(named["key"].unique()), dtype=object)
    members = named[["key", "label"]].drop_duplicates()
    for field_codes, name in zip(codes, names, strict=True):
        held = pd.DataFrame({"label": labels, "code": field_codes})[field_codes >= 0].drop_duplicates()
        distinct = members.merge(held, on="label").drop_duplicates(["key", "code"]).groupby("key").size()
        conflict = distinct.index[distinct.to_numpy() > 1]
        before = found.loc[conflict]
        found.loc[conflict] = np.where(before.to_numpy(object) == "", name, before + " and " + name)
    return found[found.to_numpy(object) != ""]
