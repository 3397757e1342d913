"""Batching with backpressure: cut any (async) iterable into batches and process a few at a time.

:func:`process_batches` keeps a window of at most ``concurrency`` batches that were read from the
source and not yet handed to the consumer, whether they are still running or already finished::

    source --abatched--> [ batch | batch | ... ]  <= concurrency started, not yet taken
                              |        |
                          processor  processor      (asyncio tasks)
                              |        |
                              +--------+--> consumer: `async for result in process_batches(...)`

The source is read only to refill that window, after the consumer took a result, so it is never
more than ``concurrency`` batches ahead of the consumer and memory stays flat for any input size;
results stream out one per batch, in source order or as completed. A failing batch (or source)
raises in the consumer at once, and every batch still in flight is cancelled and awaited before the
error leaves, so nothing is left running; closing the generator early cleans up the same way.

A plain (synchronous) iterable is read in the event loop's thread: a source that blocks (a
database cursor, a file on slow storage) should be given as an async iterable instead.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from itertools import islice
from typing import Any, TypeVar

from parallel_batch.engine.progress import ProgressCallback, ProgressTracker

__all__ = ["abatched", "batched", "cancel_and_wait", "process_batches"]

T = TypeVar("T")
R = TypeVar("R")


def batched(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of ``size`` items from ``iterable`` (the last one may be shorter), lazily.

    :param iterable: any iterable; it is read only as far as the batches taken so far need.
    :param size: items per batch.
    """
    if size <= 0:
        raise ValueError("size must be greater than 0")
    return _batched(iter(iterable), size)


def _batched(iterator: Iterator[T], size: int) -> Iterator[list[T]]:
    while batch := list(islice(iterator, size)):
        yield batch


def abatched(source: Iterable[T] | AsyncIterable[T], size: int) -> AsyncGenerator[list[T], None]:
    """Yield lists of ``size`` items from an iterable or an async iterable, lazily; closing the
    batches (``aclose``) closes a generator source too.

    :param source: an async iterable, or a plain iterable (read in the event loop's thread).
    :param size: items per batch.
    """
    if size <= 0:
        raise ValueError("size must be greater than 0")
    if isinstance(source, AsyncIterable):
        return _abatched_async(source, size)
    if isinstance(source, Iterable):
        return _abatched_sync(source, size)
    raise TypeError("source must be an iterable or an async iterable")


async def _abatched_sync(source: Iterable[T], size: int) -> AsyncGenerator[list[T], None]:
    iterator = iter(source)
    try:
        for batch in _batched(iterator, size):
            yield batch
    finally:  # closing the batches closes a generator source at once, not at its collection
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


async def _abatched_async(source: AsyncIterable[T], size: int) -> AsyncGenerator[list[T], None]:
    iterator = aiter(source)
    batch: list[T] = []
    try:
        async for item in iterator:
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def process_batches(
    source: Iterable[T] | AsyncIterable[T],
    processor: Callable[[list[T]], Awaitable[R]],
    *,
    batch_size: int,
    concurrency: int,
    ordered: bool = True,
    progress: ProgressCallback | None = None,
    total: int | None = None,
) -> AsyncGenerator[R, None]:
    """Process ``source`` in batches, at most ``concurrency`` at once, and stream out one result per batch.

    :param source: the items, as an iterable or an async iterable; read lazily, with backpressure.
    :param processor: an async callable taking one batch (a list) and returning its result.
    :param batch_size: items per batch.
    :param concurrency: the most batches read and not yet taken by the consumer (running or done).
    :param ordered: hand results out in source order (True) or as soon as each batch finishes.
    :param progress: called with a :class:`ProgressSnapshot` after each batch is processed.
    :param total: items expected in all, for the percent and ETA of the progress snapshots.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be greater than 0")
    if concurrency <= 0:
        raise ValueError("concurrency must be greater than 0")
    if total is not None and total < 0:
        raise ValueError("total must not be negative")
    batches = abatched(source, batch_size)
    return _stream(batches, processor, concurrency, ordered, progress, total)


async def _stream(
    batches: AsyncGenerator[list[T], None],
    processor: Callable[[list[T]], Awaitable[R]],
    concurrency: int,
    ordered: bool,
    progress: ProgressCallback | None,
    total: int | None,
) -> AsyncGenerator[R, None]:
    loop = asyncio.get_running_loop()
    # Only the callback sees the snapshots: logging is the caller's choice (ProgressTracker).
    tracker = ProgressTracker(total, log_interval=math.inf)
    window: deque[asyncio.Task[R]] = deque()  # started and not yet taken, in source order
    finished: deque[asyncio.Task[R]] = deque()  # unordered mode: succeeded, in completion order
    failed: list[asyncio.Task[R]] = []  # failed or cancelled from outside: raised at once
    wakeup: asyncio.Future[None] | None = None

    async def run(batch: list[T]) -> R:
        result = await processor(batch)
        if progress is not None:
            progress(tracker.advance(len(batch)))
        return result

    def on_done(task: asyncio.Task[R]) -> None:
        # task.exception() also marks the error as retrieved: no "never retrieved" noise.
        if task.cancelled() or task.exception() is not None:
            failed.append(task)
        elif not ordered:
            finished.append(task)
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    try:
        exhausted = False
        while True:
            if failed:
                failed[0].result()  # raises the batch's error
            while not exhausted and len(window) < concurrency:
                batch = await anext(batches, None)
                if batch is None:
                    exhausted = True
                else:
                    task = loop.create_task(run(batch))
                    task.add_done_callback(on_done)
                    window.append(task)
            if not window:
                return
            while True:
                if failed:
                    failed[0].result()
                if ordered and window[0].done():
                    task = window.popleft()
                    break
                if not ordered and finished:
                    task = finished.popleft()
                    window.remove(task)
                    break
                wakeup = loop.create_future()
                await wakeup
            yield task.result()
    finally:
        await cancel_and_wait(window)
        await batches.aclose()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished, even if we are cancelled meanwhile
    (then raise CancelledError once they have)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    interrupted = False
    while pending := [task for task in tasks if not task.done()]:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
