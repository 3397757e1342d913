"""The operators of a CSV load job: plan the file's chunks, load each chunk, summarize.

A CSV DAG chains them (see ``dags/parallel_batch_csv.py``)::

    plan = PlanCsvChunksOperator(task_id="plan", path=..., ...)            chunk list (XCom)
    process = LoadCsvChunkOperator.partial(task_id="process", ...)         one mapped task
        .expand_kwargs(plan.output)                                        per byte range
    SummarizeCsvJobOperator(task_id="summarize", summaries=process.output, ...)

The operators stay thin: ``files.csv_job`` plans and stores the job, ``files.load`` runs a chunk
(staged pipeline, exactly-once commits, duplicate ids, dead letters). A bad configuration
(missing file, wrong header, bad number, unsafe identifier, missing target column) fails the
task at once, without retries, with a message that says what to fix.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from airflow.sdk import BaseOperator, Context, conf
from airflow.sdk.exceptions import AirflowFailException

from parallel_batch.airflow.connection import DEFAULT_CONN_ID, resolve_conninfo
from parallel_batch.airflow.csv_params import DEFAULT_CHUNK_BYTES
from parallel_batch.airflow.jobkeys import resolve_run_scope
from parallel_batch.airflow.params import (
    fail_fast,
    optional_positive_int,
    positive_int,
    true_or_false,
)
from parallel_batch.airflow.process import MAP_INDEX_TEMPLATE, StateStoreProgress
from parallel_batch.airflow.summarize import SummarizeTableJobOperator
from parallel_batch.core.csv_job import (
    check_file,
    check_reusable,
    plan_csv_job,
    stored_csv_spec,
)
from parallel_batch.core.csv_load import check_target, run_csv_chunk
from parallel_batch.core.csv_spec import DEFAULT_CSV_BATCH_ROWS, CsvLoadSpec
from parallel_batch.core.enrich import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, EnrichConfig
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.planner import DEFAULT_MAX_CHUNKS, FileChunk
from parallel_batch.store.checkpoints import DEFAULT_WAIT_TIMEOUT, CheckpointStore, JobStatus

__all__ = ["LoadCsvChunkOperator", "PlanCsvChunksOperator", "SummarizeCsvJobOperator"]


def _none(value: Any) -> Any:
    """A null param through a non-native template arrives as "None" or ""."""
    return (
        None
        if value is None or (isinstance(value, str) and value.strip() in ("", "None"))
        else value
    )


class PlanCsvChunksOperator(BaseOperator):
    """Check the file and the target, create or reuse the job, return its chunks for mapping.

    :param path: the CSV file, as every worker sees it (templated).
    :param target_table: ``schema.table`` to upsert into; it must exist (templated).
    :param chunk_bytes: bytes per chunk (templated). Ignored when ``chunks`` is set.
    :param chunks: about this many chunks instead (templated).
    :param batch_rows: records per batch, stored with a new job (templated).
    :param job_key: the job's identity; None: ``<dag_id>:<run_id>`` (or the data interval of a
        scheduled run) (templated).
    :param full_refresh: start the job over: re-plan, replace its dead letters (templated).
    :param conn_id: the Airflow connection of the database (templated).
    """

    template_fields: Sequence[str] = (
        "path",
        "target_table",
        "chunk_bytes",
        "chunks",
        "batch_rows",
        "job_key",
        "full_refresh",
        "conn_id",
    )
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        path: str,
        target_table: str,
        chunk_bytes: int | str | None = DEFAULT_CHUNK_BYTES,
        chunks: int | str | None = None,
        batch_rows: int | str = DEFAULT_CSV_BATCH_ROWS,
        job_key: str | None = None,
        full_refresh: bool | str = False,
        conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.target_table = target_table
        self.chunk_bytes = chunk_bytes
        self.chunks = chunks
        self.batch_rows = batch_rows
        self.job_key = job_key
        self.full_refresh = full_refresh
        self.conn_id = conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        with fail_fast("Invalid configuration"):
            chunks = optional_positive_int(_none(self.chunks), "chunks")
            chunk_bytes = optional_positive_int(_none(self.chunk_bytes), "chunk_bytes")
            if chunks is None and chunk_bytes is None:
                raise ConfigurationError("give chunk_bytes or chunks")
            full_refresh = true_or_false(self.full_refresh, "full_refresh")
            spec = CsvLoadSpec(
                path=str(self.path),
                target_table=str(self.target_table),
                batch_rows=positive_int(self.batch_rows, "batch_rows"),
            )
            check_file(spec)
            dag_run = context["dag_run"]
            scope = resolve_run_scope(
                dag_id=context["dag"].dag_id,
                run_id=context["run_id"],
                run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
                data_interval_start=context.get("data_interval_start"),
                data_interval_end=context.get("data_interval_end"),
                interval_column=None,
                job_key=_none(self.job_key),
            )
        max_chunks = conf.getint("core", "max_map_length", fallback=DEFAULT_MAX_CHUNKS)
        with psycopg.connect(
            resolve_conninfo(self.conn_id), autocommit=True, application_name="parallel_batch plan"
        ) as conn:
            with fail_fast("Invalid configuration"):
                check_target(conn, spec)
            store = CheckpointStore(conn)
            job = store.get_job(scope.job_key)
            if job is not None and not full_refresh:
                with fail_fast(f"Cannot reuse job {scope.job_key!r}"):
                    check_reusable(job, spec)
                if len(job.plan) > max_chunks:
                    raise AirflowFailException(
                        f"job {job.job_key!r} has {len(job.plan)} chunks, more than [core] "
                        f"max_map_length ({max_chunks}); raise it or use full_refresh=true"
                    )
                self.log.info(
                    "Job %s exists (%s, %d chunks): reusing its plan; completed chunks are "
                    "skipped, the others resume from their checkpoints",
                    job.job_key,
                    job.status,
                    len(job.plan),
                )
            else:
                with fail_fast("Invalid configuration"):
                    job = plan_csv_job(
                        store,
                        scope.job_key,
                        spec,
                        chunks=chunks,
                        chunk_bytes=None if chunks is not None else chunk_bytes,
                        max_chunks=max_chunks,
                        full_refresh=full_refresh,
                        params={"dag_id": context["dag"].dag_id, "run_id": context["run_id"]},
                    )
        self.log.info(
            "Job %s: %d chunks, about %d records (%s -> %s)",
            job.job_key,
            len(job.plan),
            job.rows_total,
            spec.path,
            spec.target_table,
        )
        context["ti"].xcom_push(key="job_key", value=job.job_key)
        return [{"job_key": job.job_key, "chunk": dict(entry)} for entry in job.plan]


def _holder(context: Context) -> str:
    ti = context["ti"]
    return (
        f"{ti.dag_id}/{ti.run_id}/{ti.task_id}[{ti.map_index}] try {ti.try_number} "
        f"on {socket.gethostname()}"
    )


def enrich_config(url: Any, concurrency: Any, timeout: Any) -> EnrichConfig | None:
    """Return the enrichment settings of templated values; None when ``url`` is empty.

    :raises ConfigurationError: for a bad URL, concurrency or timeout.
    """
    url = _none(url)
    if url is None:
        return None
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"enrich_timeout must be a number of seconds, got {timeout!r}"
        ) from None
    try:
        return EnrichConfig(
            url=str(url),
            concurrency=positive_int(concurrency, "enrich_concurrency"),
            timeout=seconds,
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


class LoadCsvChunkOperator(BaseOperator):
    """Load one chunk (a byte range) of a CSV job exactly once, resuming from its checkpoint.

    Meant to be mapped over the plan: ``.partial(...).expand_kwargs(plan.output)``; each mapped
    task is named by its byte range in the UI.

    :param job_key: the job (from the plan) (templated).
    :param chunk: the chunk's plan entry, ``{"chunk_id", "start", "end", "first_line", "rows"}``
        (templated).
    :param batch_rows: records per batch; None: the job's (templated).
    :param enrich_url: the enrichment service; None: no enrichment (templated).
    :param enrich_concurrency: requests in flight at most in this task (templated).
    :param enrich_timeout: seconds per request (templated).
    :param wait_timeout: seconds to wait for a live duplicate that holds the chunk.
    :param conn_id: the Airflow connection of the database (templated).
    """

    template_fields: Sequence[str] = (
        "job_key",
        "chunk",
        "batch_rows",
        "enrich_url",
        "enrich_concurrency",
        "enrich_timeout",
        "conn_id",
    )
    ui_color = "#d4edda"

    def __init__(
        self,
        *,
        job_key: str,
        chunk: Mapping[str, Any],
        batch_rows: int | str | None = None,
        enrich_url: str | None = None,
        enrich_concurrency: int | str = DEFAULT_CONCURRENCY,
        enrich_timeout: float | str = DEFAULT_TIMEOUT,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("map_index_template", MAP_INDEX_TEMPLATE)
        super().__init__(**kwargs)
        if wait_timeout < 0:
            raise ValueError("wait_timeout must not be negative")
        self.job_key = job_key
        self.chunk = chunk
        self.batch_rows = batch_rows
        self.enrich_url = enrich_url
        self.enrich_concurrency = enrich_concurrency
        self.enrich_timeout = enrich_timeout
        self.wait_timeout = wait_timeout
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_fast("Invalid configuration"):
            chunk = FileChunk.from_dict(dict(self.chunk))
            batch_rows = optional_positive_int(_none(self.batch_rows), "batch_rows")
            enrich = enrich_config(self.enrich_url, self.enrich_concurrency, self.enrich_timeout)
        conninfo = resolve_conninfo(self.conn_id)
        with CheckpointStore.connect(conninfo, application_name="parallel_batch job") as store:
            job = store.get_job(self.job_key)
        if job is None:
            raise AirflowFailException(
                f"job {self.job_key!r} does not exist: its plan task must run first"
            )
        with fail_fast(f"Job {self.job_key!r} cannot run"):
            spec, identity = stored_csv_spec(job)
            if chunk.chunk_id not in job.chunk_ids:
                raise ConfigurationError(
                    f"chunk {chunk.chunk_id} is not in the job's plan (was it started over "
                    "with full_refresh by another run?)"
                )
            identity.check(spec.path)
            if batch_rows is not None and batch_rows != spec.batch_rows:
                spec = dataclasses.replace(spec, batch_rows=batch_rows)
        progress = StateStoreProgress(context.get("task_state_store"), chunk.chunk_id)
        self.log.info(
            "Chunk %s of job %s: lines from %d, about %d records; %s -> %s, %d records per "
            "batch, %s",
            chunk.chunk_id,
            self.job_key,
            chunk.first_line,
            int(self.chunk.get("rows") or 0),
            spec.path,
            spec.target_table,
            spec.batch_rows,
            "no enrichment"
            if enrich is None
            else f"enrichment with at most {enrich.concurrency} requests in flight",
        )
        with fail_fast("Invalid configuration"):
            try:
                summary = run_csv_chunk(
                    conninfo,
                    self.job_key,
                    chunk,
                    spec,
                    enrich=enrich,
                    holder=_holder(context),
                    on_progress=progress,
                    wait_timeout=self.wait_timeout,
                )
            except (ValueError, TypeError) as exc:  # not configuration: let Airflow retry
                raise RuntimeError(str(exc)) from exc
        progress.finish(summary)
        if summary.skipped:
            self.log.info("Chunk %s was completed by an earlier attempt: skipped", chunk.chunk_id)
        else:
            rate = summary.rows_this_attempt / summary.seconds if summary.seconds > 0 else 0.0
            self.log.info(
                "Chunk %s done: %d records this attempt in %.1f s (%.0f records/s)%s; chunk "
                "totals: %d read, %d loaded, %d dead letters",
                chunk.chunk_id,
                summary.rows_this_attempt,
                summary.seconds,
                rate,
                ""
                if summary.resumed_from is None
                else f", resumed after line {summary.resumed_from}",
                summary.rows_read,
                summary.rows_written,
                summary.rows_failed,
            )
        return summary.to_dict()


class SummarizeCsvJobOperator(SummarizeTableJobOperator):
    """Check and report a CSV job's outcome; fail when too many records ended in dead letters.

    As :class:`~parallel_batch.airflow.summarize.SummarizeTableJobOperator` (the same checks:
    every chunk completed, records read == loaded + dead letters, the failed ratio), with a
    message about fixing the file rather than replaying.
    """

    def _check(self, status: JobStatus, s: dict[str, Any], max_ratio: float) -> None:
        try:
            super()._check(status, s, max_ratio)
        except AirflowFailException as exc:
            if s["failed_ratio"] <= max_ratio:
                raise
            raise AirflowFailException(
                f"{s['dead_letters']} of {s['rows_read']} records ({s['failed_ratio']:.3%}) of "
                f"job {self.job_key!r} ended in the dead letters (parallel_batch.dead_letters, "
                f"each with its line number and reason), more than max_failed_ratio "
                f"{max_ratio:.3%}. Fix the file, then load it again with full_refresh=true "
                f"(or raise max_failed_ratio); see `parallel-batch status {self.job_key}`"
            ) from exc
