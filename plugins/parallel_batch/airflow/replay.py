"""The replay task: run a job's pending dead letters through its transform again, after a fix.

Thin: :func:`parallel_batch.core.replay.replay_job` does the work, a page of dead letters per
transaction (rows written and dead letters marked replayed together, or neither).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from parallel_batch.airflow import DEFAULT_CONN_ID
from parallel_batch.airflow.connection import resolve_conninfo
from parallel_batch.airflow.values import DEFAULT_WORKERS, fail_fast, positive_int, ratio_value
from parallel_batch.core.planning import stored_spec
from parallel_batch.core.replay import DEFAULT_REPLAY_BATCH_ROWS, REPLAY_FROM, replay_job
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import source_from_dict
from parallel_batch.store.checkpoints import CheckpointStore

__all__ = ["ReplayDeadLettersOperator"]


class ReplayDeadLettersOperator(BaseOperator):
    """Replay a job's pending dead letters through its transform into its target.

    :param job_key: the job whose dead letters to replay (templated).
    :param replay_from: ``"source"``: the rows as the source table holds them now (after a
        data fix); ``"payload"``: the rows as the dead letters stored them (templated).
    :param max_failed_ratio: fail when more than this share of the replayed items fail again
        (templated).
    :param batch_rows: dead letters per transaction (templated).
    :param workers: worker processes for the transform (templated).
    :param transform: another transform than the job's (``"package.module:function"``, of the
        same kind), e.g. a fixed one; None: the job's.
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
        with fail_fast(f"Job {job_key!r} cannot be replayed"):
            spec = stored_spec(job, source_from_dict)
            if self.transform:
                transform = dataclasses.replace(spec.transform, path=str(self.transform))
                spec = dataclasses.replace(spec, transform=transform)
            spec.transform.load()
        source_conn_id = str(job.params.get("source_conn_id") or self.conn_id)
        self.log.info(
            "Replaying the pending dead letters of job %s (%s -> %s) from the %s, through %s",
            job_key,
            spec.source.name,
            spec.target_table,
            "source" if self.replay_from == "source" else "stored payloads",
            spec.transform.path or "no transform",
        )
        with WorkerPool(workers, task_timeout=self.task_timeout) as pool:
            totals = replay_job(
                conninfo,
                job_key,
                spec,
                source_conninfo=resolve_conninfo(source_conn_id)
                if source_conn_id != self.conn_id
                else conninfo,
                replay_from=self.replay_from,
                page_rows=page_rows,
                pool=pool,
            )
        ratio = totals.still_pending / totals.attempted if totals.attempted else 0.0
        summary = {
            "job_key": job_key,
            "attempted": totals.attempted,
            "replayed": totals.replayed,
            "failed_again": totals.failed_again,
            "missing_source_rows": totals.missing,
            "skipped_duplicates": totals.skipped,
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
                f"{totals.failed_again} failed again, {totals.missing} have no row to replay. They "
                "stay in parallel_batch.dead_letters with their attempts counted; fix the cause "
                "and replay again"
            )
        return summary
