"""Build the unified activity timeline from activity tables and the alternate keys of unified customers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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

    #: UnifiedActivity, exactly ``outputs.UNIFIED_ACTIVITY_COLUMNS``, sorted by ActivityId.
    unified: pd.DataFrame
    #: Rows that were not placed, with the reason (``CORRUPT_COLUMNS``).
    corrupt: pd.DataFrame
    #: One row per accepted activity with typed semantic fields (``FACT_COLUMNS`` + field columns).
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


def customer_lookup(alternate_key: pd.DataFrame, source: str, table: str) -> pd.Series:
    """AlternateValue -> CustomerId for the records of one customer table."""
    rows = alternate_key[(alternate_key["DataSourceName"] == source) & (alternate_key["EntityName"] == table)]
    rows = rows.drop_duplicates("AlternateValue")
    return pd.Series(rows["CustomerId"].astype("string").to_numpy(), index=rows["AlternateValue"].astype("string"))


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
    lookup = customer_lookup(alternate_key, spec.customer.source, spec.customer.table)
    customers = links.map(lookup).astype("string")

    reason = pd.Series(pd.NA, index=frame.index, dtype="string")

    def flag(mask, text):
        nonlocal reason
        mask = pd.Series(mask, index=frame.index).fillna(False).astype(bool) & reason.isna()
        if mask.any():
            reason = reason.mask(mask, text if isinstance(text, str) else text[mask])

    flag(keys.isna() | (keys.str.strip() == ""), f"primary key {primary_key} is empty")
    flag(keys.duplicated(keep=False), "primary key " + primary_key + " '" + keys.fillna("") + "' is duplicated")
    raw = frame[spec.timestamp].astype("string")
    flag(
        stamps.isna(),
        "timestamp "
        + spec.timestamp
        + " '"
        + raw.fillna("")
        + "' is empty or cannot be parsed"
        + (f" with format {spec.timestamp_format}" if spec.timestamp_format else ""),
    )
    flag(
        stamps > now,
        "timestamp " + spec.timestamp + " " + raw.fillna("") + f" is in the future (after {now.isoformat()})",
    )
    flag(links.isna() | (links.str.strip() == ""), f"customer key {spec.customer.column} is empty")
    flag(
        customers.isna(),
        f"no {spec.customer.source}.{spec.customer.table} record with key '" + links.fillna("") + "'",
    )
    bad = reason.notna()
    corrupt = pd.DataFrame(
        {
            "Activity": name,
            "DataSourceName": spec.source,
            "EntityName": spec.table,
            "SourceActivityId": keys[bad],
            "Reason": reason[bad],
            "Record": json_objects(frame.loc[bad].astype("string")) if bad.any() else pd.Series(dtype="string"),
        },
        columns=CORRUPT_COLUMNS,
    )
    good = ~bad
    accepted = pd.DataFrame(
        {
            "CustomerId": customers[good],
            "ActivityId": (spec.source + "_" + spec.table + "_" + keys[good]).astype("string"),
            "SourceEntityName": spec.table,
            "SourceActivityId": keys[good],
            "ActivityType": spec.type,
            "ActivityTimeStamp": stamps[good],
            "Title": _text(frame, spec.title, good),
            "Description": _text(frame, spec.description, good),
            "URL": _text(frame, spec.url, good),
            "Activity": name,
        }
    )
    fields = frame.loc[good, list(spec.fields.values())].copy()
    fields.columns = list(spec.fields.keys())
    accepted = pd.concat([accepted, fields], axis=1)
    accepted["SemanticData"] = json_objects(fields) if len(fields) else pd.Series(dtype="string")
    return accepted, corrupt.astype("string")


def _text(frame: pd.DataFrame, column: str | None, rows: pd.Series) -> pd.Series:
    if column is None:
        return pd.Series(pd.NA, index=frame.index[rows], dtype="string")
    return frame.loc[rows, column].astype("string")


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
    merged = pd.concat(accepted, ignore_index=True) if accepted else pd.DataFrame(columns=UNIFIED_ACTIVITY_COLUMNS)
    merged = merged.sort_values("ActivityId", kind="stable").reset_index(drop=True)
    stamps = pd.to_datetime(merged["ActivityTimeStamp"], utc=True)
    merged["ActivityTimeStamp"] = stamps
    merged["RangeIndex"] = ((stamps - _EPOCH) // pd.Timedelta(seconds=1)).astype("Int64").astype("string")
    merged["msdynci_unifiedactivityid"] = unified_activity_guids(merged["ActivityId"])
    for column in ("CustomerId", "ActivityId", "SourceEntityName", "SourceActivityId", "ActivityType", "Title"):
        merged[column] = merged[column].astype("string")
    for column in ("Description", "URL", "SemanticData"):
        merged[column] = merged[column].astype("string")
    unified = merged[UNIFIED_ACTIVITY_COLUMNS].copy()
    field_columns = [c for c in merged.columns if c not in set(UNIFIED_ACTIVITY_COLUMNS) | {"Activity"}]
    facts = merged[FACT_COLUMNS + field_columns].copy()
    facts["Activity"] = facts["Activity"].astype("string")
    bad = pd.concat(corrupt, ignore_index=True) if corrupt else pd.DataFrame(columns=CORRUPT_COLUMNS)
    bad = bad.sort_values(["Activity", "SourceActivityId"], kind="stable").reset_index(drop=True).astype("string")
    return Timeline(unified=unified, corrupt=bad, facts=facts, rows_read=read)
