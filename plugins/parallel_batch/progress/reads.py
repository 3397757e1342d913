"""What a progress page reads: one short, read-only snapshot of the database per page.

::

    conninfo()  ->  connect (timeout)  ->  BEGIN READ ONLY, REPEATABLE READ (one snapshot:
                                           the job, its chunks and its dead letters agree)
                ->  schema there?      ->  the store's read model, newest dead letters (no payload)
                ->  COMMIT, close      ->  display rows (progress.model) in a JobsPage / JobPage

Whatever goes wrong (no connection, no database, no schema) raises
:class:`~parallel_batch.progress.problems.Unavailable` with the problem to show.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from parallel_batch.exceptions import ConfigurationError, DatabaseUnavailableError
from parallel_batch.progress import problems
from parallel_batch.progress.deadletters import (
    DeadLetterRow,
    ReplayHint,
    dead_letter_row,
    replay_hint,
)
from parallel_batch.progress.model import ChunkRow, JobRow, chunk_row, job_notes, job_row
from parallel_batch.store import deadletters
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.schema import LATEST_VERSION, SCHEMA, schema_version

__all__ = ["JobPage", "JobsPage", "describe_database", "read", "read_job", "read_jobs"]

log = logging.getLogger(__name__)

T = TypeVar("T")

APPLICATION_NAME = "parallel_batch progress view"

# A page gives up on an unreachable database after this many seconds (an error panel, not a
# page that hangs), and on a query after STATEMENT_TIMEOUT_MS (a locked or overloaded server).
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
# Dead letters shown per job, newest first (the count and the per-type counts cover all).
RECENT_DEAD_LETTERS = 10
# A dead letter's message is read up to this many characters (the view cuts it further).
MESSAGE_READ_CHARS = 1000


@dataclass(frozen=True)
class JobsPage:
    """The job list and its filters."""

    jobs: list[JobRow]
    as_of: dt.datetime
    status: str | None
    limit: int


@dataclass(frozen=True)
class JobPage:
    """One job with its chunks and dead letters."""

    job: JobRow
    chunks: list[ChunkRow]
    as_of: dt.datetime
    dead_letters_by_type: dict[str, int]
    recent_dead_letters: list[DeadLetterRow]
    replay: ReplayHint
    notes: list[str] = field(default_factory=list)


def describe_database(conninfo: str) -> str:
    """Return ``database "x" on host:port`` for people (no user, no password)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the configured database"
    host = str(params.get("host") or "localhost")
    port = params.get("port")
    where = host if host.startswith("/") or not port else f"{host}:{port}"
    return f'database "{params.get("dbname") or "(default)"}" on {where}'


def _resolve(conninfo: Callable[[], str]) -> str:
    try:
        return conninfo()
    except (ConfigurationError, DatabaseUnavailableError) as exc:
        raise problems.Unavailable(problems.no_connection(str(exc))) from exc


def _check_schema(conn: psycopg.Connection, database: str) -> None:
    version = schema_version(conn)
    if version == 0:
        raise problems.Unavailable(problems.no_schema(database, SCHEMA))
    if version > LATEST_VERSION:
        raise problems.Unavailable(problems.schema_too_new(database, version, LATEST_VERSION))


def read(
    conninfo: Callable[[], str], reader: Callable[[psycopg.Connection, dt.datetime], T]
) -> tuple[T, str]:
    """Run ``reader(conn, now)`` in one read-only snapshot of the database; close it after.

    :param conninfo: returns the database's conninfo (may raise ConfigurationError).
    :param reader: the reads; ``now`` is the database's time of the snapshot.
    :returns: what ``reader`` returned, and which database it read (for people).
    :raises Unavailable: with the problem to show when the database cannot be read.
    """
    info = _resolve(conninfo)
    database = describe_database(info)
    try:
        conn = psycopg.connect(
            info,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=APPLICATION_NAME,
        )
    except psycopg.Error as exc:
        raise problems.Unavailable(problems.cannot_connect(database, exc)) from exc
    try:
        with conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", (str(STATEMENT_TIMEOUT_MS),)
            )
            with conn.transaction():
                _check_schema(conn, database)
                row = conn.execute("SELECT now()").fetchone()
                assert row is not None
                return reader(conn, row[0]), database
    except psycopg.Error as exc:
        log.warning("The progress view could not read %s: %s", database, exc)
        raise problems.Unavailable(problems.database_failed(database, exc)) from exc


def _recent_dead_letters(conn: psycopg.Connection, job_key: str, limit: int) -> list[DeadLetterRow]:
    """The job's newest pending dead letters, without their payloads."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, chunk_id, item_key, line_number, error_type, left(message, %s) AS message,"
            " attempts, last_failed_at FROM parallel_batch.dead_letters"
            " WHERE job_key = %s AND replayed_at IS NULL ORDER BY id DESC LIMIT %s",
            (MESSAGE_READ_CHARS, job_key, limit),
        )
        return [dead_letter_row(row) for row in cur.fetchall()]


def read_jobs(
    conn: psycopg.Connection, now: dt.datetime, *, status: str | None, limit: int
) -> JobsPage:
    """Return the job list page's data (newest jobs first)."""
    statuses = CheckpointStore(conn).list_jobs(limit=limit, status=status)
    return JobsPage([job_row(s) for s in statuses], now, status, limit)


def read_job(conn: psycopg.Connection, now: dt.datetime, job_key: str) -> JobPage | None:
    """Return one job's page data, None when there is no such job."""
    store = CheckpointStore(conn)
    status = store.job_status(job_key)
    if status is None:
        return None
    chunks = [chunk_row(c, now) for c in store.chunk_rows(job_key)]
    job = job_row(status)
    return JobPage(
        job=job,
        chunks=chunks,
        as_of=now,
        dead_letters_by_type=deadletters.count_by_error_type(conn, job_key),
        recent_dead_letters=_recent_dead_letters(conn, job_key, RECENT_DEAD_LETTERS),
        replay=replay_hint(job.job_key, job.kind),
        notes=job_notes(chunks),
    )
