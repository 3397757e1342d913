"""A DAG run's job identity (``job_key``) and the rows it processes (its interval filter).

Pure functions of the run's facts, so they are tested without Airflow::

    job_key param given?                  -> that job_key
    scheduled or backfill run?            -> "<dag_id>:<interval start>/<interval end>"
    anything else (manual, asset, ...)    -> "<dag_id>:<run_id>"

    interval_column null?                 -> the whole table
    interval_start / interval_end params? -> rows with start <= column < end
    scheduled or backfill run?            -> rows in the run's data interval
    anything else                         -> the whole table

Why: a scheduled or backfill run *is* its data interval, so re-running that interval (a retry, a
cleared task, a backfill re-run) must resume the same job and skip its completed chunks. A manual
run in Airflow 3 has no data interval; it is its own job, so clearing one of its tasks resumes it
while a new trigger starts a new job. Writes are idempotent upserts, so a new job over rows an
earlier one wrote replaces them and never duplicates them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.table.planner import RowFilter

__all__ = [
    "INTERVAL_RUN_TYPES",
    "MAX_JOB_KEY_CHARS",
    "RunScope",
    "parse_timestamp",
    "resolve_run_scope",
]

# Run types whose data interval says which rows they own (Airflow's DagRunType values).
INTERVAL_RUN_TYPES = frozenset({"scheduled", "backfill"})

# A job_key is shown in the UI, the status view and messages: long enough for a DAG id, a run id
# and an interval, short enough to read. Longer keys are refused, not cut (cutting could merge
# two jobs into one).
MAX_JOB_KEY_CHARS = 250


@dataclass(frozen=True)
class RunScope:
    """What one DAG run processes.

    :param job_key: the job's identity in the checkpoint store.
    :param row_filter: the rows it processes; None for the whole table.
    :param reason: why, in words, for the task log.
    """

    job_key: str
    row_filter: RowFilter | None
    reason: str


def parse_timestamp(value: object, name: str) -> dt.datetime | None:
    """Return an ISO-8601 text or datetime as an aware datetime; None for None or "".

    A value without a UTC offset is taken as UTC (never as the database session's time zone).

    :param value: the value of a param or template.
    :param name: the param's name, for the error message.
    :raises ConfigurationError: when the value is not a timestamp.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ConfigurationError(
                f"{name} must be an ISO-8601 timestamp such as 2024-01-31T00:00:00+00:00, "
                f"got {value!r}"
            ) from exc
    else:
        raise ConfigurationError(f"{name} must be an ISO-8601 timestamp, got {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _utc(value: dt.datetime) -> dt.datetime:
    # A plain datetime in UTC (Airflow hands out pendulum DateTimes, whose isoformat may differ).
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    utc = aware.astimezone(dt.UTC)
    return dt.datetime(
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
        tzinfo=dt.UTC,
    )


def _check_job_key(job_key: str) -> str:
    key = job_key.strip()
    if not key:
        raise ConfigurationError("job_key must not be empty")
    if len(key) > MAX_JOB_KEY_CHARS:
        raise ConfigurationError(
            f"job_key must be at most {MAX_JOB_KEY_CHARS} characters, got {len(key)}"
        )
    if any(ch in key for ch in "\r\n\t\x00"):
        raise ConfigurationError("job_key must not contain tabs, line breaks or NUL characters")
    return key


def _filter(column: str, start: dt.datetime | None, end: dt.datetime | None) -> RowFilter:
    if start is not None and end is not None and start >= end:
        raise ConfigurationError(
            f"interval_start ({start.isoformat()}) must be before interval_end ({end.isoformat()})"
        )
    try:
        return RowFilter(column, start, end)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def resolve_run_scope(
    *,
    dag_id: str,
    run_id: str,
    run_type: str,
    data_interval_start: dt.datetime | None,
    data_interval_end: dt.datetime | None,
    interval_column: str | None,
    job_key: str | None = None,
    interval_start: object = None,
    interval_end: object = None,
) -> RunScope:
    """Return the job_key and row filter of a DAG run (see the module docstring for the rules).

    :param dag_id: the DAG's id.
    :param run_id: the run's id.
    :param run_type: the run's type (``"scheduled"``, ``"backfill"``, ``"manual"``, ...).
    :param data_interval_start: the run's data interval start (None for a manual run).
    :param data_interval_end: the run's data interval end.
    :param interval_column: the timestamp column the interval applies to; None: whole table.
    :param job_key: the ``job_key`` param; None or "" for the default.
    :param interval_start: the ``interval_start`` param (ISO-8601 text or datetime), or None.
    :param interval_end: the ``interval_end`` param, or None.
    :raises ConfigurationError: for contradictory or malformed values.
    """
    if not dag_id or not run_id:
        raise ValueError("dag_id and run_id must not be empty")
    start = parse_timestamp(interval_start, "interval_start")
    end = parse_timestamp(interval_end, "interval_end")
    interval_run = run_type in INTERVAL_RUN_TYPES
    run_interval: tuple[dt.datetime, dt.datetime] | None = None
    if interval_run:
        if data_interval_start is None or data_interval_end is None:
            raise ConfigurationError(f"the {run_type} run {run_id} has no data interval")
        run_interval = (_utc(data_interval_start), _utc(data_interval_end))
        uses_run_interval = interval_column is not None and start is None and end is None
        if uses_run_interval and run_interval[0] >= run_interval[1]:
            raise ConfigurationError(
                f"the {run_type} run {run_id} has an empty data interval "
                f"({run_interval[0].isoformat()} to {run_interval[1].isoformat()}): schedule "
                "the DAG with CronDataIntervalTimetable (a plain cron string gives "
                "CronTriggerTimetable in Airflow 3, whose runs have no interval), or set "
                "interval_column to null to process the whole table"
            )

    if interval_column is None:
        if start is not None or end is not None:
            raise ConfigurationError(
                "interval_start/interval_end need an interval_column to filter on; "
                "set interval_column (e.g. created_at) or leave the interval empty"
            )
        row_filter = None
        reason = "the whole table (interval_column is null)"
    elif start is not None or end is not None:
        row_filter = _filter(interval_column, start, end)
        reason = f"the rows whose {interval_column} is in the interval given by the params"
    elif run_interval is not None:
        row_filter = _filter(interval_column, *run_interval)
        reason = f"the rows whose {interval_column} is in the run's data interval"
    else:
        row_filter = None
        reason = f"the whole table (a {run_type} run has no data interval)"

    if job_key:
        key = _check_job_key(job_key)
    elif run_interval is not None:
        key = _check_job_key(
            f"{dag_id}:{run_interval[0].isoformat()}/{run_interval[1].isoformat()}"
        )
    else:
        key = _check_job_key(f"{dag_id}:{run_id}")
    return RunScope(job_key=key, row_filter=row_filter, reason=reason)
