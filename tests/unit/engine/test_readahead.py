"""Tests of ReadAhead: bounded read-ahead on a thread, errors handed over, clean early close."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from parallel_batch.engine.readahead import ReadAhead


def test_that_every_item_comes_through_in_order() -> None:
    """Test that iterating a ReadAhead yields the source's items in order, then stops."""
    with ReadAhead(iter(range(50)), depth=2) as ahead:
        assert list(ahead) == list(range(50))
        assert list(ahead) == []


def test_that_it_reads_at_most_depth_items_ahead() -> None:
    """Test that the thread stops reading when depth items wait unconsumed."""
    produced: list[int] = []
    blocked = threading.Event()

    def source() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            if len(produced) == 4:
                blocked.set()
            yield i

    ahead = ReadAhead(source(), depth=2)
    assert next(ahead) == 0
    blocked.wait(5)
    # one consumed + two waiting + one read and blocked on put
    ahead._thread.join(0.3)
    assert len(produced) == 4
    ahead.close()


def test_that_a_source_error_is_raised_in_the_consumer() -> None:
    """Test that an exception of the source reaches the consumer after the items before it."""

    def source() -> Iterator[int]:
        yield 1
        raise RuntimeError("read failed")

    with ReadAhead(source()) as ahead:
        assert next(ahead) == 1
        with pytest.raises(RuntimeError, match="read failed"):
            next(ahead)


def test_that_close_stops_the_thread_and_closes_the_source() -> None:
    """Test that closing early ends the thread and runs the source generator's cleanup."""
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    ahead = ReadAhead(source(), depth=1)
    assert next(ahead) == 0
    ahead.close()
    assert not ahead._thread.is_alive()
    assert closed.is_set()


def test_that_depth_must_be_positive() -> None:
    """Test that a depth below 1 is refused with an exact message."""
    with pytest.raises(ValueError, match="depth must be greater than 0"):
        ReadAhead(iter([]), depth=0)
