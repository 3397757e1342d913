"""The plan task: check the config, create or reuse the job, return the chunk plan as an XCom.

::

    check the values (identifiers, numbers, transform)  no I/O; bad -> fail, no retry
        |
    resolve job_key and row filter (jobkeys)              from the run and the params
        |
    check the catalog (tables, key, columns, interval)    bad -> fail, no retry
        |
    job exists (and no full_refresh)?  -> its stored plan (never re-planned)
        |  no
    plan_table_chunks (<= [core] max_map_length chunks) -> CheckpointStore.ensure_job
        |
    XCom: [{"job_key": ..., "chunk": {"chunk_id", "lower", "upper", "rows"}}, ...]

The XCom holds one small dict per chunk (a key range, never rows), ready for
``ProcessTableChunkOperator.partial(...).expand_kwargs(plan.output)``; the job_key also goes to
the XCom key ``job_key`` for the summarize task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

import psycopg
from airflow.sdk import BaseOperator, Context, conf
from airflow.sdk.exceptions import AirflowFailException

from parallel_batch.airflow.connection import DEFAULT_CONN_ID, resolve_conninfo
from parallel_batch.airflow.jobkeys import RunScope, resolve_run_scope
from parallel_batch.airflow.params import (
    DEFAULT_CHUNK_ROWS,
    fail_fast,
    load_transform,
    optional_positive_int,
    positive_int,
    true_or_false,
)
from parallel_batch.core.table_job import DEFAULT_BATCH_ROWS, TableJobSpec
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.table.planner import DEFAULT_MAX_CHUNKS, RowFilter, plan_table_chunks
from parallel_batch.store.catalog import column_types, key_type
from parallel_batch.store.checkpoints import CheckpointStore, Job, plan_from_chunks
from parallel_batch.store.identifiers import column_sql, parse_table
from parallel_batch.store.writer import WriteMode

__all__ = ["JOB_KIND", "PlanTableChunksOperator", "job_params", "stored_spec"]

JOB_KIND = "table"
_INTERVAL_TYPES = (
    "timestamp with time zone",
    "timestamp without time zone",
    "date",
)
# What must match for a run to reuse an existing job (batch size and workers may change).
_IDENTITY_FIELDS = (
    "source_table",
    "target_table",
    "key_column",
    "source_columns",
    "target_columns",
    "target_key_columns",
    "row_filter",
)


def job_params(spec: TableJobSpec, transform: str, context: Context) -> dict[str, Any]:
    """Return what the jobs row stores: the spec and transform (the replay needs both), the run."""
    return {
        "spec": spec.to_dict(),
        "transform": transform,
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
    }


def stored_spec(job: Job) -> tuple[TableJobSpec, str]:
    """Return the spec and transform path stored with a table job.

    :raises ConfigurationError: when the job is not a table job of this package.
    """
    if job.kind != JOB_KIND or "spec" not in job.params or "transform" not in job.params:
        raise ConfigurationError(
            f"job {job.job_key!r} is a {job.kind!r} job without a table spec; "
            "it was not created by PlanTableChunksOperator"
        )
    return TableJobSpec.from_dict(job.params["spec"]), str(job.params["transform"])


class PlanTableChunksOperator(BaseOperator):
    """Check the config, create or reuse the job, and return its chunks for dynamic mapping.

    :param source_table: ``schema.table`` to read (templated).
    :param target_table: ``schema.table`` to write; it must exist (templated).
    :param source_columns: columns read, in the order the transform takes them; they include
        ``key_column`` (templated).
    :param target_columns: columns written, in the order the transform returns them (templated).
    :param transform: the batch function, ``"package.module:function"`` (templated).
    :param key_column: the source's unique, NOT NULL key the chunks split (templated).
    :param chunk_rows: rows per chunk, grown to stay within ``[core] max_map_length``
        (templated). Ignored when ``chunks`` is set.
    :param chunks: the number of chunks instead of ``chunk_rows`` (templated).
    :param batch_rows: rows per batch, stored with a new job (templated).
    :param job_key: the job's identity; None: from the run (see :mod:`.jobkeys`) (templated).
    :param full_refresh: start the job over and replace its earlier output (templated).
    :param interval_column: the timestamp column a data interval filters on; None: the whole
        table (templated).
    :param interval_start: process only rows with ``interval_column >=`` this (templated).
    :param interval_end: process only rows with ``interval_column <`` this (templated).
    :param write_mode: ``"auto"``, ``"copy"`` or ``"upsert"`` (see ``writer.write_rows``).
    :param target_key_columns: the target's conflict key; default ``(key_column,)``.
    :param conn_id: the Airflow connection of the database (templated).
    """

    template_fields: Sequence[str] = (
        "source_table",
        "target_table",
        "source_columns",
        "target_columns",
        "transform",
        "key_column",
        "chunk_rows",
        "chunks",
        "batch_rows",
        "job_key",
        "full_refresh",
        "interval_column",
        "interval_start",
        "interval_end",
        "conn_id",
    )
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        source_table: str,
        target_table: str,
        source_columns: Sequence[str],
        target_columns: Sequence[str],
        transform: str,
        key_column: str = "id",
        chunk_rows: int | str | None = DEFAULT_CHUNK_ROWS,
        chunks: int | str | None = None,
        batch_rows: int | str = DEFAULT_BATCH_ROWS,
        job_key: str | None = None,
        full_refresh: bool | str = False,
        interval_column: str | None = None,
        interval_start: Any = None,
        interval_end: Any = None,
        write_mode: WriteMode = "auto",
        target_key_columns: Sequence[str] = (),
        conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_table = source_table
        self.target_table = target_table
        self.source_columns = source_columns
        self.target_columns = target_columns
        self.transform = transform
        self.key_column = key_column
        self.chunk_rows = chunk_rows
        self.chunks = chunks
        self.batch_rows = batch_rows
        self.job_key = job_key
        self.full_refresh = full_refresh
        self.interval_column = interval_column
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.write_mode = write_mode
        self.target_key_columns = tuple(target_key_columns)
        self.conn_id = conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        with fail_fast("Invalid configuration"):
            spec, sizing, full_refresh = self._check_values()
            scope = self._scope(context)
            spec = TableJobSpec.from_dict({**spec.to_dict(), "row_filter": _dict(scope.row_filter)})
        self.log.info("Job %s processes %s", scope.job_key, scope.reason)
        max_chunks = conf.getint("core", "max_map_length", fallback=DEFAULT_MAX_CHUNKS)
        conninfo = resolve_conninfo(self.conn_id)
        with psycopg.connect(
            conninfo, autocommit=True, application_name="parallel_batch plan"
        ) as conn:
            with fail_fast("Invalid configuration"):
                _check_catalog(conn, spec)
            store = CheckpointStore(conn)
            job = store.get_job(scope.job_key)
            if job is not None and not full_refresh:
                with fail_fast(f"Cannot reuse job {scope.job_key!r}"):
                    _check_reusable(job, spec, self.transform, max_chunks)
                self.log.info(
                    "Job %s exists (%s, %d chunks): reusing its plan; completed chunks are "
                    "skipped, the others resume from their checkpoints",
                    job.job_key,
                    job.status,
                    len(job.plan),
                )
            else:
                chunk_rows, chunks = sizing
                planned = plan_table_chunks(
                    conn,
                    spec.source_table,
                    spec.key_column,
                    chunk_rows=None if chunks is not None else chunk_rows,
                    chunks=chunks,
                    max_chunks=max_chunks,
                    row_filter=spec.row_filter,
                )
                job = store.ensure_job(
                    scope.job_key,
                    kind=JOB_KIND,
                    plan=plan_from_chunks(planned),
                    params=job_params(spec, self.transform, context),
                    source=spec.source_table,
                    target=spec.target_table,
                    full_refresh=full_refresh,
                )
                if not full_refresh:  # another run may have created it first, differently
                    with fail_fast(f"Cannot reuse job {scope.job_key!r}"):
                        _check_reusable(job, spec, self.transform, max_chunks)
        self.log.info(
            "Job %s: %d chunks, %d rows planned (%s -> %s)",
            job.job_key,
            len(job.plan),
            job.rows_total,
            spec.source_table,
            spec.target_table,
        )
        context["ti"].xcom_push(key="job_key", value=job.job_key)
        return [{"job_key": job.job_key, "chunk": dict(entry)} for entry in job.plan]

    def _check_values(self) -> tuple[TableJobSpec, tuple[int | None, int | None], bool]:
        """Check every value that needs no database; raise ConfigurationError/ValueError."""
        parse_table(self.source_table)
        parse_table(self.target_table)
        column_sql(self.key_column)
        if self.write_mode not in get_args(WriteMode):
            raise ConfigurationError(
                f"write_mode must be one of {list(get_args(WriteMode))}, got {self.write_mode!r}"
            )
        chunks = optional_positive_int(self.chunks, "chunks")
        chunk_rows = optional_positive_int(self.chunk_rows, "chunk_rows")
        if chunks is None and chunk_rows is None:
            raise ConfigurationError("give chunk_rows or chunks")
        batch_rows = positive_int(self.batch_rows, "batch_rows")
        full_refresh = true_or_false(self.full_refresh, "full_refresh")
        load_transform(self.transform)
        spec = TableJobSpec(
            source_table=self.source_table,
            target_table=self.target_table,
            key_column=self.key_column,
            source_columns=tuple(self.source_columns),
            target_columns=tuple(self.target_columns),
            write_mode=self.write_mode,
            batch_rows=batch_rows,
            target_key_columns=self.target_key_columns,
        )
        return spec, (chunk_rows, chunks), full_refresh

    def _scope(self, context: Context) -> RunScope:
        dag_run = context["dag_run"]
        interval_column = self.interval_column
        if isinstance(interval_column, str) and interval_column.strip() in ("", "None"):
            interval_column = None  # a null param through a non-native template
        if interval_column is not None:
            column_sql(interval_column)
        return resolve_run_scope(
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            # An enum (str subclass) whose str() is "DagRunType.MANUAL": use its value.
            run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            interval_column=interval_column,
            job_key=None if self.job_key in (None, "", "None") else self.job_key,
            interval_start=None if self.interval_start == "None" else self.interval_start,
            interval_end=None if self.interval_end == "None" else self.interval_end,
        )


def _dict(row_filter: RowFilter | None) -> dict[str, Any] | None:
    return None if row_filter is None else row_filter.to_dict()


def _check_catalog(conn: psycopg.Connection, spec: TableJobSpec) -> None:
    """Check that the tables and columns exist and fit; raise ConfigurationError."""
    key_type(conn, spec.source_table, spec.key_column)
    column_types(conn, spec.source_table, spec.source_columns)
    column_types(conn, spec.target_table, spec.target_columns)
    if len(spec.target_key_columns) == 1:
        # The target's key must be unique: reruns and retries upsert on it.
        key_type(conn, spec.target_table, spec.target_key_columns[0])
    if spec.row_filter is not None:
        (column,) = column_types(conn, spec.source_table, [spec.row_filter.column])
        if column.type_name not in _INTERVAL_TYPES:
            raise ConfigurationError(
                f"interval_column {column.name!r} of {spec.source_table!r} is a "
                f"{column.type_name}; it must be a timestamp, timestamptz or date column"
            )


def _check_reusable(job: Job, spec: TableJobSpec, transform: str, max_chunks: int) -> None:
    stored, stored_transform = stored_spec(job)
    ours, theirs = spec.to_dict(), stored.to_dict()
    different = [name for name in _IDENTITY_FIELDS if ours[name] != theirs[name]]
    if stored_transform != transform:
        different.append("transform")
    if different:
        raise ConfigurationError(
            f"it was created with other {', '.join(different)} "
            f"({stored.source_table} -> {stored.target_table}, filter {theirs['row_filter']}); "
            "use another job_key, or full_refresh=true to start it over with this config"
        )
    if len(job.plan) > max_chunks:
        raise AirflowFailException(
            f"job {job.job_key!r} has {len(job.plan)} chunks, more than [core] max_map_length "
            f"({max_chunks}); raise max_map_length or start the job over with full_refresh=true"
        )
