"""Work on threads: ``overlapped`` consumes in order, on another thread, holding at most two items, and stops on
either side's error."""

import threading

import pytest

from ci_pipeline import side_by_side
from ci_pipeline.side_by_side import overlapped


def test_each_item_consumed_in_order_on_another_thread_with_at_most_two_held(monkeypatch):
    monkeypatch.setattr(side_by_side.os, "cpu_count", lambda: 2)
    made, consumed, threads = [], [], set()
    gate = threading.Event()

    def items():
        for i in range(6):
            # The producer may run at most one item ahead of the consumer.
            assert len(made) - len(consumed) <= 1
            made.append(i)
            yield i

    def consume(item):
        threads.add(threading.current_thread().name)
        gate.wait(0.01)
        consumed.append(item)

    overlapped(consume, items(), "test-consumer")
    assert consumed == list(range(6))
    assert len(threads) == 1 and next(iter(threads)).startswith("test-consumer")


def test_a_consumer_error_stops_the_producer_and_is_raised(monkeypatch):
    monkeypatch.setattr(side_by_side.os, "cpu_count", lambda: 2)
    made = []

    def items():
        for i in range(100):
            made.append(i)
            yield i

    def consume(item):
        if item == 2:
            raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        overlapped(consume, items(), "test-consumer")
    assert len(made) <= 5


def test_a_producer_error_is_raised_after_what_was_made(monkeypatch):
    monkeypatch.setattr(side_by_side.os, "cpu_count", lambda: 2)
    consumed = []

    def items():
        yield 1
        raise OSError("bucket file unreadable")

    with pytest.raises(OSError, match="unreadable"):
        overlapped(consumed.append, items(), "test-consumer")
    assert consumed == [1]


def test_one_core_consumes_on_this_thread(monkeypatch):
    monkeypatch.setattr(side_by_side.os, "cpu_count", lambda: 1)
    threads = []
    overlapped(lambda item: threads.append(threading.current_thread()), range(3), "test-consumer")
    assert threads == [threading.current_thread()] * 3
