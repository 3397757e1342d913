"""A CSV file on object storage: a real S3-compatible server (moto's, on this machine), read by
s3fs through the same planner and reader as a local file, by byte ranges."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from parallel_batch.core.job import JobSpec
from parallel_batch.core.planning import resolve_columns
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.typed import typed_csv_source
from tests.helpers.s3 import S3
from tests.integration.sources.csv.csv_jobs import plan

TABLE = "CREATE TABLE t.sales (id integer PRIMARY KEY, item text, amount numeric)"
RECORDS = 40_000


def _file(records: int = RECORDS) -> bytes:
    lines = ["id;item;amount"]
    lines += [f'{i};"item {i}; ""q""";{i % 97}.25' for i in range(1, records + 1)]
    return ("\n".join(lines) + "\n").encode()


def _spec(url: str, path: str, s3: S3) -> JobSpec:
    with psycopg.connect(url, autocommit=True) as conn:
        source = typed_csv_source(
            conn, path, "t.sales", dialect=CsvDialect.of(";"), storage_options=s3.options
        ).planned()
        spec = JobSpec(source, "t.sales", TransformSpec(), batch_rows=5_000)
        return resolve_columns(conn, spec, source.columns)


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every ranged GET s3fs makes, as ``(start, end)`` (a spy: the real request still runs)."""
    from s3fs.core import S3File

    seen: list[tuple[int, int]] = []
    fetch = S3File._fetch_range

    def spy(self: Any, start: int, end: int) -> bytes:
        seen.append((start, end))
        return fetch(self, start, end)  # type: ignore[no-any-return]

    monkeypatch.setattr(S3File, "_fetch_range", spy)
    return seen


def test_a_file_on_s3_loads_exactly_in_chunks_read_by_ranges(
    pg_url: str, schema: psycopg.Connection, s3: S3, fetches: list[tuple[int, int]]
) -> None:
    """Test that an s3:// file plans into byte-range chunks and that one chunk task reads only
    its own range (never the whole object), and that all chunks load every record once."""
    schema.execute(TABLE)
    data = _file()
    path = s3.put("sales.csv", data)
    spec = _spec(pg_url, path, s3)
    job = plan(pg_url, "s3", spec, chunks=4)
    assert len(job.plan) == 4
    middle = job.plan[2]

    fetches.clear()
    summary = run_chunk(spec, "s3", middle, conninfo=pg_url)
    assert summary.reconciles and summary.rows_written > 0
    assert fetches, "the chunk was not read through s3fs"
    assert all(middle["start"] <= start < end <= middle["end"] for start, end in fetches)
    fetched = sum(end - start for start, end in fetches)
    # one pass to cut the chunk into batches, one to read them
    assert fetched <= 2 * (middle["end"] - middle["start"]) < len(data)

    for entry in job.plan:
        if entry is not middle:
            assert run_chunk(spec, "s3", entry, conninfo=pg_url).reconciles
    count, total = schema.execute(
        "SELECT count(*), sum(amount) FROM t.sales WHERE item = 'item ' || id || '; \"q\"'"
    ).fetchone()  # type: ignore[misc]
    assert count == RECORDS
    assert total == sum((i % 97) + 0.25 for i in range(1, RECORDS + 1))
    assert schema.execute("SELECT count(*) FROM parallel_batch.dead_letters").fetchone() == (0,)


def test_an_object_replaced_after_planning_is_refused(
    pg_url: str, schema: psycopg.Connection, s3: S3
) -> None:
    """Test that a chunk of an object overwritten after planning fails, naming the change,
    instead of reading stale byte offsets."""
    schema.execute(TABLE)
    path = s3.put("replaced.csv", _file(1_000))
    spec = _spec(pg_url, path, s3)
    job = plan(pg_url, "replaced", spec, chunks=2)
    s3.put("replaced.csv", _file(1_001))
    with pytest.raises(ConfigurationError, match="changed after its chunks were planned"):
        run_chunk(spec, "replaced", job.plan[0], conninfo=pg_url)


def test_a_missing_object_is_a_clear_error(schema: psycopg.Connection, s3: S3) -> None:
    """Test that an s3:// path that does not exist fails before any work, naming it."""
    schema.execute(TABLE)
    with pytest.raises(ConfigurationError, match="does not exist"):
        typed_csv_source(schema, s3.url("nope.csv"), "t.sales", storage_options=s3.options)
