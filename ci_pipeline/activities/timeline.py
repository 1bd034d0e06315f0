"""Build the unified activity timeline from activity tables and the alternate keys of unified customers, one batch
of one activity table at a time."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ci_pipeline.activities import ordered
from ci_pipeline.activities.jsoncols import json_objects
from ci_pipeline.config.activities import FACT_COLUMNS, ActivityTable
from ci_pipeline.errors import UserError
from ci_pipeline.lake import Lake, WrittenTable
from ci_pipeline.outputs import UNIFIED_ACTIVITY_COLUMNS, unified_activity_guids
from ci_pipeline.side_by_side import each, in_background

#: The AlternateKey columns the stage reads: the customer lookup's.
LOOKUP_COLUMNS = ["DataSourceName", "EntityName", "AlternateValue", "CustomerId"]
#: Columns of the quarantine table (one row per activity that could not be placed on the timeline).
CORRUPT_COLUMNS = ["Activity", "DataSourceName", "EntityName", "SourceActivityId", "Reason", "Record"]
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
    """Key values as the strings AlternateKey stores (``12`` not ``12.0`` for whole floats).

    ``whole``: whether every float key of the whole table is a whole number, when ``values`` is one batch of it
    (None: decided from ``values``), so that every batch writes its keys alike.
    """
    if pd.api.types.is_float_dtype(values.dtype):
        if whole is None:
            present = values.dropna()
            whole = bool((present == np.floor(present)).all())
        if whole:
            return values.astype("Int64").astype("string")
    return values.astype("string")


def parse_timestamps(values: pd.Series, fmt: str | None = None) -> pd.Series:
    """Timestamps as UTC; values that cannot be parsed become NaT (naive values are taken as UTC)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    text = values.astype("string").str.strip()
    if fmt:
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    retry = parsed.isna() & text.notna() & (text != "")
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], format="mixed", errors="coerce", utc=True)
    return parsed


def customer_lookup(alternate_key: pd.DataFrame, source: str, table: str) -> tuple[pa.Array, pa.Array]:
    """The AlternateValue and CustomerId of the records of one customer table, one row per AlternateValue."""
    rows = alternate_key[(alternate_key["DataSourceName"] == source) & (alternate_key["EntityName"] == table)]
    rows = rows.drop_duplicates("AlternateValue")
    return _arrow_text(rows["AlternateValue"]), _arrow_text(rows["CustomerId"])


def _arrow_text(values: pd.Series) -> pa.Array:
    return pa.array(values.astype("string"), type=pa.large_string(), from_pandas=True)


def _customers(links: pd.Series, lookup: tuple[pa.Array, pa.Array]) -> pd.Series:
    """CustomerId of each link value (missing where no record has it): one hash join on the keys, no Python per row."""
    values, customer_ids = lookup
    position = pc.index_in(_arrow_text(links), value_set=values)
    return pd.Series(pd.array(pc.take(customer_ids, position), dtype="string"), index=links.index)


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
    return place_rows(name, spec, frame, primary_key, lookup, now)


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
    lookup: tuple[pa.Array, pa.Array],
    now,
    keys_of_table: KeyRules | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`place_activities` of ``frame``, the whole table or one batch of it.

    Args:
        lookup: :func:`customer_lookup` of the table's customer table.
        keys_of_table: what the whole table's keys look like when ``frame`` is one batch of it (None: ``frame`` is
            the whole table).
    """
    check_columns(name, spec, list(frame.columns), primary_key)
    frame = frame.reset_index(drop=True)
    keys = key_strings(frame[primary_key], keys_of_table.whole if keys_of_table else None)
    stamps = parse_timestamps(frame[spec.timestamp], spec.timestamp_format)
    links = key_strings(frame[spec.customer.column])
    customers = _customers(links, lookup)

    reasons = _Reasons(frame.index)
    reasons.flag(keys.isna() | (keys.str.strip() == ""), f"primary key {primary_key} is empty")
    repeated = keys.isin(keys_of_table.duplicated) if keys_of_table else keys.duplicated(keep=False)
    reasons.flag(repeated, f"primary key {primary_key} '", keys, "' is duplicated")
    raw = frame[spec.timestamp]
    with_format = f" with format {spec.timestamp_format}" if spec.timestamp_format else ""
    reasons.flag(stamps.isna(), f"timestamp {spec.timestamp} '", raw, f"' is empty or cannot be parsed{with_format}")
    reasons.flag(stamps > now, f"timestamp {spec.timestamp} ", raw, f" is in the future (after {now.isoformat()})")
    reasons.flag(links.isna() | (links.str.strip() == ""), f"customer key {spec.customer.column} is empty")
    reasons.flag(customers.isna(), f"no {spec.customer.source}.{spec.customer.table} record with key '", links, "'")
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
            "ActivityId": (spec.source + "_" + spec.table + "_" + keys).astype("string"),
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
    return accepted, corrupt.astype("string")


def _text(frame: pd.DataFrame, column: str | None) -> pd.Series:
    if column is None:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame[column].astype("string")


@dataclass(frozen=True)
class ActivitySource:
    """One configured activity table: its configuration, its key column and its stored rows (read in batches)."""

    spec: ActivityTable
    primary_key: str
    rows: ds.Dataset


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


@dataclass(frozen=True)
class KeyRules:
    """What the keys of a whole activity table look like, for placing it one batch at a time."""

    #: Float keys: whether every one is a whole number (written ``12``, not ``12.0``); None for other types.
    whole: bool | None
    #: The key strings more than one row has.
    duplicated: pd.Series


def write_timeline(
    sources: dict[str, ActivitySource],
    alternate_key: pd.DataFrame,
    now: pd.Timestamp,
    lake: Lake,
    paths: tuple[str, str],
    work: Path,
) -> StoredTimeline:
    """Place every activity table one batch at a time and store UnifiedActivity and the facts in the lake.

    ActivityId is ``<source>_<table>_<primary key>``; the GUID is ``outputs.unified_activity_guids``;
    SemanticData holds the configured semantic fields as a JSON object with sorted keys; RangeIndex is the Unix
    timestamp (seconds) as a string. Rows whose key, timestamp or customer cannot be resolved are quarantined.
    The placed rows go to bucket files under ``work`` by key range (``ordered.SortedTable``), and each bucket is
    sorted and written in turn, the two tables at once. What is held at once is three batches (or one bucket of each
    table and three batches of it), the customer lookup and the quarantine.

    Args:
        sources: activity name -> its table.
        alternate_key: the AlternateKey table.
        now: the run time (UTC, tolerance included): later timestamps are quarantined.
        lake: where the tables are stored.
        paths: the lake-relative paths of UnifiedActivity and of the facts.
        work: an empty folder for the bucket files and DuckDB's spill files (the caller removes it).
    """
    con = ordered.connect(work / "duckdb")
    try:
        rules = {}
        for name in sorted(sources):
            source = sources[name]
            check_columns(name, source.spec, source.rows.schema.names, source.primary_key)
            repeated, whole = ordered.repeated_keys(con, source.rows, source.primary_key)
            rules[name] = KeyRules(whole=whole, duplicated=key_strings(repeated.to_pandas(), whole))
        # Enough buckets that one holds about BUCKET_ROWS rows; the facts' key ranges come from a sample of keys.
        total = sum(source.rows.count_rows() for source in sources.values())
        buckets = max(1, -(-total // ordered.BUCKET_ROWS))
        step = max(1, total // (buckets * ordered.SAMPLES_PER_BUCKET))
        samples = _activity_id_samples(sources, rules, step) if buckets > 1 else []
        placed_rows = _Placed(work / "ordered", buckets, ordered.boundaries(samples, buckets), alternate_key)
        corrupt, read, placed, lookups = [], {}, {}, {}

        def placed_batches():
            for name in sorted(sources):
                source = sources[name]
                spec = source.spec
                linked = (spec.customer.source, spec.customer.table)
                if linked not in lookups:
                    lookups[linked] = customer_lookup(alternate_key, *linked)
                read[name] = placed[name] = 0
                for frame in _batches(source.rows):
                    ok, bad = place_rows(name, spec, frame, source.primary_key, lookups[linked], now, rules[name])
                    corrupt.append(bad)
                    read[name] += len(frame)
                    placed[name] += len(ok)
                    yield ok

        # The next batches are placed while this one goes into the buckets (its GUIDs in DuckDB, its bucket files).
        for ok in in_background(placed_batches(), depth=1, name="activities-place"):
            placed_rows.add(con, _timeline_rows(ok))
        # The batches are gone: give the memory their Arrow buffers took back before the buckets are sorted.
        lookups.clear()
        pa.default_memory_pool().release_unused()
        unified, facts, repeated_ids = placed_rows.write(lake, paths)
    finally:
        con.close()
    per_type: dict[str, int] = {}
    for name, count in placed.items():
        if count:
            per_type[sources[name].spec.type] = per_type.get(sources[name].spec.type, 0) + count
    bad = pd.concat(corrupt, ignore_index=True) if corrupt else pd.DataFrame(columns=CORRUPT_COLUMNS)
    bad = bad.sort_values(["Activity", "SourceActivityId"], kind="stable").reset_index(drop=True).astype("string")
    return StoredTimeline(
        unified=unified,
        facts=facts,
        corrupt=bad,
        rows_read=read,
        placed=placed,
        per_type=dict(sorted(per_type.items())),
        customers=placed_rows.customers(),
        repeated_activity_ids=repeated_ids,
    )


def _activity_id_samples(sources: dict[str, ActivitySource], rules: dict[str, KeyRules], step: int) -> list[str]:
    """Every ``step``-th ActivityId of every table (keys read alone, batch by batch): what the facts' key ranges are
    cut from."""
    samples: list[str] = []
    for name in sorted(sources):
        source = sources[name]
        prefix = f"{source.spec.source}_{source.spec.table}_"
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
) -> Timeline:
    """:func:`write_timeline` of frames in memory, with the tables read back as frames (small data: tests, tools).

    Args:
        tables: activity name -> (configuration, ingested frame, primary key column).
        alternate_key: the AlternateKey table.
        now: the run time (UTC, tolerance included): later timestamps are quarantined.
    """
    sources = {
        name: ActivitySource(spec, key, ds.dataset(pa.Table.from_pandas(frame, preserve_index=False)))
        for name, (spec, frame, key) in tables.items()
    }
    with tempfile.TemporaryDirectory(prefix="ci-pipeline-activities-") as folder:
        lake = Lake.local(Path(folder) / "lake")
        stored = write_timeline(sources, alternate_key, now, lake, ("unified.parquet", "facts.parquet"), Path(folder))
        return Timeline(
            unified=lake.read_parquet(stored.unified.path),
            corrupt=stored.corrupt,
            facts=lake.read_parquet(stored.facts.path),
            rows_read=stored.rows_read,
        )


def _batches(rows: ds.Dataset):
    """The table's rows as frames of at most ``ordered.BATCH_ROWS`` rows (one empty frame for an empty table)."""
    found = False
    # One batch ahead at most: the scanner's default reads 16 batches ahead, which is most of a table at these sizes.
    for batch in rows.to_batches(batch_size=ordered.BATCH_ROWS, batch_readahead=1, fragment_readahead=1):
        if batch.num_rows:
            found = True
            yield batch.to_pandas()
    if not found:
        yield rows.schema.empty_table().to_pandas()


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


class _Placed:
    """Placed rows on their way to the two stored tables (``ordered.SortedTable``), with what the tables' schemas
    are derived from and the customers that have an activity."""

    def __init__(self, folder: Path, buckets: int, boundaries: list[str], alternate_key: pd.DataFrame):
        self.unified = ordered.SortedTable(folder / "unified", "msdynci_unifiedactivityid", buckets)
        self.facts = ordered.SortedTable(folder / "facts", "ActivityId", len(boundaries) + 1)
        self.guid_bucket = ordered.guid_buckets(buckets)
        self.fact_bucket = ordered.key_buckets(boundaries)
        #: The first row of each batch (every batch for column names and types), and each column's Arrow types.
        self.heads: list[pd.DataFrame] = []
        self.types: dict[str, list[pa.DataType]] = {}
        #: Every CustomerId, and whether a placed row has it: distinct customers counted on integer codes.
        self.customer_ids = _arrow_text(pd.Series(alternate_key["CustomerId"].dropna().unique()))
        self.seen = np.zeros(len(self.customer_ids), dtype=bool)

    def add(self, con, rows: pd.DataFrame) -> None:
        """Put a batch of placed rows into both tables' buckets, after the ones before (the order ties keep)."""
        # A take, not head(): a slice of Arrow-backed columns would keep the whole batch alive.
        self.heads.append(rows.take(range(min(1, len(rows)))))
        if rows.empty:
            return
        table = pa.Table.from_pandas(rows, preserve_index=False)
        for name, column in zip(table.column_names, table.columns, strict=True):
            self.types.setdefault(name, []).append(column.type)
        ids = table.column("ActivityId").cast(pa.large_string())
        guids, heads = ordered.unified_activity_guids(con, ids)
        unified = table.select(UNIFIED_ACTIVITY_COLUMNS[:-1]).append_column("msdynci_unifiedactivityid", guids)
        self.unified.add(unified, self.guid_bucket(heads))
        facts = table.select(FACT_COLUMNS + [c for c in table.column_names if c not in _NOT_FIELDS])
        self.facts.add(facts, self.fact_bucket(ids) if self.facts.buckets > 1 else None)
        customers = pc.index_in(table.column("CustomerId").cast(pa.large_string()), value_set=self.customer_ids)
        self.seen[customers.to_numpy()] = True

    def customers(self) -> int:
        """Distinct customers with at least one placed activity."""
        return int(self.seen.sum())

    def sample(self) -> pd.DataFrame:
        """A few rows with the columns, in the order and with the types, that concatenating every batch gives."""
        filled = [h for h in self.heads if len(h)]
        columns = list(dict.fromkeys(c for h in self.heads for c in h.columns))
        if not self.heads:
            return pd.DataFrame({c: pd.Series(dtype="string") for c in FACT_COLUMNS + UNIFIED_ACTIVITY_COLUMNS})
        sample = pd.concat(filled or self.heads, ignore_index=True)
        for column in columns:
            if column not in sample.columns:
                # Only tables without a placed row have it: it is empty, in its own type.
                first = next(h for h in self.heads if column in h.columns)
                sample[column] = pd.Series(index=sample.index, dtype=first[column].dtype)
        return sample[columns]

    def schema(self, frame: pd.DataFrame) -> pa.Schema:
        """The Arrow schema of ``frame`` (pandas metadata included); a column of Python objects that are all
        missing in the sample takes the type its rows have in the batches."""
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        for i, field in enumerate(schema):
            if pa.types.is_null(field.type):
                found = [t for t in self.types.get(field.name, []) if not pa.types.is_null(t)]
                if found:
                    schema = schema.set(i, field.with_type(found[0]))
        return schema

    def write(self, lake: Lake, paths: tuple[str, str]) -> tuple[WrittenTable, WrittenTable, int]:
        """UnifiedActivity in GUID order and the facts in ActivityId order (ties: in placing order), and how many
        placed rows have an ActivityId an earlier one has."""
        sample = self.sample()
        fields = [c for c in sample.columns if c not in _NOT_FIELDS]
        facts_sample = sample[FACT_COLUMNS + fields]
        facts_sample["Activity"] = facts_sample["Activity"].astype("string")
        unified_sample = sample[UNIFIED_ACTIVITY_COLUMNS[:-1]].copy()
        unified_sample["msdynci_unifiedactivityid"] = unified_activity_guids(unified_sample["ActivityId"])
        distinct = ("ActivityId", "SourceActivityId", "msdynci_unifiedactivityid")
        tables = [
            (self.unified, paths[0], self.schema(unified_sample), distinct),
            (self.facts, paths[1], self.schema(facts_sample), ("ActivityId",)),
        ]
        # Both at once, one bucket of each held: the facts are written while UnifiedActivity is.
        (unified, _), (facts, repeated) = each(lambda t: t[0].write(lake, *t[1:]), tables, 2, "activities-tables")
        return unified, facts, repeated
