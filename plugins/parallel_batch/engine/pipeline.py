"""A staged pipeline: items stream from stage to stage through bounded queues, each stage with
its own concurrency, so validate, transform, enrich and load overlap instead of waiting for
each other (unlike running every item through stage 1, then every item through stage 2).

::

    source --feeder--> [queue] --stage 1: N workers--> [queue] --stage 2: M workers--> [queue] --> run()
                                   |                               |
                                   +--- failures --> on_failure <--+  (e.g. to a dead-letter table)

* A stage's ``kind`` says how its function runs: ``"async"`` awaits a coroutine function (I/O),
  ``"thread"`` runs a sync function in the stage's own threads (blocking I/O), ``"process"``
  runs a picklable module-level function in a :class:`~parallel_batch.engine.pool.WorkerPool`
  (CPU-bound work; items travel to it in batches).
* A stage's ``concurrency`` is its number of workers: units (items, or batches) in progress at
  once. Each worker takes a unit, calls the function (with the stage's retries), and puts the
  results on the next queue; a full queue makes it wait, and so on back to the source: a slow
  stage stops the source from being read ahead by more than the queues and workers hold.
  Items cross from stage to stage in chunks (the outputs of one unit), so a batch stage pays
  one queue hand-off per batch, not per item.
* A function returning None drops the item (counted as ``dropped``). An item whose function
  still raises after its retries is counted as ``failed`` and reported as a
  :class:`~parallel_batch.engine.retry.FailedItem` with the stage's name, while the rest flow on.
* With ``batch_size`` a stage receives lists of up to ``batch_size`` items (full ones but for the
  last) and returns a list with one result per item (None drops that item) or None (drops them
  all); e.g. a loader writing each batch with one COPY. Counters stay in items.
* Order: by default outputs come as they are ready. With ``ordered=True`` every stage passes its
  results on in the order its units were taken (a worker that finishes early waits for its turn),
  so outputs keep the source's order; the cost is head-of-line blocking behind a slow item, with no
  extra memory (a waiting worker holds only its own results).
* Shutdown: leaving ``run()`` early (break, an exception in the consumer, cancellation) or an
  error in the source, a stage's machinery or ``on_failure`` cancels every stage task and waits
  for the stage threads and the pool it started; the error is re-raised to the consumer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import pickle
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from parallel_batch.engine.retry import (
    FailedItem,
    ItemResult,
    RetryPolicy,
    acall_with_retries,
    apply_with_retries,
    call_with_retries,
)
from parallel_batch.exceptions import StageOutputError

if TYPE_CHECKING:
    from parallel_batch.engine.pool import WorkerPool

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "PROCESS_BATCH_SIZE",
    "FailureCallback",
    "Pipeline",
    "Stage",
    "StageKind",
    "StageStatistics",
]

logger = logging.getLogger(__name__)

# Items buffered between two stages (and before the consumer). Larger: bursts are smoothed and
# workers idle less; smaller: less memory and less of the source read ahead of the slowest stage.
DEFAULT_QUEUE_SIZE = 64

# Items per task that a per-item "process" stage sends to the pool. Larger: the pickling and
# pipe round trip is shared by more items; smaller: finer load balance across workers and less
# work redone when a crash makes the pool split a task.
PROCESS_BATCH_SIZE = 64

StageKind = Literal["async", "thread", "process"]
_KINDS: tuple[StageKind, ...] = ("async", "thread", "process")

FailureCallback = Callable[[FailedItem], Awaitable[object] | object]
"""Called (and awaited when it returns an awaitable) once per failed item, as it fails."""

# A stage without a retry policy tries each item once.
_NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Stage:
    """One named step of a :class:`Pipeline`.

    :param name: unique within the pipeline; it labels counters and failures.
    :param fn: ``fn(item) -> result | None``, or with ``batch_size``
        ``fn(items) -> list[result | None] | None``. A coroutine function for ``kind="async"``, a
        plain function for ``"thread"``, a picklable module-level function for ``"process"``.
    :param concurrency: workers (units in progress at once). Default: 1, or for ``"process"``
        the pool's worker count.
    :param kind: ``"async"``, ``"thread"`` or ``"process"``.
    :param batch_size: hand ``fn`` lists of up to this many items instead of single items.
    :param retry: retries for a failing item (or batch); None: one attempt.
    """

    name: str
    fn: Callable[..., Any]
    _: KW_ONLY
    concurrency: int | None = None
    kind: StageKind = "async"
    batch_size: int | None = None
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("name must be a non-empty string")
        if not callable(self.fn):
            raise ValueError(f"stage {self.name!r}: fn must be callable")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be greater than 0")
        if self.kind not in _KINDS:
            raise ValueError("kind must be one of 'async', 'thread', 'process'")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be greater than 0")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ValueError("retry must be a RetryPolicy or None")
        is_coroutine = inspect.iscoroutinefunction(self.fn)
        if self.kind == "async" and not is_coroutine:
            raise ValueError(
                f"stage {self.name!r}: kind 'async' needs a coroutine function; "
                "use kind='thread' for a plain function"
            )
        if self.kind != "async" and is_coroutine:
            raise ValueError(
                f"stage {self.name!r}: a coroutine function needs kind 'async', not {self.kind!r}"
            )
        if self.kind == "process":
            try:
                pickle.dumps(self.fn)
            except Exception as error:
                raise ValueError(
                    f"stage {self.name!r}: kind 'process' needs a picklable fn "
                    "(a module-level function, or functools.partial of one)"
                ) from error


class StageStatistics(NamedTuple):
    """One stage's counters; once a run is over, ``items_in == items_out + dropped + failed``.

    :param items_in: items the stage took from its input.
    :param items_out: items it passed on.
    :param dropped: items its function returned None for.
    :param failed: items that failed after their retries (reported to ``on_failure``).
    :param seconds: time spent in the stage's function calls, summed over its workers
        (retries and backoff included); divide by the concurrency for a utilisation.
    """

    items_in: int
    items_out: int
    dropped: int
    failed: int
    seconds: float


@dataclass(slots=True)
class _Counters:
    items_in: int = 0
    items_out: int = 0
    dropped: int = 0
    failed: int = 0
    seconds: float = 0.0

    def snapshot(self) -> StageStatistics:
        return StageStatistics(
            self.items_in, self.items_out, self.dropped, self.failed, self.seconds
        )


class _End:
    """The end-of-stream marker on a queue (a class, so that its repr says what it is)."""


_END = _End()


class _Crashed(NamedTuple):
    """Put on the output queue when a stage task died: the consumer re-raises ``error``."""

    error: BaseException


# Calls a stage's function on one unit and answers one ItemResult per item, aligned with it.
_UnitCall = Callable[[list[Any]], Awaitable[list[ItemResult[Any]]]]


class _StageRun:
    """One stage's state during one run: its queues, counters, workers, and turn keeping.

    Queues carry chunks (non-empty lists of items: one unit's outputs), so a batch crosses
    from stage to stage in one hand-off. A stage unpacks the chunks it takes into ``pending``,
    which its workers share and take their units from, one item or one batch at a time.
    """

    def __init__(
        self,
        stage: Stage,
        q_in: asyncio.Queue[Any],
        q_out: asyncio.Queue[Any],
        workers: int,
        unit_size: int,
    ) -> None:
        self.stage = stage
        self.q_in = q_in
        self.q_out = q_out
        self.workers = workers
        self.unit_size = unit_size
        self.counters = _Counters()
        self.call: _UnitCall | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.pending: deque[Any] = deque()
        self.input_ended = False
        self.take_lock = asyncio.Lock()  # one worker at a time takes from pending and q_in
        self.live_workers = workers
        # Turn keeping for ordered runs: units are numbered as they are taken, and their
        # results are passed on in that order.
        self.next_ticket = 0
        self.next_turn = 0
        self.turn_waiters: dict[int, asyncio.Future[None]] = {}

    async def take(self) -> tuple[list[Any], int]:
        """Take the next unit and its ticket; an empty unit once the input has ended.

        One worker at a time takes (the others wait in line for the lock), so a batch fills
        from consecutive items and a worker never waits on the queue while items are pending.
        """
        async with self.take_lock:
            while len(self.pending) < self.unit_size and not self.input_ended:
                chunk = await self.q_in.get()
                if chunk is _END:
                    self.input_ended = True
                else:
                    self.pending.extend(chunk)
            size = min(self.unit_size, len(self.pending))
            values = [self.pending.popleft() for _ in range(size)]
            ticket = self.next_ticket  # taken under the lock: tickets follow the input order
            self.next_ticket += 1
        return values, ticket

    async def wait_turn(self, ticket: int) -> None:
        if ticket != self.next_turn:
            waiter = asyncio.get_running_loop().create_future()
            self.turn_waiters[ticket] = waiter
            await waiter

    def end_turn(self) -> None:
        self.next_turn += 1
        waiter = self.turn_waiters.pop(self.next_turn, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _align(stage: str, items: list[Any], result: ItemResult[Any]) -> list[ItemResult[Any]]:
    """Spread the result of one call on a whole batch over the batch's items."""
    if result.failure is not None:
        return [ItemResult(None, dataclasses.replace(result.failure, item=i)) for i in items]
    outputs = result.value
    if outputs is None:
        return [ItemResult(None)] * len(items)
    if not isinstance(outputs, list) or len(outputs) != len(items):
        got = f"{len(outputs)} results" if isinstance(outputs, list) else type(outputs).__name__
        raise StageOutputError(
            f"stage {stage!r} returned {got} for a batch of {len(items)} items; return a list "
            "with one result per item (None drops an item), or None to drop them all"
        )
    return [ItemResult(output) for output in outputs]


def _items_in_worker(
    fn: Callable[[Any], Any], policy: RetryPolicy, numbered: list[tuple[int, Any]]
) -> list[tuple[int, ItemResult[Any]]]:
    """Worker-pool task of a per-item "process" stage: each item with its retries, numbered."""
    results = apply_with_retries(fn, policy, [item for _, item in numbered])
    return [(index, result) for (index, _), result in zip(numbered, results, strict=True)]


def _batch_in_worker(
    fn: Callable[[list[Any]], Any], policy: RetryPolicy, numbered: list[tuple[int, Any]]
) -> list[tuple[list[int], ItemResult[Any]]]:
    """Worker-pool task of a batch "process" stage: one call on the (part of the) batch."""
    result = call_with_retries(fn, [item for _, item in numbered], policy)
    return [([index for index, _ in numbered], result)]


class Pipeline:
    """Named stages run concurrently over a stream of items, joined by bounded queues.

    ::

        pipeline = Pipeline(
            [
                Stage("validate", validate, kind="thread"),
                Stage("enrich", enrich, concurrency=20, retry=RetryPolicy(max_attempts=5)),
                Stage("load", load_batch, kind="thread", batch_size=1000),
            ],
            on_failure=dead_letters.add,
        )
        async with contextlib.aclosing(pipeline.run(records)) as outputs:
            async for output in outputs:
                ...
        pipeline.statistics()["enrich"].failed

    :param stages: the stages, in order; at least one, names unique.
    :param queue_size: about how many items are buffered before each stage and before the
        consumer (at least one chunk: the outputs of one unit of the stage filling the queue).
    :param pool: the :class:`~parallel_batch.engine.pool.WorkerPool` for ``"process"`` stages;
        when None and one is needed, a pool is started for the run and closed after it.
    :param ordered: pass outputs on in the source's order (see the module docstring).
    :param on_failure: called once per failed item (sync, or async and awaited), e.g. to buffer
        it for a dead-letter table; when None, failures are kept in :attr:`failures`. If it
        raises, the run stops with that error: a failure is never silently lost.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        pool: WorkerPool | None = None,
        ordered: bool = False,
        on_failure: FailureCallback | None = None,
    ) -> None:
        if not stages:
            raise ValueError("stages must not be empty")
        seen: set[str] = set()
        for stage in stages:
            if not isinstance(stage, Stage):
                raise ValueError("stages must be Stage instances")
            if stage.name in seen:
                raise ValueError(f"stage names must be unique; {stage.name!r} appears twice")
            seen.add(stage.name)
        if queue_size < 1:
            raise ValueError("queue_size must be greater than 0")
        self.stages: tuple[Stage, ...] = tuple(stages)
        self.queue_size = queue_size
        self.pool = pool
        self.ordered = ordered
        self.on_failure = on_failure
        self.failures: list[FailedItem] = []
        """Failed items of the last run, when no ``on_failure`` callback was given."""
        self._runs: list[_StageRun] = []
        self._running = False
        self._crashed = False

    def statistics(self) -> dict[str, StageStatistics]:
        """Return each stage's counters (live during a run, final after it), by stage name."""
        if not self._runs:
            return {stage.name: _Counters().snapshot() for stage in self.stages}
        return {run.stage.name: run.counters.snapshot() for run in self._runs}

    async def run(self, source: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
        """Stream ``source`` through the stages and yield the last stage's outputs.

        A sync iterable is read in the event loop, so it should not block (a generator over
        data in memory, a file read in small pieces); give an async iterable for a source that
        waits on I/O. To stop early, close the generator: ``contextlib.aclosing`` does it on
        leaving its block, and the stage tasks are all finished when it is closed.

        :param source: the items, read lazily and only as far ahead as the queues allow.
        :raises RuntimeError: when this pipeline is already running.
        """
        if self._running:
            raise RuntimeError("this pipeline is already running; create another Pipeline")
        self._running = True
        self._crashed = False
        self.failures = []
        tasks: list[asyncio.Task[None]] = []
        own_pool: WorkerPool | None = None
        try:
            pool = self.pool
            if pool is None and any(stage.kind == "process" for stage in self.stages):
                from parallel_batch.engine.pool import WorkerPool

                pool = own_pool = WorkerPool()
            units = [_unit_size(stage) for stage in self.stages]
            # A queue holds chunks of its producer's unit: about queue_size items, at least one chunk.
            queues: list[asyncio.Queue[Any]] = [
                asyncio.Queue(max(1, self.queue_size // unit)) for unit in [units[0], *units]
            ]
            self._runs = [
                self._stage_run(stage, queues[i], queues[i + 1], pool, units[i])
                for i, stage in enumerate(self.stages)
            ]
            output = queues[-1]

            def on_done(task: asyncio.Task[None]) -> None:
                if task.cancelled() or task.exception() is None:
                    return
                self._crash(task, tasks, output)

            tasks.append(
                asyncio.create_task(self._feed(source, queues[0], units[0]), name="feeder")
            )
            for run in self._runs:
                for n in range(run.workers):
                    name = f"stage {run.stage.name!r} worker {n}"
                    tasks.append(asyncio.create_task(self._work(run), name=name))
            for task in tasks:
                task.add_done_callback(on_done)

            while True:
                chunk = await output.get()
                if chunk is _END:
                    break
                if isinstance(chunk, _Crashed):
                    raise chunk.error
                for value in chunk:
                    yield value
        finally:
            try:
                await _cancel_and_wait(tasks)
            finally:
                await self._release(own_pool)

    def _stage_run(
        self,
        stage: Stage,
        q_in: asyncio.Queue[Any],
        q_out: asyncio.Queue[Any],
        pool: WorkerPool | None,
        unit_size: int,
    ) -> _StageRun:
        policy = stage.retry or _NO_RETRY
        if stage.kind == "process":
            assert pool is not None
            workers = stage.concurrency or pool.max_workers
        else:
            workers = stage.concurrency or 1
        run = _StageRun(stage, q_in, q_out, workers, unit_size)

        if stage.kind == "process":
            assert pool is not None
            run.call = functools.partial(_call_in_pool, pool, stage, policy)
            return run

        afn: Callable[[Any], Awaitable[Any]]
        if stage.kind == "thread":
            executor = run.executor = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"stage-{stage.name}"
            )

            def afn(value: Any) -> Awaitable[Any]:
                return asyncio.get_running_loop().run_in_executor(executor, stage.fn, value)

        else:
            afn = stage.fn

        async def call(values: list[Any]) -> list[ItemResult[Any]]:
            if stage.batch_size is None:
                return [await acall_with_retries(afn, values[0], policy)]
            return _align(stage.name, values, await acall_with_retries(afn, values, policy))

        run.call = call
        return run

    async def _feed(
        self, source: Iterable[Any] | AsyncIterable[Any], queue: asyncio.Queue[Any], chunk: int
    ) -> None:
        """Put the source's items on the first queue, in chunks of the first stage's unit."""
        buffer: list[Any] = []
        if isinstance(source, AsyncIterable):
            aiterator = aiter(source)
            try:
                async for item in aiterator:
                    buffer.append(item)
                    if len(buffer) >= chunk:
                        await queue.put(buffer)
                        buffer = []
            finally:
                aclose = getattr(aiterator, "aclose", None)
                if aclose is not None:
                    await aclose()
        else:
            iterator = iter(source)
            try:
                for item in iterator:
                    buffer.append(item)
                    if len(buffer) >= chunk:
                        await queue.put(buffer)
                        buffer = []
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        if buffer:
            await queue.put(buffer)
        await queue.put(_END)

    async def _work(self, run: _StageRun) -> None:
        assert run.call is not None
        counters = run.counters
        name = run.stage.name
        while True:
            values, ticket = await run.take()
            if not values:
                break
            counters.items_in += len(values)
            started = time.perf_counter()
            results = await run.call(values)
            counters.seconds += time.perf_counter() - started
            if self.ordered:
                await run.wait_turn(ticket)
            outputs: list[Any] = []
            for result in results:
                if result.failure is not None:
                    counters.failed += 1
                    await self._report(dataclasses.replace(result.failure, stage=name))
                elif result.value is None:
                    counters.dropped += 1
                else:
                    outputs.append(result.value)
            counters.items_out += len(outputs)
            if outputs:
                await run.q_out.put(outputs)
            if self.ordered:
                run.end_turn()
        run.live_workers -= 1
        if run.live_workers == 0:
            await run.q_out.put(_END)

    async def _report(self, failure: FailedItem) -> None:
        if self.on_failure is None:
            self.failures.append(failure)
            return
        outcome = self.on_failure(failure)
        if inspect.isawaitable(outcome):
            await outcome

    def _crash(
        self, task: asyncio.Task[None], tasks: list[asyncio.Task[None]], output: asyncio.Queue[Any]
    ) -> None:
        """Stop every task after ``task`` raised, and hand its error to the consumer."""
        error = task.exception()
        assert error is not None
        if self._crashed:
            return  # an earlier error is already on its way to the consumer
        self._crashed = True
        logger.error("Pipeline stopped: %s raised %s", task.get_name(), type(error).__name__)
        for other in tasks:
            other.cancel()
        # The cancelled workers can no longer put anything; make room and wake the consumer.
        while not output.empty():
            output.get_nowait()
        output.put_nowait(_Crashed(error))

    async def _release(self, own_pool: WorkerPool | None) -> None:
        """Wait for the stages' threads and close the pool this run started."""
        executors = [run.executor for run in self._runs if run.executor is not None]
        for executor in executors:
            executor.shutdown(wait=False, cancel_futures=True)
        try:
            for executor in executors:
                # A thread cannot be interrupted: wait for the calls already running.
                await asyncio.to_thread(executor.shutdown, wait=True)
        finally:
            if own_pool is not None:
                await _close_pool(own_pool)
            self._running = False


def _unit_size(stage: Stage) -> int:
    """Items a stage's worker takes at a time."""
    if stage.batch_size is not None:
        return stage.batch_size
    return PROCESS_BATCH_SIZE if stage.kind == "process" else 1


async def _call_in_pool(
    pool: WorkerPool, stage: Stage, policy: RetryPolicy, values: list[Any]
) -> list[ItemResult[Any]]:
    """Run one unit of a "process" stage in the pool; crashed items come back as failures."""
    numbered = list(enumerate(values))
    results: list[ItemResult[Any] | None] = [None] * len(values)
    if stage.batch_size is None:
        task: Callable[[list[Any]], list[Any]] = functools.partial(
            _items_in_worker, stage.fn, policy
        )
    else:
        task = functools.partial(_batch_in_worker, stage.fn, policy)
    outcome = await pool.arun_batch(task, numbered)
    if stage.batch_size is None:
        for index, result in outcome.outputs:
            results[index] = result
    else:
        for indexes, result in outcome.outputs:
            part = _align(stage.name, [values[i] for i in indexes], result)
            for index, item_result in zip(indexes, part, strict=True):
                results[index] = item_result
    now = datetime.now(UTC)
    for failure in outcome.failures:
        index, item = failure.item
        results[index] = ItemResult(
            None,
            FailedItem(
                item=item,
                error_type=failure.error_type,
                message=failure.message,
                attempts=failure.attempts,
                first_failed_at=now,
                last_failed_at=now,
                traceback=failure.traceback,
            ),
        )
    missing = [i for i, result in enumerate(results) if result is None]
    if missing:
        raise RuntimeError(f"worker pool returned no result for {len(missing)} items")
    return results  # type: ignore[return-value]


async def _close_pool(pool: WorkerPool) -> None:
    """Close a pool the run started: its batches are done or cancelled, kill what still runs."""
    await asyncio.to_thread(pool.close, cancel_pending=True)


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until all are finished, even if we are cancelled meanwhile."""
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    cancelled = False
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
        pending = {task for task in pending if not task.done()}
    if cancelled:
        raise asyncio.CancelledError
