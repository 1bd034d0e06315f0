"""Work on a few threads of this process, for steps whose heavy parts (NumPy's, Arrow's and scikit-learn's kernels,
rapidfuzz) run outside Python's lock, so that two threads keep the two cores of a small machine busy."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each(work: Callable[[T], R], items: Iterable[T], at_once: int, name: str) -> list[R]:
    """``work`` of each item, in the items' order: ``at_once`` at a time on threads named ``name`` (no more than the
    items or the cores), or one after another on this thread when that leaves fewer than two.

    The threads do not inherit limits set on this thread (threadpoolctl's OpenMP limit is per thread): ``work``
    sets what it needs."""
    items = list(items)
    workers = min(at_once, len(items), os.cpu_count() or 1)
    if workers < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        return list(pool.map(work, items))
