"""The activity tables' keys and GUIDs in DuckDB, and the out-of-core ordering of the two stored tables.

DuckDB answers what each batch needs to know about its whole table (which keys repeat) and computes the SHA-1
digests of a batch's UnifiedActivity GUIDs in SQL (numpy lays them out as GUIDs). The stored tables are put in
order by :class:`SortedTable`: each placed batch is split by key range into bucket files, and each bucket, small
enough to hold, is sorted and written in turn, so only the key column is ever sorted and no step holds a whole
activity table.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ci_pipeline import table_delta
from ci_pipeline.arrow_text import fixed_width_bytes
from ci_pipeline.lake import Lake, WrittenTable
from ci_pipeline.outputs import guids_of_digests, uuid5_digest_sql
from ci_pipeline.side_by_side import in_background
from ci_pipeline.sql_text import literal, quoted

#: DuckDB's working memory (the repeated keys of one table); past it, it spills to its temporary folder.
MEMORY_LIMIT = "1GB"
#: Rows per batch read from an activity table and per batch written to an ordered table (one Parquet row group).
BATCH_ROWS = 131_072
#: Rows a bucket of an ordered table is meant to hold: the most the ordering holds at once (about 200 MB of
#: UnifiedActivity rows), whatever the activity count.
BUCKET_ROWS = 524_288
#: Key samples per bucket taken to choose the key ranges of the buckets.
SAMPLES_PER_BUCKET = 256
#: Bucket files one ordered table keeps open at once; past it they are closed and a bucket's next rows start a new
#: file (the process's limit on open files stays far away whatever the bucket count).
OPEN_FILES = 128


def connect(temp_directory: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the stage's memory limit, spilling to ``temp_directory``."""
    temp_directory.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.sql(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.sql(f"SET temp_directory = {literal(str(temp_directory))}")
    # Text comes out as Arrow large strings, the type the stored tables have: no copy to convert it.
    con.sql("SET arrow_large_buffer_size = true")
    return con


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


def unified_activity_digest_sql(activity_id: str) -> str:
    """SQL of the SHA-1 (40 hex digits) uuid5 takes of ``"UnifiedActivity|" + ActivityId`` in the fixed namespace."""
    return uuid5_digest_sql(f"'UnifiedActivity|' || {activity_id}")


def unified_activity_guids(con: duckdb.DuckDBPyConnection, activity_ids: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The UnifiedActivity GUID of each ActivityId of a batch (``outputs.unified_activity_guids``), in order, and the
    value of its first four hex digits (:func:`guids_of_digests`)."""
    con.register("activity_ids", pa.table({"id": activity_ids}))
    try:
        # DuckDB keeps the rows in their order (preserve_insertion_order, its default) for a plain projection.
        found = con.sql(f"SELECT {unified_activity_digest_sql('id')} FROM activity_ids").to_arrow_table()
    finally:
        con.unregister("activity_ids")
    return guids_of_digests(found.column(0).combine_chunks().cast(pa.large_string()))


def guid_buckets(count: int) -> Callable[[np.ndarray], np.ndarray]:
    """Bucket of each GUID from the value of its first four hex digits: ``count`` equal ranges of GUID order."""
    return lambda heads: (heads.astype(np.int64) * count) >> 16


def key_buckets(boundaries: list[str]) -> Callable[[pa.Array], np.ndarray]:
    """Bucket of each key: how many of the sorted ``boundaries`` are at most the key (equal keys share a bucket)."""
    bounds = np.array(boundaries, dtype=object)

    def buckets(keys: pa.Array) -> np.ndarray:
        n = len(keys)
        if n > 1 and not pc.any(pc.less(keys.slice(1), keys.slice(0, n - 1))).as_py():
            # Keys in order (a table stored so): each boundary's first row is found by bisection.
            edges = [bisect.bisect_left(range(n), b, key=lambda i: keys[i].as_py()) for b in boundaries]
            return np.repeat(np.arange(len(boundaries) + 1), np.diff([0, *edges, n]))
        # Python compares str by code point, which is the byte order of their UTF-8 (Arrow's sort order).
        return np.searchsorted(bounds, keys.to_numpy(zero_copy_only=False), side="right")

    return buckets


def boundaries(samples: list[str], count: int) -> list[str]:
    """``count - 1`` keys that cut the sorted ``samples`` into ``count`` ranges of about equal size."""
    ordered = sorted(samples)
    if count <= 1 or not ordered:
        return []
    return sorted({ordered[len(ordered) * i // count] for i in range(1, count)})


class SortedTable:
    """Rows put in the order of one text column, out of core, and written as one Parquet file.

    Rows arrive in batches with a bucket number each; every key of a bucket sorts before every key of the next one
    (the caller chooses them so: :func:`guid_buckets`, :func:`key_buckets`). A batch is split by bucket and appended
    to the buckets' files (Arrow IPC, uncompressed: written once and read back once, soon; with one bucket the rows
    stay in memory). :meth:`write` then sorts each bucket on its key alone (stable: equal keys keep their arrival
    order) and writes it, so what is held at once is one batch, or one bucket and three batches of it (one compressed
    while the next ones are gathered).
    """

    def __init__(self, folder: Path, key: str, buckets: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.key, self.buckets = folder, key, buckets
        self.files: list[list[Path]] = [[] for _ in range(buckets)]
        #: The file each bucket is being written to, with its schema.
        self._open: dict[int, tuple[ipc.RecordBatchFileWriter, pa.Schema]] = {}
        #: The rows themselves when there is one bucket: writing it holds them all anyway, so no file.
        self.held: list[pa.Table] = []

    def add(self, table: pa.Table, bucket: np.ndarray | None) -> None:
        """Append rows (``bucket``: each row's bucket, None when there is one bucket)."""
        if table.num_rows == 0:
            return
        table = table.replace_schema_metadata(None)
        if bucket is None or self.buckets == 1:
            self._append(0, table)
            return
        if (np.diff(bucket) < 0).any():
            order = np.argsort(bucket, kind="stable")
            bucket, table = bucket[order], table.take(pa.array(order))
        # Rows in key order already (a table stored so) need no take: their buckets are ranges of the batch.
        bounds = np.searchsorted(bucket, np.arange(self.buckets + 1), side="left")
        for b in np.flatnonzero(np.diff(bounds)):
            self._append(int(b), table.slice(bounds[b], bounds[b + 1] - bounds[b]))

    def _append(self, bucket: int, table: pa.Table) -> None:
        if self.buckets == 1:
            self.held.append(table)
            return
        writer, schema = self._open.get(bucket, (None, None))
        if writer is None or not schema.equals(table.schema):
            # A bucket's rows keep their arrival order across its files; a batch of other columns or types
            # (another activity table) starts a new file.
            if writer is not None:
                writer.close()
            elif len(self._open) >= OPEN_FILES:
                self.close()
            path = self.folder / f"bucket-{bucket:05d}-{len(self.files[bucket]):05d}.arrow"
            writer = ipc.new_file(path, table.schema)
            self._open[bucket] = (writer, table.schema)
            self.files[bucket].append(path)
        writer.write_table(table)

    def close(self) -> None:
        """Finish the bucket files (:meth:`write` does it first)."""
        for writer, _ in self._open.values():
            writer.close()
        self._open.clear()

    def write(
        self,
        lake: Lake,
        relative: str,
        schema: pa.Schema,
        distinct: tuple[str, ...] = (),
        stored: Iterator[pa.Table] | None = None,
        compression: str = "zstd",
        version: str | None = None,
        copy_to: str | None = None,
    ) -> tuple[WrittenTable, int]:
        """Write the rows in key order to ``relative`` in the lake, in ``schema`` (missing columns empty, others cast),
        atomically; returns the table and how many rows have a key an earlier row has.

        ``distinct``: identifier columns, whose values (nearly) all differ: stored without the dictionary Parquet
        would otherwise build for each row group and give up on. ``stored``: rows in ``schema`` and in key order
        to merge with these (the rows of the table a run before wrote that stay), read as they are written.
        ``compression``: Parquet's codec for the file. ``version``: stamped on the file
        (:mod:`ci_pipeline.table_delta`). ``copy_to``: where this table's own rows (not the ``stored`` ones) are
        written as well, in key order.
        """
        self.close()
        rows = repeated = 0
        last = None
        schema = table_delta.stamped(schema, version)
        options = {"compression": compression, "use_dictionary": [n for n in schema.names if n not in distinct]}
        with contextlib.ExitStack() as stack:
            parts = self._ordered_parts(schema)
            if copy_to is not None:
                copied = stack.enter_context(lake.writing(copy_to))
                parts = _copied(parts, stack.enter_context(pq.ParquetWriter(copied, schema, **options)))
            if stored is not None:
                parts = merged(stored, parts, self.key)
            local = stack.enter_context(lake.writing(relative))
            writer = stack.enter_context(pq.ParquetWriter(local, schema, **options))
            # The next parts gathered while Parquet's writer compresses this one.
            for part in in_background(parts, depth=1, name="ordered-parts"):
                writer.write_table(part)
                rows += part.num_rows
                repeated += _repeats(part.column(self.key), last)
                last = part.column(self.key)[-1]
            if rows == 0:
                writer.write_table(schema.empty_table())
        return WrittenTable(path=relative, rows=rows, schema=schema), repeated

    def _ordered_parts(self, schema: pa.Schema) -> Iterator[pa.Table]:
        """The rows in key order, ``BATCH_ROWS`` at a time, bucket by bucket (each bucket's files removed once
        read)."""
        for files in self.files:
            # Mapped, not read: the rows are copied once, when they are put in order.
            pieces = self.held or [ipc.open_file(pa.memory_map(str(f))).read_all() for f in files]
            if not pieces:
                continue
            bucket = pa.concat_tables([_conformed(table, schema) for table in pieces])
            del pieces
            self.held = []
            for f in files:
                f.unlink()
            order = key_order(bucket.column(self.key))
            if _scattered(order):
                # A take from one chunk per column: a take from many chunks joins them again for every call.
                bucket = bucket.combine_chunks()
            for start in range(0, len(order), BATCH_ROWS):
                yield _gathered(bucket, order[start : start + BATCH_ROWS])
            del bucket


def _copied(parts: Iterator[pa.Table], writer: pq.ParquetWriter) -> Iterator[pa.Table]:
    """``parts`` passed on, each written by ``writer`` too (at least an empty table)."""
    written = False
    for part in parts:
        writer.write_table(part)
        written = True
        yield part
    if not written:
        writer.write_table(writer.schema.empty_table())


def merged(first: Iterator[pa.Table], second: Iterator[pa.Table], key: str) -> Iterator[pa.Table]:
    """The rows of two streams of tables, each in the order of ``key``, as one stream in that order (equal keys:
    ``first``'s before ``second``'s). A part of ``first`` goes out as it is when no row of ``second`` falls in
    its range, else together with those rows, put in order."""
    rest = (table for table in second if table.num_rows)
    pending = next(rest, None)
    for part in first:
        if part.num_rows == 0:
            continue
        last = part.column(key)[-1]
        taken = []
        while pending is not None:
            within = int(pc.sum(pc.less_equal(pending.column(key), last)).as_py() or 0)
            if within == 0:
                break
            taken.append(pending.slice(0, within))
            pending = pending.slice(within) if within < pending.num_rows else next(rest, None)
        if not taken:
            yield part
            continue
        chunk = pa.concat_tables([part, *taken]).combine_chunks()
        yield _gathered(chunk, key_order(chunk.column(key)))
    while pending is not None:
        yield pending
        pending = next(rest, None)


def key_order(keys: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The positions of ``keys`` (text, no nulls) in ascending byte order, equal keys in their order: a stable sort.

    Cheaper ways first: keys that come as a few ascending runs whose ranges do not overlap (tables stored in key
    order) are put in order run by run; keys of one byte length (GUIDs) are sorted on their first eight bytes as an
    integer, and only the rows that share those bytes on the whole key.
    """
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    n = len(keys)
    if n < 2:
        return np.arange(n)
    # A run ends where the next key is smaller.
    ends = np.flatnonzero(pc.less(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)) + 1
    if len(ends) < 64:
        merged = _merged_runs(keys, [0, *ends.tolist(), n])
        if merged is not None:
            return merged
    text = fixed_width_bytes(keys)
    if text is None or text.dtype.itemsize < 8:
        return pc.sort_indices(keys).to_numpy()
    width = text.dtype.itemsize
    head = np.ascontiguousarray(text.view(np.uint8).reshape(n, width)[:, :8]).view(">u8").ravel()
    order = np.argsort(head, kind="stable")
    ordered_head = head[order]
    same = ordered_head[1:] == ordered_head[:-1]
    tied = np.zeros(n, dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    positions = np.flatnonzero(tied)
    if len(positions):
        # The tied rows, already grouped by head in ascending order, sorted again on the whole key: the groups stay
        # in place and each group's rows come in key order (stable: equal keys keep their order).
        rows = order[positions]
        order[positions] = rows[np.argsort(text[rows], kind="stable")]
    return order


def _merged_runs(keys: pa.Array, edges: list[int]) -> np.ndarray | None:
    """The order of keys made of ascending runs (``edges``: where each starts, then the end), when the runs' key
    ranges do not overlap; None otherwise."""
    runs = sorted(range(len(edges) - 1), key=lambda j: (keys[edges[j]].as_py(), j))
    for before, after in zip(runs[:-1], runs[1:], strict=True):
        last, first = keys[edges[before + 1] - 1].as_py(), keys[edges[after]].as_py()
        # Equal keys may meet only in arrival order.
        if last > first or (last == first and before > after):
            return None
    return np.concatenate([np.arange(edges[j], edges[j + 1]) for j in runs])


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: its columns in order and cast, the ones it lacks empty."""
    arrays = [
        _cast(table.column(f.name), f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _cast(column: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
    return column if column.type == to else column.cast(to)


def _scattered(order: np.ndarray) -> bool:
    """Whether ``order`` picks rows one by one rather than in runs of consecutive rows."""
    return np.count_nonzero(np.diff(order) != 1) >= len(order) // 1024


def _gathered(table: pa.Table, order: np.ndarray) -> pa.Table:
    """The rows of ``table`` at ``order``; runs of consecutive rows (a table stored in key order already) are
    zero-copy slices instead of a copy of every value."""
    if _scattered(order):
        return table.take(pa.array(order))
    edges = [0, *(np.flatnonzero(np.diff(order) != 1) + 1).tolist(), len(order)]
    return pa.concat_tables([table.slice(int(order[a]), b - a) for a, b in zip(edges[:-1], edges[1:], strict=True)])


def _repeats(keys: pa.ChunkedArray, last: pa.Scalar | None) -> int:
    """How many of the ordered ``keys`` equal the key before them (``last``: the key before the first)."""
    n = len(keys)
    same = pc.sum(pc.equal(keys.slice(1), keys.slice(0, n - 1))).as_py() if n > 1 else 0
    return int(same or 0) + int(last is not None and n > 0 and keys[0] == last)
