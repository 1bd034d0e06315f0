"""Incremental unification: what a run keeps for the next one, and how the next run reuses it exactly.

A run keeps, per record, its identity, a hash of its mapped values and its normalized values (before the masks that
depend on all records), and the dedup and match pairs it scored. The next run finds new, changed and deleted records
by identity and hash, normalizes only the new and changed ones, and scores only the pairs that involve them; the
pairs of two unchanged records are taken from the last run. The overrides, clustering and its guard, attach and
the ids run over the whole result, as a full run does; a customer whose records and dedup winners are the last
run's keeps its stored profile, and only the others are merged. A match model (``match.method: probabilistic``)
keeps the levels of its candidate pairs the same way and weighs every pair afresh (term frequencies count every
record), as long as the stored model and its settings are the last run's.

A pair of two unchanged records is the same as last run unless something that depends on all records changed for
them: a value of theirs masked as too frequent or as shared by several first names, or their block going over the
block size cap (or back under it). Those are compared with the last run's, and the unchanged records they concern
are scored again with the new ones. A changed configuration, alias map, package version, state format or match
model, a match method without a state key (a model beside match rules), or a missing or damaged state is always a
full unify, and the run says why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

import ci_pipeline
from ci_pipeline.arrays import isin, stable_order
from ci_pipeline.config.unify import Condition, Rule, UnifyConfig
from ci_pipeline.run_state import META, StateAhead, read_run_state, write_ahead
from ci_pipeline.side_by_side import each_named
from ci_pipeline.sql_text import quoted
from ci_pipeline.unify.compare import Prepared, name_variants
from ci_pipeline.unify.merge import merge_profiles
from ci_pipeline.unify.normalize import STR, Normalizer
from ci_pipeline.unify.text import arrow_strings, pandas_strings

if TYPE_CHECKING:
    from ci_pipeline.lake import Lake

#: Raised when what a state holds changes meaning: an older state is then not reused.
STATE_FORMAT = 2
#: Where the state lives in the lake.
STATE_DIR = "ci_pipeline/_state/unify"
#: Written last (:mod:`ci_pipeline.run_state`): a state without it (a run killed while writing) is no state.
META_FILE = f"{STATE_DIR}/{META}"
IDENTITY = ["source", "table", "key"]
PAIR_STATE_TYPES = {
    "left": "int64",
    "right": "int64",
    "rule": "int64",
    # Few distinct values among millions of pairs: stored as dictionaries (smaller, read 4x faster, and gathered
    # as codes when the pairs are reused).
    "scores": "category",
    "strength": "float64",
    "accepted": "bool",
    "stage": "category",
    "rule_name": "category",
}
PAIR_STATE_COLUMNS = list(PAIR_STATE_TYPES)
#: The column of the stored profiles holding each profile's cluster label.
LABEL = "__label__"


@dataclass
class UnifyState:
    """What one run keeps for the next.

    ``records``: ``source, table, key, hash`` and one column per normalized (field, normalizations), in the run's
    record order, then (once clustered) each record's cluster ``label`` and ``is_winner``. ``pairs``: the dedup and
    match pairs (positions in ``records``). ``profiles``: the merged profile of each cluster (``LABEL`` column).
    ``meta``: the fingerprint of the configuration, the masks and the oversized blocks. ``model_pairs``: with a
    match model, every candidate pair it formed (positions in ``records``, the first blocking rule, the level of
    each comparison), whatever its score.
    """

    records: pd.DataFrame
    pairs: pd.DataFrame
    meta: dict
    profiles: pd.DataFrame | None = None
    model_pairs: pd.DataFrame | None = None

    def keep_clusters(self, labels: np.ndarray, is_winner: np.ndarray, profiles: pd.DataFrame) -> None:
        """Add what merging the next run needs: the clusters, the dedup winners and the merged profiles."""
        self.records["label"] = labels
        self.records["is_winner"] = is_winner
        self.profiles = profiles.reset_index(names=LABEL)
        self.meta["profiles"] = len(self.profiles)


@dataclass
class ReusedPairs:
    """The last run's pairs of two untouched records: their rows in the stored pairs, and their records' positions
    in this run. They are gathered from the stored pairs once, in their final order (:meth:`Plan.complete`): each
    gather of millions of pairs copies their texts."""

    stored: pd.DataFrame
    rows: np.ndarray
    left: np.ndarray
    right: np.ndarray
    _coded: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def coded(self, column: str) -> pa.DictionaryArray:
        """A text column of the stored pairs as an Arrow dictionary (stored as one; encoded once if not)."""
        if column not in self._coded:
            self._coded[column] = pa.array(self.stored[column].astype("category").array)
        return self._coded[column]

    def of_stage(self, stage: str) -> np.ndarray:
        """Which of the reused pairs belong to ``stage``."""
        codes, stages = pd.factorize(self.stored["stage"], use_na_sentinel=True)
        found = np.flatnonzero(np.asarray(stages, dtype=object) == stage)
        return np.zeros(len(self.rows), dtype=bool) if not len(found) else codes[self.rows] == found[0]


@dataclass
class Plan:
    """How this run finds its pairs and merges its profiles: every pair (``touched`` None) and every profile, or
    only the pairs of touched records plus ``reused`` pairs of the last run (positions of this run), and only the
    profiles of customers whose records changed."""

    incremental: bool
    reason: str
    touched: np.ndarray | None = None
    reused: ReusedPairs | None = None
    counts: dict = field(default_factory=dict)
    #: This run's fingerprint and record hashes, for :func:`next_state`.
    meta: dict = field(default_factory=dict)
    #: Per record, its row in the last run's state when unchanged, else -1 (incremental runs).
    previous_row: np.ndarray | None = None
    last: UnifyState | None = None
    #: Per row of the last run's state, this run's position of that record when untouched, else -1.
    position: np.ndarray | None = None

    def complete(self, stage: str, found: pd.DataFrame, ranks: np.ndarray) -> pd.DataFrame:
        """The pairs of a stage: those found this run and, incrementally, the reused ones; in one order either way
        (table, rule, records), so the state a run keeps does not depend on how it found its pairs."""
        if self.reused is None:
            left = found["left"].to_numpy(np.int64)
            order = stable_order([ranks[left], found["rule"].to_numpy(), left, found["right"].to_numpy()])
            if not np.any(np.diff(order) != 1):
                return found.reset_index(drop=True)  # found in this order already (a full run's dedup pairs)
            return found.iloc[order].reset_index(drop=True)
        reused, stored = self.reused, self.reused.stored
        picked = reused.of_stage(stage)
        rows = reused.rows[picked]
        left = np.concatenate([found["left"].to_numpy(np.int64), reused.left[picked]])
        right = np.concatenate([found["right"].to_numpy(np.int64), reused.right[picked]])
        rule = np.concatenate([found["rule"].to_numpy(np.int64), stored["rule"].to_numpy(np.int64)[rows]])
        # The reused pairs keep their stored order (records keep theirs): the sort merges two sorted runs.
        order = stable_order([ranks[left], rule, left, right])
        # Each other column gathered once, from the found pairs and the stored ones side by side.
        at = np.concatenate([np.arange(len(found)), len(found) + rows])[order]
        columns = {"left": left[order], "right": right[order], "rule": rule[order]}
        # Two at a time: decoding the gathered texts (scores, stages, rule names) is most of the time, and Arrow's
        # take and its conversion to pandas strings release the GIL, so two columns use both cores.
        gathers = {c: partial(_gathered, found[c], reused, c, at) for c in found.columns if c not in columns}
        columns.update(each_named(gathers, 2, "unify-reused-pairs"))
        return pd.DataFrame({c: columns[c] for c in found.columns})

    def merge(self, records: pd.DataFrame, labels: np.ndarray, config: UnifyConfig, primary_keys: dict) -> pd.DataFrame:
        """The profiles of the clusters (see :func:`ci_pipeline.unify.merge.merge_profiles`); incrementally, a
        cluster of the same unchanged records, with the same dedup winners, as a cluster of the last run keeps that
        cluster's profile (a profile depends on its records alone), and only the others are merged."""
        last = self.last
        if not self.incremental or last is None or last.profiles is None:
            return merge_profiles(records, labels, config, primary_keys)
        row = self.previous_row
        at = np.maximum(row, 0)
        kept = (row >= 0) & (last.records["is_winner"].to_numpy(bool)[at] == records["is_winner"].to_numpy(bool))
        before = np.where(kept, last.records["label"].to_numpy(np.int64)[at], -1)
        grouped = pd.DataFrame({"label": labels, "before": before}).groupby("label")["before"]
        low, high, size = grouped.min(), grouped.max(), grouped.size()
        sizes_before = np.bincount(last.records["label"].to_numpy(np.int64), minlength=len(last.records))
        same = (low.to_numpy() == high.to_numpy()) & (low.to_numpy() >= 0)
        same &= size.to_numpy() == sizes_before[np.maximum(low.to_numpy(), 0)]
        stored = last.profiles.set_index(LABEL)
        reused = stored.loc[low.to_numpy()[same]].set_axis(pd.Index(low.index[same], name="label"))
        fresh = ~pd.Series(same, index=low.index).reindex(labels).to_numpy()
        self.counts["customers_reused"] = int(same.sum())
        if not fresh.any():
            return reused.astype("string")
        merged = merge_profiles(records[fresh], labels[fresh], config, primary_keys)
        return pd.concat([reused.astype("string"), merged]).sort_index()

    def report(self) -> dict:
        """The plan as statistics: incremental or not, why, and what was reused."""
        return {"incremental": self.incremental, "reason": self.reason, **self.counts}


def report_text(report: dict) -> str:
    """A :meth:`Plan.report` in words: ``incremental: 50,578 records (1,060 new, ...); reused ...`` or ``full: why``."""
    if not report["incremental"]:
        return "full" + (f": {report['reason']}" if report["reason"] else "")
    records = ", ".join(
        f"{report.get(f'records_{kind}', 0):,} {kind}" for kind in ("new", "changed", "deleted", "unchanged")
    )
    reused = [
        f"{report[k]:,} {what}"
        for k, what in (
            ("pairs_reused", "dedup and match pairs"),
            ("model_pairs_reused", "model candidate pairs"),
            ("customers_reused", "customers"),
        )
        if report.get(k)
    ]
    return f"incremental: {report.get('records', 0):,} records ({records})" + (
        f"; reused {', '.join(reused)}" if reused else ""
    )


def _gathered(found: pd.Series, reused: ReusedPairs, column: str, at: np.ndarray) -> pd.Series:
    """``pd.concat([found, stored]).iloc[at]`` of a column. The texts of the rules' pairs (scores, stages, rule
    names) have few distinct values: they are gathered as dictionary codes and decoded once (Arrow's take of the
    texts copies each one; see :func:`~ci_pipeline.unify.text.take_repeated`), the stored ones encoded once for
    both stages (the state keeps them as dictionaries)."""
    stored = reused.stored[column]
    if not isinstance(stored.dtype, pd.StringDtype | pd.CategoricalDtype):
        return pd.concat([found, stored], ignore_index=True).iloc[at].reset_index(drop=True)
    mine, theirs = arrow_strings(found).dictionary_encode(), reused.coded(column)
    shifted = pc.add(theirs.indices.cast(pa.int64()), len(mine.dictionary))
    codes = pa.concat_arrays([mine.indices.cast(pa.int64()), shifted])
    values = pa.concat_arrays([mine.dictionary, theirs.dictionary.cast(pa.large_string())])
    return pd.Series(pandas_strings(values.take(codes.take(pa.array(at)))))


class ReusingNormalizer:
    """The configured normalizer, reusing the last run's normalized values of unchanged records.

    A normalized value depends only on the raw value and the normalizations (see ``Normalizer.apply``), so an
    unchanged record's stored value is what normalizing it again would give. Every column it normalizes is kept
    in ``seen`` for the next run's state.
    """

    def __init__(self, base: Normalizer, previous: pd.DataFrame | None = None, source: np.ndarray | None = None):
        self.base = base
        self.previous = previous
        #: Per record of this run, its row in ``previous`` when unchanged, else -1.
        self.source = source
        self.seen: dict[str, pd.Series] = {}

    def __getattr__(self, name):
        return getattr(self.base, name)

    def apply(self, values: pd.Series, steps) -> pd.Series:
        """Normalize ``values`` (a record column named by its field) with ``steps``."""
        steps = tuple(steps)
        column = column_name(str(values.name), steps)
        if values.name is None or (self.source is not None and len(values) != len(self.source)):
            return self.base.apply(values, steps)
        if self.previous is not None and column in self.previous.columns:
            out = self._reused(values, steps, column)
        else:
            out = self.base.apply(values, steps)
        self.seen[column] = out
        return out

    def _reused(self, values: pd.Series, steps: tuple[str, ...], column: str) -> pd.Series:
        """The stored values of unchanged records and the others normalized now, gathered in one take from both
        (assigning the new ones into the stored column by a mask copied the whole column's text several times)."""
        fresh = np.flatnonzero(self.source < 0)
        stored = arrow_strings(self.previous[column])
        if len(fresh):
            stored = pa.concat_arrays([stored, arrow_strings(self.base.apply(values.iloc[fresh], steps))])
        where = self.source.copy()
        where[fresh] = len(self.previous) + np.arange(len(fresh))
        return pd.Series(pd.array(stored.take(pa.array(where)), dtype=STR), index=values.index)


def column_name(field_name: str, steps: tuple[str, ...]) -> str:
    """The state's column of a normalized field (a field name may hold any character, so JSON)."""
    return json.dumps([field_name, list(steps)])


def fingerprint(config: UnifyConfig, normalizer: Normalizer) -> str:
    """What the stored values and pairs depend on besides the records: configuration, alias maps, version."""
    text = json.dumps(
        {
            "format": STATE_FORMAT,
            "version": ci_pipeline.__version__,
            "duckdb": duckdb.__version__,
            "config": config.model_dump(mode="json"),
            "aliases": normalizer.aliases,
            "bypass": list(normalizer.bypass_values),
            "region": normalizer.default_region,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def record_hashes(records: pd.DataFrame) -> np.ndarray:
    """A hash of each record's mapped values (every column of the record frame), as signed 64-bit integers.

    DuckDB's ``hash`` of each row, over the frame's Arrow data (pandas' ``hash_pandas_object`` first turns every
    Arrow text into a Python string: 0.25 s against 0.055 s for 197,081 records, 5.8 s at two million); pandas' for
    a frame Arrow cannot take. The state's fingerprint names the DuckDB version, whose hash may change.
    """
    try:
        table = pa.Table.from_pandas(records, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pd.util.hash_pandas_object(records, index=False).to_numpy().view(np.int64)
    with duckdb.connect() as con:
        con.register("records", table)
        columns = ", ".join(map(quoted, table.column_names))
        # A plain projection keeps the rows in their order (DuckDB's preserve_insertion_order, its default).
        hashed = con.sql(f"SELECT hash({columns}) FROM records").to_arrow_table().column(0)
    return hashed.to_numpy().astype(np.uint64, copy=False).view(np.int64)


def pair_conditions(config: UnifyConfig, prep: Prepared) -> list[Condition]:
    """Every normalized column a dedup or match rule reads (blocking, conditions and the name variants scored)."""
    found = []
    for rule in _rules(config):
        for cond in [*rule.blocking_fields(), *rule.conditions]:
            found.append(cond)
            if not cond.is_exact:
                found += name_variants(cond, prep.steps(cond))
    return found


def _rules(config: UnifyConfig) -> list[Rule]:
    return [r for t in config.tables for r in t.dedup.rules] + list(config.match.rules)


def masks(config: UnifyConfig, prep: Prepared) -> dict[str, dict[str, list[str]]]:
    """Per normalized column the rules read, the values masked over all records (too frequent, shared)."""
    out = {}
    for cond in pair_conditions(config, prep):
        prep.normalized(cond)
        key = (cond.field, prep.steps(cond))
        out[column_name(*key)] = {
            "frequent": sorted(prep.frequent.get(key, {})),
            "shared": sorted(prep.shared.get(key, {})),
        }
    return out


def oversized_blocks(config: UnifyConfig, prep: Prepared, ranks: np.ndarray) -> dict[str, list]:
    """Per dedup and match rule, the blocking keys (normalized values, and the table for dedup) held by more
    records than the block size cap: their records form no pairs by that rule."""
    out = {}
    for label, rule, rank in _blocking_rules(config):
        conds = rule.blocking_fields()
        key = prep.block_key(conds)
        valid = key >= 0 if rank is None else (key >= 0) & (ranks == rank)
        sizes = np.bincount(key[valid], minlength=int(key.max(initial=0)) + 1)
        big = np.flatnonzero(sizes > prep.max_block_size)
        if not len(big):
            continue
        inside = np.flatnonzero(valid & isin(key, big))
        rows = inside[np.unique(key[inside], return_index=True)[1]]
        values = [prep.normalized(c).iloc[rows].to_numpy(dtype=object) for c in conds]
        out[label] = sorted([str(v) for v in block] for block in zip(*values, strict=True))
    return out


def _blocking_rules(config: UnifyConfig) -> list[tuple[str, Rule, int | None]]:
    """Each dedup rule (with its table's rank) and match rule (rank None), labelled for the state."""
    rules = [(f"dedup {t.ref} {r.name}", r, rank) for rank, t in enumerate(config.tables) for r in t.dedup.rules]
    return rules + [(f"match {r.name}", r, None) for r in config.match.rules]


def plan(
    config: UnifyConfig,
    records: pd.DataFrame,
    prep: Prepared,
    state: UnifyState | None,
    rules_method: bool,
    absent_reason: str = "no state of an earlier run",
    method_key: str | None = None,
) -> Plan:
    """Decide how this run finds its pairs, and install the reusing normalizer on ``prep``.

    Args:
        records: this run's record frame (before any phase added columns).
        state: the last run's state (None: there is none, ``absent_reason`` says why).
        rules_method: whether pairs come from the configured rules.
        method_key: for another match method, what its pairs depend on besides the records (its ``state_key``):
            the last run's pairs are reused only under the same key; None: the method scores every pair afresh.
    """
    hashes = record_hashes(records)
    base = prep.normalizer.base if isinstance(prep.normalizer, ReusingNormalizer) else prep.normalizer
    meta = {"fingerprint": fingerprint(config, base), "hashes": hashes, "method": method_key}
    why = _refusal(config, state, base, rules_method, method_key) if state is not None else absent_reason
    if why:
        prep.normalizer = ReusingNormalizer(base)
        return Plan(False, why, counts={"records": len(records)}, meta=meta)
    last = state.records
    row = previous_rows(records, last)
    same = (row >= 0) & (last["hash"].to_numpy(np.int64)[np.maximum(row, 0)] == hashes)
    source = np.where(same, row, -1)
    prep.normalizer = ReusingNormalizer(base, last, source)
    counts = {
        "records": len(records),
        "records_new": int((row < 0).sum()),
        "records_changed": int(((row >= 0) & ~same).sum()),
        "records_deleted": int(len(last) - (row >= 0).sum()),
        "records_unchanged": int(same.sum()),
    }
    # Every column the rules read, normalized on two threads before the masks are read from them one by one.
    prep.warm(pair_conditions(config, prep))
    meta["masks"] = masks(config, prep)
    ranks = records["rank"].to_numpy()
    meta["oversized_blocks"] = oversized_blocks(config, prep, ranks)
    # An unchanged record whose masked value or block changed with the other records forms new pairs too.
    touched = ~same | _masked_anew(meta["masks"], state.meta.get("masks", {}), prep.normalizer.seen, len(records))
    touched |= _blocks_anew(config, prep, ranks, meta["oversized_blocks"], state.meta.get("oversized_blocks", {}))
    counts["records_touched_by_others"] = int((touched & same).sum())
    # The last run's pairs of two untouched records, at this run's positions.
    position = np.full(len(last), -1, dtype=np.int64)
    position[source[~touched]] = np.flatnonzero(~touched)
    pairs = state.pairs
    left, right = position[pairs["left"].to_numpy(np.int64)], position[pairs["right"].to_numpy(np.int64)]
    kept = (left >= 0) & (right >= 0)
    reused = ReusedPairs(pairs, np.flatnonzero(kept), left[kept], right[kept])
    counts["pairs_reused"] = len(reused)
    return Plan(True, "", touched, reused, counts, meta, source, state, position)


def previous_rows(records: pd.DataFrame, last: pd.DataFrame) -> np.ndarray:
    """Per record, the row of ``last`` with its identity (source, table, key), -1 for a new record: a hash join in
    DuckDB (pandas' merge on three text columns took seconds at two million records)."""

    def identity(frame: pd.DataFrame) -> pa.Table:
        columns = {c: arrow_strings(frame[c]) for c in IDENTITY}
        return pa.table({**columns, "_row": np.arange(len(frame), dtype=np.int64)})

    con = duckdb.connect()
    try:
        con.register("now", identity(records))
        con.register("last", identity(last))
        on = " AND ".join(f'now."{c}" = last."{c}"' for c in IDENTITY)
        found = con.sql(f"SELECT now._row AS at, last._row AS row FROM now JOIN last ON {on}").to_arrow_table()
    finally:
        con.close()
    row = np.full(len(records), -1, dtype=np.int64)
    row[found.column("at").to_numpy()] = found.column("row").to_numpy()
    return row


def _refusal(
    config: UnifyConfig, state: UnifyState, base: Normalizer, rules_method: bool, method_key: str | None
) -> str:
    """Why the last run's state cannot be reused whatever the records ('' when it can)."""
    before = state.meta.get("method")
    if rules_method and before is not None:
        return "the last run matched with the probabilistic model, this one with rules"
    if not rules_method and method_key is None:
        if config.match.rules:
            return "match rules beside the model accept pairs over all records"
        return "the match model is trained in this run (none is stored yet), and every pair is scored with it"
    if not rules_method and before is None:
        return "the last run matched with rules, this one with the probabilistic model"
    if not rules_method and (before != method_key or state.model_pairs is None):
        return "the stored match model or the settings it scores with changed since the last run"
    if state.meta.get("format") != STATE_FORMAT:
        return "the stored state has another format"
    if state.meta.get("version") != ci_pipeline.__version__:
        return f"the package version changed ({state.meta.get('version')} -> {ci_pipeline.__version__})"
    if state.meta.get("fingerprint") != fingerprint(config, base):
        return "the unify configuration or an alias map changed"
    return ""


def _masked_anew(now: dict, before: dict, normalized: dict[str, pd.Series], n: int) -> np.ndarray:
    """Per record (of ``n``), whether it holds a value masked this run and not the last, or the other way round
    (a value grown too frequent, or a phone number now shared by two first names)."""
    found = np.zeros(n, dtype=bool)
    for column in set(now) | set(before):
        changed = set()
        for kind in ("frequent", "shared"):
            changed ^= set(now.get(column, {}).get(kind, [])) ^ set(before.get(column, {}).get(kind, []))
        if changed and column in normalized:
            found |= normalized[column].isin(changed).to_numpy(bool)
    return found


def _blocks_anew(config: UnifyConfig, prep: Prepared, ranks: np.ndarray, now: dict, before: dict) -> np.ndarray:
    """Per record, whether its block of some rule went over the block size cap this run, or came back under it."""
    found = np.zeros(len(ranks), dtype=bool)
    for label, rule, rank in _blocking_rules(config):
        changed = {tuple(b) for b in now.get(label, [])} ^ {tuple(b) for b in before.get(label, [])}
        if not changed:
            continue
        values = pd.DataFrame({i: prep.normalized(c).to_numpy() for i, c in enumerate(rule.blocking_fields())})
        blocks = pd.DataFrame(sorted(changed), columns=values.columns).drop_duplicates()
        inside = values.merge(blocks, how="left", indicator=True)["_merge"].to_numpy() == "both"
        found |= inside & (True if rank is None else ranks == rank)
    return found


def next_state(
    config: UnifyConfig,
    records: pd.DataFrame,
    prep: Prepared,
    how: Plan,
    pairs: pd.DataFrame,
    model_pairs: pd.DataFrame | None = None,
) -> UnifyState:
    """The state this run keeps for the next: call after matching, before the normalized values are released.
    ``model_pairs``: a match model's candidate pairs (see :class:`UnifyState`)."""
    current = how.meta["masks"] if "masks" in how.meta else masks(config, prep)
    if "oversized_blocks" in how.meta:
        blocks = how.meta["oversized_blocks"]
    else:
        blocks = oversized_blocks(config, prep, records["rank"].to_numpy())
    normalizer = prep.normalizer
    seen = normalizer.seen if isinstance(normalizer, ReusingNormalizer) else {}
    kept = pd.DataFrame({c: records[c].astype("string") for c in IDENTITY})
    kept["hash"] = how.meta["hashes"]
    for column in sorted(seen):
        kept[column] = seen[column].array
    meta = {
        "format": STATE_FORMAT,
        "version": ci_pipeline.__version__,
        "fingerprint": how.meta["fingerprint"],
        "masks": current,
        "oversized_blocks": blocks,
        "records": len(kept),
        "pairs": len(pairs),
        "method": how.meta.get("method"),
        # A match model's values taken for missing as too frequent (its pairs are found afresh when they change).
        "model_masks": how.meta.get("model_masks", {}),
    }
    if model_pairs is not None:
        meta["model_pairs"] = len(model_pairs)
    # Fixed types: an empty frame of pairs must not store (and hand on) another type than a full one.
    # Texts first as ``string``: the categories of a category column keep the type of the text it was made from.
    text = {c: "string" for c, kind in PAIR_STATE_TYPES.items() if kind == "category"}
    pairs = pairs[PAIR_STATE_COLUMNS].astype(text).astype(PAIR_STATE_TYPES).reset_index(drop=True)
    return UnifyState(kept, pairs, meta, model_pairs=model_pairs)


def state_ahead(lake: Lake, state: UnifyState) -> StateAhead:
    """Begin storing the state in the lake on a thread of its own, beside the last one, which stays the state until
    :meth:`~ci_pipeline.run_state.StateAhead.commit` (:mod:`ci_pipeline.run_state`)."""
    tables = {"records": state.records, "pairs": state.pairs}
    if state.profiles is not None:
        tables["profiles"] = state.profiles
    if state.model_pairs is not None:
        tables["model_pairs"] = state.model_pairs
    return write_ahead(lake, STATE_DIR, tables, state.meta)


def write_state(lake: Lake, state: UnifyState) -> None:
    """Store the state in the lake and make it the state."""
    state_ahead(lake, state).commit()


def read_state(lake: Lake) -> tuple[UnifyState | None, str]:
    """The last run's state, or None and why it cannot be used (then the run is a full unify)."""
    optional = ("profiles", "model_pairs")
    found = read_run_state(lake, STATE_DIR, lambda meta: ["records", "pairs", *(t for t in optional if t in meta)])
    if isinstance(found, str):
        return None, found
    meta, tables = found
    if any(len(tables[name]) != meta.get(name) for name in tables):
        return None, f"the state at {lake.url(STATE_DIR)} is incomplete (its files do not match its meta file)"
    return UnifyState(tables["records"], tables["pairs"], meta, tables.get("profiles"), tables.get("model_pairs")), ""
