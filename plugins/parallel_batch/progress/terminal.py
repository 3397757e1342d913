"""``parallel-batch status [JOB_KEY]``: jobs and their chunks, from the checkpoint tables.

::

    CheckpointStore.list_jobs()      -> one line per job: state, chunks done, rows done/total
    CheckpointStore.job_status(key)     (a progress bar), rate, ETA, dead letters
    CheckpointStore.chunk_rows(key)  -> one line per chunk: state (``interrupted`` when running
                                        without a live holder), rows done/total, rate, ETA,
                                        attempts, dead letters, holder, last error

In a terminal the tables are drawn with rich (colours, progress bars); otherwise (a pipe, a file,
a log) they are plain text with ``[#####.....]`` bars, so that the output stays greppable. The
view reads only: it never takes a lease or a lock.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from parallel_batch.engine.progress import format_duration
from parallel_batch.store.checkpoints import CheckpointStore, ChunkState, JobStatus

__all__ = ["ChunkLine", "JobLine", "StatusReport", "collect", "format_plain", "show"]

# Characters of a plain-text progress bar. Longer: finer steps; shorter: narrower lines.
BAR_WIDTH = 20
# Characters of an error shown in a chunk line; the full text is in the chunks table.
ERROR_CHARS = 60
# Jobs listed without a JOB_KEY, newest first.
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class JobLine:
    """One job as the view shows it."""

    job_key: str
    status: str
    kind: str
    source: str | None
    target: str | None
    chunks_completed: int
    chunks_total: int
    rows_done: int
    rows_total: int
    rows_per_second: float | None
    eta_seconds: float | None
    dead_letters: int
    error: str | None

    @property
    def fraction(self) -> float:
        """Rows done as a fraction of rows planned (1 for a completed or empty job)."""
        if self.status == "completed" or self.rows_total <= 0:
            return 1.0
        return min(1.0, self.rows_done / self.rows_total)


@dataclass(frozen=True)
class ChunkLine:
    """One chunk as the view shows it."""

    chunk_id: str
    status: str
    rows_done: int
    rows_total: int | None
    rows_per_second: float | None
    eta_seconds: float | None
    attempts: int
    dead_letters: int
    holder: str | None
    error: str | None

    @property
    def fraction(self) -> float:
        """Rows done as a fraction of the chunk's planned rows."""
        if self.status == "completed" or not self.rows_total:
            return 1.0 if self.status == "completed" or self.rows_total == 0 else 0.0
        return min(1.0, self.rows_done / self.rows_total)


@dataclass(frozen=True)
class StatusReport:
    """What the view shows: jobs, and the chunks of one job when a job_key was given."""

    jobs: list[JobLine]
    chunks: list[ChunkLine] | None


def job_line(status: JobStatus) -> JobLine:
    job = status.job
    return JobLine(
        job_key=job.job_key,
        status=job.status,
        kind=job.kind,
        source=job.source,
        target=job.target,
        chunks_completed=status.chunks_completed,
        chunks_total=status.chunks_total,
        rows_done=status.rows_read,
        rows_total=status.rows_total,
        rows_per_second=status.rate_per_second,
        eta_seconds=status.eta_seconds,
        dead_letters=status.dead_letters,
        error=job.error,
    )


def chunk_line(chunk: ChunkState, now: dt.datetime) -> ChunkLine:
    status: str = chunk.status
    if status == "running" and not chunk.alive:
        status = "interrupted"  # its holder is gone; the next attempt resumes it
    rate: float | None = None
    if chunk.started_at is not None and chunk.rows_read:
        seconds = ((chunk.finished_at or now) - chunk.started_at).total_seconds()
        rate = chunk.rows_read / seconds if seconds > 0 else None
    eta: float | None = None
    if status == "completed":
        eta = 0.0
    elif status == "running" and rate and chunk.rows_total:
        eta = max(chunk.rows_total - chunk.rows_read, 0) / rate
    return ChunkLine(
        chunk_id=chunk.chunk_id,
        status=status,
        rows_done=chunk.rows_read,
        rows_total=chunk.rows_total,
        rows_per_second=rate,
        eta_seconds=eta,
        attempts=chunk.attempts,
        dead_letters=chunk.dead_letters,
        holder=chunk.holder,
        error=chunk.error,
    )


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
        return StatusReport([job_line(s) for s in store.list_jobs(limit=limit)], None)
    status = store.job_status(job_key)
    if status is None:
        return None
    now = dt.datetime.now(dt.UTC)
    chunks = [chunk_line(c, now) for c in store.chunk_rows(job_key)]
    return StatusReport([job_line(status)], chunks)


# ---- formatting ---------------------------------------------------------------------------------


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.0f}/s"


def _eta(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else format_duration(value)


def _cut(text: str | None, width: int = ERROR_CHARS) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def plain_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """Return ``[#####.....]  50%``: a progress bar in plain text."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:3.0f}%"


def _job_cells(job: JobLine) -> list[str]:
    return [
        job.job_key,
        job.status,
        f"{job.chunks_completed}/{job.chunks_total}",
        plain_bar(job.fraction),
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


def _chunk_cells(chunk: ChunkLine) -> list[str]:
    return [
        chunk.chunk_id,
        chunk.status,
        plain_bar(chunk.fraction),
        f"{chunk.rows_done:,}/{_count(chunk.rows_total)}",
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
        error = report.jobs[0].error
        if error:
            lines.extend(["", f"Error: {error}"])
    return "\n".join(lines)


_STYLES = {
    "completed": "green",
    "running": "cyan",
    "pending": "dim",
    "failed": "bold red",
    "interrupted": "yellow",
}


def _rich(report: StatusReport) -> list[Any]:
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def state(value: str) -> Text:
        return Text(value, style=_STYLES.get(value, ""))

    def bar(fraction: float) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            ProgressBar(total=1.0, completed=fraction, width=BAR_WIDTH), f"{100 * fraction:3.0f}%"
        )
        return grid

    jobs = Table(title="parallel_batch jobs", title_justify="left")
    for header in _JOB_HEADERS:
        jobs.add_column(
            header.title(), no_wrap=header not in ("JOB", "SOURCE -> TARGET"), overflow="fold"
        )
    for job in report.jobs:
        cells = _job_cells(job)
        jobs.add_row(
            cells[0],
            state(job.status),
            cells[2],
            bar(job.fraction),
            *cells[4:7],
            Text(cells[7], style="red" if job.dead_letters else ""),
            cells[8],
        )
    out: list[Any] = [jobs]
    if report.chunks is not None:
        chunks = Table(title=f"chunks of {report.jobs[0].job_key}", title_justify="left")
        for header in _CHUNK_HEADERS:
            chunks.add_column(
                header.title(), no_wrap=header not in ("CHUNK", "HOLDER / ERROR"), overflow="fold"
            )
        for chunk in report.chunks:
            cells = _chunk_cells(chunk)
            chunks.add_row(
                cells[0],
                state(chunk.status),
                bar(chunk.fraction),
                *cells[3:7],
                Text(cells[7], style="red" if chunk.dead_letters else ""),
                Text(cells[8], style="red" if chunk.error else "dim"),
            )
        out.append(chunks)
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
