"""Tests of the async transform kind calling a real HTTP service on 127.0.0.1 (the demo's
``include.transforms.customers:enrich``) for each row of a table."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from include.transforms.customers import RETRY_ON
from parallel_batch.core.job import JobSpec
from parallel_batch.core.planning import resolve_columns
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.demo.tables import create_customers
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.sources import TableSource
from parallel_batch.store.checkpoints import CheckpointStore
from tests.helpers.events_job import plan
from tests.helpers.segment_server import SegmentServer, segment_of

ROWS = 120
CONCURRENCY = 4
# Fast backoff: waits of at most 10, 20 ms.
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, retry_on=RETRY_ON)


def _email(i: int) -> str:
    return f"customer{i}.example.com" if i % 25 == 0 else f"customer{i}@example.com"


@pytest.fixture
def customers(pg_url: str) -> Iterator[str]:
    """demo.customer_rows (emails of ids divisible by 25 lack their @) and an empty
    demo.customers."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_customers(conn)
        conn.execute(
            "CREATE TABLE demo.customer_rows (id bigint PRIMARY KEY, name text, email text,"
            " amount numeric(12,2), note text, created_at timestamptz)"
        )
        with conn.cursor().copy(
            "COPY demo.customer_rows (id, name, email, amount, created_at) FROM STDIN"
        ) as copy:
            for i in range(1, ROWS + 1):
                copy.write_row((i, f"name {i}", _email(i), i / 4, "2024-01-01T00:00:00Z"))
    yield pg_url


def test_that_async_rows_are_enriched_over_http(customers: str) -> None:
    """Test that each row gets the service's segment with at most `concurrency` requests in
    flight; a 503 twice is retried into a success, one that never ends and an email without @
    are dead letters with their reason, and the summaries reconcile."""
    source = TableSource("demo.customer_rows", "id").resolved(customers)
    with SegmentServer(delay=0.005) as server:
        transform = TransformSpec(
            "include.transforms.customers:enrich",
            "async",
            concurrency=CONCURRENCY,
            retry=FAST,
            kwargs={"url": server.url, "timeout": 5.0},
        )
        with psycopg.connect(customers, autocommit=True) as conn:
            spec = resolve_columns(
                conn, JobSpec(source, "demo.customers", transform, batch_rows=50), source.columns
            )
        server.always_fail.add(_email(7))
        server.fail_first[_email(8)] = 2
        job = plan(customers, "enrich", spec, chunks=2)
        summaries = [run_chunk(spec, "enrich", e, conninfo=customers) for e in job.plan]
    with psycopg.connect(customers, autocommit=True) as conn:
        segments: dict[str, str] = dict(
            conn.execute("SELECT email, segment FROM demo.customers").fetchall()
        )
        letters = {
            key: (error, attempts, message)
            for key, error, attempts, message in conn.execute(
                "SELECT item_key, error_type, attempts, message FROM parallel_batch.dead_letters"
            ).fetchall()
        }
    without_at = [str(i) for i in range(25, ROWS + 1, 25)]
    assert letters == {
        "7": ("EnrichmentServerError", 3, "the enrichment service answered HTTP 503"),
        **{key: ("InvalidEmailError", 1, "email: email address without @") for key in without_at},
    }
    good = [i for i in range(1, ROWS + 1) if i != 7 and i % 25 != 0]
    assert segments == {_email(i): segment_of(_email(i)) for i in good}
    assert server.requests[_email(8)] == 3
    assert server.requests[_email(7)] == FAST.max_attempts
    assert 1 < server.max_in_flight <= CONCURRENCY
    assert all(s.reconciles for s in summaries)
    assert sum(s.rows_read for s in summaries) == ROWS
    with CheckpointStore.connect(customers) as store:
        status = store.job_status("enrich")
    assert status is not None
    assert (status.rows_read, status.rows_written, status.rows_failed) == (
        ROWS,
        len(good),
        ROWS - len(good),
    )
