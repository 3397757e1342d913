"""The progress view's web app (FastAPI): HTML pages and their JSON twins, read only.

::

    GET /                 the job list (HTML)      ?status=running&limit=50
    GET /job?key=K        one job: chunks, dead letters, how to replay (HTML)
    GET /api/jobs         the job list (JSON)      same parameters
    GET /api/job?key=K    one job (JSON)
    GET /api/health       {"plugin", "status": "alive", "version"}; reads nothing
    GET /static/NAME      stylesheet, refresh script, icons

Each page is one short read::

    conninfo()  ->  connect (timeout)  ->  BEGIN READ ONLY, REPEATABLE READ (one snapshot:
                                           the job, its chunks and its dead letters agree)
                ->  schema there?      ->  CheckpointStore reads, newest dead letters (no payload)
                ->  COMMIT, close      ->  progress_view rows -> HTML (progress_html) or JSON

A missing connection, an unreachable database, a missing schema or an unknown job answers with
an error panel (HTML) or ``{"error": {code, title, detail, hint}}`` (JSON) and a 4xx/5xx status,
never a trace. The app knows nothing of Airflow: the plugin passes how to find the database
(the ``parallel_batch_default`` connection) and who may look (Airflow's authentication).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import psycopg
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from starlette.exceptions import HTTPException as StarletteHTTPException

from parallel_batch import __version__
from parallel_batch.exceptions import ConfigurationError, DatabaseUnavailableError
from parallel_batch.progress.assets import ASSETS
from parallel_batch.progress.model import (
    chunk_row,
    dead_letter_row,
    job_notes,
    job_row,
    json_ready,
    replay_hint,
)
from parallel_batch.progress.pages import (
    JOB_STATES,
    JobPage,
    JobsPage,
    PageContext,
    Problem,
    problem_json,
    render_job,
    render_jobs,
    render_problem,
)
from parallel_batch.store import deadletters
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.schema import LATEST_VERSION, SCHEMA, schema_version

__all__ = ["PLUGIN_NAME", "create_app", "describe_database", "read", "read_job", "read_jobs"]

log = logging.getLogger(__name__)

T = TypeVar("T")

PLUGIN_NAME = "parallel_batch"
APPLICATION_NAME = "parallel_batch progress view"

# Seconds between two refreshes of an open page. Shorter: livelier, one more read per viewer
# each time; longer: lighter on the database.
DEFAULT_REFRESH_SECONDS = 5
# A page gives up on an unreachable database after this many seconds (an error panel, not a
# page that hangs), and on a query after STATEMENT_TIMEOUT_MS (a locked or overloaded server).
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
# Jobs in the list by default and at most (each one costs an aggregate over its chunks).
DEFAULT_JOB_LIMIT = 50
MAX_JOB_LIMIT = 500
# Dead letters shown per job, newest first (the count and the per-type counts cover all).
RECENT_DEAD_LETTERS = 10
# A dead letter's message is read up to this many characters (the view cuts it further).
MESSAGE_READ_CHARS = 1000

_SECURITY_HEADERS = {
    # No inline script or style anywhere: the page's own static files only. frame-ancestors
    # 'self' lets the Airflow UI (same origin) show the page in its iframe, and nobody else.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# Query parameters: a job state filter (empty: all), how many jobs, a job's job_key.
Status = Annotated[str | None, Query(description="only jobs in this state")]
Limit = Annotated[int, Query(ge=1, le=MAX_JOB_LIMIT, description="jobs at most, newest first")]
Key = Annotated[str, Query(min_length=1, description="the job's job_key")]


class _Unavailable(Exception):
    """The page cannot be shown: carries the :class:`Problem` to answer with."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _resolve(conninfo: Callable[[], str]) -> str:
    try:
        return conninfo()
    except (ConfigurationError, DatabaseUnavailableError) as exc:
        raise _Unavailable(
            Problem(
                "connection",
                "No database connection for parallel_batch",
                str(exc),
                "Define the Airflow connection parallel_batch_default (Admin → Connections, "
                "type postgres, or AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT in the api-server's "
                "environment), then reload this page.",
                503,
            )
        ) from exc


def _check_schema(conn: psycopg.Connection, database: str) -> None:
    version = schema_version(conn)
    if version == 0:
        raise _Unavailable(
            Problem(
                "schema",
                "No parallel_batch jobs in this database yet",
                f"The {SCHEMA} schema (jobs, chunks, dead letters) does not exist in {database}.",
                "It is created by the first run of a parallel_batch DAG (trigger "
                "parallel_batch_table) or by `make airflow`. If runs did happen, the "
                "parallel_batch_default connection points at another database than theirs.",
                503,
            )
        )
    if version > LATEST_VERSION:
        raise _Unavailable(
            Problem(
                "schema",
                "The parallel_batch schema is newer than this plugin",
                f"{database} has schema version {version}; this plugin reads up to "
                f"{LATEST_VERSION}.",
                "Upgrade airflow-parallel-batch on the api-server.",
                503,
            )
        )


def read(
    conninfo: Callable[[], str], reader: Callable[[psycopg.Connection, dt.datetime], T]
) -> tuple[T, str]:
    """Run ``reader(conn, now)`` in one read-only snapshot of the database; close it after.

    :param conninfo: returns the database's conninfo (may raise ConfigurationError).
    :param reader: the reads; ``now`` is the database's time of the snapshot.
    :returns: what ``reader`` returned, and which database it read (for people).
    :raises _Unavailable: with the problem to show when the database cannot be read.
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
        raise _Unavailable(
            Problem(
                "database",
                "Cannot connect to the parallel_batch database",
                f"{database}: {_first_line(exc)}",
                "Check that the server is up and that the parallel_batch_default connection's "
                "host, port, database and credentials are right.",
                503,
            )
        ) from exc
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
        raise _Unavailable(
            Problem(
                "database",
                "The parallel_batch database could not answer",
                f"{database}: {_first_line(exc)}",
                "Reload in a moment; if it persists, look at the database server's log.",
                503,
            )
        ) from exc


def _recent_dead_letters(conn: psycopg.Connection, job_key: str, limit: int) -> list[Any]:
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


def _not_found(job_key: str) -> Problem:
    return Problem(
        "not_found",
        "No such job",
        f"There is no job {job_key!r} in the checkpoint tables.",
        "The job list shows the jobs there are; a job appears once its DAG run has planned it.",
        404,
    )


def _bad_status(status: str) -> Problem:
    return Problem(
        "bad_request",
        "Unknown job state",
        f"status={status!r} is not a job state.",
        f"Use one of: {', '.join(s for s in JOB_STATES if s)}; or leave it out for all.",
        400,
    )


def _is_api(request: Request) -> bool:
    root = request.scope.get("root_path", "")
    path = request.url.path
    return path[len(root) :].startswith("/api/") if path.startswith(root) else False


def create_app(
    conninfo: Callable[[], str],
    *,
    dependencies: Sequence[Any] = (),
    refresh_seconds: int = DEFAULT_REFRESH_SECONDS,
    ui_base: str = "",
) -> FastAPI:
    """Return the progress view's app, to mount under a prefix (the plugin uses ``/parallel-batch``).

    :param conninfo: returns the conninfo of the database with the ``parallel_batch`` schema;
        called for every page (a connection edited in Airflow applies at once). It may raise
        :class:`~parallel_batch.exceptions.ConfigurationError`, shown as an error panel.
    :param dependencies: FastAPI dependencies of every route (the plugin: Airflow's
        authentication).
    :param refresh_seconds: how often an open page refreshes itself; 0 never.
    :param ui_base: URL prefix of the Airflow UI, for links to DAGs and runs.
    """
    if refresh_seconds < 0:
        raise ValueError("refresh_seconds must not be negative")
    app = FastAPI(
        title="Parallel Batch progress",
        version=__version__,
        dependencies=list(dependencies),
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )

    def context(request: Request, json_url: str, database: str | None = None) -> PageContext:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return PageContext(
            base, ui_base.rstrip("/"), refresh_seconds, f"{base}{json_url}", database
        )

    def html_problem(request: Request, problem: Problem) -> HTMLResponse:
        ctx = context(request, "/api/jobs")
        return HTMLResponse(render_problem(problem, ctx), status_code=problem.status_code)

    def json_problem(problem: Problem) -> JSONResponse:
        return JSONResponse(problem_json(problem), status_code=problem.status_code)

    def answer(request: Request, problem: Problem) -> Response:
        return json_problem(problem) if _is_api(request) else html_problem(request, problem)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(_Unavailable)
    async def unavailable(request: Request, exc: _Unavailable) -> Response:
        return answer(request, exc.problem)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        hint = f"limit is 1 to {MAX_JOB_LIMIT}; key is the job's job_key."
        return answer(request, Problem("bad_request", "Bad request", detail, hint, 400))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (401, 403):
            problem = Problem(
                "not_authenticated",
                "Log in to Airflow to see this page",
                str(exc.detail),
                "Open the Airflow UI, log in, and come back through its Parallel Batch menu.",
                exc.status_code,
            )
        else:
            problem = Problem("http", str(exc.detail), str(exc.detail), "", exc.status_code)
        return answer(request, problem)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # Starlette re-raises the exception after this answer: the server logs its trace.
        problem = Problem(
            "internal",
            "The progress view failed",
            f"{type(exc).__name__}: {_first_line(exc)}",
            "The api-server's log has the details.",
            500,
        )
        return answer(request, problem)

    def jobs_page(status: str | None, limit: int) -> tuple[JobsPage, str]:
        status = status or None  # the form's "all" sends status=
        if status is not None and status not in JOB_STATES:
            raise _Unavailable(_bad_status(status))
        return read(conninfo, lambda conn, now: read_jobs(conn, now, status=status, limit=limit))

    def job_page(key: str) -> tuple[JobPage, str]:
        page, database = read(conninfo, lambda conn, now: read_job(conn, now, key))
        if page is None:
            raise _Unavailable(_not_found(key))
        return page, database

    @app.get("/", response_class=HTMLResponse)
    def jobs_html(
        request: Request, status: Status = None, limit: Limit = DEFAULT_JOB_LIMIT
    ) -> HTMLResponse:
        """The job list."""
        page, database = jobs_page(status, limit)
        query = {"status": page.status, "limit": limit} if page.status else {"limit": limit}
        ctx = context(request, f"/api/jobs?{urlencode(query)}", database)
        return HTMLResponse(render_jobs(page, ctx))

    @app.get("/job", response_class=HTMLResponse)
    def job_html(request: Request, key: Key) -> HTMLResponse:
        """One job: its chunks, dead letters and how to replay them."""
        page, database = job_page(key)
        ctx = context(request, f"/api/job?{urlencode({'key': key})}", database)
        return HTMLResponse(render_job(page, ctx))

    @app.get("/api/jobs")
    def jobs_json(status: Status = None, limit: Limit = DEFAULT_JOB_LIMIT) -> dict[str, Any]:
        """The job list as JSON: ``{"as_of", "database", "jobs": [...]}``."""
        page, database = jobs_page(status, limit)
        return {
            "as_of": json_ready(page.as_of),
            "database": database,
            "jobs": json_ready(page.jobs),
        }

    @app.get("/api/job")
    def job_json(key: Key) -> dict[str, Any]:
        """One job as JSON: the job, its chunks, its dead letters (no payloads), the replay."""
        page, database = job_page(key)
        return {
            "as_of": json_ready(page.as_of),
            "database": database,
            "job": json_ready(page.job),
            "chunks": json_ready(page.chunks),
            "notes": page.notes,
            "dead_letters": {
                "pending": page.job.dead_letters,
                "by_error_type": page.dead_letters_by_type,
                "recent": json_ready(page.recent_dead_letters),
            },
            "replay": json_ready(page.replay),
        }

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Answer that the plugin is loaded (reads no database)."""
        return {"plugin": PLUGIN_NAME, "status": "alive", "version": __version__}

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        """The page's stylesheet, script and icons."""
        asset = ASSETS.get(name)
        if asset is None:
            raise StarletteHTTPException(404, f"no static file {name!r}")
        return Response(
            asset.text, media_type=asset.media_type, headers={"Cache-Control": "max-age=3600"}
        )

    return app
