"""dag.test() runs of the example DAGs (dags/examples/), one per transform kind, as a user copies
them: the rows kind's fan-out, the dataframe kind's column-at-a-time figures, the async kind
against a real HTTP tier service on 127.0.0.1 (one of its answers a 503, retried)."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from parallel_batch.core.job import DATAFRAME_BATCH_ROWS
from parallel_batch.demo import events as demo
from tests.airflow.dagrun import load_dag, run_dag

ROWS = 3_000
_USER = re.compile(r"^/users/(\d+)$")


def _summary(result: Any, group: str) -> dict[str, Any]:
    assert result.state == "success", result.tis
    summary = result.xcom(f"{group}.summarize")
    assert summary is not None
    return dict(summary)


def test_example_rows_splits_each_amount_into_parts(
    parallel_batch_conn: str, pg_conn: psycopg.Connection
) -> None:
    demo.seed_events(pg_conn, ROWS)
    summary = _summary(run_dag(load_dag("example_rows"), {}), "parts")

    # Every event's parts: ceil(cents / 100000) of them, numbered from 0, adding up to its amount.
    wrong = pg_conn.execute(
        """
        SELECT count(*) FROM demo.events e FULL JOIN (
            SELECT event_id, count(*) AS n, sum(amount_cents) AS cents, max(part) AS last
            FROM demo.event_parts GROUP BY event_id
        ) p ON p.event_id = e.id
        WHERE e.id IS NULL OR p.event_id IS NULL OR p.cents <> (e.amount * 100)::bigint
           OR p.n <> ceil(e.amount * 100 / 100000.0) OR p.last <> p.n - 1
        """
    ).fetchone()
    parts = pg_conn.execute("SELECT count(*) FROM demo.event_parts").fetchone()
    assert wrong is not None and parts is not None
    assert wrong[0] == 0
    assert parts[0] > ROWS  # amounts above 1000.00 fan out
    assert summary["rows_read"] == ROWS
    assert summary["rows_written"] == parts[0]
    assert summary["rows_fanout"] == parts[0] - ROWS
    assert summary["dead_letters"] == 0


def test_example_dataframe_computes_the_stats_of_every_event(
    parallel_batch_conn: str, pg_conn: psycopg.Connection
) -> None:
    demo.seed_events(pg_conn, ROWS)
    summary = _summary(run_dag(load_dag("example_dataframe"), {}), "stats")

    wrong = pg_conn.execute(
        """
        SELECT count(*) FROM demo.events e FULL JOIN demo.event_stats s USING (id)
        WHERE e.id IS NULL OR s.id IS NULL
           OR s.user_bucket IS DISTINCT FROM e.user_id % 100
           OR s.payload_length IS DISTINCT FROM length(e.payload)
           OR s.amount_cents IS DISTINCT FROM round(e.amount * 100)::bigint
           OR s.big IS DISTINCT FROM (round(e.amount * 100) > 500000)
        """
    ).fetchone()
    assert wrong is not None and wrong[0] == 0
    assert (summary["rows_read"], summary["rows_written"], summary["dead_letters"]) == (
        ROWS,
        ROWS,
        0,
    )
    # The example gives no batch_rows: the job runs with the dataframe kind's default.
    stored = pg_conn.execute(
        "SELECT params -> 'spec' ->> 'batch_rows' FROM parallel_batch.jobs"
        " WHERE params -> 'spec' ->> 'target_table' = 'demo.event_stats'"
    ).fetchall()
    assert stored == [(str(DATAFRAME_BATCH_ROWS),)]


class _TierService:
    """``GET /users/{id}`` -> ``{"tier": "tier-<id % 3>"}`` after ``delay`` s; the first request
    for each user in ``fail_first`` answers 503. Counts requests per user and the most in flight."""

    def __init__(self, delay: float, fail_first: set[int]) -> None:
        self.delay = delay
        self.fail_first = fail_first
        self.requests: Counter[int] = Counter()
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.request_queue_size = 1024
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                match = _USER.match(self.path)
                user = int(match.group(1)) if match else -1
                with service._lock:
                    service.requests[user] += 1
                    first = service.requests[user] == 1
                    service.in_flight += 1
                    service.max_in_flight = max(service.max_in_flight, service.in_flight)
                threading.Event().wait(service.delay)
                with service._lock:
                    service.in_flight -= 1
                if match is None or (first and user in service.fail_first):
                    status, body = (404, {}) if match is None else (503, {"error": "busy"})
                else:
                    status, body = 200, {"tier": f"tier-{user % 3}"}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> _TierService:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def tier_service(pg_conn: psycopg.Connection) -> Iterator[_TierService]:
    """The service, answering in 50 ms; the first request for the first event's user fails."""
    demo.seed_events(pg_conn, ROWS // 10)
    row = pg_conn.execute("SELECT user_id FROM demo.events WHERE id = 1").fetchone()
    assert row is not None
    with _TierService(delay=0.05, fail_first={row[0]}) as service:
        yield service


def test_example_async_looks_every_user_up_many_at_a_time(
    parallel_batch_conn: str, pg_conn: psycopg.Connection, tier_service: _TierService
) -> None:
    rows = ROWS // 10
    summary = _summary(run_dag(load_dag("example_async"), {"url": tier_service.url}), "tiers")

    wrong = pg_conn.execute(
        "SELECT count(*) FROM demo.events e FULL JOIN demo.event_tiers t USING (id)"
        " WHERE e.id IS NULL OR t.id IS NULL OR t.user_id IS DISTINCT FROM e.user_id"
        " OR t.tier IS DISTINCT FROM 'tier-' || (e.user_id % 3)"
    ).fetchone()
    assert wrong is not None and wrong[0] == 0
    assert (summary["rows_read"], summary["rows_written"], summary["dead_letters"]) == (
        rows,
        rows,
        0,
    )
    assert max(tier_service.requests.values()) == 2  # the 503 was retried, once
    # never more in flight than the DAG's concurrency (32), and many at once: the small clients
    # share the requests
    assert 16 <= tier_service.max_in_flight <= 32
