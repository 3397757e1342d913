"""``parallel-batch status [JOB_KEY]``: jobs and their chunks, from the checkpoint tables.

It renders the display rows of :mod:`parallel_batch.progress.model`, as the web page does::

    CheckpointStore.list_jobs()       -> JobRow    one line per job: state, chunks done, rows
    CheckpointStore.job_status(key)                done/total (a progress bar), rate, ETA, dead
                                                   letters
    CheckpointStore.chunk_rows(key)   -> ChunkRow  one line per chunk: state (``interrupted``
                                                   when running without a live holder), rows
                                                   done/total, rate, ETA, attempts, dead
                                                   letters, holder, last error

In a terminal the tables are drawn with rich (colours, progress bars); otherwise (a pipe, a file,
a log) they are plain text with ``[#####.....]`` bars, so that the output stays greppable. The
view reads only: it never takes a lease or a lock.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from parallel_batch.engine.progress import format_duration
from parallel_batch.progress.formats import format_count, format_percent
from parallel_batch.progress.model import ChunkRow, JobRow, chunk_row, job_row
from parallel_batch.store.checkpoints import CheckpointStore

__all__ = ["StatusReport", "collect", "format_plain", "plain_bar", "show"]

# Characters of a plain-text progress bar. Longer: finer steps; shorter: narrower lines.
BAR_WIDTH = 20
# Characters of an error shown in a chunk line; the full text is in the chunks table.
ERROR_CHARS = 60
# Jobs listed without a JOB_KEY, newest first.
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class StatusReport:
    """What the view shows: jobs, and the chunks of one job when a job_key was given."""

    jobs: list[JobRow]
    chunks: list[ChunkRow] | None


def collect(
    store: CheckpointStore, job_key: str | None = None, *, limit: int = DEFAULT_LIMIT
) -> StatusReport | None:
    """Read the report: the newest jobs, or one job and its chunks.

    :param store: the checkpoint store (read only).
    :param job_key: a job to show with its chunks; None: the newest ``limit`` jobs.
    :param limit: jobs at most, without a job_key.
    :returns: the report; None when ``job_key`` names no job.
    """
    if job_key is None:
        return StatusReport([job_row(s) for s in store.list_jobs(limit=limit)], None)
    status = store.job_status(job_key)
    if status is None:
        return None
    row = store.conn.execute("SELECT now()").fetchone()  # the clock of the chunks' timestamps
    assert row is not None
    chunks = [chunk_row(c, row[0]) for c in store.chunk_rows(job_key)]
    return StatusReport([job_row(status)], chunks)


# ---- formatting ---------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.0f}/s"


def _eta(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else format_duration(value)


def _cut(text: str | None, width: int = ERROR_CHARS) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def plain_bar(percent: float, width: int = BAR_WIDTH) -> str:
    """Return ``[#####.....]  50%``: a progress bar in plain text (full only at 100%)."""
    filled = math.floor(max(0.0, min(100.0, percent)) * width / 100)
    return f"[{'#' * filled}{'.' * (width - filled)}] {format_percent(percent):>4}"


def _job_cells(job: JobRow) -> list[str]:
    return [
        job.job_key,
        job.status,
        f"{job.chunks_completed}/{job.chunks_total}",
        plain_bar(job.percent),
        f"{job.rows_done:,}/{job.rows_total:,}",
        _rate(job.rows_per_second),
        _eta(job.eta_seconds),
        f"{job.dead_letters:,}",
        f"{job.source or '?'} -> {job.target or '?'}",
    ]


_JOB_HEADERS = [
    "JOB",
    "STATE",
    "CHUNKS",
    "PROGRESS",
    "ROWS",
    "RATE",
    "ETA",
    "DEAD",
    "SOURCE -> TARGET",
]
_CHUNK_HEADERS = [
    "CHUNK",
    "STATE",
    "PROGRESS",
    "ROWS",
    "RATE",
    "ETA",
    "TRIES",
    "DEAD",
    "HOLDER / ERROR",
]


def _chunk_cells(chunk: ChunkRow) -> list[str]:
    return [
        chunk.chunk_id,
        chunk.status,
        plain_bar(chunk.percent),
        f"{chunk.rows_done:,}/{format_count(chunk.rows_total)}",
        _rate(chunk.rows_per_second),
        _eta(chunk.eta_seconds),
        str(chunk.attempts),
        f"{chunk.dead_letters:,}",
        _cut(chunk.error) if chunk.error else (chunk.holder or ""),
    ]


def _plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def format_plain(report: StatusReport) -> str:
    """Return the report as plain text (no colours, no box drawing)."""
    if not report.jobs:
        return "No jobs yet."
    lines = _plain_table(_JOB_HEADERS, [_job_cells(j) for j in report.jobs])
    if report.chunks is not None:
        lines.append("")
        if report.chunks:
            lines.extend(_plain_table(_CHUNK_HEADERS, [_chunk_cells(c) for c in report.chunks]))
        else:
            lines.append("The job has no chunks (nothing to process).")
        lines.extend(["", reconciliation(report.jobs[0])])
        error = report.jobs[0].error
        if error:
            lines.extend(["", f"Error: {error}"])
    return "\n".join(lines)


def reconciliation(job: JobRow) -> str:
    """Where a job's rows went: read = written - fan-out + filtered + dead letters."""
    return (
        f"Rows: {job.rows_done:,} read = {job.rows_written:,} written - {job.rows_fanout:,} "
        f"fan-out + {job.rows_filtered:,} filtered + {job.rows_failed:,} dead letters"
    )


_STYLES = {
    "completed": "green",
    "running": "cyan",
    "pending": "dim",
    "failed": "bold red",
    "interrupted": "yellow",
}


def _table(title: str, headers: Sequence[str], wrapped: tuple[str, ...]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header.title(), no_wrap=header not in wrapped, overflow="fold")
    return table


def _rich(report: StatusReport) -> list[Any]:
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def state(value: str) -> Text:
        return Text(value, style=_STYLES.get(value, ""))

    def bar(percent: float) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            ProgressBar(total=100.0, completed=percent, width=BAR_WIDTH),
            f"{format_percent(percent):>4}",
        )
        return grid

    jobs = _table("parallel_batch jobs", _JOB_HEADERS, ("JOB", "SOURCE -> TARGET"))
    for job in report.jobs:
        cells = _job_cells(job)
        red = Text(cells[7], style="red" if job.dead_letters else "")
        jobs.add_row(
            cells[0], state(job.status), cells[2], bar(job.percent), *cells[4:7], red, cells[8]
        )
    out: list[Any] = [jobs]
    if report.chunks is not None:
        chunks = _table(
            f"chunks of {report.jobs[0].job_key}", _CHUNK_HEADERS, ("CHUNK", "HOLDER / ERROR")
        )
        for chunk in report.chunks:
            cells = _chunk_cells(chunk)
            red = Text(cells[7], style="red" if chunk.dead_letters else "")
            error = Text(cells[8], style="red" if chunk.error else "dim")
            chunks.add_row(
                cells[0], state(chunk.status), bar(chunk.percent), *cells[3:7], red, error
            )
        out.append(chunks)
        out.append(Text(reconciliation(report.jobs[0])))
        if report.jobs[0].error:
            out.append(Text(f"Error: {report.jobs[0].error}", style="red"))
    return out


def show(
    conninfo: str,
    job_key: str | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    file: IO[str] | None = None,
    rich_output: bool | None = None,
    width: int | None = None,
) -> int:
    """Print the status view; return the exit code (1 for an unknown job_key).

    :param conninfo: the database.
    :param job_key: a job to show with its chunks; None: the newest jobs.
    :param limit: jobs at most, without a job_key.
    :param file: where to print; standard output by default.
    :param rich_output: force rich (True) or plain text (False); None: rich in a terminal.
    :param width: the width of the rich view; None: the terminal's.
    """
    if limit <= 0:
        raise ValueError("limit must be greater than 0")
    out = file if file is not None else sys.stdout
    with CheckpointStore.connect(conninfo, application_name="parallel_batch status") as store:
        report = collect(store, job_key, limit=limit)
    if report is None:
        print(f"No job {job_key!r}; `parallel-batch status` lists the jobs.", file=out)
        return 1
    use_rich = out.isatty() if rich_output is None else rich_output
    if not use_rich or not report.jobs:
        print(format_plain(report), file=out)
        return 0
    from rich.console import Console

    console = Console(file=out, force_terminal=rich_output or None, width=width)
    for renderable in _rich(report):
        console.print(renderable)
    return 0
