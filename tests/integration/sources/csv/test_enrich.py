"""The async transform kind on the CSV path: HTTP enrichment (``include.transforms.customers:enrich``)
against a real HTTP server on 127.0.0.1 with injected 5xx, timeouts and refusals, into a real
PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from include.transforms.customers import MAX_CONNECTIONS, RETRY_ON
from parallel_batch.core.planning import stored_spec
from parallel_batch.core.transforms import TransformSpec, retry_policy
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import source_from_dict
from tests.helpers.customers_csv import customers_csv, dead_letters, target_rows
from tests.helpers.segment_server import SegmentServer, segment_of
from tests.integration.sources.csv.csv_jobs import customers_spec, plan, run

ENRICH = "include.transforms.customers:enrich"
HEADER = b"id,name,email,amount,note,created_at\r\n"


@pytest.fixture
def server() -> Iterator[SegmentServer]:
    """A segment service on 127.0.0.1."""
    with SegmentServer() as running:
        yield running


def _enrich(
    url: str, *, max_attempts: int = 3, concurrency: int = 16, **kwargs: Any
) -> TransformSpec:
    """The enrichment transform, retrying what RETRY_ON names with waits of at most 10, 20, 40 ms."""
    policy = RetryPolicy(
        max_attempts=max_attempts, base_delay=0.01, max_delay=0.05, retry_on=RETRY_ON
    )
    return TransformSpec(ENRICH, "async", concurrency, policy, {"url": url, **kwargs})


def _file(tmp_path: Path, emails: list[str | None]) -> Path:
    """A customers file with record i + 1 holding ``emails[i]`` (None: an empty field)."""
    path = tmp_path / "customers.csv"
    path.write_bytes(
        HEADER
        + b"".join(
            f"{i},Name {i},{email or ''},1.00,,2024-01-01T00:00:00Z\r\n".encode()
            for i, email in enumerate(emails, 1)
        )
    )
    return path


def _load(url: str, path: Path, transform: TransformSpec, job_key: str = "enrich") -> None:
    spec = customers_spec(url, path, transform=transform)
    job = plan(url, job_key, spec, chunks=1)
    (summary,) = run(url, job, spec)
    assert summary.reconciles


def _segments(conn: psycopg.Connection) -> dict[int, Any]:
    return dict(conn.execute("SELECT id, segment FROM demo.customers").fetchall())


def _letters(conn: psycopg.Connection) -> dict[int, tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT line_number, error_type, message, attempts FROM parallel_batch.dead_letters"
    ).fetchall()
    return {line: (error_type, message, attempts) for line, error_type, message, attempts in rows}


def test_segments_come_from_the_server(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, server: SegmentServer
) -> None:
    """Test that each record gets the server's segment, and a record without email no request."""
    path = _file(tmp_path, ["customer1@example.com", None, "customer5@example.com"])

    _load(pg_url, path, _enrich(server.url))

    assert _segments(pg_conn) == {1: "seg-1", 2: None, 3: "seg-2"}
    assert sum(server.requests.values()) == 2
    assert _letters(pg_conn) == {}


def test_email_is_sent_url_encoded(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, server: SegmentServer
) -> None:
    """Test that an email with '+' and '&' reaches the server intact as the email parameter."""
    _load(pg_url, _file(tmp_path, ["a+b&c=d7@example.com"]), _enrich(server.url))

    assert list(server.requests) == ["a+b&c=d7@example.com"]
    assert _segments(pg_conn) == {1: "seg-1"}


def test_a_server_failing_twice_is_retried(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, server: SegmentServer
) -> None:
    """Test that 503 twice then 200 gives the segment after exactly three requests."""
    server.fail_first["customer7@example.com"] = 2

    _load(pg_url, _file(tmp_path, ["customer7@example.com"]), _enrich(server.url))

    assert _segments(pg_conn) == {1: "seg-1"}
    assert server.requests["customer7@example.com"] == 3


def test_a_server_that_always_fails_gives_up_after_max_attempts(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, server: SegmentServer
) -> None:
    """Test that a record whose lookup always gets 503 is a dead letter after max_attempts
    requests, and the rest of its batch loads."""
    server.always_fail.add("customer8@example.com")
    path = _file(tmp_path, ["customer9@example.com", "customer8@example.com"])

    _load(pg_url, path, _enrich(server.url, max_attempts=3))

    assert _segments(pg_conn) == {1: "seg-0"}
    assert _letters(pg_conn) == {
        3: ("EnrichmentServerError", "the enrichment service answered HTTP 503", 3)
    }
    assert server.requests["customer8@example.com"] == 3


def test_timeouts_are_retried(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that a request past the timeout is retried, and one always slow fails as a timeout."""
    path = _file(tmp_path, ["customer1@example.com", "customer2@example.com"])
    with SegmentServer(slow_seconds=1.0) as server:
        server.slow_first["customer1@example.com"] = 1
        server.slow_first["customer2@example.com"] = 99

        _load(pg_url, path, _enrich(server.url, max_attempts=2, timeout=0.2))

    assert _segments(pg_conn) == {1: "seg-1"}
    assert server.requests["customer1@example.com"] == 2
    [(error_type, _, attempts)] = _letters(pg_conn).values()
    assert (error_type, attempts) == ("ReadTimeout", 2)


def test_connection_errors_are_retried(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that a refused connection is retried, then reported as ConnectError."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    _load(
        pg_url,
        _file(tmp_path, ["customer1@example.com"]),
        _enrich(f"http://127.0.0.1:{port}/segment", max_attempts=3),
    )

    assert _segments(pg_conn) == {}
    [(error_type, _, attempts)] = _letters(pg_conn).values()
    assert (error_type, attempts) == ("ConnectError", 3)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((404, {"error": "unknown"}), "the enrichment service refused the request: HTTP 404"),
        (
            (200, ["not", "an", "object"]),
            "the enrichment service's answer is not a JSON object with a 'segment'",
        ),
        (
            (200, {"segment": 7}),
            "the enrichment service's 'segment' is a int, not a string or null",
        ),
    ],
)
def test_refusals_and_bad_answers_fail_at_once(
    pg_url: str,
    pg_conn: psycopg.Connection,
    target: str,
    tmp_path: Path,
    server: SegmentServer,
    answer: tuple[int, object],
    message: str,
) -> None:
    """Test that a 4xx or an unusable answer is a dead letter after its first request."""
    server.fixed["customer3@example.com"] = answer

    _load(pg_url, _file(tmp_path, ["customer3@example.com"]), _enrich(server.url))

    assert _letters(pg_conn) == {2: ("EnrichmentError", message, 1)}
    assert server.requests["customer3@example.com"] == 1


def test_null_segment_is_kept(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, server: SegmentServer
) -> None:
    """Test that a JSON null segment is a success with no segment."""
    server.fixed["customer4@example.com"] = (200, {"segment": None})

    _load(pg_url, _file(tmp_path, ["customer4@example.com"]), _enrich(server.url))

    assert _segments(pg_conn) == {1: None}
    assert _letters(pg_conn) == {}


def test_at_most_concurrency_requests_in_flight(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that the server never sees more than `concurrency` requests at once, yet several."""
    path = _file(tmp_path, [f"customer{i}@example.com" for i in range(1, 151)])
    with SegmentServer(delay=0.02) as server:
        _load(pg_url, path, _enrich(server.url, concurrency=5))

    assert len(_segments(pg_conn)) == 150
    assert 1 < server.max_in_flight <= 5


def test_connections_follow_a_concurrency_above_the_default(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that ``connections`` (the DAG passes its enrich_concurrency) lets more requests than
    the default 64 connections be in flight at once, never more than ``concurrency``."""
    path = _file(tmp_path, [f"customer{i}@example.com" for i in range(1, 401)])
    with SegmentServer(delay=0.3) as server:
        _load(pg_url, path, _enrich(server.url, concurrency=100, connections=100))

    assert len(_segments(pg_conn)) == 400
    assert MAX_CONNECTIONS < server.max_in_flight <= 100


def test_bad_settings_are_refused() -> None:
    """Test that the async transform's settings are checked up front."""
    with pytest.raises(ConfigurationError, match="concurrency must be an integer greater than 0"):
        TransformSpec(ENRICH, "async", concurrency=0)
    with pytest.raises(ValueError, match="max_attempts must be greater than 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError, match="use transform_kind='async'"):
        TransformSpec(ENRICH, "rows").load()
    with pytest.raises(ConfigurationError, match="is not an 'async def' function"):
        TransformSpec("include.transforms.customers:check", "async").load()
    names = [f"{c.__module__}:{c.__qualname__}" for c in RETRY_ON]
    assert retry_policy(names, "async").retry_on == RETRY_ON


def test_chunk_enrichment_fills_segments_and_dead_letters_failures(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that loaded records have their segments, records whose lookup failed are dead letters
    at their lines (the rest of their batches load), and bad records make no request; the
    chunks run the spec stored with the job."""
    case = customers_csv(tmp_path / "customers.csv", 600, bad_every=97)
    down = {case.rows[i][2] for i in (3, 250, 599)}
    with SegmentServer() as server:
        server.always_fail.update(down)
        server.fail_first[case.rows[10][2]] = 2
        spec = customers_spec(
            pg_url, case.path, transform=_enrich(server.url, concurrency=4), batch_rows=100
        )
        job = plan(pg_url, "enriched", spec, chunks=2)
        stored = stored_spec(job, source_from_dict)
        assert stored.transform == spec.transform  # RETRY_ON by name, and back

        run(pg_url, job, stored)

    loaded = {i: row for i, row in case.rows.items() if row[2] not in down}
    assert target_rows(pg_conn) == [(*row, segment_of(row[2])) for _, row in sorted(loaded.items())]
    found = dead_letters(pg_conn, "enriched")
    failed_lines = {case.lines[i] for i, row in case.rows.items() if row[2] in down}
    assert {line for line, (kind, _) in found.items() if kind == "EnrichmentServerError"} == (
        failed_lines
    )
    assert all(
        found[line][1] == "the enrichment service answered HTTP 503" for line in failed_lines
    )
    assert set(found) == failed_lines | set(case.dead)
    attempts: dict[str, list[int]] = dict(
        pg_conn.execute(
            "SELECT error_type, array_agg(DISTINCT attempts) FROM parallel_batch.dead_letters"
            " GROUP BY error_type"
        ).fetchall()
    )
    assert attempts["EnrichmentServerError"] == [3]
    assert attempts["InvalidEmailError"] == [1]  # refused before any request
    assert server.requests[case.rows[10][2]] == 3
    assert set(server.requests) == {row[2] for row in case.rows.values()}
