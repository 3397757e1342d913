"""A staged pipeline: items stream from stage to stage through bounded queues, each stage with
its own concurrency, so validate, transform, enrich and load overlap instead of waiting for
each other (unlike running every item through stage 1, then every item through stage 2).

::

    source --feeder--> [queue] --stage 1: N workers--> [queue] --stage 2: M workers--> [queue] --> run()
                                   |                               |
                                   +--- failures --> on_failure <--+  (e.g. to a dead-letter table)

* A stage's ``kind`` says how its function runs: ``"async"`` awaits a coroutine function (I/O),
  ``"thread"`` runs a sync function in the stage's own threads (blocking I/O, or CPU work that
  releases the GIL). CPU-bound Python belongs in a :class:`~parallel_batch.engine.pool.WorkerPool`
  called from a stage (``await pool.arun_batch(...)``).
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
  error in the source, a stage's machinery or ``on_failure`` cancels every stage task, waits for
  the stage threads and closes the source; the error is re-raised to the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple

from parallel_batch.engine.batching import abatched, cancel_and_wait
from parallel_batch.engine.retry import FailedItem
from parallel_batch.engine.stages import (
    END,
    Stage,
    StageKind,
    StageRun,
    StageStatistics,
    no_statistics,
)

__all__ = [
    "DEFAULT_QUEUE_SIZE",
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

FailureCallback = Callable[[FailedItem], Awaitable[object] | object]
"""Called (and awaited when it returns an awaitable) once per failed item, as it fails."""


class _Crashed(NamedTuple):
    """Put on the output queue when a stage task died: the consumer re-raises ``error``."""

    error: BaseException


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
        self.ordered = ordered
        self.on_failure = on_failure
        self.failures: list[FailedItem] = []
        """Failed items of the last run, when no ``on_failure`` callback was given."""
        self._runs: list[StageRun] = []
        self._running = False
        self._crashed = False

    def statistics(self) -> dict[str, StageStatistics]:
        """Return each stage's counters (live during a run, final after it), by stage name."""
        if not self._runs:
            return {stage.name: no_statistics() for stage in self.stages}
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
        try:
            units = [stage.batch_size or 1 for stage in self.stages]
            # A queue holds chunks of its producer's unit: about queue_size items, at least one chunk.
            queues: list[asyncio.Queue[Any]] = [
                asyncio.Queue(max(1, self.queue_size // unit)) for unit in [units[0], *units]
            ]
            self._runs = [
                StageRun(stage, queues[i], queues[i + 1], self.ordered)
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
                    tasks.append(asyncio.create_task(run.work(self._report), name=name))
            for task in tasks:
                task.add_done_callback(on_done)

            while True:
                chunk = await output.get()
                if chunk is END:
                    break
                if isinstance(chunk, _Crashed):
                    raise chunk.error
                for value in chunk:
                    yield value
        finally:
            try:
                await cancel_and_wait(tasks)
            finally:
                await self._release()

    async def _feed(
        self, source: Iterable[Any] | AsyncIterable[Any], queue: asyncio.Queue[Any], chunk: int
    ) -> None:
        """Put the source's items on the first queue, in chunks of the first stage's unit."""
        async with contextlib.aclosing(abatched(source, chunk)) as chunks:
            async for items in chunks:
                await queue.put(items)
        await queue.put(END)

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

    async def _release(self) -> None:
        """Wait for the stages' threads."""
        for run in self._runs:
            run.stop_threads()
        try:
            for run in self._runs:
                await run.shutdown()
        finally:
            self._running = False
