"""How worker processes are started: the ``exec`` start method, or one of multiprocessing's.

``exec`` (the default) starts each worker as a fresh interpreter (fork + exec through
``subprocess``, safe in a threaded parent) that imports only :mod:`.worker`, then ``fn``'s
module on its first task. multiprocessing's ``spawn`` and ``forkserver`` also re-run the
parent's ``__main__`` in every worker (on Python 3.11 the fork server never preloads it), and an
Airflow task's ``__main__`` is the ``airflow`` entry script: each worker, and each replacement
after a crash, would import Airflow again (seconds instead of tens of milliseconds; see
``bench/bench_pool.py``). ``fork`` is the fastest but copies a threaded parent mid-flight (locks
held by its other threads stay held in the child), so it is never the default.

A started process is seen through :class:`Launched`: its pid, a sentinel that becomes readable
when it exits, and kill / wait / close.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Protocol

from parallel_batch.engine.workers.worker import mp_main

__all__ = ["EXEC", "Launched", "launch", "start_methods"]

EXEC = "exec"


# "fork" is not offered: a forked worker inherits the parent's descriptors, the other workers'
# sockets and exit sentinels included, so a dead worker's end-of-file is never seen while a
# sibling forked after it lives (the pool would wait for it forever); it also copies a threaded
# parent (Airflow's task process) with its locks held mid-flight.
_UNSAFE_START_METHODS = frozenset({"fork"})


def start_methods() -> list[str]:
    """Return the start methods the pool offers here, ``exec`` first (never ``fork``)."""
    offered = multiprocessing.get_all_start_methods()
    return [EXEC, *(m for m in offered if m not in _UNSAFE_START_METHODS)]


class Launched(Protocol):
    """A started worker process, whatever started it."""

    pid: int
    sentinel: int | None  # a descriptor readable once the process exited, when there is one

    def kill(self) -> None:
        """Send SIGKILL unless the process was already reaped."""

    def wait(self, timeout: float | None) -> int | None:
        """Wait for the exit and return the exit code (negative: killed by that signal), or None
        when the process is still running after ``timeout`` seconds."""

    def close(self) -> None:
        """Release the parent's resources for the process (after it was reaped)."""


def launch(start_method: str, child_fd: int) -> Launched:
    """Start a worker process that runs :func:`.worker.worker_main` on ``child_fd``.

    The caller keeps ownership of ``child_fd`` and closes it once this returns.
    """
    if start_method == EXEC:
        return _ExecProcess(child_fd)
    return _MultiprocessingProcess(multiprocessing.get_context(start_method), child_fd)


class _ExecProcess:
    """A worker started as a fresh interpreter running only the worker module."""

    def __init__(self, child_fd: int) -> None:
        # The parent's sys.path first, so the worker imports this package and fn's module from
        # where the parent did (e.g. Airflow's plugins folder), as spawn does.
        path = [os.fspath(entry) for entry in sys.path if isinstance(entry, str | os.PathLike)]
        code = (
            f"import sys; sys.path[:] = {path!r}; "
            "from parallel_batch.engine.workers.worker import exec_main; "
            f"exec_main({child_fd})"
        )
        self._popen = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=(child_fd,), stdin=subprocess.DEVNULL
        )
        self.pid: int = self._popen.pid
        self.sentinel: int | None = None
        if hasattr(os, "pidfd_open"):  # Linux 5.3+; elsewhere the closed pipe tells of a death
            try:
                self.sentinel = os.pidfd_open(self.pid)
            except OSError:
                self.sentinel = None

    def kill(self) -> None:
        self._popen.kill()  # a no-op once the process was reaped

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None


class _MultiprocessingProcess:
    """A worker started by a multiprocessing context (spawn, forkserver or fork)."""

    def __init__(self, context: multiprocessing.context.BaseContext, child_fd: int) -> None:
        conn = Connection(os.dup(child_fd))  # the context hands it over to the child
        self._process = context.Process(  # type: ignore[attr-defined]
            target=mp_main, args=(conn,), name="parallel-batch-worker", daemon=True
        )
        try:
            self._process.start()
        finally:
            conn.close()
        self.pid: int = self._process.pid
        self.sentinel: int | None = self._process.sentinel

    def kill(self) -> None:
        self._process.kill()

    def wait(self, timeout: float | None) -> int | None:
        self._process.join(timeout)
        exitcode: int | None = self._process.exitcode
        return exitcode

    def close(self) -> None:
        self._process.close()
