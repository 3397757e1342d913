"""The worker slots: one thread per worker process, running plain tasks from one queue.

A task is one pickled call, ``fn(*args)``, and a future. The slots know nothing of batches::

    put(Task(payload, future)) --> TaskQueue (FIFO; the parts of a failing batch go in front)
        |  the next free slot thread takes it
        v
    slot thread --payload--> its own worker process (private pipe) --> fn(*args)
        |  Completed / Raised / Died / TimedOut                 (process.WorkerProcess.run)
        v
    the future: fn's value | fn's exception, the worker's traceback chained as its __cause__
        | WorkerCrashedError (the worker died) | TaskTimeoutError (it was killed for its timeout)
        | WorkerStartError (no worker could start) | PoolClosedError (cancelled by close)

A slot whose worker died, or was killed, starts a replacement at once (ahead of need), so the
pool is back to full strength after any number of deaths.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from parallel_batch.engine.workers.process import (
    Completed,
    Died,
    Outcome,
    Raised,
    TimedOut,
    WorkerProcess,
    describe_exit,
)
from parallel_batch.exceptions import (
    PoolClosedError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerStartError,
)

__all__ = ["Task", "WorkerSlots"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Task:
    """One call to run in a worker.

    :param payload: ``pickle.dumps((pickle.dumps(fn), args))``.
    :param future: gets the call's value or error.
    :param owner: a batch future that starts running with this task (its first one), or None.
    """

    payload: bytes
    future: Future[Any]
    owner: Future[Any] | None = None

    def begin(self) -> bool:
        """Mark the task (and its owner) running; False when either was cancelled."""
        if self.owner is not None and not self.owner.set_running_or_notify_cancel():
            self.future.cancel()
            return False
        return self.future.set_running_or_notify_cancel()


class _TaskQueue:
    """The tasks waiting for a worker: FIFO, with the parts of failing batches in front."""

    def __init__(self) -> None:
        self._tasks: deque[Task] = deque()
        self._ready = threading.Condition()
        self._stopped = False

    def __len__(self) -> int:
        return len(self._tasks)

    def put(self, task: Task, front: bool) -> None:
        with self._ready:
            if front:
                self._tasks.appendleft(task)
            else:
                self._tasks.append(task)
            self._ready.notify()

    def get(self) -> Task | None:
        """Return the next task, waiting for one; None once the queue is stopped."""
        with self._ready:
            while not self._tasks and not self._stopped:
                self._ready.wait()
            return None if self._stopped else self._tasks.popleft()

    def drain(self) -> list[Task]:
        with self._ready:
            tasks = list(self._tasks)
            self._tasks.clear()
            return tasks

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify_all()


class WorkerSlots:
    """``size`` slot threads, each owning one worker process, running the tasks put to them.

    :param size: slot threads (and so worker processes).
    :param start_method: see :mod:`~parallel_batch.engine.workers.launch`.
    :param init_payload: ``pickle.dumps((initializer, initargs))`` for every worker.
    :param task_timeout: seconds a task may run before its worker is killed; None: no limit.
    """

    def __init__(
        self, size: int, start_method: str, init_payload: bytes, task_timeout: float | None
    ) -> None:
        self._start_method = start_method
        self._init_payload = init_payload
        self._task_timeout = task_timeout
        self._queue = _TaskQueue()
        self._lock = threading.Lock()
        self._busy: dict[int, WorkerProcess] = {}  # slot -> worker running a task
        self._cancelling = False
        self.closing = False  # set by the pool's close(): no replacement is started ahead
        self.workers = 0  # live worker processes
        self.crashed_workers = 0
        self.timeouts = 0
        self._threads = [
            threading.Thread(
                target=self._run_slot,
                args=(slot,),
                name=f"parallel-batch-pool-slot-{slot}",
                daemon=True,  # stop() ends them; daemon so a forgotten pool never blocks exit
            )
            for slot in range(size)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> int:
        """Workers running a task now."""
        return len(self._busy)

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker."""
        return len(self._queue)

    def put(self, task: Task, *, front: bool = False) -> None:
        """Queue ``task`` (first in line when ``front``).

        :raises PoolClosedError: once :meth:`cancel` was called.
        """
        with self._lock:
            if self._cancelling:
                raise PoolClosedError("the WorkerPool was closed before the task finished")
            self._queue.put(task, front)

    def cancel(self) -> None:
        """Cancel the queued tasks and kill the workers running the others (their futures
        raise PoolClosedError); refuse new tasks."""
        with self._lock:
            self._cancelling = True
            busy = list(self._busy.values())
        for task in self._queue.drain():
            if task.owner is not None:
                task.owner.cancel()
            task.future.cancel()
        for worker in busy:
            worker.interrupt()

    def stop(self) -> None:
        """Stop the slot threads once their current task is settled, and their workers."""
        self.closing = True
        self._queue.stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def _run_slot(self, slot: int) -> None:
        """Own one worker process: run tasks from the queue on it, replace it when it dies."""
        worker = self._start_worker(replacement=False)
        try:
            while (task := self._queue.get()) is not None:
                if not task.begin():
                    continue  # cancelled before it started
                try:
                    if worker is None:
                        worker = self._start_worker_for(task)
                        if worker is None:
                            continue
                    outcome = self._run_task(slot, worker, task)
                    if isinstance(outcome, Died | TimedOut):
                        worker = None  # it is dead, or was killed for its timeout
                        self._after_death(outcome)
                    self._settle(task, outcome)
                except Exception as exc:  # a bug here must fail the task, never hang it
                    logger.exception("Unexpected error in worker pool slot %d", slot)
                    if not task.future.done():
                        task.future.set_exception(exc)
                    if worker is not None:  # its state is unknown: do not reuse it
                        worker.kill()
                        worker = None
                        self._count_workers(-1)
                if worker is None and not (self.closing or self._cancelling):
                    worker = self._start_worker(replacement=True)
        finally:
            if worker is not None:
                worker.stop()
                self._count_workers(-1)

    def _run_task(self, slot: int, worker: WorkerProcess, task: Task) -> Outcome | None:
        """Run ``task`` on ``worker``; None when the pool is being cancelled."""
        with self._lock:
            if self._cancelling:
                return None
            self._busy[slot] = worker
        try:
            return worker.run(task.payload, self._task_timeout)
        finally:
            with self._lock:
                del self._busy[slot]

    def _settle(self, task: Task, outcome: Outcome | None) -> None:
        """Give ``task``'s future the value or the error ``outcome`` stands for."""
        if isinstance(outcome, Completed):
            task.future.set_result(outcome.value)
            return
        error: BaseException
        if isinstance(outcome, Raised):
            error = outcome.error.rebuild()
        elif outcome is None or self._cancelling:
            error = PoolClosedError("the WorkerPool was closed before the task finished")
        elif isinstance(outcome, Died):
            error = WorkerCrashedError(
                f"worker process died with {describe_exit(outcome.exitcode)}"
            )
        else:
            error = TaskTimeoutError(
                f"task ran longer than task_timeout={self._task_timeout:g} s; "
                "its worker process was killed"
            )
        task.future.set_exception(error)

    def _after_death(self, outcome: Died | TimedOut) -> None:
        """Count and log a worker that died or was killed for its timeout."""
        self._count_workers(-1)
        with self._lock:
            if self._cancelling:
                return  # close(cancel_pending=True) killed it
            if isinstance(outcome, Died):
                self.crashed_workers += 1
            else:
                self.timeouts += 1
        if isinstance(outcome, Died):
            logger.warning(
                "Worker pid %d died with %s; replacing it",
                outcome.pid,
                describe_exit(outcome.exitcode),
            )
        else:
            logger.warning(
                "Worker pid %d ran past task_timeout=%g s; killed it, replacing it",
                outcome.pid,
                self._task_timeout,
            )

    def _start_worker(self, replacement: bool) -> WorkerProcess | None:
        """Start a worker ahead of need; None (logged) when it cannot start."""
        started = time.perf_counter()
        try:
            worker = self._new_worker()
        except Exception as exc:
            logger.warning("Could not start a worker process: %s", exc)
            return None
        if replacement:
            logger.warning(
                "Started replacement worker pid %d in %.3f s",
                worker.pid,
                time.perf_counter() - started,
            )
        return worker

    def _start_worker_for(self, task: Task) -> WorkerProcess | None:
        """Start a worker to run ``task``; when it cannot start, fail the task."""
        try:
            return self._new_worker()
        except WorkerStartError as exc:
            task.future.set_exception(exc)
        except Exception as exc:
            error = WorkerStartError(f"could not start a worker process: {exc}")
            error.__cause__ = exc
            task.future.set_exception(error)
        return None

    def _new_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self._start_method, self._init_payload)
        self._count_workers(+1)
        return worker

    def _count_workers(self, delta: int) -> None:
        with self._lock:
            self.workers += delta
