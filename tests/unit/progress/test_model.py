"""Tests of parallel_batch.progress.model: the display rows the terminal and the page share."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from parallel_batch.progress.model import (
    STALLED_AFTER_SECONDS,
    Figures,
    chunk_row,
    done_of,
    job_notes,
    job_row,
)
from parallel_batch.store.records import ChunkState, Job, JobStatus

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _chunk(**changes: Any) -> ChunkState:
    fields: dict[str, Any] = {
        "job_key": "job",
        "chunk_id": "(0,100]",
        "position": 0,
        "range": {"chunk_id": "(0,100]", "rows": 100},
        "status": "running",
        "last_key": 40,
        "rows_total": 100,
        "rows_read": 40,
        "rows_written": 39,
        "rows_failed": 1,
        "rows_filtered": 0,
        "rows_fanout": 0,
        "attempts": 2,
        "lease_token": 7,
        "holder": "dag/run/task[0] try 2 on host",
        "heartbeat_at": NOW - dt.timedelta(seconds=12),
        "started_at": NOW - dt.timedelta(seconds=20),
        "finished_at": None,
        "error": None,
        "alive": True,
        "dead_letters": 1,
    }
    return ChunkState(**{**fields, **changes})


def _job(status: str, *, rows_total: int, rows_read: int) -> JobStatus:
    job = Job(
        job_key="csv_job",
        status=status,  # type: ignore[arg-type]
        kind="csv",
        source="customers.csv",
        target="demo.customers",
        plan=[],
        params={"dag_id": "parallel_batch_csv", "run_id": 7},
        rows_total=rows_total,
        rows_read=rows_read,
        rows_written=rows_read,
        rows_failed=0,
        rows_filtered=0,
        rows_fanout=0,
        created_at=NOW,
        started_at=NOW,
        finished_at=None,
        error=None,
    )
    return JobStatus(
        job=job,
        chunks_total=1,
        chunks_pending=0,
        chunks_running=0 if status == "completed" else 1,
        chunks_completed=1 if status == "completed" else 0,
        chunks_failed=0,
        rows_total=rows_total,
        rows_read=rows_read,
        rows_written=rows_read - 3,
        rows_failed=3,
        rows_filtered=0,
        rows_fanout=0,
        dead_letters=3,
        elapsed_seconds=10.0,
        rate_per_second=rows_read / 10,
        eta_seconds=0.0 if status == "completed" else None,
    )


def test_a_running_chunk_gets_rate_eta_and_heartbeat_age() -> None:
    """Test that a live running chunk gets its rate, ETA, percent and heartbeat age."""
    row = chunk_row(_chunk(), NOW)

    assert (row.status, row.stalled, row.attention) == ("running", False, None)
    assert row.rows_per_second == pytest.approx(2.0)
    assert row.eta_seconds == pytest.approx(30.0)
    assert row.percent == pytest.approx(40.0)
    assert row.heartbeat_age_seconds == pytest.approx(12.0)
    assert (row.rows_done, row.rows_total, row.rows_written, row.rows_failed) == (40, 100, 39, 1)


def test_a_running_chunk_without_live_holder_is_interrupted() -> None:
    """Test that a running chunk whose holder is gone is interrupted, with where it resumes."""
    row = chunk_row(_chunk(alive=False), NOW)

    assert (row.status, row.stalled, row.eta_seconds) == ("interrupted", False, None)
    assert row.attention is not None and "resumes after key 40" in row.attention
    assert job_notes([row])[0].startswith("1 chunk interrupted")


def test_a_live_holder_without_heartbeat_is_stalled() -> None:
    """Test that a live holder silent for longer than STALLED_AFTER_SECONDS is stalled."""
    old = NOW - dt.timedelta(seconds=STALLED_AFTER_SECONDS + 60)
    row = chunk_row(_chunk(heartbeat_at=old), NOW)

    assert (row.status, row.stalled) == ("running", True)
    assert row.attention is not None and row.attention.startswith("No heartbeat for 6m00s")
    assert job_notes([row, row])[0].startswith("2 chunks stalled")


def test_a_completed_chunk_is_not_stalled_whatever_its_heartbeat() -> None:
    """Test that an old heartbeat of a completed chunk raises no flag."""
    old = NOW - dt.timedelta(hours=3)
    row = chunk_row(_chunk(status="completed", heartbeat_at=old, finished_at=old), NOW)

    assert (row.status, row.stalled, row.attention, row.eta_seconds) == (
        "completed",
        False,
        None,
        0.0,
    )
    assert job_notes([row]) == []


def test_done_and_total_agree_when_the_planned_total_was_an_estimate() -> None:
    """Test that a completed chunk or job shows its rows read as the total, at 100%, and one
    still running never shows more done than its total, nor 100% before it is done."""
    completed = chunk_row(_chunk(status="completed", rows_read=90, finished_at=NOW), NOW)
    beyond = chunk_row(_chunk(rows_read=120), NOW)
    exact = chunk_row(_chunk(rows_read=100), NOW)
    done_job = job_row(_job("completed", rows_total=202_333, rows_read=200_000))
    almost = job_row(_job("running", rows_total=202_333, rows_read=202_330))

    assert (completed.rows_done, completed.rows_total, completed.percent) == (90, 90, 100.0)
    assert (beyond.rows_done, beyond.rows_total) == (120, 120)
    assert beyond.percent < 100 and beyond.eta_seconds is None  # the estimate was short
    assert (exact.rows_done, exact.rows_total) == (100, 100) and exact.percent < 100
    assert (done_job.rows_done, done_job.rows_total, done_job.percent) == (200_000, 200_000, 100)
    assert almost.rows_done < almost.rows_total and 99 <= almost.percent < 100


def test_done_of_bounds() -> None:
    """Test that an unknown total shows 0%, and nothing to do (0 of 0) 100%."""
    assert done_of("running", 40, None) == (None, 0.0)
    assert done_of("pending", 0, 0) == (0, 100.0)
    assert done_of("failed", 30, 100) == (100, pytest.approx(30.0))
    assert done_of("completed", 7, None) == (7, 100.0)


def test_figures_are_copied_by_name_from_the_store_records() -> None:
    """Test that every figure of a row is the same-named count of the store's record."""
    names = [f.name for f in dataclasses.fields(Figures)]
    chunk = _chunk()
    status = _job("running", rows_total=100, rows_read=50)

    row, job = chunk_row(chunk, NOW), job_row(status)

    assert names and all(getattr(row, n) == getattr(chunk, n) for n in names)
    assert all(getattr(job, n) == getattr(status, n) for n in names)
    assert (job.dag_id, job.run_id) == ("parallel_batch_csv", None)  # a run_id must be text
