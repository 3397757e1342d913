"""Tests of parallel_batch.airflow.jobkeys: a run's job_key and the rows it processes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.airflow.jobkeys import (
    MAX_JOB_KEY_CHARS,
    parse_timestamp,
    resolve_run_scope,
)
from parallel_batch.exceptions import ConfigurationError

UTC = dt.UTC
DAY_START = dt.datetime(2024, 1, 2, tzinfo=UTC)
DAY_END = dt.datetime(2024, 1, 3, tzinfo=UTC)


def _scope(**overrides: Any) -> Any:  # RunScope, with row_filter read freely in tests
    values: dict[str, Any] = {
        "dag_id": "parallel_batch_table",
        "run_id": "scheduled__2024-01-02T00:00:00+00:00",
        "run_type": "scheduled",
        "data_interval_start": DAY_START,
        "data_interval_end": DAY_END,
        "interval_column": "created_at",
    }
    values.update(overrides)
    return resolve_run_scope(**values)


@pytest.mark.parametrize("run_type", ["scheduled", "backfill"])
def test_interval_runs_process_their_data_interval(run_type: str) -> None:
    """Test that scheduled and backfill runs are keyed by, and filtered to, their interval."""
    scope = _scope(run_type=run_type, run_id=f"{run_type}__2024-01-02")

    assert (
        scope.job_key == "parallel_batch_table:2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"
    )
    assert scope.row_filter is not None
    assert (scope.row_filter.column, scope.row_filter.start, scope.row_filter.end) == (
        "created_at",
        DAY_START,
        DAY_END,
    )


def test_a_rerun_of_the_same_interval_gets_the_same_job_key() -> None:
    """Test that a backfill re-run of a scheduled day resumes the same job."""
    scheduled = _scope(run_type="scheduled", run_id="scheduled__2024-01-02")
    backfill = _scope(run_type="backfill", run_id="backfill__2024-01-02")

    assert scheduled.job_key == backfill.job_key


def test_manual_runs_process_the_whole_table_under_their_run_id() -> None:
    """Test that a manual run, even with a data interval, is its own job over the whole table."""
    scope = _scope(run_type="manual", run_id="manual__2024-05-01T10:00:00+00:00")

    assert scope.job_key == "parallel_batch_table:manual__2024-05-01T10:00:00+00:00"
    assert scope.row_filter is None
    assert "whole table" in scope.reason


def test_manual_run_without_data_interval() -> None:
    """Test that a manual run without data interval (Airflow 3's default) needs none."""
    scope = _scope(run_type="manual", run_id="m1", data_interval_start=None, data_interval_end=None)

    assert (scope.job_key, scope.row_filter) == ("parallel_batch_table:m1", None)


def test_interval_params_filter_a_manual_run() -> None:
    """Test that interval_start/interval_end params give a manual run its interval."""
    scope = _scope(
        run_type="manual",
        run_id="m1",
        interval_start="2024-03-01T00:00:00+01:00",
        interval_end="2024-03-02",
    )

    assert scope.job_key == "parallel_batch_table:m1"
    assert scope.row_filter is not None
    assert scope.row_filter.start == dt.datetime(2024, 2, 29, 23, tzinfo=UTC)
    assert scope.row_filter.end == dt.datetime(2024, 3, 2, tzinfo=UTC)


def test_one_sided_interval_param() -> None:
    """Test that a single bound filters on that side only."""
    scope = _scope(run_type="manual", run_id="m1", interval_end="2024-03-02T00:00:00Z")

    assert scope.row_filter is not None
    assert scope.row_filter.start is None
    assert scope.row_filter.end == dt.datetime(2024, 3, 2, tzinfo=UTC)


def test_null_interval_column_processes_the_whole_table() -> None:
    """Test that interval_column None processes every row, even in a scheduled run."""
    scope = _scope(interval_column=None)

    assert scope.row_filter is None
    assert scope.job_key.endswith("2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00")


def test_job_key_param_overrides_the_default() -> None:
    """Test that the job_key param wins over the run's identity, stripped."""
    assert _scope(job_key="  nightly-rebuild ").job_key == "nightly-rebuild"
    assert _scope(job_key="").job_key.startswith("parallel_batch_table:2024-01-02")


def test_interval_keys_are_in_utc() -> None:
    """Test that a data interval in another time zone gives the same key as in UTC."""
    plus_two = dt.timezone(dt.timedelta(hours=2))
    scope = _scope(
        data_interval_start=DAY_START.astimezone(plus_two),
        data_interval_end=DAY_END.astimezone(plus_two),
    )

    assert scope.job_key == _scope().job_key


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"interval_start": "yesterday"}, "interval_start must be an ISO-8601 timestamp"),
        (
            {"interval_start": "2024-01-03", "interval_end": "2024-01-02"},
            "interval_start .* must be before interval_end",
        ),
        ({"interval_column": None, "interval_start": "2024-01-01"}, "need an interval_column"),
        ({"data_interval_end": DAY_START}, "empty data interval .* CronDataIntervalTimetable"),
        ({"data_interval_start": None}, "has no data interval"),
        ({"job_key": "x" * (MAX_JOB_KEY_CHARS + 1)}, "job_key must be at most"),
        ({"job_key": "a\nb"}, "line breaks"),
        ({"interval_column": "created at"}, "Invalid column name"),
    ],
)
def test_bad_values_are_refused(overrides: dict[str, Any], message: str) -> None:
    """Test that contradictory or malformed values raise ConfigurationError with a message."""
    with pytest.raises(ConfigurationError, match=message):
        _scope(**overrides)


def test_parse_timestamp_takes_naive_values_as_utc() -> None:
    """Test that a timestamp without offset is read as UTC, and None/"" as no bound."""
    assert parse_timestamp("2024-01-02T03:04:05", "x") == dt.datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert parse_timestamp(dt.date(2024, 1, 2), "x") == DAY_START
    assert parse_timestamp(None, "x") is None
    assert parse_timestamp("", "x") is None
    with pytest.raises(ConfigurationError, match="x must be an ISO-8601 timestamp"):
        parse_timestamp(5, "x")


@settings(max_examples=50, deadline=None)
@given(
    start=st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    hours=st.integers(min_value=1, max_value=24 * 366),
)
def test_distinct_intervals_get_distinct_keys(start: dt.datetime, hours: int) -> None:
    """Test that two different data intervals never share a job_key."""
    end = start + dt.timedelta(hours=hours)
    first = _scope(data_interval_start=start, data_interval_end=end)
    shifted = _scope(data_interval_start=end, data_interval_end=end + dt.timedelta(hours=hours))

    assert first.job_key != shifted.job_key
    assert first.row_filter.end == shifted.row_filter.start
