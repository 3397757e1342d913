"""The replay task: run a job's pending dead letters through its transform again, after a fix.

A page of dead letters at a time, each page ONE transaction::

    fetch_for_replay (FOR UPDATE SKIP LOCKED, in id order)
        |
    the rows: from the source table as it is now (replay_from="source": a data fix applies)
        |     or as the dead letters stored them (replay_from="payload")
        v
    the job's transform in a WorkerPool (crash rows isolated, failing rows retried)
        |
    write_rows(target) + mark_replayed(the keys that succeeded)
    + record_dead_letters(the ones that failed again: attempts added, still pending)
        |
    COMMIT

So a replayed item is in the target and marked replayed together, or neither; a replay killed
half way leaves the committed pages done and the rest pending for the next replay. Only table
jobs (kind ``"table"``, created by the plan task) can be replayed here: the job's stored spec and
transform say what to read, how to transform and where to write.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from parallel_batch.airflow.connection import DEFAULT_CONN_ID, resolve_conninfo
from parallel_batch.airflow.params import (
    DEFAULT_REPLAY_BATCH_ROWS,
    DEFAULT_WORKERS,
    fail_fast,
    load_transform,
    positive_int,
    ratio_value,
)
from parallel_batch.airflow.plan import JOB_KIND, stored_spec
from parallel_batch.core.batch_transform import (
    DEFAULT_RETRY,
    BatchTransformer,
    FailedRow,
    Row,
)
from parallel_batch.core.table_job import TableJobSpec
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.retry import RetryPolicy
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.store import deadletters
from parallel_batch.store.catalog import key_to_json, key_type
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.deadletters import DeadLetter, StoredDeadLetter, json_payload
from parallel_batch.store.identifiers import column_sql, columns_sql, table_sql
from parallel_batch.store.writer import write_rows

__all__ = ["ReplayDeadLettersOperator", "ReplayFrom", "replay_table_dead_letters"]

ReplayFrom = Literal["source", "payload"]
REPLAY_FROM: tuple[ReplayFrom, ...] = ("source", "payload")
MISSING_ERROR = "SourceRowMissing"


@dataclass
class ReplayTotals:
    """What a replay did.

    :param attempted: dead letters taken.
    :param replayed: now in the target, marked replayed.
    :param failed_again: still failing (attempts added), pending again.
    :param missing: their source row is gone (replay_from="source"); still pending.
    """

    attempted: int = 0
    replayed: int = 0
    failed_again: int = 0
    missing: int = 0

    @property
    def still_pending(self) -> int:
        return self.failed_again + self.missing


def _item_key(row: Row, key_index: int) -> str:
    return str(key_to_json(row[key_index]))


def _rows_from_source(
    conn: psycopg.Connection, spec: TableJobSpec, keys: list[str]
) -> dict[str, Row]:
    cast = sql.SQL(key_type(conn, spec.source_table, spec.key_column))  # from the catalog
    query = sql.SQL("SELECT {columns} FROM {table} WHERE {key} = ANY(CAST(%s AS {cast}[]))").format(
        columns=columns_sql(spec.source_columns),
        table=table_sql(spec.source_table),
        key=column_sql(spec.key_column),
        cast=cast,
    )
    rows = conn.execute(query, (keys,)).fetchall()
    return {_item_key(row, spec.key_index): row for row in rows}


def _rows_from_payloads(
    conn: psycopg.Connection, spec: TableJobSpec, letters: Sequence[StoredDeadLetter]
) -> dict[str, Row]:
    # The source's row type turns the stored JSON back into exact column types.
    stored = [letter.payload for letter in letters if letter.payload is not None]
    if not stored:
        return {}
    query = sql.SQL(
        "SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS r"
    ).format(
        columns=sql.SQL(", ").join(
            sql.SQL("r.{}").format(column_sql(c)) for c in spec.source_columns
        ),
        table=table_sql(spec.source_table),
    )
    rows = conn.execute(query, (json.dumps(stored),)).fetchall()
    return {_item_key(row, spec.key_index): row for row in rows}


def _dead_letter(failure: FailedRow, spec: TableJobSpec) -> DeadLetter:
    return DeadLetter(
        item_key=_item_key(failure.row, spec.key_index),
        line_number=None,
        payload=json_payload(spec.source_columns, failure.row),
        error_type=failure.error_type,
        message=failure.message,
        attempts=failure.attempts,
    )


def _replay_page(
    conn: psycopg.Connection,
    job_key: str,
    spec: TableJobSpec,
    letters: Sequence[StoredDeadLetter],
    transformer: BatchTransformer,
    replay_from: ReplayFrom,
) -> ReplayTotals:
    """Replay one page inside the caller's transaction."""
    by_key = {letter.item_key: letter for letter in letters}
    if replay_from == "source":
        rows = _rows_from_source(conn, spec, list(by_key))
    else:
        rows = _rows_from_payloads(conn, spec, letters)
    result = transformer.transform(list(rows.values()))
    failed = {_item_key(f.row, spec.key_index) for f in result.failures}
    succeeded = [key for key in rows if key not in failed]
    if result.outputs:
        write_rows(
            conn,
            spec.target_table,
            spec.target_columns,
            result.outputs,
            mode=spec.write_mode,
            key_columns=spec.target_key_columns,
        )
    deadletters.mark_replayed(conn, job_key, succeeded)
    again: dict[str, list[DeadLetter]] = defaultdict(list)
    for failure in result.failures:
        again_letter = _dead_letter(failure, spec)
        again[by_key[again_letter.item_key].chunk_id].append(again_letter)
    missing = [stored for key, stored in by_key.items() if key not in rows]
    for stored in missing:
        again[stored.chunk_id].append(
            DeadLetter(
                item_key=stored.item_key,
                line_number=stored.line_number,
                payload=stored.payload,
                error_type=MISSING_ERROR,
                message=f"the source row is no longer in {spec.source_table}; "
                "replay_from='payload' replays the row the dead letter stored",
                attempts=1,
            )
        )
    for chunk_id, chunk_letters in again.items():
        deadletters.record_dead_letters(conn, job_key, chunk_id, chunk_letters)
    return ReplayTotals(
        attempted=len(letters),
        replayed=len(succeeded),
        failed_again=len(result.failures),
        missing=len(missing),
    )


def replay_table_dead_letters(
    conninfo: str,
    job_key: str,
    spec: TableJobSpec,
    transformer: BatchTransformer,
    *,
    replay_from: ReplayFrom = "source",
    page_rows: int = DEFAULT_REPLAY_BATCH_ROWS,
    log: Any = None,
) -> ReplayTotals:
    """Replay every pending dead letter of a table job, a page per transaction.

    :param conninfo: the database.
    :param job_key: the job.
    :param spec: the job's spec (source, target, columns, key).
    :param transformer: the transform, in a worker pool.
    :param replay_from: ``"source"`` (the row now) or ``"payload"`` (the row as stored).
    :param page_rows: dead letters per transaction.
    :param log: a logger for one line per page; None: silent.
    """
    if replay_from not in REPLAY_FROM:
        raise ValueError(f"replay_from must be one of {list(REPLAY_FROM)}, got {replay_from!r}")
    totals = ReplayTotals()
    after_id = 0
    with psycopg.connect(
        conninfo, autocommit=True, application_name="parallel_batch replay"
    ) as conn:
        while True:
            with conn.transaction():
                letters = deadletters.fetch_for_replay(
                    conn, job_key, limit=page_rows, after_id=after_id
                )
                if not letters:
                    break
                after_id = letters[-1].id
                page = _replay_page(conn, job_key, spec, letters, transformer, replay_from)
            totals.attempted += page.attempted
            totals.replayed += page.replayed
            totals.failed_again += page.failed_again
            totals.missing += page.missing
            if log is not None:
                log.info(
                    "Replayed %d dead letters of job %s so far: %d now in %s, %d failed again, "
                    "%d without a source row",
                    totals.attempted,
                    job_key,
                    totals.replayed,
                    spec.target_table,
                    totals.failed_again,
                    totals.missing,
                )
    return totals


class ReplayDeadLettersOperator(BaseOperator):
    """Replay a table job's pending dead letters through its transform into its target.

    :param job_key: the job whose dead letters to replay (templated).
    :param replay_from: ``"source"``: the rows as the source table holds them now (after a
        data fix); ``"payload"``: the rows as the dead letters stored them (templated).
    :param max_failed_ratio: fail when more than this share of the replayed items fail again
        (templated).
    :param batch_rows: dead letters per transaction (templated).
    :param workers: worker processes for the transform (templated).
    :param transform: another transform than the job's (``"package.module:function"``), e.g.
        a fixed one; None: the job's.
    :param retry: attempts and backoff per failing row.
    :param task_timeout: seconds one batch may take in a worker; None: no limit.
    :param conn_id: the Airflow connection of the database (templated).
    """

    template_fields: Sequence[str] = (
        "job_key",
        "replay_from",
        "max_failed_ratio",
        "batch_rows",
        "workers",
        "conn_id",
    )
    ui_color = "#f8d7da"

    def __init__(
        self,
        *,
        job_key: str,
        replay_from: str = "source",
        max_failed_ratio: float | str = 0.0,
        batch_rows: int | str = DEFAULT_REPLAY_BATCH_ROWS,
        workers: int | str = DEFAULT_WORKERS,
        transform: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        task_timeout: float | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError("task_timeout must be greater than 0")
        self.job_key = job_key
        self.replay_from = replay_from
        self.max_failed_ratio = max_failed_ratio
        self.batch_rows = batch_rows
        self.workers = workers
        self.transform = transform
        self.retry = retry
        self.task_timeout = task_timeout
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_fast("Invalid configuration"):
            if not isinstance(self.job_key, str) or not self.job_key.strip():
                raise ConfigurationError("job_key must name the job to replay")
            if self.replay_from not in REPLAY_FROM:
                raise ConfigurationError(
                    f"replay_from must be one of {list(REPLAY_FROM)}, got {self.replay_from!r}"
                )
            max_ratio = ratio_value(self.max_failed_ratio, "max_failed_ratio")
            page_rows = positive_int(self.batch_rows, "batch_rows")
            workers = positive_int(self.workers, "workers")
        job_key = self.job_key.strip()
        conninfo = resolve_conninfo(self.conn_id)
        with CheckpointStore.connect(conninfo, application_name="parallel_batch replay") as store:
            job = store.get_job(job_key)
        if job is None:
            raise AirflowFailException(
                f"job {job_key!r} does not exist; `parallel-batch status` lists the jobs"
            )
        if job.kind != JOB_KIND:
            raise AirflowFailException(
                f"job {job_key!r} is a {job.kind!r} job; this task replays {JOB_KIND!r} jobs only"
            )
        with fail_fast(f"Job {job_key!r} cannot be replayed"):
            spec, transform_path = stored_spec(job)
            transform = load_transform(self.transform or transform_path)
        self.log.info(
            "Replaying the pending dead letters of job %s (%s -> %s) from the %s, through %s",
            job_key,
            spec.source_table,
            spec.target_table,
            "source table" if self.replay_from == "source" else "stored payloads",
            self.transform or transform_path,
        )
        with WorkerPool(workers, task_timeout=self.task_timeout) as pool:
            totals = replay_table_dead_letters(
                conninfo,
                job_key,
                spec,
                BatchTransformer(transform, pool=pool, retry=self.retry),
                replay_from=self.replay_from,
                page_rows=page_rows,
                log=self.log,
            )
        ratio = totals.still_pending / totals.attempted if totals.attempted else 0.0
        summary = {
            "job_key": job_key,
            "attempted": totals.attempted,
            "replayed": totals.replayed,
            "failed_again": totals.failed_again,
            "missing_source_rows": totals.missing,
            "still_pending": totals.still_pending,
            "failed_ratio": ratio,
        }
        if not totals.attempted:
            self.log.info("Job %s has no pending dead letters: nothing to replay", job_key)
        else:
            self.log.info(
                "Replay of job %s: %d of %d dead letters are now in %s; %d still pending",
                job_key,
                totals.replayed,
                totals.attempted,
                spec.target_table,
                totals.still_pending,
            )
        if ratio > max_ratio:
            raise AirflowFailException(
                f"{totals.still_pending} of {totals.attempted} dead letters of job {job_key!r} "
                f"failed again ({ratio:.1%} > max_failed_ratio {max_ratio:.1%}): "
                f"{totals.failed_again} raised again, {totals.missing} have no source row. They "
                "stay in parallel_batch.dead_letters with their attempts counted; fix the cause "
                "and replay again"
            )
        return summary
