"""Tests of a job's spec (checks, JSON round trip, identity) and of a chunk's summary."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from parallel_batch.core.job import (
    DATAFRAME_BATCH_ROWS,
    DEFAULT_BATCH_ROWS,
    ChunkSummary,
    JobSpec,
)
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.exceptions import InvalidIdentifierError
from parallel_batch.sources import TableSource, source_from_dict
from parallel_batch.sources.table.planner import RowFilter

SOURCE = TableSource("demo.events", "id", ("id", "payload"))


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"batch_rows": 0}, ValueError, "batch_rows must be greater than 0"),
        ({"batch_rows": True}, ValueError, "batch_rows must be greater than 0"),
        ({"write_mode": "merge"}, ValueError, r"write_mode must be one of \['copy', 'upsert'"),
        ({"target_table": "a.b.c"}, InvalidIdentifierError, "Invalid table name 'a.b.c'"),
        ({"target_columns": ("ok", "b;c")}, InvalidIdentifierError, "Invalid column name 'b;c'"),
        ({"key_columns": ("",)}, InvalidIdentifierError, "Invalid column name ''"),
        ({"dedup_key": "x y"}, InvalidIdentifierError, "Invalid column name 'x y'"),
    ],
)
def test_that_a_bad_job_spec_is_refused(
    change: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Test that JobSpec checks its arguments up front with exact messages."""
    values: dict[str, Any] = {"source": SOURCE, "target_table": "demo.events_enriched", **change}
    with pytest.raises(error, match=message):
        JobSpec(**values)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo.events", "user_id", ("id",)), "columns must include the key column 'user_id'"),
        (("demo.events", "id", ("id", "id")), "columns must not name a column twice"),
    ],
)
def test_that_a_bad_table_source_is_refused(args: tuple[Any, ...], message: str) -> None:
    """Test that TableSource checks its columns against its key."""
    with pytest.raises(ValueError, match=message):
        TableSource(*args)


def test_that_a_spec_survives_a_round_trip_through_a_dict() -> None:
    """Test that to_dict/from_dict rebuild an equal spec: source with its filter, transform with
    its retries and kwargs, columns and keys."""
    spec = JobSpec(
        TableSource(
            "demo.events",
            "id",
            ("id", "payload", "created_at"),
            RowFilter("created_at", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), None),
        ),
        "demo.events_enriched",
        TransformSpec(
            "include.transforms.events:enrich",
            "rows",
            retry=RetryPolicy(max_attempts=2, retry_on=(KeyError,)),
            kwargs={"x": 1},
        ),
        target_columns=("id", "payload_sha256"),
        key_columns=("id",),
        write_mode="upsert",
        batch_rows=123,
        dedup_key="payload",
    )
    data = spec.to_dict()
    assert data["source"]["kind"] == "table"
    assert JobSpec.from_dict(data, source_from_dict) == spec


def test_that_the_batch_size_and_retries_may_change_between_runs() -> None:
    """Test that a job's identity leaves out what a rerun may change (batch size, retries,
    concurrency), and keeps the source, target and transform."""
    spec = JobSpec(SOURCE, "demo.events_enriched", TransformSpec("m:f", "async"))
    tuned = dataclasses.replace(
        spec,
        batch_rows=7,
        transform=TransformSpec("m:f", "async", concurrency=2, retry=RetryPolicy(max_attempts=9)),
    )
    assert tuned.identity() == spec.identity()
    other = dataclasses.replace(spec, transform=TransformSpec("m:g", "async"))
    assert other.identity() != spec.identity()


@pytest.mark.parametrize(
    ("kind", "default"),
    [
        ("rows", DEFAULT_BATCH_ROWS),
        ("batch", DEFAULT_BATCH_ROWS),
        ("async", DEFAULT_BATCH_ROWS),
        ("dataframe", DATAFRAME_BATCH_ROWS),
    ],
)
def test_that_the_batch_size_defaults_by_transform_kind(kind: str, default: int) -> None:
    """Test that a spec without a batch size takes its transform kind's (more rows for a
    dataframe), keeps one that is given, and that a stored spec without one gets the same."""
    assert DATAFRAME_BATCH_ROWS > DEFAULT_BATCH_ROWS
    spec = JobSpec(SOURCE, "demo.events_enriched", TransformSpec("m:f", kind))
    assert spec.batch_rows == default
    assert JobSpec(SOURCE, "demo.x", TransformSpec("m:f", kind), batch_rows=123).batch_rows == 123
    stored = spec.to_dict()
    assert stored["batch_rows"] == default
    del stored["batch_rows"]
    assert JobSpec.from_dict(stored, source_from_dict).batch_rows == default


@pytest.mark.parametrize(
    ("counts", "reconciles"),
    [
        ({"rows_read": 10, "rows_written": 7, "rows_failed": 1, "rows_filtered": 2}, True),
        (
            {
                "rows_read": 10,
                "rows_written": 12,
                "rows_failed": 1,
                "rows_filtered": 2,
                "rows_fanout": 5,
            },
            True,
        ),
        ({"rows_read": 10, "rows_written": 7, "rows_failed": 1}, False),
    ],
)
def test_that_a_summary_reconciles_when_every_row_is_accounted_for(
    counts: dict[str, int], reconciles: bool
) -> None:
    """Test that read == written - fanout + filtered + failed, and the summary survives a round
    trip through a dict."""
    summary = ChunkSummary(
        chunk_id="(0,10]",
        seconds=0.5,
        skipped=False,
        resumed_from=None,
        attempt=1,
        rows_this_attempt=10,
        **counts,
    )
    assert summary.reconciles is reconciles
    assert ChunkSummary.from_dict(summary.to_dict()) == summary
