"""Work done ahead in threads keeps the order of the items, raises the producer's error where it happened, holds a
bounded number of items and leaves no thread behind."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ci_pipeline.side_by_side import each_named, in_background, mapped_ahead, started


def test_items_made_in_the_background_come_in_order_and_an_error_arrives_where_it_happened():
    def items():
        yield from range(5)
        raise OSError("the lake went away")

    seen = []
    with pytest.raises(OSError, match="the lake went away"):
        for item in in_background(items(), depth=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_stops_the_producer_and_its_thread():
    made = []
    released = []

    def items():
        try:
            for n in range(1_000):
                made.append(n)
                yield n
        finally:
            released.append(threading.current_thread().name)

    before = threading.active_count()
    reader = in_background(items(), depth=2, name="test-ahead")
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()
    assert threading.active_count() == before
    # The producer's generator was closed in its own thread before the consumer went on.
    assert released == ["test-ahead"]
    # At most the queue's depth and the item being handed over were made beyond what was taken.
    assert len(made) <= 3 + 2 + 1


def test_mapped_items_keep_their_order_with_at_most_workers_plus_one_taken_ahead():
    taken = []

    def items():
        for n in range(20):
            taken.append(n)
            yield n

    def slow_for_even(n: int) -> int:
        # The even items finish after the odd ones that were started with them.
        time.sleep(0.002 if n % 2 == 0 else 0)
        return n * n

    results = []
    for result in mapped_ahead(slow_for_even, items(), workers=2):
        results.append(result)
        assert len(taken) - len(results) <= 3
    assert results == [n * n for n in range(20)]


def test_an_error_of_a_mapped_item_is_raised_in_order():
    def square_or_fail(n: int) -> int:
        if n == 3:
            raise ValueError("row 3 is bad")
        return n * n

    results = []
    with pytest.raises(ValueError, match="row 3 is bad"):
        for result in mapped_ahead(square_or_fail, range(10), workers=2):
            results.append(result)
    assert results == [0, 1, 4]


def test_named_work_is_done_side_by_side_and_returned_by_name_in_order():
    threads = set()

    def piece(value):
        def do():
            threads.add(threading.current_thread().name)
            return value

        return do

    done = each_named({"b": piece(2), "a": piece(1), "c": piece(3)}, 2, "named-test")
    assert list(done.items()) == [("b", 2), ("a", 1), ("c", 3)]
    if (os.cpu_count() or 1) >= 2:
        assert all(name.startswith("named-test") for name in threads)


def test_started_work_runs_on_its_own_named_thread_and_hands_over_its_result_or_its_error():
    done = started(lambda: (threading.current_thread().name, 6 * 7), "named-step")
    assert done.result(timeout=10) == ("named-step", 42)

    def fails():
        raise ValueError("bad step")

    failed = started(fails, "failing-step")
    with pytest.raises(ValueError, match="bad step"):
        failed.result(timeout=10)
