"""A process pool for CPU-bound batches that survives dead workers and isolates poison items.

Unlike ``concurrent.futures.ProcessPoolExecutor`` (one dead worker breaks the whole pool:
``BrokenProcessPool``), a worker that dies abruptly (``os._exit``, SIGKILL, a segfault, the OOM
killer) or runs past ``task_timeout`` is replaced, and its batch is retried, then split (in
halves; after a timeout, into single items) until the item that kills it is alone; that item is
reported as an :class:`ItemFailure`, every other item is processed (see :mod:`pool_tasks` for
the splitting rules). How work moves through the pool::

    submit_batch(fn, batch) -> Future[BatchResult]
        |  Job + one Task (the whole batch)
        v
    task queue (FIFO; retries and the parts of split tasks go to the front)
        |  one thread per worker slot takes the next task
        v
    slot thread --pickle((fn, items))--> its own worker process (private pipe) --> fn(items)
        |  Completed / Raised / Died / TimedOut          (pool_process.WorkerProcess.run)
        v
    JobLedger.settle: record outputs or split/retry (back to the queue); last slice -> future

Each worker has a private pipe (no shared queue or lock a dying worker could corrupt or hold),
so the parent always knows which task a dead worker was running, and notices its death at once
through the process sentinel.

Start method: ``exec`` by default, a fresh interpreter per worker that imports only the worker
module and ``fn``'s module (see :mod:`pool_launch`). Airflow task processes run threads
(heartbeats, log shipping, secrets backends), and ``fork`` copies a threaded process with
whatever locks its other threads held at that instant: a child can deadlock on its first
``logging`` call. ``spawn`` and ``forkserver`` are safe too, but re-run the parent's
``__main__`` in every worker, which in an Airflow task means importing Airflow for each worker
and for each replacement after a crash. Keep ``fn`` in a light module: every new worker imports
it (``bench/bench_pool.py`` measures the start costs).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from types import TracebackType
from typing import Any, TypeVar

from parallel_batch.engine.workers.cpus import usable_cpu_count
from parallel_batch.engine.workers.launch import EXEC, start_methods
from parallel_batch.engine.workers.process import (
    Died,
    Outcome,
    Raised,
    TimedOut,
    WorkerProcess,
    describe_exit,
)
from parallel_batch.engine.workers.records import BatchResult, ItemFailure, PoolStatistics
from parallel_batch.engine.workers.tasks import Job, JobLedger, Task, TaskQueue
from parallel_batch.engine.workers.worker import RemoteError
from parallel_batch.exceptions import PoolClosedError, WorkerStartError

__all__ = ["BatchResult", "ItemFailure", "PoolStatistics", "WorkerPool"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# A fresh interpreter per worker, importing only what it needs: see pool_launch.
DEFAULT_START_METHOD = EXEC
# map_batches keeps up to this many batches per worker submitted and not yet yielded.
# Larger: workers never wait for the caller's next batch; smaller: less memory held and
# less read ahead of the source.
READ_AHEAD_PER_WORKER = 2
_END: Any = object()  # marks the end of the batches in map_batches


class WorkerPool:
    """Run ``fn(batch) -> list`` on batches in worker processes, isolating crashes and errors.

    ``fn`` must be a picklable module-level callable that takes a list and returns a list; a
    batch's result holds the outputs of its parts in batch order, and one
    :class:`ItemFailure` per item that failed on its own. As a context manager the pool closes
    on exit, waiting for its batches, or, when the block raised, cancelling them::

        with WorkerPool(task_timeout=60) as pool:
            for result in pool.map_batches(enrich_rows, batches):
                write(result.outputs)
                dead_letters(result.failures)

    :param max_workers: worker processes; default: the CPUs this process may use (affinity and
        cgroup quota applied).
    :param task_timeout: seconds one task (a batch, or part of a split one) may run; past it the
        worker is killed and replaced, and the task is re-run one item per task, each with the
        full timeout, so only the items that hang alone fail. None: no limit.
    :param crash_retries: times a part of a batch that killed its worker is re-run whole (a
        crash can be transient, e.g. the OOM killer) before it is split in halves.
    :param start_method: ``"exec"`` (default), or a multiprocessing start method (``"spawn"``,
        ``"forkserver"``; ``"fork"`` is refused: forked workers inherit each other's descriptors).
    :param initializer: called with ``initargs`` in every worker (and replacement) before its
        first task; if it raises, the batches that needed the worker fail with
        :class:`~parallel_batch.exceptions.WorkerStartError`.
    :param initargs: arguments of ``initializer``.
    :param isolate_errors: True: an exception raised by ``fn`` is isolated like a crash, and the
        item that raises on its own becomes an :class:`ItemFailure` with the exception's type,
        message and the worker's traceback. False: the batch's future raises that exception, the
        worker's traceback chained as its ``__cause__``.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        task_timeout: float | None = None,
        crash_retries: int = 1,
        start_method: str | None = None,
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
        isolate_errors: bool = True,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError("task_timeout must be greater than 0")
        if crash_retries < 0:
            raise ValueError("crash_retries must be 0 or greater")
        methods = start_methods()
        if start_method is not None and start_method not in methods:
            raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be callable")
        try:
            self._init_payload = pickle.dumps((initializer, initargs), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                "initializer and initargs must be picklable (a module-level function)"
            ) from exc
        self._max_workers = max_workers or usable_cpu_count()
        self._task_timeout = task_timeout
        self._isolate_errors = isolate_errors
        self._start_method = start_method or DEFAULT_START_METHOD
        self._ledger = JobLedger(crash_retries, task_timeout)
        self._queue = TaskQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._cancelling = False
        self._busy: dict[int, WorkerProcess] = {}  # slot -> worker running a task
        self._workers = 0
        self._empty_batches = 0  # completed at once, without the ledger
        self._crashed_workers = 0
        self._timeouts = 0
        self._slots = [
            threading.Thread(
                target=self._run_slot,
                args=(slot,),
                name=f"parallel-batch-pool-slot-{slot}",
                daemon=True,  # close() stops them; daemon so a forgotten pool never blocks exit
            )
            for slot in range(self._max_workers)
        ]
        for thread in self._slots:
            thread.start()
        _live_pools.add(self)

    @property
    def max_workers(self) -> int:
        """The number of worker processes."""
        return self._max_workers

    # -- submitting work ----------------------------------------------------------------------

    def submit_batch(
        self, fn: Callable[[list[T]], list[R]], batch: Iterable[T]
    ) -> Future[BatchResult[T, R]]:
        """Queue one batch and return a future of its :class:`BatchResult`.

        :param fn: a picklable module-level callable taking a list and returning a list.
        :param batch: the items (copied into a list).
        :raises TypeError: when ``fn`` is not callable or cannot be pickled.
        :raises PoolClosedError: after :meth:`close`.
        """
        if not callable(fn):
            raise TypeError("fn must be callable")
        if getattr(fn, "__module__", None) == "__main__" and self._start_method == EXEC:
            raise TypeError(
                f"fn {getattr(fn, '__qualname__', fn)!r} is defined in __main__, which worker "
                "processes do not import; move it into a module"
            )
        try:
            fn_bytes = pickle.dumps(fn, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"fn must be a picklable module-level callable, got {fn!r}") from exc
        items = list(batch)
        future: Future[BatchResult[T, R]] = Future()
        with self._lock:
            if self._closed:
                raise PoolClosedError("cannot submit a batch to a closed WorkerPool")
            if not items:
                future.set_running_or_notify_cancel()
                future.set_result(BatchResult())
                self._empty_batches += 1
                return future
            task = self._ledger.open(Job(fn_bytes, items, future, self._isolate_errors))
            self._queue.put(task)
        return future

    def run_batch(self, fn: Callable[[list[T]], list[R]], batch: Iterable[T]) -> BatchResult[T, R]:
        """Run one batch and wait for its :class:`BatchResult` (see :meth:`submit_batch`)."""
        return self.submit_batch(fn, batch).result()

    async def arun_batch(
        self, fn: Callable[[list[T]], list[R]], batch: Iterable[T]
    ) -> BatchResult[T, R]:
        """Run one batch from asyncio code without blocking the event loop."""
        return await asyncio.wrap_future(self.submit_batch(fn, batch))

    def map_batches(
        self,
        fn: Callable[[list[T]], list[R]],
        batches: Iterable[list[T]],
        *,
        max_in_flight: int | None = None,
        ordered: bool = True,
    ) -> Iterator[BatchResult[T, R]]:
        """Run ``fn`` on every batch of ``batches`` and yield their results as they stream in.

        ``batches`` is read lazily: at most ``max_in_flight`` batches are taken from it and not
        yet yielded at any time, so memory stays flat for any input size. Leaving the loop early
        (``break``, an exception) cancels the batches not started yet.

        :param max_in_flight: batches submitted and not yet yielded; default two per worker.
        :param ordered: True: yield in the order of ``batches``; False: as they complete.
        :raises ValueError: when ``max_in_flight`` is not greater than 0.
        """
        if max_in_flight is not None and max_in_flight <= 0:
            raise ValueError("max_in_flight must be greater than 0")
        limit = max_in_flight or READ_AHEAD_PER_WORKER * self._max_workers
        return self._map(fn, iter(batches), limit, ordered)

    def _map(
        self,
        fn: Callable[[list[T]], list[R]],
        batches: Iterator[list[T]],
        limit: int,
        ordered: bool,
    ) -> Iterator[BatchResult[T, R]]:
        in_flight: deque[Future[BatchResult[T, R]]] = deque()
        exhausted = False

        def top_up() -> None:
            nonlocal exhausted
            while not exhausted and len(in_flight) < limit:
                batch = next(batches, _END)
                if batch is _END:
                    exhausted = True
                else:
                    in_flight.append(self.submit_batch(fn, batch))

        try:
            top_up()
            while in_flight:
                if ordered:
                    future = in_flight.popleft()
                else:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    future = next(f for f in in_flight if f in done)
                    in_flight.remove(future)
                result = future.result()
                top_up()
                yield result
        finally:
            for future in in_flight:
                future.cancel()

    # -- state and shutdown -------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """Return the pool's state and counters now."""
        with self._lock:
            return PoolStatistics(
                workers=self._workers,
                busy=len(self._busy),
                queued=len(self._queue),
                completed_batches=self._empty_batches + self._ledger.completed,
                crashed_workers=self._crashed_workers,
                timeouts=self._timeouts,
                splits=self._ledger.splits,
            )

    def close(self, *, cancel_pending: bool = False) -> None:
        """Stop accepting batches, finish or cancel the submitted ones, stop every worker.

        :param cancel_pending: False: wait for every submitted batch. True: cancel the batches
            not started, kill the workers running the others (their futures raise
            :class:`~parallel_batch.exceptions.PoolClosedError`), and return promptly.
        """
        with self._lock:
            self._closed = True
        try:
            if cancel_pending:
                self._cancel_all()
            else:
                wait([job.future for job in self._ledger.unfinished()])
        except BaseException:  # KeyboardInterrupt while waiting: leave no worker behind
            self._cancel_all()
            raise
        finally:
            self._stop_slots()
        _live_pools.discard(self)

    def _cancel_all(self) -> None:
        with self._lock:
            self._cancelling = True
            busy = list(self._busy.values())
        self._queue.clear()
        closed = PoolClosedError("the WorkerPool was closed before the batch finished")
        for job in self._ledger.unfinished():
            self._ledger.fail(job, closed)
        for worker in busy:
            worker.interrupt()

    def _stop_slots(self) -> None:
        self._queue.stop()
        for thread in self._slots:
            if thread is not threading.current_thread():
                thread.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(cancel_pending=exc is not None)

    # -- the slot threads ---------------------------------------------------------------------

    def _run_slot(self, slot: int) -> None:
        """Own one worker process: run tasks from the queue on it, replace it when it dies."""
        worker = self._start_worker(replacement=False)
        try:
            while (task := self._queue.get()) is not None:
                if not self._ledger.begin(task):
                    continue  # its batch was cancelled or has already failed
                try:
                    if worker is None:
                        worker = self._start_worker_for(task)
                        if worker is None:
                            continue
                    outcome = self._run_task(slot, worker, task)
                    if isinstance(outcome, Died | TimedOut):
                        worker = None  # it is dead, or was killed for its timeout
                        self._after_death(outcome, task)
                    if outcome is not None:
                        self._queue.put_front(self._ledger.settle(task, outcome))
                except Exception as exc:  # a bug here must fail the batch, never hang it
                    logger.exception("Unexpected error in worker pool slot %d", slot)
                    self._ledger.fail(task.job, exc)
                    if worker is not None:  # its state is unknown: do not reuse it
                        worker.kill()
                        worker = None
                        self._count_workers(-1)
                if worker is None and not self._queue_stopping():
                    worker = self._start_worker(replacement=True)
        finally:
            if worker is not None:
                worker.stop()
                self._count_workers(-1)

    def _run_task(self, slot: int, worker: WorkerProcess, task: Task) -> Outcome | None:
        """Run ``task`` on ``worker``; None when the pool is being cancelled."""
        try:
            payload = pickle.dumps((task.job.fn_bytes, task.items()), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an item that cannot be pickled: isolate it like a raise
            return Raised(RemoteError.capture(exc))
        with self._lock:
            if self._cancelling:
                return None
            self._busy[slot] = worker
        try:
            return worker.run(payload, self._task_timeout)
        finally:
            with self._lock:
                del self._busy[slot]

    def _after_death(self, outcome: Died | TimedOut, task: Task) -> None:
        """Count and log a worker that died or was killed for its timeout."""
        self._count_workers(-1)
        with self._lock:
            if self._cancelling:
                return  # close(cancel_pending=True) killed it
            if isinstance(outcome, Died):
                self._crashed_workers += 1
            else:
                self._timeouts += 1
        if isinstance(outcome, Died):
            logger.warning(
                "Worker pid %d died with %s while processing %d item(s); replacing it",
                outcome.pid,
                describe_exit(outcome.exitcode),
                task.size,
            )
        else:
            logger.warning(
                "Worker pid %d ran past task_timeout=%g s on %d item(s); killed it, replacing it",
                outcome.pid,
                self._task_timeout,
                task.size,
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
        """Start a worker to run ``task``; when it cannot start, fail the task's batch."""
        try:
            return self._new_worker()
        except WorkerStartError as exc:
            self._ledger.fail(task.job, exc)
        except Exception as exc:
            error = WorkerStartError(f"could not start a worker process: {exc}")
            error.__cause__ = exc
            self._ledger.fail(task.job, error)
        return None

    def _new_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self._start_method, self._init_payload)
        self._count_workers(+1)
        return worker

    def _queue_stopping(self) -> bool:
        with self._lock:
            return self._cancelling or (self._closed and not self._ledger.unfinished())

    def _count_workers(self, delta: int) -> None:
        with self._lock:
            self._workers += delta


_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    """At interpreter exit, stop the workers of pools nobody closed."""
    for pool in list(_live_pools):
        pool.close(cancel_pending=True)
