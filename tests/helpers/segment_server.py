"""Test helper: a real HTTP segment service on 127.0.0.1, in a thread, with injectable faults.

``GET /segment?email=customerN@example.com`` answers ``{"segment": "seg-<N % 3>"}`` after
``delay`` seconds, unless a rule for the email says otherwise: ``fail_first[email] = k`` answers
503 to its first k requests; ``always_fail`` emails always get 503; ``slow_first[email] = k``
sleeps ``slow_seconds`` on its first k requests (past the client's timeout); ``fixed[email] =
(status, body)`` always answers that. The server counts requests per email and the most requests
in flight at once (a request counts until its answer starts to go out).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

_ID = re.compile(r"(\d+)@")


def segment_of(email: str) -> str:
    """The segment the server gives an email."""
    match = _ID.search(email)
    return f"seg-{int(match.group(1)) % 3}" if match else "seg-x"


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: many clients connecting at once would have
    # their SYNs dropped and retried a second later.
    request_queue_size = 1024


class SegmentServer:
    """The service; use ``with SegmentServer() as server: server.url``.

    :param delay: seconds each answer takes (so that requests overlap).
    """

    def __init__(self, *, delay: float = 0.0, slow_seconds: float = 2.0) -> None:
        self.delay = delay
        self.slow_seconds = slow_seconds
        self.fail_first: dict[str, int] = {}
        self.always_fail: set[str] = set()
        self.slow_first: dict[str, int] = {}
        self.fixed: dict[str, tuple[int, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/segment"

    def __enter__(self) -> SegmentServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _answer(self, email: str) -> tuple[int, Any, float]:
        with self._lock:
            self.requests[email] += 1
            count = self.requests[email]
        if email in self.fixed:
            status, body = self.fixed[email]
            return status, body, self.delay
        if email in self.always_fail or count <= self.fail_first.get(email, 0):
            return 503, {"error": "unavailable"}, self.delay
        if count <= self.slow_first.get(email, 0):
            return 200, {"segment": segment_of(email)}, self.slow_seconds
        return 200, {"segment": segment_of(email)}, self.delay

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits for a delayed ACK (40 ms)

            def do_GET(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    query = parse_qs(urlparse(self.path).query)
                    email = query.get("email", [""])[0]
                    status, body, delay = server._answer(email)
                    if delay:
                        time.sleep(delay)
                finally:
                    # Answered from here on: the client may send its next request as soon as it
                    # reads the answer, so the count drops before the answer goes out.
                    with server._lock:
                        server.in_flight -= 1
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
