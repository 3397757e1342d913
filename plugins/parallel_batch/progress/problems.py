"""Why a progress page cannot show its data, and what to tell people about it.

Every failure a page meets becomes a :class:`Problem`: an error panel in HTML, or
``{"error": {code, title, detail, hint}}`` in JSON, with its HTTP status; never a trace::

    connection         503      the conninfo could not be resolved (no parallel_batch_default)
    database           503      the database cannot be reached, or could not answer
    schema             503      no parallel_batch schema there yet, or a newer one than we read
    not_found          404      no such job
    bad_request        400      a bad query parameter
    not_authenticated  401/403  not logged in to Airflow
    http               4xx      another HTTP error (no such page or static file)
    internal           500      a bug; the api-server's log has the trace
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parallel_batch.progress.model import JOB_STATUSES

__all__ = [
    "Problem",
    "Unavailable",
    "bad_request",
    "bad_status",
    "cannot_connect",
    "database_failed",
    "first_line",
    "http_error",
    "internal_error",
    "job_not_found",
    "no_connection",
    "no_schema",
    "problem_json",
    "schema_too_new",
]


@dataclass(frozen=True)
class Problem:
    """Why a page cannot show its data, and what to do about it.

    :param code: a stable identifier for scripts (``connection``, ``database``, ``schema``,
        ``not_found``, ``bad_request``, ``not_authenticated``, ``http``, ``internal``).
    :param status_code: the HTTP status of the answer.
    """

    code: str
    title: str
    detail: str
    hint: str
    status_code: int


class Unavailable(Exception):
    """Raised when a page cannot be shown; carries the :class:`Problem` to answer with."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


def problem_json(problem: Problem) -> Mapping[str, Any]:
    """Return the JSON body of an error: ``{"error": {"code", "title", "detail", "hint"}}``."""
    return {
        "error": {
            "code": problem.code,
            "title": problem.title,
            "detail": problem.detail,
            "hint": problem.hint,
        }
    }


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def no_connection(detail: str) -> Problem:
    """The database's conninfo could not be resolved (``detail`` says why)."""
    return Problem(
        "connection",
        "No database connection for parallel_batch",
        detail,
        "Define the Airflow connection parallel_batch_default (Admin → Connections, "
        "type postgres, or AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT in the api-server's "
        "environment), then reload this page.",
        503,
    )


def cannot_connect(database: str, exc: BaseException) -> Problem:
    """Connecting to ``database`` failed."""
    return Problem(
        "database",
        "Cannot connect to the parallel_batch database",
        f"{database}: {first_line(exc)}",
        "Check that the server is up and that the parallel_batch_default connection's "
        "host, port, database and credentials are right.",
        503,
    )


def database_failed(database: str, exc: BaseException) -> Problem:
    """A read of ``database`` failed (a timeout, a lost connection)."""
    return Problem(
        "database",
        "The parallel_batch database could not answer",
        f"{database}: {first_line(exc)}",
        "Reload in a moment; if it persists, look at the database server's log.",
        503,
    )


def no_schema(database: str, schema: str) -> Problem:
    """``database`` has no parallel_batch schema (no job ran there yet)."""
    return Problem(
        "schema",
        "No parallel_batch jobs in this database yet",
        f"The {schema} schema (jobs, chunks, dead letters) does not exist in {database}.",
        "It is created by the first run of a parallel_batch DAG (trigger "
        "parallel_batch_table) or by `make airflow`. If runs did happen, the "
        "parallel_batch_default connection points at another database than theirs.",
        503,
    )


def schema_too_new(database: str, version: int, latest: int) -> Problem:
    """``database``'s schema is of a later version than this plugin reads."""
    return Problem(
        "schema",
        "The parallel_batch schema is newer than this plugin",
        f"{database} has schema version {version}; this plugin reads up to {latest}.",
        "Upgrade airflow-parallel-batch on the api-server.",
        503,
    )


def job_not_found(job_key: str) -> Problem:
    """There is no job ``job_key``."""
    return Problem(
        "not_found",
        "No such job",
        f"There is no job {job_key!r} in the checkpoint tables.",
        "The job list shows the jobs there are; a job appears once its DAG run has planned it.",
        404,
    )


def bad_status(status: str) -> Problem:
    """The job state filter ``status`` is not a job state."""
    return Problem(
        "bad_request",
        "Unknown job state",
        f"status={status!r} is not a job state.",
        f"Use one of: {', '.join(JOB_STATUSES)}; or leave it out for all.",
        400,
    )


def bad_request(detail: str, max_job_limit: int) -> Problem:
    """A query parameter is invalid (``detail`` says which and why)."""
    hint = f"limit is 1 to {max_job_limit}; key is the job's job_key."
    return Problem("bad_request", "Bad request", detail, hint, 400)


def http_error(status_code: int, detail: str) -> Problem:
    """Another HTTP error: not logged in (401, 403), no such page or file."""
    if status_code in (401, 403):
        return Problem(
            "not_authenticated",
            "Log in to Airflow to see this page",
            detail,
            "Open the Airflow UI, log in, and come back through its Parallel Batch menu.",
            status_code,
        )
    return Problem("http", detail, detail, "", status_code)


def internal_error(exc: BaseException) -> Problem:
    """A bug: the page failed (the api-server's log has the trace)."""
    return Problem(
        "internal",
        "The progress view failed",
        f"{type(exc).__name__}: {first_line(exc)}",
        "The api-server's log has the details.",
        500,
    )
