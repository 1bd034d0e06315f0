"""Arrow text for NumPy and for lookups: keys of one width as fixed-width bytes, membership by hash lookup."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def text_offsets(text: pa.Array) -> np.ndarray:
    """The ``len(text) + 1`` offsets of a text array's values in its data buffer (the array's own slice of them)."""
    width = np.int64 if pa.types.is_large_string(text.type) or pa.types.is_large_binary(text.type) else np.int32
    return np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]


def value_bytes(text: pa.Array) -> pa.Buffer:
    """The bytes of a text array's values, one after the other (a slice of its data buffer, no copy)."""
    data = text.buffers()[2] if len(text) else None
    if data is None:
        return pa.py_buffer(b"")
    offsets = text_offsets(text)
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def fixed_width_bytes(text: pa.Array) -> np.ndarray | None:
    """The values of a text array as a NumPy array of fixed-width bytes (a view of its buffer, no copy) when every
    value is present, not empty, of one length in bytes and free of NUL bytes (which NumPy's bytes type would drop
    at the end); None otherwise. Byte order is the order in which Arrow compares text."""
    if text.null_count or not len(text) or not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        return None
    offsets = text_offsets(text)
    lengths = np.diff(offsets)
    size = int(lengths[0])
    if size == 0 or (lengths != size).any():
        return None
    values = np.frombuffer(text.buffers()[2], dtype=f"S{size}", count=len(text), offset=int(offsets[0]))
    if (values.view(np.uint8) == 0).any():
        return None
    return values


def text_isin(values: pd.Series | pd.Index, lookup) -> np.ndarray:
    """``values.isin(lookup)`` as a boolean array, by Arrow's hash lookup when both hold text: pandas' own isin on
    Arrow-backed text turns every lookup value into a Python object first (a few microseconds each, whole seconds
    over a profile's CustomerIds). A missing value matches a missing value, as in pandas; anything that is not text
    on both sides goes to pandas."""
    array, value_set = text_array(values), text_array(lookup)
    if array is None or value_set is None:
        return np.asarray(values.isin(lookup), dtype=bool)
    return pc.is_in(array, value_set=value_set.cast(array.type)).to_numpy(zero_copy_only=False)


def text_positions(values: pd.Series | pd.Index, lookup: pd.Index) -> np.ndarray:
    """``lookup.get_indexer(values)`` (each value's position in ``lookup``, -1 where it is absent) by Arrow's hash
    lookup when both hold text: pandas turns both sides' Arrow-backed text into Python objects on every call (whole
    seconds over a million CustomerIds). ``lookup`` holds each value once, as ``get_indexer`` requires."""
    array, value_set = text_array(values), text_array(lookup)
    if array is None or value_set is None:
        return pd.Index(lookup).get_indexer(values)
    found = pc.index_in(array, value_set=value_set.cast(array.type)).fill_null(-1)
    return found.to_numpy(zero_copy_only=False).astype(np.intp)


def text_array(values) -> pa.Array | pa.ChunkedArray | None:
    """Text as Arrow data, without a Python string per value: a pandas text column or index (``str``/``string``
    dtypes), or a set, list or tuple of Python strings; None for anything else (the caller goes to pandas)."""
    if isinstance(values, pd.Series | pd.Index):
        if not isinstance(values.dtype, pd.StringDtype):
            return None
        return pa.array(values.array)
    if isinstance(values, set | frozenset | list | tuple) and all(isinstance(v, str) for v in values):
        return pa.array(list(values), pa.large_string())
    return None


class TextIndex:
    """Positions of texts in one set of distinct texts, asked batch after batch.

    ``pc.index_in`` hashes its whole value set on every call: with a million values and a hundred batches that is
    a hundred hash tables of a million texts. Here the set is hashed once (DuckDB's ``hash``, 64 bits) and sorted;
    a batch's texts are hashed, found by binary search and compared as text, so a collision of two hashes can never
    give a wrong position (such texts, if any, are looked up the slow way).
    """

    def __init__(self, values: pa.Array):
        self.values = values.cast(pa.large_string())
        hashes = _hashes(self.values)
        self.order = np.argsort(hashes, kind="stable")
        self.sorted = hashes[self.order]

    def positions(self, text: pa.Array) -> pa.Array:
        """The position of each text in the set (null where it is not in it; a missing text is never found)."""
        text = text.cast(pa.large_string())
        n = len(self.sorted)
        if n == 0 or len(text) == 0:
            return pa.nulls(len(text), pa.int64())
        hashes = _hashes(text)
        at = np.minimum(np.searchsorted(self.sorted, hashes), n - 1)
        candidate = self.order[at]
        same = pc.fill_null(pc.equal(self.values.take(pa.array(candidate)), text), False)
        found = same.to_numpy(zero_copy_only=False) & (self.sorted[at] == hashes)
        positions = np.where(found, candidate, -1)
        # A hash that several texts share: the first of them was not this one; ask the slow way.
        shared = ~found & (self.sorted[at] == hashes)
        if shared.any():
            slow = pc.index_in(text.filter(pa.array(shared)), value_set=self.values, skip_nulls=True)
            positions[shared] = pc.fill_null(slow, -1).to_numpy()
        return pa.array(positions, mask=positions < 0)


def duckdb_hashes(table: pa.Table, expressions: list[str], con=None) -> list[np.ndarray]:
    """DuckDB's 64-bit ``hash`` expressions over the rows of ``table`` (registered as ``rows``), one array per
    expression in row order, as signed integers (the same 64 bits); on ``con`` when given."""
    import duckdb

    own = con is None
    con = duckdb.connect() if own else con
    con.register("rows", table)
    try:
        # A plain projection keeps the rows in their order (DuckDB's preserve_insertion_order, its default).
        found = con.sql(f"SELECT {', '.join(expressions)} FROM rows").to_arrow_table()
    finally:
        con.unregister("rows")
        if own:
            con.close()
    return [column.to_numpy().astype(np.uint64, copy=False).view(np.int64) for column in found.columns]


#: One DuckDB connection per thread for :func:`_hashes`: opening one costs about 35 ms, more than hashing a batch
#: of a hundred thousand texts, and a connection is not for two threads at once.
_LOCAL = threading.local()


def _hashes(text: pa.Array) -> np.ndarray:
    con = getattr(_LOCAL, "con", None)
    if con is None:
        import duckdb

        con = _LOCAL.con = duckdb.connect()
    return duckdb_hashes(pa.table({"t": text}), ["hash(t)"], con)[0]
