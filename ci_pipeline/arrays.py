"""Array operations the stages share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def isin(values: np.ndarray, test: np.ndarray) -> np.ndarray:
    """``np.isin(values, test)``, by a hash table of ``test`` (pandas') instead of NumPy's sort of both arrays
    together: at a million customers, with millions of 64-bit pair ids on each side, NumPy's took 6 to 8 seconds
    a call where the hash table takes half a second.

    Examples:
        >>> isin(np.array([[3, 1], [2, 5]]), np.array([5, 3])).tolist()
        [[True, False], [False, True]]
    """
    values = np.asarray(values)
    found = pd.Series(values.ravel()).isin(pd.Series(np.asarray(test).ravel())).to_numpy(bool)
    return found.reshape(values.shape)


def unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of a 1-D array: its distinct values, sorted. For integers and booleans by one sort
    and a comparison of neighbours: NumPy's own (a hash set of the values, then a sort of them) took 1.2 s for
    2,000,000 integers where the sort takes 0.12 s. Other kinds go to ``np.unique``.

    Examples:
        >>> unique(np.array([3, 1, 3, 2])).tolist()
        [1, 2, 3]
    """
    values = np.asarray(values)
    if values.dtype.kind not in "iub" or values.ndim != 1:
        return np.unique(values)
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def stable_order(keys: list[np.ndarray]) -> np.ndarray:
    """``np.lexsort(keys[::-1])``: the positions in the order of ``keys`` (integers, the most significant first),
    ties in position order. The keys are packed into one integer when their ranges fit in 62 bits, and that one
    column sorted stably: a merge of sorted runs, so two sorted lists put end to end are ordered in linear time
    (5.2 million pairs: 0.1 s, where the lexsort of their four keys took 1.3 s).

    Examples:
        >>> stable_order([np.array([1, 0, 1, 0]), np.array([5, 7, 2, 7])]).tolist()
        [1, 3, 2, 0]
    """
    n = len(keys[0])
    packed, span = np.zeros(n, dtype=np.int64), 1
    for key in keys:
        low = int(key.min()) if n else 0
        width = (int(key.max()) if n else 0) - low + 1
        if span * width >= 2**62:
            return np.lexsort(keys[::-1])
        packed = packed * width + (np.asarray(key, np.int64) - low)
        span *= width
    return np.argsort(packed, kind="stable")


def pairs_sharing_code(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions ``(left, right)``, ``left < right``, whose codes are equal and known (``>= 0``):
    the pairs of records in one block. By code, then left, then right.

    Positions are sorted by code (rising within a code) and each is paired with those after it in its code:
    exactly the pairs wanted, where a self-merge builds every pair twice plus each position with itself. The sort
    is of one integer per position (code and position), much faster than a stable argsort.

    Examples:
        >>> left, right = pairs_sharing_code(np.array([4, -1, 4, 7, 4, 7]))
        >>> list(zip(left.tolist(), right.tolist()))
        [(0, 2), (0, 4), (2, 4), (3, 5)]
        >>> pairs_sharing_code(np.array([-1, 3]))[0].tolist()
        []
    """
    n = np.int64(len(codes))
    known = np.flatnonzero(codes >= 0)
    if not len(known):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ordered = np.sort(codes[known] * n + known)
    order, ranked = ordered % n, ordered // n
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(order)].astype(np.int64)
    group_end = np.repeat(ends, np.diff(np.r_[starts, len(order)]))
    after = group_end - np.arange(len(order)) - 1
    first = np.repeat(np.arange(len(order)), after)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(after) - after, after)
    return order[first], order[first + 1 + offset]


def take_rows(frame: pd.DataFrame, rows: np.ndarray, at_once: int = 2) -> pd.DataFrame:
    """``frame.iloc[rows]`` with a fresh RangeIndex, its columns gathered ``at_once`` at a time on threads: the
    gathers run in Arrow and NumPy outside Python's lock, and a random gather of millions of texts is bound by
    memory, not by the interpreter. Column names must be unique.

    Examples:
        >>> take_rows(pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}), np.array([2, 0])).to_dict("list")
        {'a': [3, 1], 'b': ['z', 'x']}
    """
    from ci_pipeline.side_by_side import each_named  # arrays stays importable without the thread helpers

    gathers = {name: (lambda name=name: frame[name].iloc[rows].reset_index(drop=True)) for name in frame.columns}
    return pd.DataFrame(each_named(gathers, at_once, "take-rows"), index=pd.RangeIndex(len(rows)))


def pair_ids(left: np.ndarray, right: np.ndarray, n: int) -> np.ndarray:
    """One integer per unordered pair of positions below ``n`` (``min * n + max``): the pair (a, b) and the pair
    (b, a) get the same id, so pairs found in either order can be looked up with :func:`isin`.

    Examples:
        >>> pair_ids(np.array([0, 3]), np.array([3, 0]), 5).tolist()
        [3, 3]
    """
    left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
    return np.minimum(left, right) * np.int64(n) + np.maximum(left, right)


#: Whole numbers a double holds exactly: up to 2**53.
FLOAT_EXACT = 2.0**53


def as_text(series: pd.Series) -> pd.Series:
    """``series`` as text (pandas' string dtype); a float column of whole numbers only (a phone number or a code a
    tool stored as a double) as the numbers it holds: ``4155510033``, not ``4155510033.0``.

    Examples:
        >>> as_text(pd.Series([4155510033.0, None])).tolist()
        ['4155510033', <NA>]
        >>> as_text(pd.Series([1.5, 2.0])).tolist()
        ['1.5', '2.0']
    """
    if pd.api.types.is_float_dtype(series.dtype):
        number = series.to_numpy(dtype="float64", na_value=np.nan)
        present = number[~np.isnan(number)]
        if len(present) and (np.floor(present) == present).all() and (np.abs(present) <= FLOAT_EXACT).all():
            return series.astype("Int64").astype(pd.StringDtype())
    return series.astype(pd.StringDtype())


def holds_dates(series: pd.Series) -> bool:
    """Whether a column holds dates (no time of day): Arrow dates, or Python dates as Arrow's to_pandas gives them."""
    if isinstance(series.dtype, pd.ArrowDtype):
        return pa.types.is_date(series.dtype.pyarrow_dtype)
    return series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) == "date"
