"""One stage of a :class:`~parallel_batch.engine.pipeline.Pipeline`: what it is (:class:`Stage`)
and its state during one run (:class:`StageRun`): its queues, counters, workers and turns.

A stage's workers share one loop (:meth:`StageRun.work`)::

    q_in (chunks) --take()--> a unit: one item, or batch_size items --fn, with retries-->
        ItemResult per item --> None: dropped | failure: report(...) | value --> q_out (a chunk)

Queues carry chunks (non-empty lists of items: one unit's outputs), so a batch crosses from
stage to stage in one hand-off. In an ordered run a worker passes its outputs on only in its
unit's turn (units are numbered as they are taken).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal, NamedTuple

from parallel_batch.engine.retry import FailedItem, ItemResult, RetryPolicy, acall_with_retries
from parallel_batch.exceptions import StageOutputError

__all__ = ["END", "Report", "Stage", "StageKind", "StageRun", "StageStatistics", "no_statistics"]

StageKind = Literal["async", "thread"]
_KINDS: tuple[StageKind, ...] = ("async", "thread")

# A stage without a retry policy tries each item once.
_NO_RETRY = RetryPolicy(max_attempts=1)

Report = Callable[[FailedItem], Awaitable[None]]
"""Reports one failed item (with its stage's name) to the pipeline."""


@dataclass(frozen=True)
class Stage:
    """One named step of a :class:`~parallel_batch.engine.pipeline.Pipeline`.

    :param name: unique within the pipeline; it labels counters and failures.
    :param fn: ``fn(item) -> result | None``, or with ``batch_size``
        ``fn(items) -> list[result | None] | None``. A coroutine function for ``kind="async"``, a
        plain function for ``"thread"``.
    :param concurrency: workers (units in progress at once); default 1.
    :param kind: ``"async"`` or ``"thread"``.
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
            raise ValueError("kind must be 'async' or 'thread'")
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


END = _End()


def no_statistics() -> StageStatistics:
    """Return the counters of a stage that has not run."""
    return _Counters().snapshot()


class StageRun:
    """One stage's state during one run: its queues, counters, workers and turn keeping.

    A stage unpacks the chunks it takes into ``pending``, which its workers share and take
    their units from, one item or one batch at a time. A ``"thread"`` stage owns a thread pool
    of ``workers`` threads: :meth:`shutdown` waits for it.
    """

    def __init__(
        self, stage: Stage, q_in: asyncio.Queue[Any], q_out: asyncio.Queue[Any], ordered: bool
    ) -> None:
        self.stage = stage
        self.q_in = q_in
        self.q_out = q_out
        self.ordered = ordered
        self.workers = stage.concurrency or 1
        self.unit_size = stage.batch_size or 1
        self.counters = _Counters()
        self.executor: ThreadPoolExecutor | None = None
        if stage.kind == "thread":
            self.executor = ThreadPoolExecutor(self.workers, f"stage-{stage.name}")
        self.pending: deque[Any] = deque()
        self.input_ended = False
        self.take_lock = asyncio.Lock()  # one worker at a time takes from pending and q_in
        self.live_workers = self.workers
        # Turn keeping for ordered runs: units are numbered as they are taken, and their
        # results are passed on in that order.
        self.next_ticket = 0
        self.next_turn = 0
        self.turn_waiters: dict[int, asyncio.Future[None]] = {}

    async def work(self, report: Report) -> None:
        """One worker: take units and pass their outputs on until the input ends."""
        counters = self.counters
        while True:
            values, ticket = await self.take()
            if not values:
                break
            counters.items_in += len(values)
            started = time.perf_counter()
            results = await self.call(values)
            counters.seconds += time.perf_counter() - started
            if self.ordered:
                await self.wait_turn(ticket)
            outputs: list[Any] = []
            for result in results:
                if result.failure is not None:
                    counters.failed += 1
                    await report(dataclasses.replace(result.failure, stage=self.stage.name))
                elif result.value is None:
                    counters.dropped += 1
                else:
                    outputs.append(result.value)
            counters.items_out += len(outputs)
            if outputs:
                await self.q_out.put(outputs)
            if self.ordered:
                self.end_turn()
        self.live_workers -= 1
        if self.live_workers == 0:
            await self.q_out.put(END)

    async def call(self, values: list[Any]) -> list[ItemResult[Any]]:
        """Call the stage's function on one unit: one ItemResult per item, aligned with it."""
        stage, policy = self.stage, self.stage.retry or _NO_RETRY
        if stage.batch_size is None:
            return [await acall_with_retries(self._afn, values[0], policy)]
        return _align(stage.name, values, await acall_with_retries(self._afn, values, policy))

    def _afn(self, value: Any) -> Awaitable[Any]:
        if self.executor is None:
            result: Awaitable[Any] = self.stage.fn(value)
            return result
        return asyncio.get_running_loop().run_in_executor(self.executor, self.stage.fn, value)

    def stop_threads(self) -> None:
        """Stop starting calls in the stage's threads (those running finish)."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def shutdown(self) -> None:
        """Wait for the calls running in the stage's threads: a thread cannot be interrupted."""
        if self.executor is not None:
            await asyncio.to_thread(self.executor.shutdown, wait=True)

    async def take(self) -> tuple[list[Any], int]:
        """Take the next unit and its ticket; an empty unit once the input has ended.

        One worker at a time takes (the others wait in line for the lock), so a batch fills
        from consecutive items and a worker never waits on the queue while items are pending.
        """
        async with self.take_lock:
            while len(self.pending) < self.unit_size and not self.input_ended:
                chunk = await self.q_in.get()
                if chunk is END:
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
