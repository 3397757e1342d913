"""Tests of the staged pipeline: output equals the sequential composition of its stages, exact
per-stage counters, failures with their stage name, bounded queues, order, and clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.engine.pipeline import Pipeline, Stage, StageStatistics
from parallel_batch.engine.retry import FailedItem, RetryPolicy
from parallel_batch.exceptions import StageOutputError

# -- helpers ---------------------------------------------------------------------------------


def collect(pipeline: Pipeline, source: Any) -> list[Any]:
    """Run the pipeline to the end in a fresh event loop and return its outputs."""

    async def run() -> list[Any]:
        return [output async for output in pipeline.run(source)]

    return asyncio.run(run())


def stray_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of the running loop other than the current one."""
    return asyncio.all_tasks() - {asyncio.current_task()}


async def spin(steps: int = 200) -> None:
    """Let every other task run until it blocks."""
    for _ in range(steps):
        await asyncio.sleep(0)


# Pure per-item functions the property test composes: each maps an int to an int, to None
# (dropped), or raises (failed).
def add_three(x: int) -> int | None:
    return x + 3


def drop_multiples_of_three(x: int) -> int | None:
    return None if x % 3 == 0 else x


def halve_evens_drop_odds(x: int) -> int | None:
    return x // 2 if x % 2 == 0 else None


def fail_on_multiples_of_five(x: int) -> int | None:
    if x % 5 == 0:
        raise ValueError(f"multiple of five: {x}")
    return x * 2


STEPS: dict[str, Callable[[int], int | None]] = {
    f.__name__: f
    for f in (add_three, drop_multiples_of_three, halve_evens_drop_odds, fail_on_multiples_of_five)
}


def make_stage(index: int, step: str, kind: str, concurrency: int, batch_size: int | None) -> Stage:
    """A stage applying STEPS[step], as an async or thread stage, per item or per batch."""
    f = STEPS[step]
    name = f"s{index}-{step}"
    if batch_size is not None:

        def on_batch(items: list[int]) -> list[int | None]:
            return [f(x) for x in items]

        if kind == "thread":
            return Stage(
                name, on_batch, kind="thread", concurrency=concurrency, batch_size=batch_size
            )

        async def aon_batch(items: list[int]) -> list[int | None]:
            await asyncio.sleep(0)
            return on_batch(items)

        return Stage(name, aon_batch, concurrency=concurrency, batch_size=batch_size)
    if kind == "thread":
        return Stage(name, f, kind="thread", concurrency=concurrency)

    async def afn(x: int) -> int | None:
        for _ in range(x % 3):  # uneven durations, so workers overtake each other
            await asyncio.sleep(0)
        return f(x)

    return Stage(name, afn, concurrency=concurrency)


def sequential(
    stages: list[tuple[str, int | None]], items: list[int]
) -> tuple[list[int], dict[int, StageStatistics], Counter[tuple[int, int]]]:
    """The reference: apply the steps one after the other; outputs, counters and failures."""
    stats: dict[int, StageStatistics] = {}
    failures: Counter[tuple[int, int]] = Counter()
    current = items
    for index, (step, _) in enumerate(stages):
        survivors: list[int] = []
        dropped = failed = 0
        for x in current:
            try:
                y = STEPS[step](x)
            except ValueError:
                failed += 1
                failures[(index, x)] += 1
                continue
            if y is None:
                dropped += 1
            else:
                survivors.append(y)
        stats[index] = StageStatistics(len(current), len(survivors), dropped, failed, 0.0)
        current = survivors
    return current, stats, failures


stage_specs = st.lists(
    st.tuples(
        st.sampled_from(sorted(STEPS)),
        st.sampled_from(["async", "thread"]),
        st.integers(1, 4),
        st.one_of(st.none(), st.integers(1, 5)),
    ),
    min_size=1,
    max_size=4,
).map(
    # A step that raises is kept per item: a failing batch fails all its items, and how items
    # are grouped into batches is not part of the contract.
    lambda specs: [
        (step, kind, conc, None if step == "fail_on_multiples_of_five" else batch)
        for step, kind, conc, batch in specs
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.integers(-50, 200), max_size=60),
    specs=stage_specs,
    ordered=st.booleans(),
    queue_size=st.integers(1, 4),
    async_source=st.booleans(),
)
def test_that_output_equals_the_sequential_composition_of_the_stages(
    items: list[int],
    specs: list[tuple[str, str, int, int | None]],
    ordered: bool,
    queue_size: int,
    async_source: bool,
) -> None:
    """Test that outputs, per-stage counters and failures match running the steps in sequence."""
    stages = [make_stage(i, *spec) for i, spec in enumerate(specs)]
    failures: list[FailedItem] = []
    pipeline = Pipeline(stages, queue_size=queue_size, ordered=ordered, on_failure=failures.append)

    async def agen() -> AsyncIterator[int]:
        for item in items:
            yield item

    outputs = collect(pipeline, agen() if async_source else iter(items))

    expected, expected_stats, expected_failures = sequential(
        [(step, batch) for step, _, _, batch in specs], items
    )
    assert Counter(outputs) == Counter(expected)
    if ordered:
        assert outputs == expected
    statistics = pipeline.statistics()
    assert list(statistics) == [stage.name for stage in stages]
    for index, stage in enumerate(stages):
        assert statistics[stage.name][:4] == expected_stats[index][:4]
    names: dict[str | None, int] = {stage.name: index for index, stage in enumerate(stages)}
    assert Counter((names[f.stage], f.item) for f in failures) == expected_failures
    assert pipeline.failures == []  # the callback got them instead


# -- counters, drops, failures, retries ------------------------------------------------------


def test_that_counters_are_exact_for_a_simple_pipeline() -> None:
    """Test that in, out, dropped and failed are counted per stage and seconds accumulate."""

    async def validate(x: int) -> int | None:
        return None if x < 0 else x

    def transform(x: int) -> int:
        if x == 4:
            raise ValueError("four is not allowed")
        return x * 100

    pipeline = Pipeline(
        [Stage("validate", validate, concurrency=2), Stage("transform", transform, kind="thread")]
    )
    outputs = collect(pipeline, [-2, -1, 0, 1, 2, 3, 4, 5])
    assert sorted(outputs) == [0, 100, 200, 300, 500]
    stats = pipeline.statistics()
    assert stats["validate"][:4] == (8, 6, 2, 0)
    assert stats["transform"][:4] == (6, 5, 0, 1)
    assert stats["transform"].seconds > 0
    [failure] = pipeline.failures
    assert (failure.stage, failure.item, failure.error_type) == ("transform", 4, "ValueError")
    assert failure.message == "four is not allowed"
    assert failure.attempts == 1


def test_that_statistics_before_a_run_are_zero() -> None:
    """Test that statistics() names every stage with zero counters before the first run."""

    async def same(x: int) -> int:
        return x

    pipeline = Pipeline([Stage("a", same), Stage("b", same)])
    assert pipeline.statistics() == {
        "a": StageStatistics(0, 0, 0, 0, 0.0),
        "b": StageStatistics(0, 0, 0, 0, 0.0),
    }


def test_that_a_failing_item_is_reported_with_its_stage_while_the_rest_flow_on() -> None:
    """Test that an async on_failure callback gets each failure, labelled, as it happens."""
    reported: list[FailedItem] = []

    async def dead_letters(failure: FailedItem) -> None:
        await asyncio.sleep(0)
        reported.append(failure)

    async def enrich(x: int) -> int:
        if x % 4 == 0:
            raise ConnectionError(f"no answer for {x}")
        return x + 1000

    pipeline = Pipeline(
        [Stage("enrich", enrich, concurrency=3, retry=RetryPolicy(max_attempts=2, base_delay=0))],
        on_failure=dead_letters,
    )
    outputs = collect(pipeline, range(10))
    assert sorted(outputs) == [1001, 1002, 1003, 1005, 1006, 1007, 1009]
    assert sorted(f.item for f in reported) == [0, 4, 8]
    assert {(f.stage, f.error_type, f.attempts) for f in reported} == {
        ("enrich", "ConnectionError", 2)
    }
    assert pipeline.statistics()["enrich"].failed == 3


def test_that_a_stage_retry_policy_rescues_flaky_items() -> None:
    """Test that an item failing once succeeds on its retry and is not counted failed."""
    calls: Counter[int] = Counter()

    def flaky(x: int) -> int:
        calls[x] += 1
        if calls[x] == 1 and x % 2:
            raise TimeoutError("try again")
        return x

    pipeline = Pipeline([Stage("flaky", flaky, kind="thread", retry=RetryPolicy(base_delay=0))])
    assert sorted(collect(pipeline, range(6))) == list(range(6))
    assert pipeline.statistics()["flaky"][:4] == (6, 6, 0, 0)
    assert calls == Counter({0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2})


def test_that_a_batch_stage_gets_lists_and_a_failing_batch_fails_its_items() -> None:
    """Test that batch stages receive lists of at most batch_size, and a raise fails the batch."""
    seen: list[list[int]] = []

    def load(batch: list[int]) -> list[int] | None:
        seen.append(list(batch))
        if 7 in batch:
            raise RuntimeError("duplicate key")
        return None  # written; nothing to pass on

    pipeline = Pipeline([Stage("load", load, kind="thread", batch_size=4)])
    assert collect(pipeline, range(10)) == []
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert pipeline.statistics()["load"][:4] == (10, 0, 6, 4)
    assert sorted(f.item for f in pipeline.failures) == [4, 5, 6, 7]
    assert {f.message for f in pipeline.failures} == {"duplicate key"}


@pytest.mark.parametrize("result", [[1], (1, 2), 5])
def test_that_a_batch_stage_returning_a_misaligned_result_stops_the_run(result: object) -> None:
    """Test that a batch result that is not None nor one result per item raises StageOutputError."""

    def bad(batch: list[int]) -> object:
        return result

    pipeline = Pipeline([Stage("load", bad, kind="thread", batch_size=2)])
    with pytest.raises(StageOutputError, match=r"^stage 'load' returned .* for a batch of 2 items"):
        collect(pipeline, [1, 2])


# -- order --------------------------------------------------------------------------------


def test_that_ordered_runs_keep_the_source_order_behind_a_slow_item() -> None:
    """Test that with ordered=True a slow first item does not let later items overtake it."""

    async def run() -> tuple[list[int], list[int]]:
        finished: list[int] = []
        others_done = asyncio.Event()

        async def work(x: int) -> int:
            if x == 0:
                await others_done.wait()  # item 0 finishes last
            finished.append(x)
            if len(finished) == 4:
                others_done.set()
            return x

        pipeline = Pipeline([Stage("work", work, concurrency=5)], ordered=True)
        outputs = [x async for x in pipeline.run(range(5))]
        return finished, outputs

    finished, outputs = asyncio.run(run())
    assert finished[-1] == 0  # it really was overtaken inside the stage
    assert outputs == [0, 1, 2, 3, 4]


def test_that_unordered_runs_pass_fast_items_on_first() -> None:
    """Test that without ordered a slow item does not hold the others back."""

    async def run() -> list[int]:
        others_done = asyncio.Event()
        done = 0

        async def work(x: int) -> int:
            nonlocal done
            if x == 0:
                await others_done.wait()
            done += 1
            if done == 4:
                others_done.set()
            return x

        pipeline = Pipeline([Stage("work", work, concurrency=5)])
        return [x async for x in pipeline.run(range(5))]

    assert asyncio.run(run())[-1] == 0


# -- backpressure ----------------------------------------------------------------------------


def test_that_a_slow_last_stage_stops_the_source_from_being_read_ahead() -> None:
    """Test that a blocked last stage stops an endless source at the queues' and workers' capacity."""
    queue_size = 3

    async def run() -> tuple[int, int, int]:
        read = 0

        def endless() -> Iterator[int]:
            nonlocal read
            while True:
                read += 1
                yield read

        gate = asyncio.Event()

        async def fast(x: int) -> int:
            return x

        async def slow(batch: list[int]) -> list[int]:
            await gate.wait()
            return batch

        pipeline = Pipeline(
            [
                Stage("fast", fast, concurrency=2),
                Stage("slow", slow, concurrency=2, batch_size=5),
            ],
            queue_size=queue_size,
        )
        async with contextlib.aclosing(pipeline.run(endless())) as outputs:
            gate.set()
            first = await anext(outputs)
            gate.clear()  # from now on the last stage stalls
            await spin()
            read_when_stalled = read
            await spin()
            return first, read_when_stalled, read

    first, read_when_stalled, read_later = asyncio.run(run())
    assert first == 1
    # Queues hold about queue_size items, at least one chunk of their producer's unit: 3 before
    # fast, 3 before slow, one batch of 5 before the consumer. Plus fast's 2 workers holding 1
    # each, slow's 2 workers holding 5 each, the feeder's item in hand, and the batch the first
    # output came in.
    bound = 3 + 3 + 5 + 2 * 1 + 2 * 5 + 1 + 5
    assert read_when_stalled <= bound
    assert read_later == read_when_stalled  # stalled, not merely slow


def test_that_a_consumer_that_does_not_read_stops_the_source() -> None:
    """Test that a consumer pausing between outputs stops the pipeline from reading on."""

    async def run() -> int:
        read = 0

        async def endless() -> AsyncIterator[int]:
            nonlocal read
            while True:
                read += 1
                yield read

        def same(x: int) -> int:
            return x

        pipeline = Pipeline([Stage("same", same, kind="thread")], queue_size=2)
        async with contextlib.aclosing(pipeline.run(endless())) as outputs:
            await anext(outputs)
            for _ in range(20):  # thread hand-offs need real time, not just loop turns
                await asyncio.sleep(0.01)
            return read

    # Two queues of 2, one worker holding 1, one in the feeder's hand, one already yielded.
    assert asyncio.run(run()) <= 2 * 2 + 1 + 1 + 1


# -- shutdown ------------------------------------------------------------------------------


def test_that_an_exception_in_the_consumer_stops_every_stage() -> None:
    """Test that leaving the loop with an error cancels all stage tasks and closes the source."""
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(1_000_000)
        finally:
            closed.set()

    async def slow(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def run() -> set[asyncio.Task[Any]]:
        pipeline = Pipeline([Stage("a", slow, concurrency=3), Stage("b", slow, concurrency=2)])
        with pytest.raises(KeyError, match="consumer bug"):
            async with contextlib.aclosing(pipeline.run(source())) as outputs:
                async for x in outputs:
                    if x == 10:
                        raise KeyError("consumer bug")
        return stray_tasks()

    assert asyncio.run(run()) == set()
    assert closed.is_set()


def test_that_cancelling_the_consumer_leaves_nothing_running() -> None:
    """Test that cancellation cancels every stage task and waits for running stage threads."""
    running = 0
    lock = threading.Lock()

    def blocking(x: int) -> int:
        nonlocal running
        with lock:
            running += 1
        time.sleep(0.05)
        with lock:
            running -= 1
        return x

    async def run() -> tuple[set[asyncio.Task[Any]], int]:
        pipeline = Pipeline([Stage("io", blocking, kind="thread", concurrency=4)])

        async def consume() -> None:
            async for _ in pipeline.run(range(1000)):
                pass

        task = asyncio.create_task(consume())
        while running == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return stray_tasks(), running

    tasks, still_running = asyncio.run(run())
    assert tasks == set()
    assert still_running == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("stage-io")]


def test_that_an_error_in_the_source_reaches_the_consumer() -> None:
    """Test that the source's own exception is raised by run() and no task is left behind."""

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("connection to the source lost")

    async def same(x: int) -> int:
        return x

    async def run() -> set[asyncio.Task[Any]]:
        pipeline = Pipeline([Stage("a", same), Stage("b", same)])
        with pytest.raises(OSError, match=r"^connection to the source lost$"):
            async for _ in pipeline.run(source()):
                pass
        return stray_tasks()

    assert asyncio.run(run()) == set()


def test_that_a_failing_failure_callback_stops_the_run() -> None:
    """Test that an on_failure that raises stops the run with its error: no failure is lost."""

    def reject(failure: FailedItem) -> None:
        raise ConnectionRefusedError("dead-letter table unreachable")

    async def boom(x: int) -> int:
        raise ValueError("bad")

    pipeline = Pipeline([Stage("a", boom)], on_failure=reject)
    with pytest.raises(ConnectionRefusedError, match="dead-letter table unreachable"):
        collect(pipeline, range(5))


def test_that_a_pipeline_cannot_run_twice_at_once_but_can_run_again() -> None:
    """Test that a second concurrent run() raises RuntimeError, and a later run starts afresh."""

    async def same(x: int) -> int:
        return x

    pipeline = Pipeline([Stage("a", same)])

    async def run() -> list[int]:
        async with contextlib.aclosing(pipeline.run(range(100))) as first:
            await anext(first)
            with pytest.raises(RuntimeError, match="already running"):
                await anext(pipeline.run(range(3)))
        return [x async for x in pipeline.run(range(3))]

    assert asyncio.run(run()) == [0, 1, 2]
    assert pipeline.statistics()["a"][:2] == (3, 3)


# -- validation ----------------------------------------------------------------------------


async def _coro(x: int) -> int:
    return x


def _plain(x: int) -> int:
    return x


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "fn": _coro}, r"^name must be a non-empty string$"),
        ({"name": "a", "fn": 3}, r"^stage 'a': fn must be callable$"),
        ({"name": "a", "fn": _coro, "concurrency": 0}, r"^concurrency must be greater than 0$"),
        ({"name": "a", "fn": _coro, "kind": "process"}, r"^kind must be 'async' or 'thread'$"),
        ({"name": "a", "fn": _coro, "batch_size": 0}, r"^batch_size must be greater than 0$"),
        ({"name": "a", "fn": _coro, "retry": 3}, r"^retry must be a RetryPolicy or None$"),
        ({"name": "a", "fn": _plain}, r"^stage 'a': kind 'async' needs a coroutine function"),
        (
            {"name": "a", "fn": _coro, "kind": "thread"},
            r"^stage 'a': a coroutine function needs kind 'async'",
        ),
    ],
)
def test_that_invalid_stages_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    """Test that each invalid Stage argument raises ValueError with its exact message."""
    with pytest.raises(ValueError, match=message):
        Stage(**kwargs)


@pytest.mark.parametrize(
    ("stages", "kwargs", "message"),
    [
        ([], {}, r"^stages must not be empty$"),
        (
            [Stage("a", _coro), Stage("a", _coro)],
            {},
            r"^stage names must be unique; 'a' appears twice$",
        ),
        ([Stage("a", _coro)], {"queue_size": 0}, r"^queue_size must be greater than 0$"),
    ],
)
def test_that_invalid_pipelines_are_rejected(
    stages: list[Stage], kwargs: dict[str, Any], message: str
) -> None:
    """Test that an empty pipeline, duplicate names and a bad queue_size raise ValueError."""
    with pytest.raises(ValueError, match=message):
        Pipeline(stages, **kwargs)
