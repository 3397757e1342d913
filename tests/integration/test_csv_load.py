"""The CSV chunk runner on a real PostgreSQL: exact target, exact dead letters, exactly once.

The expected outcome of each file is worked out independently (``customers_csv``: Python's
``csv`` module and the generator's list of spoiled records), then compared value by value.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from parallel_batch.core.csv_job import check_reusable, plan_csv_job, stored_csv_spec
from parallel_batch.core.csv_load import run_csv_chunk
from parallel_batch.core.csv_spec import CsvLoadSpec, FileIdentity
from parallel_batch.core.table_job import ChunkSummary
from parallel_batch.demo.customers import create_customers
from parallel_batch.exceptions import ConfigurationError, CsvHeaderError
from parallel_batch.sources.csv.planner import FileChunk
from parallel_batch.store.checkpoints import CheckpointStore, Job
from tests.integration.customers_csv import (
    CustomersCsv,
    assert_dead_letters,
    customers_csv,
    dead_letters,
    target_rows,
)

TARGET = "demo.customers"
# Duplicate ids: reused before (10, 4000: the inserted one comes first and is the one loaded) or
# after their first occurrence, the id of a bad record (97: the later, good one loads), and an
# id used three times.
DUPLICATES: dict[int, int | None] = {10: None, 4000: 100, 2500: 2600, 97: None, 1234: 3000}
SMALL_DUPLICATES: dict[int, int | None] = {10: None, 1900: 50, 1000: 1500, 97: 1200}


def _plan(url: str, job_key: str, spec: CsvLoadSpec, **kwargs: object) -> Job:
    with CheckpointStore.connect(url) as store:
        return plan_csv_job(store, job_key, spec, **kwargs)  # type: ignore[arg-type,unused-ignore]


def _run(
    url: str, job: Job, spec: CsvLoadSpec, *, reverse: bool = False, **kwargs: object
) -> list[ChunkSummary]:
    entries = list(reversed(job.plan)) if reverse else job.plan
    return [
        run_csv_chunk(url, job.job_key, FileChunk.from_dict(entry), spec, **kwargs)  # type: ignore[arg-type,unused-ignore]
        for entry in entries
    ]


def _totals(conn: psycopg.Connection, job_key: str) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT sum(rows_read), sum(rows_written), sum(rows_failed) FROM parallel_batch.chunks"
        " WHERE job_key = %s",
        (job_key,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _check_exact(conn: psycopg.Connection, job_key: str, case: CustomersCsv) -> None:
    assert target_rows(conn) == case.expected_rows()
    assert_dead_letters(dead_letters(conn, job_key), case)
    assert _totals(conn, job_key) == (case.records, len(case.rows), len(case.dead))
    unbalanced = conn.execute(
        "SELECT chunk_id FROM parallel_batch.chunks WHERE job_key = %s"
        " AND rows_read <> rows_written + rows_failed",
        (job_key,),
    ).fetchall()
    assert unbalanced == []


@pytest.fixture
def target(pg_conn: psycopg.Connection) -> str:
    """The demo customers table, empty."""
    create_customers(pg_conn)
    return TARGET


@pytest.mark.parametrize(
    ("line_ending", "bom", "chunk_bytes"),
    [("\r\n", False, 20_000), ("\r\n", True, 5_000), ("\n", True, 20_000)],
    ids=["crlf", "crlf-bom", "lf-bom"],
)
def test_many_chunks_load_exactly_the_good_records(
    pg_url: str,
    pg_conn: psycopg.Connection,
    target: str,
    tmp_path: Path,
    line_ending: str,
    bom: bool,
    chunk_bytes: int,
) -> None:
    """Test that 5,000 records in many byte ranges load exactly; bad and duplicate ones dead-letter."""
    case = customers_csv(
        tmp_path / "customers.csv",
        5_000,
        bad_every=97,
        duplicates=DUPLICATES,
        line_ending=line_ending,
        bom=bom,
    )
    spec = CsvLoadSpec(str(case.path), target, batch_rows=37)
    job = _plan(pg_url, "many-chunks", spec, chunk_bytes=chunk_bytes)

    summaries = _run(pg_url, job, spec)

    # ~25 or ~200 chunks: with a multi-line note in every third record or so, many planned
    # boundaries land inside quoted fields and move to the next record start.
    assert len(job.plan) > 500_000 // chunk_bytes
    assert all(s.reconciles and not s.skipped for s in summaries)
    assert len([d for d in case.dead.values() if d[0] == "DuplicateKeyError"]) == 4
    _check_exact(pg_conn, "many-chunks", case)


def test_later_chunks_first_still_load_the_first_occurrence(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that chunks run in reverse order give the same rows and dead letters (displacement)."""
    case = customers_csv(tmp_path / "customers.csv", 3_000, duplicates=DUPLICATES)
    spec = CsvLoadSpec(str(case.path), target, batch_rows=100)
    job = _plan(pg_url, "reverse", spec, chunks=6)

    _run(pg_url, job, spec, reverse=True)

    _check_exact(pg_conn, "reverse", case)
    assert case.rows[4000][1] == "Duplicate 1"  # the record inserted before the original


def test_rerun_new_job_and_full_refresh(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that a rerun writes nothing, a new job or a full refresh rewrites rows, no duplicates."""
    case = customers_csv(tmp_path / "customers.csv", 2_000, duplicates=SMALL_DUPLICATES)
    spec = CsvLoadSpec(str(case.path), target, batch_rows=250)
    job = _plan(pg_url, "first", spec, chunks=3)
    _run(pg_url, job, spec)
    _check_exact(pg_conn, "first", case)
    versions: dict[int, str] = dict(
        pg_conn.execute("SELECT id, xmin::text FROM demo.customers").fetchall()
    )

    again = _run(pg_url, _plan(pg_url, "first", spec, chunks=3), spec)

    assert [s.skipped for s in again] == [True] * 3
    assert dict(pg_conn.execute("SELECT id, xmin::text FROM demo.customers")) == versions

    second = _plan(pg_url, "second", spec, chunks=5)
    _run(pg_url, second, spec)

    _check_exact(pg_conn, "second", case)  # the rows already there are not "duplicates"
    rewritten: dict[int, str] = dict(
        pg_conn.execute("SELECT id, xmin::text FROM demo.customers").fetchall()
    )
    assert rewritten.keys() == versions.keys()
    assert all(rewritten[k] != versions[k] for k in versions)

    refreshed = _plan(pg_url, "first", spec, chunks=2, full_refresh=True)
    summaries = _run(pg_url, refreshed, spec)

    assert [s.skipped for s in summaries] == [False, False]
    _check_exact(pg_conn, "first", case)
    claims = pg_conn.execute("SELECT count(*) FROM parallel_batch.file_keys").fetchone()
    assert claims == (0,)  # deleted as each job's last chunk completed


def test_values_the_target_refuses_are_dead_letters(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that out-of-range, over-precise, NUL and constraint-violating values dead-letter alone."""
    pg_conn.execute("ALTER TABLE demo.customers ADD CHECK (amount <> 13.13)")
    path = tmp_path / "customers.csv"
    path.write_bytes(
        b"id,name,email,amount,note,created_at\r\n"
        b"1,Ann,ann@example.com,1.00,,2024-01-01T00:00:00+00:00\r\n"
        b"2,Bob,bob@example.com,12345678901.00,,2024-01-01T00:00:00+00:00\r\n"
        b"3,Cy,cy@example.com,1.005,,2024-01-01T00:00:00+00:00\r\n"
        b"4,Di,di@example.com,1.500,,2024-01-01T00:00:00+00:00\r\n"
        b'5,Ed,ed@example.com,2.00,"a \x00 b",2024-01-01T00:00:00+00:00\r\n'
        b"6,Flo,flo@example.com,13.13,,2024-01-01T00:00:00+00:00\r\n"
        b"7,Gus,gus@example.com,7.00,,2024-01-01T00:00:00+00:00\r\n"
    )
    spec = CsvLoadSpec(str(path), target)
    job = _plan(pg_url, "refused", spec, chunks=1)

    (summary,) = _run(pg_url, job, spec)

    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (7, 3, 4)
    assert [r[0] for r in target_rows(pg_conn)] == [1, 4, 7]
    found = dead_letters(pg_conn, "refused")
    assert found[3] == ("CsvValueError", "amount: out of the range of numeric(12,2)")
    assert found[4][1].startswith("amount: more than 2 decimal places")
    assert found[6][0] == "CsvValueError" and "NUL" in found[6][1]
    assert found[7][0] == "CheckViolation"
    assert found[7][1].startswith("the target refused the row: new row for relation")


def test_bad_files_and_changed_files_are_configuration_errors(
    pg_url: str, target: str, tmp_path: Path
) -> None:
    """Test that a missing file, a wrong header and a file changed since planning are refused."""
    with pytest.raises(ConfigurationError, match="does not exist"):
        _plan(pg_url, "missing", CsvLoadSpec(str(tmp_path / "nope.csv"), target), chunks=1)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,name,mail\n1,a,b\n")
    with pytest.raises(CsvHeaderError, match="does not match the expected columns"):
        _plan(pg_url, "wrong", CsvLoadSpec(str(wrong), target), chunks=1)

    case = customers_csv(tmp_path / "customers.csv", 100)
    spec = CsvLoadSpec(str(case.path), target)
    job = _plan(pg_url, "changed", spec, chunks=2)
    stored, identity = stored_csv_spec(job)
    assert stored == spec and identity == FileIdentity.of(case.path)
    with case.path.open("ab") as out:
        out.write(b"101,Late,late@example.com,1.00,,2024-01-01T00:00:00+00:00\r\n")
    with pytest.raises(ConfigurationError, match="changed after its chunks were planned"):
        check_reusable(job, spec)


_WORKER = """
import logging, sys
from parallel_batch.core.enrich import EnrichConfig
from parallel_batch.core.csv_load import run_csv_chunk
from parallel_batch.core.csv_spec import CsvLoadSpec
from parallel_batch.sources.csv.planner import FileChunk
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
url, job_key, path, enrich_url, start, end, first = sys.argv[1:]
print("started", flush=True)
run_csv_chunk(
    url, job_key, FileChunk(int(start), int(end), int(first)),
    CsvLoadSpec(path, "demo.customers", batch_rows=40),
    enrich=EnrichConfig(enrich_url, concurrency=4, base_delay=0.01),
)
print("done", flush=True)
"""


@pytest.mark.slow
def test_killed_chunk_resumes_without_loss_or_duplicates(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that a chunk SIGKILLed in a subprocess mid-way resumes after its last committed batch."""
    from parallel_batch.core.enrich import EnrichConfig
    from tests.integration.segment_server import SegmentServer, segment_of

    case = customers_csv(tmp_path / "customers.csv", 1_200, duplicates={10: None, 97: 1100})
    spec = CsvLoadSpec(str(case.path), target, batch_rows=40)
    job = _plan(pg_url, "killed", spec, chunks=1)
    entry = job.plan[0]
    with SegmentServer(delay=0.003) as server:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(_WORKER),
                pg_url,
                "killed",
                str(case.path),
                server.url,
                str(entry["start"]),
                str(entry["end"]),
                str(entry["first_line"]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "started"
            deadline = time.monotonic() + 60
            done = 0
            while done < 300 and time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.01)
                row = pg_conn.execute(
                    "SELECT rows_read FROM parallel_batch.chunks WHERE job_key = 'killed'"
                ).fetchone()
                done = int(row[0]) if row else 0
            assert worker.poll() is None, "the chunk finished before it could be killed"
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            worker.kill()
            worker.wait()
        status, committed = pg_conn.execute(
            "SELECT status, rows_read FROM parallel_batch.chunks WHERE job_key = 'killed'"
        ).fetchone()  # type: ignore[misc]
        assert status == "running" and 300 <= committed < case.records

        (summary,) = _run(pg_url, job, spec, enrich=EnrichConfig(server.url, base_delay=0.01))

    assert summary.attempt == 2 and summary.resumed_from is not None
    assert summary.rows_this_attempt == case.records - committed
    assert target_rows(pg_conn) == case.expected_rows(lambda i: segment_of(case.rows[i][2]))
    assert_dead_letters(dead_letters(pg_conn, "killed"), case)
    assert _totals(pg_conn, "killed") == (case.records, len(case.rows), len(case.dead))


def test_header_only_file_plans_a_completed_empty_job(
    pg_url: str, target: str, tmp_path: Path
) -> None:
    """Test that a file with only its header gives a job with no chunks, already completed."""
    path = tmp_path / "empty.csv"
    path.write_bytes(b"\xef\xbb\xbfid,name,email,amount,note,created_at\r\n")

    job = _plan(pg_url, "empty", CsvLoadSpec(str(path), target), chunks=4)

    assert (job.plan, job.status, job.rows_total) == ([], "completed", 0)


def test_blank_lines_and_no_final_newline(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that blank lines are skipped and a last record without line ending loads."""
    path = tmp_path / "ragged.csv"
    path.write_bytes(
        b"id,name,email,amount,note,created_at\n"
        b"1,Ann,ann@example.com,1.00,,2024-01-01T00:00:00Z\n"
        b"\n"
        b'2,Bob,bob@example.com,2.00,"two\n\nlines",2024-01-02T00:00:00+02:00\n'
        b"\n"
        b"3,Cy,cy.example.com,3.00,,2024-01-03T00:00:00Z\n"
        b"4,Di,di@example.com,4.00,,2024-01-04"
    )
    spec = CsvLoadSpec(str(path), target, batch_rows=2)
    job = _plan(pg_url, "ragged", spec, chunks=3)

    summaries = _run(pg_url, job, spec)

    assert sum(s.rows_read for s in summaries) == 4
    assert [(r[0], r[4]) for r in target_rows(pg_conn)] == [
        (1, None),
        (2, "two\n\nlines"),
        (4, None),
    ]
    assert dead_letters(pg_conn, "ragged") == {
        8: ("CsvValueError", "email: email address without @")
    }
