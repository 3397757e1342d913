"""Tests of batching: every item exactly once, backpressure, streaming order, errors and cleanup."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.engine.batching import abatched, batched, process_batches
from parallel_batch.engine.progress import ProgressSnapshot
from tests.unit.engine._aio import run_guarded


class CountingSource:
    """An iterable (or async iterable) of 0..n-1 that counts how far it was pulled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.pulled += 1
            yield i

    async def agen(self) -> AsyncIterator[int]:
        try:
            for i in range(self.n):
                await asyncio.sleep(0)
                self.pulled += 1
                yield i
        finally:
            self.closed = True


def _no_other_tasks() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


# --- batched / abatched -------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(items=st.lists(st.integers()), size=st.integers(1, 12))
def test_that_batched_yields_every_item_once_in_full_batches(items: list[int], size: int) -> None:
    """Test that batched() concatenates back to the input, with only the last batch shorter."""
    batches = list(batched(items, size))
    assert [x for b in batches for x in b] == items
    assert all(len(b) == size for b in batches[:-1])
    assert all(1 <= len(b) <= size for b in batches)


def test_that_batched_is_lazy_on_an_endless_iterable() -> None:
    """Test that batched() reads only what the batches taken need, even from an endless source."""

    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    it = batched(endless(), 3)
    assert [next(it), next(it)] == [[0, 1, 2], [3, 4, 5]]


def test_that_batched_checks_its_size_up_front() -> None:
    """Test that a size below 1 raises ValueError at the call, not at the first next()."""
    with pytest.raises(ValueError, match=r"^size must be greater than 0$"):
        batched([1, 2], 0)
    with pytest.raises(ValueError, match=r"^size must be greater than 0$"):
        abatched([1, 2], 0)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 60), size=st.integers(1, 9), use_async=st.booleans())
def test_that_abatched_batches_sync_and_async_sources(n: int, size: int, use_async: bool) -> None:
    """Test that abatched() yields the same batches as batched() for a sync or an async source."""
    source = CountingSource(n)

    async def main() -> list[list[int]]:
        return [b async for b in abatched(source.agen() if use_async else source, size)]

    assert run_guarded(main()) == list(batched(range(n), size))


def test_that_abatched_rejects_a_non_iterable() -> None:
    """Test that a source that is neither iterable nor async iterable raises TypeError."""
    with pytest.raises(TypeError, match=r"^source must be an iterable or an async iterable$"):
        abatched(42, 3)


# --- process_batches: the stream ----------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 150),
    batch_size=st.integers(1, 10),
    concurrency=st.integers(1, 5),
    ordered=st.booleans(),
    use_async=st.booleans(),
    turns=st.lists(st.integers(0, 6), min_size=1, max_size=20),
    consumer_turns=st.integers(0, 3),
)
def test_that_every_item_is_processed_once_with_bounded_read_ahead(
    n: int,
    batch_size: int,
    concurrency: int,
    ordered: bool,
    use_async: bool,
    turns: list[int],
    consumer_turns: int,
) -> None:
    """Test that results cover every item once (in order if asked), within the concurrency and read-ahead bounds."""
    source = CountingSource(n)
    running = 0
    peak_running = 0
    worst_read_ahead = 0
    snapshots: list[ProgressSnapshot] = []

    async def processor(batch: list[int]) -> list[int]:
        nonlocal running, peak_running
        running += 1
        peak_running = max(peak_running, running)
        try:
            # Batches take different numbers of event-loop turns, so they finish out of order.
            for _ in range(turns[batch[0] % len(turns)]):
                await asyncio.sleep(0)
            return batch
        finally:
            running -= 1

    async def main() -> list[int]:
        nonlocal worst_read_ahead
        out: list[int] = []
        stream = process_batches(
            source.agen() if use_async else source,
            processor,
            batch_size=batch_size,
            concurrency=concurrency,
            ordered=ordered,
            progress=snapshots.append,
            total=n,
        )
        async for result in stream:
            out.extend(result)
            worst_read_ahead = max(worst_read_ahead, source.pulled - len(out))
            for _ in range(consumer_turns):  # a consumer that takes its time
                await asyncio.sleep(0)
        assert _no_other_tasks()
        return out

    out = run_guarded(main())
    if ordered:
        assert out == list(range(n))
    else:
        assert sorted(out) == list(range(n))
    assert peak_running <= concurrency
    assert worst_read_ahead <= concurrency * batch_size + batch_size
    batches = -(-n // batch_size)
    assert [s.done for s in snapshots] == sorted(s.done for s in snapshots)
    assert len(snapshots) == batches
    if n:
        assert (snapshots[-1].done, snapshots[-1].percent) == (n, 100.0)


def test_that_the_source_is_not_read_ahead_of_a_stalled_consumer() -> None:
    """Test that while the consumer holds its first result, at most `concurrency` batches were read."""
    source = CountingSource(1_000_000)

    async def processor(batch: list[int]) -> int:
        await asyncio.sleep(0)
        return len(batch)

    async def main() -> list[int]:
        pulled: list[int] = []
        stream = process_batches(source, processor, batch_size=100, concurrency=4)
        async with contextlib.aclosing(stream):
            async for _ in stream:
                for _ in range(50):  # plenty of turns for every batch in flight to finish
                    await asyncio.sleep(0)
                pulled.append(source.pulled)
                if len(pulled) == 3:
                    break
        return pulled

    # 4 batches of 100 before the first result; one more batch read per result taken.
    assert run_guarded(main()) == [400, 500, 600]


def test_that_unordered_results_come_as_completed() -> None:
    """Test that with ordered=False a later batch that finishes first is handed out first."""

    async def collect(ordered: bool) -> list[int]:
        second_done = asyncio.Event()

        async def processor(batch: list[int]) -> int:
            if batch[0] == 0:
                await second_done.wait()  # the first batch finishes only after the second
            else:
                second_done.set()
            return batch[0]

        stream = process_batches(range(4), processor, batch_size=2, concurrency=2, ordered=ordered)
        return [r async for r in stream]

    assert run_guarded(collect(ordered=False)) == [2, 0]
    assert run_guarded(collect(ordered=True)) == [0, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0, "concurrency": 1}, "^batch_size must be greater than 0$"),
        ({"batch_size": 1, "concurrency": 0}, "^concurrency must be greater than 0$"),
        ({"batch_size": 1, "concurrency": 1, "total": -1}, "^total must not be negative$"),
    ],
)
def test_that_process_batches_checks_its_arguments_up_front(
    kwargs: dict[str, Any], message: str
) -> None:
    """Test that bad sizes raise ValueError at the call, before any iteration."""

    async def processor(batch: list[int]) -> None:
        return None

    with pytest.raises(ValueError, match=message):
        process_batches([1], processor, **kwargs)


# --- process_batches: errors and cleanup --------------------------------------------------------


class BlockingProcessor:
    """Batches starting with `fail_at` raise; all others block until cancelled, which is recorded."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self, batch: list[int]) -> int:
        self.started.append(batch[0])
        if batch[0] == self.fail_at:
            await asyncio.sleep(0)
            raise ValueError(f"batch {batch[0]} is bad")
        if batch[0] == 0:
            return 0  # the first batch succeeds, so a result can be taken
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(batch[0])
            raise
        raise AssertionError("unreachable")


@pytest.mark.parametrize("ordered", [True, False])
def test_that_a_processor_error_propagates_and_cancels_the_batches_in_flight(ordered: bool) -> None:
    """Test that a failing batch raises in the consumer at once and nothing stays running."""
    processor = BlockingProcessor(fail_at=30)

    async def main() -> tuple[list[int], bool]:
        taken: list[int] = []
        with pytest.raises(ValueError, match=r"^batch 30 is bad$"):
            async for r in process_batches(
                range(1000), processor, batch_size=10, concurrency=5, ordered=ordered
            ):
                taken.append(r)
        return taken, _no_other_tasks()

    taken, clean = run_guarded(main())
    assert taken == [0]
    assert clean
    # Batches 10, 20 (blocked before the failure) and 40, 50 (started after) were all cancelled.
    assert sorted(processor.cancelled) == [10, 20, 40, 50]
    assert sorted(processor.started) == [0, 10, 20, 30, 40, 50]


def test_that_an_error_in_the_source_propagates_and_cancels_the_batches_in_flight() -> None:
    """Test that an exception raised by the source reaches the consumer after cleaning up."""
    processor = BlockingProcessor()

    def source() -> Iterator[int]:
        yield from range(40)  # four full batches, then the source fails on the refill
        raise OSError("disk gone")

    async def main() -> tuple[list[int], bool]:
        taken: list[int] = []
        with pytest.raises(OSError, match=r"^disk gone$"):
            async for r in process_batches(source(), processor, batch_size=10, concurrency=4):
                taken.append(r)
        return taken, _no_other_tasks()

    taken, clean = run_guarded(main())
    assert (taken, clean) == ([0], True)
    assert sorted(processor.cancelled) == [10, 20, 30]


def test_that_closing_the_stream_early_cancels_the_batches_in_flight() -> None:
    """Test that aclose() after the first result cancels the running batches and closes the batching."""
    processor = BlockingProcessor()
    source = CountingSource(10_000)

    async def main() -> tuple[int, bool]:
        stream = process_batches(source.agen(), processor, batch_size=10, concurrency=3)
        first = await anext(stream)
        for _ in range(5):  # let the other batches in flight start
            await asyncio.sleep(0)
        await stream.aclose()
        return first, _no_other_tasks()

    first, clean = run_guarded(main())
    assert (first, clean) == (0, True)
    assert sorted(processor.cancelled) == [10, 20]
    assert source.pulled == 30  # three batches in flight, nothing read after the close


def test_that_cancelling_the_consumer_cancels_the_batches_in_flight() -> None:
    """Test that a consumer task cancelled while it waits for a result leaves nothing running."""
    processor = BlockingProcessor()

    async def main() -> bool:
        async def consume() -> None:
            async for _ in process_batches(range(100), processor, batch_size=10, concurrency=3):
                pass

        consumer = asyncio.create_task(consume())
        while len(processor.started) < 4:
            await asyncio.sleep(0)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        return _no_other_tasks()

    assert run_guarded(main())
    assert sorted(processor.cancelled) == [10, 20, 30]
