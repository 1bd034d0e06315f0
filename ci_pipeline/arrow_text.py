"""Arrow text for NumPy and for lookups: keys of one width as fixed-width bytes, membership by hash lookup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def fixed_width_bytes(text: pa.Array) -> np.ndarray | None:
    """The values of a text array as a NumPy array of fixed-width bytes (a view of its buffer, no copy) when every
    value is present, not empty, of one length in bytes and free of NUL bytes (which NumPy's bytes type would drop
    at the end); None otherwise. Byte order is the order in which Arrow compares text."""
    if text.null_count or not len(text) or not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        return None
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]
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
