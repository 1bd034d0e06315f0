"""String work in bulk on Arrow arrays: per-group joins (pandas' ``groupby().agg(" ".join)`` runs Python per group
and is ~50x slower), concatenation and conversions. At millions of records, Python strings per row would cost
gigabytes and most of a phase's time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def group_starts(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """Start positions of the runs of equal keys in rows sorted by those keys."""
    n = len(sorted_keys[0])
    if n == 0:
        return np.empty(0, dtype=np.int64)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in sorted_keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def join_runs(values, starts: np.ndarray, sep: str) -> pa.LargeStringArray:
    """``sep.join`` of each run ``values[starts[i]:starts[i+1]]`` (values sorted so that runs are contiguous).

    The runs are joined in Arrow's C++ kernels from a list view of ``values``: no Python string per value.

    Examples:
        >>> join_runs(np.array(["a", "b", "c"], dtype=object), np.array([0, 2]), "+").to_pylist()
        ['a+b', 'c']
    """
    array = pa.array(values).cast(pa.large_string())
    offsets = pa.array(np.append(starts, len(array)).astype(np.int64), type=pa.int64())
    return pc.binary_join(pa.LargeListArray.from_arrays(offsets, array), pa.scalar(sep, pa.large_string()))


def arrow_strings(column: pd.Series) -> pa.LargeStringArray:
    """A string column as one Arrow large_string array (64-bit offsets: no 2 GB limit on joined text)."""
    array = pa.array(column.astype("string").array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string())


def pandas_strings(array: pa.Array) -> pd.arrays.ArrowStringArray:
    """An Arrow string array as a pandas ``string`` array, without Python strings."""
    return pd.array(array.cast(pa.large_string()), dtype="string")


def concat_strings(*parts: str | pa.Array) -> pa.LargeStringArray:
    """Element-wise concatenation of Arrow string arrays and constant strings (null if any part is null)."""
    large = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p.cast(pa.large_string()) for p in parts]
    return pc.binary_join_element_wise(*large, pa.scalar("", pa.large_string()))
