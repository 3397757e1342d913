"""Tests of parallel_batch.progress.model: the progress view's display rows and formats."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from typing import Any

import pytest

from parallel_batch.progress.model import (
    STALLED_AFTER_SECONDS,
    chunk_row,
    cut,
    dead_letter_row,
    format_age,
    format_count,
    format_eta,
    format_rate,
    job_notes,
    json_ready,
    replay_hint,
)
from parallel_batch.store.records import ChunkState

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


def test_a_running_chunk_gets_rate_eta_and_heartbeat_age() -> None:
    """Test that a live running chunk gets its rate, ETA, percent and heartbeat age."""
    row = chunk_row(_chunk(), NOW)

    assert (row.status, row.stalled, row.attention) == ("running", False, None)
    assert row.rows_per_second == pytest.approx(2.0)
    assert row.eta_seconds == pytest.approx(30.0)
    assert row.percent == pytest.approx(40.0)
    assert row.heartbeat_age_seconds == pytest.approx(12.0)


def test_a_running_chunk_without_live_holder_is_interrupted() -> None:
    """Test that a running chunk whose holder is gone is interrupted, with where it resumes."""
    row = chunk_row(_chunk(alive=False), NOW)

    assert (row.status, row.stalled) == ("interrupted", False)
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


def test_dead_letter_rows_cut_messages_and_leave_payloads_out() -> None:
    """Test that a dead letter row keeps type, line and a cut message, and never the payload."""
    row = dead_letter_row(
        {
            "id": 3,
            "chunk_id": "bytes[0,10)",
            "item_key": "line:12",
            "line_number": 12,
            "error_type": "ValueError",
            "message": "bad\n  amount " + "x" * 500,
            "attempts": 1,
            "last_failed_at": NOW,
            "payload": {"secret": "value"},
        }
    )

    assert row.where == "line 12"
    assert row.message.startswith("bad amount xxx") and row.message.endswith("…")
    assert len(row.message) == 300
    assert "secret" not in json.dumps(json_ready(row))
    assert json_ready(row)["last_failed_at"] == "2026-01-01T12:00:00+00:00"


def test_replay_hint_quotes_the_job_key_for_the_shell() -> None:
    """Test that the replay command gives the DAG a conf with the exact job_key."""
    key = "parallel_batch_table:it's/2024"

    hint = replay_hint(key, "table")

    argv = shlex.split(hint.command)
    assert argv[:4] == ["airflow", "dags", "trigger", "parallel_batch_replay"]
    assert json.loads(argv[-1]) == {"job_key": key}
    assert hint.available and hint.conf == {"job_key": key}
    assert not replay_hint(key, "csv").available


def test_formats() -> None:
    """Test that counts, rates, ETAs and ages read well, and unknowns show as such."""
    assert (format_count(1234567), format_count(None)) == ("1,234,567", "?")
    assert (format_rate(12345.6), format_rate(None), format_rate(float("inf"))) == (
        "12,346 rows/s",
        "-",
        "-",
    )
    assert (format_eta(185), format_eta(0.0), format_eta(None)) == ("3m05s", "done", "-")
    assert (format_age(7.2), format_age(None)) == ("7s ago", "-")
    assert cut("a  b\nc") == "a b c"
    with pytest.raises(ValueError, match="chars must be at least 4"):
        cut("text", 3)
    with pytest.raises(ValueError, match="job_key must not be empty"):
        replay_hint("", "table")
