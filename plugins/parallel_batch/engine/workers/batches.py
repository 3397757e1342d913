"""The parent side of a batch: run it in the pool, isolate the items that kill their worker or
run past the timeout, and assemble its :class:`BatchResult`.

A batch is first sent whole, as one task (``apply_batch``, which isolates the items that raise
inside the worker). Only when that task fails as a whole, or reports items that raised, does a
thread of the batch's own take over and :func:`~parallel_batch.engine.isolation.isolate` the
batch, each attempt a part sent to the pool (ahead of the queued work) and waited for::

    send(items[0:n]) ──ok, no item errors──> BatchResult(outputs)        (no thread, no split)
         │ WorkerCrashedError / TaskTimeoutError / items that cannot be pickled / item errors
         ▼
    isolate((0, n)): SPLIT_PARTS parts sent in turn, the failing ones split again down to
    single items; an item that killed its worker alone is run again (crash_retries times);
    one that timed out, raised or cannot be pickled is given up on at once
         ▼
    BatchResult(outputs of every part that succeeded, in batch order,
                one ItemFailure per item given up on, in batch order)

Any other error (the worker cannot start, ``fn`` cannot be loaded, the pool was closed) fails
the batch's future with that error: splitting cannot help.
"""

from __future__ import annotations

import logging
import pickle
import reprlib
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

from parallel_batch.engine.isolation import Attempted, ItemGivenUp, isolate, split_range
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.engine.workers.apply import BatchReply, ItemError
from parallel_batch.engine.workers.records import BatchResult, ItemFailure
from parallel_batch.exceptions import PoolClosedError, TaskTimeoutError, WorkerCrashedError

__all__ = ["BatchRun", "crash_policy", "short_repr"]

logger = logging.getLogger(__name__)

# Longest repr of an item in messages and logs. Longer: easier to recognise the item;
# shorter: less of a row's (possibly private) contents in logs.
ITEM_REPR_LIMIT = 80
_repr = reprlib.Repr()
_repr.maxstring = ITEM_REPR_LIMIT
_repr.maxother = ITEM_REPR_LIMIT

Unit = tuple[int, int]  # the index range [start, stop) of a part of the batch
Send = Callable[[list[Any], bool, "Future[Any] | None"], "Future[BatchReply]"]
"""Queue ``apply_batch`` on items (ahead of the queue when True, the batch future to start
running with it); raises the pickling error for items that cannot be sent."""


class _ItemRaised(Exception):
    """An item that raised alone in the worker (its error, as the worker described it)."""

    def __init__(self, error: ItemError) -> None:
        super().__init__(error.message)
        self.error_type = error.error_type
        self.message = error.message
        self.traceback = error.traceback


class _Unsendable(Exception):
    """Items that cannot be pickled to a worker; the pickling error is the ``__cause__``."""


# What tells that some item of a part is at fault; any other error fails the batch.
_ISOLATE_ON: tuple[type[Exception], ...] = (WorkerCrashedError, TaskTimeoutError, _Unsendable)


def short_repr(item: Any) -> str:
    """Return ``repr(item)`` cut to about :data:`ITEM_REPR_LIMIT` characters, never raising."""
    try:
        text = _repr.repr(item)
    except Exception:
        return f"<{type(item).__name__} object with a failing repr>"
    if len(text) > ITEM_REPR_LIMIT:
        text = text[: ITEM_REPR_LIMIT - 3] + "..."
    return text


def crash_policy(crash_retries: int) -> RetryPolicy:
    """Return the isolation policy of a pool: an item that killed its worker alone is run again
    ``crash_retries`` times at once (a crash can be transient: the OOM killer); nothing else is."""
    return RetryPolicy(
        max_attempts=crash_retries + 1,
        base_delay=0.0,
        max_delay=0.0,
        retry_on=(WorkerCrashedError,),
    )


class BatchRun:
    """One submitted batch, from its first task to its result.

    :param items: the batch.
    :param future: the batch's future (running once its first task starts).
    :param send: queues a part (see :data:`Send`).
    :param policy: see :func:`crash_policy`.
    :param task_timeout: the pool's, for messages.
    :param finished: called just before the future gets its result or error (statistics).
    :param split: called each time a failing part is split (statistics).
    """

    def __init__(
        self,
        items: list[Any],
        future: Future[BatchResult[Any, Any]],
        send: Send,
        policy: RetryPolicy,
        task_timeout: float | None,
        finished: Callable[[], None],
        split: Callable[[], None],
    ) -> None:
        self._items = items
        self._future = future
        self._send = send
        self._policy = policy
        self._task_timeout = task_timeout
        self._finished = finished
        self._on_split = split

    def start(self) -> None:
        """Send the whole batch; on failure, isolate its items on a thread of its own."""
        try:
            first = self._send(self._items, False, self._future)
        except PoolClosedError:  # closed (cancel_pending) since it was submitted: never started
            self._future.cancel()
            return
        except Exception as exc:  # an item cannot be pickled: find it
            if self._future.set_running_or_notify_cancel():
                self._isolate_on_thread(_unsendable(exc))
            return
        first.add_done_callback(self._first_done)

    def _first_done(self, first: Future[BatchReply]) -> None:
        """Runs in the slot thread that settled the first task: never blocks."""
        if first.cancelled():  # never started: the batch was cancelled, or the pool closed
            self._future.cancel()
            return
        error = first.exception()
        outcome: Attempted[Unit, list[Any]] | Exception
        if error is None:
            try:
                outcome = _decode(first.result(), 0)
            except Exception as exc:  # outputs the parent cannot unpickle
                self._fail(exc)
                return
            if not outcome.item_errors:
                self._finish(BatchResult(outcome.value, []))
                return
        elif isinstance(error, _ISOLATE_ON):
            outcome = error
        else:
            self._fail(error)
            return
        self._isolate_on_thread(outcome)

    def _isolate_on_thread(self, first: Attempted[Unit, list[Any]] | Exception) -> None:
        threading.Thread(
            target=self._isolate, args=(first,), name="parallel-batch-pool-isolate", daemon=True
        ).start()

    def _isolate(self, first: Attempted[Unit, list[Any]] | Exception) -> None:
        """Isolate the batch's failing items; ``first`` is how the whole batch fared."""

        def attempt(unit: Unit) -> Attempted[Unit, list[Any]]:
            start, stop = unit
            try:
                future = self._send(self._items[start:stop], True, None)
            except PoolClosedError:
                raise
            except Exception as exc:
                raise _unsendable(exc) from exc
            try:
                return _decode(future.result(), start)
            except CancelledError:  # only close(cancel_pending=True) cancels a part
                raise PoolClosedError(
                    "the WorkerPool was closed before the task finished"
                ) from None

        try:
            whole = (0, len(self._items))
            isolated = isolate(
                whole, attempt, self._split, self._policy, isolate_on=_ISOLATE_ON, first=first
            )
            done = sorted(isolated.done, key=lambda d: d[0])
            outputs = [out for _, part in done for out in part]
            given_up = sorted(isolated.failed, key=lambda g: g.unit)
            result: BatchResult[Any, Any] = BatchResult(
                outputs, [self._failure(g) for g in given_up]
            )
        except BaseException as exc:  # the future must get it: nobody else would see it
            self._fail(exc)
        else:
            self._finish(result)

    def _split(self, unit: Unit) -> list[Unit] | None:
        parts = split_range(unit)
        if parts is not None:
            self._on_split()
            logger.warning(
                "Splitting %d failing item(s) into %d parts to isolate the cause",
                unit[1] - unit[0],
                len(parts),
            )
        return parts

    def _failure(self, given_up: ItemGivenUp[Unit]) -> ItemFailure:
        index = given_up.unit[0]
        item, error = self._items[index], given_up.error
        where = f"while processing item {short_repr(item)}"
        if isinstance(error, _ItemRaised):
            error_type, message, text = error.error_type, error.message, error.traceback
        elif isinstance(error, _Unsendable) and error.__cause__ is not None:
            cause = error.__cause__
            error_type, message = type(cause).__name__, str(cause)
            text = "".join(traceback.format_exception(cause))
        elif isinstance(error, TaskTimeoutError):
            error_type, text = type(error).__name__, ""
            message = (
                f"task ran longer than task_timeout={self._task_timeout:g} s {where}; "
                "its worker process was killed"
            )
        else:  # WorkerCrashedError: "worker process died with <exit>"
            error_type, message, text = type(error).__name__, f"{error} {where}", ""
        # The item's position only: row contents never go to the logs (the failure, with the
        # item, goes back to the caller, e.g. into the dead-letter table).
        logger.warning(
            "Item %d of a batch of %d failed on its own with %s after %d attempt(s)",
            index,
            len(self._items),
            error_type,
            given_up.attempts,
        )
        return ItemFailure(item, error_type, message, text, given_up.attempts)

    def _finish(self, result: BatchResult[Any, Any]) -> None:
        self._finished()
        self._future.set_result(result)

    def _fail(self, error: BaseException) -> None:
        self._finished()
        self._future.set_exception(error)


def _decode(reply: BatchReply, offset: int) -> Attempted[Unit, list[Any]]:
    """The outputs of a worker's reply for the part starting at ``offset``, and its item errors."""
    outputs = [out for _, _, data in reply.parts for out in pickle.loads(data)]
    errors: list[tuple[Unit, Exception]] = [
        ((offset + e.position, offset + e.position + 1), _ItemRaised(e)) for e in reply.errors
    ]
    return Attempted(outputs, errors)


def _unsendable(error: Exception) -> _Unsendable:
    unsendable = _Unsendable(f"the items cannot be sent to a worker: {error}")
    unsendable.__cause__ = error
    return unsendable
