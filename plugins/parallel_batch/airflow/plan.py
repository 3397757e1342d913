"""The plan task: check the job, create or reuse it, return its chunks as an XCom to map over.

::

    check the values (identifiers, numbers, transform)   no I/O; bad -> fail, no retry
        |
    job_key and rows from the run (jobkeys)               scheduled/backfill: its data interval
        |
    the source and the target in their catalogs          bad -> fail, no retry
        |
    core.planning.plan_job                               an existing job: its stored plan;
        |                                                 else the source's chunks, stored
    XCom: [{"job_key": ..., "chunk": {"chunk_id", ..., "rows"}}, ...]

The XCom holds one small dict per chunk (a key or byte range, never rows), for
``ProcessChunkOperator.partial(...).expand_kwargs(plan.output)``; the job_key also goes to the
XCom key ``job_key`` for the summarize task. Two subclasses say what the source is: a table
(:class:`PlanTableJobOperator`) or a CSV file (:class:`PlanCsvJobOperator`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from airflow.sdk import BaseOperator, Context, conf

from parallel_batch.airflow import DEFAULT_CONN_ID
from parallel_batch.airflow.connection import resolve_conninfo
from parallel_batch.airflow.jobkeys import RunScope, resolve_run_scope
from parallel_batch.airflow.values import (
    fail_fast,
    null,
    optional_positive_int,
    positive_int,
    true_or_false,
)
from parallel_batch.core.job import JobSpec, default_batch_rows
from parallel_batch.core.planning import plan_job, resolve_columns
from parallel_batch.core.source import Source
from parallel_batch.core.transforms import DEFAULT_CONCURRENCY, TransformSpec, retry_policy
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import source_from_dict
from parallel_batch.sources.table.planner import DEFAULT_MAX_CHUNKS
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.schema import ensure_schema

# The options every job's plan task takes besides its target, its source and ``retry`` (templated).
JOB_OPTIONS = (
    "transform",
    "transform_kind",
    "transform_kwargs",
    "concurrency",
    "target_columns",
    "write_mode",
    "chunks",
    "batch_rows",
    "job_key",
    "full_refresh",
)

__all__ = ["PlanJobOperator"]


class PlanJobOperator(BaseOperator):
    """Check a job, create or reuse it, and return its chunks for dynamic mapping.

    Subclasses give the source (:meth:`source`) and how chunks are sized.

    :param target_table: ``schema.table`` to write; it must exist (templated).
    :param transform: ``"package.module:function"`` or a module-level callable; None: the
        source's columns into the target's columns of the same names (templated).
    :param transform_kind: ``"rows"``, ``"batch"``, ``"dataframe"``, ``"async"`` or ``"arrow"``
        (templated).
    :param transform_kwargs: keyword arguments for every call of the transform (templated).
    :param concurrency: calls in flight per chunk task, for an async transform (templated).
    :param retry: per-row retries: a RetryPolicy, or the exception classes worth retrying.
    :param target_columns: the columns written (default: see ``core.planning``) (templated).
    :param write_mode: ``"auto"``, ``"upsert"`` or ``"copy"`` (templated).
    :param chunks: the number of chunks instead of their size (templated).
    :param batch_rows: rows per batch; None: the transform kind's default (10,000, or 50,000
        for ``dataframe``) (templated).
    :param job_key: the job's identity; None: from the run (see :mod:`.jobkeys`) (templated).
    :param full_refresh: start the job over and replace its earlier output (templated).
    :param conn_id: the Airflow connection of the job's database: its target, its store, and a
        table source unless ``source_conn_id`` is given (templated).
    """

    template_fields: Sequence[str] = ("target_table", *JOB_OPTIONS, "conn_id")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        target_table: str,
        transform: Any = None,
        transform_kind: str = "rows",
        transform_kwargs: Mapping[str, Any] | str | None = None,
        concurrency: int | str = DEFAULT_CONCURRENCY,
        retry: Any = None,
        target_columns: Sequence[str] | None = None,
        write_mode: str = "auto",
        chunks: int | str | None = None,
        batch_rows: int | str | None = None,
        job_key: str | None = None,
        full_refresh: bool | str = False,
        conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target_table = target_table
        self.transform = transform
        self.transform_kind = transform_kind
        self.transform_kwargs = transform_kwargs
        self.concurrency = concurrency
        self.retry = retry
        self.target_columns = target_columns
        self.write_mode = write_mode
        self.chunks = chunks
        self.batch_rows = batch_rows
        self.job_key = job_key
        self.full_refresh = full_refresh
        self.conn_id = conn_id

    # ---- what subclasses say -------------------------------------------------------------

    def source(self, scope: RunScope) -> Source:
        """The source as configured (checked without I/O)."""
        raise NotImplementedError

    def resolve_source(
        self, source: Source, source_conninfo: str, conn: psycopg.Connection
    ) -> Source:
        """The source checked against its catalog or file, ready to store with the job."""
        raise NotImplementedError

    def chunk_size(self) -> int | None:
        """The size of a chunk (rows, bytes) when ``chunks`` is not given."""
        raise NotImplementedError

    def interval_column(self) -> str | None:
        """The column a run's data interval filters on (None: every row)."""
        return None

    def source_conn_id(self) -> str:
        """The connection of the source's database."""
        return str(self.conn_id)

    def dedup_key(self) -> str | None:
        """A source column whose later occurrences are dead letters."""
        return None

    # ---- the task ------------------------------------------------------------------------

    def _transform(self) -> TransformSpec:
        kwargs = null(self.transform_kwargs)
        if isinstance(kwargs, str):
            raise ConfigurationError(
                "transform_kwargs must be a dict (render the DAG's templates as native "
                "objects: render_template_as_native_obj=True)"
            )
        from parallel_batch.core.transforms import callable_path

        spec = TransformSpec(
            path=callable_path(null(self.transform)),
            kind=str(self.transform_kind),  # type: ignore[arg-type]  # checked by the spec
            concurrency=positive_int(self.concurrency, "concurrency"),
            retry=retry_policy(self.retry, str(self.transform_kind)),
            kwargs=dict(kwargs or {}),
        )
        spec.load()  # importable, and of its kind: fail now rather than in every chunk task
        return spec

    def _scope(self, context: Context) -> RunScope:
        dag_run = context["dag_run"]
        interval_column = null(self.interval_column())
        return resolve_run_scope(
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            # An enum (str subclass) whose str() is "DagRunType.MANUAL": use its value.
            run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            interval_column=interval_column,
            job_key=null(self.job_key),
            interval_start=null(getattr(self, "interval_start", None)),
            interval_end=null(getattr(self, "interval_end", None)),
        )

    def execute(self, context: Context) -> list[dict[str, Any]]:
        with fail_fast("Invalid configuration"):
            chunks = optional_positive_int(self.chunks, "chunks")
            size = None if chunks is not None else self.chunk_size()
            if chunks is None and size is None:
                raise ConfigurationError("give chunks, or the size of a chunk")
            full_refresh = true_or_false(self.full_refresh, "full_refresh")
            transform = self._transform()
            scope = self._scope(context)
            source = self.source(scope)
            columns = null(self.target_columns)
            spec = JobSpec(
                source=source,
                target_table=str(self.target_table),
                transform=transform,
                target_columns=None if columns is None else tuple(columns),
                write_mode=str(self.write_mode),  # type: ignore[arg-type]
                batch_rows=optional_positive_int(self.batch_rows, "batch_rows")
                or default_batch_rows(transform.kind),
                dedup_key=self.dedup_key(),
            )
        self.log.info("Job %s processes %s", scope.job_key, scope.reason)
        max_chunks = conf.getint("core", "max_map_length", fallback=DEFAULT_MAX_CHUNKS)
        conninfo = resolve_conninfo(str(self.conn_id))
        source_conn_id = self.source_conn_id()
        source_conninfo = (
            conninfo if source_conn_id == self.conn_id else resolve_conninfo(source_conn_id)
        )
        with psycopg.connect(
            conninfo, autocommit=True, application_name="parallel_batch plan"
        ) as conn:
            ensure_schema(conn)
            with fail_fast("Invalid configuration"):
                resolved = self.resolve_source(spec.source, source_conninfo, conn)
                spec = resolve_columns(
                    conn, dataclasses.replace(spec, source=resolved), resolved.columns
                )
            with fail_fast(f"Cannot plan job {scope.job_key!r}"):
                job = plan_job(
                    CheckpointStore(conn),
                    scope.job_key,
                    spec,
                    source_conninfo=source_conninfo,
                    make_source=source_from_dict,
                    chunks=chunks,
                    chunk_size=size,
                    max_chunks=max_chunks,
                    full_refresh=full_refresh,
                    params={
                        "dag_id": context["dag"].dag_id,
                        "run_id": context["run_id"],
                        "conn_id": self.conn_id,
                        "source_conn_id": source_conn_id,
                    },
                )
        self.log.info(
            "Job %s: %d chunks, %d rows planned (%s -> %s, transform %s, %s)",
            job.job_key,
            len(job.plan),
            job.rows_total,
            job.source,
            job.target,
            spec.transform.path or "none",
            spec.transform.kind,
        )
        context["ti"].xcom_push(key="job_key", value=job.job_key)
        return [{"job_key": job.job_key, "chunk": dict(entry)} for entry in job.plan]
