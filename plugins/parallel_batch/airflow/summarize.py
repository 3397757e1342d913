"""The summarize task: reduce the chunk summaries and the checkpoint table to the run's outcome.

::

    chunk summaries (XComs of the mapped tasks)  -> rows this run, chunks skipped, seconds
    CheckpointStore.job_status(job_key)          -> the job's totals over all its runs,
                                                    pending dead letters
        |
    every chunk completed?  read == written - fanout + filtered + failed?   no -> fail (a bug)
    dead letters / rows read > max_failed_ratio?      yes -> fail, no retry, with the count and
        |                                                    how to fix and replay them
    the target table's Asset (the task's outlet): an event with rows written and dead letters
        |
    XCom: the run's summary dict
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from parallel_batch.airflow import DEFAULT_CONN_ID
from parallel_batch.airflow.connection import resolve_conninfo
from parallel_batch.airflow.values import DEFAULT_MAX_FAILED_RATIO, fail_fast, ratio_value
from parallel_batch.core.job import ChunkSummary
from parallel_batch.engine.progress import format_duration
from parallel_batch.store.checkpoints import CheckpointStore, JobStatus

__all__ = ["REPLAY_DAG_ID", "SummarizeJobOperator", "replay_hint"]

REPLAY_DAG_ID = "parallel_batch_replay"


def replay_hint(job_key: str, replay_dag_id: str = REPLAY_DAG_ID) -> str:
    """Return how to replay a job's dead letters, as a command line."""
    conf = json.dumps({"job_key": job_key})
    return f"airflow dags trigger {replay_dag_id} -c '{conf}'"


def _values(summaries: Any) -> list[Any]:
    """The mapped tasks' summaries. By index up to their count: iterating Airflow's lazy XCom
    sequence asks for one result past the last and logs an "XCom not found" error."""
    if isinstance(summaries, Sequence) and not isinstance(summaries, str):
        return [summaries[i] for i in range(len(summaries))]
    return list(summaries)


def _reduce(summaries: Any) -> dict[str, Any]:
    chunks = [ChunkSummary.from_dict(dict(s)) for s in _values(summaries) if s is not None]
    return {
        "chunks_run": len(chunks),
        "chunks_skipped": sum(1 for c in chunks if c.skipped),
        "chunks_resumed": sum(1 for c in chunks if c.resumed_from is not None and not c.skipped),
        "rows_this_run": sum(c.rows_this_attempt for c in chunks),
        "task_seconds": round(sum(c.seconds for c in chunks), 3),
    }


class SummarizeJobOperator(BaseOperator):
    """Check and report a job's outcome; fail when too many rows ended in dead letters.

    Give it ``outlets=[Asset(...)]`` (the target table, see :mod:`.assets`): the event it emits
    carries the job's rows written, filtered and dead letters in its ``extra``.

    :param job_key: the job (templated; e.g. the plan task's ``job_key`` XCom).
    :param summaries: the chunk tasks' summaries (templated; e.g. ``process.output``).
    :param max_failed_ratio: the share of rows read that may be dead letters (templated).
    :param replay_dag_id: the DAG that replays dead letters, for the message.
    :param conn_id: the Airflow connection of the database (templated).
    """

    template_fields: Sequence[str] = ("job_key", "summaries", "max_failed_ratio", "conn_id")
    ui_color = "#fff3cd"

    def __init__(
        self,
        *,
        job_key: Any,
        summaries: Any = (),
        max_failed_ratio: float | str = DEFAULT_MAX_FAILED_RATIO,
        replay_dag_id: str = REPLAY_DAG_ID,
        conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_key = job_key
        self.summaries = summaries
        self.max_failed_ratio = max_failed_ratio
        self.replay_dag_id = replay_dag_id
        self.conn_id = conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_fast("Invalid configuration"):
            max_ratio = ratio_value(self.max_failed_ratio, "max_failed_ratio")
        if not self.job_key or self.job_key == "None":
            raise AirflowFailException("job_key is empty: did the plan task run?")
        run = _reduce(self.summaries or ())
        with CheckpointStore.connect(resolve_conninfo(self.conn_id)) as store:
            status = store.job_status(self.job_key)
        if status is None:
            raise AirflowFailException(f"job {self.job_key!r} does not exist")
        summary = self._summary(status, run)
        self._log(summary)
        self._check(status, summary, max_ratio)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                key: summary[key]
                for key in (
                    "job_key",
                    "rows_read",
                    "rows_written",
                    "rows_filtered",
                    "dead_letters",
                    "rows_this_run",
                )
            }
        return summary

    def _summary(self, status: JobStatus, run: dict[str, Any]) -> dict[str, Any]:
        ratio = status.dead_letters / status.rows_read if status.rows_read else 0.0
        return {
            "job_key": self.job_key,
            "status": status.job.status,
            "source": status.job.source,
            "target": status.job.target,
            "chunks": status.chunks_total,
            "chunks_completed": status.chunks_completed,
            "rows_planned": status.rows_total,
            "rows_read": status.rows_read,
            "rows_written": status.rows_written,
            "rows_failed": status.rows_failed,
            "rows_filtered": status.rows_filtered,
            "rows_fanout": status.rows_fanout,
            "kind": status.job.kind,
            "dead_letters": status.dead_letters,
            "failed_ratio": ratio,
            "elapsed_seconds": status.elapsed_seconds,
            "rows_per_second": status.rate_per_second,
            **run,
        }

    def _log(self, s: dict[str, Any]) -> None:
        elapsed = s["elapsed_seconds"]
        self.log.info(
            "Job %s (%s -> %s): %d chunks, %d of them skipped this run; %d rows read, "
            "%d written (%d of them fan-out), %d filtered, %d dead letters (%.3f%%); %d rows "
            "this run; %s at %.0f rows/s",
            s["job_key"],
            s["source"],
            s["target"],
            s["chunks"],
            s["chunks_skipped"],
            s["rows_read"],
            s["rows_written"],
            s["rows_fanout"],
            s["rows_filtered"],
            s["dead_letters"],
            100.0 * s["failed_ratio"],
            s["rows_this_run"],
            "n/a" if elapsed is None else format_duration(max(float(elapsed), 0.0)),
            s["rows_per_second"] or 0.0,
        )

    def _check(self, status: JobStatus, s: dict[str, Any], max_ratio: float) -> None:
        if status.chunks_completed != status.chunks_total:
            raise AirflowException(
                f"job {self.job_key!r} has {status.chunks_total - status.chunks_completed} of "
                f"{status.chunks_total} chunks not completed ({status.chunks_running} running, "
                f"{status.chunks_failed} failed, {status.chunks_pending} pending); "
                "see `parallel-batch status " + self.job_key + "`"
            )
        accounted = (
            status.rows_written - status.rows_fanout + status.rows_filtered + status.rows_failed
        )
        if status.rows_read != accounted:
            raise AirflowException(
                f"job {self.job_key!r} does not reconcile: {status.rows_read} rows read but "
                f"{status.rows_written} written (fan-out {status.rows_fanout}) + "
                f"{status.rows_filtered} filtered + {status.rows_failed} dead letters"
            )
        hint = replay_hint(self.job_key, self.replay_dag_id)
        if s["failed_ratio"] > max_ratio:
            fix = (
                "Fix the file (each dead letter has its line number and reason) and load it "
                "again with full_refresh=true, or fix the transform and replay them: "
                if status.job.kind == "csv"
                else "Fix the cause (the data or the transform), then replay them: "
            )
            noun = "records" if status.job.kind == "csv" else "rows"
            raise AirflowFailException(
                f"{s['dead_letters']} of {s['rows_read']} {noun} ({s['failed_ratio']:.3%}) of job "
                f"{self.job_key!r} ended in the dead letters (parallel_batch.dead_letters), more "
                f"than max_failed_ratio {max_ratio:.3%}. {fix}{hint}"
            )
        if s["dead_letters"]:
            self.log.warning(
                "%d rows of job %s are in the dead letters; after a fix, replay them: %s",
                s["dead_letters"],
                self.job_key,
                hint,
            )
