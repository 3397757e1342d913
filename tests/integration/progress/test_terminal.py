"""Tests of parallel_batch.progress.terminal and `parallel-batch status` on a real checkpoint store."""

from __future__ import annotations

import io
from collections.abc import Callable

import psycopg
import pytest

from parallel_batch import cli
from parallel_batch.progress import terminal as status
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.deadletters import DeadLetter

JOB = "parallel_batch_table:2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"
PLAN = [
    {"chunk_id": "(-inf,100]", "rows": 100},
    {"chunk_id": "(100,200]", "rows": 100},
    {"chunk_id": "(200,+inf]", "rows": 100},
]


def _insert(rows: int) -> Callable[[psycopg.Connection], int]:
    """A batch's write: ``rows`` rows into the test's target table."""

    def write(conn: psycopg.Connection) -> int:
        return conn.execute("INSERT INTO target SELECT generate_series(1, %s)", (rows,)).rowcount

    return write


def _letter(key: int) -> DeadLetter:
    return DeadLetter(str(key), None, {"id": key}, "PoisonRowError", f"event {key} is poison")


@pytest.fixture
def store(pg_url: str, pg_conn: psycopg.Connection) -> CheckpointStore:
    """A job of 3 chunks: the first completed (2 dead letters), the second half done, one pending.

    The second chunk's lease is held by a store of its own, which the test may close to play a
    killed task.
    """
    pg_conn.execute("CREATE TABLE target (id int)")
    with CheckpointStore.connect(pg_url) as setup:
        setup.ensure_job(
            JOB, kind="table", plan=PLAN, source="demo.events", target="demo.events_enriched"
        )
        done = setup.acquire(JOB, "(-inf,100]", holder="worker-a")
        setup.commit_batch(
            done,
            last_key=100,
            rows_read=100,
            write=_insert(98),
            dead_letters=[_letter(7), _letter(9)],
        )
        setup.complete(done)
    holder = CheckpointStore.connect(pg_url)
    running = holder.acquire(JOB, "(100,200]", holder="worker-b")
    holder.commit_batch(running, last_key=150, rows_read=50, write=_insert(50))
    return holder


def _report(pg_url: str, job_key: str | None = None) -> status.StatusReport:
    with CheckpointStore.connect(pg_url) as reader:
        report = status.collect(reader, job_key)
    assert report is not None
    return report


def test_job_list_shows_progress_and_dead_letters(store: CheckpointStore, pg_url: str) -> None:
    """Test that the job list gives state, chunks, rows done/total and dead letters."""
    (job,) = _report(pg_url).jobs

    assert (job.job_key, job.status) == (JOB, "running")
    assert (job.chunks_completed, job.chunks_total) == (1, 3)
    assert (job.rows_done, job.rows_total, job.dead_letters) == (150, 300, 2)
    assert job.percent == pytest.approx(50.0)
    text = status.format_plain(_report(pg_url))
    assert JOB in text
    assert "[##########..........]  50%" in text
    assert "150/300" in text
    assert "demo.events -> demo.events_enriched" in text


def test_chunk_view_shows_each_chunk(store: CheckpointStore, pg_url: str) -> None:
    """Test that a job's view lists its chunks with state, rows, attempts, dead letters, holder."""
    chunks = _report(pg_url, JOB).chunks
    assert chunks is not None

    assert [(c.chunk_id, c.status) for c in chunks] == [
        ("(-inf,100]", "completed"),
        ("(100,200]", "running"),
        ("(200,+inf]", "pending"),
    ]
    assert [(c.rows_done, c.rows_total, c.dead_letters) for c in chunks] == [
        (100, 100, 2),
        (50, 100, 0),
        (0, 100, 0),
    ]
    assert chunks[1].holder == "worker-b"
    assert chunks[1].attempts == 1
    assert chunks[0].eta_seconds == 0.0
    text = status.format_plain(_report(pg_url, JOB))
    assert "(100,200]" in text and "worker-b" in text


def test_a_killed_holder_shows_as_interrupted(store: CheckpointStore, pg_url: str) -> None:
    """Test that a running chunk whose holder's session is gone shows as interrupted."""
    store.close()  # as a killed task would: its session, and the chunk's lock, are gone

    chunks = _report(pg_url, JOB).chunks

    assert chunks is not None
    assert chunks[1].status == "interrupted"
    assert chunks[1].eta_seconds is None


def test_done_never_disagrees_with_the_total(pg_url: str, pg_conn: psycopg.Connection) -> None:
    """Test that a completed job shows the records it read as its total (the plan's rows were an
    estimate), and a running chunk that read more than planned never shows more done than its
    total, nor 100%."""
    done_key, running_key = "parallel_batch_csv:a.csv", "parallel_batch_csv:b.csv"
    with CheckpointStore.connect(pg_url) as store:
        for key, rows in ((done_key, 200_000), (running_key, 12)):
            plan = [{"chunk_id": "bytes[0,100)", "rows": 202_333 if rows > 100 else 10}]
            store.ensure_job(key, kind="csv", plan=plan, source=key, target="demo.c")
            lease = store.acquire(key, "bytes[0,100)", holder="worker-a")
            store.commit_batch(lease, last_key=rows, rows_read=rows)
            if key == done_key:
                store.complete(lease)
    # The completed chunk's total as planned (a store may keep the estimate): not a done count.
    pg_conn.execute("UPDATE parallel_batch.chunks SET rows_total = 202333 WHERE rows_read > 100")

    done, running = sorted(_report(pg_url).jobs, key=lambda job: job.job_key)
    chunks = _report(pg_url, running_key).chunks

    assert (done.status, done.rows_done, done.rows_total, done.percent) == (
        "completed",
        200_000,
        200_000,
        100.0,
    )
    assert (running.status, running.rows_done, running.rows_total) == ("running", 12, 12)
    assert running.percent < 100
    assert chunks is not None and (chunks[0].rows_done, chunks[0].rows_total) == (12, 12)
    assert chunks[0].percent < 100 and chunks[0].eta_seconds is None
    text = status.format_plain(_report(pg_url))
    assert "200,000/200,000" in text and "202,333" not in text
    assert "[###################.]  99%  12/12" in text


def test_cli_prints_plain_text_when_not_a_terminal(
    store: CheckpointStore, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that `parallel-batch status` prints plain tables to a pipe, one job or all."""
    assert cli.main(["status", "--url", pg_url]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split()[:3] == ["JOB", "STATE", "CHUNKS"]
    assert JOB in listing and "\x1b[" not in listing

    assert cli.main(["status", "--url", pg_url, JOB]) == 0
    detail = capsys.readouterr().out
    assert "CHUNK" in detail and "(200,+inf]" in detail and "pending" in detail


def test_cli_unknown_job(
    store: CheckpointStore, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that an unknown job_key exits with 1 and says how to list the jobs."""
    assert cli.main(["status", "--url", pg_url, "no-such-job"]) == 1
    assert "No job 'no-such-job'" in capsys.readouterr().out


def test_rich_output_draws_progress_bars(store: CheckpointStore, pg_url: str) -> None:
    """Test that the terminal view draws tables with progress bars."""
    out = io.StringIO()

    assert status.show(pg_url, JOB, file=out, rich_output=True, width=200) == 0

    text = out.getvalue()
    assert "━" in text  # rich's bar
    assert " 50%" in text and "(100,200]" in text and "worker-b" in text


def test_empty_database(pg_url: str, pg_conn: psycopg.Connection) -> None:
    """Test that a database without the schema or jobs says so instead of failing."""
    out = io.StringIO()

    assert status.show(pg_url, file=out) == 0

    assert out.getvalue().strip() == "No jobs yet."


def test_plain_bar_bounds() -> None:
    """Test that the plain bar is empty at 0%, full at 100% only, and clamps outside."""
    assert status.plain_bar(0.0, 4) == "[....]   0%"
    assert status.plain_bar(100.0, 4) == "[####] 100%"
    assert status.plain_bar(200.0, 4).startswith("[####]")
    assert status.plain_bar(99.9, 4) == "[###.]  99%"  # full only when done


def test_a_job_view_reconciles_its_rows(pg_url: str, pg_conn: psycopg.Connection) -> None:
    """Test that one job's view says where its rows went, filtered and fan-out included, and the
    page shows the same figures."""
    from starlette.testclient import TestClient

    from parallel_batch.progress.app import create_app

    pg_conn.execute("CREATE TABLE target (id int)")
    with CheckpointStore.connect(pg_url) as store:
        store.ensure_job("kinds", kind="table", plan=[{"chunk_id": "(-inf,+inf]", "rows": 100}])
        lease = store.acquire("kinds", "(-inf,+inf]", holder="worker-a")
        store.commit_batch(
            lease,
            last_key=100,
            rows_read=100,
            write=_insert(105),  # 95 rows written once, 5 of them twice (fan-out 10)
            dead_letters=[_letter(7), _letter(9)],
            rows_filtered=3,
            rows_fanout=10,
        )
        store.complete(lease)

    text = status.format_plain(_report(pg_url, "kinds"))
    page = TestClient(create_app(lambda: pg_url)).get("/job", params={"key": "kinds"})

    assert "Rows: 100 read = 105 written - 10 fan-out + 3 filtered + 2 dead letters" in text
    assert page.status_code == 200
    assert "105 written (10 fan-out) · 3 filtered · 2 dead letters" in page.text
