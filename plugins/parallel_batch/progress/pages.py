"""The progress view's HTML: server-side rendered pages over the display rows.

::

    render_jobs(JobsPage)      templates/jobs.html     the job list: state, progress bar, rows,
                                                       rate, ETA, chunks, dead letters
    render_job(JobPage)        templates/job.html      one job: progress, chunks (holder,
                                                       heartbeat, attention notes), dead letters
                                                       by error type and the newest few, replay
    render_problem(Problem)    templates/problem.html  no connection, no database, no schema,
                                                       no such job: what to do

The templates (Jinja2, files of the package; ``base.html`` is the frame, ``macros.html`` the
state labels and bars) only render: the figures come from :mod:`parallel_batch.progress.model`,
their wording from :mod:`parallel_batch.progress.formats`. Every value that comes from the
database (job keys, errors, holders, messages) is escaped by the template engine
(``autoescape``): the page is served from the Airflow UI's origin, so a crafted job key must
never become markup. Links into the Airflow UI open in the top window (the page usually runs
inside the UI's iframe).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup

from parallel_batch import __version__
from parallel_batch.progress.formats import (
    cut,
    format_age,
    format_count,
    format_eta,
    format_percent,
    format_rate,
)
from parallel_batch.progress.model import JOB_STATUSES
from parallel_batch.progress.problems import Problem
from parallel_batch.progress.reads import JobPage, JobsPage

__all__ = ["PageContext", "render_job", "render_jobs", "render_problem"]

# The job list's "Show" choices (the page's own limit is added when it is not one of them).
LIMIT_CHOICES = (20, 50, 100, 200, 500)


@dataclass(frozen=True)
class PageContext:
    """What every page needs besides its data.

    :param base: the app's URL prefix (its mount point, e.g. ``/parallel-batch``).
    :param ui_base: the Airflow UI's URL prefix, for links to DAGs and runs.
    :param refresh_seconds: auto-refresh period; 0 for none.
    :param json_url: the JSON twin of the page.
    :param database: which database the view reads, for people (never a password).
    """

    base: str
    ui_base: str
    refresh_seconds: int
    json_url: str
    database: str | None = None


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _breakable(value: object, *, after_first_colon: bool = False) -> Markup:
    """Return ``value`` escaped, wrapping only after a "/" (and the first ":", which ends the DAG
    id of a job_key), never inside a timestamp: each piece is kept whole (class ``nb``)."""
    words = []
    for word in str(value).split(" "):
        head, colon, rest = word.partition(":") if after_first_colon else ("", "", word)
        pieces = [head + colon] if colon else []
        rest = rest if colon else word
        parts = rest.split("/")
        pieces += [part + "/" for part in parts[:-1]] + [parts[-1]]
        spans = [Markup('<span class="nb">%s</span>') % piece for piece in pieces if piece]
        words.append(Markup("<wbr>").join(spans))
    return Markup(" ").join(words)


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("parallel_batch.progress", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(
    num=format_count,
    rate=format_rate,
    per_s=lambda value: format_rate(value).removesuffix(" rows/s"),
    eta=format_eta,
    age=format_age,
    pct=format_percent,
    when=_when,
    path=lambda value: quote(str(value), safe=""),
    jobkey=lambda value: _breakable(value, after_first_colon=True),
    holder=_breakable,
    cut=cut,
)


def _globals(ctx: PageContext, as_of: dt.datetime | None) -> dict[str, Any]:
    def ago(then: dt.datetime | None) -> str:
        if then is None or as_of is None:
            return "-"
        return format_age((as_of - then).total_seconds())

    def job_url(job_key: str) -> str:
        return f"{ctx.base}/job?{urlencode({'key': job_key})}"

    def ui_url(path: str) -> str:
        return f"{ctx.ui_base}/{path}"

    return {"ctx": ctx, "version": __version__, "ago": ago, "job_url": job_url, "ui_url": ui_url}


def _render(name: str, ctx: PageContext, as_of: dt.datetime | None, **values: Any) -> str:
    return _ENV.get_template(name).render(**_globals(ctx, as_of), **values)


def render_jobs(page: JobsPage, ctx: PageContext) -> str:
    """Return the HTML of the job list."""
    return _render(
        "jobs.html",
        ctx,
        page.as_of,
        page=page,
        states=("", *JOB_STATUSES),  # "": all
        limits=sorted({*LIMIT_CHOICES, page.limit}),
        failed=sum(1 for job in page.jobs if job.status == "failed"),
        dead=sum(job.dead_letters for job in page.jobs),
    )


def render_job(page: JobPage, ctx: PageContext) -> str:
    """Return the HTML of one job's page."""
    return _render("job.html", ctx, page.as_of, page=page, job=page.job)


def render_problem(problem: Problem, ctx: PageContext) -> str:
    """Return the HTML of an error panel (no trace: the log has the details)."""
    return _render("problem.html", ctx, None, problem=problem)
