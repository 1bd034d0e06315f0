"""Dataverse logical names of the output tables and their columns.

Mapping (prefix ``p``, default ``msdynci``): table ``AlternateKey`` -> logical name ``p_alternatekey``, entity set
``p_alternatekeys``; column ``CustomerId`` -> ``p_customerid``; a column already named ``msdynci_x`` -> ``p_x``.
CustomerProfile has no GUID column of its own: its primary key ``p_customerprofileid`` is ``guid(CustomerId)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline import outputs
from ci_pipeline.dataverse.sink import SinkTable
from ci_pipeline.errors import UserError

_CI_PREFIX = "msdynci_"


def logical_column(column: str, prefix: str = "msdynci") -> str:
    """``CustomerId`` -> ``msdynci_customerid``; ``msdynci_identifier`` -> ``<prefix>_identifier``."""
    lower = column.lower()
    return f"{prefix}_{lower.removeprefix(_CI_PREFIX)}"


def logical_table(table: str, prefix: str = "msdynci") -> str:
    """``AlternateKey`` -> ``msdynci_alternatekey``."""
    return f"{prefix}_{table.lower()}"


def entity_set(table: str, prefix: str = "msdynci") -> str:
    """The Web API entity set: ``msdynci_alternatekeys``, ``msdynci_unifiedactivities``, ..."""
    name = logical_table(table, prefix)
    return name[:-1] + "ies" if name.endswith("y") and name[-2] not in "aeiou" else name + "s"


def primary_key(table: str, prefix: str = "msdynci") -> str:
    """The GUID primary-key column of a table, by its logical name."""
    if table == "CustomerProfile":
        return logical_column(outputs.CUSTOMER_PROFILE_KEY, prefix)
    return logical_column(outputs.contract(table).key, prefix)


def utc_seconds_text(stamps: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC (naive values are UTC), the fraction of a second dropped like pandas'
    ``strftime``; nulls stay null.

    The digits are computed with integer arithmetic over the whole column (days to a civil date by H. Hinnant's
    algorithm) and written into one fixed-width buffer: a third of the time of Arrow's ``strftime``, which stays
    the path for years outside 0000-9999.
    """
    values = stamps.combine_chunks() if isinstance(stamps, pa.ChunkedArray) else stamps
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[values.type.unit]
    seconds = np.floor_divide(values.cast(pa.int64()).fill_null(0).to_numpy(), per_second)
    days, of_day = np.divmod(seconds, 86_400)
    year, month, day = _civil(days)
    if len(year) and (year.min() < 0 or year.max() > 9999):
        utc = values.cast(pa.timestamp(values.type.unit, "UTC"))
        whole = pc.floor_temporal(utc, unit="second").cast(pa.timestamp("s", "UTC"))
        return pc.strftime(whole, format="%Y-%m-%dT%H:%M:%SZ").cast(pa.string())
    hour, rest = np.divmod(of_day, 3_600)
    minute, second = np.divmod(rest, 60)
    out = np.empty((len(seconds), 20), dtype=np.uint8)
    out[:] = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)
    for at, number in ((0, year // 100), (2, year % 100), (5, month), (8, day), (11, hour), (14, minute), (17, second)):
        out[:, at : at + 2] = _TWO_DIGITS[number]
    validity = pc.is_valid(values).buffers()[1] if values.null_count else None
    text = pa.Array.from_buffers(pa.binary(20), len(seconds), [validity, pa.py_buffer(out)])
    return text.cast(pa.string())


#: ``00`` to ``99`` as ASCII bytes, one row per number.
_TWO_DIGITS = np.array([list(f"{n:02d}".encode()) for n in range(100)], dtype=np.uint8)


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month and day of days since 1970-01-01 (proleptic Gregorian)."""
    z = days + 719_468
    era = np.floor_divide(z, 146_097)
    of_era = z - era * 146_097
    year_of_era = (of_era - of_era // 1_460 + of_era // 36_524 - of_era // 146_096) // 365
    of_year = of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * of_year + 2) // 153
    day = of_year - (153 * shifted + 2) // 5 + 1
    month = np.where(shifted < 10, shifted + 3, shifted - 9)
    return year_of_era + era * 400 + (month <= 2), month, day


def column_text(values: pa.Array | pa.ChunkedArray, timestamp: bool) -> pa.Array | pa.ChunkedArray:
    """One column as the sink's text, byte for byte what pandas writes: a contract timestamp as ISO 8601 UTC
    seconds, text as it is, ``True``/``False``, integers by Arrow's kernels; other types (floats, whose text is
    Python's ``repr``, dates, decimals) through pandas' ``astype("string")``, one batch at a time."""
    kind = values.type
    if timestamp and pa.types.is_timestamp(kind):
        return utc_seconds_text(values)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return values.cast(pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(values, pa.scalar("True"), pa.scalar("False"))
    if pa.types.is_integer(kind):
        return values.cast(pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.string())
    text = values.to_pandas().astype("string")
    return pa.array(text, type=pa.string(), from_pandas=True)


def logical_columns(table: str, columns: list[str], prefix: str = "msdynci") -> dict[str, str]:
    """Output column -> Dataverse column; two columns that map to one name (or to the CustomerProfile key) are
    refused."""
    pk = primary_key(table, prefix)
    renamed: dict[str, str] = {}
    for column in columns:
        name = logical_column(str(column), prefix)
        if name in renamed.values() or (name == pk and table == "CustomerProfile"):
            raise UserError(
                f"{table}: column {column!r} maps to the Dataverse column {name!r}, which another column already "
                "uses; rename one of them in the configuration"
            )
        renamed[column] = name
    return renamed


def text_batch(table: str, rows: pa.RecordBatch | pa.Table, renamed: dict[str, str], prefix: str) -> pa.Table:
    """Rows of an output table as text under their logical names, the primary key first (CustomerProfile's is the
    GUID of CustomerId, added here), the other columns in the order of ``renamed``."""
    timestamps = set(outputs.contract(table).timestamps)
    columns = {renamed[c]: column_text(rows.column(c), c in timestamps) for c in renamed}
    pk = primary_key(table, prefix)
    if table == "CustomerProfile":
        ids = rows.column("CustomerId").to_pandas()
        keys = outputs.customer_profile_keys(ids.astype("string"))
        columns = {pk: pa.array(keys, type=pa.string(), from_pandas=True), **columns}
    else:
        columns = {pk: columns.pop(pk), **columns}
    return pa.table(columns, schema=pa.schema([pa.field(n, pa.string()) for n in columns]))


def sink_table(table: str, shaped: pd.DataFrame, prefix: str = "msdynci", entity_sets: dict | None = None) -> SinkTable:
    """A shaped output table renamed to logical names, every value as text (ISO 8601 UTC for DateTime), primary
    key first and rows sorted by it.

    Args:
        table: output table name (``AlternateKey``, ...).
        shaped: the table checked by :func:`ci_pipeline.outputs.finish`.
        prefix: logical-name prefix.
        entity_sets: entity-set overrides per table.
    """
    renamed = logical_columns(table, [str(c) for c in shaped.columns], prefix)
    arrow = pa.Table.from_pandas(shaped.set_axis([str(c) for c in shaped.columns], axis=1), preserve_index=False)
    return held_sink_table(table, text_batch(table, arrow, renamed, prefix), prefix, entity_sets)


def held_sink_table(table: str, text: pa.Table, prefix: str, entity_sets: dict | None) -> SinkTable:
    """A sink table over rows already converted by :func:`text_batch`, sorted by the primary key when they are not
    (CustomerProfile, whose key is a GUID)."""
    pk = primary_key(table, prefix)
    keys = text.column(pk)
    if len(keys) > 1 and not pc.all(pc.greater(keys[1:], keys[:-1])).as_py():
        text = text.take(pc.array_sort_indices(keys))
    text = text.combine_chunks()
    return SinkTable(
        name=table,
        logical_name=logical_table(table, prefix),
        entity_set=(entity_sets or {}).get(table, entity_set(table, prefix)),
        primary_key=pk,
        schema=text.schema,
        rows=text.num_rows,
        source=text,
    )
