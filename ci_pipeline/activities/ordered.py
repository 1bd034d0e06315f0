"""DuckDB over the activity tables on disk: a table's repeated keys, the UnifiedActivity GUID in SQL, and part files
put in one order and written as one Parquet file, out of core (DuckDB spills to a temporary folder past its memory
limit), so no step holds a whole activity table in memory."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ci_pipeline.lake import Lake, WrittenTable
from ci_pipeline.outputs import NAMESPACE

#: DuckDB's working memory while it orders the parts; past it, it spills to its temporary folder. The ordering is
#: the stage's largest state, so this bounds the stage whatever the activity count.
MEMORY_LIMIT = "1GB"
#: Rows per batch read from an activity table and per batch written to an ordered table (one Parquet row group).
BATCH_ROWS = 131_072


def connect(temp_directory: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the stage's memory limit, spilling to ``temp_directory``."""
    temp_directory.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.sql(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.sql(f"SET temp_directory = {literal(str(temp_directory))}")
    # Every query orders its rows itself; keeping the scan order too would cost memory.
    con.sql("SET preserve_insertion_order = false")
    # Text comes out as Arrow large strings, the type the stored tables have: no copy to convert it.
    con.sql("SET arrow_large_buffer_size = true")
    return con


def quoted(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A text as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def repeated_keys(con: duckdb.DuckDBPyConnection, rows: ds.Dataset, column: str) -> tuple[pa.Array, bool | None]:
    """The key values more than one row of ``rows`` has, and for a float key column whether every key is a whole
    number (None for other types): what each batch of the table needs to know about the whole table."""
    con.register("activity_rows", rows)
    try:
        key = quoted(column)
        repeated = con.sql(
            f"SELECT {key} FROM activity_rows WHERE {key} IS NOT NULL GROUP BY {key} HAVING count(*) > 1"
        ).to_arrow_table()
        whole = None
        if pa.types.is_floating(rows.schema.field(column).type):
            # An empty column counts as whole, as ``all()`` of nothing does.
            found = con.sql(
                f"SELECT bool_and({key} = floor({key})) FROM activity_rows WHERE {key} IS NOT NULL AND NOT isnan({key})"
            ).fetchall()[0][0]
            whole = found is None or bool(found)
    finally:
        con.unregister("activity_rows")
    return repeated.column(0).combine_chunks(), whole


def unified_activity_guid_sql(activity_id: str, digest: str) -> tuple[str, str]:
    """SQL of ``outputs.unified_activity_guids``: uuid5 of ``"UnifiedActivity|" + ActivityId`` in the fixed namespace.

    Returns the SHA-1 expression (to select as ``digest`` in an inner query, so it runs once per row) and the GUID
    expression over ``digest``. uuid5 is SHA-1 of the namespace bytes and the UTF-8 name, cut to 16 bytes, with the
    version nibble set to 5 and the variant bits to ``10``: in hex the 13th digit becomes ``5`` and the 17th one of
    ``89ab`` (the digit's value modulo 4, looked up in ``89ab`` repeated for each of the 16 digits).
    """
    prefix = "".join(f"\\x{b:02X}" for b in NAMESPACE.bytes)
    sha1 = f"sha1('{prefix}'::BLOB || encode('UnifiedActivity|' || {activity_id}))"
    h = digest
    variant = f"substr('{'89ab' * 4}', strpos('0123456789abcdef', substr({h}, 17, 1)), 1)"
    # One concat builds each GUID once; a chain of || builds every intermediate string (a quarter of the
    # expression's CPU time).
    text = (
        f"concat(substr({h}, 1, 8), '-', substr({h}, 9, 4), '-5', substr({h}, 14, 3), '-', "
        f"{variant}, substr({h}, 18, 3), '-', substr({h}, 21, 12))"
    )
    return sha1, text


def storable(table: pa.Table) -> pa.Table:
    """Temporal columns as their integer storage, which DuckDB passes through unchanged (it keeps microseconds
    only, and time zones its own way); :func:`conformed` turns them back."""
    columns = []
    for column in table.columns:
        if pa.types.is_temporal(column.type):
            width = pa.int32() if column.type.bit_width == 32 else pa.int64()
            column = column.cast(width)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch DuckDB returns (the columns of ``schema``, in order) in the stored table's exact schema (types and
    pandas metadata)."""
    arrays = [batch.column(i).cast(field.type) for i, field in enumerate(schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_sorted(
    con: duckdb.DuckDBPyConnection, parts: list[Path], query: str, schema: pa.Schema, lake: Lake, relative: str
) -> WrittenTable:
    """Write the rows of ``query`` (over ``parts``, a table named ``{parts}``; it selects the columns of ``schema`` in
    order) to ``relative`` in the lake, batch by batch in ``schema``, atomically; no parts is an empty table."""
    rows = 0
    with lake.writing(relative) as local, pq.ParquetWriter(local, schema, compression="zstd") as writer:
        if parts:
            files = ", ".join(literal(str(p)) for p in parts)
            source = f"read_parquet([{files}], union_by_name = true)"
            reader = con.sql(query.replace("{parts}", source)).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                writer.write_batch(conformed(batch, schema))
                rows += batch.num_rows
        if rows == 0:
            writer.write_table(schema.empty_table())
    return WrittenTable(path=relative, rows=rows, schema=schema)
