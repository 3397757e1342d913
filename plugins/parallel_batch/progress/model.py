"""What the progress views show: one display model for ``parallel-batch status`` and the web page.

Pure functions of the store's read model (no database, no Airflow); the terminal, the HTML pages
and the JSON only render these rows, so they always agree::

    JobStatus              -> JobRow         state, chunks, rows done/total, %, rate, ETA,
                                             dead letters, the DAG run that created the job
    ChunkState + db "now"  -> ChunkRow       + rate and ETA, heartbeat age, and a note when the
                                             chunk needs a look: ``interrupted`` (its holder's
                                             session is gone) or stalled (live holder, no
                                             heartbeat)

A job's dead letters and how to replay them are in :mod:`parallel_batch.progress.deadletters`,
how values read in :mod:`parallel_batch.progress.formats`.

Rows done and their total agree (:func:`done_of`): a planned total is an estimate (a CSV
chunk's lines, a table range's rows), so a completed job or chunk shows the rows it read as its
total, and one still running never shows more done than its total, nor 100%.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from parallel_batch.engine.progress import format_duration
from parallel_batch.store.records import ChunkCounts, ChunkState, JobStatus

__all__ = [
    "JOB_STATUSES",
    "STALLED_AFTER_SECONDS",
    "UNFINISHED_PERCENT_MAX",
    "ChunkRow",
    "Figures",
    "JobRow",
    "chunk_row",
    "done_of",
    "job_notes",
    "job_row",
]

# The states a job can be in, for filters.
JOB_STATUSES = ("pending", "running", "completed", "failed")

# A running chunk whose holder is alive but has not moved its heartbeat (one per committed
# batch) for this long is flagged as stalled. Shorter: slow batches (a slow transform, a lock
# wait) raise false alarms; longer: a hung task is noticed later.
STALLED_AFTER_SECONDS = 300.0

# The most a job or chunk that is not completed shows, in percent: its bar is never full and the
# views (which floor) say 99% at most before it is done.
UNFINISHED_PERCENT_MAX = 99.9


@dataclass(frozen=True, kw_only=True)
class Figures:
    """The row counts a job row and a chunk row both show, copied by name from the store's
    record (:class:`JobStatus`, :class:`ChunkState`).

    A count the store adds (say ``rows_filtered``) reaches the JSON by adding its field here;
    the page and the terminal show it once they render it.

    :param rows_written: rows in the target.
    :param rows_failed: rows read that became dead letters.
    :param rows_filtered: rows read that the transform dropped (not failures).
    :param rows_fanout: rows written beyond one per row read (a transform fanning out).
    """

    rows_written: int
    rows_failed: int
    rows_filtered: int
    rows_fanout: int


def _copy(record: Any, fields: type) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(fields)}


def _figures(record: JobStatus | ChunkState) -> dict[str, Any]:
    return _copy(record, Figures)


@dataclass(frozen=True, kw_only=True)
class JobRow(Figures, ChunkCounts):
    """One job as the views show it.

    :param rows_done: rows read so far (each is now in the target, a dead letter or filtered).
    :param rows_total: rows planned (an estimate), or rows read once the job completed.
    :param percent: rows done as a percentage of ``rows_total`` (see :func:`done_of`).
    :param rows_per_second: rows done per second since the job started; None before.
    :param eta_seconds: seconds left at that rate; None when unknown.
    :param dead_letters: pending (not yet replayed) dead letters.
    :param dag_id: the DAG whose run created the job, when the job stored it.
    :param run_id: that run.
    """

    job_key: str
    status: str
    kind: str
    source: str | None
    target: str | None
    rows_total: int
    rows_done: int
    percent: float
    rows_per_second: float | None
    eta_seconds: float | None
    elapsed_seconds: float | None
    dead_letters: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    dag_id: str | None
    run_id: str | None


@dataclass(frozen=True, kw_only=True)
class ChunkRow(Figures):
    """One chunk as the views show it.

    :param status: ``pending``, ``running``, ``completed``, ``failed``, or ``interrupted``
        (running, but no live session holds it: its next attempt resumes it).
    :param stalled: running with a live holder whose heartbeat is older than
        :data:`STALLED_AFTER_SECONDS`.
    :param attention: why the chunk needs a look, in words; None when it does not.
    :param rows_total: rows planned (None: unknown), or rows read once the chunk completed.
    :param rows_per_second: rows done per second of the current attempt (the last, when done).
    :param alive: a live database session holds the chunk's lock right now.
    :param heartbeat_age_seconds: seconds since the holder's last heartbeat (database clock).
    :param last_key: the checkpoint: the last key committed (a resumed attempt reads after it).
    """

    chunk_id: str
    position: int
    status: str
    stalled: bool
    attention: str | None
    rows_total: int | None
    rows_done: int
    percent: float
    rows_per_second: float | None
    eta_seconds: float | None
    attempts: int
    dead_letters: int
    holder: str | None
    alive: bool
    lease_token: int
    heartbeat_age_seconds: float | None
    last_key: Any
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None


@overload
def done_of(status: str, done: int, planned: int) -> tuple[int, float]: ...
@overload
def done_of(status: str, done: int, planned: int | None) -> tuple[int | None, float]: ...


def done_of(status: str, done: int, planned: int | None) -> tuple[int | None, float]:
    """Return the total to show next to ``done`` rows, and the percent done.

    :param status: the job's or chunk's state (``completed`` or not).
    :param done: rows read so far.
    :param planned: rows planned (an estimate); None when unknown.
    :returns: ``(done, 100)`` once completed (the count is known: what was read); else the
        planned total raised to ``done`` when the estimate was short, and a percent below 100
        unless nothing is left (``0 of 0``); ``(None, 0)`` for an unknown total.
    """
    if status == "completed":
        return done, 100.0
    if planned is None:
        return None, 0.0
    total = max(planned, done)
    if total == 0:
        return 0, 100.0
    return total, min(100.0 * done / total, UNFINISHED_PERCENT_MAX)


def job_row(status: JobStatus) -> JobRow:
    """Return the display row of a job's progress."""
    job = status.job
    params = job.params if isinstance(job.params, Mapping) else {}
    dag_id, run_id = params.get("dag_id"), params.get("run_id")
    total, percent = done_of(job.status, status.rows_read, status.rows_total)
    return JobRow(
        **_figures(status),
        job_key=job.job_key,
        status=job.status,
        kind=job.kind,
        source=job.source,
        target=job.target,
        **_copy(status, ChunkCounts),
        rows_total=total,
        rows_done=status.rows_read,
        percent=percent,
        rows_per_second=status.rate_per_second,
        eta_seconds=status.eta_seconds,
        elapsed_seconds=status.elapsed_seconds,
        dead_letters=status.dead_letters,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        dag_id=dag_id if isinstance(dag_id, str) else None,
        run_id=run_id if isinstance(run_id, str) else None,
    )


def _attention(status: str, stalled: bool, chunk: ChunkState, age: float | None) -> str | None:
    if status == "interrupted":
        resume = "from the start" if chunk.last_key is None else f"after key {chunk.last_key}"
        return (
            "Its holder's database session is gone (the task died or was killed); "
            f"the next attempt resumes {resume}."
        )
    if stalled and age is not None:
        return (
            f"No heartbeat for {format_duration(age)}: the holder is connected but has "
            "committed nothing since; look at its task log."
        )
    if status == "failed" and chunk.error:
        return "Failed; an Airflow retry or a re-run of the job resumes it."
    return None


def chunk_row(chunk: ChunkState, now: dt.datetime) -> ChunkRow:
    """Return the display row of a chunk.

    :param chunk: the chunk as the store read it.
    :param now: the database's time of the read (heartbeats are stamped by the database).
    """
    status: str = chunk.status
    if status == "running" and not chunk.alive:
        status = "interrupted"  # its holder is gone; the next attempt resumes it
    total, percent = done_of(status, chunk.rows_read, chunk.rows_total)
    rate: float | None = None
    if chunk.started_at is not None and chunk.rows_read:
        seconds = ((chunk.finished_at or now) - chunk.started_at).total_seconds()
        rate = chunk.rows_read / seconds if seconds > 0 else None
    eta: float | None = None
    if status == "completed":
        eta = 0.0
    elif status == "running" and rate and total and total > chunk.rows_read:
        eta = (total - chunk.rows_read) / rate
    age: float | None = None
    if chunk.heartbeat_at is not None:
        age = max(0.0, (now - chunk.heartbeat_at).total_seconds())
    stalled = status == "running" and age is not None and age > STALLED_AFTER_SECONDS
    return ChunkRow(
        **_figures(chunk),
        chunk_id=chunk.chunk_id,
        position=chunk.position,
        status=status,
        stalled=stalled,
        attention=_attention(status, stalled, chunk, age),
        rows_total=total,
        rows_done=chunk.rows_read,
        percent=percent,
        rows_per_second=rate,
        eta_seconds=eta,
        attempts=chunk.attempts,
        dead_letters=chunk.dead_letters,
        holder=chunk.holder,
        alive=chunk.alive,
        lease_token=chunk.lease_token,
        heartbeat_age_seconds=age,
        last_key=chunk.last_key,
        started_at=chunk.started_at,
        finished_at=chunk.finished_at,
        error=chunk.error,
    )


def _chunks(n: int) -> str:
    return "1 chunk" if n == 1 else f"{n} chunks"


def job_notes(chunks: Sequence[ChunkRow]) -> list[str]:
    """Return what needs a look in a job's chunks, one sentence per kind of trouble."""
    interrupted = sum(1 for c in chunks if c.status == "interrupted")
    stalled = sum(1 for c in chunks if c.stalled)
    notes = []
    if interrupted:
        notes.append(
            f"{_chunks(interrupted)} interrupted: the holder's database session is gone (its "
            "task died or was killed). Airflow's retry of the task, or clearing it, resumes "
            "each from its checkpoint; nothing committed is lost or done twice."
        )
    if stalled:
        notes.append(
            f"{_chunks(stalled)} stalled: the holder is connected but has not committed a "
            f"batch for over {format_duration(STALLED_AFTER_SECONDS)}. Look at the task's log."
        )
    return notes
