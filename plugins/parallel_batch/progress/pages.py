"""The progress view's HTML: server-side rendered pages (Jinja2, autoescaped) over the display rows.

::

    render_jobs(JobsPage)      the job list: state, progress bar, rows, rate, ETA, chunks, dead letters
    render_job(JobPage)        one job: progress, chunks (holder, heartbeat, attention notes),
                               dead letters by error type and the newest few, how to replay
    render_problem(Problem)    no connection, no database, no schema, no such job: what to do

Every value that comes from the database (job keys, errors, holders, messages) is escaped by
the template engine (``autoescape``): the page is served from the Airflow UI's origin, so a
crafted job key must never become markup. Links into the Airflow UI open in the top window
(the page usually runs inside the UI's iframe).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup

from parallel_batch import __version__
from parallel_batch.progress.model import (
    ChunkRow,
    DeadLetterRow,
    JobRow,
    ReplayHint,
    cut,
    format_age,
    format_count,
    format_eta,
    format_rate,
)

__all__ = [
    "JobPage",
    "JobsPage",
    "PageContext",
    "Problem",
    "render_job",
    "render_jobs",
    "render_problem",
]

JOB_STATES = ("", "pending", "running", "completed", "failed")
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


@dataclass(frozen=True)
class Problem:
    """Why a page cannot show its data, and what to do about it.

    :param code: a stable identifier for scripts (``connection``, ``database``, ``schema``,
        ``not_found``, ``bad_request``, ``not_authenticated``, ``internal``).
    :param status_code: the HTTP status of the answer.
    """

    code: str
    title: str
    detail: str
    hint: str
    status_code: int


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


def _pct(value: float) -> str:
    # Floor: a bar never says 100% before the job is done.
    return f"{math.floor(max(0.0, min(100.0, value)))}%"


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


_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %} · Parallel Batch</title>
<link rel="stylesheet" href="{{ ctx.base }}/static/style.css?v={{ version }}">
<link rel="icon" href="{{ ctx.base }}/static/icon.svg" type="image/svg+xml">
{% if ctx.refresh_seconds %}<noscript><meta http-equiv="refresh" content="{{ ctx.refresh_seconds }}"></noscript>{% endif %}
<script src="{{ ctx.base }}/static/page.js?v={{ version }}" defer></script>
</head>
<body data-refresh="{{ ctx.refresh_seconds }}">
<header class="topbar">
  <a class="brand" href="{{ ctx.base }}/"><img src="{{ ctx.base }}/static/icon.svg" alt="">Parallel Batch</a>
  <span class="sub">jobs, chunks and dead letters, live from the checkpoint tables</span>
  <span class="spacer"></span>
  {% if ctx.refresh_seconds %}<span id="pb-live" class="live">Refreshes every {{ ctx.refresh_seconds }} s</span>
  <button id="pb-pause" type="button" hidden>Pause</button>{% endif %}
  <a class="jsonlink" href="{{ ctx.json_url }}">JSON</a>
</header>
<main id="pb-content">
{% block content %}{% endblock %}
<footer class="help">
  {% if ctx.database %}Reading {{ ctx.database }}. {% endif %}
  In a terminal: <code>parallel-batch status [JOB_KEY]</code>.
  For scripts: this page as <a href="{{ ctx.json_url }}">JSON</a>.
</footer>
</main>
</body>
</html>
"""

_MACROS = """
{% macro state(value, stalled=False) -%}
<span class="state {{ 'stalled' if stalled else value }}">{{ 'stalled' if stalled else value }}</span>
{%- endmacro %}
{% macro bar(percent, value, stalled=False) -%}
<div class="bar"><progress class="{{ 'stalled' if stalled else value }}" value="{{ '%.1f'|format(percent) }}" max="100">{{ percent|pct }}</progress><span class="pct">{{ percent|pct }}</span></div>
{%- endmacro %}
"""

_JOBS = """{% extends "base" %}{% import "macros" as m %}
{% block title %}Jobs{% endblock %}
{% block content %}
<div class="pagehead">
  <h1>Jobs</h1>
  <form class="filters" method="get" action="{{ ctx.base }}/">
    <label>State <select name="status">
      {% for s in states %}<option value="{{ s }}"{% if s == (page.status or '') %} selected{% endif %}>{{ s or 'all' }}</option>{% endfor %}
    </select></label>
    <label>Show <select name="limit">
      {% for n in limits %}<option value="{{ n }}"{% if n == page.limit %} selected{% endif %}>{{ n }}</option>{% endfor %}
    </select></label>
    <noscript><button type="submit">Apply</button></noscript>
  </form>
</div>
<div class="meta"><span>As of {{ page.as_of|when }}</span><span>newest {{ page.limit }} jobs{% if page.status %} in state {{ page.status }}{% endif %}</span></div>
<section class="cards">
  <div class="card"><div class="k">Jobs shown</div><div class="v">{{ page.jobs|length }}</div></div>
  <div class="card"><div class="k">Running</div><div class="v">{{ page.jobs|selectattr('status', 'eq', 'running')|list|length }}</div>
    <div class="s">{{ page.jobs|sum(attribute='chunks_running') }} chunks running</div></div>
  <div class="card{% if failed %} alert{% endif %}"><div class="k">Failed</div><div class="v">{{ failed }}</div></div>
  <div class="card{% if dead %} alert{% endif %}"><div class="k">Dead letters</div><div class="v">{{ dead|num }}</div><div class="s">pending replay</div></div>
</section>
{% if page.jobs %}
<div class="panel flush">
<table class="grid">
<thead><tr>
  <th>Job</th><th>State</th><th>Progress</th><th class="num">Rows done</th><th class="num">Rows/s</th>
  <th class="num">ETA</th><th>Chunks</th><th class="num">Dead letters</th>
</tr></thead>
<tbody>
{% for job in page.jobs %}
<tr>
  <td class="key"><a href="{{ job_url(job.job_key) }}">{{ job.job_key|jobkey }}</a>
    <div class="muted small">{{ job.source or '?' }} → {{ job.target or '?' }}</div>
    <div class="muted small">{{ job.kind }} job{% if job.dag_id %} · {{ job.dag_id }}{% endif %} ·
      <span title="{{ job.started_at|when }}">{{ 'started ' ~ ago(job.started_at) if job.started_at else 'not started' }}</span></div></td>
  <td>{{ m.state(job.status) }}</td>
  <td>{{ m.bar(job.percent, job.status) }}</td>
  <td class="num">{{ job.rows_done|num }}<div class="small muted">of {{ job.rows_total|num }}</div></td>
  <td class="num">{{ job.rows_per_second|per_s }}</td>
  <td class="num">{{ job.eta_seconds|eta }}</td>
  <td class="nowrap">{{ job.chunks_completed }} / {{ job.chunks_total }}
    <div class="small">{% if job.chunks_running %}<span class="muted">{{ job.chunks_running }} running</span> {% endif %}{% if job.chunks_failed %}<span class="bad">{{ job.chunks_failed }} failed</span>{% endif %}</div></td>
  <td class="num">{% if job.dead_letters %}<span class="bad">{{ job.dead_letters|num }}</span>{% else %}<span class="muted">0</span>{% endif %}</td>
</tr>
{% endfor %}
</tbody>
</table>
</div>
{% else %}
<div class="panel empty">
  <h2>No jobs{% if page.status %} in state {{ page.status }}{% endif %} yet</h2>
  <p>A job appears here as soon as a parallel_batch DAG plans its chunks:
  trigger <a data-airflow target="_top" href="{{ ui_url('dags/parallel_batch_table') }}">parallel_batch_table</a> from the DAGs page.</p>
</div>
{% endif %}
{% endblock %}
"""

_JOB = """{% extends "base" %}{% import "macros" as m %}
{% block title %}{{ job.job_key }}{% endblock %}
{% block content %}
<div class="crumbs"><a href="{{ ctx.base }}/">← All jobs</a></div>
<div class="pagehead"><h1>{{ job.job_key|jobkey }}</h1>{{ m.state(job.status) }}</div>
<div class="meta">
  <span>{{ job.kind }} job</span>
  <span>{{ job.source or '?' }} → {{ job.target or '?' }}</span>
  {% if job.dag_id %}<span>created by <a data-airflow target="_top" href="{{ ui_url('dags/' ~ (job.dag_id|path)) }}">{{ job.dag_id }}</a>{% if job.run_id %} run <a data-airflow target="_top" href="{{ ui_url('dags/' ~ (job.dag_id|path) ~ '/runs/' ~ (job.run_id|path)) }}">{{ job.run_id }}</a>{% endif %}</span>{% endif %}
  <span title="{{ job.started_at|when }}">{{ 'started ' ~ ago(job.started_at) if job.started_at else 'not started yet' }}</span>
  {% if job.finished_at %}<span title="{{ job.finished_at|when }}">finished {{ ago(job.finished_at) }}</span>{% endif %}
  <span>as of {{ page.as_of|when }}</span>
</div>
<section class="cards">
  <div class="card big wide"><div class="k">Progress</div>
    {{ m.bar(job.percent, job.status) }}
    <div class="s">{{ job.rows_done|num }} of {{ job.rows_total|num }} rows · {{ job.rows_written|num }} written</div></div>
  <div class="card"><div class="k">Rate</div><div class="v">{{ job.rows_per_second|rate }}</div>
    <div class="s">elapsed {{ job.elapsed_seconds|eta }}</div></div>
  <div class="card"><div class="k">ETA</div><div class="v">{{ job.eta_seconds|eta }}</div></div>
  <div class="card"><div class="k">Chunks done</div><div class="v">{{ job.chunks_completed }} / {{ job.chunks_total }}</div>
    <div class="s">{{ job.chunks_running }} running · {{ job.chunks_pending }} pending{% if job.chunks_failed %} · <span class="bad">{{ job.chunks_failed }} failed</span>{% endif %}</div></div>
  <div class="card{% if job.dead_letters %} alert{% endif %}"><div class="k">Dead letters</div><div class="v">{{ job.dead_letters|num }}</div>
    <div class="s">pending replay</div></div>
</section>
{% if job.error %}
<div class="notice error"><h2>The job failed</h2><p class="detail">{{ job.error }}</p></div>
{% endif %}
{% for note in page.notes %}
<div class="notice"><p>{{ note }}</p></div>
{% endfor %}
<div class="panel flush">
<h2>Chunks</h2>
{% if page.chunks %}
<table class="grid">
<thead><tr>
  <th class="num">#</th><th>Chunk</th><th>State</th><th>Progress</th><th class="num">Rows done</th>
  <th class="num">Rows/s</th><th class="num">ETA</th><th class="num">Tries</th><th class="num">Dead</th>
  <th>Lease holder</th><th class="num">Heartbeat</th>
</tr></thead>
<tbody>
{% for c in page.chunks %}
{% set note = c.attention or (c.error if c.status == 'failed' else None) %}
<tr{% if note %} class="has-note"{% endif %}>
  <td class="num muted">{{ c.position + 1 }}</td>
  <td class="mono">{{ c.chunk_id }}</td>
  <td>{{ m.state(c.status, c.stalled) }}</td>
  <td>{{ m.bar(c.percent, c.status, c.stalled) }}</td>
  <td class="num">{{ c.rows_done|num }}<div class="small muted">of {{ c.rows_total|num }}</div></td>
  <td class="num">{{ c.rows_per_second|per_s }}</td>
  <td class="num">{{ c.eta_seconds|eta }}</td>
  <td class="num">{{ c.attempts }}</td>
  <td class="num">{% if c.dead_letters %}<span class="bad">{{ c.dead_letters|num }}</span>{% else %}<span class="muted">0</span>{% endif %}</td>
  <td class="holder">{% if c.holder and c.status in ('running', 'interrupted') %}{{ c.holder|holder }}
    <div class="small {{ 'muted' if c.alive else 'warn' }}">{{ 'session alive' if c.alive else 'session gone' }} · lease {{ c.lease_token }}</div>
    {% elif c.holder %}<span class="muted">{{ c.holder|holder }}</span>{% else %}<span class="muted">-</span>{% endif %}</td>
  <td class="num{% if c.stalled %} warn{% endif %}">{% if c.status in ('running', 'interrupted') %}{{ c.heartbeat_age_seconds|age }}{% else %}<span class="muted">-</span>{% endif %}</td>
</tr>
{% if note %}<tr class="note"><td></td><td colspan="10">{% if c.attention %}<span class="{{ 'bad' if c.status == 'failed' else 'warn' }}">{{ c.attention }}</span>{% endif %}
  {% if c.error and c.status == 'failed' %}<div class="mono">{{ c.error|cut }}</div>{% endif %}</td></tr>{% endif %}
{% endfor %}
</tbody>
</table>
{% else %}
<p class="empty">The job has no chunks: nothing to process.</p>
{% endif %}
</div>
<div class="panel{% if page.recent_dead_letters %} flush{% endif %}">
<h2>Dead letters <span class="muted small">{{ job.dead_letters|num }} pending</span></h2>
{% if job.dead_letters %}
<div class="chips pad">{% for name, n in page.dead_letters_by_type.items() %}<span class="chip">{{ name }}<b>{{ n|num }}</b></span>{% endfor %}</div>
<table class="grid">
<thead><tr><th>Last failed</th><th>Chunk</th><th>Line / key</th><th>Error</th><th>Message</th><th class="num">Tries</th></tr></thead>
<tbody>
{% for d in page.recent_dead_letters %}
<tr>
  <td class="nowrap small" title="{{ d.last_failed_at|when }}">{{ ago(d.last_failed_at) }}</td>
  <td class="mono">{{ d.chunk_id }}</td>
  <td class="mono nowrap">{{ d.where }}</td>
  <td class="nowrap bad">{{ d.error_type }}</td>
  <td class="msg">{{ d.message }}</td>
  <td class="num">{{ d.attempts }}</td>
</tr>
{% endfor %}
</tbody>
</table>
<p class="muted small pad">The newest {{ page.recent_dead_letters|length }} of {{ job.dead_letters|num }}; payloads stay in <code>parallel_batch.dead_letters</code>.</p>
{% else %}
<p class="muted">None: every row read so far is in the target.</p>
{% endif %}
</div>
{% if job.dead_letters %}
<div class="panel">
<h2>Replay the dead letters</h2>
<p>{{ page.replay.note }}</p>
{% if page.replay.available %}
<dl class="howto">
  <dt>DAG</dt><dd><a data-airflow target="_top" href="{{ ui_url('dags/' ~ (page.replay.dag_id|path)) }}">{{ page.replay.dag_id }}</a> → Trigger, with</dd>
  <dt>job_key</dt><dd><code class="copy">{{ job.job_key }}</code></dd>
  <dt>CLI</dt><dd><code class="copy">{{ page.replay.command }}</code></dd>
</dl>
{% endif %}
</div>
{% endif %}
{% endblock %}
"""

_PROBLEM = """{% extends "base" %}
{% block title %}{{ problem.title }}{% endblock %}
{% block content %}
{% if problem.code == 'not_found' %}<div class="crumbs"><a href="{{ ctx.base }}/">← All jobs</a></div>{% endif %}
<div class="notice{% if problem.code not in ('not_found', 'schema') %} error{% endif %}">
  <h2>{{ problem.title }}</h2>
  <p class="detail">{{ problem.detail }}</p>
  <p>{{ problem.hint }}</p>
</div>
{% endblock %}
"""

_ENV = jinja2.Environment(
    loader=jinja2.DictLoader(
        {"base": _BASE, "macros": _MACROS, "jobs": _JOBS, "job": _JOB, "problem": _PROBLEM}
    ),
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
    pct=_pct,
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
        "jobs",
        ctx,
        page.as_of,
        page=page,
        states=JOB_STATES,
        limits=sorted({*LIMIT_CHOICES, page.limit}),
        failed=sum(1 for job in page.jobs if job.status == "failed"),
        dead=sum(job.dead_letters for job in page.jobs),
    )


def render_job(page: JobPage, ctx: PageContext) -> str:
    """Return the HTML of one job's page."""
    return _render("job", ctx, page.as_of, page=page, job=page.job)


def render_problem(problem: Problem, ctx: PageContext) -> str:
    """Return the HTML of an error panel (no trace: the log has the details)."""
    return _render("problem", ctx, None, problem=problem)


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
