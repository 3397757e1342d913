"""The worker process side of the worker pool: the loop that runs in each child, and its messages.

Each worker owns one private socket pair to the parent, so the parent always knows which task a
worker was running when it died, and a worker that dies mid-message can only break its own pipe::

    parent                                   worker (this module)
      | pickle((initializer, initargs)) -->    | initializer(*initargs)
      |                       <-- (READY, pid) | or (START_FAILED, RemoteError)
      | pickle((fn_bytes, args)) -->           | fn(*args)
      |                     <-- (OK, value)    | or (RAISED, RemoteError)
      | STOP (or EOF) -->                      | exit 0

A task is one plain call: the batch protocol (isolating the items that raise) is a function the
pool sends like any other (:mod:`~parallel_batch.engine.workers.apply`). Every new worker imports
this module, and the ``exec`` start method starts a fresh interpreter for each, so it imports
nothing heavy (no multiprocessing, no traceback until needed).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import threading
import time
from typing import Any, NamedTuple

from parallel_batch.exceptions import WorkerTaskError

__all__ = [
    "OK",
    "RAISED",
    "READY",
    "START_FAILED",
    "STOP",
    "FramedPipe",
    "RemoteError",
    "RemoteTraceback",
    "exec_main",
    "mp_main",
    "worker_main",
]

# Message tags, worker -> parent.
READY = "ready"
START_FAILED = "start_failed"
OK = "ok"
RAISED = "raised"
# Parent -> worker: exit now. Sent rather than relying on EOF alone, because with the fork start
# method other workers inherit the parent's end of this pipe and EOF would never come.
STOP = b""

# How often a worker checks that its parent is still alive. Shorter: an orphan (its parent was
# SIGKILLed) stops sooner; longer: fewer wake-ups of an idle worker (negligible either way).
PARENT_CHECK_INTERVAL = 0.5
# Exit code of a worker that noticed its parent died.
EXIT_PARENT_GONE = 70
# Largest read from the pipe at once. Larger: fewer system calls for big batches; smaller:
# a smaller transient buffer.
_READ_CHUNK = 1 << 20
_HEADER = struct.Struct("!Q")  # message length, 8 bytes big-endian


class FramedPipe:
    """One end of a worker's pipe: whole, length-prefixed messages over a socket descriptor.

    :param fd: the file descriptor (owned by this object from now on).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def send(self, data: bytes) -> None:
        """Send one message; raises OSError (EPIPE) when the other end is gone."""
        self._write(_HEADER.pack(len(data)))
        self._write(data)

    def recv(self) -> bytes:
        """Receive one message; raises EOFError when the other end closed or died."""
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        return self._read(size)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _read(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = os.read(self._fd, min(size, _READ_CHUNK))
            if not chunk:
                raise EOFError("the other end of the worker pipe is closed")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker, set as its ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class RemoteError(NamedTuple):
    """An exception raised in a worker, as sent to the parent.

    :param error_type: the exception's class name.
    :param message: ``str()`` of the exception.
    :param traceback: the worker's formatted traceback.
    :param exception: the pickled exception, or None when it could not be pickled.
    """

    error_type: str
    message: str
    traceback: str
    exception: bytes | None

    @classmethod
    def capture(cls, exc: BaseException) -> RemoteError:
        """Describe ``exc`` (raised in this process) so that it can be sent to the parent."""
        import traceback  # only when something failed: keeps worker start-up lean

        try:
            pickled: bytes | None = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        except Exception:
            pickled = None
        return cls(
            error_type=type(exc).__name__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            exception=pickled,
        )

    def rebuild(self) -> BaseException:
        """Return the original exception (or a :class:`WorkerTaskError` in its place) with the
        worker's traceback chained as its ``__cause__``."""
        exc: BaseException | None = None
        if self.exception is not None:
            try:
                exc = pickle.loads(self.exception)
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            exc = WorkerTaskError(f"{self.error_type}: {self.message}")
        exc.__cause__ = RemoteTraceback(self.traceback)
        return exc


def exec_main(fd: int) -> None:
    """Entry point of a worker started by the ``exec`` start method (a fresh interpreter)."""
    worker_main(FramedPipe(fd))


def mp_main(conn: Any) -> None:
    """Entry point (Process target) of a worker started by a multiprocessing start method.

    :param conn: a ``multiprocessing.connection.Connection``; only its descriptor is used.
    """
    fd = os.dup(conn.fileno())
    conn.close()
    worker_main(FramedPipe(fd))


def worker_main(pipe: FramedPipe) -> None:
    """Run tasks sent over ``pipe`` until the parent says STOP or goes away."""
    # Ctrl-C reaches the whole process group: the parent decides, workers keep going until told.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    try:
        initializer, initargs = pickle.loads(pipe.recv())
        if initializer is not None:
            initializer(*initargs)
    except EOFError:
        return
    except Exception as exc:
        pipe.send(_dumps((START_FAILED, RemoteError.capture(exc))))
        return
    pipe.send(_dumps((READY, os.getpid())))
    loaded: list[Any] = []  # [fn_bytes, fn] of the last task: the next one often reuses it
    while True:
        try:
            request = pipe.recv()
        except (EOFError, OSError):
            return  # the parent is gone or closed the pipe
        if request == STOP:
            return
        pipe.send(_call(request, loaded))
        del request  # the task's items are not kept alive while the worker waits


def _call(request: bytes, loaded: list[Any]) -> bytes:
    """Run one task and return the pickled reply: fn's value, or the error it raised (or the
    error loading fn or its arguments, or pickling the value). ``loaded`` caches the last fn."""
    try:
        fn_bytes, args = pickle.loads(request)
        if not loaded or loaded[0] != fn_bytes:
            loaded[:] = [fn_bytes, pickle.loads(fn_bytes)]
        return _dumps((OK, loaded[1](*args)))
    except Exception as exc:
        return _dumps((RAISED, RemoteError.capture(exc)))


def _dumps(message: tuple[str, Any]) -> bytes:
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def _exit_with_parent() -> None:
    """Exit soon after the parent process dies, even in the middle of a long task.

    Without this, a parent killed with SIGKILL (an Airflow task past its heartbeat, the OOM
    killer) would leave its workers running their current task as orphans. A changed parent
    pid means this process was re-parented (to init or a subreaper): its parent is gone. Under
    the forkserver start method the parent is the fork server, which exits with the pool's
    process.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_INTERVAL)
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="parallel-batch-parent-watch", daemon=True).start()
