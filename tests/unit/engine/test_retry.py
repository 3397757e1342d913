"""Tests of the retry collector: backoff with full jitter, retryable errors, attempts, sync and
async processing, the concurrency bound, and picklable results."""

from __future__ import annotations

import asyncio
import pickle
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.engine.retry import (
    FailedItem,
    ItemResult,
    RetryOutcome,
    RetryPolicy,
    aprocess_with_retries,
    call_with_retries,
    process_with_retries,
)


class CeilingRng(random.Random):
    """An rng whose uniform(a, b) always answers b: the waits are the backoff ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Flaky:
    """A per-item function that raises ``error`` for the first ``failures[item]`` calls."""

    def __init__(self, failures: dict[int, int], error: type[Exception] = ConnectionError) -> None:
        self.failures = dict(failures)
        self.error = error
        self.calls: dict[int, int] = {}

    def __call__(self, item: int) -> int:
        self.calls[item] = self.calls.get(item, 0) + 1
        if self.calls[item] <= self.failures.get(item, 0):
            raise self.error(f"item {item} failed on call {self.calls[item]}")
        return item * 10


def always_fails(item: int) -> int:
    """Raise for every item (module level: picklable)."""
    raise ValueError(f"bad item {item}")


def fails_on_odd(item: int) -> int:
    """Double even items, raise for odd ones (module level: picklable)."""
    if item % 2:
        raise ValueError(f"odd item {item}")
    return item * 2


# -- the policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be greater than 0"),
        ({"max_attempts": 1.5}, "max_attempts must be greater than 0"),
        ({"base_delay": -0.1}, "base_delay must be a finite number of seconds, 0 or more"),
        ({"base_delay": float("nan")}, "base_delay must be a finite number of seconds, 0 or more"),
        (
            {"max_delay": float("inf")},
            "max_delay must be a finite number of seconds, at least base_delay",
        ),
        (
            {"base_delay": 2, "max_delay": 1},
            "max_delay must be a finite number of seconds, at least base_delay",
        ),
        ({"multiplier": 0.5}, "multiplier must be a finite number, 1 or more"),
        ({"retry_on": ValueError}, "retry_on must be a tuple of exception classes"),
        ({"retry_on": (int,)}, "retry_on must be a tuple of exception classes"),
        ({"give_up_on": [KeyError]}, "give_up_on must be a tuple of exception classes"),
    ],
)
def test_that_invalid_policies_are_rejected_with_exact_messages(
    kwargs: dict[str, object], message: str
) -> None:
    """Test that each invalid RetryPolicy argument raises ValueError with its exact message."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_that_the_policy_is_frozen() -> None:
    """Test that a RetryPolicy cannot be changed after it is made."""
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 5  # type: ignore[misc]


def test_that_the_ceilings_grow_exponentially_up_to_max_delay() -> None:
    """Test that the backoff ceiling is base_delay * multiplier ** n, capped at max_delay."""
    policy = RetryPolicy(base_delay=0.1, multiplier=3.0, max_delay=2.0)
    ceilings = [policy.delay_ceiling(n) for n in range(5)]
    assert ceilings == pytest.approx([0.1, 0.3, 0.9, 2.0, 2.0])
    assert policy.delay_ceiling(100_000) == 2.0  # no OverflowError for huge exponents


@settings(max_examples=100, deadline=None)
@given(
    base=st.floats(0, 5),
    extra=st.floats(0, 60),
    multiplier=st.floats(1, 10),
    retry=st.integers(0, 2000),
    seed=st.integers(0, 2**32),
)
def test_that_every_delay_lies_in_the_full_jitter_range(
    base: float, extra: float, multiplier: float, retry: int, seed: int
) -> None:
    """Test that a drawn delay is always within [0, min(max_delay, base * multiplier ** n)]."""
    policy = RetryPolicy(base_delay=base, max_delay=base + extra, multiplier=multiplier)
    delay = policy.delay(retry, random.Random(seed))
    assert 0 <= delay <= policy.delay_ceiling(retry) <= policy.max_delay


def test_that_jitter_spreads_over_the_whole_range() -> None:
    """Test that full jitter draws both near zero and near the ceiling (not only the top half)."""
    policy = RetryPolicy(base_delay=1.0, max_delay=1.0)
    rng = random.Random(7)
    draws = [policy.delay(0, rng) for _ in range(500)]
    assert min(draws) < 0.05
    assert max(draws) > 0.95


@pytest.mark.parametrize(
    ("error", "retry_on", "give_up_on", "retryable"),
    [
        (ConnectionError("x"), (Exception,), (), True),
        (ConnectionError("x"), (OSError,), (), True),
        (ValueError("x"), (OSError,), (), False),
        (FileNotFoundError("x"), (OSError,), (FileNotFoundError,), False),
    ],
)
def test_that_retryable_errors_are_told_apart(
    error: Exception,
    retry_on: tuple[type[BaseException], ...],
    give_up_on: tuple[type[BaseException], ...],
    retryable: bool,
) -> None:
    """Test that is_retryable follows retry_on, with give_up_on taking precedence."""
    policy = RetryPolicy(retry_on=retry_on, give_up_on=give_up_on)
    assert policy.is_retryable(error) is retryable


# -- sync ----------------------------------------------------------------------------------


def test_that_the_waits_follow_the_exact_backoff_sequence() -> None:
    """Test that the injected sleep sees each ceiling in turn, capped by max_delay."""
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, multiplier=2.0, max_delay=3.0)
    result = call_with_retries(always_fails, 1, policy, sleep=sleeps.append, rng=CeilingRng())
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert result.failure is not None
    assert result.failure.attempts == 6


def test_that_the_waits_are_the_seeded_rng_draws() -> None:
    """Test that with a seeded rng each wait is exactly uniform(0, ceiling) from that rng."""
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, multiplier=2.0, max_delay=3.0)
    sleeps: list[float] = []
    call_with_retries(always_fails, 1, policy, sleep=sleeps.append, rng=random.Random(42))
    twin = random.Random(42)
    assert sleeps == [twin.uniform(0, 1.0), twin.uniform(0, 2.0), twin.uniform(0, 3.0)]


def test_that_a_flaky_item_succeeds_after_retries_and_attempts_are_counted() -> None:
    """Test that an item failing twice succeeds on the third call, with two waits between."""
    fn = Flaky({7: 2})
    sleeps: list[float] = []
    result = call_with_retries(fn, 7, RetryPolicy(max_attempts=3), sleep=sleeps.append)
    assert result == ItemResult(70)
    assert result.ok
    assert fn.calls[7] == 3
    assert len(sleeps) == 2


def test_that_an_item_failing_every_attempt_is_described() -> None:
    """Test that the failure keeps the item, the last error's type and message, and the attempts."""
    fn = Flaky({3: 99})
    result = call_with_retries(fn, 3, RetryPolicy(max_attempts=4), sleep=lambda s: None)
    failure = result.failure
    assert failure is not None
    assert not result.ok
    assert (failure.item, failure.error_type, failure.attempts) == (3, "ConnectionError", 4)
    assert failure.message == "item 3 failed on call 4"
    assert "ConnectionError: item 3 failed on call 4" in failure.traceback
    assert failure.first_failed_at.tzinfo is UTC
    assert failure.last_failed_at.tzinfo is UTC
    assert failure.first_failed_at <= failure.last_failed_at
    assert failure.stage is None


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(max_attempts=5, retry_on=(ConnectionError,)),
        RetryPolicy(max_attempts=5, give_up_on=(ValueError,)),
    ],
)
def test_that_a_non_retryable_error_fails_at_once(policy: RetryPolicy) -> None:
    """Test that an error outside retry_on, or in give_up_on, fails with attempts=1 and no wait."""
    fn = Flaky({1: 99}, error=ValueError)
    sleeps: list[float] = []
    result = call_with_retries(fn, 1, policy, sleep=sleeps.append)
    assert result.failure is not None
    assert result.failure.attempts == 1
    assert result.failure.error_type == "ValueError"
    assert sleeps == []
    assert fn.calls[1] == 1


def test_that_a_keyboard_interrupt_is_never_swallowed() -> None:
    """Test that a BaseException that is not an Exception propagates instead of being retried."""

    def interrupt(item: int) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_retries(interrupt, 1, RetryPolicy(), sleep=lambda s: None)


def test_that_one_failing_item_does_not_fail_the_others() -> None:
    """Test that process_with_retries files successes and failures item by item."""
    fn = Flaky({2: 1, 4: 99})
    outcome = process_with_retries(
        range(6), fn, RetryPolicy(max_attempts=2), sleep=lambda s: None, rng=random.Random(1)
    )
    assert outcome.successful == [(0, 0), (1, 10), (2, 20), (3, 30), (5, 50)]
    assert [(f.item, f.attempts) for f in outcome.failed] == [(4, 2)]


def test_that_the_source_is_read_lazily() -> None:
    """Test that process_with_retries takes items from a generator one at a time."""
    seen: list[int] = []

    def source() -> Iterator[int]:
        for i in range(3):
            seen.append(i)
            yield i

    def check(item: int) -> int:
        assert seen == list(range(item + 1))  # nothing read ahead of the item in hand
        return item

    outcome = process_with_retries(source(), check, RetryPolicy())
    assert [value for _, value in outcome.successful] == [0, 1, 2]


# -- async ---------------------------------------------------------------------------------


def test_that_async_processing_retries_with_the_injected_sleep() -> None:
    """Test that aprocess_with_retries retries flaky items and awaits the exact ceilings."""
    fn = Flaky({1: 2, 2: 99})
    sleeps: list[float] = []

    async def afn(item: int) -> int:
        await asyncio.sleep(0)
        return fn(item)

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    policy = RetryPolicy(max_attempts=3, base_delay=0.25, multiplier=4.0, max_delay=10.0)
    outcome = asyncio.run(
        aprocess_with_retries([0, 1, 2], afn, policy, sleep=fake_sleep, rng=CeilingRng())
    )
    assert outcome.successful == [(0, 0), (1, 10)]
    assert [(f.item, f.attempts, f.error_type) for f in outcome.failed] == [
        (2, 3, "ConnectionError")
    ]
    assert sleeps == [0.25, 1.0, 0.25, 1.0]


def test_that_async_non_retryable_errors_fail_at_once() -> None:
    """Test that the async collector gives up on a non-retryable error after one attempt."""
    calls: list[int] = []

    async def afn(item: int) -> int:
        calls.append(item)
        raise KeyError(item)

    policy = RetryPolicy(max_attempts=5, retry_on=(OSError,))
    outcome = asyncio.run(aprocess_with_retries([1, 2], afn, policy, concurrency=2))
    assert sorted(f.item for f in outcome.failed) == [1, 2]
    assert {f.attempts for f in outcome.failed} == {1}
    assert sorted(calls) == [1, 2]


@settings(max_examples=25, deadline=None)
@given(
    concurrency=st.integers(1, 6),
    n_items=st.integers(0, 40),
    failing=st.sets(st.integers(0, 39)),
)
def test_that_the_concurrency_bound_is_respected(
    concurrency: int, n_items: int, failing: set[int]
) -> None:
    """Test that no more than `concurrency` items are in flight, and every item is accounted for."""
    in_flight = 0
    peak = 0

    async def afn(item: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            for _ in range(item % 3 + 1):
                await asyncio.sleep(0)
            if item in failing:
                raise ConnectionError(str(item))
            return item
        finally:
            in_flight -= 1

    policy = RetryPolicy(max_attempts=2, base_delay=0)
    outcome = asyncio.run(
        aprocess_with_retries(range(n_items), afn, policy, concurrency=concurrency)
    )
    assert peak <= concurrency
    if n_items >= concurrency:
        assert peak == concurrency  # the bound is used, not just respected
    assert sorted(value for _, value in outcome.successful) == [
        i for i in range(n_items) if i not in failing
    ]
    assert sorted(f.item for f in outcome.failed) == sorted(i for i in failing if i < n_items)


def test_that_async_sources_are_read_only_as_slots_free_up() -> None:
    """Test that an async source is not read further ahead than the items in flight."""
    read = 0
    release = asyncio.Event

    async def run() -> tuple[int, RetryOutcome[int, int]]:
        gate = release()

        async def source() -> AsyncIterator[int]:
            nonlocal read
            for i in range(1000):
                read += 1
                yield i

        async def afn(item: int) -> int:
            await gate.wait()
            return item

        task = asyncio.create_task(
            aprocess_with_retries(source(), afn, RetryPolicy(), concurrency=3)
        )
        for _ in range(50):
            await asyncio.sleep(0)
        read_while_blocked = read
        gate.set()
        return read_while_blocked, await task

    read_while_blocked, outcome = asyncio.run(run())
    assert read_while_blocked == 4  # three in flight, one waiting for a slot
    assert len(outcome.successful) == 1000


def test_that_a_failing_source_raises_its_own_error_and_cancels_the_items_in_flight() -> None:
    """Test that an error from the source propagates as itself and leaves no task behind."""
    cancelled: list[int] = []

    async def afn(item: int) -> int:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return item

    async def source() -> AsyncIterator[int]:
        yield 1
        yield 2
        for _ in range(5):
            await asyncio.sleep(0)  # the two items are now waiting in afn
        raise OSError("disk gone")

    async def run() -> set[asyncio.Task[object]]:
        with pytest.raises(OSError, match=r"^disk gone$"):
            await aprocess_with_retries(source(), afn, RetryPolicy(), concurrency=5)
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(run()) == set()
    assert sorted(cancelled) == [1, 2]


def test_that_cancelling_the_collector_cancels_its_items() -> None:
    """Test that cancelling aprocess_with_retries cancels every item in flight."""

    async def afn(item: int) -> int:
        await asyncio.sleep(3600)
        return item

    async def run() -> set[asyncio.Task[object]]:
        task = asyncio.create_task(
            aprocess_with_retries(range(10), afn, RetryPolicy(), concurrency=4)
        )
        for _ in range(10):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(run()) == set()


def test_that_concurrency_must_be_positive() -> None:
    """Test that concurrency below 1 raises ValueError with the exact message."""

    async def afn(item: int) -> int:
        return item

    with pytest.raises(ValueError, match=r"^concurrency must be greater than 0$"):
        asyncio.run(aprocess_with_retries([1], afn, RetryPolicy(), concurrency=0))


# -- pickling ------------------------------------------------------------------------------


def test_that_results_outcomes_and_policies_survive_a_pickle_round_trip() -> None:
    """Test that item results, outcomes and policies pickle (they travel between processes)."""
    policy = RetryPolicy(
        max_attempts=2, base_delay=0, retry_on=(ValueError,), give_up_on=(KeyError,)
    )
    results = [
        call_with_retries(fails_on_odd, item, policy, sleep=lambda s: None) for item in (1, 2)
    ]
    copied = pickle.loads(pickle.dumps(results))
    assert copied == results
    assert isinstance(copied[0].failure, FailedItem)
    assert copied[0].failure.first_failed_at.tzinfo is UTC
    assert (copied[0].failure.attempts, copied[1].value) == (2, 4)
    outcome = process_with_retries([1, 2], fails_on_odd, policy, sleep=lambda s: None)
    assert pickle.loads(pickle.dumps(outcome)) == outcome
    assert pickle.loads(pickle.dumps(policy)) == policy
