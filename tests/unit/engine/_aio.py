"""Running a test's coroutine in a fresh event loop, failing instead of hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# A hang or deadlock fails the test instead of blocking the suite; a safety net, not a timing
# assertion.
HANG_GUARD_SECONDS = 30


def run_guarded(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a fresh event loop; raise TimeoutError after HANG_GUARD_SECONDS."""

    async def guarded() -> T:
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            return await coro

    return asyncio.run(guarded())
