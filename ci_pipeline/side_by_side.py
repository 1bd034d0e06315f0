"""Work on a few threads of this process, for steps whose heavy parts (NumPy's, Arrow's and scikit-learn's kernels,
rapidfuzz, Parquet's and SQLite's writers) run outside Python's lock, so that two threads keep the two cores of a
small machine busy: items worked on side by side (:func:`each`, :func:`each_named`, :func:`mapped_ahead`), the
next items made while the current one is consumed (:func:`in_background`), or one step begun beside the rest
(:func:`started`)."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def each_named(work: Mapping[str, Callable[[], R]], at_once: int, name: str) -> dict[str, R]:
    """Every named piece of work done, ``at_once`` at a time on threads (as :func:`each`); the results by name, in
    the mapping's order (the columns of a table gathered side by side, for example)."""
    return dict(zip(work, each(lambda do: do(), work.values(), at_once, name), strict=True))


def started(work: Callable[[], R], name: str) -> Future[R]:
    """``work`` begun now on a thread of its own named ``name``; its result, or its error, from the future. For a
    step whose inputs are ready while this thread does something else the step does not need."""
    future: Future[R] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    # Not a daemon: a run that fails while the step is under way (a bad override file) would otherwise end the
    # process with the thread inside DuckDB's or Arrow's native code, which aborts it ("terminate called ...").
    # The interpreter waits for the step at exit instead: a step of one run, seconds at most.
    threading.Thread(target=run, name=name, daemon=False).start()
    return future


#: Marks the end of the items a background thread produced.
_DONE = object()


def in_background(items: Iterable[T], depth: int = 2, name: str = "ci-pipeline-ahead") -> Iterator[T]:
    """The items of ``items``, produced by a thread of their own at most ``depth`` ahead of the consumer.

    An error of the producer is raised to the consumer at the item where it happened. A consumer that stops early
    (or fails) stops the producer: it is told to end and waited for, so no thread outlives the iteration.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put((_DONE, exc))
            return
        finally:
            # A generator left early releases what it holds (files, connections) here, before the consumer goes on.
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        put((_DONE, None))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def mapped_ahead(function: Callable[[T], R], items: Iterable[T], workers: int = 2) -> Iterator[R]:
    """``function`` of each item, in the items' order, computed by ``workers`` threads at once; at most
    ``workers + 1`` items are taken ahead of the consumer, so what is held stays bounded."""
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ci-pipeline-map") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
