"""Apply a batch transform to a batch of rows, isolating and retrying the rows that raise.

One call does the whole job, in whatever process runs it (a pool worker or this one)::

    fn(batch), whole and vectorised ------------------------------> every row's output
        | raises (or returns another number of rows)
        v
    each row alone: fn([row])        one pass over the batch; the batch attempt is not counted
        | the rows that raised and are worth retrying
        v
    wait policy.delay(0), retry each of them alone; wait policy.delay(1), ... until
    policy.max_attempts tries per row --> still failing: a FailedRow (a dead letter)

Retries go in rounds: the rows still failing wait once per round, together, instead of one
backoff per row (a batch with ten poison rows waits two short delays, not twenty). A row that
kills its process (``os._exit``, a segfault) or hangs is beyond this: the worker pool sees the
task die or time out and the caller splits the batch (see ``runner``).

This module is imported by every worker process: it stays light (no pool, no database).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from parallel_batch.engine.retry import RetryPolicy
from parallel_batch.exceptions import TransformOutputError

__all__ = [
    "DEFAULT_RETRY",
    "BatchFunction",
    "FailedRow",
    "IsolatedRows",
    "Row",
    "TransformedBatch",
    "checked_batch",
    "one_row",
    "transform_rows",
]

Row = tuple[Any, ...]
BatchFunction = Callable[[list[Row]], list[Row]]

# The retries a failing row gets by default: 3 tries in all, waits of at most 2 ms then 4 ms
# (full jitter), once per round for all the failing rows of a batch. Rows fail mostly for good
# (bad data), so waits only slow the batch: with a poison row every 997 rows, 10 ms / 20 ms
# ceilings cost 5-10% of the rows/s against these. A transform that calls a flaky service
# should pass its own policy.
DEFAULT_RETRY = RetryPolicy(max_attempts=3, base_delay=0.002, max_delay=1.0)


class FailedRow(NamedTuple):
    """A source row that failed for good.

    :param row: the source row.
    :param error_type: the last error's class name.
    :param message: the last error's message.
    :param attempts: tries in all.
    """

    row: Row
    error_type: str
    message: str
    attempts: int


@dataclass
class TransformedBatch:
    """The outputs of a batch's rows that succeeded, and the rows that failed for good."""

    outputs: list[Row]
    failures: list[FailedRow]


class IsolatedRows(NamedTuple):
    """A batch's outputs aligned with its rows: ``outputs[i]`` is row ``i``'s output, or None
    when ``i`` is in ``failures``.

    :param outputs: one entry per input row.
    :param failures: input index -> the row's failure.
    """

    outputs: list[Row | None]
    failures: dict[int, FailedRow]

    def transformed(self) -> TransformedBatch:
        """Return the successes and the failures, apart."""
        if not self.failures:
            return TransformedBatch(self.outputs, [])  # type: ignore[arg-type]
        outputs = [out for i, out in enumerate(self.outputs) if i not in self.failures]
        return TransformedBatch(outputs, list(self.failures.values()))  # type: ignore[arg-type]


def checked_batch(fn: BatchFunction, rows: list[Row]) -> list[Row]:
    """Apply a batch function and check that it returned one output row per input row."""
    out = fn(rows)
    if len(out) != len(rows):
        raise TransformOutputError(
            f"the transform returned {len(out)} rows for {len(rows)} input rows; "
            "it must return exactly one output row per input row"
        )
    return out


def one_row(fn: BatchFunction, row: Row) -> Row:
    """Apply a batch function to a single row."""
    out = fn([row])
    if len(out) != 1:
        raise TransformOutputError(
            f"the transform returned {len(out)} rows for 1 input row; it must return exactly one"
        )
    return out[0]


def transform_rows(
    fn: BatchFunction,
    rows: list[Row],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> IsolatedRows:
    """Transform ``rows`` whole; when that fails, row by row with retries (module docstring).

    Only :class:`Exception` subclasses are isolated: a ``BaseException`` (``KeyboardInterrupt``,
    ``SystemExit``) propagates.

    :param fn: the batch function.
    :param rows: the batch.
    :param policy: tries per failing row in all (the row's first try alone included), waits.
    :param sleep: called with the seconds to wait between rounds (injectable for tests).
    :param rng: the jitter's source; a fresh ``random.Random()`` when None.
    """
    try:
        return IsolatedRows(checked_batch(fn, rows), {})  # type: ignore[arg-type]
    except Exception:
        pass  # some row raises: find which, row by row
    outputs: list[Row | None] = [None] * len(rows)
    errors: dict[int, Exception] = {}
    for i, row in enumerate(rows):
        try:
            outputs[i] = one_row(fn, row)
        except Exception as exc:
            errors[i] = exc
    failures: dict[int, FailedRow] = {}
    attempts = 1
    while errors:
        retry: list[int] = []
        for i, error in errors.items():
            if attempts < policy.max_attempts and policy.is_retryable(error):
                retry.append(i)
            else:
                failures[i] = FailedRow(rows[i], type(error).__name__, str(error), attempts)
        if not retry:
            break
        if rng is None:
            rng = random.Random()
        sleep(policy.delay(attempts - 1, rng))
        attempts += 1
        errors = {}
        for i in retry:
            try:
                outputs[i] = one_row(fn, rows[i])
            except Exception as exc:
                errors[i] = exc
    return IsolatedRows(outputs, dict(sorted(failures.items())))
