"""Fast per-group string joins (pandas' ``groupby().agg(" ".join)`` runs Python per group and is ~50x slower)."""

from __future__ import annotations

import numpy as np


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


def join_runs(values: np.ndarray, starts: np.ndarray, sep: str) -> list[str]:
    """``sep.join`` of each run ``values[starts[i]:starts[i+1]]`` (values sorted so that runs are contiguous)."""
    ends = np.append(starts[1:], len(values))
    vals = values.tolist()
    return [sep.join(vals[s:e]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
