"""Read batches on a background thread, a bounded number ahead of the consumer.

While the consumer transforms and commits batch ``n``, the thread already reads batch ``n + 1``
from the database (a query on the reader's own connection, mostly waiting on the server, which
releases the GIL)::

    thread: next(batches) --put--> queue (at most `depth` batches) --get--> consumer

At most ``depth`` batches wait in the queue and one more is being read, so memory stays bounded.
:meth:`ReadAhead.close` (also on ``with`` exit) stops the thread and closes the source generator
in the thread that runs it, so the reader's connection is idle when the caller closes it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from parallel_batch.engine.closing import Closing

T = TypeVar("T")

# How often a blocked put() looks whether the consumer has gone (close()). Shorter: a faster
# close; longer: fewer wake-ups. It never delays a batch: put() returns as soon as there is room.
_PUT_POLL_SECONDS = 0.1


class _End:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead(Closing, Generic[T]):
    """Iterate ``source`` on a thread, keeping at most ``depth`` items ready ahead.

    :param source: the iterator to read (a generator of batches); it is only touched by the thread.
    :param depth: items read ahead and waiting, at least 1.
    :param name: the thread's name.
    """

    def __init__(self, source: Iterator[T], *, depth: int = 1, name: str = "read-ahead") -> None:
        if depth < 1:
            raise ValueError("depth must be greater than 0")
        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_PUT_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_End())
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(_Failed(exc))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if isinstance(item, _End):
            self._queue.put(item)  # stay exhausted
            raise StopIteration
        if isinstance(item, _Failed):
            self._queue.put(item)
            raise item.error
        result: T = item
        return result

    def close(self) -> None:
        """Stop reading ahead and wait for the thread (at most the end of its current read)."""
        self._stop.set()
        while True:  # unblock a put() that is waiting for room
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
