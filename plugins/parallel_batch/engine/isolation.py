"""Keep a batch's failures to the items at fault: the one isolation mechanism of every job.

A unit of work (rows of a batch, a key range, a byte range) is attempted whole; what fails is
split until the items at fault stand alone, and each of those is retried alone before it is
given up on::

    attempt(unit) ──ok──> its result (and the single items it reports failed on their own)
         │ raises
         ▼
    split(unit) into at most SPLIT_PARTS parts, each attempted the same way, in order
         │ cannot be split (one item, or one row's range)
         ▼
    the single items that failed: retried alone in rounds, one full-jitter wait per round
    (policy.max_attempts tries in all) ──> still failing: an :class:`ItemGivenUp`

The same function isolates a transform's exceptions inside a worker (units are row index
ranges), rows that kill their worker process (the parent attempts key or byte ranges in the
pool; a dead worker raises ``WorkerCrashedError``) and rows the database refuses (units are
output rows written under a savepoint). Only :class:`Exception` is caught: ``KeyboardInterrupt``
and ``SystemExit`` propagate.

Why a k-way split rather than halves or one item at a time: each failed attempt costs a call of
the whole part (a DataFrame transform, a worker to replace), so the cost is the number of rounds
times the failing parts. 16 parts find one bad row among 10,000 in 4 rounds (halving takes 14);
ten poison rows in a batch cost about 1.7 batch-calls of work where halving costs about 5.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, NamedTuple, TypeVar

from parallel_batch.engine.policy import RetryPolicy

__all__ = [
    "SPLIT_PARTS",
    "Attempted",
    "Isolated",
    "ItemGivenUp",
    "isolate",
    "split_range",
]

U = TypeVar("U")
R = TypeVar("R")

# Parts a failing unit is cut into, again and again down to the items at fault. More parts:
# fewer rounds (each one a failed call of the part holding a bad item), more (smaller) calls.
SPLIT_PARTS = 16


@dataclass
class Attempted(Generic[U, R]):
    """What a successful attempt returns: its result, and the single items it failed on its own
    (a per-row transform reports them instead of raising).

    :param value: the unit's result.
    :param item_errors: ``(single-item unit, its error)`` for each item that failed.
    """

    value: R
    item_errors: list[tuple[U, Exception]] = field(default_factory=list)


class ItemGivenUp(NamedTuple, Generic[U]):
    """A single item that still failed after its retries.

    :param unit: the item's unit (e.g. ``(i, i + 1)`` or a one-row range).
    :param error: its last error.
    :param attempts: tries in all.
    :param first_failed_at: when its first try failed.
    :param last_failed_at: when its last try failed.
    """

    unit: U
    error: Exception
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime


class Isolated(NamedTuple, Generic[U, R]):
    """The outcome of :func:`isolate`.

    :param done: ``(unit, result)`` of every unit that succeeded: the parts first, in order,
        then single items that succeeded on a retry (callers that need order sort by unit).
    :param failed: the single items given up on, in the order they first failed.
    """

    done: list[tuple[U, R]]
    failed: list[ItemGivenUp[U]]


def split_range(unit: tuple[int, int], parts: int = SPLIT_PARTS) -> list[tuple[int, int]] | None:
    """Split the index range ``[start, stop)`` into at most ``parts`` near-equal ranges; None for
    a range of one item or none (it cannot be split)."""
    start, stop = unit
    size = stop - start
    if size <= 1:
        return None
    parts = min(parts, size)
    bounds = [start + size * k // parts for k in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if a < b]


def isolate(
    unit: U,
    attempt: Callable[[U], Attempted[U, R]],
    split: Callable[[U], Sequence[U] | None],
    policy: RetryPolicy,
    *,
    isolate_on: tuple[type[Exception], ...] = (Exception,),
    first: Attempted[U, R] | Exception | None = None,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> Isolated[U, R]:
    """Attempt ``unit``; split what fails down to single items; retry those; give up on the rest.

    :param unit: the work.
    :param attempt: does a unit's work; raises when the unit fails as a whole.
    :param split: the parts of a unit that failed, or None when it is a single item (an empty
        split, or the unit itself as its only part, counts as a single item too).
    :param policy: tries per single item in all (its first try alone included) and the waits.
    :param isolate_on: the errors that mean "some item of the unit is at fault"; any other error
        propagates at once (the database is gone, a bug: splitting cannot help).
    :param first: how ``unit`` fared when the caller already attempted it whole (what the
        attempt returned, or the error it raised): it is not attempted again.
    :param sleep: called with the seconds to wait between retry rounds (injectable for tests).
    :param rng: the jitter's source; a fresh ``random.Random()`` when None.
    """
    done: list[tuple[U, R]] = []
    singles: list[tuple[U, Exception, datetime]] = []
    queue: deque[U] = deque([unit])
    while queue:
        current = queue.popleft()
        try:
            if first is None:
                attempted = attempt(current)
            elif isinstance(first, Exception):
                error, first = first, None
                raise error
            else:
                attempted, first = first, None
        except isolate_on as exc:
            parts = split(current)
            if not parts or list(parts) == [current]:  # a single item (no loop, nothing lost)
                singles.append((current, exc, _now()))
            else:
                queue.extendleft(reversed(parts))
            continue
        done.append((current, attempted.value))
        singles.extend((u, e, _now()) for u, e in attempted.item_errors)
    failed: list[ItemGivenUp[U]] = []
    attempts = 1
    while singles:
        retry: list[tuple[U, datetime]] = []
        for single, error, first_failed_at in singles:
            if attempts < policy.max_attempts and policy.is_retryable(error):
                retry.append((single, first_failed_at))
            else:
                failed.append(ItemGivenUp(single, error, attempts, first_failed_at, _now()))
        if not retry:
            break
        if rng is None:
            rng = random.Random()
        sleep(policy.delay(attempts - 1, rng))
        attempts += 1
        singles = []
        for single, first_failed_at in retry:
            try:
                attempted = attempt(single)
            except isolate_on as exc:
                singles.append((single, exc, first_failed_at))
                continue
            if attempted.item_errors:
                singles.extend((u, e, first_failed_at) for u, e in attempted.item_errors)
            else:
                done.append((single, attempted.value))
    return Isolated(done, failed)


def _now() -> datetime:
    return datetime.now(UTC)
