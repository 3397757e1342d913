"""The worker side of a batch: apply ``fn`` to its items and isolate the ones that raise.

The pool sends a batch (or a part of one) as an ordinary task, ``apply_batch(fn,
isolate_errors, items)``. In the worker it runs :func:`~parallel_batch.engine.isolation.isolate`
over index ranges of the items, so the items that raise are found with no round trip to the
parent per split::

    fn(items[0:n]) ──ok──> BatchReply(parts=[(0, n, pickled outputs)], errors=[])
         │ raises (isolate_errors=True)
         ▼
    fn on SPLIT_PARTS parts of the range, and so on down to the items that raise alone
         ──> parts:  (start, stop, pickled outputs) of every range that succeeded, in order
             errors: ItemError(position, type, message, traceback) of every item that raised alone

Each range's outputs are pickled inside its attempt, so an output that cannot be pickled fails
its range like a raise and is isolated to its item. No item is retried here: a transform's own
retries are its business, and items that kill the worker or hang are the parent's to isolate
(:mod:`~parallel_batch.engine.workers.batches`). With ``isolate_errors=False`` the first
exception propagates: the parent's future raises it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from parallel_batch.engine.isolation import Attempted

__all__ = ["BatchReply", "ItemError", "apply_batch"]


class ItemError(NamedTuple):
    """An item that raised on its own in the worker.

    :param position: its index in the items the worker was sent.
    :param error_type: the exception's class name.
    :param message: ``str()`` of the exception.
    :param traceback: the worker's formatted traceback.
    """

    position: int
    error_type: str
    message: str
    traceback: str


class BatchReply(NamedTuple):
    """What a worker answers for a batch (or a part of one).

    :param parts: ``(start, stop, pickle of fn's outputs for items[start:stop])`` of every range
        that succeeded, in order.
    :param errors: the items that raised alone, in order.
    """

    parts: list[tuple[int, int, bytes]]
    errors: list[ItemError]


def apply_batch(
    fn: Callable[[list[Any]], list[Any]], isolate_errors: bool, items: list[Any]
) -> BatchReply:
    """Apply ``fn`` to ``items`` in this (worker) process; see the module docstring."""
    whole = (0, len(items))
    try:
        return BatchReply([(*whole, _outputs(fn, items))], [])
    except Exception as exc:
        if not isolate_errors:
            raise
        error = exc
    # Only once something raised: a worker whose batches succeed never imports isolation.
    from parallel_batch.engine.isolation import Attempted, isolate, split_range
    from parallel_batch.engine.policy import RetryPolicy

    def attempt(unit: tuple[int, int]) -> Attempted[tuple[int, int], bytes]:
        return Attempted(_outputs(fn, items[unit[0] : unit[1]]))

    # No retry: the items that raise are given up on at once, and the parent reports them.
    isolated = isolate(whole, attempt, split_range, RetryPolicy(max_attempts=1), first=error)
    parts = sorted((start, stop, data) for (start, stop), data in isolated.done)
    errors = sorted(_item_error(g.unit[0], g.error) for g in isolated.failed)
    return BatchReply(parts, errors)


def _outputs(fn: Callable[[list[Any]], list[Any]], items: list[Any]) -> bytes:
    """Return the pickle of ``fn(items)``, which must be a list."""
    outputs = fn(items)
    if not isinstance(outputs, list):
        raise TypeError(f"fn must return a list, got {type(outputs).__name__}")
    return pickle.dumps(outputs, pickle.HIGHEST_PROTOCOL)


def _item_error(position: int, error: Exception) -> ItemError:
    import traceback  # only when an item failed: keeps worker start-up lean

    text = "".join(traceback.format_exception(error))
    return ItemError(position, type(error).__name__, str(error), text)
