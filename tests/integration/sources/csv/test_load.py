"""CSV jobs on the chunk-job core and a real PostgreSQL: exact target, exact dead letters, once.

The expected outcome of each file is worked out independently (``tests.helpers.customers_csv``:
Python's ``csv`` module and the generator's list of spoiled records), then compared value by
value. Records are checked by the demo transform ``include.transforms.customers:check``, and again by
``check_arrow`` (the ``arrow`` kind): the same file, the same outcome, its batches read, checked
and encoded as columns (``prepare_columns``), or as rows where the columnar path hands over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from parallel_batch.core.planning import stored_spec
from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import source_from_dict
from parallel_batch.sources.csv import source as csv_source
from parallel_batch.sources.csv.files import FileIdentity
from parallel_batch.sources.csv.typed import typed_csv_source
from tests.helpers.customers_csv import customers_csv, dead_letters, target_rows
from tests.integration.sources.csv.csv_jobs import (
    CHECK,
    CHECK_ARROW,
    check_exact,
    customers_spec,
    plan,
    run,
)

# Duplicate ids: reused before (10, 4000: the inserted one comes first and is the one loaded) or
# after their first occurrence, the id of a record the reader refuses (97: the later, good one
# loads), the id of a record the transform refuses (388: its id stays claimed, the later one is a
# duplicate), and an id used three times (1234).
DUPLICATES: list[tuple[int, int | None]] = [
    (10, None),
    (4000, 100),
    (2500, 2600),
    (97, None),
    (1234, 3000),
    (1234, None),
    (388, None),
]
SMALL_DUPLICATES: dict[int, int | None] = {10: None, 1900: 50, 1000: 1500, 97: 1200, 873: 100}


@pytest.fixture(params=[CHECK, CHECK_ARROW], ids=["rows", "arrow"])
def check(request: pytest.FixtureRequest) -> TransformSpec:
    """The demo's check as rows, and as columns (the columnar path)."""
    spec: TransformSpec = request.param
    return spec


@pytest.fixture
def columnar() -> Iterator[list[bool]]:
    """Whether each batch prepared in this process took the columnar path (True) or was
    handed over to the row path (False)."""
    from parallel_batch.core import prepare_columns as module

    taken: list[bool] = []
    original = module.prepare_columns

    def counted(*args: object, **kwargs: object) -> object:
        prepared = original(*args, **kwargs)  # type: ignore[arg-type]
        taken.append(prepared is not None)
        return prepared

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "prepare_columns", counted)
        yield taken


@pytest.fixture
def small_batches() -> Iterator[None]:
    """Batches of ``batch_rows`` records however few (not at least MIN_BATCH_BYTES), so that
    batch boundaries fall between the records of a chunk many times."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_source, "MIN_BATCH_BYTES", 1)
        yield


@pytest.mark.parametrize(
    ("line_ending", "bom", "chunk_bytes", "workers"),
    [("\r\n", False, 20_000, 0), ("\r\n", True, 5_000, 0), ("\n", True, 20_000, 1)],
    ids=["crlf", "crlf-bom", "lf-bom-pool"],
)
def test_many_chunks_load_exactly_the_good_records(
    pg_url: str,
    pg_conn: psycopg.Connection,
    target: str,
    tmp_path: Path,
    small_batches: None,
    line_ending: str,
    bom: bool,
    chunk_bytes: int,
    workers: int,
    check: TransformSpec,
    columnar: list[bool],
) -> None:
    """Test that 5,000 records in many byte ranges and batches load exactly; bad and duplicate
    ones are dead letters at their true lines (in a worker pool too)."""
    case = customers_csv(
        tmp_path / "customers.csv",
        5_000,
        bad_every=97,
        duplicates=DUPLICATES,
        line_ending=line_ending,
        bom=bom,
    )
    spec = customers_spec(pg_url, case.path, batch_rows=37, transform=check)
    job = plan(pg_url, "many-chunks", spec, chunk_size=chunk_bytes)

    if workers:
        with WorkerPool(workers) as pool:
            summaries = run(pg_url, job, spec, pool=pool)
    else:
        summaries = run(pg_url, job, spec)

    # ~25 or ~100 chunks of a few batches each: with a multi-line note in every third record or
    # so, many planned boundaries land inside quoted fields and move to the next record start.
    assert len(job.plan) > 500_000 // chunk_bytes
    assert all(s.reconciles and not s.skipped for s in summaries)
    kinds = [error_type for error_type, _ in case.dead.values()]
    assert kinds.count("DuplicateKeyError") == 6 and "InvalidEmailError" in kinds
    check_exact(pg_conn, "many-chunks", case)
    assert claims_by_key(pg_conn, "many-chunks")  # 10, 1234... again in later chunks
    if check is CHECK_ARROW and not workers:  # every batch as columns (none is odd enough)
        assert columnar and all(columnar)
    if check is CHECK:
        assert not columnar


def test_unique_ids_in_order_are_claimed_by_ranges_only(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, check: TransformSpec
) -> None:
    """Test that a file of unique ids in order, in chunks side by side, loads exactly with a
    claim per batch and none per record (the job never needs claims by key); the same file with
    one id again near its end needs them, and the first occurrence is the one loaded."""
    case = customers_csv(tmp_path / "customers.csv", 2_000)
    spec = customers_spec(pg_url, case.path, batch_rows=100, transform=check)
    job = plan(pg_url, "ranges", spec, chunks=4)

    summaries = run(pg_url, job, spec, reverse=True)

    assert all(s.reconciles for s in summaries)
    check_exact(pg_conn, "ranges", case)
    assert not claims_by_key(pg_conn, "ranges")

    pg_conn.execute("TRUNCATE demo.customers")
    again = customers_csv(tmp_path / "again.csv", 2_000, duplicates={5: 1990})
    spec = customers_spec(pg_url, again.path, batch_rows=100, transform=check)
    run(pg_url, plan(pg_url, "again", spec, chunks=4), spec, reverse=True)
    check_exact(pg_conn, "again", again)
    assert claims_by_key(pg_conn, "again")


def test_chunks_side_by_side_sharing_ids_load_exactly(
    pg_url: str,
    pg_conn: psycopg.Connection,
    target: str,
    tmp_path: Path,
    small_batches: None,
    check: TransformSpec,
) -> None:
    """Test that chunks committing at the same time, whose ids meet (duplicates of early ids
    near the end, some before their first occurrence), give the exact outcome whatever the
    order of their commits: range claims in flight, the move to key claims, displacement."""
    duplicates = {**dict.fromkeys(range(40, 400, 9)), 2900: 120, 1500: 30, 35: 2950}
    case = customers_csv(tmp_path / "customers.csv", 3_000, duplicates=duplicates)
    spec = customers_spec(pg_url, case.path, batch_rows=40, transform=check)
    for attempt in range(3):
        pg_conn.execute("TRUNCATE demo.customers")
        job = plan(pg_url, f"side-by-side-{attempt}", spec, chunks=4)
        with ThreadPoolExecutor(len(job.plan)) as threads:
            summaries = list(
                threads.map(
                    lambda entry, key=job.job_key: run_chunk(spec, key, entry, conninfo=pg_url),
                    job.plan,
                )
            )
        assert len(summaries) == 4 and all(not s.skipped for s in summaries)
        check_exact(pg_conn, job.job_key, case, any_earlier_duplicate=True)
        assert claims_by_key(pg_conn, job.job_key)


def small_file(tmp_path: Path, records: list[tuple[int, str, str, str]]) -> Path:
    """A customers file of ``(id, name, amount, note)`` records (email ``name@example.com``,
    one timestamp), CRLF line endings."""
    lines = [
        f"{key},{name},{name.lower()}@example.com,{amount},{note},2024-01-01T00:00:00+00:00"
        for key, name, amount, note in records
    ]
    path = tmp_path / "customers.csv"
    path.write_bytes("\r\n".join(["id,name,email,amount,note,created_at", *lines, ""]).encode())
    return path


def claims_by_key(conn: psycopg.Connection, job_key: str) -> bool:
    """Whether the job went over to claiming its keys one by one."""
    row = conn.execute(
        "SELECT claims_by_key FROM parallel_batch.jobs WHERE job_key = %s", (job_key,)
    ).fetchone()
    assert row is not None
    return bool(row[0])


def test_later_chunks_first_still_load_the_first_occurrence(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, check: TransformSpec
) -> None:
    """Test that chunks run in reverse order give the same rows and dead letters (a chunk with
    the first occurrence of a key displaces the later one loaded before it)."""
    case = customers_csv(tmp_path / "customers.csv", 3_000, duplicates=DUPLICATES)
    spec = customers_spec(pg_url, case.path, batch_rows=100, transform=check)
    job = plan(pg_url, "reverse", spec, chunks=6)

    summaries = run(pg_url, job, spec, reverse=True)

    # The third record of 1234 names the second, which it was refused for before a chunk with
    # the first one displaced the second: any earlier record of the id is a true message.
    check_exact(pg_conn, "reverse", case, any_earlier_duplicate=True)
    assert case.rows[4000][1] == "Duplicate 1"  # the record inserted before the original
    assert 388 not in case.rows  # its first record was refused: the later one is a duplicate
    last = summaries[0]  # the last chunk, run first: its duplicates were displaced later
    assert last.rows_failed < totals_of(pg_conn, "reverse", last.chunk_id)[2]


def totals_of(conn: psycopg.Connection, job_key: str, chunk_id: str) -> tuple[int, int, int]:
    """One chunk's rows read, written and failed as stored now."""
    row = conn.execute(
        "SELECT rows_read, rows_written, rows_failed FROM parallel_batch.chunks"
        " WHERE job_key = %s AND chunk_id = %s",
        (job_key, chunk_id),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_rerun_new_job_and_full_refresh(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that a rerun writes nothing, a new job or a full refresh rewrites rows, no duplicates."""
    case = customers_csv(tmp_path / "customers.csv", 2_000, duplicates=SMALL_DUPLICATES)
    spec = customers_spec(pg_url, case.path, batch_rows=250)
    job = plan(pg_url, "first", spec, chunks=3)
    run(pg_url, job, spec)
    check_exact(pg_conn, "first", case)
    versions: dict[int, str] = dict(
        pg_conn.execute("SELECT id, xmin::text FROM demo.customers").fetchall()
    )

    again = run(pg_url, plan(pg_url, "first", spec, chunks=3), spec)

    assert [s.skipped for s in again] == [True] * 3
    assert dict(pg_conn.execute("SELECT id, xmin::text FROM demo.customers")) == versions

    second = plan(pg_url, "second", spec, chunks=5)
    run(pg_url, second, spec)

    check_exact(pg_conn, "second", case)  # the rows already there are not "duplicates"
    rewritten: dict[int, str] = dict(
        pg_conn.execute("SELECT id, xmin::text FROM demo.customers").fetchall()
    )
    assert rewritten.keys() == versions.keys()
    assert all(rewritten[k] != versions[k] for k in versions)

    refreshed = plan(pg_url, "first", spec, chunks=2, full_refresh=True)
    summaries = run(pg_url, refreshed, spec)

    assert [s.skipped for s in summaries] == [False, False]
    assert len(refreshed.plan) == 2
    check_exact(pg_conn, "first", case)
    claims = pg_conn.execute(
        "SELECT (SELECT count(*) FROM parallel_batch.key_claims),"
        " (SELECT count(*) FROM parallel_batch.range_claims)"
    ).fetchone()
    assert claims == (0, 0)  # deleted as each job's last chunk completed


def test_values_the_target_refuses_are_dead_letters(
    pg_url: str,
    pg_conn: psycopg.Connection,
    target: str,
    tmp_path: Path,
    check: TransformSpec,
    columnar: list[bool],
) -> None:
    """Test that out-of-range, over-precise, NUL and constraint-violating values dead-letter alone."""
    pg_conn.execute("ALTER TABLE demo.customers ADD CHECK (amount <> 13.13)")
    path = small_file(
        tmp_path,
        [
            (1, "Ann", "1.00", ""),
            (2, "Bob", "12345678901.00", ""),
            (3, "Cy", "1.005", ""),
            (4, "Di", "1.500", ""),
            (5, "Ed", "2.00", '"a \x00 b"'),
            (6, "Flo", "13.13", ""),
            (7, "Gus", "7.00", ""),
        ],
    )
    spec = customers_spec(pg_url, path, transform=check)
    job = plan(pg_url, "refused", spec, chunks=1)

    (summary,) = run(pg_url, job, spec)

    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (7, 3, 4)
    assert [r[0] for r in target_rows(pg_conn)] == [1, 4, 7]
    found = dead_letters(pg_conn, "refused")
    assert sorted(found) == [3, 4, 6, 7]
    assert found[3] == ("TargetValueError", "amount: out of the range of numeric(12,2)")
    assert found[4][0] == "TargetValueError"
    assert found[4][1].startswith("amount: more than 2 decimal places")
    assert found[6] == (
        "TargetValueError",
        "note: a NUL character, which PostgreSQL text cannot store",
    )
    assert found[7][0] == "CheckViolation"
    assert found[7][1].startswith("the target refused the row: new row for relation")
    payload = pg_conn.execute(
        "SELECT payload FROM parallel_batch.dead_letters WHERE line_number = 6"
    ).fetchone()
    assert payload is not None and payload[0]["note"] == "a \\u0000 b"  # kept, NUL escaped
    if check is CHECK_ARROW:  # values the target refuses: the batch goes the row path's way
        assert columnar and not any(columnar)


def test_a_refused_record_displaced_by_an_earlier_one_is_counted_once(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, check: TransformSpec
) -> None:
    """Test that a record the target refused, whose id an earlier chunk holds too, stays one
    failure of its chunk when the earlier chunk (run after it) takes the id over: its claim
    says it failed, so its chunk's written count does not move."""
    pg_conn.execute("ALTER TABLE demo.customers ADD CHECK (amount <> 13.13)")
    path = small_file(
        tmp_path,
        [
            (1, "Ann", "1.00", ""),
            (6, "Bob", "2.00", ""),
            (3, "Cy", "3.00", ""),
            (4, "Di", "4.00", ""),
            (6, "Ed", "13.13", ""),
            (7, "Flo", "7.00", ""),
        ],
    )
    spec = customers_spec(pg_url, path, transform=check)
    job = plan(pg_url, "refused-twice", spec, chunks=2)

    summaries = run(pg_url, job, spec, reverse=True)  # the chunk with the refused record first

    assert sorted(s.rows_read for s in summaries) == [3, 3]
    assert [r[0] for r in target_rows(pg_conn)] == [1, 3, 4, 6, 7]
    assert dict(pg_conn.execute("SELECT id, amount::text FROM demo.customers"))[6] == "2.00"
    assert list(dead_letters(pg_conn, "refused-twice")) == [6]
    totals = pg_conn.execute(
        "SELECT sum(rows_read)::int, sum(rows_written)::int, sum(rows_failed)::int"
        " FROM parallel_batch.chunks WHERE job_key = 'refused-twice'"
    ).fetchone()
    assert totals == (6, 5, 1)


def test_bad_files_and_changed_files_are_configuration_errors(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that a missing file, a header naming no target column and a file changed since
    planning are refused, and that the job stores the spec it planned."""
    with pytest.raises(ConfigurationError, match="does not exist"):
        customers_spec(pg_url, tmp_path / "nope.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,name,mail\n1,a,b\n")
    with pytest.raises(
        ConfigurationError, match=r"Column 'mail' does not exist in table 'demo\.customers'"
    ):
        customers_spec(pg_url, wrong)

    case = customers_csv(tmp_path / "customers.csv", 100)
    spec = customers_spec(pg_url, case.path)
    job = plan(pg_url, "changed", spec, chunks=2)
    stored = stored_spec(job, source_from_dict)
    assert stored == spec
    assert getattr(stored.source, "identity", None) == FileIdentity.of(case.path)
    with case.path.open("ab") as out:
        out.write(b"101,Late,late@example.com,1.00,,2024-01-01T00:00:00+00:00\r\n")

    with pytest.raises(ConfigurationError, match="changed after its chunks were planned"):
        run(pg_url, job, stored)
    assert target_rows(pg_conn) == []
    mapped = typed_csv_source(pg_conn, str(case.path), target, columns={"note": "segment"})
    with pytest.raises(ConfigurationError, match="was created with another source;"):
        plan(pg_url, "changed", dataclasses.replace(spec, source=mapped.planned()), chunks=2)


def test_header_only_file_plans_a_completed_empty_job(
    pg_url: str, target: str, tmp_path: Path
) -> None:
    """Test that a file with only its header gives a job with no chunks, already completed."""
    path = tmp_path / "empty.csv"
    path.write_bytes(b"\xef\xbb\xbfid,name,email,amount,note,created_at\r\n")

    job = plan(pg_url, "empty", customers_spec(pg_url, path), chunks=4)

    assert (job.plan, job.status, job.rows_total) == ([], "completed", 0)


def test_blank_lines_and_no_final_newline(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path, check: TransformSpec
) -> None:
    """Test that blank lines are skipped, a last record without line ending loads, and an email
    without @ is refused by the transform at its true line."""
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
    spec = customers_spec(pg_url, path, batch_rows=2, transform=check)
    job = plan(pg_url, "ragged", spec, chunks=3)

    summaries = run(pg_url, job, spec)

    assert sum(s.rows_read for s in summaries) == 4
    assert [(r[0], r[4]) for r in target_rows(pg_conn)] == [
        (1, None),
        (2, "two\n\nlines"),
        (4, None),
    ]
    assert dead_letters(pg_conn, "ragged") == {
        8: ("InvalidEmailError", "email: email address without @")
    }
