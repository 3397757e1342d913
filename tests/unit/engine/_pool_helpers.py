"""Batch functions for the worker pool tests: they run in worker processes, so they live at
module level in a module the workers can import.

Items are strings; a prefix marks what happens to the worker that processes the item.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from typing import TypeVar

T = TypeVar("T")

CRASH = "crash:"  # os._exit(3), like a C extension calling exit()
KILL = "kill:"  # SIGKILL to itself, like the OOM killer
SEGV = "segv:"  # SIGSEGV to itself, like a segfault
RAISE = "raise:"  # a ValueError
SLEEP = "sleep:"  # sleeps past any timeout in the tests


class NeedsTwoArgsError(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ needs two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def upper(items: list[str]) -> list[str]:
    """Uppercase each item, dying, raising or sleeping on marked items."""
    out = []
    for item in items:
        if item.startswith(CRASH):
            os._exit(3)
        if item.startswith(KILL):
            os.kill(os.getpid(), signal.SIGKILL)
        if item.startswith(SEGV):
            os.kill(os.getpid(), signal.SIGSEGV)
        if item.startswith(RAISE):
            raise ValueError(f"bad item {item}")
        if item.startswith(SLEEP):
            time.sleep(60)
        out.append(item.upper())
    return out


def echo(items: list[T]) -> list[T]:
    """Return the items unchanged."""
    return list(items)


def pids(items: list[T]) -> list[int]:
    """Return the worker's pid once per item."""
    return [os.getpid()] * len(items)


def sleep_then_pid(items: list[float]) -> list[int]:
    """Sleep for the sum of the items, then return the worker's pid."""
    time.sleep(sum(items))
    return [os.getpid()]


def raise_unpicklable(items: list[str]) -> list[str]:
    """Raise an exception the parent cannot unpickle."""
    raise NeedsTwoArgsError("first", "second")


def not_a_list(items: list[str]) -> tuple[str, ...]:
    """Return a tuple instead of a list."""
    return tuple(items)


def sha256_rounds(items: list[str], rounds: int = 200) -> list[str]:
    """CPU-bound work: ``rounds`` chained SHA-256 digests of each item."""
    out = []
    for item in items:
        digest = item.encode()
        for _ in range(rounds):
            digest = hashlib.sha256(digest).digest()
        out.append(digest.hex())
    return out


def read_marker(items: list[str]) -> list[str]:
    """Return the value the initializer set in this worker, once per item."""
    return [os.environ.get("POOL_TEST_MARKER", "unset")] * len(items)


def set_marker(value: str) -> None:
    """Initializer: remember ``value`` in this worker's environment."""
    os.environ["POOL_TEST_MARKER"] = value


def failing_initializer() -> None:
    """Initializer that always raises."""
    raise RuntimeError("no model file")


def lock_on_marker(items: list[str]) -> list[object]:
    """Return each item, or a lock (which cannot be pickled back) for an item "lock"."""
    return [threading.Lock() if item == "lock" else item for item in items]


def add(a: int, b: int) -> int:
    """A plain call for WorkerPool.submit."""
    return a + b


def die(code: int) -> None:
    """A plain call that kills its worker with os._exit(code)."""
    os._exit(code)


def fail(message: str) -> None:
    """A plain call that raises ValueError(message)."""
    raise ValueError(message)
