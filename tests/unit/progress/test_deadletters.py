"""Tests of parallel_batch.progress.deadletters: dead letter rows and the replay hint."""

from __future__ import annotations

import datetime as dt
import json
import shlex

import pytest

from parallel_batch.progress.deadletters import dead_letter_row, replay_hint
from parallel_batch.progress.formats import json_ready

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


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
    assert json_ready(row)["where"] == "line 12"


def test_replay_hint_quotes_the_job_key_for_the_shell() -> None:
    """Test that the replay command gives the DAG a conf with the exact job_key."""
    key = "parallel_batch_table:it's/2024"

    hint = replay_hint(key, "table")

    argv = shlex.split(hint.command)
    assert argv[:4] == ["airflow", "dags", "trigger", "parallel_batch_replay"]
    assert json.loads(argv[-1]) == {"job_key": key}
    assert hint.available and hint.conf == {"job_key": key}
    assert not replay_hint(key, "csv").available
    with pytest.raises(ValueError, match="job_key must not be empty"):
        replay_hint("", "table")
