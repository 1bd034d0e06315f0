"""From a stage's output table to what a sink receives: check it against the contract, then map it to Dataverse
logical names. Nothing is recomputed here: the producing stage built identifiers and GUIDs once."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ci_pipeline import outputs, table_delta
from ci_pipeline.dataverse.naming import (
    entity_set,
    held_sink_table,
    logical_columns,
    logical_table,
    primary_key,
    sink_table,
    text_batch,
)
from ci_pipeline.dataverse.sink import BATCH_ROWS, SinkTable, TableDelta
from ci_pipeline.errors import UserError


def prepare(
    table: str, df: pd.DataFrame | None, prefix: str = "msdynci", entity_sets: dict[str, str] | None = None
) -> SinkTable:
    """Check one output table (an empty one when no stage produces it) and name it for the sink.

    Args:
        table: output table name, e.g. ``AlternateKey``.
        df: the table as its stage built it (:func:`ci_pipeline.outputs.build` / ``with_ids``), or None when no
            stage produces the table.
        prefix: Dataverse logical-name prefix.
        entity_sets: entity-set overrides.
    """
    shaped = outputs.empty_table(table) if df is None else outputs.finish(table, df)
    return sink_table(table, shaped, prefix, entity_sets)


def prepare_stored(
    table: str,
    data: ds.Dataset,
    prefix: str = "msdynci",
    entity_sets: dict[str, str] | None = None,
    delta: table_delta.Delta | None = None,
) -> SinkTable:
    """:func:`prepare` for a table stored in the lake, read in batches where it can be.

    A table in key order with the contract's columns and plain types (text, and timestamps where the contract has
    them) is streamed: each call of :meth:`SinkTable.batches` reads it again, a batch at a time, so a sink holds one
    batch of rows. CustomerProfile (ordered by the GUID of CustomerId, which the table does not store) and a table
    out of key order are read whole as Arrow and sorted; any other table is loaded and checked like a frame, whose
    error names what is wrong. The text is the same in every case.

    A streamed table carries its version, and ``delta`` (the changes its stage stored beside it) when that leads to
    this very version and its rows are checked like the table's.
    """
    spec = outputs.contract(table)
    schema = data.schema
    if not _plain(spec, schema):
        return prepare(table, data.to_table().to_pandas(), prefix, entity_sets)
    renamed = logical_columns(table, list(schema.names), prefix)
    filled = list(dict.fromkeys([spec.key, *spec.identifying]))
    in_order = _checked_in_order(table, data, spec.key, filled)
    if table == "CustomerProfile" or not in_order:
        rows = data.to_table()
        if not in_order:
            rows = sorted_by_key(table, rows, spec.key)
        return held_sink_table(table, text_batch(table, rows, renamed, prefix), prefix, entity_sets)
    text_schema = text_batch(table, schema.empty_table(), renamed, prefix).schema

    def texts(rows: ds.Dataset):
        def batches():
            for batch in scan(rows):
                if batch.num_rows:
                    yield text_batch(table, batch, renamed, prefix).to_batches()[0]

        return batches

    version = table_delta.version_of(data)
    changes = None
    # The delta's rows were written with the table's schema; checked as the table is (identifiers, key order).
    if (
        delta is not None
        and version is not None
        and delta.version == version
        and delta.rows.schema.names == schema.names
        and _checked_in_order(table, delta.rows, spec.key, filled)
    ):
        changes = TableDelta(delta.base, delta.removed.cast(pa.string()), texts(delta.rows))
    return SinkTable(
        name=table,
        logical_name=logical_table(table, prefix),
        entity_set=(entity_sets or {}).get(table, entity_set(table, prefix)),
        primary_key=primary_key(table, prefix),
        schema=text_schema,
        rows=data.count_rows(),
        source=texts(data),
        version=version,
        delta=changes,
    )


#: Types besides text that :func:`~ci_pipeline.dataverse.naming.column_text` converts batch by batch.
_CONVERTED = (
    pa.types.is_timestamp,
    pa.types.is_date32,
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_null,
)


def scan(data: ds.Dataset, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of a stored table in file order, :data:`BATCH_ROWS` at a time, reading one batch ahead at most: the
    dataset scanner's read-ahead and pre-buffering hold several times more (about 800 MB instead of 300 MB for the
    1.3M activities of 100,000 people)."""
    for path in data.files:
        with data.filesystem.open_input_file(path) as file:
            parquet = pq.ParquetFile(file, pre_buffer=False)
            yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False)


def _plain(spec: outputs.OutputTable, schema: pa.Schema) -> bool:
    """Whether a stored table has the contract's columns in order, timestamps where the contract has them and
    text in its JSON columns: then :func:`ci_pipeline.outputs.finish` would change no value of it."""
    if not outputs.in_contract_order(spec, schema):
        return False
    for column in schema:
        text = outputs.is_text(column.type)
        if column.name in spec.timestamps and not pa.types.is_timestamp(column.type):
            return False
        if column.name in (*spec.json_columns, spec.key, *spec.identifying) and not text:
            return False
        if not (text or any(check(column.type) for check in _CONVERTED)):
            return False
    return True


def stated_filled(metadata: pq.FileMetaData, column: str) -> bool:
    """Whether a Parquet file's statistics say that ``column`` has no missing value in any row group (False when a
    row group states no null count for it): then the column need not be read to know it."""
    names = list(metadata.schema.names)
    if column not in names:
        return False
    at = names.index(column)
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group)
        if chunk.num_columns != len(names):
            return False
        stats = chunk.column(at).statistics
        if stats is None or not stats.has_null_count or stats.null_count:
            return False
    return True


def _checked_in_order(table: str, data: ds.Dataset, key: str, filled: list[str]) -> bool:
    """Refuse a missing key or identifying value (as :func:`ci_pipeline.outputs.finish` does); tell whether the keys
    strictly increase. Reads only the key and the columns whose statistics do not rule out a missing value, a batch
    at a time."""
    files = [pq.read_metadata(path, filesystem=data.filesystem) for path in data.files]
    read = [c for c in filled if c == key or not all(stated_filled(f, c) for f in files)]
    last = None
    in_order = True
    seen = 0
    for batch in scan(data, read):
        for column in read:
            values = batch.column(column)
            if values.null_count:
                first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
                raise UserError(
                    f"{table}: {values.null_count} row(s) of a batch have no {column} (e.g. row {seen + first}); it "
                    "identifies the row, so the producing stage must fill it"
                )
        keys = batch.column(key)
        seen += batch.num_rows
        if in_order and len(keys):
            after_last = last is None or keys[0].as_py() > last
            in_order = after_last and (len(keys) < 2 or pc.all(pc.greater(keys[1:], keys[:-1])).as_py())
            last = keys[-1].as_py()
    return in_order


def sorted_by_key(table: str, rows: pa.Table, key: str) -> pa.Table:
    """``rows`` in increasing ``key`` order; equal keys are refused as :func:`ci_pipeline.outputs.finish` does."""
    rows = rows.take(pc.array_sort_indices(rows.column(key)))
    keys = rows.column(key)
    if len(keys) < 2:
        return rows
    same = pc.equal(keys[1:], keys[:-1]).to_numpy(zero_copy_only=False)
    if same.any():
        duplicated = np.zeros(len(keys), dtype=bool)
        duplicated[1:] |= same
        duplicated[:-1] |= same
        sample = list(dict.fromkeys(pc.filter(keys, pa.array(duplicated)).to_pylist()))[:5]
        raise UserError(
            f"{table}: {int(duplicated.sum())} rows share a {key} (e.g. {sample}); each row needs its own key, "
            "fix the producing stage"
        )
    return rows
