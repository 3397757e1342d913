"""The parent's handle on one worker process: start it, run one task on it, kill or stop it.

A task's fate is one of four outcomes, told apart by what becomes ready first on the worker's
private pipe and its process sentinel::

    run(payload) --send--> wait([pipe, sentinel], timeout)
        pipe has a reply          -> Completed(value) | Raised(error)
        pipe at EOF / sentinel    -> Died(exit code)     (the worker is gone)
        nothing before timeout    -> TimedOut(seconds)   (the worker is killed here)
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import threading
import time
from multiprocessing.connection import wait
from typing import Any, NamedTuple

from parallel_batch.engine.workers.launch import Launched, launch
from parallel_batch.engine.workers.worker import (
    OK,
    READY,
    START_FAILED,
    STOP,
    FramedPipe,
    RemoteError,
)
from parallel_batch.exceptions import WorkerStartError

__all__ = ["Completed", "Died", "Outcome", "Raised", "TimedOut", "WorkerProcess", "describe_exit"]

logger = logging.getLogger(__name__)

# How long a new worker may take to import its modules and run the initializer. Longer: a slow
# initializer (loading a model) still starts; shorter: a hung initializer is noticed sooner.
WORKER_START_TIMEOUT = 120.0
# How long a worker asked to stop (STOP sent) may take to exit before it is killed.
# Longer: atexit handlers in the worker finish; shorter: faster close().
WORKER_STOP_TIMEOUT = 5.0
# How long to wait for a killed (SIGKILL) process to be reaped; it cannot refuse.
WORKER_REAP_TIMEOUT = 10.0


class Completed(NamedTuple):
    """The task returned ``value``."""

    value: Any


class Raised(NamedTuple):
    """The task raised (or its function, arguments or value could not be pickled)."""

    error: RemoteError


class Died(NamedTuple):
    """The worker died while running the task (``exitcode`` negative: killed by that signal)."""

    pid: int
    exitcode: int | None


class TimedOut(NamedTuple):
    """The task ran past its timeout; the worker was killed."""

    pid: int
    seconds: float


Outcome = Completed | Raised | Died | TimedOut


def describe_exit(exitcode: int | None) -> str:
    """Return ``"exit code -9 (SIGKILL)"``, ``"exit code 3"`` or ``"an unknown exit code"``."""
    if exitcode is None:
        return "an unknown exit code"
    if exitcode < 0:
        try:
            return f"exit code {exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"exit code {exitcode} (signal {-exitcode})"
    return f"exit code {exitcode}"


class WorkerProcess:
    """One live worker process and the parent's end of its private pipe.

    The methods are called by the one thread that owns the worker, except :meth:`interrupt`,
    which any thread may call to cut a running task short (``close(cancel_pending=True)``).

    :param start_method: ``"exec"`` or a multiprocessing start method (see :mod:`.launch`).
    :param init_payload: ``pickle.dumps((initializer, initargs))``, run before the first task.
    :raises WorkerStartError: when the worker died, hung or its initializer raised.
    """

    def __init__(self, start_method: str, init_payload: bytes) -> None:
        parent_end, child_end = socket.socketpair()
        self._pipe = FramedPipe(parent_end.detach())
        self._lock = threading.Lock()
        self._exitcode: int | None = None
        self._reaped = False
        child_fd = child_end.detach()
        try:
            self._process: Launched = launch(start_method, child_fd)
        except BaseException:
            self._pipe.close()
            raise
        finally:
            os.close(child_fd)
        self.pid: int = self._process.pid
        self._await_ready(init_payload)

    def _ready_to_read(self, timeout: float | None) -> list[Any]:
        """Wait until the pipe has data or hit EOF, or the process exited; [] on timeout."""
        watched: list[Any] = [self._pipe]
        if self._process.sentinel is not None:
            watched.append(self._process.sentinel)
        return wait(watched, timeout)

    def _await_ready(self, init_payload: bytes) -> None:
        with contextlib.suppress(OSError):  # a worker dead at once is reported below
            self._pipe.send(init_payload)
        ready = self._ready_to_read(WORKER_START_TIMEOUT)
        if not ready:
            self._kill_and_reap()
            raise WorkerStartError(
                f"the worker process did not start within {WORKER_START_TIMEOUT:g} s"
            )
        message: tuple[str, Any] | None = None
        if self._pipe in ready:
            try:
                message = pickle.loads(self._pipe.recv())
            except (EOFError, OSError):
                message = None
        if message is not None and message[0] == READY:
            return
        exitcode = self._reap()
        if message is not None and message[0] == START_FAILED:
            error: RemoteError = message[1]
            raise WorkerStartError(
                f"the worker initializer raised {error.error_type}: {error.message}"
            ) from error.rebuild()
        raise WorkerStartError(f"the worker process died on start with {describe_exit(exitcode)}")

    def run(self, payload: bytes, timeout: float | None) -> Outcome:
        """Send one pickled task and return its outcome; after Died or TimedOut the worker is gone."""
        try:
            self._pipe.send(payload)
        except OSError:  # EPIPE: the worker died (or was killed) before or while reading
            return Died(self.pid, self._reap())
        started = time.monotonic()
        ready = self._ready_to_read(timeout)
        if self._pipe in ready:
            try:
                reply = self._pipe.recv()
            except (EOFError, OSError):
                return Died(self.pid, self._reap())
            try:
                tag, value = pickle.loads(reply)
            except Exception as exc:  # a value the parent cannot unpickle
                return Raised(RemoteError.capture(exc))
            return Completed(value) if tag == OK else Raised(value)
        if ready:
            return Died(self.pid, self._reap())
        self._kill_and_reap()
        return TimedOut(self.pid, time.monotonic() - started)

    def interrupt(self) -> None:
        """Kill the worker now (SIGKILL) from any thread; its owner sees the task as Died."""
        with self._lock:
            if not self._reaped:
                self._process.kill()

    def kill(self) -> None:
        """Kill the worker now (SIGKILL) and reap it."""
        self._kill_and_reap()

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not in time; reap it."""
        with contextlib.suppress(OSError):  # already dead
            self._pipe.send(STOP)
        if self._process.wait(WORKER_STOP_TIMEOUT) is None:
            logger.warning(
                "Worker pid %d did not exit within %.0f s of being asked to; killing it",
                self.pid,
                WORKER_STOP_TIMEOUT,
            )
            self._kill_and_reap()
        else:
            self._reap()

    def _kill_and_reap(self) -> int | None:
        self.interrupt()
        return self._reap()

    def _reap(self) -> int | None:
        """Wait for the dead (or dying) worker, release its resources, return its exit code."""
        if self._reaped:
            return self._exitcode
        exitcode = self._process.wait(WORKER_REAP_TIMEOUT)
        self._pipe.close()
        with self._lock:
            self._exitcode = exitcode
            if exitcode is not None:
                self._process.close()  # frees descriptors now, not at garbage collection
                self._reaped = True
        return exitcode
