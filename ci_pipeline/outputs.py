"""The output-table contract (spec/output-tables.md): column lists, identifiers and deterministic GUIDs.

Every stage that produces one of the seven Dataverse-shaped tables builds it with these helpers, so the columns
and GUIDs are the same wherever a table is made or published.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa

from ci_pipeline.errors import UserError

#: The one fixed namespace of every GUID the project derives: uuid5(NAMESPACE, msdynci_identifier).
#: It is uuid5(NAMESPACE_URL, "https://ci-pipeline.dev/output-tables") and must never change: changing it
#: would give every published row a new GUID.
NAMESPACE = uuid.UUID("07e3607e-db94-5423-b773-540dff3be29c")

ALTERNATE_KEY_COLUMNS = [
    "DataSourceName",
    "EntityName",
    "AlternateValue",
    "KeyRing",
    "CustomerId",
    "AlternateKeyId",
    "msdynci_identifier",
]
UNIFIED_ACTIVITY_COLUMNS = [
    "CustomerId",
    "ActivityId",
    "SourceEntityName",
    "SourceActivityId",
    "ActivityType",
    "ActivityTimeStamp",
    "Title",
    "Description",
    "URL",
    "SemanticData",
    "RangeIndex",
    "msdynci_unifiedactivityid",
]
CUSTOMER_MEASURE_COLUMNS = ["CustomerId", "Measures", "msdynci_identifier", "msdynci_customermeasureid"]
ENRICHMENT_COLUMNS = [
    "CustomerId",
    "EnrichmentProvider",
    "EnrichmentType",
    "Values",
    "msdynci_enrichmentid",
    "msdynci_identifier",
]
PREDICTION_COLUMNS = [
    "CustomerId",
    "ModelProvider",
    "Model",
    "Values",
    "msdynci_predictionid",
    "msdynci_identifier",
]
SEGMENT_MEMBERSHIP_COLUMNS = [
    "CustomerId",
    "SegmentProvider",
    "SegmentMembershipType",
    "Segments",
    "msdynci_identifier",
    "msdynci_segmentmembershipid",
]

#: Table name -> (columns, GUID primary-key column). CustomerProfile's columns depend on the unify config.
OUTPUT_TABLES: dict[str, tuple[list[str] | None, str | None]] = {
    "CustomerProfile": (None, None),
    "AlternateKey": (ALTERNATE_KEY_COLUMNS, "AlternateKeyId"),
    "UnifiedActivity": (UNIFIED_ACTIVITY_COLUMNS, "msdynci_unifiedactivityid"),
    "CustomerMeasure": (CUSTOMER_MEASURE_COLUMNS, "msdynci_customermeasureid"),
    "Enrichment": (ENRICHMENT_COLUMNS, "msdynci_enrichmentid"),
    "Prediction": (PREDICTION_COLUMNS, "msdynci_predictionid"),
    "SegmentMembership": (SEGMENT_MEMBERSHIP_COLUMNS, "msdynci_segmentmembershipid"),
}


def guid(identifier: str) -> str:
    """The deterministic GUID of one msdynci_identifier string.

    Examples:
        >>> guid("crm|contacts|c-1") == guid("crm|contacts|c-1")
        True
    """
    return str(uuid.uuid5(NAMESPACE, identifier))


def uuid5_hex_digits(names: list[str]) -> np.ndarray:
    """The 32 hex digits of ``uuid.uuid5(NAMESPACE, name)`` for each name, as an ``(n, 32)`` array of ASCII bytes.

    uuid5 is SHA-1 of namespace + name with the version and variant bits set; only the hash runs per name, the
    bit-setting and formatting are vectorised (about 20x faster than building a ``uuid.UUID`` per name).
    """
    prefix = NAMESPACE.bytes
    digest = b"".join([hashlib.sha1(prefix + name.encode("utf-8")).digest()[:16] for name in names])
    raw = np.frombuffer(digest, dtype=np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype="S1").reshape(-1, 32)


def guids(identifiers: pd.Series) -> pd.Series:
    """Deterministic GUIDs for a column of identifiers: exactly :func:`guid` of each value, computed in bulk."""
    if len(identifiers) == 0:
        return pd.Series([], index=identifiers.index, dtype="string")
    hexed = uuid5_hex_digits(identifiers.astype(str).tolist())
    out = np.full((len(hexed), 36), b"-", dtype="S1")
    for start, end, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        out[:, at : at + end - start] = hexed[:, start:end]
    text = pa.array(out.view("S36").ravel(), type=pa.binary(36)).cast(pa.string())
    return pd.Series(pd.array(text, dtype="string"), index=identifiers.index)


def identifiers(*parts: pd.Series | str) -> pd.Series:
    """Join columns (or constants) with ``|`` into msdynci_identifier strings."""
    series = [p for p in parts if isinstance(p, pd.Series)]
    if not series:
        raise ValueError("identifiers() needs at least one column")
    index = series[0].index
    columns = [
        p.astype("string") if isinstance(p, pd.Series) else pd.Series(p, index=index, dtype="string") for p in parts
    ]
    out = columns[0]
    for column in columns[1:]:
        out = out + "|" + column
    return out


# -- shaping: one pure function per output table --------------------------------------------------------------
#: The ``Name`` part of a SegmentMembership identifier: the name of the membership list (one row per customer,
#: provider and membership type holds every segment of that customer in ``Segments``).
SEGMENT_MEMBERSHIP_NAME = "Segments"
#: The constant first part of a CustomerMeasure identifier.
CUSTOMER_MEASURE_PREFIX = "Customer_Measure"
#: GUID primary key of CustomerProfile rows: a deterministic GUID of CustomerId (the table has no GUID column).
CUSTOMER_PROFILE_KEY = "CustomerProfileId"


def _require(df: pd.DataFrame, table: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(
            f"{table}: the input has no column(s) {', '.join(missing)} (it has {', '.join(map(str, df.columns))}); "
            "the producing stage must deliver them"
        )


def _no_nulls(df: pd.DataFrame, table: str, columns: list[str]) -> None:
    for column in columns:
        missing = df[column].isna()
        if missing.any():
            raise UserError(
                f"{table}: {int(missing.sum())} row(s) have no {column} (e.g. row {int(missing.to_numpy().argmax())}); "
                "it identifies the row, so the producing stage must fill it"
            )


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string")


def json_text(series: pd.Series) -> pd.Series:
    """A JSON-string column: dicts and lists are serialised with sorted keys; strings are kept as they are."""
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return series.astype("string")

    def dump(value):
        if value is None or (isinstance(value, float) and value != value):
            return None
        if isinstance(value, str):
            return value
        if hasattr(value, "tolist"):
            value = value.tolist()
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)

    return series.map(dump).astype("string")


def _unique_by(df: pd.DataFrame, table: str, key: str) -> pd.DataFrame:
    duplicated = df[key].duplicated(keep=False)
    if duplicated.any():
        sample = df.loc[duplicated, key].drop_duplicates().head(5).tolist()
        raise UserError(
            f"{table}: {int(duplicated.sum())} rows share a {key} (e.g. {sample}); each row needs its own key, "
            "fix the producing stage"
        )
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def shape_customer_profile(df: pd.DataFrame) -> pd.DataFrame:
    """CustomerProfile: ``CustomerId`` first, then the unified attributes as given, as text, sorted by CustomerId."""
    _require(df, "CustomerProfile", ["CustomerId"])
    _no_nulls(df, "CustomerProfile", ["CustomerId"])
    columns = ["CustomerId", *[c for c in df.columns if c != "CustomerId"]]
    out = pd.DataFrame({c: _text(df[c]) for c in columns}, index=df.index)
    return _unique_by(out, "CustomerProfile", "CustomerId")


def customer_profile_keys(customer_ids: pd.Series) -> pd.Series:
    """The GUID primary key of CustomerProfile rows (``guid(CustomerId)``)."""
    return guids(customer_ids)


def shape_alternate_key(df: pd.DataFrame) -> pd.DataFrame:
    """AlternateKey: identifier ``DataSourceName|EntityName|AlternateValue`` and its GUID, sorted by the GUID."""
    _require(df, "AlternateKey", ["DataSourceName", "EntityName", "AlternateValue", "KeyRing", "CustomerId"])
    _no_nulls(df, "AlternateKey", ["DataSourceName", "EntityName", "AlternateValue", "CustomerId"])
    out = pd.DataFrame({c: _text(df[c]) for c in ["DataSourceName", "EntityName", "AlternateValue", "CustomerId"]})
    out["KeyRing"] = json_text(df["KeyRing"])
    out["msdynci_identifier"] = identifiers(out["DataSourceName"], out["EntityName"], out["AlternateValue"])
    out["AlternateKeyId"] = guids(out["msdynci_identifier"])
    return _unique_by(out[ALTERNATE_KEY_COLUMNS], "AlternateKey", "AlternateKeyId")


def unified_activity_guids(activity_ids: pd.Series) -> pd.Series:
    """The GUID of each UnifiedActivity row: ``guid("UnifiedActivity|" + ActivityId)`` (the timeline and the
    publish shaping derive it the same way, so a frame shaped without the column gets the timeline's GUIDs)."""
    return guids(identifiers("UnifiedActivity", activity_ids))


def shape_unified_activity(df: pd.DataFrame) -> pd.DataFrame:
    """UnifiedActivity: timestamps in UTC, RangeIndex = Unix seconds, GUID = :func:`unified_activity_guids`
    where missing."""
    required = ["CustomerId", "ActivityId", "SourceEntityName", "SourceActivityId", "ActivityType"]
    _require(df, "UnifiedActivity", [*required, "ActivityTimeStamp"])
    _no_nulls(df, "UnifiedActivity", ["CustomerId", "ActivityId"])
    out = pd.DataFrame({c: _text(df[c]) for c in required}, index=df.index)
    stamp = pd.to_datetime(df["ActivityTimeStamp"], utc=True)
    out["ActivityTimeStamp"] = stamp.astype("datetime64[us, UTC]")
    for column in ["Title", "Description", "URL"]:
        out[column] = _text(df[column]) if column in df.columns else pd.Series(pd.NA, index=df.index, dtype="string")
    out["SemanticData"] = (
        json_text(df["SemanticData"])
        if "SemanticData" in df.columns
        else pd.Series("{}", index=df.index, dtype="string")
    )
    epoch = (out["ActivityTimeStamp"] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    computed_range = epoch.astype("Int64").astype("string")
    out["RangeIndex"] = _text(df["RangeIndex"]).fillna(computed_range) if "RangeIndex" in df.columns else computed_range
    computed = unified_activity_guids(out["ActivityId"])
    given = df.get("msdynci_unifiedactivityid")
    out["msdynci_unifiedactivityid"] = _text(given).fillna(computed) if given is not None else computed
    return _unique_by(out[UNIFIED_ACTIVITY_COLUMNS], "UnifiedActivity", "msdynci_unifiedactivityid")


def shape_customer_measure(df: pd.DataFrame) -> pd.DataFrame:
    """CustomerMeasure: Measures as a JSON object, identifier ``Customer_Measure|CustomerId``."""
    _require(df, "CustomerMeasure", ["CustomerId", "Measures"])
    _no_nulls(df, "CustomerMeasure", ["CustomerId"])
    out = pd.DataFrame({"CustomerId": _text(df["CustomerId"]), "Measures": json_text(df["Measures"])})
    out["msdynci_identifier"] = identifiers(CUSTOMER_MEASURE_PREFIX, out["CustomerId"])
    out["msdynci_customermeasureid"] = guids(out["msdynci_identifier"])
    return _unique_by(out[CUSTOMER_MEASURE_COLUMNS], "CustomerMeasure", "msdynci_customermeasureid")


def shape_enrichment(df: pd.DataFrame) -> pd.DataFrame:
    """Enrichment: identifier ``EnrichmentProvider|EnrichmentType|CustomerId``."""
    _require(df, "Enrichment", ["CustomerId", "EnrichmentProvider", "EnrichmentType", "Values"])
    _no_nulls(df, "Enrichment", ["CustomerId", "EnrichmentProvider", "EnrichmentType"])
    out = pd.DataFrame({c: _text(df[c]) for c in ["CustomerId", "EnrichmentProvider", "EnrichmentType"]})
    out["Values"] = json_text(df["Values"])
    out["msdynci_identifier"] = identifiers(out["EnrichmentProvider"], out["EnrichmentType"], out["CustomerId"])
    out["msdynci_enrichmentid"] = guids(out["msdynci_identifier"])
    return _unique_by(out[ENRICHMENT_COLUMNS], "Enrichment", "msdynci_enrichmentid")


def shape_prediction(df: pd.DataFrame) -> pd.DataFrame:
    """Prediction: identifier ``Model|ModelProvider|CustomerId``."""
    _require(df, "Prediction", ["CustomerId", "ModelProvider", "Model", "Values"])
    _no_nulls(df, "Prediction", ["CustomerId", "ModelProvider", "Model"])
    out = pd.DataFrame({c: _text(df[c]) for c in ["CustomerId", "ModelProvider", "Model"]})
    out["Values"] = json_text(df["Values"])
    out["msdynci_identifier"] = identifiers(out["Model"], out["ModelProvider"], out["CustomerId"])
    out["msdynci_predictionid"] = guids(out["msdynci_identifier"])
    return _unique_by(out[PREDICTION_COLUMNS], "Prediction", "msdynci_predictionid")


def shape_segment_membership(df: pd.DataFrame, provider: str = "ci_pipeline") -> pd.DataFrame:
    """SegmentMembership: Segments as a sorted JSON list of unique names; identifier
    ``CustomerId|SegmentProvider|SegmentMembershipType|Segments`` unless the input already carries one.

    Args:
        df: CustomerId and Segments (a list or JSON list), optionally SegmentProvider and SegmentMembershipType.
        provider: SegmentProvider where the input has none (the project name).
    """
    _require(df, "SegmentMembership", ["CustomerId", "Segments"])
    _no_nulls(df, "SegmentMembership", ["CustomerId"])
    out = pd.DataFrame({"CustomerId": _text(df["CustomerId"])}, index=df.index)
    out["SegmentProvider"] = _text(df["SegmentProvider"]) if "SegmentProvider" in df.columns else provider
    out["SegmentProvider"] = out["SegmentProvider"].astype("string")
    kind = df["SegmentMembershipType"] if "SegmentMembershipType" in df.columns else "Customer"
    out["SegmentMembershipType"] = pd.Series(kind, index=df.index).astype("string").fillna("Customer")

    def sorted_names(value):
        names = json.loads(value) if isinstance(value, str) else list(value)
        return sorted({str(n) for n in names})

    out["Segments"] = json_text(df["Segments"].map(sorted_names))
    computed = identifiers(
        out["CustomerId"], out["SegmentProvider"], out["SegmentMembershipType"], SEGMENT_MEMBERSHIP_NAME
    )
    given = df.get("msdynci_identifier")
    out["msdynci_identifier"] = _text(given).fillna(computed) if given is not None else computed
    out["msdynci_segmentmembershipid"] = guids(out["msdynci_identifier"])
    return _unique_by(out[SEGMENT_MEMBERSHIP_COLUMNS], "SegmentMembership", "msdynci_segmentmembershipid")


#: Output table name -> its shaping function.
SHAPERS = {
    "CustomerProfile": shape_customer_profile,
    "AlternateKey": shape_alternate_key,
    "UnifiedActivity": shape_unified_activity,
    "CustomerMeasure": shape_customer_measure,
    "Enrichment": shape_enrichment,
    "Prediction": shape_prediction,
    "SegmentMembership": shape_segment_membership,
}


def empty_table(table: str) -> pd.DataFrame:
    """A shaped table with no rows (the sink still creates tables no stage produces yet)."""
    columns = OUTPUT_TABLES[table][0] or ["CustomerId"]
    return pd.DataFrame({c: pd.Series(dtype="string") for c in columns})
