"""The chunk task: process one chunk of any job, resuming from its checkpoint.

One mapped task instance per chunk of the plan::

    ProcessChunkOperator.partial(...).expand_kwargs(plan.output)
        |  job_key + chunk (a key or byte range) from the plan's XCom
        v
    the job's spec from the jobs row (what the plan stored: source, transform, target)
        |
    core.runner.run_chunk in a WorkerPool(workers)   lease, read after the checkpoint,
        |                                           transform (failing and crashing rows
        |                                           isolated), commit rows + dead letters +
        |                                           checkpoint at once
        v
    progress: the task log every 10 s (%, rows/s, ETA) and the task state store
        |
    XCom: the ChunkSummary as a small dict

Retries are Airflow's: a failed or killed attempt leaves its committed batches and its
checkpoint, and the next attempt resumes after them; a completed chunk is skipped. The chunk's
lease heartbeat moves with every committed batch; Airflow's own task heartbeat is the
supervisor's business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from parallel_batch.airflow import DEFAULT_CONN_ID
from parallel_batch.airflow.connection import resolve_conninfo
from parallel_batch.airflow.storage import with_storage
from parallel_batch.airflow.values import DEFAULT_WORKERS, fail_fast, positive_int
from parallel_batch.airflow.values import optional_positive_int as optional_int
from parallel_batch.core.job import ChunkSummary
from parallel_batch.core.planning import stored_spec
from parallel_batch.core.runner import run_chunk
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.progress import ProgressSnapshot
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import source_from_dict
from parallel_batch.store.checkpoints import DEFAULT_WAIT_TIMEOUT, CheckpointStore

__all__ = ["MAP_INDEX_TEMPLATE", "ProcessChunkOperator", "StateStoreProgress"]

log = logging.getLogger(__name__)

# How each mapped task is named in the UI: by its chunk's key range, never by its index.
MAP_INDEX_TEMPLATE = "{{ task.chunk.chunk_id }}"

# Seconds between two writes of the progress to the task state store (an API call each).
# Shorter: the UI follows more closely; longer: fewer calls to the API server.
STATE_STORE_INTERVAL = 5.0
STATE_STORE_KEY = "progress"


class StateStoreProgress:
    """Write a chunk's progress to Airflow's task state store, at most every few seconds.

    The store is ``context["task_state_store"]`` (Airflow 3.3); when it is missing, or a write
    fails, progress goes to the task log only.

    :param store: the task state store accessor, or None.
    :param chunk_id: the chunk, stored with the progress.
    :param interval: seconds between writes at the least.
    """

    def __init__(
        self, store: Any, chunk_id: str, *, interval: float = STATE_STORE_INTERVAL
    ) -> None:
        self._store = store
        self._chunk_id = chunk_id
        self._interval = interval
        self._last = -float("inf")
        self.writes = 0

    def __call__(self, snapshot: ProgressSnapshot) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        self._write(
            {
                "chunk_id": self._chunk_id,
                "state": "running",
                "rows_done": snapshot.done,
                "rows_total": snapshot.total,
                "percent": None if snapshot.percent is None else round(snapshot.percent, 1),
                "rows_per_second": round(snapshot.rate_per_second, 1),
                "eta_seconds": None
                if snapshot.eta_seconds is None
                else round(snapshot.eta_seconds, 1),
            }
        )

    def finish(self, summary: ChunkSummary) -> None:
        """Write the chunk's final state."""
        self._write(
            {
                "chunk_id": self._chunk_id,
                "state": "skipped" if summary.skipped else "completed",
                "rows_done": summary.rows_read,
                "rows_written": summary.rows_written,
                "rows_failed": summary.rows_failed,
                "percent": 100.0,
                "eta_seconds": 0,
            }
        )

    @contextmanager
    def failing(self) -> Iterator[None]:
        """Write a ``failed`` state (with the error's type) when the block raises."""
        try:
            yield
        except BaseException as exc:
            self._write(
                {"chunk_id": self._chunk_id, "state": "failed", "error": type(exc).__name__}
            )
            raise

    def _write(self, value: dict[str, Any]) -> None:
        if self._store is None:
            return
        try:
            self._store.set(STATE_STORE_KEY, value)
            self.writes += 1
        except Exception as exc:  # progress is a convenience: it must never fail the chunk
            self._store = None
            log.warning(
                "Cannot write progress to the task state store (%s); the task log has it", exc
            )


def _holder(context: Context) -> str:
    ti = context["ti"]
    return (
        f"{ti.dag_id}/{ti.run_id}/{ti.task_id}[{ti.map_index}] try {ti.try_number} "
        f"on {ti.hostname or socket.gethostname()}"
    )


class ProcessChunkOperator(BaseOperator):
    """Process one chunk of a job exactly once, resuming from its checkpoint.

    Meant to be mapped over the plan: ``.partial(...).expand_kwargs(plan.output)``.

    :param job_key: the job (from the plan) (templated).
    :param chunk: the chunk's plan entry (templated).
    :param workers: worker processes that read, transform and encode (templated); an async
        transform runs in the task process.
    :param batch_rows: rows per batch; None: the job's (templated).
    :param task_timeout: seconds one batch may take in a worker before it is killed and split;
        None: no limit.
    :param wait_timeout: seconds to wait for a live duplicate that holds the chunk.
    :param conn_id: the Airflow connection of the job's database (its target) (templated).
    """

    template_fields: Sequence[str] = ("job_key", "chunk", "workers", "batch_rows", "conn_id")
    ui_color = "#d4edda"

    def __init__(
        self,
        *,
        job_key: str,
        chunk: Mapping[str, Any],
        workers: int | str = DEFAULT_WORKERS,
        batch_rows: int | str | None = None,
        task_timeout: float | None = None,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("map_index_template", MAP_INDEX_TEMPLATE)
        super().__init__(**kwargs)
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError("task_timeout must be greater than 0")
        if wait_timeout < 0:
            raise ValueError("wait_timeout must not be negative")
        self.job_key = job_key
        self.chunk = chunk
        self.workers = workers
        self.batch_rows = batch_rows
        self.task_timeout = task_timeout
        self.wait_timeout = wait_timeout
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_fast("Invalid configuration"):
            workers = positive_int(self.workers, "workers")
            batch_rows = optional_int(self.batch_rows, "batch_rows")
            entry = dict(self.chunk)
            chunk_id = str(entry["chunk_id"])
        conninfo = resolve_conninfo(self.conn_id)
        with CheckpointStore.connect(conninfo, application_name="parallel_batch job") as store:
            job = store.get_job(self.job_key)
        if job is None:
            raise AirflowFailException(
                f"job {self.job_key!r} does not exist: its plan task must run first"
            )
        with fail_fast(f"Job {self.job_key!r} cannot run"):
            spec = with_storage(stored_spec(job, source_from_dict))
            if chunk_id not in job.chunk_ids:
                raise ConfigurationError(
                    f"chunk {chunk_id} is not in the job's plan (was it started over with "
                    "full_refresh by another run?)"
                )
            if batch_rows is not None and batch_rows != spec.batch_rows:
                spec = dataclasses.replace(spec, batch_rows=batch_rows)
            spec.transform.load()
        source_conn_id = str(job.params.get("source_conn_id") or self.conn_id)
        source_conninfo = (
            conninfo if source_conn_id == self.conn_id else resolve_conninfo(source_conn_id)
        )
        progress = StateStoreProgress(context.get("task_state_store"), chunk_id)
        in_pool = spec.transform.kind != "async"
        self.log.info(
            "Chunk %s of job %s: %s rows planned; %s -> %s, %s transform %s, %s, %d rows per batch",
            chunk_id,
            self.job_key,
            entry.get("rows"),
            spec.source.name,
            spec.target_table,
            spec.transform.kind,
            spec.transform.path or "(none: columns by name)",
            f"{workers} worker process(es)"
            if in_pool
            else f"{spec.transform.concurrency} calls in flight",
            spec.batch_rows,
        )
        with contextlib.ExitStack() as stack:
            # What the task holds now (Airflow, the DAG, every import) outlives the chunk: out of
            # the garbage collector's sight while it runs, its full collections scan only what
            # the chunk makes (each scanned Airflow's whole heap again). Back in sight after it
            # (a DAG tested in one process goes on), unless the process froze objects itself
            # (an executor that forks its workers frozen): those stay as it left them.
            if gc.get_freeze_count() == 0:
                stack.callback(gc.unfreeze)
            gc.freeze()
            pool = (
                stack.enter_context(WorkerPool(workers, task_timeout=self.task_timeout))
                if in_pool
                else None
            )
            stack.enter_context(progress.failing())
            summary = run_chunk(
                spec,
                self.job_key,
                entry,
                conninfo=conninfo,
                source_conninfo=source_conninfo,
                pool=pool,
                holder=_holder(context),
                on_progress=progress,
                wait_timeout=self.wait_timeout,
            )
            crashed = 0 if pool is None else pool.statistics().crashed_workers
        progress.finish(summary)
        self._log(summary, crashed)
        return summary.to_dict()

    def _log(self, summary: ChunkSummary, crashed: int) -> None:
        if summary.skipped:
            self.log.info("Chunk %s was completed by an earlier attempt: skipped", summary.chunk_id)
            return
        rate = summary.rows_this_attempt / summary.seconds if summary.seconds > 0 else 0.0
        self.log.info(
            "Chunk %s done: %d rows this attempt in %.1f s (%.0f rows/s)%s; chunk totals: "
            "%d read, %d written (%d of them fan-out), %d filtered, %d dead letters; %d worker "
            "process(es) replaced",
            summary.chunk_id,
            summary.rows_this_attempt,
            summary.seconds,
            rate,
            "" if summary.resumed_from is None else f", resumed after {summary.resumed_from}",
            summary.rows_read,
            summary.rows_written,
            summary.rows_fanout,
            summary.rows_filtered,
            summary.rows_failed,
            crashed,
        )
