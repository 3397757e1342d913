"""The task groups users wire like a task: ``extract >> ParallelTableJob(...) >> report``.

Each adds the same three steps to the current DAG (Cosmos' ``DbtTaskGroup`` is the model)::

    <group_id>.plan  ->  <group_id>.process  (one mapped task per chunk)  ->  <group_id>.summarize
       check, create       lease, resume, batches through the transform,      reconcile, fail above
       or reuse the job    fenced commits                                     max_failed_ratio, the
                                                                              target's Asset event

Every argument but ``group_id``, ``pool``, ``retry`` and ``asset`` may be a template
(``"{{ params.chunks }}"``); render the DAG's templates as native objects
(``render_template_as_native_obj=True``) so that numbers stay numbers and null stays None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, Unpack

from airflow.sdk import Asset, TaskGroup, XComArg

from parallel_batch.airflow import DEFAULT_CONN_ID, POOL_NAME
from parallel_batch.airflow.assets import target_asset
from parallel_batch.airflow.plan import JOB_OPTIONS
from parallel_batch.airflow.plan_sources import (
    DEFAULT_CHUNK_BYTES,
    PlanCsvJobOperator,
    PlanTableJobOperator,
)
from parallel_batch.airflow.process import MAP_INDEX_TEMPLATE, ProcessChunkOperator
from parallel_batch.airflow.summarize import SummarizeJobOperator
from parallel_batch.airflow.values import DEFAULT_MAX_FAILED_RATIO, DEFAULT_WORKERS

__all__ = [
    "DEFAULT_CSV_BATCH_ROWS",
    "DEFAULT_CSV_MAX_FAILED_RATIO",
    "MAX_ACTIVE_CHUNKS",
    "JobOptions",
    "ParallelCsvJob",
    "ParallelTableJob",
]

# Chunk tasks of one run at once, at most (the pool bounds them across runs). Larger only helps
# when the pool has more slots; smaller leaves slots to other runs (backfills run several).
MAX_ACTIVE_CHUNKS = 16
# Files from outside hold more bad records than tables do: 5% may fail by default.
DEFAULT_CSV_MAX_FAILED_RATIO = 0.05
# Records per CSV batch: one pass and one committed transaction each, as a table's 10,000 rows.
# Larger: the per-batch costs (the commit, the checkpoint, claim and dead-letter statements, the
# hand-offs to and from the worker) are shared by more records; smaller: less memory and less
# work redone after a kill. The bench's 2M-record DAG, taking turns in one Airflow: 5,000 13.4-
# 14.0 s, 10,000 12.4-13.5 s, 20,000 12.8-13.4 s, 50,000 13.9-14.0 s (another round).
DEFAULT_CSV_BATCH_ROWS = 10_000


class JobOptions(TypedDict, total=False):
    """The keyword arguments both task groups take (see :class:`ParallelTableJob`)."""

    transform: Any
    transform_kind: str
    transform_kwargs: Mapping[str, Any] | str | None
    target_columns: Sequence[str] | str | None
    chunks: int | str | None
    batch_rows: int | str
    workers: int | str
    concurrency: int | str
    retry: Any
    max_failed_ratio: float | str
    job_key: str | None
    full_refresh: bool | str
    write_mode: str
    pool: str
    max_active_chunks: int
    task_timeout: float | None
    asset: Asset | str | bool | None
    tooltip: str
    default_args: dict[str, Any]
    prefix_group_id: bool


_PLAN_OPTIONS = (*JOB_OPTIONS, "retry")
_GROUP_OPTIONS = ("tooltip", "default_args", "prefix_group_id")


def _pick(options: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: options[name] for name in names if name in options}


class _ParallelJob(TaskGroup):
    """plan >> process (mapped) >> summarize, built by the subclasses' constructors."""

    def _start(self, group_id: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(JobOptions.__annotations__))
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {', '.join(unknown)}")
        super().__init__(group_id=group_id, **_pick(options, _GROUP_OPTIONS))

    def _build(
        self,
        plan: Any,
        conn_id: str,
        target_table: str,
        max_failed_ratio: float,
        options: Mapping[str, Any],
    ) -> None:
        process = ProcessChunkOperator.partial(
            task_id="process",
            workers=options.get("workers", DEFAULT_WORKERS),
            batch_rows=options.get("batch_rows"),  # None: the job's
            conn_id=conn_id,
            task_timeout=options.get("task_timeout"),
            pool=options.get("pool", POOL_NAME),
            max_active_tis_per_dagrun=options.get("max_active_chunks", MAX_ACTIVE_CHUNKS),
            map_index_template=MAP_INDEX_TEMPLATE,
        ).expand_kwargs(plan.output)
        asset = target_asset(options.get("asset", True), conn_id, target_table)
        SummarizeJobOperator(
            task_id="summarize",
            job_key=XComArg(plan, key="job_key"),
            summaries=process.output,
            max_failed_ratio=options.get("max_failed_ratio", max_failed_ratio),
            conn_id=conn_id,
            # An empty plan (no rows in the interval) skips `process`; the summary still runs.
            trigger_rule="none_failed",
            outlets=[asset] if asset is not None else [],
        )
        self.plan = plan
        self.process = process


class ParallelTableJob(_ParallelJob):
    """Process a table in parallel, restartably and exactly once, into a target table.

    :param group_id: the group's id (its tasks are ``<group_id>.plan`` and so on).
    :param source_table: ``schema.table`` to read.
    :param key_column: its unique, NOT NULL key: chunks and batches are its ranges.
    :param target_table: ``schema.table`` to write; it must exist (columns and types from its
        catalog); rows are upserted on its primary key unless ``write_mode="copy"``.
    :param transform: ``"package.module:function"`` or a module-level callable; None: columns by
        name.
    :param transform_kind: ``"rows"`` (default), ``"batch"``, ``"dataframe"``, ``"async"`` or
        ``"arrow"``.
    :param transform_kwargs: keyword arguments for every call of the transform.
    :param source_columns: the columns read (default: all).
    :param target_columns: the columns written (default: every column that can be written).
    :param interval_column: the column a scheduled or backfill run's data interval filters on;
        None: the whole table.
    :param interval_start: / :param interval_end: an explicit interval (manual runs).
    :param chunk_rows: rows per chunk (default 1,000,000); or ``chunks``: how many.
    :param batch_rows: rows per batch (one commit each; default 10,000, or 50,000 for a
        ``dataframe`` transform).
    :param workers: worker processes per chunk task (sync kinds; default 1).
    :param concurrency: / :param retry: calls in flight per task and per-row retries (a
        RetryPolicy, or the exception classes (or ``"module:Class"`` names) to retry).
    :param max_failed_ratio: the share of rows that may end in dead letters before the run fails
        (default 1%).
    :param job_key: the job's identity (default: the DAG id and the run's interval or run id).
    :param full_refresh: start the job over, replacing its earlier output.
    :param write_mode: ``"auto"`` (default), ``"upsert"`` or ``"copy"``.
    :param conn_id: the source's database (an Airflow Postgres connection).
    :param target_conn_id: the target's database (checkpoints and dead letters live there);
        None: ``conn_id``.
    :param pool: the Airflow pool of the chunk tasks (default ``parallel_batch``).
    :param max_active_chunks: chunk tasks of one run at once, at most.
    :param task_timeout: seconds a batch may take in a worker before it is killed and split.
    :param asset: the target's Asset outlet: an Asset or URI; True (default): from the target
        connection; False: none.
    """

    def __init__(
        self,
        *,
        group_id: str,
        source_table: str,
        target_table: str,
        key_column: str = "id",
        source_columns: Sequence[str] | str | None = None,
        interval_column: str | None = None,
        interval_start: Any = None,
        interval_end: Any = None,
        chunk_rows: int | str | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        target_conn_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> None:
        target_conn = target_conn_id or conn_id
        self._start(group_id, options)
        with self:
            plan = PlanTableJobOperator(
                task_id="plan",
                source_table=source_table,
                key_column=key_column,
                source_columns=source_columns,
                interval_column=interval_column,
                interval_start=interval_start,
                interval_end=interval_end,
                chunk_rows=chunk_rows,
                source_conn_id=conn_id,
                target_table=target_table,
                conn_id=target_conn,
                **_pick(options, _PLAN_OPTIONS),
            )
            self._build(plan, target_conn, target_table, DEFAULT_MAX_FAILED_RATIO, options)


class ParallelCsvJob(_ParallelJob):
    """Load a CSV file in parallel, restartably and exactly once, into a target table.

    Types come from the target's catalog; a field that does not convert dead-letters its record
    with its 1-based starting line and the column. The options shared with
    :class:`ParallelTableJob` mean the same (``batch_rows`` defaults to 10,000 records,
    ``max_failed_ratio`` to 5%); besides:

    :param path: the file, as every worker sees it: a local path or a URL (``file://``,
        ``s3://``, ``gs://``... read by byte ranges, never downloaded whole).
    :param columns: CSV column -> target column (default: by header name); for a file without a
        header, the target column of each CSV column in file order.
    :param header: whether the first record names the columns.
    :param delimiter: the field separator, one character (``";"``, ``"\\t"`` or ``"tab"``...).
    :param quotechar: the quote character; None or ``""``: no quoting.
    :param encoding: ``utf-8`` (default) or a single-byte encoding (``latin-1``, ``cp1252``...).
    :param null_values: the fields read as NULL (default ``[""]``, the empty field).
    :param storage_conn_id: the Airflow connection with the credentials of a ``path`` URL (used
        through ``ObjectStoragePath``); None: the filesystem's own (environment, profile).
    :param key_column: a column whose duplicates are dead letters, the first in the file
        winning; None: none.
    :param chunk_bytes: bytes per chunk (default 128 MiB); or ``chunks``: how many.
    :param conn_id: the target's database.

    With no transform or an ``"arrow"`` one, a UTF-8 file's batches are read, checked and
    encoded as Arrow columns (README: "Transform kinds", the columnar path).
    """

    def __init__(
        self,
        *,
        group_id: str,
        path: str,
        target_table: str,
        columns: Mapping[str, str] | Sequence[str] | str | None = None,
        header: bool | str = True,
        key_column: str | None = None,
        chunk_bytes: int | str | None = DEFAULT_CHUNK_BYTES,
        conn_id: str = DEFAULT_CONN_ID,
        delimiter: str = ",",
        quotechar: str | None = '"',
        encoding: str = "utf-8",
        null_values: Sequence[str] | str | None = None,
        storage_conn_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> None:
        options.setdefault("batch_rows", DEFAULT_CSV_BATCH_ROWS)
        self._start(group_id, options)
        with self:
            plan = PlanCsvJobOperator(
                task_id="plan",
                path=path,
                columns=columns,
                header=header,
                key_column=key_column,
                chunk_bytes=chunk_bytes,
                dialect={
                    "delimiter": delimiter,
                    "quotechar": quotechar,
                    "encoding": encoding,
                    "null_values": null_values,
                },
                storage_conn_id=storage_conn_id,
                target_table=target_table,
                conn_id=conn_id,
                **_pick(options, _PLAN_OPTIONS),
            )
            self._build(plan, conn_id, target_table, DEFAULT_CSV_MAX_FAILED_RATIO, options)
