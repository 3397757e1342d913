"""The worker pool's public records: a failed item, a batch's result, the pool's statistics.

All three are plain, picklable values, so they can travel in XComs or back from other processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = ["BatchResult", "ItemFailure", "PoolStatistics"]

T = TypeVar("T")
R = TypeVar("R")


class ItemFailure(NamedTuple):
    """One item of a batch that could not be processed, isolated from the rest of its batch.

    :param item: the input item itself.
    :param error_type: the exception's class name, or ``"WorkerCrashedError"`` when the worker
        process died on the item, or ``"TaskTimeoutError"`` when it ran past ``task_timeout``.
    :param message: a human-readable message (the exception's ``str``, or what killed the worker).
    :param traceback: the worker's formatted traceback; empty when the worker died.
    :param attempts: tries of the item on its own (1 + the crash retries it got for a crash;
        1 for an exception, a timeout, or an item that cannot be sent to a worker).
    """

    item: Any
    error_type: str
    message: str
    traceback: str
    attempts: int


@dataclass
class BatchResult(Generic[T, R]):
    """What became of one batch: the outputs of every part that succeeded, and the failed items.

    :param outputs: ``fn``'s outputs for every part of the batch that succeeded, in batch order.
    :param failures: one :class:`ItemFailure` per item that failed in isolation, in batch order.
    """

    outputs: list[R] = field(default_factory=list)
    failures: list[ItemFailure] = field(default_factory=list)


class PoolStatistics(NamedTuple):
    """A worker pool's state and counters at one moment.

    :param workers: live worker processes.
    :param busy: workers running a task now.
    :param queued: tasks (calls, batches or parts of failing batches) waiting for a worker.
    :param completed_batches: batches whose future is done (with a result or an error).
    :param crashed_workers: workers that died abruptly while running a task (replaced since).
    :param timeouts: tasks that ran past ``task_timeout`` (their workers were killed and replaced).
    :param splits: times a part of a batch that killed its worker, ran past ``task_timeout`` or
        could not be sent was split to isolate the items at fault (items that raise are isolated
        inside the worker, without a round trip, and are not counted).
    """

    workers: int
    busy: int
    queued: int
    completed_batches: int
    crashed_workers: int
    timeouts: int
    splits: int
