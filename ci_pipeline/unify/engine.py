"""Unification end to end on DataFrames: map -> normalize -> deduplicate -> match -> cluster -> merge -> ids."""

from __future__ import annotations

import csv
import resource
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.arrays import isin, pair_ids, take_rows
from ci_pipeline.config.unify import AttachRule, Condition, Rule, UnifyConfig
from ci_pipeline.errors import UserError
from ci_pipeline.outputs import ALTERNATE_KEY_COLUMNS, guids, identifiers
from ci_pipeline.side_by_side import each_named, started
from ci_pipeline.unify.attach import sole_namesake_links, thin_namesake_links
from ci_pipeline.unify.cluster import WEAK_DENSITY, Guard, components, densities, skip_notes
from ci_pipeline.unify.compare import Prepared, evaluate_rules, scores_json
from ci_pipeline.unify.dates import EARLIEST, LATEST, DateOrder
from ci_pipeline.unify.identity import (
    IdentityResult,
    PreviousIds,
    assign_ids,
    previous_id_codes,
    previous_ids,
    previous_positions,
)
from ci_pipeline.unify.incremental import (
    Plan,
    UnifyState,
    next_state,
    pair_conditions,
    plan,
)
from ci_pipeline.unify.merge import kept_placeholders
from ci_pipeline.unify.normalize import Normalizer, read_alias_file
from ci_pipeline.unify.records import BASE, build_records, typed_dates
from ci_pipeline.unify.text import (
    arrow_strings,
    concat_strings,
    group_starts,
    join_runs,
    pandas_strings,
    take_repeated,
)

#: The guard takes links stage by stage, in this order.
STAGE_ORDER = {"override": 0, "dedup": 1, "match": 2, "attach": 3}
SIZE_BINS = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 25), (26, 10**12)]
#: The weakly held customers listed in the statistics, weakest first (all are counted).
WEAKEST_LISTED = 100


@dataclass
class UnifyResult:
    """Everything one unification run produces (see the ``unify`` assets)."""

    records: pd.DataFrame
    customer_profile: pd.DataFrame
    alternate_key: pd.DataFrame
    match_pairs: pd.DataFrame
    dedup: dict[tuple[str, str], pd.DataFrame]
    identity: IdentityResult
    stats: dict
    timings: dict[str, float] = field(default_factory=dict)
    #: The process's peak resident memory (MB) at the end of each phase: where a run's memory high-water mark is set.
    peak_rss_mb: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: What the next run needs to unify incrementally (see :mod:`ci_pipeline.unify.incremental`).
    state: UnifyState | None = None

    def found_stats(self) -> dict:
        """The statistics of what the run found, not of how it went (incremental or not, a model's seconds): the
        same for an incremental run and a full one of the same data."""
        stats = {k: v for k, v in self.stats.items() if k != "incremental"}
        if "match_method" in stats:
            stats["match_method"] = {k: v for k, v in stats["match_method"].items() if k != "seconds"}
        return stats


def make_normalizer(config: UnifyConfig, base_dir: Path | None = None) -> Normalizer:
    """The configured normalizer, with alias maps read from their files (relative to ``base_dir``)."""
    aliases = {}
    for name, path in config.normalize.aliases.items():
        p = Path(path)
        aliases[name] = read_alias_file(p if p.is_absolute() or base_dir is None else base_dir / p, name)
    return Normalizer(
        bypass_values=tuple(config.normalize.bypass_values),
        default_region=config.normalize.default_region,
        aliases=aliases,
    )


@dataclass(frozen=True)
class Preparation:
    """The prepare phase: one frame of mapped records and their normalized, blockable values."""

    #: One row per record (``BASE`` columns, then the attributes); later phases add their columns to it.
    records: pd.DataFrame
    prep: Prepared
    #: Where a date column held values unify cannot read: ``source.table.column`` -> counts and an example.
    unreadable: dict[str, dict]
    warnings: list[str]


@dataclass(frozen=True)
class Matched:
    """The match phase: scored candidate pairs, and what clustering needs of the normalized values."""

    #: The match method's pairs (columns :data:`PAIR_COLUMNS`).
    pairs: pd.DataFrame
    #: Conflict field (as shown in notes) -> per-record code of its normalized value (-1: none).
    conflicts: dict[str, np.ndarray]
    #: Per attach rule, the codes it compares (see :func:`_attach_inputs`).
    attach_inputs: list[dict]
    #: Per table, records no rule can compare.
    uncomparable: dict[str, int]


@dataclass(frozen=True)
class OverriddenPairs:
    """Dedup and match pairs after the overrides: ``never_match`` pairs refused, ``always_match`` pairs added."""

    pairs: pd.DataFrame
    #: The ``never_match`` pairs as record positions (left, right): the guard never joins them.
    never: tuple[np.ndarray, np.ndarray]
    warnings: list[str]


@dataclass(frozen=True)
class Clustering:
    """The cluster and attach phase: a customer label per record, and the pairs as published."""

    labels: np.ndarray
    events: list[dict]
    attach_stats: list[dict]
    rule_stats: list[dict]
    #: Each customer of two or more records: size, links used inside it and density (see ``cluster.densities``).
    density: pd.DataFrame
    #: Put in their published order on a thread of their own: nothing after clustering reads them but the result.
    pairs_ahead: Future[pd.DataFrame]
    #: Warnings for ``always_match`` pairs the guard did not join.
    refused: list[str]

    @property
    def match_pairs(self) -> pd.DataFrame:
        return self.pairs_ahead.result()


@dataclass(frozen=True)
class Identified:
    """The ids phase: CustomerIds kept from the last run where possible, the profiles and alternate keys."""

    records: pd.DataFrame
    profiles: pd.DataFrame
    alternate: pd.DataFrame
    identity: IdentityResult


#: The columns of a pair frame, the contract between a match method and clustering: record positions ``left``
#: and ``right``, the rule's index and name, per-condition ``scores`` (JSON), ``strength`` (orders links for the
#: guard; higher first), ``accepted``, and the ``stage`` (``dedup``, ``match``, ``override``, ``attach``).
PAIR_COLUMNS = ["left", "right", "rule", "scores", "strength", "accepted", "stage", "rule_name"]


class MatchMethod(Protocol):
    """A match method: prepared records in, scored candidate pairs out (columns :data:`PAIR_COLUMNS`), of records of
    one table as well as of two; as :class:`ci_pipeline.unify.probabilistic_method.ProbabilisticMatches`.

    The engine reads these optional attributes, each through ``getattr``:

    - ``state_key(config) -> str | None``: what the method's pairs depend on besides the records; under the same
      key as the last run's, the run is incremental (None: every pair is scored afresh).
    - after a call: ``report`` (a dict, ``stats["match_method"]``), ``comparable`` (per record, whether the method
      could compare it), ``warnings`` (a list of texts the run shows) and ``kept_pairs`` (a frame the state keeps
      for the next run, :attr:`~ci_pipeline.unify.incremental.UnifyState.model_pairs`).

    The default, :func:`rule_matches`, is the configured rules, which the engine calls with the touched records
    itself.
    """

    def __call__(self, config: UnifyConfig, prepared: Preparation, how: Plan | None = None) -> pd.DataFrame:
        """The pairs; ``how`` is the run's plan: when incremental, the method may reuse the last run's pairs of
        untouched records, and it may note in ``how.meta`` what the next run needs to tell whether it can."""


class _Stopwatch:
    """Seconds and peak resident memory (MB) at the end of each phase."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.peak_rss_mb: dict[str, int] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._clock, 3)
        self.peak_rss_mb[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        self._clock = now


def rule_matches(config: UnifyConfig, prepared: Preparation, touched: np.ndarray | None = None) -> pd.DataFrame:
    """The configured match rules over every record: each later table matches against the tables above it.
    With ``touched`` (per record), only the pairs with a touched record."""
    records = prepared.records
    pairs = evaluate_rules(prepared.prep, config.match.rules, np.arange(len(records)), True, touched)
    pairs["stage"] = "match"
    pairs["rule_name"] = _names(config.match.rules, pairs["rule"])
    return pairs


def unify(
    config: UnifyConfig,
    frames: dict[tuple[str, str], pd.DataFrame],
    primary_keys: dict[tuple[str, str], str],
    previous_identity: pd.DataFrame | None = None,
    id_history: pd.DataFrame | None = None,
    run_id: str = "",
    base_dir: Path | None = None,
    match_method: MatchMethod = rule_matches,
    state: UnifyState | None = None,
    no_state: str = "no state of an earlier run",
) -> UnifyResult:
    """Unify customer tables into one profile per person with stable CustomerIds.

    The phases run in order, each handing a small result to the next: :func:`prepare`, :func:`deduplicate`,
    :func:`match` (through ``match_method``), :func:`apply_overrides`, :func:`cluster_and_attach`, merge
    (:func:`ci_pipeline.unify.merge.merge_profiles`) and :func:`identify`.

    Args:
        config: the ``unify`` section.
        frames: (source, table) -> ingested table, for every table of ``config.tables``.
        primary_keys: (source, table) -> primary-key column.
        previous_identity: the identity map of the last run (None on the first run).
        id_history: the cumulative id change log of earlier runs.
        run_id: the orchestrator's run id (for the change log).
        base_dir: folder that relative override and alias files are resolved against.
        match_method: how candidate pairs are found and scored (default: the configured rules; see
            :class:`MatchMethod`).
        state: what the last run kept (:attr:`UnifyResult.state`): with it, only the pairs of new and changed
            records are scored and only the customers they touch merged, the rest reused, with the same result as
            without it (see
            :mod:`ci_pipeline.unify.incremental`; ``stats["incremental"]`` says whether it was used, and why not).
        no_state: why there is no ``state`` (reported when it is None).

    Raises:
        UserError: a configured column is missing, a key is empty or duplicated, or an alias / override file is bad.
    """
    watch = _Stopwatch()
    prepared = prepare(config, frames, primary_keys, base_dir)
    last_run = _last_run_ahead(prepared.records, previous_identity)
    watch.lap("prepare")
    state_key = getattr(match_method, "state_key", None)
    method_key = state_key(config) if state_key else None
    how = plan(config, prepared.records, prepared.prep, state, match_method is rule_matches, no_state, method_key)
    prepared.prep.warm(pair_conditions(config, prepared.prep) + _read_after_matching(config))
    watch.lap("plan")
    dedup_pairs = deduplicate(config, prepared, how)
    watch.lap("dedup")
    matched = match(config, prepared, match_method, how)
    if state_key:
        how.meta["method"] = state_key(config)  # known only now for a method that trains in the run
    records = prepared.records
    found = pd.concat([dedup_pairs, matched.pairs], ignore_index=True)
    kept = next_state(config, records, prepared.prep, how, found, getattr(match_method, "kept_pairs", None))
    prepared.prep.release()
    _within_tables_as_dedup(config, records, dedup_pairs, matched)
    watch.lap("match")
    record_keys = _record_keys_ahead(records)
    overridden = apply_overrides(config, records, dedup_pairs, matched.pairs, base_dir)
    last_ids, previous_row = last_run.result() if last_run else (None, None)
    clustering = cluster_and_attach(config, records, overridden, matched, last_ids, previous_row)
    warnings = prepared.warnings + list(getattr(match_method, "warnings", ())) + overridden.warnings
    uncomparable = matched.uncomparable
    del dedup_pairs, matched, overridden  # the candidate pairs are the largest frames of a run: free them now
    watch.lap("cluster")
    # The ids depend on the clusters alone: issued on a thread of their own (mostly Arrow and NumPy, outside
    # Python's lock) while the profiles are merged.
    membership = records[["source", "table", "key", "label"]]
    identity = started(
        lambda: assign_ids(membership, previous_identity, id_history, run_id, previous_row, last_ids), "unify-ids"
    )
    profiles = how.merge(records, clustering.labels, config, primary_keys)
    kept.keep_clusters(clustering.labels, records["is_winner"].to_numpy(bool), profiles)
    records = records.drop(columns=_attributes(records))
    watch.lap("merge")
    identified = identify(config, records, profiles, primary_keys, identity.result(), record_keys.result())
    watch.lap("ids")
    records = identified.records
    stats = _run_stats(config, prepared, clustering, identified, uncomparable, how.report(), match_method)
    warnings += _guard_warnings(config, records, uncomparable, stats["guard_splits"]) + clustering.refused
    dedup_tables = _dedup_tables(records, config)
    watch.lap("outputs")
    return UnifyResult(
        records=records,
        customer_profile=typed_dates(identified.profiles),
        alternate_key=identified.alternate,
        match_pairs=clustering.match_pairs,
        dedup=dedup_tables,
        identity=identified.identity,
        stats=stats,
        timings=watch.timings,
        peak_rss_mb=watch.peak_rss_mb,
        warnings=warnings,
        state=kept,
    )


def _read_after_matching(config: UnifyConfig) -> list[Condition]:
    """The normalized columns the guard's conflict fields and the attach rules read (see :func:`match`): warmed with
    the rules' own, two at a time, where each would otherwise be normalized alone when first asked."""
    found = list(config.guard.conflict_conditions())
    for rule in config.match.attach:
        found += [Condition(field=f) for f in [*rule.same, *rule.without]] + list(rule.must_not_differ)
    return found


def _last_run_ahead(
    records: pd.DataFrame, previous_identity: pd.DataFrame | None
) -> Future[tuple[PreviousIds, np.ndarray | None]] | None:
    """The last run's ids sorted and numbered, and each record's row in its identity map (found once for the attach
    rules and the ids), begun on a thread beside the phases up to clustering: a sort of a million ids and a DuckDB
    join on the records' three identity texts, neither of which those phases need."""
    if previous_identity is None:
        return None
    identity = records[["source", "table", "key"]]  # taken here: the phases add columns to ``records`` meanwhile
    return started(
        lambda: (previous_id_codes(previous_identity), previous_positions(identity, previous_identity)),
        "unify-last-run",
    )


def _attributes(records: pd.DataFrame) -> list[str]:
    """The mapped attributes of the record frame (what merging reads), not the columns the phases added."""
    added = ("filled", "key_rank", "dedup_group", "is_winner", "label")
    return [c for c in records.columns[len(BASE) :] if c not in added]


def _frequent_entry(values: dict[str, int]) -> dict:
    """A column's values ignored as too frequent (value -> records), as the statistics report them."""
    return {
        "values": len(values),
        "records": sum(values.values()),
        "top": sorted(values.items(), key=lambda kv: -kv[1])[:5],
    }


def _run_stats(config, prepared, clustering, identified, uncomparable, incremental, match_method) -> dict:
    """The run's statistics (``UnifyResult.stats``): per table, the rules, the guard, attach and the plan."""
    stats = _stats(
        identified.records, config, clustering.rule_stats, clustering.events, prepared.prep, identified.profiles
    )
    stats["attach"] = clustering.attach_stats
    stats["unreadable_dates"] = prepared.unreadable
    stats["placeholders_kept"] = kept_placeholders(identified.profiles, config, _attributes(identified.records))
    stats["uncomparable_records"] = uncomparable
    stats["guard_splits"] = _guard_splits(clustering.events)
    stats["cluster_density"] = _density_stats(clustering.density, identified.identity.ids)
    stats["incremental"] = incremental
    if getattr(match_method, "report", None):
        stats["match_method"] = match_method.report
        # The model's row counts the pairs it compared, as a rule's counts the pairs it blocked: its published
        # pairs are only the links and near misses.
        for row in stats["rules"]:
            if row["rule"] == match_method.report.get("rule_name"):
                row["candidates"] = match_method.report["candidate_pairs"]
        for column, values in match_method.report.get("frequent_values_ignored", {}).items():
            stats["frequent_values_ignored"][f"{column} (match model)"] = _frequent_entry(values)
    return stats


def _density_stats(density: pd.DataFrame, ids: pd.Series) -> dict:
    """How well the links hold the customers together: customers of three or more records, how many of them are
    weakly held (density below :data:`WEAK_DENSITY`) and the weakest of those with their CustomerId (``ids``: per
    cluster label), weakest first, then largest, then by CustomerId."""
    larger = density[density["size"] >= 3]
    weak = larger[larger["density"] < WEAK_DENSITY]
    listed = pd.DataFrame(
        {
            "customer_id": ids.reindex(weak["cluster"].to_numpy()).to_numpy(),
            "records": weak["size"].to_numpy(),
            "links": weak["links"].to_numpy(),
            "density": weak["density"].round(3).to_numpy(),
        }
    )
    listed = listed.sort_values(["density", "records", "customer_id"], ascending=[True, False, True], kind="stable")
    return {
        "customers_of_3_or_more": len(larger),
        "weakly_held": len(weak),
        "weakest": listed.head(WEAKEST_LISTED).to_dict("records"),
    }


def prepare(
    config: UnifyConfig,
    frames: dict[tuple[str, str], pd.DataFrame],
    primary_keys: dict[tuple[str, str], str],
    base_dir: Path | None,
) -> Preparation:
    """Map every table's columns to records and normalize the values the rules compare."""
    missing = [t.ref for t in config.tables if (t.source, t.table) not in frames]
    if missing:
        raise UserError(f"unify: no data for table(s) {missing}; check unify.tables against sources")
    extra: dict[tuple[str, str], list[str]] = {}
    for spec in config.merge.fields.values():
        for src in spec.sources:
            parts = src.split(".")
            if len(parts) == 3:
                extra.setdefault((parts[0], parts[1]), []).append(parts[2])
    unreadable: dict[str, dict] = {}
    orders: dict[str, DateOrder] = {}
    records = build_records(config, frames, primary_keys, extra, unreadable, orders)
    normalizer = make_normalizer(config, base_dir)
    prep = Prepared(
        records,
        normalizer,
        config.guard.max_value_frequency,
        tuple(config.guard.frequency_fields),
        config.guard.max_block_size,
    )
    warnings = (
        config.warnings()
        + [_unreadable_note(config, where, u) for where, u in unreadable.items()]
        + [note for where, order in orders.items() if (note := date_order_note(where, order))]
    )
    return Preparation(records, prep, unreadable, warnings)


def _unreadable_note(config: UnifyConfig, where: str, u: dict) -> str:
    """The warning on a column's values unify cannot read as dates; birth dates known only in part (a year, or a
    year and month) are said to be so, and what each method does with them."""
    partial = u.get("partial", 0)
    if partial == u["values"]:
        compared = (
            "; the probabilistic model compares the parts known" if config.match.method == "probabilistic" else ""
        )
        return (
            f"unify: {where}: {partial} birth date(s) are known only in part, a year or a year and month (e.g. "
            f"{u['example']!r}): rules, the guard and merge read them as missing{compared}"
        )
    short = u.get("short_years", 0)
    return (
        f"unify: {where}: {u['values']} value(s) are not dates unify can read (e.g. {u['example']!r}; read are days "
        f"of the calendar from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}, not a day its month lacks such as 31 "
        "April); they count as missing"
        + _still_compared(config, u.get("components", 0))
        + (f" ({partial} of them known only in part, a year or a year and month)" if partial else "")
        + (
            f"; {short} of them have a year of one or two digits: write the year in full (1972, not 72), since unify "
            "does not guess the century of a birth"
            if short
            else ""
        )
    )


def _still_compared(config: UnifyConfig, components: int) -> str:
    """What the probabilistic model does with birth dates unify cannot read but whose year, month and day it could
    (a date before 1677, a keyed month 81): it compares those."""
    if config.match.method != "probabilistic" or not components:
        return ""
    return (
        f" for rules, the guard and merge; the probabilistic model still compares the year, month and day of "
        f"{components} of them"
    )


def date_order_note(where: str, order: DateOrder) -> str | None:
    """A warning when the order of day and month of a column's year-last birth dates was not plain from its values:
    none of them shows it (all days 12 or less), or a tenth as many as show it show the other order (fewer are the
    keying errors any column holds, which the model weighs as day and month transposed)."""
    if order.evidence and not order.mixed:
        return None
    read = f"unify: {where}: {order.written} birth date(s) written with the year last were read as {order.pattern}"
    if not order.evidence and not order.against:
        return (
            f"{read}, since none has a day above 12 to show the order; if they are written the other way round, "
            f"type the column as a date with its format in sources (e.g. format: "
            f'"{"%m/%d/%Y" if order.day_first else "%d/%m/%Y"}")'
        )
    return (
        f"{read} ({order.evidence} can only be read so), but {order.against} can only be read the other way "
        "round: the column mixes both orders, and those are read that way round"
    )


def deduplicate(config: UnifyConfig, prepared: Preparation, how: Plan | None = None) -> pd.DataFrame:
    """Each table's dedup rules within the table; marks each record's dedup group and the group's winner.
    With an incremental ``how``, only the pairs of touched records are scored; the others are reused.

    Returns the dedup pairs; adds ``filled``, ``key_rank``, ``dedup_group`` and ``is_winner`` to the records.
    """
    records, prep = prepared.records, prepared.prep
    ranks = records["rank"].to_numpy()
    touched = how.touched if how else None
    found = []
    for r, t in enumerate(config.tables):
        subset = np.flatnonzero(ranks == r)
        pairs = evaluate_rules(prep, t.dedup.rules, subset, False, touched)
        pairs["stage"] = "dedup"
        pairs["rule_name"] = [t.dedup.rules[i].name for i in pairs["rule"]] if len(pairs) else []
        found.append(pairs)
    dedup_pairs = pd.concat(found, ignore_index=True)
    if how:
        dedup_pairs = how.complete("dedup", dedup_pairs, ranks)
    attr_cols = [c for c in records.columns[len(BASE) :] if "." not in c]
    records["filled"] = records[attr_cols].notna().sum(axis=1).astype(np.int64)
    records["key_rank"] = pd.factorize(records["key"], sort=True)[0]
    _mark_dedup_groups(config, records, dedup_pairs)
    return dedup_pairs


def _mark_dedup_groups(config: UnifyConfig, records: pd.DataFrame, dedup_pairs: pd.DataFrame) -> None:
    """Each record's dedup group (components of the accepted dedup pairs) and whether it is the group's winner."""
    acc = dedup_pairs[dedup_pairs["accepted"]]
    records["dedup_group"] = components(len(records), acc["left"].to_numpy(), acc["right"].to_numpy())
    records["is_winner"] = _winners(records, config)


def _within_tables_as_dedup(
    config: UnifyConfig, records: pd.DataFrame, dedup_pairs: pd.DataFrame, matched: Matched
) -> None:
    """A match method's accepted pairs of two records of one table (a model scores them as it scores pairs across
    tables) are duplicates of that table: they join its dedup groups, so its dedup output and winners show them.
    They stay match pairs for the guard, which orders a model's links by weight wherever the records come from.
    The rules method pairs only records of different tables: nothing changes then."""
    pairs = matched.pairs
    if not len(pairs):
        return
    rank = records["rank"].to_numpy()
    within = (rank[pairs["left"].to_numpy()] == rank[pairs["right"].to_numpy()]) & pairs["accepted"].to_numpy(bool)
    if within.any():
        _mark_dedup_groups(config, records, pd.concat([dedup_pairs, pairs[within]], ignore_index=True))


def match(
    config: UnifyConfig, prepared: Preparation, method: MatchMethod = rule_matches, how: Plan | None = None
) -> Matched:
    """Candidate pairs by ``method`` (with an incremental ``how``: the pairs of touched records, and the others
    reused); then what clustering and attaching need of the normalized values is kept.
    The caller releases the normalized columns (``prepared.prep.release()``) once it no longer needs them."""
    records, prep = prepared.records, prepared.prep
    if method is rule_matches:
        found = rule_matches(config, prepared, how.touched if how else None)
        pairs = how.complete("match", found, records["rank"].to_numpy()) if how else found
    else:
        # On a full run too: a method notes in the plan what the next run compares to reuse its pairs.
        pairs = method(config, prepared, how)
    conflicts = {_condition_text(c): prep.codes(c) for c in config.guard.conflict_conditions()}
    conflicts |= _one_record_per_table(config, records)
    attach_inputs = [_attach_inputs(rule, config, records, prep) for rule in config.match.attach]
    uncomparable = _uncomparable(config, records, prep, getattr(method, "comparable", None))
    return Matched(pairs, conflicts, attach_inputs, uncomparable)


def apply_overrides(
    config: UnifyConfig,
    records: pd.DataFrame,
    dedup_pairs: pd.DataFrame,
    match_pairs: pd.DataFrame,
    base_dir: Path | None,
) -> OverriddenPairs:
    """Dedup and match pairs together; ``never_match`` pairs refused (noted), ``always_match`` pairs added."""
    n = len(records)
    positions = _RecordPositions(records)
    never, never_notes = _override_pairs(config, "never_match", positions, base_dir)
    always, always_notes = _override_pairs(config, "always_match", positions, base_dir)
    pairs = pd.concat([dedup_pairs, match_pairs], ignore_index=True)
    pairs["note"] = ""
    if len(never[0]):
        hit = isin(
            pair_ids(pairs["left"].to_numpy(np.int64), pairs["right"].to_numpy(np.int64), n), pair_ids(*never, n)
        )
        pairs.loc[hit & pairs["accepted"].to_numpy(), "note"] = "never_match"
        pairs.loc[hit, "accepted"] = False
    if len(always[0]):
        lo, hi = np.minimum(*always), np.maximum(*always)
        forced = pd.DataFrame(
            {
                "left": lo,
                "right": hi,
                "rule": -1,
                "scores": "{}",
                "strength": 1.0,
                "accepted": True,
                "stage": "override",
                "rule_name": "always_match",
                "note": "always_match",
            }
        )
        pairs = pd.concat([pairs, forced], ignore_index=True)
    return OverriddenPairs(pairs, never, never_notes + always_notes)


def _one_record_per_table(config: UnifyConfig, records: pd.DataFrame) -> dict[str, np.ndarray]:
    """Guard conflicts for ``link_type: link_only``, which declares the tables free of duplicates: a customer holds
    at most one record of each table (but a table with dedup rules, whose duplicates they merge). Without them, a
    chain of links across tables joins two records of one table, two people its source already told apart."""
    given = config.match.probabilistic or {}
    if config.match.method != "probabilistic" or given.get("link_type") != "link_only":
        return {}
    conflicts = {}
    rank = records["rank"].to_numpy()
    for index, t in enumerate(config.tables):
        if t.dedup.rules:
            continue
        mine = rank == index
        codes = np.full(len(records), -1, dtype=np.int64)
        codes[mine] = np.arange(int(mine.sum()))
        conflicts[f"records of {t.ref} (link_only: one record of a table per customer)"] = codes
    return conflicts


def cluster_and_attach(
    config: UnifyConfig,
    records: pd.DataFrame,
    overridden: OverriddenPairs,
    matched: Matched,
    last_ids: PreviousIds | None,
    previous_row: np.ndarray | None,
) -> Clustering:
    """Accepted links joined into customers under the over-merge guard; then name-only customers attached and the
    customers rebuilt with those links last. Adds ``label`` to the records."""
    n = len(records)
    pairs, never, conflicts = overridden.pairs, overridden.never, matched.conflicts
    links = _links(pairs)
    guard = Guard(n, never, config.guard.max_cluster_size, conflicts)
    labels, skipped, events = guard.clusters(links)
    attach_pairs, attach_stats = _attach(
        config.match.attach, matched.attach_inputs, labels, _previous_codes(last_ids, previous_row)
    )
    if len(attach_pairs):
        # Attachment links are the weakest evidence: the guard takes them last when it rebuilds a customer (and
        # decides again only the customers they reach).
        pairs = pd.concat([pairs, attach_pairs], ignore_index=True)
        links = _links(pairs)
        labels, skipped, events = guard.clusters(links, added=int(attach_pairs["accepted"].sum()))
    used = skipped == 0
    pairs["linked"] = False
    pairs.loc[links.index, "linked"] = used
    pairs.loc[links.index[~used], "note"] = skip_notes(skipped[~used], list(conflicts))
    records["label"] = labels
    keys = records[["source", "table", "key"]]
    published = started(lambda: _match_pairs(pairs, keys), "unify-match-pairs")
    density = densities(labels, links["left"].to_numpy()[used], links["right"].to_numpy()[used])
    refused = _refused_always_match(pairs, keys)
    return Clustering(labels, events, attach_stats, _rule_stats(pairs), density, published, refused)


def _refused_always_match(pairs: pd.DataFrame, keys: pd.DataFrame, shown: int = 5) -> list[str]:
    """A warning naming the ``always_match`` pairs the guard did not join (a conflict field's two values, a
    never-match pair between them), with its reason: the user listed them as one person."""
    refused = pairs[(pairs["rule_name"] == "always_match").to_numpy(bool) & ~pairs["linked"].to_numpy(bool)]
    if refused.empty:
        return []
    first = refused.iloc[:shown]
    named = [identifiers(*(keys[c].iloc[first[side]] for c in keys.columns)).tolist() for side in ("left", "right")]
    said = [f"{a} and {b} ({note})" for a, b, note in zip(*named, first["note"], strict=True)]
    more = f" and {len(refused) - shown} more" if len(refused) > shown else ""
    return [
        f"unify: {len(refused)} always_match pair(s) not joined, as the over-merge guard refused them: "
        f"{'; '.join(said)}{more} (match_pairs lists them with Linked false); correct the conflicting value or "
        "take the field out of unify.guard.conflict_fields to have them joined"
    ]


def identify(
    config: UnifyConfig,
    records: pd.DataFrame,
    profiles: pd.DataFrame,
    primary_keys: dict[tuple[str, str], str],
    identity: IdentityResult,
    record_keys: RecordKeys,
) -> Identified:
    """The clusters' CustomerIds (``identity``, see :func:`ci_pipeline.unify.identity.assign_ids`) on records and
    profiles; the profiles sorted by CustomerId; the alternate keys (``record_keys``: the records' identifiers and
    GUIDs, :func:`_record_keys`)."""
    records["CustomerId"] = records["label"].map(identity.ids).astype("string")
    profiles.insert(0, "CustomerId", identity.ids.reindex(profiles.index).astype("string").to_numpy())
    profiles["PreviousCustomerId"] = previous_ids(identity.id_change, profiles["CustomerId"]).array
    # One id per profile: the order of the ids needs no tie-breaking.
    by_id = pc.sort_indices(arrow_strings(profiles["CustomerId"])).to_numpy()
    # Each record's customer as a position in the sorted profiles, found by its label (one id per label).
    customer = pd.Index(profiles.index[by_id]).get_indexer(records["label"]).astype(np.int64)
    profiles = take_rows(profiles, by_id)
    alternate = _alternate_keys(records, config, primary_keys, profiles, customer, record_keys)
    return Identified(records, profiles, alternate, identity)


def _uncomparable(
    config: UnifyConfig, records: pd.DataFrame, prep: Prepared, by_method: np.ndarray | None = None
) -> dict[str, int]:
    """Per table, how many of its records no dedup, match or attach rule can compare (tables with none left out).

    A rule compares a record only when the record holds every field the rule needs (its blocking fields and the
    conditions that may not be missing); a record no rule compares becomes a customer of its own. ``by_method``
    marks the records the match method compares besides the rules (a model's blocking keys).
    """
    n = len(records)
    ranks = records["rank"].to_numpy()

    def holds(conditions: list[Condition]) -> np.ndarray:
        found = np.ones(n, dtype=bool)
        for cond in conditions:
            found &= prep.normalized(cond).notna().to_numpy(bool)
        return found

    def needed(rule: Rule) -> list[Condition]:
        return rule.blocking_fields() + [c for c in rule.conditions if not c.allow_missing]

    comparable = np.zeros(n, dtype=bool) if by_method is None else by_method.copy()
    for rank, t in enumerate(config.tables):
        for rule in t.dedup.rules:
            comparable |= (ranks == rank) & holds(needed(rule))
    for rule in config.match.rules:
        comparable |= holds(needed(rule))
    for rule in config.match.attach:
        comparable |= _in_tables(records, rule.tables) & holds([Condition(field=f) for f in rule.same])
    counts = np.bincount(ranks[~comparable], minlength=len(config.tables))
    return {t.ref: int(counts[rank]) for rank, t in enumerate(config.tables) if counts[rank]}


def _guard_splits(events: list[dict]) -> dict:
    """The over-merge guard's work in totals: linked groups it rebuilt, their records and the customers made."""
    capped = [e for e in events if "size cap" in e["reason"].split(", ")]
    return {
        "groups": len(events),
        "records": sum(e["records"] for e in events),
        "customers": sum(e["parts"] for e in events),
        "size_cap_groups": len(capped),
        "size_cap_records": sum(e["records"] for e in capped),
        "size_cap_customers": sum(e["parts"] for e in capped),
        "size_cap_largest": max((e["records"] for e in capped), default=0),
    }


def size_cap_summary(splits: dict, cap: int) -> str:
    """What the size cap cut (``splits``: :func:`_guard_splits`) and what to do, in a line for the end of a run (the
    size check's description): the largest group tells the user how far to raise the cap where the records are one
    customer."""
    return (
        f"the guard cut {splits['size_cap_groups']} group(s) of linked records at the size cap of {cap}, the largest "
        f"of {splits['size_cap_largest']} records: where their records truly are one customer (a person listed "
        f"under many names, an organisation), raise unify.guard.max_cluster_size above {splits['size_cap_largest']}; "
        "else look for a placeholder value they share (match_pairs notes 'over-merge guard: size cap')"
    )


def _guard_warnings(config: UnifyConfig, records: pd.DataFrame, uncomparable: dict[str, int], splits: dict) -> list:
    """Outcomes a user must see: customers cut at the size cap, and tables whose records no rule can compare."""
    found = []
    if splits["size_cap_groups"]:
        found.append(
            f"unify: the over-merge guard split {splits['size_cap_groups']} group(s) of linked records "
            f"({splits['size_cap_records']} records, the largest {splits['size_cap_largest']}) into "
            f"{splits['size_cap_customers']} customers of at most {config.guard.max_cluster_size} records "
            "(unify.guard.max_cluster_size); where a group is cut depends on link order, not on who the people are: "
            "look for a placeholder value many records share (match_pairs notes 'over-merge guard: size cap') and "
            "add it to unify.normalize.bypass_values, or tighten the rules; where the records truly are one customer "
            "(an organisation's many records), raise unify.guard.max_cluster_size above the largest group"
        )
    sizes = records["rank"].value_counts()
    for rank, t in enumerate(config.tables):
        lost = uncomparable.get(t.ref, 0)
        if lost and lost == sizes.get(rank, 0) and not t.one_customer_per_record:
            found.append(
                f"unify: table {t.ref}: no dedup, match or attach rule can compare any of its {lost} records (none "
                f"holds every field a rule needs; it maps {', '.join(sorted(t.attributes())) or 'nothing'}, and "
                "placeholder or too frequent values count as missing), so each becomes a customer of its own; map a "
                "field the rules compare or add a rule for it"
            )
    return found


def _links(pairs: pd.DataFrame) -> pd.DataFrame:
    """The accepted pairs (their index kept) with what the guard reads of them: ``left``, ``right`` and ``order``."""
    links = pairs.loc[pairs["accepted"].to_numpy(bool), ["left", "right", "stage", "rule", "strength"]]
    return links.assign(order=_link_order(links))


def _link_order(links: pd.DataFrame) -> np.ndarray:
    """Rank of each link for the guard (lower = stronger): stage, rule, score, then record order."""
    # Looked up per distinct stage: Series.map on text costs a Python call per link.
    codes, stages = pd.factorize(links["stage"])
    stage_order = np.array([STAGE_ORDER[s] for s in stages], dtype=np.int64)[codes]
    left, right, rule = (links[c].to_numpy(np.int64) for c in ("left", "right", "rule"))
    # Stage and rule as one key, and the two records as one (both below the record count): three sort keys, not
    # five, over millions of links.
    records = int(max(left.max(initial=0), right.max(initial=0))) + 1
    stage_rule = stage_order * (int(rule.max(initial=0)) + 2) + (rule + 1)
    order = np.lexsort([left * records + right, -links["strength"].to_numpy(), stage_rule])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _attach_inputs(rule: AttachRule, config: UnifyConfig, records: pd.DataFrame, prep: Prepared) -> dict:
    """The normalized codes an attach rule needs, taken before the normalized columns are released."""
    tables = [config.table(*ref.split(".", 1)) for ref in rule.tables]
    in_tables = _in_tables(records, rule.tables)
    # Only fields these tables map can hold a value on their records (a field mapped elsewhere is empty here).
    mapped = {f for t in tables for f in t.attributes()}
    thin = in_tables
    for f in rule.without:
        if f in mapped:
            thin &= prep.codes(Condition(field=f)) < 0
    return {
        "same": [prep.codes(Condition(field=f)) for f in rule.same],
        "thin": thin,
        "differ": [prep.codes(c) for c in rule.must_not_differ],
        "among": _in_tables(records, rule.among) if rule.among else None,
    }


def _in_tables(records: pd.DataFrame, refs: list[str]) -> np.ndarray:
    """Per record, True when it comes from one of the tables (``source.table``)."""
    found = np.zeros(len(records), dtype=bool)
    for ref in refs:
        source, table = ref.split(".", 1)
        found |= ((records["source"] == source) & (records["table"] == table)).to_numpy()
    return found


def _previous_codes(last_ids: PreviousIds | None, row: np.ndarray | None) -> np.ndarray | None:
    """Per record, a code of the CustomerId it had in the last run (-1: a record the last run did not see), from
    each record's ``row`` in the last identity map (:func:`~ci_pipeline.unify.identity.previous_positions`)."""
    if row is None or last_ids is None:
        return None
    codes = last_ids.codes.astype(np.int64)
    return np.where(row >= 0, codes[np.maximum(row, 0)], -1)


def _attach(
    rules: list[AttachRule], inputs: list[dict], labels: np.ndarray, previous: np.ndarray | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The attach proposals of every rule, in order: each rule sees the customers the rules before it attached.
    ``previous`` (per record, a code of its last CustomerId) keeps last run's attachments (see attach.py) where no
    rule attaches them afresh: otherwise a rule that finds a name ambiguous would keep a record that a later rule
    (among fewer customers) attaches, and the same input would give other attach pairs than the run before."""
    if previous is not None and any(rule.keep_last_run for rule in rules):
        fresh, _ = _attach(rules, inputs, labels)
        if len(fresh):
            attached = fresh["accepted"].to_numpy(bool) & (fresh["left"].to_numpy() != fresh["right"].to_numpy())
            previous = previous.copy()
            previous[fresh["left"].to_numpy()[attached]] = -1
    current = labels.copy()
    frames, stats = [], []
    for i, (rule, data) in enumerate(zip(rules, inputs, strict=True)):
        differ_names = [_condition_text(c) for c in rule.must_not_differ]
        if rule.each_other:
            found = thin_namesake_links(
                current, data["same"], data["thin"], rule.max_expected_namesakes, data["differ"], differ_names
            )
        else:
            found = sole_namesake_links(
                current,
                data["same"],
                data["thin"],
                rule.max_expected_namesakes,
                data["differ"],
                differ_names,
                data["among"],
                f"with records in {', '.join(rule.among)}",
                previous if rule.keep_last_run else None,
            )
        stats.append({"rule": rule.name, "thin_customers": len(found.thin_labels), **found.outcomes})
        p = found.proposals
        if not len(p):
            continue
        links = found.links
        remap = np.arange(len(current))
        remap[current[links["left"].to_numpy()]] = current[links["right"].to_numpy()]
        current = remap[current]
        frames.append(
            pd.DataFrame(
                {
                    "left": p["left"],
                    "right": p["right"],
                    "rule": i,
                    # A record paired with itself was compared with nobody (no namesake, or no name to look for).
                    "scores": scores_json(rule.same, [np.ones(len(p))] * len(rule.same), len(p))
                    .where(p["left"].to_numpy() != p["right"].to_numpy(), "{}")
                    .to_numpy(),
                    "strength": 1.0,
                    "accepted": p["accepted"],
                    "stage": "attach",
                    "rule_name": rule.name,
                    "note": p["note"],
                }
            )
        )
    if not frames:
        return pd.DataFrame(), stats
    return pd.concat(frames, ignore_index=True), stats


def _condition_text(cond: Condition) -> str:
    """``email`` or, with its own normalizations, ``email (ascii, case, ..., personal_email)``."""
    return cond.field if cond.normalize is None else f"{cond.field} ({', '.join(cond.normalize)})"


def _names(rules: list[Rule], index: pd.Series) -> list[str]:
    return [rules[i].name for i in index] if len(index) else []


def _winners(records: pd.DataFrame, config: UnifyConfig) -> np.ndarray:
    """True for the surviving record of each dedup group (policy per table; ties: highest key)."""
    t_ns = records["winner_time"]
    ns = np.where(t_ns.isna(), 0, t_ns.dt.tz_convert("UTC").astype("int64").to_numpy())
    policy = records["rank"].map({r: t.dedup.winner.policy for r, t in enumerate(config.tables)}).to_numpy()
    missing = t_ns.isna().to_numpy()
    recent = np.where(missing, np.iinfo(np.int64).max, -ns)
    least = np.where(missing, np.iinfo(np.int64).max, ns)
    primary = np.where(
        policy == "most_recent", recent, np.where(policy == "least_recent", least, -records["filled"].to_numpy())
    )
    order = np.lexsort([-records["key_rank"].to_numpy(), primary, records["dedup_group"].to_numpy()])
    first = pd.Series(records["dedup_group"].to_numpy()[order]).duplicated().to_numpy()
    winner = np.zeros(len(records), dtype=bool)
    winner[order[~first]] = True
    return winner


class _RecordPositions:
    """Each record's position by its identifier (``source|table|key``), indexed when first asked: most
    configurations have no override pairs, and indexing two million identifiers takes most of a second."""

    def __init__(self, records: pd.DataFrame):
        self.records = records

    @cached_property
    def index(self) -> pd.Series:
        records = self.records
        ident = identifiers(records["source"], records["table"], records["key"]).to_numpy(dtype=object)
        return pd.Series(np.arange(len(records)), index=ident)


def override_labels(config: UnifyConfig, records: pd.DataFrame, base_dir: Path | None) -> pd.DataFrame | None:
    """The ``always_match`` pairs, inline and from their file, as labelled matches (``left``, ``right`` record
    positions, ``match`` true) for training to seed m from; None when there are none. Only matches seed m (u comes
    from random pairs), so the ``never_match`` pairs are not read. Pairs naming a record not in ``records`` are left
    out (the unification run notes them)."""
    (left, right), _ = _override_pairs(config, "always_match", _RecordPositions(records), base_dir)
    apart = left != right  # a record paired with itself says nothing of two records
    return pd.DataFrame({"left": left[apart], "right": right[apart], "match": True}) if apart.any() else None


def listed_pairs(config: UnifyConfig, kind: str) -> list[tuple]:
    """The ``never_match`` or ``always_match`` pairs (``kind``) listed in the configuration: ``(left, right, where)``,
    each side ``(source, table, key)``, as :func:`read_pair_file` gives a file's."""
    return [
        (tuple(p.left), tuple(p.right), f"unify.match.{kind}[{i}]") for i, p in enumerate(getattr(config.match, kind))
    ]


def pair_file(config: UnifyConfig, kind: str, base_dir: Path | None) -> Path | None:
    """The ``<kind>_file`` of the configuration (relative to ``base_dir``), None when there is none."""
    path = getattr(config.match, f"{kind}_file")
    if not path:
        return None
    return Path(path) if Path(path).is_absolute() or base_dir is None else base_dir / path


def _override_pairs(
    config: UnifyConfig, kind: str, positions: _RecordPositions, base_dir: Path | None
) -> tuple[tuple[np.ndarray, np.ndarray], list[str]]:
    file = pair_file(config, kind, base_dir)
    pairs = listed_pairs(config, kind) + (read_pair_file(file, kind) if file else [])
    if not pairs:
        return (np.empty(0, np.int64), np.empty(0, np.int64)), []
    position = positions.index
    left, right, notes = [], [], []
    for a, b, where in pairs:
        ia, ib = "|".join(a), "|".join(b)
        if ia not in position.index or ib not in position.index:
            notes.append(f"{where}: record {ia if ia not in position.index else ib} is not in this run; pair ignored")
            continue
        left.append(int(position[ia]))
        right.append(int(position[ib]))
    return (np.array(left, dtype=np.int64), np.array(right, dtype=np.int64)), notes


#: Column names of a file that labels each pair as a match or not.
LABEL_COLUMNS = {"match", "is_match", "label", "same_person", "duplicate"}


def read_pair_file(path: Path, kind: str) -> list[tuple]:
    """The pairs of an override file (``unify.match.<kind>_file``): ``(left, right, where)``, each side
    ``(source, table, key)`` and ``where`` the file and line.

    Raises:
        UserError: the file cannot be read, lacks the header, or has a line without six values.
    """
    header = ["left_source", "left_table", "left_key", "right_source", "right_table", "right_key"]
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would cling to the first name.
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except OSError as exc:
        raise UserError(f"unify.match.{kind}_file: cannot read {path} ({exc.strerror}); fix the path") from None
    if not rows or [c.strip() for c in rows[0]] != header:
        found = ",".join(rows[0]) if rows else "an empty file"
        # A file of labelled pairs of both kinds (a match column) is two files here: say how to split it.
        labels = any(c.strip().lower() in LABEL_COLUMNS for c in (rows[0] if rows else []))
        split = (
            ": a file of labelled pairs goes in two, the pairs of one person in always_match_file and the others "
            "in never_match_file, each naming a pair's records by source, table and key"
            if labels
            else ""
        )
        raise UserError(f"{path}: the first line must be the header {','.join(header)}, not {found}{split}")
    out, bad = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 6 or not all(c.strip() for c in row):
            bad.append(line)
            continue
        out.append((tuple(row[:3]), tuple(row[3:]), f"{path}:{line}"))
    if bad:
        raise UserError(f"{path}: line(s) {bad[:20]} need 6 non-empty values ({','.join(header)})")
    return out


class RecordKeys(NamedTuple):
    """Each record's AlternateKey identifier (``source|table|key``) and GUID, and the records' order by GUID."""

    identifier: pd.Series
    guid: pd.Series
    by_guid: np.ndarray


def _record_keys_ahead(records: pd.DataFrame) -> Future[RecordKeys]:
    """The records' AlternateKey identifiers and GUIDs, which depend on their source, table and key alone, begun on
    one thread of their own (DuckDB's too) while the rest of unification, mostly one core's work, goes on."""
    parts = [records[c] for c in ("source", "table", "key")]
    return started(lambda: _record_keys(*parts, threads=1), "unify-keys")


def _record_keys(source: pd.Series, table: pd.Series, key: pd.Series, threads: int | None = None) -> RecordKeys:
    ident = identifiers(source, table, key)
    guid = guids(ident, threads)
    return RecordKeys(ident, guid, pc.sort_indices(arrow_strings(guid)).to_numpy())


def _alternate_keys(
    records: pd.DataFrame,
    config: UnifyConfig,
    primary_keys: dict,
    profiles: pd.DataFrame,
    customer: np.ndarray,
    record_keys: RecordKeys,
) -> pd.DataFrame:
    """AlternateKey rows with KeyRing: every (source, table) of the customer with its preferred key and all keys.

    The KeyRing text is built with Arrow string kernels over the records sorted by customer, table and key: at a
    million customers, Python strings per record would cost gigabytes and most of the phase's time.
    """
    # Profiles are sorted by CustomerId, so a record's ``customer`` (its profile's position) orders records as
    # its id does.
    rank = records["rank"].to_numpy(np.int64)
    esc = _json_escape(arrow_strings(records["key"]))
    order = pc.sort_indices(
        pa.table({"c": customer, "r": rank, "k": esc}),
        sort_keys=[("c", "ascending"), ("r", "ascending"), ("k", "ascending")],
    ).to_numpy()
    starts = group_starts([customer[order], rank[order]])
    quoted = concat_strings('"', esc.take(order), '"')
    keys = join_runs(quoted, starts, ", ")

    # One entry per (customer, table): the table's preferred key is the profile's key column for that table.
    head_customer, head_rank = customer[order][starts], rank[order][starts]
    # Each table's preferred keys taken for its own entries only, then put in entry order with one take.
    parts, places = [], []
    for r, t in enumerate(config.tables):
        column = f"{t.source}_{t.table}_{primary_keys[(t.source, t.table)]}"
        at = np.flatnonzero(head_rank == r)
        parts.append(arrow_strings(profiles[config.merge.rename.get(column, column)]).take(head_customer[at]))
        places.append(at)
    preferred = pa.concat_arrays(parts).take(np.argsort(np.concatenate(places), kind="stable"))
    names = pa.array(
        [f'{{"dataSourceName": "{t.source}", "entityName": "{t.table}", "preferredKey": "' for t in config.tables],
        pa.large_string(),
    )
    entries = concat_strings(names.take(head_rank), _json_escape(preferred), '", "keys": [', keys, "]}")
    ring_starts = group_starts([head_customer])
    rings = concat_strings("[", join_runs(entries, ring_starts, ", "), "]")
    # Every customer has a record, so ring i belongs to the customer at profile position head_customer[ring_starts][i]:
    # position i itself when every profile has one (always, as the profiles are made of the records).
    holders = head_customer[ring_starts]
    whole = np.array_equal(holders, np.arange(len(holders)))
    ring_of_record = customer if whole else np.searchsorted(holders, customer)
    # The rows in the order of their key, the GUID, as the contract publishes them (the sink and the exports then
    # stream the stored table instead of reading and sorting it whole); each column gathered once in it (the key
    # rings are the largest texts).
    ident, key, by_key = record_keys
    texts = {
        "DataSourceName": records["source"],
        "EntityName": records["table"],
        "AlternateValue": records["key"],
        "CustomerId": records["CustomerId"],
        "AlternateKeyId": key,
        "msdynci_identifier": ident,
    }
    gathers = {
        name: (lambda text=text: text.astype("string").iloc[by_key].reset_index(drop=True))
        for name, text in texts.items()
    }
    gathers["KeyRing"] = lambda: pd.Series(pandas_strings(rings.take(ring_of_record[by_key])))
    # Two columns at a time: a gather of millions of texts runs in Arrow, outside Python's lock, and the other core
    # is idle while a unification makes its ids (everything after it waits for them).
    return pd.DataFrame(each_named(gathers, 2, "unify-alternate-keys"))[ALTERNATE_KEY_COLUMNS]


def _json_escape(text: pa.Array) -> pa.Array:
    """Backslashes and double quotes escaped, so the text can sit inside a JSON string."""
    # Keys rarely hold either: looking is much cheaper than rewriting every value.
    if pc.any(pc.match_substring(text, "\\")).as_py():
        text = pc.replace_substring(text, "\\", "\\\\")
    if pc.any(pc.match_substring(text, '"')).as_py():
        text = pc.replace_substring(text, '"', '\\"')
    return text


def _dedup_tables(records: pd.DataFrame, config: UnifyConfig) -> dict[tuple[str, str], pd.DataFrame]:
    out = {}
    winner_key = records["key"].where(records["is_winner"]).groupby(records["dedup_group"]).transform("first")
    size = records.groupby("dedup_group")["key"].transform("size")
    for rank, t in enumerate(config.tables):
        mask = (records["rank"] == rank).to_numpy()
        out[(t.source, t.table)] = pd.DataFrame(
            {
                "Key": records.loc[mask, "key"].astype("string"),
                "WinnerKey": winner_key[mask].astype("string"),
                "IsWinner": records.loc[mask, "is_winner"].astype(bool),
                "GroupSize": size[mask].astype("int64"),
            }
        ).sort_values("Key", kind="stable", ignore_index=True)
    return out


def _match_pairs(pairs: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """The pairs as published, sorted by left record (source, table, key), right record, stage and rule."""
    left, right = pairs["left"].to_numpy(np.int64), pairs["right"].to_numpy(np.int64)
    stage, rule = _Coded(pairs["stage"]), _Coded(pairs["rule_name"])
    # Each record's place in the order of its (source, table, key) stands for those three texts: one sort of the
    # records instead of comparing six strings per pair (millions of pairs at a million people).
    source, table = _Coded(records["source"]), _Coded(records["table"])
    n = len(records)
    place = np.empty(n, dtype=np.int64)
    key = arrow_strings(records["key"])
    by_key = pc.sort_indices(key).to_numpy()
    by_table = source.order[by_key] * (len(table.values) + 1) + table.order[by_key]
    place[by_key[np.argsort(by_table, kind="stable")]] = np.arange(n)
    # The four sort keys as one integer when it fits (a stable sort of one column is several times faster).
    labels = (len(stage.values) + 1) * (len(rule.values) + 1)
    if n * n * labels < 2**62:
        order = np.argsort(
            (place[left] * n + place[right]) * labels + stage.order * (len(rule.values) + 1) + rule.order, kind="stable"
        )
    else:
        order = np.lexsort([rule.order, stage.order, place[right], place[left]])
    # Each column is gathered once, in the published order: a random gather of millions of texts is what costs
    # (cache misses), so the few distinct sources, tables, stages and rules are gathered as codes instead.
    left, right = left[order], right[order]
    note = _Coded(pairs["note"])
    gathers = {
        "Stage": lambda: stage.take(order),
        **{
            f"{side}{name}": gather
            for side, at in (("Left", left), ("Right", right))
            for name, gather in (
                ("Source", lambda at=at: source.take(at)),
                ("Table", lambda at=at: table.take(at)),
                ("Key", lambda at=at: _take(key, at)),
            )
        },
        "Rule": lambda: rule.take(order),
        "Scores": lambda: pandas_strings(take_repeated(arrow_strings(pairs["scores"]), order)),
        "Accepted": lambda: pairs["accepted"].to_numpy(bool)[order],
        "Linked": lambda: pairs["linked"].to_numpy(bool)[order],
        "Note": lambda: note.take(order),
    }
    # Two columns at a time on threads: the gathers run in Arrow and NumPy, outside Python's lock.
    return pd.DataFrame(each_named(gathers, 2, "unify-pairs"))


class _Coded:
    """A text column as codes into its sorted distinct values (missing: -1)."""

    def __init__(self, text: pd.Series):
        self.codes, uniques = pd.factorize(text.astype("string"), sort=True, use_na_sentinel=True)
        self.values = pa.array(np.asarray(uniques, dtype=object), pa.large_string())

    @property
    def order(self) -> np.ndarray:
        """Per value, its rank among the distinct values in text order (missing last), for a stable sort."""
        return np.where(self.codes < 0, len(self.values), self.codes)

    def take(self, at: np.ndarray) -> pd.arrays.ArrowStringArray:
        codes = self.codes[at]
        return pandas_strings(self.values.take(pa.array(codes, mask=codes < 0)))


def _take(text: pa.Array, at: np.ndarray) -> pd.arrays.ArrowStringArray:
    return pandas_strings(text.take(pa.array(at)))


def _rule_stats(pairs: pd.DataFrame) -> list[dict]:
    """Candidates, accepted and linked pairs per stage and rule, in the order the rules first appear."""
    # An attach rule's row pairing a record with itself records an outcome, not a candidate.
    candidate = pairs["left"].to_numpy() != pairs["right"].to_numpy()
    # Counted on integer codes: the texts of millions of pairs as Python objects took seconds to group.
    stage_codes, stages = pd.factorize(pairs["stage"], use_na_sentinel=True)
    rule_codes, rules = pd.factorize(pairs["rule_name"], use_na_sentinel=True)
    candidate &= (stage_codes >= 0) & (rule_codes >= 0)
    width = len(rules) + 1
    group, keys = pd.factorize(stage_codes[candidate].astype(np.int64) * width + rule_codes[candidate])
    size = len(keys)
    candidates = np.bincount(group, minlength=size)
    accepted = np.bincount(group, weights=pairs["accepted"].to_numpy(bool)[candidate], minlength=size)
    linked = np.bincount(group, weights=pairs["linked"].to_numpy(bool)[candidate], minlength=size)
    return [
        {
            "stage": stages[k // width],
            "rule": rules[k % width],
            "candidates": int(candidates[g]),
            "accepted": int(accepted[g]),
            "linked": int(linked[g]),
        }
        for g, k in enumerate(keys)
    ]


def _stats(records, config, rules, events, prep, profiles) -> dict:
    per_table = []
    label_tables = records.groupby("label")["rank"].nunique()
    multi = records["label"].map(label_tables).to_numpy() > 1
    for rank, t in enumerate(config.tables):
        mask = (records["rank"] == rank).to_numpy()
        per_table.append(
            {
                "table": t.ref,
                "records": int(mask.sum()),
                "duplicates": int(mask.sum() - records.loc[mask, "dedup_group"].nunique()),
                "matched": int((mask & multi).sum()),
                "unmatched": int((mask & ~multi).sum()),
            }
        )
    sizes = records.groupby("label").size()
    hist = {
        (f"{lo}" if lo == hi else (f"{lo}+" if hi > 10**9 else f"{lo}-{hi}")): int(
            ((sizes >= lo) & (sizes <= hi)).sum()
        )
        for lo, hi in SIZE_BINS
    }
    frequent = {f"{field} ({', '.join(steps)})": _frequent_entry(v) for (field, steps), v in prep.frequent.items()}
    return {
        "records_in": int(len(records)),
        "customers": int(len(profiles)),
        "tables": per_table,
        "rules": rules,
        "cluster_sizes": hist,
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "guard_events": events,
        "frequent_values_ignored": frequent,
        "oversized_blocks": prep.oversized_blocks,
    }
