"""Tests of the asyncio concurrency limiter: the limit, FIFO order, and no leaked slot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.engine.limiter import ConcurrencyLimiter, LimiterStatistics
from tests.unit.engine._aio import HANG_GUARD_SECONDS, run_guarded


async def _spin(steps: int) -> None:
    """Let the event loop run other tasks ``steps`` times."""
    for _ in range(steps):
        await asyncio.sleep(0)


async def _until(predicate: Callable[[], bool], limit: int = 1000) -> None:
    """Spin the event loop until ``predicate()`` holds."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def test_that_a_non_positive_limit_is_rejected() -> None:
    """Test that a limit below 1 raises ValueError with the exact message."""
    with pytest.raises(ValueError, match=r"^limit must be greater than 0$"):
        ConcurrencyLimiter(0)


def test_that_run_returns_the_result_and_passes_arguments() -> None:
    """Test that run() awaits fn with its positional and keyword arguments and returns its result."""

    async def add(a: int, b: int, *, scale: int) -> int:
        await asyncio.sleep(0)
        return (a + b) * scale

    async def main() -> tuple[int, LimiterStatistics]:
        limiter = ConcurrencyLimiter(2)
        return await limiter.run(add, 2, 3, scale=10), limiter.statistics()

    assert run_guarded(main()) == (50, LimiterStatistics(limit=2, running=0, waiting=0))


def test_that_statistics_count_running_and_waiting() -> None:
    """Test that statistics() reports the limit, the slots taken and the queued waiters."""

    async def main() -> tuple[LimiterStatistics, LimiterStatistics]:
        limiter = ConcurrencyLimiter(2)
        gate = asyncio.Event()
        tasks = [asyncio.create_task(limiter.run(gate.wait)) for _ in range(5)]
        await _until(lambda: limiter.statistics().waiting == 3)
        during = limiter.statistics()
        gate.set()
        await asyncio.gather(*tasks)
        return during, limiter.statistics()

    during, after = run_guarded(main())
    assert during == LimiterStatistics(limit=2, running=2, waiting=3)
    assert after == LimiterStatistics(limit=2, running=0, waiting=0)


def test_that_waiters_get_slots_in_fifo_order() -> None:
    """Test that queued waiters acquire in arrival order, and a newcomer cannot overtake them."""

    async def main() -> list[str]:
        limiter = ConcurrencyLimiter(1)
        order: list[str] = []

        async def enter(name: str) -> None:
            async with limiter:
                order.append(name)
                await asyncio.sleep(0)

        await limiter.acquire()
        waiters = [asyncio.create_task(enter(f"w{i}")) for i in range(8)]
        await _until(lambda: limiter.statistics().waiting == 8)
        limiter.release()
        # The slot was handed to w0; a newcomer arriving now must queue behind w1..w7.
        late = asyncio.create_task(enter("late"))
        await asyncio.gather(*waiters, late)
        return order

    assert run_guarded(main()) == [f"w{i}" for i in range(8)] + ["late"]


def test_that_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    """Test that cancelling a queued waiter removes it and leaves the slot count right."""

    async def main() -> tuple[LimiterStatistics, LimiterStatistics, bool]:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await _until(lambda: limiter.statistics().waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        queued = limiter.statistics()
        limiter.release()
        freed = limiter.statistics()
        # The slot is really free: acquiring now succeeds without waiting.
        await asyncio.wait_for(limiter.acquire(), HANG_GUARD_SECONDS)
        limiter.release()
        return queued, freed, waiter.cancelled()

    queued, freed, cancelled = run_guarded(main())
    assert queued == LimiterStatistics(limit=1, running=1, waiting=0)
    assert freed == LimiterStatistics(limit=1, running=0, waiting=0)
    assert cancelled


def test_that_a_waiter_cancelled_right_after_being_handed_a_slot_passes_it_on() -> None:
    """Test that a waiter cancelled after release() chose it, but before it woke, passes the slot on."""

    async def main() -> tuple[list[str], LimiterStatistics]:
        limiter = ConcurrencyLimiter(1)
        entered: list[str] = []

        async def enter(name: str) -> None:
            async with limiter:
                entered.append(name)

        await limiter.acquire()
        first = asyncio.create_task(enter("first"))
        second = asyncio.create_task(enter("second"))
        await _until(lambda: limiter.statistics().waiting == 2)
        limiter.release()  # hands the slot to `first` ...
        first.cancel()  # ... which is cancelled before it could run
        await asyncio.gather(first, second, return_exceptions=True)
        return entered, limiter.statistics()

    entered, stats = run_guarded(main())
    assert entered == ["second"]
    assert stats == LimiterStatistics(limit=1, running=0, waiting=0)


def test_that_a_failing_task_releases_its_slot() -> None:
    """Test that an exception inside run() propagates and gives the slot back."""

    async def boom() -> None:
        raise KeyError("boom")

    async def main() -> LimiterStatistics:
        limiter = ConcurrencyLimiter(1)
        for _ in range(3):
            with pytest.raises(KeyError, match="boom"):
                await limiter.run(boom)
        return limiter.statistics()

    assert run_guarded(main()) == LimiterStatistics(limit=1, running=0, waiting=0)


def test_that_a_task_cancelled_while_holding_a_slot_releases_it() -> None:
    """Test that cancelling a coroutine inside `async with` frees its slot for the next waiter."""

    async def main() -> tuple[bool, LimiterStatistics]:
        limiter = ConcurrencyLimiter(1)
        holder = asyncio.create_task(limiter.run(asyncio.sleep, 3600))
        await _until(lambda: limiter.statistics().running == 1)
        nxt = asyncio.create_task(limiter.run(asyncio.sleep, 0))
        await _until(lambda: limiter.statistics().waiting == 1)
        holder.cancel()
        await asyncio.wait_for(nxt, HANG_GUARD_SECONDS)
        return holder.cancelled(), limiter.statistics()

    cancelled, stats = run_guarded(main())
    assert cancelled
    assert stats == LimiterStatistics(limit=1, running=0, waiting=0)


def test_that_releasing_more_than_acquired_is_an_error() -> None:
    """Test that release() without a matching acquire() raises RuntimeError."""
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(RuntimeError, match="more times than acquire"):
        limiter.release()


task_specs = st.lists(
    st.tuples(
        st.integers(0, 4),  # event-loop turns the work takes
        st.one_of(st.none(), st.integers(0, 12)),  # cancelled after this many turns, or never
        st.booleans(),  # the work raises
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(limit=st.integers(1, 4), specs=task_specs)
def test_that_the_limit_holds_and_nothing_deadlocks_under_random_cancellation(
    limit: int, specs: list[tuple[int, int | None, bool]]
) -> None:
    """Test that at most `limit` tasks run, entry stays FIFO, and every task ends, with random cancels and failures."""

    async def main() -> tuple[int, list[int], list[BaseException | None], LimiterStatistics]:
        limiter = ConcurrencyLimiter(limit)
        active = 0
        peak = 0
        entered: list[int] = []

        async def work(index: int, steps: int, fail: bool) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active, limiter.statistics().running)
            entered.append(index)
            try:
                await _spin(steps)
                if fail:
                    raise ValueError("work failed")
            finally:
                active -= 1

        async def cancel_later(task: asyncio.Task[None], turns: int) -> None:
            await _spin(turns)
            task.cancel()

        tasks = [
            asyncio.create_task(limiter.run(work, i, steps, fail))
            for i, (steps, _, fail) in enumerate(specs)
        ]
        cancellers = [
            asyncio.create_task(cancel_later(task, turns))
            for task, (_, turns, _) in zip(tasks, specs, strict=True)
            if turns is not None
        ]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*cancellers)
        return peak, entered, outcomes, limiter.statistics()

    peak, entered, outcomes, stats = run_guarded(main())
    assert peak <= limit
    assert entered == sorted(entered)  # FIFO: nobody overtakes an earlier arrival
    assert stats == LimiterStatistics(limit=limit, running=0, waiting=0)
    for (_, cancel_after, fail), outcome in zip(specs, outcomes, strict=True):
        if isinstance(outcome, asyncio.CancelledError):
            assert cancel_after is not None
        elif fail:
            assert isinstance(outcome, ValueError)
        else:
            assert outcome is None
