"""The CSV job (what ``parallel_batch_csv`` runs per chunk) against a hand-written loader.

The demo customers file of RECORDS records (every BAD_EVERY-th malformed) into an emptied
``demo.customers``, each measured program in a process of its own::

    bench (this process)     writes the file, plans a job per run, checks target and letters
      |-- child: baseline    csv.reader -> convert + check each row -> binary COPY, BASELINE_BATCH
      |                      rows per transaction (bad rows skipped: no line numbers, no
      |                      dead-letter table, no checkpoint)
      |-- child x n: ours    core.runner.run_chunk over the job's chunks nobody holds, a
      |                      WorkerPool(1) each, as a chunk task runs them
      '-- child: enrich      the async kind against a local HTTP service

(a) Baseline: the checks the job makes, written by hand: the field count, bytes that are not
    UTF-8, an id that is an integer in bigint's range and seen for the first time, an email
    with ``@`` (the demo's ``include.transforms.customers:check_batch``), a decimal amount that fits
    numeric(12,2) unrounded, an ISO-8601 timestamp (no offset: UTC), no NUL in text.
(b) Ours, the whole file as ONE chunk in one process: the CSV source typed from the target's
    catalog (``typed_csv_source``), the ``check_batch`` transform (batch kind, retrying the errors the
    DAG names), duplicate-id claims (``dedup_key="id"``), every bad record a dead letter with
    its line and reason, a checkpoint per batch of BATCH_ROWS (the DAG's default).
(c) Ours, the file in CHUNKS chunks run by CHUNKS processes at once (mapped Airflow tasks,
    without Airflow's per-task overhead). Goal: at least PARALLEL_GOAL x the baseline.
    The file's ids are in order, so its claims are one row per batch (claims by range; the run
    fails if the job went over to claims by key). Then (c) again with the job set to claim by
    key from the start (one claim row per record, as before schema version 4) and without
    duplicate-key claims (``dedup_key=None``; the file has no duplicate ids, so the outcome is
    the same): no goal, they show what the claims cost.
(d) Enrichment: RECORDS_ENRICHED records through ``include.transforms.customers:enrich`` (async
    kind) against the tests' segment service (a process of its own) answering in SERVICE_DELAY
    s, at most ENRICH_CONCURRENCY requests in flight, against one at a time (timed on
    RECORDS_ONE_AT_A_TIME records). Goal: at least ENRICH_GOAL x that.

Each rate is the best of REPEATS runs (2 shared cores; the load average is recorded), from the
first child's start on its chunks to the last one's end (interpreter start-up left out). Sizes
scale with PB_BENCH_SCALE.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    ROOT,
    Result,
    child_main,
    child_result,
    load_average,
    run_child,
    scaled,
    scratch_database,
    spawn_child,
    vm_hwm_mib,
)
from parallel_batch.demo.csv_file import write_customers_csv
from parallel_batch.demo.tables import CUSTOMERS_TABLE, create_customers

SUITE = "csv_load"
MODULE = "bench.bench_csv_load"
RECORDS = scaled(200_000, 1_000)
BAD_EVERY = 100
CHUNKS = 2
REPEATS = 2
# The CSV DAG's rows per batch (airflow/groups.py DEFAULT_CSV_BATCH_ROWS), stated here so that
# the bench does not import Airflow; the hand-written loader commits as often.
BATCH_ROWS = 10_000
BASELINE_BATCH = BATCH_ROWS
PARALLEL_GOAL = 1.0
RECORDS_ENRICHED = scaled(5_000, 500)
RECORDS_ONE_AT_A_TIME = 200
SERVICE_DELAY = 0.05
ENRICH_CONCURRENCY = 50
ENRICH_GOAL = 10.0
CHECK = "include.transforms.customers:check_batch"
ENRICH = "include.transforms.customers:enrich"
RETRY_ON = [
    "include.transforms.customers:EnrichmentServerError",
    "httpx:TimeoutException",
    "httpx:NetworkError",
    "httpx:RemoteProtocolError",
]
COLUMNS = ("id", "name", "email", "amount", "note", "created_at")
COPY_TYPES = ["int8", "text", "text", "numeric", "text", "timestamptz"]
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")  # as include/transforms/customers.py checks it
_BIGINT = 2**63
_AMOUNT_LIMIT = Decimal(10) ** 10  # numeric(12,2): 10 digits before the point, 2 after
_CENT = Decimal("0.01")


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        create_customers(conn)
        conn.execute("TRUNCATE demo.customers")
        conn.execute("CHECKPOINT")


def _outcome(url: str, job_key: str | None = None) -> tuple[int, int]:
    """Rows in the target, and the job's dead letters."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM demo.customers").fetchone()
        letters = None
        if job_key is not None:
            letters = conn.execute(
                "SELECT count(*) FROM parallel_batch.dead_letters WHERE job_key = %s", (job_key,)
            ).fetchone()
    return (rows[0] if rows else 0), (letters[0] if letters else 0)


# ---------------------------------------------------------------- (a) the hand-written loader


def _convert(fields: list[str], seen: set[int]) -> tuple[Any, ...]:
    """One record's values, or ValueError / ArithmeticError / UnicodeEncodeError for a bad one."""
    record_id, name, email, amount, note, created_at = fields
    key = int(record_id)
    if not -_BIGINT <= key < _BIGINT or key in seen:
        raise ValueError("id")
    if email and _EMAIL.fullmatch(email) is None:
        raise ValueError("email")
    money = Decimal(amount) if amount else None
    if money is not None and (
        not money.is_finite() or abs(money) >= _AMOUNT_LIMIT or money != money.quantize(_CENT)
    ):
        raise ValueError("amount")
    stamp = dt.datetime.fromisoformat(created_at) if created_at else None
    if stamp is not None and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    for text in (name, email, note):
        if "\x00" in text:
            raise ValueError("NUL")
        text.encode("utf-8")  # a surrogate (a byte that is not UTF-8) fails here
    seen.add(key)
    return (key, name or None, email or None, money, note or None, stamp)


def _child_baseline(url: str, path: str) -> dict[str, Any]:
    copy_sql = f"COPY demo.customers ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    loaded = 0
    seen: set[int] = set()
    started = time.time()
    with (
        psycopg.connect(url) as conn,
        open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as stream,
    ):
        reader = csv.reader(stream)
        next(reader)
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types(COPY_TYPES)
                for row in batch:
                    copy.write_row(row)
            conn.commit()

        for fields in reader:
            try:
                if len(fields) != len(COLUMNS):
                    raise ValueError("fields")
                batch.append(_convert(fields, seen))
            except (ValueError, ArithmeticError, InvalidOperation, UnicodeEncodeError):
                continue
            if len(batch) >= BASELINE_BATCH:
                flush()
                loaded += len(batch)
                batch = []
        if batch:
            flush()
            loaded += len(batch)
    return {"rows": loaded, "started": started, "ended": time.time(), "peak_rss_mib": vm_hwm_mib()}


# ---------------------------------------------------------------- (b) (c) (d) the job


def _spec(url: str, path: str, transform: Any, dedup: bool = True) -> Any:
    """The CSV DAG's job: typed from the target, first occurrence of an id winning (without
    ``dedup``: no duplicate-key claims, the diagnostic run)."""
    from parallel_batch.core.job import JobSpec
    from parallel_batch.core.planning import resolve_columns
    from parallel_batch.sources.csv.typed import typed_csv_source

    with psycopg.connect(url, autocommit=True) as conn:
        source = typed_csv_source(conn, path, CUSTOMERS_TABLE, key_column="id").planned()
        key = "id" if dedup else None
        spec = JobSpec(source, CUSTOMERS_TABLE, transform, batch_rows=BATCH_ROWS, dedup_key=key)
        return resolve_columns(conn, spec, source.columns)


def _plan(url: str, path: str, chunks: int, transform: Any, dedup: bool = True) -> str:
    from parallel_batch.core.planning import plan_job
    from parallel_batch.sources import source_from_dict
    from parallel_batch.store.checkpoints import CheckpointStore

    job_key = f"bench-csv-{uuid.uuid4().hex[:8]}"
    with CheckpointStore.connect(url) as store:
        store.ensure_schema()
        plan_job(
            store,
            job_key,
            _spec(url, path, transform, dedup),
            source_conninfo=None,
            make_source=source_from_dict,
            chunks=chunks,
            max_chunks=1024,
        )
    return job_key


def _child_chunks(url: str, job_key: str) -> dict[str, Any]:
    """Run every chunk of the job nobody else holds, with its stored spec, as a chunk task does
    (a WorkerPool(1) for a sync kind, none for an async one)."""
    from parallel_batch.core.planning import stored_spec
    from parallel_batch.core.runner import run_chunk
    from parallel_batch.engine.pool import WorkerPool
    from parallel_batch.exceptions import ChunkBusyError
    from parallel_batch.sources import source_from_dict
    from parallel_batch.store.checkpoints import CheckpointStore

    with CheckpointStore.connect(url) as store:
        job = store.get_job(job_key)
    assert job is not None
    spec = stored_spec(job, source_from_dict)
    read = written = failed = 0
    reconciled = True
    started = time.time()
    with WorkerPool(1) if spec.transform.kind != "async" else _no_pool() as pool:
        for entry in job.plan:
            try:
                summary = run_chunk(spec, job_key, entry, conninfo=url, pool=pool, wait_timeout=0)
            except ChunkBusyError:
                continue  # another process has it
            read += summary.rows_this_attempt
            written += summary.rows_written
            failed += summary.rows_failed
            reconciled = reconciled and summary.reconciles
    return {"rows": read, "rows_written": written, "rows_failed": failed,
            "reconciled": reconciled, "started": started, "ended": time.time(),
            "peak_rss_mib": vm_hwm_mib()}  # fmt: skip


@contextmanager
def _no_pool() -> Iterator[None]:
    yield None


def _ours(
    url: str,
    path: str,
    chunks: int,
    transform: Any,
    expected: tuple[int, int],
    dedup: bool = True,
    by_key: bool = False,
) -> float:
    """Plan a job, run it in ``chunks`` children side by side; check it; return its seconds.

    :param by_key: claim keys one by one from the start (else by ranges, as the file allows).
    """
    _reset(url)
    job_key = _plan(url, path, chunks, transform, dedup)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE parallel_batch.jobs SET claims_by_key = %s WHERE job_key = %s",
            (by_key, job_key),
        )
    children = [spawn_child(MODULE, "chunks", url, job_key) for _ in range(chunks)]
    found = [child_result(child) for child in children]
    seconds = max(f["ended"] for f in found) - min(f["started"] for f in found)
    outcome = _outcome(url, job_key)
    if outcome != expected or not all(f["reconciled"] for f in found):
        raise RuntimeError(f"job {job_key}: (rows, dead letters) {outcome}, expected {expected}")
    with psycopg.connect(url) as conn:
        mode = conn.execute(
            "SELECT claims_by_key FROM parallel_batch.jobs WHERE job_key = %s", (job_key,)
        ).fetchone()
    if dedup and mode != (by_key,):
        raise RuntimeError(f"job {job_key} claimed by key: {mode}, expected {by_key}")
    return seconds


# ---------------------------------------------------------------- (d) enrichment service

_SERVER = """
import sys
from tests.helpers.segment_server import SegmentServer
with SegmentServer(delay=float(sys.argv[1])) as server:
    print(server.url, flush=True)
    sys.stdin.read()
"""


@contextmanager
def _segment_service(delay: float) -> Iterator[str]:
    """The tests' segment service in a process of its own (not competing for a job's GIL)."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


def _enrichment(url: str, tmp: Path) -> Result:
    from parallel_batch.core.transforms import TransformSpec, retry_policy

    rates: dict[int, float] = {}
    with _segment_service(SERVICE_DELAY) as service:
        for concurrency, records in (
            (1, RECORDS_ONE_AT_A_TIME),
            (ENRICH_CONCURRENCY, RECORDS_ENRICHED),
        ):
            path = tmp / f"enrich-{records}.csv"
            write_customers_csv(path, records)
            transform = TransformSpec(
                ENRICH, "async", concurrency, retry_policy(RETRY_ON, "async"), {"url": service}
            )
            seconds = _ours(url, str(path), 1, transform, (records, 0))
            rates[concurrency] = records / seconds
            print(f"   enrich, {concurrency} in flight: {rates[concurrency]:,.0f} records/s")
    ratio = rates[ENRICH_CONCURRENCY] / rates[1]
    return Result(
        SUITE,
        f"enrich, {ENRICH_CONCURRENCY} in flight, {SERVICE_DELAY * 1000:.0f} ms service",
        rates[ENRICH_CONCURRENCY],
        "records/s",
        baseline=rates[1],
        goal=f">= {ENRICH_GOAL:g}x",
        passed=ratio >= ENRICH_GOAL,
        extra={
            "ratio": round(ratio, 2),
            "records": RECORDS_ENRICHED,
            "load_average": load_average(),
        },
    )


# ---------------------------------------------------------------- entry points


def _child(args: list[str]) -> dict[str, Any]:
    mode, url, arg = args
    if mode == "baseline":
        return _child_baseline(url, arg)
    if mode == "chunks":
        return _child_chunks(url, arg)
    raise SystemExit(f"unknown child mode {mode!r}")


def run() -> list[Result]:
    from parallel_batch.core.transforms import TransformSpec, retry_policy

    # As parallel_batch_csv without enrich_url: its retry names the enrichment's errors only,
    # so a refused email is not retried
    check = TransformSpec(CHECK, "batch", retry=retry_policy(RETRY_ON, "batch"))
    with tempfile.TemporaryDirectory() as tmp_dir, scratch_database("pb_bench_csv") as (url, _):
        tmp = Path(tmp_dir)
        path = str(tmp / "customers.csv")
        stats = write_customers_csv(path, RECORDS, bad_every=BAD_EVERY)
        expected = (stats.good_rows, RECORDS - stats.good_rows)
        best: dict[str, float] = {}
        loads: dict[str, float] = {}
        for repeat in range(REPEATS):
            order = ["baseline", "1 chunk", "parallel", "by key", "no claims"]
            for name in order if repeat % 2 == 0 else reversed(order):
                if name == "baseline":
                    _reset(url)
                    found = run_child(MODULE, "baseline", url, path)
                    if found["rows"] != stats.good_rows or _outcome(url)[0] != stats.good_rows:
                        raise RuntimeError(f"baseline loaded {found['rows']} rows")
                    seconds = found["ended"] - found["started"]
                else:
                    chunks = 1 if name == "1 chunk" else CHUNKS
                    dedup = name != "no claims"
                    seconds = _ours(url, path, chunks, check, expected, dedup, name == "by key")
                best[name] = min(best.get(name, seconds), seconds)
                loads[name] = load_average()
                print(f"   {name:<9} {RECORDS / seconds:>9,.0f} records/s", flush=True)
        base, single, parallel = best["baseline"], best["1 chunk"], best["parallel"]
        unclaimed, by_key = best["no claims"], best["by key"]
        extra = {"records": RECORDS, "bad_every": BAD_EVERY, "batch_rows": BATCH_ROWS,
                 "load_average": loads}  # fmt: skip
        results = [
            Result(SUITE, "hand-written loader (baseline)", RECORDS / base, "records/s",
                   extra=extra),
            Result(SUITE, "CSV job, 1 chunk, WorkerPool(1)", RECORDS / single, "records/s",
                   baseline=RECORDS / base, extra={**extra, "ratio": round(base / single, 2)}),
            Result(SUITE, f"CSV job, {CHUNKS} chunks in {CHUNKS} processes", RECORDS / parallel,
                   "records/s", baseline=RECORDS / base, goal=f">= {PARALLEL_GOAL:g}x",
                   passed=base / parallel >= PARALLEL_GOAL,
                   extra={**extra, "ratio": round(base / parallel, 2)}),
            Result(SUITE, "  the same claiming key by key", RECORDS / by_key,
                   "records/s", baseline=RECORDS / base,
                   extra={**extra, "ratio": round(base / by_key, 2),
                          "why": "diagnostic: a claim row per record (before schema version 4)"}),
            Result(SUITE, "  the same without duplicate-key claims", RECORDS / unclaimed,
                   "records/s", baseline=RECORDS / base,
                   extra={**extra, "ratio": round(base / unclaimed, 2),
                          "why": "diagnostic: what the claims cost (the file has no duplicates)"}),
        ]  # fmt: skip
        results.append(_enrichment(url, tmp))
    return results


if __name__ == "__main__":
    child_main(MODULE, _child)
