"""The DAG params of the example DAGs: validated JSON schemas, shown as the UI trigger form.

The operators check the values again when they run (:mod:`parallel_batch.airflow.values`).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from parallel_batch.airflow.groups import DEFAULT_CSV_BATCH_ROWS, DEFAULT_CSV_MAX_FAILED_RATIO
from parallel_batch.airflow.jobkeys import MAX_JOB_KEY_CHARS
from parallel_batch.airflow.plan_sources import DEFAULT_CHUNK_BYTES
from parallel_batch.airflow.values import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_MAX_FAILED_RATIO,
    DEFAULT_WORKERS,
    MAX_WORKERS,
)
from parallel_batch.core.job import DEFAULT_BATCH_ROWS
from parallel_batch.core.replay import DEFAULT_REPLAY_BATCH_ROWS
from parallel_batch.core.transforms import DEFAULT_CONCURRENCY
from parallel_batch.store.identifiers import IDENTIFIER_PATTERN

__all__ = ["COLUMN_PATTERN", "TABLE_PATTERN", "csv_params", "replay_params", "table_params"]

_PART = IDENTIFIER_PATTERN.removeprefix("^").removesuffix("$")
TABLE_PATTERN = f"^{_PART}(\\.{_PART})?$"
COLUMN_PATTERN = IDENTIFIER_PATTERN
# A sanity bound for the form: more requests in flight per task than this is a typo.
MAX_ENRICH_CONCURRENCY = 1_000
# Seconds one enrichment request may take before it is a timeout (and retried).
DEFAULT_ENRICH_TIMEOUT = 10.0

_INT = "integer"
_OPTIONAL_INT = ["null", "integer"]
_OPTIONAL_STR = ["null", "string"]


def _param(default: Any, kind: Any, title: str, description: str = "", **schema: Any) -> Param:
    return Param(default, type=kind, title=title, description=description, **schema)


def _table(default: str, title: str, description: str) -> Param:
    return _param(default, "string", title, description, pattern=TABLE_PATTERN)


def _run_params(
    *, unit: str, batch_rows: int, max_failed_ratio: float, job_key: str, full_refresh: str
) -> dict[str, Param]:
    """The Params every job DAG takes: sizes, the failure budget, the job's identity."""
    return {
        "chunks": _param(
            None, _OPTIONAL_INT, "Number of chunks", "Split into about this many chunks.", minimum=1
        ),
        "batch_rows": _param(
            batch_rows,
            _INT,
            f"{unit.capitalize()} per batch",
            f"{unit.capitalize()} read, transformed and committed (with their checkpoint) at once.",
            minimum=1,
        ),
        "max_failed_ratio": _param(
            max_failed_ratio,
            "number",
            "Max failed ratio",
            f"Fail the run when more than this share of the {unit} ended in dead letters.",
            minimum=0,
            maximum=1,
        ),
        "job_key": _param(None, _OPTIONAL_STR, "Job key", job_key, maxLength=MAX_JOB_KEY_CHARS),
        "full_refresh": _param(False, "boolean", "Full refresh", full_refresh),
    }


def table_params(
    *,
    source_table: str,
    target_table: str,
    key_column: str = "id",
    interval_column: str | None = None,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> dict[str, Param]:
    """Return the Params of a table DAG, with the given defaults."""
    return {
        "source_table": _table(
            source_table, "Source table", "The table to read, 'schema.table' or 'table'."
        ),
        "target_table": _table(
            target_table,
            "Target table",
            "The table to write (created if missing); rows are upserted by key.",
        ),
        "key_column": _param(
            key_column,
            "string",
            "Key column",
            "A unique, NOT NULL, indexed column of the source: chunks are its ranges.",
            pattern=COLUMN_PATTERN,
        ),
        "chunk_rows": _param(
            chunk_rows,
            _OPTIONAL_INT,
            "Rows per chunk",
            "Rows per mapped task (grown to stay within [core] max_map_length). Ignored when "
            "'chunks' is set.",
            minimum=1,
        ),
        "workers": _param(
            DEFAULT_WORKERS, _INT, "Worker processes per chunk task", minimum=1, maximum=MAX_WORKERS
        ),
        **_run_params(
            unit="rows",
            batch_rows=DEFAULT_BATCH_ROWS,
            max_failed_ratio=DEFAULT_MAX_FAILED_RATIO,
            job_key="Default: '<dag_id>:<interval>' for scheduled and backfill runs, "
            "'<dag_id>:<run_id>' for manual runs. The same job_key resumes, never re-plans.",
            full_refresh="Reprocess the job from scratch (its earlier output is replaced).",
        ),
        "interval_column": _param(
            interval_column,
            _OPTIONAL_STR,
            "Interval column",
            "Timestamp column a data interval applies to; null: the whole table.",
            pattern=COLUMN_PATTERN,
        ),
        "interval_start": _param(
            None,
            _OPTIONAL_STR,
            "Interval start",
            "Only rows with interval_column >= this (ISO-8601); default: the run's data "
            "interval (scheduled and backfill runs).",
            format="date-time",
        ),
        "interval_end": _param(
            None,
            _OPTIONAL_STR,
            "Interval end",
            "Only rows with interval_column < this (ISO-8601).",
            format="date-time",
        ),
    }


def csv_params(*, path: str, target_table: str) -> dict[str, Param]:
    """Return the Params of a CSV load DAG, with the given defaults."""
    return {
        "path": _param(
            path,
            "string",
            "CSV file",
            "Path of the CSV file, as every worker sees it (shared storage). UTF-8, RFC 4180 "
            "quoting, a header line naming the target's columns; a BOM and CRLF line endings "
            "are fine.",
            minLength=1,
        ),
        "target_table": _table(
            target_table,
            "Target table",
            "'schema.table' to upsert into by id (created in the customers shape if missing).",
        ),
        "chunk_bytes": _param(
            DEFAULT_CHUNK_BYTES,
            _OPTIONAL_INT,
            "Bytes per chunk",
            "Bytes per mapped task; chunks end on record boundaries. Ignored when 'chunks' is set.",
            minimum=1,
        ),
        **_run_params(
            unit="records",
            batch_rows=DEFAULT_CSV_BATCH_ROWS,
            max_failed_ratio=DEFAULT_CSV_MAX_FAILED_RATIO,
            job_key="Default: '<dag_id>:<run_id>'. The same job_key resumes the same chunks, "
            "never re-plans; a new one loads the file again (rows are upserted).",
            full_refresh="Load the file again from scratch under the same job_key (re-planned; "
            "its dead letters are replaced, rows upserted).",
        ),
        "enrich_url": _param(
            None,
            _OPTIONAL_STR,
            "Enrichment URL",
            "If set, each record's segment comes from GET <url>?email=<email> (JSON "
            '{"segment": ...}); null: no enrichment, segment stays NULL.',
            pattern="^https?://",
        ),
        "enrich_concurrency": _param(
            DEFAULT_CONCURRENCY,
            _INT,
            "Enrichment requests in flight",
            "At most this many requests in flight per chunk task.",
            minimum=1,
            maximum=MAX_ENRICH_CONCURRENCY,
        ),
        "enrich_timeout": _param(
            DEFAULT_ENRICH_TIMEOUT,
            "number",
            "Enrichment timeout (s)",
            "Seconds per request before it counts as a timeout (and is retried).",
            exclusiveMinimum=0,
        ),
    }


def replay_params() -> dict[str, Param]:
    """Return the Params of the replay DAG (``job_key`` is required)."""
    return {
        "job_key": Param(
            type="string",
            minLength=1,
            maxLength=MAX_JOB_KEY_CHARS,
            title="Job key",
            description="The job whose dead letters to replay (see `parallel-batch status`).",
        ),
        "replay_from": _param(
            "source",
            "string",
            "Replay from",
            "'source': the row as it is in the source table now (after a data fix); 'payload': "
            "the row as it was stored in the dead letter.",
            enum=["source", "payload"],
        ),
        "max_failed_ratio": _param(
            0.0,
            "number",
            "Max failed ratio",
            "Fail the run when more than this share of the replayed items fail again.",
            minimum=0,
            maximum=1,
        ),
        "batch_rows": _param(
            DEFAULT_REPLAY_BATCH_ROWS, _INT, "Dead letters per transaction", minimum=1
        ),
        "workers": _param(
            DEFAULT_WORKERS, _INT, "Worker processes", minimum=1, maximum=MAX_WORKERS
        ),
    }
