"""Work on a few threads of this process, for steps whose heavy parts (NumPy's, Arrow's and scikit-learn's kernels,
rapidfuzz) run outside Python's lock, so that two threads keep the two cores of a small machine busy."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
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


def overlapped(consume: Callable[[T], object], items: Iterable[T], name: str) -> None:
    """``consume`` each item, in order, on one thread named ``name`` while this thread makes the next item: a
    producer and a consumer that both run mostly outside Python's lock (gathering rows, compressing them) take the
    two cores instead of one after the other. At most one made item waits for ``consume``, so two items are held at
    once instead of one. An error on either side stops both and is raised here."""
    if (os.cpu_count() or 1) < 2:
        for item in items:
            consume(item)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(consume, item))
                del item  # the consumer holds it now; this thread's next item is the only other one
                if len(pending) > 1:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
