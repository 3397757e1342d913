"""What the progress view shows: display rows of jobs, chunks and dead letters, and their formats.

Pure functions of the checkpoint store's records (no database, no Airflow), behind the Airflow
plugin's page and its JSON::

    JobStatus              -> JobRow         state, chunks, rows done/total, %, rate, ETA,
                                             dead letters, the DAG run that created the job
    ChunkState + db "now"  -> ChunkRow       + heartbeat age and a note when the chunk needs a
                                             look: ``interrupted`` (its holder's session is
                                             gone) or stalled (live holder, no heartbeat)
    dead letter columns    -> DeadLetterRow  error type, message (cut), line or key; never the
                                             payload
    job_key, kind          -> ReplayHint     the DAG, conf and command that replay dead letters

A chunk's state, rate and ETA are those of the terminal view (:mod:`parallel_batch.progress.terminal`), so
the page and ``parallel-batch status`` always agree; a job's rate and ETA are the store's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from parallel_batch.engine.progress import format_duration

# The terminal view's chunk state ("interrupted" when no live session holds a running chunk),
# rate and ETA. status.py keeps it private for now; it is imported here rather than written twice.
from parallel_batch.progress.terminal import chunk_line
from parallel_batch.store.records import ChunkState, JobStatus

__all__ = [
    "MESSAGE_CHARS",
    "REPLAY_DAG_ID",
    "STALLED_AFTER_SECONDS",
    "ChunkRow",
    "DeadLetterRow",
    "JobRow",
    "ReplayHint",
    "chunk_row",
    "cut",
    "dead_letter_row",
    "format_age",
    "format_count",
    "format_eta",
    "format_rate",
    "job_notes",
    "job_row",
    "json_ready",
    "replay_hint",
]

# A running chunk whose holder is alive but has not moved its heartbeat (one per committed
# batch) for this long is flagged as stalled. Shorter: slow batches (a slow transform, a lock
# wait) raise false alarms; longer: a hung task is noticed later.
STALLED_AFTER_SECONDS = 300.0

# A dead letter's message is cut to this many characters on the page (the table keeps it whole;
# a traceback can be thousands). Longer: more context; shorter: a denser table.
MESSAGE_CHARS = 300

# The DAG that replays a job's dead letters, and the job kinds it replays.
REPLAY_DAG_ID = "parallel_batch_replay"
REPLAYABLE_KINDS = frozenset({"table"})


@dataclass(frozen=True)
class JobRow:
    """One job as the view shows it.

    :param rows_done: rows read so far (each is now in the target or a dead letter).
    :param percent: rows done as a percentage of rows planned (100 when completed).
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
    chunks_total: int
    chunks_pending: int
    chunks_running: int
    chunks_completed: int
    chunks_failed: int
    rows_total: int
    rows_done: int
    rows_written: int
    rows_failed: int
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


@dataclass(frozen=True)
class ChunkRow:
    """One chunk as the view shows it.

    :param status: ``pending``, ``running``, ``completed``, ``failed``, or ``interrupted``
        (running, but no live session holds it: its next attempt resumes it).
    :param stalled: running with a live holder whose heartbeat is older than
        :data:`STALLED_AFTER_SECONDS`.
    :param attention: why the chunk needs a look, in words; None when it does not.
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
    rows_written: int
    rows_failed: int
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


@dataclass(frozen=True)
class DeadLetterRow:
    """One dead letter as the view shows it: what failed and why, never the item itself.

    :param line_number: the 1-based line of a file record; None for a table row.
    :param item_key: the row's key as text, or ``"line:N"`` for a file record.
    :param message: the error message, cut to :data:`MESSAGE_CHARS`.
    """

    id: int
    chunk_id: str
    item_key: str
    line_number: int | None
    error_type: str
    message: str
    attempts: int
    last_failed_at: dt.datetime

    @property
    def where(self) -> str:
        """``line 12`` for a file record, ``key 42`` for a table row."""
        if self.line_number is not None:
            return f"line {self.line_number:,}"
        return f"key {self.item_key}"


@dataclass(frozen=True)
class ReplayHint:
    """How to replay a job's dead letters once their cause is fixed.

    :param available: the replay DAG handles this kind of job.
    :param dag_id: the DAG to trigger.
    :param conf: its run conf.
    :param command: the same trigger on the command line.
    :param note: one sentence for people.
    """

    available: bool
    dag_id: str
    conf: dict[str, Any]
    command: str
    note: str


def job_row(status: JobStatus) -> JobRow:
    """Return the display row of a job's progress."""
    job = status.job
    params = job.params if isinstance(job.params, Mapping) else {}
    dag_id, run_id = params.get("dag_id"), params.get("run_id")
    return JobRow(
        job_key=job.job_key,
        status=job.status,
        kind=job.kind,
        source=job.source,
        target=job.target,
        chunks_total=status.chunks_total,
        chunks_pending=status.chunks_pending,
        chunks_running=status.chunks_running,
        chunks_completed=status.chunks_completed,
        chunks_failed=status.chunks_failed,
        rows_total=status.rows_total,
        rows_done=status.rows_read,
        rows_written=status.rows_written,
        rows_failed=status.rows_failed,
        percent=status.percent,
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
    line = chunk_line(chunk, now)
    age: float | None = None
    if chunk.heartbeat_at is not None:
        age = max(0.0, (now - chunk.heartbeat_at).total_seconds())
    stalled = line.status == "running" and age is not None and age > STALLED_AFTER_SECONDS
    return ChunkRow(
        chunk_id=chunk.chunk_id,
        position=chunk.position,
        status=line.status,
        stalled=stalled,
        attention=_attention(line.status, stalled, chunk, age),
        rows_total=chunk.rows_total,
        rows_done=chunk.rows_read,
        rows_written=chunk.rows_written,
        rows_failed=chunk.rows_failed,
        percent=100.0 * line.fraction,
        rows_per_second=line.rows_per_second,
        eta_seconds=line.eta_seconds,
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


def cut(text: str, chars: int = MESSAGE_CHARS) -> str:
    """Return ``text`` on one line, cut to ``chars`` characters with an ellipsis."""
    if chars < 4:
        raise ValueError("chars must be at least 4")
    line = " ".join(text.split())
    return line if len(line) <= chars else line[: chars - 1] + "…"


def dead_letter_row(row: Mapping[str, Any]) -> DeadLetterRow:
    """Return the display row of a dead letter from its table columns (a payload is ignored)."""
    return DeadLetterRow(
        id=int(row["id"]),
        chunk_id=str(row["chunk_id"]),
        item_key=str(row["item_key"]),
        line_number=row["line_number"],
        error_type=str(row["error_type"]),
        message=cut(str(row["message"])),
        attempts=int(row["attempts"]),
        last_failed_at=row["last_failed_at"],
    )


def replay_hint(job_key: str, kind: str) -> ReplayHint:
    """Return how to replay the dead letters of the job ``job_key`` of kind ``kind``."""
    if not job_key:
        raise ValueError("job_key must not be empty")
    conf = {"job_key": job_key}
    command = f"airflow dags trigger {REPLAY_DAG_ID} -c {shlex.quote(json.dumps(conf))}"
    if kind in REPLAYABLE_KINDS:
        note = (
            f"Fix the cause, then trigger {REPLAY_DAG_ID} with this job_key: each pending dead "
            "letter goes through the job's transform again; the ones that succeed are written "
            "to the target and marked replayed."
        )
        return ReplayHint(True, REPLAY_DAG_ID, conf, command, note)
    note = (
        f"{REPLAY_DAG_ID} replays table jobs; the dead letters of this {kind} job give each "
        "failed record's line: fix those records and load the file again."
    )
    return ReplayHint(False, REPLAY_DAG_ID, conf, command, note)


# ---- formats ------------------------------------------------------------------------------------


def format_count(value: int | None) -> str:
    """``1,234``; ``?`` when unknown."""
    return "?" if value is None else f"{value:,}"


def format_rate(rows_per_second: float | None) -> str:
    """``12,345 rows/s``; ``-`` when unknown."""
    if rows_per_second is None or not math.isfinite(rows_per_second):
        return "-"
    return f"{rows_per_second:,.0f} rows/s"


def format_eta(seconds: float | None) -> str:
    """``3m05s``; ``done`` at 0; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    return "done" if seconds == 0 else format_duration(seconds)


def format_age(seconds: float | None) -> str:
    """``12s ago``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{format_duration(max(0.0, seconds))} ago"


def json_ready(value: Any) -> Any:
    """Return ``value`` (rows, lists, dicts) as JSON-able data: dataclasses become dicts with
    their properties, datetimes ISO-8601 text, non-finite floats None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, DeadLetterRow):
            data["where"] = value.where
        return data
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
