"""The worker pool's bookkeeping: which parts of which batch are done, and what to do after a failure.

A submitted batch is a :class:`Job`. It starts as one :class:`Task` covering the whole batch;
a task that fails is retried or split, so a job is always a set of contiguous, non-overlapping
slices of its batch. When the last slice is settled, the job's future gets the outputs of its
slices in batch order, and the items that failed alone::

    [0, 5000) --crash--> retry (crash_retries times) --crash--> [0, 2500) + [2500, 5000)
    [2500, 5000) --crash--> [2500, 3750) + [3750, 5000) ... [4711, 4712) --crash--> ItemFailure
    a task that raised (isolate_errors=True) is split in halves at once, without a retry
    a task past task_timeout is split into single items at once, each with the full timeout

How wide a split is follows what a failed run costs. A crash costs a worker restart (tens of
milliseconds) and a raise costs nothing, so halving, which re-runs the fewest items, wins: one
poison item among n costs about ``crash_retries + log2(n)`` failed runs, and about 2n items
are run in all. A timeout costs the whole ``task_timeout`` (often minutes), so ``log2(n)`` of
them in a row would cost more than running the n items one per task: that is done instead, and
only the items that hang alone cost a timeout each (in parallel across the workers).
"""

from __future__ import annotations

import itertools
import logging
import reprlib
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from parallel_batch.engine.workers.process import (
    Completed,
    Died,
    Outcome,
    Raised,
    TimedOut,
    describe_exit,
)
from parallel_batch.engine.workers.records import BatchResult, ItemFailure
from parallel_batch.exceptions import TaskTimeoutError, WorkerCrashedError

__all__ = ["Job", "JobLedger", "Task", "TaskQueue", "short_repr"]

logger = logging.getLogger(__name__)

# Longest repr of an item in messages and logs. Longer: easier to recognise the item;
# shorter: less of a row's (possibly private) contents in logs.
ITEM_REPR_LIMIT = 80
_repr = reprlib.Repr()
_repr.maxstring = ITEM_REPR_LIMIT
_repr.maxother = ITEM_REPR_LIMIT


def short_repr(item: Any) -> str:
    """Return ``repr(item)`` cut to about :data:`ITEM_REPR_LIMIT` characters, never raising."""
    try:
        text = _repr.repr(item)
    except Exception:
        return f"<{type(item).__name__} object with a failing repr>"
    if len(text) > ITEM_REPR_LIMIT:
        text = text[: ITEM_REPR_LIMIT - 3] + "..."
    return text


@dataclass(eq=False)
class Job:
    """One submitted batch: its function, items, future, and the results of its settled slices."""

    fn_bytes: bytes
    items: list[Any]
    future: Future[Any]  # of BatchResult
    isolate_errors: bool
    outputs: dict[int, list[Any]] = field(default_factory=dict)  # slice start -> outputs
    failures: dict[int, ItemFailure] = field(default_factory=dict)  # item index -> failure
    unsettled: int = 1  # slices queued or running
    started: bool = False
    finished: bool = False


@dataclass(frozen=True, eq=False)
class Task:
    """A contiguous slice ``[start, stop)`` of a job's batch, to be run by one worker.

    :param failed_runs: runs that included these items and failed (crash, timeout or raise).
    :param crashes: runs that included these items and killed the worker.
    """

    job: Job
    start: int
    stop: int
    failed_runs: int = 0
    crashes: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start

    def items(self) -> list[Any]:
        return self.job.items[self.start : self.stop]

    def split(self, parts: int, failed_runs: int, crashes: int) -> list[Task]:
        """Return this slice cut into ``parts`` contiguous slices of (nearly) equal size."""
        bounds = [self.start + self.size * part // parts for part in range(parts + 1)]
        return [
            Task(self.job, start, stop, failed_runs, crashes)
            for start, stop in itertools.pairwise(bounds)
        ]


class JobLedger:
    """Settles tasks: records outputs and failures, decides retries and splits, finishes jobs.

    Thread-safe; futures are completed outside the lock (their callbacks may submit more work).

    :param crash_retries: times a slice that killed its worker is re-run whole before splitting.
    :param task_timeout: the pool's per-task timeout, for messages.
    """

    def __init__(self, crash_retries: int, task_timeout: float | None) -> None:
        self._crash_retries = crash_retries
        self._task_timeout = task_timeout
        self._lock = threading.Lock()
        self._jobs: set[Job] = set()
        self.splits = 0  # times a failing task was split
        self.completed = 0  # jobs finished with a result or an error (not cancelled)

    def open(self, job: Job) -> Task:
        """Register a new job and return the task covering its whole batch."""
        with self._lock:
            self._jobs.add(job)
        return Task(job, 0, len(job.items))

    def begin(self, task: Task) -> bool:
        """Mark ``task`` as about to run; False when its job is finished or was cancelled."""
        job = task.job
        with self._lock:
            if job.finished:
                return False
            if not job.started:
                job.started = True
                if not job.future.set_running_or_notify_cancel():
                    self._close(job, completed=False)
                    return False
            return True

    def unfinished(self) -> list[Job]:
        """Return the jobs whose futures are not done yet."""
        with self._lock:
            return list(self._jobs)

    def fail(self, job: Job, error: BaseException) -> None:
        """Finish ``job`` with ``error``; a job that never started is cancelled instead."""
        with self._lock:
            if job.finished:
                return
            started = job.started
            self._close(job, completed=started)  # one never started is cancelled below
        # Outside the lock: cancel() and set_exception() run the future's callbacks.
        if not started and job.future.cancel():
            return
        job.future.set_exception(error)

    def settle(self, task: Task, outcome: Outcome) -> list[Task]:
        """Record the outcome of ``task``; return the tasks to run next (a retry or its parts)."""
        job = task.job
        error: BaseException | None = None
        result: BatchResult[Any, Any] | None = None
        with self._lock:
            if job.finished:
                return []
            next_tasks: list[Task] = []
            if isinstance(outcome, Completed):
                job.outputs[task.start] = outcome.outputs
            elif isinstance(outcome, Raised) and (
                outcome.fn_not_loadable or not job.isolate_errors
            ):
                error = outcome.error.rebuild()
                self._close(job)
            else:
                next_tasks = self._after_failure(task, outcome)
            if error is None and not next_tasks:  # this slice is settled
                job.unsettled -= 1
                if job.unsettled == 0:
                    result = self._result(job)
                    self._close(job)
        # Completing a future runs its callbacks, which may submit more work: not under our lock.
        if result is not None:
            job.future.set_result(result)
        elif error is not None:
            job.future.set_exception(error)
        return next_tasks

    def _after_failure(self, task: Task, outcome: Outcome) -> list[Task]:
        """Return a retry or the parts of a failed task, or [] after recording its one item."""
        job = task.job
        failed_runs = task.failed_runs + 1
        crashes = task.crashes + isinstance(outcome, Died)
        if isinstance(outcome, Died) and crashes <= self._crash_retries:
            logger.warning(
                "Retrying %d item(s) after worker pid %d died (crash %d of %d allowed)",
                task.size,
                outcome.pid,
                crashes,
                self._crash_retries,
            )
            return [Task(job, task.start, task.stop, failed_runs, crashes)]
        if task.size > 1:
            self.splits += 1
            parts = task.size if isinstance(outcome, TimedOut) else 2
            logger.warning(
                "Splitting %d failing item(s) into %d parts to isolate the cause",
                task.size,
                parts,
            )
            job.unsettled += parts - 1
            return task.split(parts, failed_runs, crashes)
        item = job.items[task.start]
        failure = self._failure(item, outcome, failed_runs)
        job.failures[task.start] = failure
        # The item's position only: row contents never go to the logs (the failure, with the
        # item, goes back to the caller, e.g. into the dead-letter table).
        logger.warning(
            "Item %d of a batch of %d failed on its own with %s after %d failed run(s)",
            task.start,
            len(job.items),
            failure.error_type,
            failed_runs,
        )
        return []

    def _failure(self, item: Any, outcome: Outcome, failed_runs: int) -> ItemFailure:
        if isinstance(outcome, Died):
            message = (
                f"worker process died with {describe_exit(outcome.exitcode)} "
                f"while processing item {short_repr(item)}"
            )
            return ItemFailure(item, WorkerCrashedError.__name__, message, "", failed_runs)
        if isinstance(outcome, TimedOut):
            message = (
                f"task ran longer than task_timeout={self._task_timeout:g} s "
                f"while processing item {short_repr(item)}; its worker process was killed"
            )
            return ItemFailure(item, TaskTimeoutError.__name__, message, "", failed_runs)
        assert isinstance(outcome, Raised)
        error = outcome.error
        return ItemFailure(item, error.error_type, error.message, error.traceback, failed_runs)

    @staticmethod
    def _result(job: Job) -> BatchResult[Any, Any]:
        outputs = [out for start in sorted(job.outputs) for out in job.outputs[start]]
        failures = [job.failures[index] for index in sorted(job.failures)]
        return BatchResult(outputs, failures)

    def _close(self, job: Job, completed: bool = True) -> None:
        """Mark ``job`` finished (called with the lock held, before its future is completed)."""
        if completed:
            self.completed += 1
        job.finished = True
        self._jobs.discard(job)


class TaskQueue:
    """The tasks waiting for a worker: FIFO, with retries and halves put at the front."""

    def __init__(self) -> None:
        self._tasks: deque[Task] = deque()
        self._ready = threading.Condition()
        self._stopped = False

    def __len__(self) -> int:
        return len(self._tasks)

    def put(self, task: Task) -> None:
        with self._ready:
            self._tasks.append(task)
            self._ready.notify()

    def put_front(self, tasks: list[Task]) -> None:
        with self._ready:
            self._tasks.extendleft(reversed(tasks))  # keeps their order: halves run left first
            self._ready.notify(len(tasks))

    def get(self) -> Task | None:
        """Return the next task, waiting for one; None once the queue is stopped."""
        with self._ready:
            while not self._tasks and not self._stopped:
                self._ready.wait()
            return None if self._stopped else self._tasks.popleft()

    def clear(self) -> None:
        with self._ready:
            self._tasks.clear()

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify_all()
