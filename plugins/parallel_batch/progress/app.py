"""The progress view's web app (FastAPI): HTML pages and their JSON twins, read only.

::

    GET /                 the job list (HTML)      ?status=running&limit=50
    GET /job?key=K        one job: chunks, dead letters, how to replay (HTML)
    GET /api/jobs         the job list (JSON)      same parameters
    GET /api/job?key=K    one job (JSON)
    GET /api/health       {"plugin", "status": "alive", "version"}; reads nothing
    GET /static/NAME      stylesheet, refresh script, icons (progress/static/)

Each page is one short read (:mod:`parallel_batch.progress.reads`), rendered as HTML
(:mod:`parallel_batch.progress.pages`) or JSON::

    request -> reads.read(conninfo, read_jobs | read_job) -> JobsPage | JobPage
            -> pages.render_jobs | render_job (HTML)  or  json_ready (JSON)

A missing connection, an unreachable database, a missing schema or an unknown job answers with
an error panel (HTML) or ``{"error": {code, title, detail, hint}}`` (JSON) and a 4xx/5xx status,
never a trace (:mod:`parallel_batch.progress.problems`). The app knows nothing of Airflow: the
plugin passes how to find the database (the ``parallel_batch_default`` connection) and who may
look (Airflow's authentication).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from parallel_batch import __version__
from parallel_batch.progress import problems
from parallel_batch.progress.assets import load_asset
from parallel_batch.progress.formats import json_ready
from parallel_batch.progress.model import JOB_STATUSES
from parallel_batch.progress.pages import PageContext, render_job, render_jobs, render_problem
from parallel_batch.progress.problems import Problem, Unavailable
from parallel_batch.progress.reads import JobPage, JobsPage, read, read_job, read_jobs

__all__ = ["PLUGIN_NAME", "create_app"]

PLUGIN_NAME = "parallel_batch"

# Seconds between two refreshes of an open page. Shorter: livelier, one more read per viewer
# each time; longer: lighter on the database.
DEFAULT_REFRESH_SECONDS = 5
# Jobs in the list by default and at most (each one costs an aggregate over its chunks).
DEFAULT_JOB_LIMIT = 50
MAX_JOB_LIMIT = 500
# Browsers keep the static files an hour (the page's links to the stylesheet and the script
# carry the package's version, so an upgrade applies at once).
STATIC_CACHE_CONTROL = "max-age=3600"

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

    def answer(request: Request, problem: Problem) -> Response:
        if _is_api(request):
            return JSONResponse(problems.problem_json(problem), status_code=problem.status_code)
        html = render_problem(problem, context(request, "/api/jobs"))
        return HTMLResponse(html, status_code=problem.status_code)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> Response:
        return answer(request, exc.problem)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return answer(request, problems.bad_request(detail, MAX_JOB_LIMIT))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return answer(request, problems.http_error(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # Starlette re-raises the exception after this answer: the server logs its trace.
        return answer(request, problems.internal_error(exc))

    def jobs_page(status: str | None, limit: int) -> tuple[JobsPage, str]:
        status = status or None  # the form's "all" sends status=
        if status is not None and status not in JOB_STATUSES:
            raise Unavailable(problems.bad_status(status))
        return read(conninfo, lambda conn, now: read_jobs(conn, now, status=status, limit=limit))

    def job_page(key: str) -> tuple[JobPage, str]:
        page, database = read(conninfo, lambda conn, now: read_job(conn, now, key))
        if page is None:
            raise Unavailable(problems.job_not_found(key))
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
        """The page's stylesheet, script and icons (files of the package)."""
        asset = load_asset(name)
        if asset is None:
            raise StarletteHTTPException(404, f"no static file {name!r}")
        return Response(
            asset.content,
            media_type=asset.media_type,
            headers={"Cache-Control": STATIC_CACHE_CONTROL},
        )

    return app
