"""HTTP enrichment against a real HTTP server on 127.0.0.1 with injected 5xx, timeouts and refusals."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from parallel_batch.core.csv_job import plan_csv_job
from parallel_batch.core.csv_load import run_csv_chunk
from parallel_batch.core.csv_spec import CsvLoadSpec
from parallel_batch.core.enrich import EnrichConfig, Enricher
from parallel_batch.demo.customers import create_customers
from parallel_batch.engine.retry import ItemResult
from parallel_batch.sources.csv.planner import FileChunk
from parallel_batch.store.checkpoints import CheckpointStore
from tests.integration.customers_csv import customers_csv, dead_letters, target_rows
from tests.integration.segment_server import SegmentServer, segment_of

# Fast backoff for tests: waits of at most 10, 20, 40 ms.
FAST: dict[str, Any] = {"base_delay": 0.01, "max_delay": 0.05}


@pytest.fixture
def server() -> Iterator[SegmentServer]:
    """A segment service on 127.0.0.1."""
    with SegmentServer() as running:
        yield running


def _lookup(config: EnrichConfig, emails: list[str | None]) -> list[ItemResult[str | None]]:
    async def run() -> list[ItemResult[str | None]]:
        async with Enricher(config) as enricher:
            return await enricher.lookup_many(emails)

    return asyncio.run(run())


def test_segments_come_from_the_server(server: SegmentServer) -> None:
    """Test that each email gets the server's segment, and a missing email no request."""
    emails: list[str | None] = ["customer1@example.com", None, "customer5@example.com"]

    results = _lookup(EnrichConfig(server.url), emails)

    assert [r.value for r in results] == ["seg-1", None, "seg-2"]
    assert all(r.ok for r in results)
    assert sum(server.requests.values()) == 2


def test_email_is_sent_url_encoded(server: SegmentServer) -> None:
    """Test that an email with '+' and '&' reaches the server intact as the email parameter."""
    (result,) = _lookup(EnrichConfig(server.url), ["a+b&c=d7@example.com"])

    assert result.ok
    assert list(server.requests) == ["a+b&c=d7@example.com"]


def test_a_server_failing_twice_is_retried(server: SegmentServer) -> None:
    """Test that 503 twice then 200 gives the segment after exactly three requests."""
    server.fail_first["customer7@example.com"] = 2

    (result,) = _lookup(EnrichConfig(server.url, **FAST), ["customer7@example.com"])

    assert result.value == "seg-1"
    assert server.requests["customer7@example.com"] == 3


def test_a_server_that_always_fails_gives_up_after_max_attempts(server: SegmentServer) -> None:
    """Test that a record whose lookup always gets 503 fails after max_attempts requests."""
    server.always_fail.add("customer8@example.com")

    ok, failed = _lookup(
        EnrichConfig(server.url, max_attempts=3, **FAST),
        ["customer9@example.com", "customer8@example.com"],
    )

    assert ok.value == "seg-0"
    assert failed.failure is not None
    assert (failed.failure.error_type, failed.failure.attempts) == ("EnrichmentServerError", 3)
    assert "HTTP 503" in failed.failure.message
    assert server.requests["customer8@example.com"] == 3


def test_timeouts_are_retried() -> None:
    """Test that a request past the timeout is retried, and one always slow fails as a timeout."""
    with SegmentServer(slow_seconds=1.0) as server:
        server.slow_first["customer1@example.com"] = 1
        server.slow_first["customer2@example.com"] = 99

        once, always = _lookup(
            EnrichConfig(server.url, timeout=0.2, max_attempts=2, **FAST),
            ["customer1@example.com", "customer2@example.com"],
        )

    assert once.value == "seg-1"
    assert server.requests["customer1@example.com"] == 2
    assert always.failure is not None
    assert (always.failure.error_type, always.failure.attempts) == ("ReadTimeout", 2)


def test_connection_errors_are_retried() -> None:
    """Test that a refused connection is retried, then reported as ConnectError."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    (result,) = _lookup(
        EnrichConfig(f"http://127.0.0.1:{port}/segment", max_attempts=3, **FAST),
        ["customer1@example.com"],
    )

    assert result.failure is not None
    assert (result.failure.error_type, result.failure.attempts) == ("ConnectError", 3)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((404, {"error": "unknown"}), "refused the request: HTTP 404"),
        ((200, ["not", "an", "object"]), "not a JSON object with a 'segment' field"),
        ((200, {"segment": 7}), "'segment' is a int, not a string or null"),
    ],
)
def test_refusals_and_bad_answers_fail_at_once(
    server: SegmentServer, answer: tuple[int, object], message: str
) -> None:
    """Test that a 4xx or an unusable answer fails the record on its first request."""
    server.fixed["customer3@example.com"] = answer

    (result,) = _lookup(EnrichConfig(server.url, **FAST), ["customer3@example.com"])

    assert result.failure is not None
    assert (result.failure.error_type, result.failure.attempts) == ("EnrichmentError", 1)
    assert message in result.failure.message
    assert server.requests["customer3@example.com"] == 1


def test_null_segment_is_kept(server: SegmentServer) -> None:
    """Test that a JSON null segment is a success with no segment."""
    server.fixed["customer4@example.com"] = (200, {"segment": None})

    (result,) = _lookup(EnrichConfig(server.url), ["customer4@example.com"])

    assert result.ok and result.value is None


def test_at_most_concurrency_requests_in_flight() -> None:
    """Test that the server never sees more than `concurrency` requests at once, yet several."""
    with SegmentServer(delay=0.02) as server:
        results = _lookup(
            EnrichConfig(server.url, concurrency=5),
            [f"customer{i}@example.com" for i in range(150)],
        )

    assert all(r.ok for r in results)
    assert 1 < server.max_in_flight <= 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://example.com/x"}, "must be an http:// or https:// URL"),
        ({"url": ""}, "enrich_url must not be empty"),
        ({"url": "http://x/s", "concurrency": 0}, "enrich_concurrency must be greater than 0"),
        ({"url": "http://x/s", "timeout": 0}, "enrich_timeout must be a number of seconds"),
        ({"url": "http://x/s", "max_attempts": 0}, "max_attempts must be greater than 0"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    """Test that the enrichment settings are checked up front."""
    with pytest.raises(ValueError, match=message):
        EnrichConfig(**kwargs)  # type: ignore[arg-type,unused-ignore]


def test_chunk_enrichment_fills_segments_and_dead_letters_failures(
    pg_url: str, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a loaded chunk has each record's segment, and records whose lookup failed are
    dead letters at their line (the rest of the batch loads)."""
    create_customers(pg_conn)
    case = customers_csv(tmp_path / "customers.csv", 600, bad_every=97)
    down = {case.rows[i][2] for i in (3, 250, 599)}
    spec = CsvLoadSpec(str(case.path), "demo.customers", batch_rows=100)
    with CheckpointStore.connect(pg_url) as store:
        job = plan_csv_job(store, "enriched", spec, chunks=2)
    with SegmentServer() as server:
        server.always_fail.update(down)
        server.fail_first[case.rows[10][2]] = 2
        for entry in job.plan:
            run_csv_chunk(
                pg_url,
                "enriched",
                FileChunk.from_dict(entry),
                spec,
                enrich=EnrichConfig(server.url, concurrency=4, max_attempts=3, **FAST),
            )

    loaded = {i: row for i, row in case.rows.items() if row[2] not in down}
    assert target_rows(pg_conn) == [(*row, segment_of(row[2])) for _, row in sorted(loaded.items())]
    found = dead_letters(pg_conn, "enriched")
    failed_lines = {case.lines[i] for i, row in case.rows.items() if row[2] in down}
    assert {line for line, (kind, _) in found.items() if kind == "EnrichmentServerError"} == (
        failed_lines
    )
    assert all(
        found[line][1].startswith("enrichment failed after 3 attempt(s): ") for line in failed_lines
    )
    assert set(found) == failed_lines | set(case.dead)
    attempts = pg_conn.execute(
        "SELECT DISTINCT attempts FROM parallel_batch.dead_letters"
        " WHERE error_type = 'EnrichmentServerError'"
    ).fetchall()
    assert attempts == [(3,)]
