"""Build the unified activity timeline from activity tables and the alternate keys of unified customers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.activities.jsoncols import json_objects
from ci_pipeline.config.activities import FACT_COLUMNS, ActivityTable
from ci_pipeline.errors import UserError
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


def key_strings(values: pd.Series) -> pd.Series:
    """Key values as the strings AlternateKey stores (``12`` not ``12.0`` for whole floats)."""
    if pd.api.types.is_float_dtype(values.dtype):
        whole = values.dropna()
        if bool((whole == np.floor(whole)).all()):
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
    missing = [
        c
        for c in [primary_key, spec.timestamp, spec.customer.column, spec.title, spec.description, spec.url]
        + list(spec.fields.values())
        if c is not None and c not in frame.columns
    ]
    if missing:
        raise UserError(
            f"activities.tables.{name}: column(s) {', '.join(sorted(set(missing)))} not in "
            f"{spec.source}.{spec.table} (it has {', '.join(map(str, frame.columns))}); fix the column names"
        )
    frame = frame.reset_index(drop=True)
    keys = key_strings(frame[primary_key])
    stamps = parse_timestamps(frame[spec.timestamp], spec.timestamp_format)
    links = key_strings(frame[spec.customer.column])
    customers = _customers(links, customer_lookup(alternate_key, spec.customer.source, spec.customer.table))

    reasons = _Reasons(frame.index)
    reasons.flag(keys.isna() | (keys.str.strip() == ""), f"primary key {primary_key} is empty")
    reasons.flag(keys.duplicated(keep=False), f"primary key {primary_key} '", keys, "' is duplicated")
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


def build_timeline(
    tables: dict[str, tuple[ActivityTable, pd.DataFrame, str]],
    alternate_key: pd.DataFrame,
    now: pd.Timestamp,
) -> Timeline:
    """Merge activity tables into UnifiedActivity.

    ActivityId is ``<source>_<table>_<primary key>``; the GUID is ``outputs.unified_activity_guids``;
    SemanticData holds the configured semantic fields as a JSON object with sorted keys; RangeIndex is the Unix
    timestamp (seconds) as a string. Rows whose key, timestamp or customer cannot be resolved are quarantined.

    Args:
        tables: activity name -> (configuration, ingested frame, primary key column).
        alternate_key: the AlternateKey table.
        now: the run time (UTC, tolerance included): later timestamps are quarantined.
    """
    accepted, corrupt, read = [], [], {}
    for name in sorted(tables):
        spec, frame, primary_key = tables[name]
        ok, bad = place_activities(name, spec, frame, primary_key, alternate_key, now)
        accepted.append(ok)
        corrupt.append(bad)
        read[name] = len(frame)
    merged = _merged_by_activity_id(accepted)
    # The per-table frames are copied into ``merged``: let them go before the GUID order is copied once more.
    accepted.clear()
    stamps = pd.to_datetime(merged["ActivityTimeStamp"], utc=True)
    merged["ActivityTimeStamp"] = stamps
    merged["RangeIndex"] = ((stamps - _EPOCH) // pd.Timedelta(seconds=1)).astype("Int64").astype("string")
    merged["msdynci_unifiedactivityid"] = unified_activity_guids(merged["ActivityId"])
    for column in ("CustomerId", "ActivityId", "SourceEntityName", "SourceActivityId", "ActivityType", "Title"):
        merged[column] = merged[column].astype("string")
    for column in ("Description", "URL", "SemanticData"):
        merged[column] = merged[column].astype("string")
    unified = _sorted(merged[UNIFIED_ACTIVITY_COLUMNS], "msdynci_unifiedactivityid")
    field_columns = [c for c in merged.columns if c not in set(UNIFIED_ACTIVITY_COLUMNS) | {"Activity"}]
    facts = merged[FACT_COLUMNS + field_columns]
    facts["Activity"] = facts["Activity"].astype("string")
    bad = pd.concat(corrupt, ignore_index=True) if corrupt else pd.DataFrame(columns=CORRUPT_COLUMNS)
    bad = bad.sort_values(["Activity", "SourceActivityId"], kind="stable").reset_index(drop=True).astype("string")
    return Timeline(unified=unified, corrupt=bad, facts=facts, rows_read=read)


def _merged_by_activity_id(accepted: list[pd.DataFrame]) -> pd.DataFrame:
    """The accepted rows of every table in one frame ordered by ActivityId (a stable sort of them in the given
    order).

    Each table's ActivityIds share its ``<source>_<table>_`` prefix, so the tables usually follow one another
    whole: each is put in order on its own (no work when it already is) and the tables are put end to end by their
    first ActivityId. Only when that leaves the ids out of strict order (prefixes that interleave) is the whole
    frame sorted, in Arrow from contiguous columns: a take from the chunks a concat leaves behind is several times
    slower.
    """
    if not accepted:
        return pd.DataFrame(columns=UNIFIED_ACTIVITY_COLUMNS)
    ordered = [_sorted(frame, "ActivityId") for frame in accepted]
    filled = sorted((f for f in ordered if len(f)), key=lambda f: f["ActivityId"].iloc[0])
    merged = pd.concat(filled or ordered, ignore_index=True)
    if _increasing(merged["ActivityId"], strict=True):
        # The columns in the order a concat in the given order gives (the first table's fields first).
        return merged[list(dict.fromkeys(c for frame in accepted for c in frame.columns))]
    return _sorted(pd.concat(accepted, ignore_index=True), "ActivityId")


def _sorted(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows ordered by ``column`` (stable); column types come back as they were (Arrow's pandas metadata)."""
    if _increasing(frame[column], strict=False):
        return frame.reset_index(drop=True)
    table = pa.Table.from_pandas(frame, preserve_index=False).combine_chunks()
    return table.take(pc.sort_indices(table.column(column))).to_pandas()


def _increasing(values: pd.Series, strict: bool) -> bool:
    """Whether text values are in (strictly) increasing order, compared in Arrow."""
    if len(values) < 2:
        return True
    text = pa.chunked_array(pa.array(values, type=pa.large_string(), from_pandas=True))
    compare = pc.greater if strict else pc.greater_equal
    return bool(pc.all(compare(text[1:], text[:-1])).as_py())
