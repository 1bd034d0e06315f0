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
import pyarrow.parquet as pq

from ci_pipeline.activities import ordered
from ci_pipeline.activities.jsoncols import json_objects
from ci_pipeline.config.activities import FACT_COLUMNS, ActivityTable
from ci_pipeline.errors import UserError
from ci_pipeline.lake import Lake, WrittenTable
from ci_pipeline.outputs import UNIFIED_ACTIVITY_COLUMNS, unified_activity_guids

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
    The placed rows go to Parquet part files under ``work``; DuckDB puts them in order, out of core, into the two
    stored tables. What is held at once is one batch, the customer lookup and the quarantine.

    Args:
        sources: activity name -> its table.
        alternate_key: the AlternateKey table.
        now: the run time (UTC, tolerance included): later timestamps are quarantined.
        lake: where the tables are stored.
        paths: the lake-relative paths of UnifiedActivity and of the facts.
        work: an empty folder for the part files and DuckDB's spill files (the caller removes it).
    """
    con = ordered.connect(work / "duckdb")
    try:
        parts = _Parts(work / "parts")
        corrupt, read, placed = [], {}, {}
        for name in sorted(sources):
            source = sources[name]
            spec = source.spec
            check_columns(name, spec, source.rows.schema.names, source.primary_key)
            repeated, whole = ordered.repeated_keys(con, source.rows, source.primary_key)
            rules = KeyRules(whole=whole, duplicated=key_strings(repeated.to_pandas(), whole))
            lookup = customer_lookup(alternate_key, spec.customer.source, spec.customer.table)
            read[name] = placed[name] = 0
            for frame in _batches(source.rows):
                ok, bad = place_rows(name, spec, frame, source.primary_key, lookup, now, rules)
                parts.add(_timeline_rows(ok))
                corrupt.append(bad)
                read[name] += len(frame)
                placed[name] += len(ok)
        # The batches are gone: give the memory their Arrow buffers took back before DuckDB takes its share.
        pa.default_memory_pool().release_unused()
        per_type: dict[str, int] = {}
        for name, count in placed.items():
            if count:
                per_type[sources[name].spec.type] = per_type.get(sources[name].spec.type, 0) + count
        unified, facts = _write_ordered(con, parts, lake, paths)
        customers, repeated_ids = _distinct_counts(con, parts)
    finally:
        con.close()
    bad = pd.concat(corrupt, ignore_index=True) if corrupt else pd.DataFrame(columns=CORRUPT_COLUMNS)
    bad = bad.sort_values(["Activity", "SourceActivityId"], kind="stable").reset_index(drop=True).astype("string")
    return StoredTimeline(
        unified=unified,
        facts=facts,
        corrupt=bad,
        rows_read=read,
        placed=placed,
        per_type=dict(sorted(per_type.items())),
        customers=customers,
        repeated_activity_ids=repeated_ids,
    )


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


class _Parts:
    """Placed rows written as Parquet part files, with what the stored tables' schemas are derived from.

    The columns are stored as ``c0``, ``c1``, ... (:meth:`column`): DuckDB's names ignore case, and a semantic
    field may be named like a column of UnifiedActivity in another case (``url`` and ``URL``).
    """

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.files: list[Path] = []
        #: The first row of each batch (every batch for column names and types), and each column's Arrow types.
        self.heads: list[pd.DataFrame] = []
        self.types: dict[str, list[pa.DataType]] = {}
        self.names: dict[str, str] = {}
        self.rows = 0

    def column(self, name: str) -> str:
        """The SQL name of a column in the part files."""
        return ordered.quoted(self.names[name])

    def add(self, rows: pd.DataFrame) -> None:
        """Keep a batch of placed rows, numbered after the ones before (the order ties are broken in)."""
        # A take, not head(): a slice of Arrow-backed columns would keep the whole batch alive.
        self.heads.append(rows.take(range(min(1, len(rows)))))
        if rows.empty:
            return
        table = pa.Table.from_pandas(rows, preserve_index=False)
        for name, column in zip(table.column_names, table.columns, strict=True):
            self.types.setdefault(name, []).append(column.type)
            self.names.setdefault(name, f"c{len(self.names)}")
        table = ordered.storable(table).rename_columns([self.names[n] for n in table.column_names])
        table = table.append_column(_SEQUENCE, pa.array(np.arange(self.rows, self.rows + len(rows), dtype=np.int64)))
        path = self.folder / f"part-{len(self.files):06d}.parquet"
        # lz4: parts are read once, soon; compressing them harder costs more time than the disk it saves.
        pq.write_table(table, path, compression="lz4")
        self.files.append(path)
        self.rows += len(rows)

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
        missing in the sample takes the type its rows have in the parts."""
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        for i, field in enumerate(schema):
            if pa.types.is_null(field.type):
                found = [t for t in self.types.get(field.name, []) if not pa.types.is_null(t)]
                if found:
                    schema = schema.set(i, field.with_type(found[0]))
        return schema


_SEQUENCE = "__row"


def _write_ordered(con, parts: _Parts, lake: Lake, paths: tuple[str, str]) -> tuple[WrittenTable, WrittenTable]:
    """UnifiedActivity in GUID order and the facts in ActivityId order, from the parts (ties: in reading order)."""
    sample = parts.sample()
    fields = [c for c in sample.columns if c not in set(UNIFIED_ACTIVITY_COLUMNS) | {"Activity"}]
    facts_sample = sample[FACT_COLUMNS + fields]
    facts_sample["Activity"] = facts_sample["Activity"].astype("string")
    unified_sample = sample[UNIFIED_ACTIVITY_COLUMNS[:-1]].copy()
    unified_sample["msdynci_unifiedactivityid"] = unified_activity_guids(unified_sample["ActivityId"])
    if not parts.files:
        return (
            ordered.write_sorted(con, [], "", parts.schema(unified_sample), lake, paths[0]),
            ordered.write_sorted(con, [], "", parts.schema(facts_sample), lake, paths[1]),
        )
    key, sequence = parts.column("ActivityId"), ordered.quoted(_SEQUENCE)
    columns = ", ".join(parts.column(c) for c in UNIFIED_ACTIVITY_COLUMNS[:-1])
    digest, guid = ordered.unified_activity_guid_sql(key, "activity_digest")
    unified = (
        f"SELECT {columns}, {guid} AS activity_guid FROM (SELECT {columns}, {sequence}, "
        f"{digest} AS activity_digest FROM {{parts}}) ORDER BY activity_guid, {key}, {sequence}"
    )
    facts = (
        f"SELECT {', '.join(parts.column(c) for c in FACT_COLUMNS + fields)} FROM {{parts}} ORDER BY {key}, {sequence}"
    )
    # One after the other: two sorts at once would share DuckDB's memory limit and each spill sooner.
    return (
        ordered.write_sorted(con, parts.files, unified, parts.schema(unified_sample), lake, paths[0]),
        ordered.write_sorted(con, parts.files, facts, parts.schema(facts_sample), lake, paths[1]),
    )


def _distinct_counts(con, parts: _Parts) -> tuple[int, int]:
    """Distinct customers, and rows whose ActivityId an earlier row has, over the placed rows."""
    if not parts.files:
        return 0, 0
    listed = ", ".join(ordered.literal(str(p)) for p in parts.files)
    customer, activity = parts.column("CustomerId"), parts.column("ActivityId")
    customers, repeated = con.sql(
        f"SELECT count(DISTINCT {customer}), count(*) - count(DISTINCT {activity}) "
        f"FROM read_parquet([{listed}], union_by_name = true)"
    ).fetchall()[0]
    return int(customers), int(repeated)
