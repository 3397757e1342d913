"""A process pool for CPU-bound work that survives dead workers and isolates poison items.

Unlike ``concurrent.futures.ProcessPoolExecutor`` (one dead worker breaks the whole pool:
``BrokenProcessPool``), a worker that dies abruptly (``os._exit``, SIGKILL, a segfault, the OOM
killer) or runs past ``task_timeout`` is replaced, and only the work it was running fails. Two
ways in, one pool::

    submit(fn, *args) -> Future[R]                 one call; its future raises WorkerCrashedError,
        |                                          TaskTimeoutError or fn's own exception
        |
    submit_batch(fn, batch) -> Future[BatchResult] fn(items) -> list, with failure isolation:
        |   the whole batch is one task; the items that raise are isolated in the worker, and
        |   the ones that kill it or hang by isolation.isolate in the parent, each part one
        |   more task (see workers.batches); the rest of the batch is processed
        v
    worker slots: one thread per worker process, tasks from one queue (see workers.slots)

Every failure is isolated by the one mechanism of the package,
:func:`~parallel_batch.engine.isolation.isolate`: a failing part is split ``SPLIT_PARTS`` ways
down to the items at fault, and only those fail (:class:`ItemFailure`).

Each worker has a private pipe (no shared queue or lock a dying worker could corrupt or hold),
so the parent always knows which task a dead worker was running, and notices its death at once
through the process sentinel.

Start method: ``exec`` by default, a fresh interpreter per worker that imports only the worker
module and ``fn``'s module (see :mod:`.workers.launch`). Airflow task processes run threads
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
import functools
import pickle
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

from parallel_batch.engine.closing import Closing
from parallel_batch.engine.workers.apply import BatchReply, apply_batch
from parallel_batch.engine.workers.batches import BatchRun, crash_policy
from parallel_batch.engine.workers.cpus import usable_cpu_count
from parallel_batch.engine.workers.launch import EXEC, start_methods
from parallel_batch.engine.workers.records import BatchResult, ItemFailure, PoolStatistics
from parallel_batch.engine.workers.slots import Task, WorkerSlots
from parallel_batch.exceptions import PoolClosedError

__all__ = ["BatchResult", "ItemFailure", "PoolStatistics", "WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")

# A fresh interpreter per worker, importing only what it needs: see workers.launch.
DEFAULT_START_METHOD = EXEC
# map_batches keeps up to this many batches per worker submitted and not yet yielded.
# Larger: workers never wait for the caller's next batch; smaller: less memory held and
# less read ahead of the source.
READ_AHEAD_PER_WORKER = 2
_END: Any = object()  # marks the end of the batches in map_batches


class WorkerPool(Closing):
    """Run functions in worker processes, isolating crashes, timeouts and errors.

    :meth:`submit` runs one call. :meth:`submit_batch` (and :meth:`run_batch`,
    :meth:`arun_batch`, :meth:`map_batches`) runs ``fn(batch) -> list`` for a picklable
    module-level ``fn``: a batch's result holds the outputs of its parts in batch order, and one
    :class:`ItemFailure` per item that failed on its own. As a context manager the pool closes
    on exit, waiting for its work, or, when the block raised, cancelling it::

        with WorkerPool(task_timeout=60) as pool:
            for result in pool.map_batches(enrich_rows, batches):
                write(result.outputs)
                dead_letters(result.failures)

    :param max_workers: worker processes; default: the CPUs this process may use (affinity and
        cgroup quota applied).
    :param task_timeout: seconds one task (a call, a batch, or a part of one) may run; past it
        the worker is killed and replaced. A batch's items that hang are isolated like crashes,
        each part with the full timeout, and are not run again. None: no limit.
    :param crash_retries: times an item that killed its worker on its own is run again before
        it is given up on (a crash can be transient, e.g. the OOM killer).
    :param start_method: ``"exec"`` (default), or a multiprocessing start method (``"spawn"``,
        ``"forkserver"``; ``"fork"`` is refused: forked workers inherit each other's descriptors).
    :param initializer: called with ``initargs`` in every worker (and replacement) before its
        first task; if it raises, the work that needed the worker fails with
        :class:`~parallel_batch.exceptions.WorkerStartError`.
    :param initargs: arguments of ``initializer``.
    :param isolate_errors: True: an item of a batch that raises on its own becomes an
        :class:`ItemFailure` with the exception's type, message and the worker's traceback.
        False: the batch's future raises the exception, the worker's traceback chained as its
        ``__cause__`` (crashes and timeouts are isolated either way).
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
            init_payload = pickle.dumps((initializer, initargs), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                "initializer and initargs must be picklable (a module-level function)"
            ) from exc
        self._max_workers = max_workers or usable_cpu_count()
        self._task_timeout = task_timeout
        self._isolate_errors = isolate_errors
        self._start_method = start_method or DEFAULT_START_METHOD
        self._policy = crash_policy(crash_retries)
        self._lock = threading.Lock()
        self._closed = False
        self._pending: set[Future[Any]] = set()  # submitted calls and batches not done yet
        self._completed_batches = 0
        self._splits = 0
        self._slots = WorkerSlots(self._max_workers, self._start_method, init_payload, task_timeout)
        _live_pools.add(self)

    @property
    def max_workers(self) -> int:
        """The number of worker processes."""
        return self._max_workers

    # -- submitting work ----------------------------------------------------------------------

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        """Queue the call ``fn(*args)`` and return its future, with no failure isolation.

        The future raises :class:`~parallel_batch.exceptions.WorkerCrashedError` when the worker
        died (it is replaced), :class:`~parallel_batch.exceptions.TaskTimeoutError` after
        ``task_timeout``, or ``fn``'s own exception, the worker's traceback chained as its
        ``__cause__``.

        :raises TypeError: when ``fn`` or ``args`` cannot be pickled.
        :raises PoolClosedError: after :meth:`close`.
        """
        fn_bytes = self._pickled_fn(fn, fn)
        try:
            payload = pickle.dumps((fn_bytes, args), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"the arguments of {fn!r} must be picklable: {exc}") from exc
        future: Future[R] = Future()
        self._track(future, "task")
        self._slots.put(Task(payload, future))
        return future

    def submit_batch(
        self, fn: Callable[[list[T]], list[R]], batch: Iterable[T]
    ) -> Future[BatchResult[T, R]]:
        """Queue one batch and return a future of its :class:`BatchResult`.

        :param fn: a picklable module-level callable taking a list and returning a list.
        :param batch: the items (copied into a list).
        :raises TypeError: when ``fn`` is not callable or cannot be pickled.
        :raises PoolClosedError: after :meth:`close`.
        """
        fn_bytes = self._pickled_fn(fn, functools.partial(apply_batch, fn, self._isolate_errors))
        items = list(batch)
        future: Future[BatchResult[T, R]] = Future()
        self._track(future, "batch")
        if not items:
            future.set_running_or_notify_cancel()
            self._count_completed()
            future.set_result(BatchResult())
            return future
        send = functools.partial(self._send, fn_bytes)
        BatchRun(
            items,
            future,
            send,
            self._policy,
            self._task_timeout,
            self._count_completed,
            self._count_split,
        ).start()
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

    def _pickled_fn(self, fn: Callable[..., Any], call: Callable[..., Any]) -> bytes:
        """Check ``fn`` and return the pickle of ``call`` (``fn`` itself, or a wrapper of it)."""
        if not callable(fn):
            raise TypeError("fn must be callable")
        if getattr(fn, "__module__", None) == "__main__" and self._start_method == EXEC:
            raise TypeError(
                f"fn {getattr(fn, '__qualname__', fn)!r} is defined in __main__, which worker "
                "processes do not import; move it into a module"
            )
        try:
            return pickle.dumps(call, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"fn must be a picklable module-level callable, got {fn!r}") from exc

    def _track(self, future: Future[Any], what: str) -> None:
        """Count ``future`` as pending until it is done; refuse it once the pool is closed."""
        with self._lock:
            if self._closed:
                raise PoolClosedError(f"cannot submit a {what} to a closed WorkerPool")
            self._pending.add(future)
        future.add_done_callback(self._untrack)

    def _untrack(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _send(
        self, fn_bytes: bytes, items: list[Any], front: bool, owner: Future[Any] | None
    ) -> Future[BatchReply]:
        """Queue ``apply_batch`` on ``items`` for a batch (see ``workers.batches.Send``)."""
        payload = pickle.dumps((fn_bytes, (items,)), pickle.HIGHEST_PROTOCOL)
        future: Future[BatchReply] = Future()
        self._slots.put(Task(payload, future, owner), front=front)
        return future

    # -- state and shutdown -------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """Return the pool's state and counters now."""
        slots = self._slots
        with self._lock:
            return PoolStatistics(
                workers=slots.workers,
                busy=slots.busy,
                queued=slots.queued,
                completed_batches=self._completed_batches,
                crashed_workers=slots.crashed_workers,
                timeouts=slots.timeouts,
                splits=self._splits,
            )

    def _count_completed(self) -> None:
        with self._lock:
            self._completed_batches += 1

    def _count_split(self) -> None:
        with self._lock:
            self._splits += 1

    def close(self, *, cancel_pending: bool = False) -> None:
        """Stop accepting work, finish or cancel the submitted work, stop every worker.

        :param cancel_pending: False: wait for every submitted call and batch. True: cancel
            those not started, kill the workers running the others (their futures raise
            :class:`~parallel_batch.exceptions.PoolClosedError`), and return promptly.
        """
        with self._lock:
            self._closed = True
            pending = list(self._pending)
        self._slots.closing = True
        try:
            if cancel_pending:
                self._slots.cancel()
            else:
                wait(pending)
        except BaseException:  # KeyboardInterrupt while waiting: leave no worker behind
            self._slots.cancel()
            raise
        finally:
            self._slots.stop()
        _live_pools.discard(self)

    def _close_on_exit(self, error: BaseException | None) -> None:
        self.close(cancel_pending=error is not None)


_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    """At interpreter exit, stop the workers of pools nobody closed."""
    for pool in list(_live_pools):
        pool.close(cancel_pending=True)
