"""Tests of failure isolation: a unit attempted whole, split k ways down to the items at fault,
those retried alone in rounds (one wait per round), and given up on."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.engine.isolation import (
    SPLIT_PARTS,
    Attempted,
    Isolated,
    isolate,
    split_range,
)
from parallel_batch.engine.retry import RetryPolicy

Unit = tuple[int, int]
NO_WAIT = RetryPolicy(max_attempts=1, base_delay=0)


class CeilingRng(random.Random):
    """An rng whose uniform(a, b) always answers b: the waits are the backoff ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


class BadItemError(Exception):
    """Raised by a part that holds an item at fault."""


class Work:
    """A unit of work over items 0..n-1: a part fails while it holds an item that is (still) bad.

    :param bad: item -> how many attempts alone it fails before it succeeds (a large number:
        always); an item also fails every part bigger than itself that holds it.
    :param error: what a failing part raises.
    """

    def __init__(self, bad: dict[int, int], error: type[Exception] = BadItemError) -> None:
        self.bad = dict(bad)
        self.error = error
        self.calls: list[Unit] = []
        self.failed_calls: list[Unit] = []

    def __call__(self, unit: Unit) -> Attempted[Unit, list[int]]:
        self.calls.append(unit)
        start, stop = unit
        at_fault = [i for i in range(start, stop) if self.bad.get(i, 0) > 0]
        if at_fault:
            if stop - start == 1:
                self.bad[start] -= 1
            self.failed_calls.append(unit)
            raise self.error(f"items {at_fault} are bad")
        return Attempted([i * 10 for i in range(start, stop)])


def run(
    work: Work, n: int, policy: RetryPolicy = NO_WAIT, sleeps: list[float] | None = None
) -> Isolated[Unit, list[int]]:
    waits = sleeps if sleeps is not None else []
    return isolate((0, n), work, split_range, policy, sleep=waits.append, rng=CeilingRng())


def outputs(isolated: Isolated[Unit, list[int]]) -> list[int]:
    return [out for _, part in sorted(isolated.done) for out in part]


# -- results and order ------------------------------------------------------------------------


def test_that_a_unit_that_succeeds_is_attempted_once_and_never_split() -> None:
    """Test that a clean unit costs exactly one attempt and no wait."""
    work, sleeps = Work({}), list[float]()
    isolated = run(work, 1000, RetryPolicy(max_attempts=3), sleeps)
    assert isolated == Isolated([((0, 1000), list(range(0, 10_000, 10)))], [])
    assert (work.calls, sleeps) == ([(0, 1000)], [])


def test_that_parts_come_in_order_and_failures_in_the_order_they_first_failed() -> None:
    """Test that done lists the parts that succeeded left to right, and failed the items given
    up on in the order they first failed."""
    work = Work({70: 99, 3: 99, 41: 99})
    isolated = run(work, 100)
    units = [unit for unit, _ in isolated.done]
    assert units == sorted(units)
    assert units[0] == (0, 1)  # the part holding item 3 was split into single items
    assert outputs(isolated) == [i * 10 for i in range(100) if i not in (3, 41, 70)]
    assert [g.unit for g in isolated.failed] == [(3, 4), (41, 42), (70, 71)]
    assert all(isinstance(g.error, BadItemError) for g in isolated.failed)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=3000),
    bad=st.sets(st.integers(min_value=0, max_value=2999), max_size=6),
)
def test_that_isolation_equals_processing_each_item_alone(n: int, bad: set[int]) -> None:
    """Test that for any bad items, every other item is done exactly once and only the bad ones
    are given up on."""
    bad = {i for i in bad if i < n}
    work = Work(dict.fromkeys(bad, 99))
    isolated = run(work, n)
    assert outputs(isolated) == [i * 10 for i in range(n) if i not in bad]
    assert sorted(g.unit for g in isolated.failed) == [(i, i + 1) for i in sorted(bad)]
    done_items = [i for (start, stop), _ in isolated.done for i in range(start, stop)]
    assert len(done_items) == len(set(done_items))


# -- the k-way split ---------------------------------------------------------------------------


def test_that_one_bad_item_among_10000_is_found_in_five_failed_attempts() -> None:
    """Test that a failing unit is split SPLIT_PARTS ways, and only the failing part again:
    10,000 -> 625 -> 39 -> 2 or 3 -> the item alone."""
    work = Work({7_777: 99})
    isolated = run(work, 10_000)
    sizes = [stop - start for start, stop in work.failed_calls]
    assert sizes[:2] == [10_000, 625]
    assert sizes[2] in (39, 40) and sizes[3] in (2, 3) and sizes[4] == 1
    assert len(sizes) == 5
    assert all(start <= 7_777 < stop for start, stop in work.failed_calls)
    # Every part of every split was attempted once; nothing beyond them.
    assert len(work.calls) == 1 + SPLIT_PARTS * 3 + sizes[3]
    assert [g.unit for g in isolated.failed] == [(7_777, 7_778)]


def test_that_a_split_that_cannot_make_progress_counts_as_a_single_item() -> None:
    """Test that a split returning nothing, or the unit itself, ends the splitting (no loop and
    no unit lost): the unit is given up on as one item."""
    for split in (lambda unit: [], lambda unit: [unit]):
        work = Work({5: 99})
        isolated = isolate((0, 10), work, split, NO_WAIT)
        assert isolated.done == []
        assert [g.unit for g in isolated.failed] == [(0, 10)]
        assert work.calls == [(0, 10)]


# -- retries in rounds --------------------------------------------------------------------------


def test_that_single_items_are_retried_in_rounds_with_one_wait_per_round() -> None:
    """Test that every item at fault is retried alone, all of a round after one wait, with the
    policy's backoff, until it succeeds or its attempts run out."""
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, multiplier=3.0)
    # Alone: 3 fails once (done on its 2nd try), 7 and 8 fail twice (3rd), 9 always.
    work, sleeps = Work({3: 1, 7: 2, 8: 2, 9: 99}), list[float]()
    isolated = run(work, 16, policy, sleeps)
    assert sleeps == [0.5, 1.5, 4.5]  # 3 rounds, however many items each one retried
    assert outputs(isolated) == [i * 10 for i in range(16) if i != 9]
    retried = [unit for unit, _ in isolated.done if unit in {(3, 4), (7, 8), (8, 9)}]
    assert retried == [(3, 4), (7, 8), (8, 9)]  # after the parts, in the order they succeeded
    [given_up] = isolated.failed
    assert (given_up.unit, given_up.attempts) == ((9, 10), 4)
    assert given_up.first_failed_at <= given_up.last_failed_at


def test_that_a_non_retryable_error_is_given_up_at_once() -> None:
    """Test that an item whose error the policy does not retry is given up after its first try
    alone, without a wait."""
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, retry_on=(ConnectionError,))
    work, sleeps = Work({4: 99}, error=ValueError), list[float]()
    isolated = run(work, 8, policy, sleeps)
    assert sleeps == []
    [given_up] = isolated.failed
    assert (given_up.unit, given_up.attempts, type(given_up.error)) == ((4, 5), 1, ValueError)
    assert work.calls.count((4, 5)) == 1


def test_that_item_errors_of_a_successful_attempt_are_retried_alone() -> None:
    """Test that the single items an attempt reports as failed (without raising) are retried
    alone like items found by splitting, and given up on when they keep failing."""
    calls: list[Unit] = []
    fails_alone = {2: 1, 5: 99}

    def attempt(unit: Unit) -> Attempted[Unit, list[int]]:
        calls.append(unit)
        start, stop = unit
        if stop - start > 1:  # a per-row transform: reports its failing rows, keeps the rest
            errors: list[tuple[Unit, Exception]] = [
                ((i, i + 1), BadItemError(f"row {i}")) for i in (2, 5) if start <= i < stop
            ]
            return Attempted([i for i in range(start, stop) if i not in (2, 5)], errors)
        if fails_alone.get(start, 0) > 0:
            fails_alone[start] -= 1
            raise BadItemError(f"row {start} alone")
        return Attempted([start])

    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=3, base_delay=0)
    isolated = isolate((0, 8), attempt, split_range, policy, sleep=sleeps.append)
    assert calls == [(0, 8), (2, 3), (5, 6), (2, 3), (5, 6)]
    assert sorted(out for _, part in isolated.done for out in part) == [0, 1, 2, 3, 4, 6, 7]
    [given_up] = isolated.failed
    assert (given_up.unit, given_up.attempts, str(given_up.error)) == ((5, 6), 3, "row 5 alone")
    assert len(sleeps) == 2


# -- what propagates ------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_that_a_base_exception_propagates_at_once(error: type[BaseException]) -> None:
    """Test that KeyboardInterrupt and SystemExit are never isolated: the first one propagates."""
    calls: list[Unit] = []

    def attempt(unit: Unit) -> Attempted[Unit, list[int]]:
        calls.append(unit)
        raise error("stop")

    with pytest.raises(error):
        isolate((0, 100), attempt, split_range, RetryPolicy())
    assert calls == [(0, 100)]


def test_that_an_error_outside_isolate_on_propagates_without_a_split() -> None:
    """Test that an error that is not one of isolate_on (the database is gone) is raised from the
    attempt that hit it, with no split and no retry."""
    work = Work({10: 1, 60: 99})

    def attempt(unit: Unit) -> Attempted[Unit, list[int]]:
        if unit != (0, 100):  # the first part after the split
            raise OSError("database is gone")
        return work(unit)

    with pytest.raises(OSError, match=r"^database is gone$"):
        isolate((0, 100), attempt, split_range, RetryPolicy(), isolate_on=(BadItemError,))
    assert work.calls == [(0, 100)]


# -- split_range ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=-1000, max_value=1000),
    size=st.integers(min_value=2, max_value=100_000),
    parts=st.integers(min_value=1, max_value=64),
)
def test_that_split_range_covers_its_range_exactly(start: int, size: int, parts: int) -> None:
    """Test that a split gives at most ``parts`` contiguous, non-empty, near-equal ranges that
    cover the range exactly."""
    pieces: Sequence[Unit] | None = split_range((start, start + size), parts)
    assert pieces is not None
    assert len(pieces) == min(parts, size)
    assert pieces[0][0] == start and pieces[-1][1] == start + size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    lengths = {stop - begin for begin, stop in pieces}
    assert min(lengths) >= 1 and max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("unit", [(5, 6), (5, 5), (6, 5)])
def test_that_split_range_cannot_split_one_item_or_none(unit: Unit) -> None:
    """Test that a range of one item (or none) cannot be split: None."""
    assert split_range(unit) is None


def test_that_split_range_defaults_to_split_parts() -> None:
    """Test that the default split is SPLIT_PARTS ways."""
    pieces = split_range((0, 1000))
    assert pieces is not None and len(pieces) == SPLIT_PARTS == 16
