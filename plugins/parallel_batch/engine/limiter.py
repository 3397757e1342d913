"""An asyncio concurrency limiter: at most ``limit`` coroutines run at once, the others wait in FIFO order.

Used for I/O-bound work (HTTP enrichment, database calls) where a process pool would be waste::

    acquire() --slot free and nobody waiting--> running += 1
         \\--otherwise--> waiters (FIFO) --release() hands the slot straight to the oldest waiter

A released slot is handed to the oldest waiter directly instead of being put back up for grabs,
so a newcomer can never overtake a waiter (strict FIFO) and ``running`` never exceeds ``limit``.
A waiter that is cancelled leaves the queue; one that is cancelled just after a slot was handed
to it passes the slot on; a task that fails releases its slot on the way out. No slot leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import NamedTuple, ParamSpec, TypeVar

__all__ = ["ConcurrencyLimiter", "LimiterStatistics"]

P = ParamSpec("P")
R = TypeVar("R")


class LimiterStatistics(NamedTuple):
    """A limiter's state at one moment.

    :param limit: the most coroutines that may run at once.
    :param running: slots taken now.
    :param waiting: coroutines queued for a slot.
    """

    limit: int
    running: int
    waiting: int


class ConcurrencyLimiter:
    """Lets at most ``limit`` coroutines run at once; the others wait their turn, first come first served.

    Use ``async with limiter:`` around a block, or ``await limiter.run(fn, *args, **kwargs)`` for
    one call. Bound to the event loop it is first used in.

    :param limit: the most coroutines that may hold a slot at once.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be greater than 0")
        self._limit = limit
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """The most coroutines that may hold a slot at once."""
        return self._limit

    def statistics(self) -> LimiterStatistics:
        """Return the limit, the slots taken and the number of waiters now."""
        return LimiterStatistics(self._limit, self._running, len(self._waiters))

    async def acquire(self) -> None:
        """Take a slot, waiting (FIFO) until one is free. Prefer ``async with`` or :meth:`run`."""
        if self._running < self._limit and not self._waiters:
            self._running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed to us just before we were cancelled: pass it on.
                self.release()
            else:
                # Still queued, unless a release() already dropped it as cancelled.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        # release() handed its slot over to us: `running` already counts it.

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if there is one, else to the pool of free slots."""
        if self._running <= 0:
            raise RuntimeError("release() called more times than acquire()")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._running -= 1

    async def run(self, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` in a slot, and give the slot back however it ends.

        :param fn: an async callable (or any callable returning an awaitable).
        """
        async with self:
            return await fn(*args, **kwargs)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<ConcurrencyLimiter limit={s.limit} running={s.running} waiting={s.waiting}>"
