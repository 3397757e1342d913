"""The records the checkpoint store hands out: a job, a chunk's lease, and progress views."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from parallel_batch.store.catalog import JSONKey

Status = Literal["pending", "running", "completed", "failed"]


@dataclass(frozen=True, kw_only=True)
class RowCounts:
    """What became of a job's or a chunk's rows:
    ``rows_read == rows_written - rows_fanout + rows_filtered + rows_failed``.

    :param rows_read: source rows read.
    :param rows_written: output rows written to the target.
    :param rows_failed: source rows that became dead letters.
    :param rows_filtered: source rows the transform dropped (counted, not failures).
    :param rows_fanout: output rows beyond one per source row (a transform fanning out).
    """

    rows_read: int
    rows_written: int
    rows_failed: int
    rows_filtered: int
    rows_fanout: int


@dataclass(frozen=True)
class Job(RowCounts):
    """A job: one processing of one source into one target, identified by its ``job_key``.

    :param plan: the chunk plan stored when the job was created (each entry has a ``chunk_id``);
        it is reused by every later run of the same job_key, never planned again.
    :param params: the run parameters stored with the job (for display and for the replay).
    """

    job_key: str
    status: Status
    kind: str
    source: str | None
    target: str | None
    plan: list[dict[str, Any]]
    params: dict[str, Any]
    rows_total: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None

    @property
    def chunk_ids(self) -> list[str]:
        """The chunk ids of the plan, in plan order."""
        return [str(entry["chunk_id"]) for entry in self.plan]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass
class Lease:
    """The right to process one chunk, fenced by ``token``.

    The store updates the progress fields after each committed batch. ``completed=True`` means
    the chunk was already done: the caller skips it (no lock is held, the token is unchanged).

    :param token: the lease token; a commit succeeds only while the chunk row still has it.
    :param range: the chunk's plan entry (its key or byte range, rows at planning time).
    :param last_key: the last key committed so far; a resumed attempt reads after it.
    :param resumed_from: ``last_key`` when the lease was taken (None: started from the beginning).
    :param needs_reset: a full refresh asked for this chunk's earlier output (and dead letters)
        to be replaced: the first batch's transaction must delete it. Cleared by that commit.
    """

    job_key: str
    chunk_id: str
    token: int
    holder: str
    range: dict[str, Any]
    completed: bool
    needs_reset: bool
    last_key: JSONKey | None
    resumed_from: JSONKey | None
    rows_total: int | None
    rows_read: int
    rows_written: int
    rows_failed: int
    rows_filtered: int
    rows_fanout: int
    attempts: int
    batches_committed: int = field(default=0)


@dataclass(frozen=True)
class ChunkState(RowCounts):
    """One chunk as the status view shows it.

    :param alive: a live session holds the chunk's lock right now (a ``running`` chunk that is not
        alive was interrupted: its next attempt resumes it).
    :param dead_letters: its pending dead letters.
    """

    job_key: str
    chunk_id: str
    position: int
    range: dict[str, Any]
    status: Status
    last_key: JSONKey | None
    rows_total: int | None
    attempts: int
    lease_token: int
    holder: str | None
    heartbeat_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    alive: bool
    dead_letters: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChunkState:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True, kw_only=True)
class ChunkCounts:
    """A job's chunks by state."""

    chunks_total: int
    chunks_pending: int
    chunks_running: int
    chunks_completed: int
    chunks_failed: int


@dataclass(frozen=True)
class JobStatus(RowCounts, ChunkCounts):
    """A job's progress, computed from its chunks at query time.

    :param elapsed_seconds: since the job started (until it finished), None before it started.
    :param rate_per_second: rows read per second of elapsed time, None before it started.
    :param eta_seconds: seconds left at that rate, None when unknown.
    :param dead_letters: pending dead letters.
    """

    job: Job
    rows_total: int
    dead_letters: int
    elapsed_seconds: float | None
    rate_per_second: float | None
    eta_seconds: float | None

    @property
    def percent(self) -> float:
        """Rows read as a percentage of rows planned (100 for an empty or completed job)."""
        if self.job.status == "completed" or self.rows_total <= 0:
            return 100.0
        return min(100.0, 100.0 * self.rows_read / self.rows_total)
