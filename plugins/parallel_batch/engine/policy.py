"""How often and how patiently to retry one item: :class:`RetryPolicy`, shared by the retry
collector (:mod:`~parallel_batch.engine.retry`) and failure isolation
(:mod:`~parallel_batch.engine.isolation`).

A module of its own, importing nothing heavy: every worker process imports it (through
isolation) when it runs its first batch, so a replacement worker starts no slower for it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


def _is_exception_class_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(cls, type) and issubclass(cls, BaseException) for cls in value
    )


def _is_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one item.

    The wait before retry ``n`` (0 for the first retry) is drawn uniformly from
    ``[0, min(max_delay, base_delay * multiplier ** n)]`` ("full jitter"): retries of many items
    that failed together spread out instead of hitting a recovering service in waves.

    :param max_attempts: tries per item in all, the first one included (1: never retry).
    :param base_delay: seconds; the ceiling of the first wait.
    :param max_delay: seconds; no wait is longer, however many attempts were made.
    :param multiplier: how much the ceiling grows from one retry to the next.
    :param retry_on: exception classes worth retrying (transient errors).
    :param give_up_on: exception classes never retried, even when also in ``retry_on``
        (e.g. ``retry_on=(OSError,), give_up_on=(FileNotFoundError,)``).
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 10.0
    multiplier: float = 2.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise ValueError("max_attempts must be greater than 0")
        if not _is_seconds(self.base_delay):
            raise ValueError("base_delay must be a finite number of seconds, 0 or more")
        if not _is_seconds(self.max_delay) or self.max_delay < self.base_delay:
            raise ValueError("max_delay must be a finite number of seconds, at least base_delay")
        if (
            not isinstance(self.multiplier, int | float)
            or not math.isfinite(self.multiplier)
            or self.multiplier < 1
        ):
            raise ValueError("multiplier must be a finite number, 1 or more")
        if not _is_exception_class_tuple(self.retry_on):
            raise ValueError("retry_on must be a tuple of exception classes")
        if not _is_exception_class_tuple(self.give_up_on):
            raise ValueError("give_up_on must be a tuple of exception classes")

    def is_retryable(self, error: BaseException) -> bool:
        """Return whether ``error`` is worth another attempt (attempts left aside)."""
        return isinstance(error, self.retry_on) and not isinstance(error, self.give_up_on)

    def delay_ceiling(self, retry: int) -> float:
        """Return the longest wait before retry number ``retry`` (0 for the first retry)."""
        if retry < 0:
            raise ValueError("retry must be 0 or more")
        if self.base_delay == 0:
            return 0.0
        try:
            return min(self.max_delay, self.base_delay * self.multiplier**retry)
        except OverflowError:
            return self.max_delay

    def delay(self, retry: int, rng: random.Random) -> float:
        """Draw the wait before retry number ``retry``: uniform in ``[0, delay_ceiling(retry)]``."""
        return rng.uniform(0.0, self.delay_ceiling(retry))
