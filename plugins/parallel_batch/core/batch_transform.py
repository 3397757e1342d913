"""Transform batches of rows that the caller holds, in a worker pool or in this process.

The row path, for rows already in hand (the replay of dead letters); the table runner instead
sends workers key ranges to read themselves (``batch_work``). A batch goes to the pool whole,
with the transform wrapped in :func:`transform_in_worker`::

    worker: row_isolation.transform_rows(fn, batch)   fn(batch) vectorised; on a raise each
        |                                             row alone, failing rows retried in rounds
        v                                             (no round trip through the pool)
    one entry per row: its output, or its FailedRow
        |
    a row that kills its worker or hangs: the pool splits the batch in halves down to it and
    reports it as an ItemFailure (WorkerCrashedError / TaskTimeoutError); not retried again

A transform that returns another number of rows than it was given fails that call with a
:class:`~parallel_batch.exceptions.TransformOutputError`, so the rows it loses are isolated like
rows that raise and end in the dead letters: never silently missing from the target.

Without a pool, the transform runs in this process: fast for cheap transforms, but a row that
crashes the process (``os._exit``, a segfault) takes the attempt down with it; its resume then
fails on the same row again. Use a pool for transforms that can crash.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future
from typing import Any

from parallel_batch.core.row_isolation import (
    DEFAULT_RETRY,
    BatchFunction,
    FailedRow,
    Row,
    TransformedBatch,
    checked_batch,
    one_row,
    transform_rows,
)
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.retry import RetryPolicy
from parallel_batch.engine.workers.records import BatchResult

__all__ = [
    "DEFAULT_RETRY",
    "BatchFunction",
    "BatchTransformer",
    "FailedRow",
    "Row",
    "TransformedBatch",
    "checked_batch",
    "one_row",
    "transform_in_worker",
]

_Handle = Future[BatchResult[Row, Any]] | list[Row]


def transform_in_worker(fn: BatchFunction, policy: RetryPolicy, rows: list[Row]) -> list[Any]:
    """Transform ``rows`` in a worker: one entry per row, its output or its :class:`FailedRow`
    (aligned with ``rows``, so the pool can split a batch that crashes its worker)."""
    isolated = transform_rows(fn, rows, policy)
    if not isolated.failures:
        return isolated.outputs
    return [isolated.failures.get(i, out) for i, out in enumerate(isolated.outputs)]


class BatchTransformer:
    """Transforms batches in a :class:`WorkerPool` (when given) or in this process.

    :param fn: the picklable batch function.
    :param pool: the worker pool, or None to run in this process.
    :param retry: the attempts each failing row gets in all.
    """

    def __init__(
        self,
        fn: BatchFunction,
        *,
        pool: WorkerPool | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        if not callable(fn):
            raise TypeError("the transform must be callable")
        self._fn = fn
        self._pool = pool
        self._retry = retry
        self._in_worker = functools.partial(transform_in_worker, fn, retry)

    @property
    def slots(self) -> int:
        """How many batches are worth keeping in flight at once (the pool's workers, or 1)."""
        return self._pool.max_workers if self._pool is not None else 1

    def submit(self, batch: list[Row]) -> _Handle:
        """Start a batch: a future in the pool, or the batch itself in process."""
        if self._pool is not None:
            return self._pool.submit_batch(self._in_worker, batch)
        return batch

    def collect(self, handle: _Handle) -> TransformedBatch:
        """Finish a batch started by :meth:`submit`."""
        if isinstance(handle, list):
            return transform_rows(self._fn, handle, self._retry).transformed()
        result = handle.result()
        outputs: list[Row] = []
        failures: list[FailedRow] = []
        for entry in result.outputs:
            if type(entry) is FailedRow:
                failures.append(entry)
            else:
                outputs.append(entry)
        for failure in result.failures:  # killed its worker or hung: isolated by the pool
            failures.append(
                FailedRow(failure.item, failure.error_type, failure.message, failure.attempts)
            )
        return TransformedBatch(outputs, failures)

    def transform(self, batch: list[Row]) -> TransformedBatch:
        """Transform one batch, waiting for it."""
        return self.collect(self.submit(batch))
