"""Build the unified activity timeline from activity tables and the alternate keys of unified customers, one batch
of one activity table at a time."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ci_pipeline import table_delta
from ci_pipeline.activities import incremental, ordered
from ci_pipeline.activities.incremental import Refused, TimelineState
from ci_pipeline.activities.jsoncols import json_objects
from ci_pipeline.arrow_text import TextIndex
from ci_pipeline.config.activities import FACT_COLUMNS, ActivityTable
from ci_pipeline.config.sources import DateRange
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.stamps import StampOrder, parse_timestamps
from ci_pipeline.ingest.types import date_bounds
from ci_pipeline.lake import Lake, WrittenTable
from ci_pipeline.outputs import UNIFIED_ACTIVITY_COLUMNS, unified_activity_guids
from ci_pipeline.scratch import spill_folder
from ci_pipeline.side_by_side import each, in_background

#: The AlternateKey columns the stage reads: the customer lookup's.
LOOKUP_COLUMNS = ["DataSourceName", "EntityName", "AlternateValue", "CustomerId"]
#: Columns of the quarantine table (one row per activity that could not be placed on the timeline).
CORRUPT_COLUMNS = ["Activity", "DataSourceName", "EntityName", "SourceActivityId", "Reason", "Record"]
#: The columns of a customer table's ingest quarantine the stage reads: the record's key, its file line and reason.
QUARANTINE_LOOKUP_COLUMNS = ["key", "line", "reason"]
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class Timeline:
    """The result of :func:`build_timeline`."""

    #: UnifiedActivity, exactly ``outputs.UNIFIED_ACTIVITY_COLUMNS``, sorted by its key (the GUID), the order it is
    #: published in: the sink and the exports then check the order instead of sorting millions of rows again.
    unified: pd.DataFrame
    #: Rows that were not placed, with the reason (``CORRUPT_COLUMNS``).
    corrupt: pd.DataFrame
    #: One row per accepted activity with typed semantic fields (``FACT_COLUMNS`` + field columns), sorted by
    #: ActivityId.
    facts: pd.DataFrame
    #: Rows read per activity name (read = accepted + quarantined).
    rows_read: dict[str, int]


def key_strings(values: pd.Series, whole: bool | None = None) -> pd.Series:
    """Key values as the strings AlternateKey stores (``12`` not ``12.0`` for whole floats), trimmed as ingest trims
    primary keys (a customer key `` EC1 `` written in an order is the customer ``EC1``).

    ``whole``: whether every float key of the whole table is a whole number, when ``values`` is one batch of it
    (None: decided from ``values``), so that every batch writes its keys alike.
    """
    if pd.api.types.is_float_dtype(values.dtype):
        if whole is None:
            whole = whole_numbers(values)
        if whole:
            return values.astype("Int64").astype("string")
    return values.astype("string").str.strip()


def whole_numbers(values: pd.Series) -> bool | None:
    """For a float column, whether every present value is a whole number; None for any other type."""
    if not pd.api.types.is_float_dtype(values.dtype):
        return None
    present = values.dropna()
    return bool((present == np.floor(present)).all())


def latest_accepted(run_time: pd.Timestamp, tolerance_hours: float) -> pd.Timestamp:
    """The latest timestamp a run at ``run_time`` (UTC) places: later ones are quarantined as in the future (the
    tolerance, ``activities.future_tolerance_hours``, allows for clocks and time zones a day apart)."""
    return run_time + pd.Timedelta(hours=tolerance_hours)


@dataclass(frozen=True)
class QuarantinedCustomers:
    """The rows of a customer table that ingest quarantined (``QUARANTINE_LOOKUP_COLUMNS``, in file order) and
    where the user finds them (``crm/contacts_corrupt``): an activity naming one of these records is told that the
    record was quarantined and where, not that no record has its key (the user would find it in the export)."""

    where: str
    rows: pd.DataFrame


def _no_text() -> pa.Array:
    return pa.array([], type=pa.large_string())


@dataclass(frozen=True)
class CustomerLookup:
    """The AlternateValue and CustomerId of the records of one customer table, one row per AlternateValue; and the
    keys of its records quarantined at ingest, with where and why each was (one note per key)."""

    values: pa.Array
    ids: pa.Array
    quarantined: pa.Array = field(default_factory=_no_text)
    notes: pa.Array = field(default_factory=_no_text)

    @functools.cached_property
    def index(self) -> TextIndex:
        """The values hashed once, for the lookups of every batch."""
        return TextIndex(self.values)

    @functools.cached_property
    def quarantine_index(self) -> TextIndex:
        return TextIndex(self.quarantined)

    def quarantine_notes(self, links: pd.Series) -> pd.Series:
        """Per link value, where and why ingest quarantined the record with that key (missing for the others)."""
        position = self.quarantine_index.positions(_arrow_text(links))
        return pd.Series(pd.array(pc.take(self.notes, position), dtype="string"), index=links.index)


def customer_lookup(
    alternate_key: pd.DataFrame, source: str, table: str, quarantined: QuarantinedCustomers | None = None
) -> CustomerLookup:
    """The AlternateValue and CustomerId of the records of one customer table, one row per AlternateValue, and the
    keys ``quarantined`` at ingest with their note (the first row of a key in file order)."""
    rows = alternate_key[(alternate_key["DataSourceName"] == source) & (alternate_key["EntityName"] == table)]
    rows = rows.drop_duplicates("AlternateValue")
    if quarantined is None or quarantined.rows.empty:
        return CustomerLookup(_arrow_text(rows["AlternateValue"]), _arrow_text(rows["CustomerId"]))
    bad = quarantined.rows
    # Trimmed as ingest trims the keys of the records it accepts, and as the activities' links are.
    keys = bad["key"].astype("string").str.strip()
    first = (keys.notna() & (keys != "")).to_numpy(dtype=bool) & ~keys.duplicated().to_numpy(dtype=bool)
    line = ("line " + bad["line"].astype("Int64").astype("string") + ", ").fillna("")
    notes = quarantined.where + ": " + line + bad["reason"].astype("string").fillna("no reason given")
    return CustomerLookup(
        _arrow_text(rows["AlternateValue"]),
        _arrow_text(rows["CustomerId"]),
        _arrow_text(keys[first]),
        _arrow_text(notes[first]),
    )


def activity_id_prefix(spec: ActivityTable) -> str:
    """What comes before a row's key in its ActivityId: ``<source>_<table>_``."""
    return f"{spec.source}_{spec.table}_"


def _arrow_text(values: pd.Series) -> pa.Array:
    return pa.array(values.astype("string"), type=pa.large_string(), from_pandas=True)


def _customers(links: pd.Series, lookup: CustomerLookup) -> pd.Series:
    """CustomerId of each link value (missing where no record has it): a hash lookup on the keys, no Python per
    row."""
    position = lookup.index.positions(_arrow_text(links))
    return pd.Series(pd.array(pc.take(lookup.ids, position), dtype="string"), index=links.index)


class _Reasons:
    """The first reason each row of a table cannot be placed; messages are built for the flagged rows only."""

    def __init__(self, index: pd.Index):
        self.text = pd.Series(pd.NA, index=index, dtype="string")
        self.flagged = np.zeros(len(index), dtype=bool)

    def flag(self, mask, text: str, values: pd.Series | None = None, suffix: str = "") -> None:
        """Flag the rows of ``mask`` not flagged yet: ``text``, or ``text + value + suffix`` when ``values`` given."""
        rows = np.asarray(pd.Series(mask, index=self.text.index).fillna(False), dtype=bool) & ~self.flagged
        if not rows.any():
            return
        self.flagged |= rows
        self.text[rows] = text if values is None else text + values[rows].astype("string").fillna("") + suffix


def place_activities(
    name: str, spec: ActivityTable, frame: pd.DataFrame, primary_key: str, alternate_key: pd.DataFrame, now
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Place the rows of one activity table: (accepted rows with CustomerId and timestamp, quarantined rows).

    Args:
        name: activity name (configuration key).
        spec: the activity table's configuration.
        frame: the ingested table.
        primary_key: the activity's key column.
        alternate_key: the AlternateKey table of unification.
        now: run time (UTC); timestamps later than it (plus the tolerance applied by the caller) are future.
    """
    lookup = customer_lookup(alternate_key, spec.customer.source, spec.customer.table)
    accepted, corrupt, _ = place_rows(name, spec, frame, primary_key, lookup, now)
    return accepted, corrupt


def check_columns(name: str, spec: ActivityTable, columns: list[str], primary_key: str) -> None:
    """Refuse a configuration that names columns the activity table does not have."""
    missing = [
        c
        for c in [primary_key, spec.timestamp, spec.customer.column, spec.title, spec.description, spec.url]
        + list(spec.fields.values())
        if c is not None and c not in columns
    ]
    if missing:
        raise UserError(
            f"activities.tables.{name}: column(s) {', '.join(sorted(set(missing)))} not in "
            f"{spec.source}.{spec.table} (it has {', '.join(map(str, columns))}); fix the column names"
        )


def place_rows(
    name: str,
    spec: ActivityTable,
    frame: pd.DataFrame,
    primary_key: str,
    lookup: CustomerLookup,
    now,
    keys_of_table: KeyRules | None = None,
    only: np.ndarray | None = None,
    dates: AcceptedDates | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """:func:`place_activities` of ``frame``, the whole table or one batch of it: of the rows ``only`` marks (every
    row when None); the accepted rows, the quarantined ones and which of the placed rows were quarantined.

    What a batch decides for all its rows (whether its float customer keys are whole numbers) is decided over the
    whole ``frame``, so a row is placed alike whichever rows of its batch are placed with it.

    Args:
        lookup: :func:`customer_lookup` of the table's customer table.
        keys_of_table: what the whole table's keys look like when ``frame`` is one batch of it (None: ``frame`` is
            the whole table).
        dates: the dates the timestamps may fall on (None: the default ``date_range``).
    """
    check_columns(name, spec, list(frame.columns), primary_key)
    frame = frame.reset_index(drop=True)
    links_whole = whole_numbers(frame[spec.customer.column])
    # Decided over the whole table (or the whole frame), as the whole-number keys are.
    order = keys_of_table.stamps if keys_of_table else None
    if order is None and not spec.timestamp_format and not pd.api.types.is_datetime64_any_dtype(frame[spec.timestamp]):
        order = StampOrder.of(frame[spec.timestamp])
    if only is not None:
        frame = frame[only].reset_index(drop=True)
    keys = key_strings(frame[primary_key], keys_of_table.whole if keys_of_table else None)
    stamps = parse_timestamps(frame[spec.timestamp], spec.timestamp_format, order)
    links = key_strings(frame[spec.customer.column], links_whole)
    customers = _customers(links, lookup)

    reasons = _Reasons(frame.index)
    reasons.flag(keys.isna() | (keys.str.strip() == ""), f"primary key {primary_key} is empty")
    repeated = keys.isin(keys_of_table.duplicated) if keys_of_table else keys.duplicated(keep=False)
    reasons.flag(repeated, f"primary key {primary_key} '", keys, "' is duplicated")
    raw = frame[spec.timestamp]
    if order is not None and order.mixed:
        reasons.flag(order.against(raw), f"timestamp {spec.timestamp} '", raw, order.reason(name))
    with_format = f" with format {spec.timestamp_format}" if spec.timestamp_format else ""
    reasons.flag(stamps.isna(), f"timestamp {spec.timestamp} '", raw, f"' is empty or cannot be parsed{with_format}")
    reasons.flag(stamps > now, f"timestamp {spec.timestamp} ", raw, f" is in the future (after {now.isoformat()})")
    dates = dates or AcceptedDates.of(spec)
    reasons.flag(dates.outside(stamps), f"timestamp {spec.timestamp} '", raw, f"' is {dates.told}")
    reasons.flag(links.isna() | (links.str.strip() == ""), f"customer key {spec.customer.column} is empty")
    customer_table = f"{spec.customer.source}.{spec.customer.table}"
    missing = customers.isna()
    if len(lookup.quarantined) and missing.any():
        notes = lookup.quarantine_notes(links)
        reasons.flag(
            missing & notes.notna(),
            f"the {customer_table} record with key '",
            links + "' was quarantined at ingest, see " + notes,
            f"; fix that row of {customer_table}: the activity is placed on the next run",
        )
    reasons.flag(missing, f"no {customer_table} record with key '", links, "'")
    bad = reasons.flagged
    corrupt = pd.DataFrame(
        {
            "Activity": name,
            "DataSourceName": spec.source,
            "EntityName": spec.table,
            "SourceActivityId": keys[bad],
            "Reason": reasons.text[bad],
            "Record": json_objects(frame.loc[bad].astype("string")) if bad.any() else pd.Series(dtype="string"),
        },
        columns=CORRUPT_COLUMNS,
    )
    good = ~bad
    if bad.any():
        frame, keys, stamps, customers = frame[good], keys[good], stamps[good], customers[good]
    accepted = pd.DataFrame(
        {
            "CustomerId": customers,
            "ActivityId": (activity_id_prefix(spec) + keys).astype("string"),
            "SourceEntityName": spec.table,
            "SourceActivityId": keys,
            "ActivityType": spec.type,
            "ActivityTimeStamp": stamps,
            "Title": _text(frame, spec.title),
            "Description": _text(frame, spec.description),
            "URL": _text(frame, spec.url),
            "Activity": name,
        }
    )
    fields = frame[list(spec.fields.values())].set_axis(list(spec.fields.keys()), axis=1)
    accepted = pd.concat([accepted, fields], axis=1)
    accepted["SemanticData"] = json_objects(fields) if len(fields) else pd.Series(dtype="string")
    return accepted, corrupt.astype("string"), bad


def _text(frame: pd.DataFrame, column: str | None) -> pd.Series:
    if column is None:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame[column].astype("string")


@dataclass(frozen=True)
class AcceptedDates:
    """The dates an activity's timestamps may fall on: its source table's ``date_range`` (the timestamp column's
    own when it declares one), as ingest applies it to a declared datetime column, and the key that sets it. A
    timestamp parsed from text gets the same bound: a sentinel such as Excel's day zero (1899-12-30) is quarantined
    whether or not the column was declared a datetime."""

    first: pd.Timestamp
    #: The day after the last accepted date.
    end: pd.Timestamp
    key: str

    @classmethod
    def of(cls, spec: ActivityTable, table=None) -> AcceptedDates:
        """The accepted dates of ``spec``'s timestamp given its source table's configuration (None: the default)."""
        declared = table.columns.get(spec.timestamp) if table is not None else None
        if declared is not None and declared.date_range is not None:
            configured, key = declared.date_range, f"columns.{spec.timestamp}.date_range"
        else:
            configured, key = (table.date_range if table is not None else DateRange()), "date_range"
        first, end = date_bounds(configured)
        return cls(first, end, f"sources.{spec.source}.tables.{spec.table}.{key}")

    def outside(self, stamps: pd.Series) -> pd.Series:
        """Whether each (UTC) timestamp lies outside the accepted dates (missing ones do not)."""
        return (stamps < self.first.tz_localize("UTC")) | (stamps >= self.end.tz_localize("UTC"))

    @property
    def told(self) -> str:
        last = (self.end - pd.Timedelta(days=1)).date()
        return f"outside the accepted dates {self.first.date()}..{last}; see {self.key}"


@dataclass(frozen=True)
class ActivitySource:
    """One configured activity table: its configuration, its key column and its stored rows (read in batches)."""

    spec: ActivityTable
    primary_key: str
    rows: ds.Dataset
    #: The dates its timestamps may fall on (None: the default ``date_range``).
    dates: AcceptedDates | None = None


@dataclass(frozen=True)
class StoredTimeline:
    """The result of :func:`write_timeline`: the two tables it stored, the quarantine and the counts."""

    #: UnifiedActivity, in GUID order (the order it is published in: the sink and the exports check the order
    #: instead of sorting millions of rows again).
    unified: WrittenTable
    #: One row per accepted activity with typed semantic fields (``FACT_COLUMNS`` + field columns), by ActivityId.
    facts: WrittenTable
    #: Rows that were not placed, with the reason (``CORRUPT_COLUMNS``).
    corrupt: pd.DataFrame
    #: Rows read and rows placed per activity name (read = placed + quarantined).
    rows_read: dict[str, int]
    placed: dict[str, int]
    #: Placed rows per activity type (types with rows, sorted).
    per_type: dict[str, int]
    #: Distinct customers with at least one activity.
    customers: int
    #: Placed rows whose ActivityId another placed row has too (``duplicated().sum()``).
    repeated_activity_ids: int
    #: What this run keeps for the next (:mod:`ci_pipeline.activities.incremental`), to be stored after the tables;
    #: None when a column of an activity table cannot be fingerprinted.
    state: TimelineState | None = None
    #: Whether the run placed only what changed (``incremental``), why not (``reason``), and its row counts.
    report: dict = field(default_factory=dict)
    #: What the run warns of: activities whose year-last timestamps no value shows the order of.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class KeyRules:
    """What the keys of a whole activity table look like, for placing it one batch at a time."""

    #: Float keys: whether every one is a whole number (written ``12``, not ``12.0``); None for other types.
    whole: bool | None
    #: The key strings more than one row has.
    duplicated: pd.Series
    #: How the table's year-last timestamps are read (None: the column is typed, or its format declared).
    stamps: StampOrder | None = None


def write_timeline(
    sources: dict[str, ActivitySource],
    alternate_key: pd.DataFrame,
    now: pd.Timestamp,
    lake: Lake,
    paths: tuple[str, str],
    work: Path,
    previous: TimelineState | None = None,
    no_previous: str = "no state of an earlier run",
    quarantined: Mapping[tuple[str, str], QuarantinedCustomers] | None = None,
) -> StoredTimeline:
    """Place every activity table one batch at a time and store UnifiedActivity and the facts in the lake.

    ActivityId is ``<source>_<table>_<primary key>``; the GUID is ``outputs.unified_activity_guids``;
    SemanticData holds the configured semantic fields as a JSON object with sorted keys; RangeIndex is the Unix
    timestamp (seconds) as a string. Rows whose key, timestamp or customer cannot be resolved are quarantined.
    The placed rows go to bucket files under ``work`` by key range (``ordered.SortedTable``), and each bucket is
    sorted and written in turn, the two tables at once. What is held at once is three batches (or one bucket of each
    table and three batches of it), the customer lookup and the quarantine.

    With ``previous``, the state an earlier run kept (:mod:`ci_pipeline.activities.incremental`), only the rows
    that changed since are placed, and the others are taken from the stored tables at ``paths``; the result is the
    same. The returned :attr:`StoredTimeline.state` is for the next run, to be stored once the tables are.

    Args:
        sources: activity name -> its table.
        alternate_key: the AlternateKey table.
        now: the run time (UTC, tolerance included): later timestamps are quarantined.
        lake: where the tables are stored.
        paths: the lake-relative paths of UnifiedActivity and of the facts.
        work: an empty folder for the bucket files and DuckDB's spill files (the caller removes it).
        previous: the last run's state (None: every row is placed).
        no_previous: why there is no ``previous`` (reported).
        quarantined: per customer table (source, table), its rows quarantined at ingest. Only the reasons of
            quarantined activities depend on them, and those rows are placed again every run: the state need not.
    """
    con = ordered.connect(work / "duckdb")
    try:
        rules = {}
        for name in sorted(sources):
            source = sources[name]
            check_columns(name, source.spec, source.rows.schema.names, source.primary_key)
            repeated, whole = ordered.repeated_keys(con, source.rows, source.primary_key)
            stamps = stamp_order(source)
            rules[name] = KeyRules(whole=whole, duplicated=key_strings(repeated.to_pandas(), whole), stamps=stamps)
        linked = sorted({(s.spec.customer.source, s.spec.customer.table) for s in sources.values()})
        told = quarantined or {}
        lookups = {customers: customer_lookup(alternate_key, *customers, told.get(customers)) for customers in linked}
        # The order the timestamps are read in is the whole table's: when new rows change it, every row is placed.
        orders = {name: rule.stamps.day_first for name, rule in rules.items() if rule.stamps and rule.stamps.written}
        digest = incremental.fingerprint(sources, orders)
        whole = {name: rule.whole for name, rule in rules.items()}
        reuse, why = incremental.Reuse.plan(
            previous, no_previous, digest, sources, whole, lookups, now, lambda: _stored_rows(lake, paths)
        )
        # The stored UnifiedActivity is about to change: until a new delta is written, none describes it.
        table_delta.forget(lake, paths[0])
        run = _Run(sources, rules, lookups, now, con)
        try:
            stored = run.write(lake, paths, work / "placed", reuse, digest)
        except Refused as exc:
            reuse, why = None, str(exc)
            stored = _Run(sources, rules, lookups, now, con).write(lake, paths, work / "again", None, digest)
    finally:
        con.close()
    state = incremental.new_state(digest, now, stored.kept, whole, lookups, stored.outputs) if stored.kept else None
    report = {"incremental": reuse is not None, "reason": why, **stored.counts}
    warnings = [
        told
        for name, rule in rules.items()
        if rule.stamps and (told := rule.stamps.warning(name, sources[name].spec.timestamp))
    ]
    return replace(stored.timeline, state=state, report=report, warnings=warnings)


def stamp_order(source: ActivitySource) -> StampOrder | None:
    """What the timestamps of a whole activity table show of their order of day and month (None when they are not
    text, or their format is declared), read a column at a time."""
    column = source.spec.timestamp
    if source.spec.timestamp_format or column not in source.rows.schema.names:
        return None
    kind = source.rows.schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return None
    order = StampOrder()
    for batch in source.rows.to_batches(columns=[column], batch_size=ordered.BATCH_ROWS, batch_readahead=1):
        order += StampOrder.of(batch.column(0).to_pandas())
    return order


def _stored_rows(lake: Lake, paths: tuple[str, str]) -> dict[str, int | None]:
    """The rows of the stored UnifiedActivity and facts (None for a table that is not there)."""
    return {
        kind: (lake.dataset(path).count_rows() if lake.exists(path) else None)
        for kind, path in zip(("unified", "facts"), paths, strict=True)
    }


@dataclass(frozen=True)
class _Written:
    timeline: StoredTimeline
    #: Per activity name, its rows as this run leaves them (None when they could not be fingerprinted).
    kept: dict[str, incremental.KeptRows] | None
    outputs: dict[str, int]
    counts: dict[str, int]


class _Run:
    """One placing of the activity tables: every row, or with a :class:`incremental.Reuse` only the rows that
    changed, the others taken from the stored tables."""

    def __init__(self, sources, rules, lookups, now, con):
        self.sources, self.rules, self.lookups, self.now, self.con = sources, rules, lookups, now, con
        self.corrupt: list[pd.DataFrame] = []
        self.read: dict[str, int] = {}
        self.placed: dict[str, int] = {}
        #: Rows this run placed (into the timeline), quarantined (each with a reason) and kept from the stored tables.
        self.counts = {"rows_placed": 0, "rows_quarantined": 0, "rows_reused": 0}
        #: Per activity name, its rows as this run leaves them (None once a batch cannot be fingerprinted).
        self.kept: dict[str, incremental.KeptRows] | None = {name: incremental.KeptRows() for name in sources}

    def write(self, lake: Lake, paths: tuple[str, str], folder: Path, reuse, digest: str) -> _Written:
        """Place the rows and write the two tables: UnifiedActivity stamped with the version of the state this
        run leaves, and with a delta from the stored one when only some rows were placed (``digest``: the
        configuration's fingerprint)."""
        sources, rules = self.sources, self.rules
        # Enough buckets that one holds about BUCKET_ROWS rows; the facts' key ranges come from a sample of keys.
        total = sum(source.rows.count_rows() for source in sources.values())
        buckets = max(1, -(-total // ordered.BUCKET_ROWS))
        step = max(1, total // (buckets * ordered.SAMPLES_PER_BUCKET))
        samples = _activity_id_samples(sources, rules, step) if buckets > 1 else []
        placed_rows = _Placed(folder, buckets, ordered.boundaries(samples, buckets))

        def placed_batches():
            hasher = duckdb.connect()
            try:
                for name in sorted(sources):
                    yield from self._placed(name, hasher, reuse)
            finally:
                hasher.close()

        # The next batches are placed while this one goes into the buckets (its GUIDs in DuckDB, its bucket files).
        for ok in in_background(placed_batches(), depth=1, name="activities-place"):
            placed_rows.add(self.con, _timeline_rows(ok))
        # The batches are gone: give the memory their Arrow buffers took back before the buckets are sorted.
        pa.default_memory_pool().release_unused()
        version = None
        if self.kept is not None:
            whole = {name: rule.whole for name, rule in rules.items()}
            version = incremental.version(digest, self.kept, whole, self.lookups, self.con)
        schemas = stored = delta = None
        if reuse is not None:
            schemas, stored, delta = self._kept(reuse, placed_rows, lake, paths)
        redone = self.counts["rows_placed"] + self.counts["rows_quarantined"]
        if version is None or redone > self.counts["rows_reused"]:
            # A delta larger than the rows kept would save the sink little over comparing every row, and it costs a
            # second copy of the placed rows here.
            delta = None
        unified, facts, repeated_ids = placed_rows.write(
            lake, paths, schemas, stored, version, table_delta.rows_path(paths[0]) if delta else None
        )
        if delta is not None:
            left = delta.left
            removed = pa.concat_arrays(left) if left else pa.array([], pa.large_string())
            table_delta.write(lake, paths[0], delta.base, version, removed)
        per_type: dict[str, int] = {}
        for name, count in self.placed.items():
            if count:
                per_type[sources[name].spec.type] = per_type.get(sources[name].spec.type, 0) + count
        bad = pd.concat(self.corrupt, ignore_index=True) if self.corrupt else pd.DataFrame(columns=CORRUPT_COLUMNS)
        bad = bad.sort_values(["Activity", "SourceActivityId"], kind="stable").reset_index(drop=True).astype("string")
        timeline = StoredTimeline(
            unified=unified,
            facts=facts,
            corrupt=bad,
            rows_read=self.read,
            placed=self.placed,
            per_type=dict(sorted(per_type.items())),
            customers=placed_rows.customers(),
            repeated_activity_ids=repeated_ids,
        )
        return _Written(timeline, self.kept, {"unified": unified.rows, "facts": facts.rows}, self.counts)

    def _placed(self, name: str, hasher: duckdb.DuckDBPyConnection, reuse) -> Iterator[pd.DataFrame]:
        """The placed rows of each batch of one table (with ``reuse``, of the rows it places again; none of a batch
        whose every row is kept); fingerprints its rows for the next state."""
        source = self.sources[name]
        spec, key, rules = source.spec, source.primary_key, self.rules[name]
        lookup = self.lookups[(spec.customer.source, spec.customer.table)]
        self.read[name] = self.placed[name] = 0
        duplicated = pa.array(rules.duplicated, type=pa.large_string(), from_pandas=True)
        prefix = activity_id_prefix(spec)
        for batch in _batches(source.rows):
            n = batch.num_rows
            self.read[name] += n
            keys = key_strings(batch.column(key).to_pandas(), rules.whole)
            keys = pa.array(keys, type=pa.large_string(), from_pandas=True)
            hashes = self._fingerprints(hasher, batch, keys, prefix, reuse is not None)
            again = None
            if reuse is not None:
                links = functools.partial(_links, batch, spec.customer.column)
                repeated = pc.is_in(keys, value_set=duplicated).to_numpy(zero_copy_only=False)
                again = reuse.select(name, hashes[0], hashes[1], links, repeated)
                reused = n - int(again.sum())
                self.placed[name] += reused
                self.counts["rows_reused"] += reused
            flagged = np.zeros(0, dtype=bool)
            if again is None or again.any():
                ok, bad, flagged = place_rows(
                    name, spec, batch.to_pandas(), key, lookup, self.now, rules, again, source.dates
                )
                self.corrupt.append(bad)
                self.placed[name] += len(ok)
                self.counts["rows_placed"] += len(ok)
                self.counts["rows_quarantined"] += len(bad)
                yield ok
            if self.kept is not None:
                placed = np.ones(n, dtype=bool)
                placed[slice(None) if again is None else again] = ~flagged
                self.kept[name].add(hashes[0], hashes[1], placed)

    def _fingerprints(self, hasher, batch: pa.RecordBatch, keys: pa.Array, prefix: str, needed: bool):
        """The ActivityId and row hashes of a batch (None once a batch could not be hashed and no reuse needs
        them)."""
        if self.kept is None:
            return None
        try:
            return incremental.row_fingerprints(hasher, batch, keys, prefix)
        except duckdb.Error as exc:
            if needed:
                raise Refused(f"the rows of a table cannot be fingerprinted ({exc}): every row is placed") from exc
            self.kept = None  # a column DuckDB cannot hash: no state, and the next run places every row too
            return None

    def _kept(self, reuse, placed_rows: _Placed, lake: Lake, paths: tuple[str, str]) -> tuple[dict, list, _Left | None]:
        """The schemas of the two tables, which must be the stored ones (else :class:`Refused`), the stored rows
        that stay, per table, to be merged with the placed ones as the tables are written, and the GUIDs of the
        stored UnifiedActivity rows that leave as they are read (None when that table has no version)."""
        stored = [lake.dataset(path) for path in paths]
        heads = [_first_row(ds_) for ds_ in stored]
        schemas = placed_rows.schemas(_stored_head(*heads), [ds_.schema for ds_ in stored])
        for found, ds_, what in zip(schemas, stored, ("UnifiedActivity", "the activity facts"), strict=True):
            if not _alike(found, ds_.schema):
                raise Refused(f"the columns of {what} change with this run's rows: every row is placed")
        removed, rows = reuse.removed()
        self.counts["rows_removed"] = rows
        kept = incremental.Kept(removed, rows)
        base = table_delta.version_of(stored[0])
        left = _Left(base, []) if base is not None else None
        unified = placed_rows.seen_in(kept.batches(_stored_batches(stored[0]), left.left if left else None))
        facts = kept.batches(_stored_batches(stored[1]))
        # The stored schemas, pandas metadata and all: which value a batch's first row holds may make that
        # metadata say "empty" where another run's says "bool", for the same types and the same frames read back.
        return {"unified": stored[0].schema, "facts": stored[1].schema}, [unified, facts], left


@dataclass(frozen=True)
class _Left:
    """The version of the stored UnifiedActivity, and the GUIDs of its rows that leave (filled as it is read)."""

    base: str
    left: list[pa.Array]


def _links(batch: pa.RecordBatch, column: str) -> pd.Series:
    """A batch's customer keys as the placing writes them."""
    values = batch.column(column).to_pandas()
    return key_strings(values, whole_numbers(values))


def _first_row(stored: ds.Dataset) -> pd.DataFrame:
    """The first row of a stored table in the types the placing had (its pandas metadata; none without a row)."""
    with stored.filesystem.open_input_file(stored.files[0]) as file:
        first = next(pq.ParquetFile(file).iter_batches(batch_size=1), None)
    table = pa.Table.from_batches([first] if first is not None else [], schema=stored.schema)
    return table.slice(0, 1).replace_schema_metadata(stored.schema.metadata).to_pandas()


def _alike(schema: pa.Schema, stored: pa.Schema) -> bool:
    """Whether two schemas have the same columns and types, and give the same pandas types when read."""
    if not schema.remove_metadata().equals(stored.remove_metadata()):
        return False
    return schema.empty_table().to_pandas().dtypes.equals(stored.empty_table().to_pandas().dtypes)


def _stored_head(unified: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
    """One stored row of each table as one placed row would show them (the columns of both, in placing order)."""
    if unified.empty or facts.empty:
        return pd.DataFrame()
    head = facts.copy()
    for column in UNIFIED_ACTIVITY_COLUMNS[:-1]:
        if column not in head.columns:
            head[column] = unified[column].array
    return head


def _stored_batches(stored: ds.Dataset):
    return stored.to_batches(batch_size=ordered.BATCH_ROWS, batch_readahead=1, fragment_readahead=1)


def _activity_id_samples(sources: dict[str, ActivitySource], rules: dict[str, KeyRules], step: int) -> list[str]:
    """Every ``step``-th ActivityId of every table (keys read alone, batch by batch): what the facts' key ranges are
    cut from."""
    samples: list[str] = []
    for name in sorted(sources):
        source = sources[name]
        prefix = activity_id_prefix(source.spec)
        for batch in source.rows.to_batches(
            columns=[source.primary_key], batch_size=ordered.BATCH_ROWS, batch_readahead=1, fragment_readahead=1
        ):
            keys = key_strings(batch.column(0).to_pandas().iloc[::step], rules[name].whole).dropna()
            samples += (prefix + keys).tolist()
    return samples


def build_timeline(
    tables: dict[str, tuple[ActivityTable, pd.DataFrame, str]],
    alternate_key: pd.DataFrame,
    now: pd.Timestamp,
    quarantined: Mapping[tuple[str, str], QuarantinedCustomers] | None = None,
) -> Timeline:
    """:func:`write_timeline` of frames in memory, with the tables read back as frames (small data: tests, tools).

    Args:
        tables: activity name -> (configuration, ingested frame, primary key column).
        alternate_key: the AlternateKey table.
        now: the run time (UTC, tolerance included): later timestamps are quarantined.
        quarantined: per customer table, its rows quarantined at ingest (see :func:`write_timeline`).
    """
    sources = {
        name: ActivitySource(spec, key, ds.dataset(pa.Table.from_pandas(frame, preserve_index=False)))
        for name, (spec, frame, key) in tables.items()
    }
    with spill_folder("ci-pipeline-activities-") as folder:
        lake = Lake.local(Path(folder) / "lake")
        paths = ("unified.parquet", "facts.parquet")
        stored = write_timeline(sources, alternate_key, now, lake, paths, Path(folder), quarantined=quarantined)
        return Timeline(
            unified=lake.read_parquet(stored.unified.path),
            corrupt=stored.corrupt,
            facts=lake.read_parquet(stored.facts.path),
            rows_read=stored.rows_read,
        )


def _batches(rows: ds.Dataset) -> Iterator[pa.RecordBatch]:
    """The table's rows in batches of at most ``ordered.BATCH_ROWS`` rows (one empty batch for an empty table)."""
    found = False
    # One batch ahead at most: the scanner's default reads 16 batches ahead, which is most of a table at these sizes.
    for batch in rows.to_batches(batch_size=ordered.BATCH_ROWS, batch_readahead=1, fragment_readahead=1):
        if batch.num_rows:
            found = True
            yield batch
    if not found:
        yield pa.RecordBatch.from_pylist([], schema=rows.schema)


def _timeline_rows(accepted: pd.DataFrame) -> pd.DataFrame:
    """Placed rows with their UTC timestamp, RangeIndex and text columns as UnifiedActivity stores them."""
    stamps = pd.to_datetime(accepted["ActivityTimeStamp"], utc=True)
    accepted["ActivityTimeStamp"] = stamps
    accepted["RangeIndex"] = ((stamps - _EPOCH) // pd.Timedelta(seconds=1)).astype("Int64").astype("string")
    for column in TEXT_COLUMNS:
        accepted[column] = accepted[column].astype("string")
    return accepted


#: UnifiedActivity's text columns (and the facts' Activity), stored as pandas strings.
TEXT_COLUMNS = (
    "CustomerId",
    "ActivityId",
    "SourceEntityName",
    "SourceActivityId",
    "ActivityType",
    "Title",
    "Description",
    "URL",
    "SemanticData",
    "Activity",
)


#: Columns of a placed batch that are not semantic fields.
_NOT_FIELDS = frozenset(UNIFIED_ACTIVITY_COLUMNS) | {"Activity"}


def _kind(arrow_type: pa.DataType) -> str | None:
    """What a semantic field's values are, in words: ``numbers``, ``text``, ``true/false values`` or ``dates``
    (None for a column no value of which is known)."""
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "numbers"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    if pa.types.is_boolean(arrow_type):
        return "true/false values"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "dates"
    return None


class _Placed:
    """Placed rows on their way to the two stored tables (``ordered.SortedTable``), with what the tables' schemas
    are derived from and the customers that have an activity."""

    def __init__(self, folder: Path, buckets: int, boundaries: list[str]):
        self.unified = ordered.SortedTable(folder / "unified", "msdynci_unifiedactivityid", buckets)
        self.facts = ordered.SortedTable(folder / "facts", "ActivityId", len(boundaries) + 1)
        self.guid_bucket = ordered.guid_buckets(buckets)
        self.fact_bucket = ordered.key_buckets(boundaries)
        #: The first row of each batch (every batch for column names and types), and each column's Arrow types.
        self.heads: list[pd.DataFrame] = []
        self.types: dict[str, list[pa.DataType]] = {}
        #: Per semantic field, the kind of value (see ``_kind``) and the activity that first held it.
        self.kinds: dict[str, tuple[str, str]] = {}
        #: The distinct CustomerIds of each batch of placed (or kept) rows: the customers with an activity.
        self.customer_sets: list[pa.Array] = []

    def add(self, con, rows: pd.DataFrame) -> None:
        """Put a batch of placed rows into both tables' buckets, after the ones before (the order ties keep)."""
        # A take, not head(): a slice of Arrow-backed columns would keep the whole batch alive.
        self.heads.append(rows.take(range(min(1, len(rows)))))
        if rows.empty:
            return
        table = pa.Table.from_pandas(rows, preserve_index=False)
        activity = str(rows["Activity"].iloc[0])
        for name, column in zip(table.column_names, table.columns, strict=True):
            self.types.setdefault(name, []).append(column.type)
            # A column empty in this batch says nothing of what the field holds (an empty CSV column is text).
            known = column.null_count < len(column)
            if name not in _NOT_FIELDS and known and (kind := _kind(column.type)) is not None:
                self._same_kind(name, kind, activity)
        ids = table.column("ActivityId").cast(pa.large_string())
        guids, heads = ordered.unified_activity_guids(con, ids)
        unified = table.select(UNIFIED_ACTIVITY_COLUMNS[:-1]).append_column("msdynci_unifiedactivityid", guids)
        self.unified.add(unified, self.guid_bucket(heads))
        facts = table.select(FACT_COLUMNS + [c for c in table.column_names if c not in _NOT_FIELDS])
        self.facts.add(facts, self.fact_bucket(ids) if self.facts.buckets > 1 else None)
        self.customer_sets.append(pc.unique(table.column("CustomerId")))

    def _same_kind(self, field: str, kind: str, activity: str) -> None:
        """Refuse a semantic field that one activity holds as numbers and another as text (one column of the
        facts holds both, and measures compare it as one thing), naming both and the fix."""
        first = self.kinds.setdefault(field, (kind, activity))
        if first[0] != kind:
            raise UserError(
                f"activities: field {field!r} holds {first[0]} in activity {first[1]} but {kind} in activity "
                f"{activity}: one field of the timeline has one type; declare the source column's type under "
                f"sources.<source>.tables.<table>.columns (such as {field}: double), or name the two fields apart"
            )

    def seen_in(self, stored: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """Stored rows kept on the timeline, passed on once their customers are counted."""
        for rows in stored:
            self.customer_sets.append(pc.unique(rows.column("CustomerId")))
            yield rows

    def customers(self) -> int:
        """Distinct customers with at least one placed activity."""
        found = [ids.cast(pa.large_string()) for ids in self.customer_sets]
        return len(pc.drop_null(pc.unique(pa.concat_arrays(found)))) if found else 0

    def sample(self, first: pd.DataFrame | None = None) -> pd.DataFrame:
        """A few rows with the columns, in the order and with the types, that concatenating every batch gives
        (``first``: rows that come before every batch, the stored tables' when only some rows are placed)."""
        heads = ([first] if first is not None else []) + self.heads
        filled = [h for h in heads if len(h)]
        columns = list(dict.fromkeys(c for h in heads for c in h.columns))
        if not heads:
            return pd.DataFrame({c: pd.Series(dtype="string") for c in FACT_COLUMNS + UNIFIED_ACTIVITY_COLUMNS})
        sample = pd.concat(filled or heads, ignore_index=True)
        for column in columns:
            if column not in sample.columns:
                # Only tables without a placed row have it: it is empty, in its own type.
                having = next(h for h in heads if column in h.columns)
                sample[column] = pd.Series(index=sample.index, dtype=having[column].dtype)
        return sample[columns]

    def schema(self, frame: pd.DataFrame) -> pa.Schema:
        """The Arrow schema of ``frame`` (pandas metadata included); a column of Python objects that are all
        missing in the sample takes the type its rows have in the batches."""
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        for i, column in enumerate(schema):
            if pa.types.is_null(column.type):
                found = [t for t in self.types.get(column.name, []) if not pa.types.is_null(t)]
                if found:
                    schema = schema.set(i, column.with_type(found[0]))
        return schema

    def schemas(self, first: pd.DataFrame | None = None, fallback: list[pa.Schema] = ()) -> tuple[pa.Schema, pa.Schema]:
        """The schemas of UnifiedActivity and of the facts (``first``: see :meth:`sample`; ``fallback``: schemas
        whose types a column empty in every placed batch takes)."""
        for schema in fallback:
            for column in schema:
                self.types.setdefault(column.name, []).append(column.type)
        sample = self.sample(first)
        fields = [c for c in sample.columns if c not in _NOT_FIELDS]
        facts_sample = sample[FACT_COLUMNS + fields]
        facts_sample["Activity"] = facts_sample["Activity"].astype("string")
        unified_sample = sample[UNIFIED_ACTIVITY_COLUMNS[:-1]].copy()
        unified_sample["msdynci_unifiedactivityid"] = unified_activity_guids(unified_sample["ActivityId"])
        return self.schema(unified_sample), self.schema(facts_sample)

    def write(
        self,
        lake: Lake,
        paths: tuple[str, str],
        schemas: dict | None = None,
        stored: list | None = None,
        version: str | None = None,
        delta_rows: str | None = None,
    ) -> tuple[WrittenTable, WrittenTable, int]:
        """UnifiedActivity in GUID order and the facts in ActivityId order (ties: in placing order), and how many
        placed rows have an ActivityId an earlier one has (``schemas``: the tables', when already decided;
        ``stored``: per table, stored rows in its order to merge in; ``version``: UnifiedActivity's;
        ``delta_rows``: where its placed rows are written as well)."""
        unified_schema, facts_schema = (schemas["unified"], schemas["facts"]) if schemas else self.schemas()
        distinct = ("ActivityId", "SourceActivityId", "msdynci_unifiedactivityid")
        kept = stored or [None, None]
        # UnifiedActivity is read whole three times a run for once written (the sink, the CDM export, the next run's
        # kept rows): LZ4 writes it a sixth faster and reads it twice as fast as zstd, for a file 1.7 times larger.
        # The facts are mostly read a few columns at a time, where the codec matters little: zstd keeps them small.
        tables = [
            (self.unified, paths[0], unified_schema, distinct, kept[0], "lz4", version, delta_rows),
            (self.facts, paths[1], facts_schema, ("ActivityId",), kept[1], "zstd"),
        ]
        # Both at once, one bucket of each held: the facts are written while UnifiedActivity is.
        (unified, _), (facts, repeated) = each(lambda t: t[0].write(lake, *t[1:]), tables, 2, "activities-tables")
        return unified, facts, repeated
