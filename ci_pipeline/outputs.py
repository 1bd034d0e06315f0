"""The output-table contract (spec/output-tables.md): column lists, identifiers and deterministic GUIDs.

Every stage that produces one of the seven Dataverse-shaped tables builds it with these helpers, so the columns
and GUIDs are the same wherever a table is made or published.
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa

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


def guids(identifiers: pd.Series) -> pd.Series:
    """Deterministic GUIDs for a column of identifiers: exactly :func:`guid` of each value, computed in bulk.

    uuid5 is SHA-1 of namespace + name with the version and variant bits set; only the hash runs per row, the
    bit-setting and formatting are vectorised (about 20x faster than building a ``uuid.UUID`` per row).
    """
    if len(identifiers) == 0:
        return pd.Series([], index=identifiers.index, dtype="string")
    prefix = NAMESPACE.bytes
    digest = b"".join(
        [hashlib.sha1(prefix + i.encode("utf-8")).digest()[:16] for i in identifiers.astype(str).tolist()]
    )
    raw = np.frombuffer(digest, dtype=np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype="S1").reshape(-1, 32)
    out = np.full((len(raw), 36), b"-", dtype="S1")
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
