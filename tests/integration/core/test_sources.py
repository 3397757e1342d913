"""Tests of where a table job reads: a source in a second database, and a data interval
(row_filter) of the source."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parallel_batch.core.replay import replay_job
from parallel_batch.demo.tables import create_events_enriched
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.table.planner import RowFilter
from parallel_batch.store.checkpoints import CheckpointStore
from tests.helpers.events_job import (
    EXPECTED_SQL,
    TARGET_SQL,
    check_job,
    events_spec,
    plan,
    run_job,
    seed,
)

ROWS = 1_500
POISON_EVERY = 97


@pytest.fixture
def source_url(pg_server_url: str) -> Iterator[str]:
    """A second fresh database on the test server, dropped afterwards."""
    name = f"pbsrc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo("", **{**conninfo_to_dict(pg_server_url), "dbname": name})
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return sorted(conn.execute(query).fetchall())


def _dead_letters(url: str, job_key: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return sorted(
            (
                key
                for (key,) in conn.execute(
                    "SELECT item_key FROM parallel_batch.dead_letters"
                    " WHERE job_key = %s AND replayed_at IS NULL",
                    (job_key,),
                ).fetchall()
            ),
            key=int,
        )


def test_that_a_source_in_another_database_is_read_there(pg_url: str, source_url: str) -> None:
    """Test that a job whose source is in a second database writes the target in the first
    (the pool's workers read the second), dead-letters the poison rows in the first, refreshes
    by upsert, and replays from the second."""
    seed(source_url, ROWS, poison_every=POISON_EVERY)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_events_enriched(conn)
    spec = events_spec(pg_url, source_url=source_url, batch_rows=200, write_mode="auto")
    plan(pg_url, "job", spec, chunks=2, source_url=source_url)
    with WorkerPool(2) as pool:
        summaries = run_job(pg_url, "job", source_conninfo=source_url, pool=pool)
    assert _rows(pg_url, TARGET_SQL) == _rows(source_url, EXPECTED_SQL)
    poison = [str(i) for i in range(POISON_EVERY, ROWS + 1, POISON_EVERY)]
    assert _dead_letters(pg_url, "job") == poison
    assert sum(s.rows_read for s in summaries) == ROWS and all(s.reconciles for s in summaries)
    with psycopg.connect(source_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('parallel_batch.jobs')").fetchone() == (None,)
        conn.execute("UPDATE demo.events SET payload = 'fixed ' || id WHERE id % 97 = 0")
        conn.execute("UPDATE demo.events SET amount = amount + 1 WHERE id % 10 = 0")
    plan(pg_url, "job", spec, chunks=2, source_url=source_url, full_refresh=True)
    run_job(pg_url, "job", source_conninfo=source_url)
    assert _rows(pg_url, TARGET_SQL) == _rows(source_url, EXPECTED_SQL)
    assert _dead_letters(pg_url, "job") == []


def test_that_replay_reads_the_fixed_rows_from_the_source_database(
    pg_url: str, source_url: str
) -> None:
    """Test that replaying a job whose source is in a second database reads the fixed rows
    there, writes them to the first and marks their dead letters replayed."""
    seed(source_url, 500, poison_every=POISON_EVERY)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_events_enriched(conn)
    spec = events_spec(pg_url, source_url=source_url, batch_rows=100)
    plan(pg_url, "job", spec, chunks=2, source_url=source_url)
    run_job(pg_url, "job", source_conninfo=source_url)
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute("UPDATE demo.events SET payload = 'fixed ' || id WHERE id % 97 = 0")
    totals = replay_job(pg_url, "job", spec, source_conninfo=source_url)
    assert (totals.attempted, totals.replayed, totals.still_pending) == (5, 5, 0)
    assert _rows(pg_url, TARGET_SQL) == _rows(source_url, EXPECTED_SQL)
    assert _dead_letters(pg_url, "job") == []


def test_that_an_interval_job_reads_only_its_rows(pg_url: str) -> None:
    """Test that a job with a row_filter reads, writes and dead-letters exactly the rows whose
    interval column is in [start, end), and plans its chunks over those rows only."""
    url = seed(pg_url, ROWS, poison_every=POISON_EVERY)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_disc(0.25) WITHIN GROUP (ORDER BY created_at),"
            " percentile_disc(0.75) WITHIN GROUP (ORDER BY created_at) FROM demo.events"
        ).fetchone()
    assert row is not None
    start, end = row
    interval = f"created_at >= '{start.isoformat()}' AND created_at < '{end.isoformat()}'"
    spec = events_spec(url, batch_rows=128, row_filter=RowFilter("created_at", start, end))
    job = plan(url, "interval", spec, chunks=3)
    summaries = run_job(url, "interval")
    with psycopg.connect(url, autocommit=True) as conn:
        check = check_job(
            conn,
            "interval",
            expected_sql=f"{EXPECTED_SQL} AND {interval}",
            failing_sql=f"SELECT id::text FROM demo.events WHERE payload LIKE 'poison:%'"
            f" AND {interval}",
        )
        counted = conn.execute(f"SELECT count(*) FROM demo.events WHERE {interval}").fetchone()
    assert counted is not None
    (inside,) = counted
    assert check.exact, check
    assert 0 < inside < ROWS
    assert sum(entry["rows"] for entry in job.plan) == inside
    assert sum(s.rows_read for s in summaries) == inside
    assert all(s.reconciles for s in summaries)
    with CheckpointStore.connect(url) as store:
        status = store.job_status("interval")
    assert status is not None and (status.rows_read, status.rows_total) == (inside, inside)


def test_that_an_interval_refresh_from_another_database_needs_upserts(
    pg_url: str, source_url: str
) -> None:
    """Test that a full refresh of an interval read from another database is refused with
    write_mode='copy' (its earlier output cannot be found to delete), and replaces that output
    by key with write_mode='auto', dead-lettering nothing."""
    seed(source_url, 600)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        create_events_enriched(conn)
    with psycopg.connect(source_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at) FROM demo.events"
        ).fetchone()
    assert row is not None
    late = RowFilter("created_at", row[0], None)
    for mode in ("copy", "auto"):
        spec = dataclasses.replace(
            events_spec(pg_url, source_url=source_url, row_filter=late), write_mode=mode
        )
        key = f"late-{mode}"
        plan(pg_url, key, spec, chunks=2, source_url=source_url)
        first = run_job(pg_url, key, source_conninfo=source_url)
        plan(pg_url, key, spec, chunks=2, source_url=source_url, full_refresh=True)
        if mode == "copy":
            with pytest.raises(ConfigurationError, match="write_mode 'auto' or 'upsert'"):
                run_job(pg_url, key, source_conninfo=source_url)
            continue
        again = run_job(pg_url, key, source_conninfo=source_url)
        assert [s.rows_written for s in again] == [s.rows_written for s in first]
        assert _dead_letters(pg_url, key) == []
