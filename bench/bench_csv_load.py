"""The CSV load (``files.load.run_csv_chunk``) against a hand-written loader, in records/s.

(a) Baseline: what a user would write in one process: ``csv.reader`` over the file, the same
    conversions per row in a try/except (bad rows skipped: no line numbers, no dead-letter
    table, no duplicate check), binary COPY into the same table, one transaction per 5,000 rows,
    no checkpoint.
(b) Ours, the whole file as ONE chunk in this process: staged pipeline, dead letters with line
    numbers, duplicate-id claims, a checkpoint per batch.
(c) Ours, the file in CHUNKS chunks run by CHUNKS processes at once (what mapped Airflow tasks
    do, without Airflow's per-task overhead). Goal: at least PARALLEL_GOAL x the baseline.
(d) Enrichment: RECORDS_ENRICHED records through a local HTTP service (the tests' one, in a
    process of its own) answering in SERVICE_DELAY s, at most ENRICH_CONCURRENCY requests in
    flight, against one request at a time (the rate of a loop of blocking requests, timed on
    RECORDS_ONE_AT_A_TIME records). Goal: at least ENRICH_GOAL x that.

Each rate is the best of REPEATS runs (2 shared cores). Runs on the embedded server (or
PARALLEL_BATCH_DATABASE_URL) in a database of its own, dropped at the end.
"""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.common import Result
from parallel_batch.core.csv_job import plan_csv_job
from parallel_batch.core.csv_load import run_csv_chunk
from parallel_batch.core.csv_spec import CsvLoadSpec
from parallel_batch.core.enrich import EnrichConfig
from parallel_batch.demo.csv_file import write_customers_csv
from parallel_batch.demo.customers import CUSTOMERS_COLUMNS, create_customers
from parallel_batch.local.config import database_url
from parallel_batch.sources.csv.planner import FileChunk
from parallel_batch.store.checkpoints import CheckpointStore

SUITE = "csv_load"
RECORDS = 200_000
BAD_EVERY = 100
CHUNKS = 2
REPEATS = 2
BASELINE_BATCH = 5_000
PARALLEL_GOAL = 1.0
RECORDS_ENRICHED = 5_000
RECORDS_ONE_AT_A_TIME = 200
SERVICE_DELAY = 0.05
ENRICH_CONCURRENCY = 50
ENRICH_GOAL = 10.0
ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def _database() -> Iterator[str]:
    server = database_url()
    name = f"pbbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server)
    params["dbname"] = name
    try:
        yield make_conninfo("", **params)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        create_customers(conn)
        conn.execute("TRUNCATE demo.customers")
        conn.execute("CHECKPOINT")


def _convert(fields: list[str]) -> tuple[Any, ...]:
    record_id, name, email, amount, note, created_at = fields
    if "@" not in email:
        raise ValueError("email")
    stamp = dt.datetime.fromisoformat(created_at)
    return (
        int(record_id),
        name or None,
        email,
        Decimal(amount),
        note or None,
        stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC),
        None,
    )


def _baseline(url: str, path: Path) -> int:
    """The hand-written loader; returns the records loaded."""
    loaded = 0
    copy_sql = sql.SQL("COPY demo.customers ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.SQL(", ").join(map(sql.Identifier, CUSTOMERS_COLUMNS))
    )
    with (
        psycopg.connect(url) as conn,
        open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as stream,
    ):
        reader = csv.reader(stream)
        next(reader)
        batch: list[tuple[Any, ...]] = []

        def flush() -> None:
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types(["int8", "text", "text", "numeric", "text", "timestamptz", "text"])
                for row in batch:
                    copy.write_row(row)
            conn.commit()

        for fields in reader:
            try:
                if len(fields) != 6:
                    raise ValueError("fields")
                row = _convert(fields)
                row[1] and row[1].encode("utf-8")  # a surrogate (bad byte) fails here
            except (ValueError, ArithmeticError, UnicodeEncodeError):
                continue
            batch.append(row)
            if len(batch) >= BASELINE_BATCH:
                flush()
                loaded += len(batch)
                batch = []
        if batch:
            flush()
            loaded += len(batch)
    return loaded


def _plan(url: str, job_key: str, spec: CsvLoadSpec, chunks: int) -> list[dict[str, Any]]:
    with CheckpointStore.connect(url) as store:
        return plan_csv_job(store, job_key, spec, chunks=chunks).plan


def _one_chunk(url: str, job_key: str, entry: dict[str, Any], spec: dict[str, Any]) -> int:
    summary = run_csv_chunk(url, job_key, FileChunk.from_dict(entry), CsvLoadSpec.from_dict(spec))
    return summary.rows_read


def _ours(url: str, path: Path, chunks: int, pool: ProcessPoolExecutor | None) -> float:
    spec = CsvLoadSpec(str(path), "demo.customers")
    job_key = f"bench-{uuid.uuid4().hex[:8]}"
    entries = _plan(url, job_key, spec, chunks)
    started = time.perf_counter()
    if pool is None:
        read = sum(_one_chunk(url, job_key, e, spec.to_dict()) for e in entries)
    else:
        futures = [pool.submit(_one_chunk, url, job_key, e, spec.to_dict()) for e in entries]
        read = sum(f.result() for f in futures)
    seconds = time.perf_counter() - started
    assert read == RECORDS, read
    return seconds


def _best(run: Any) -> float:
    return min(run() for _ in range(REPEATS))


_SERVER = """
import sys
from tests.integration.segment_server import SegmentServer
with SegmentServer(delay=float(sys.argv[1])) as server:
    print(server.url, flush=True)
    sys.stdin.read()
"""


@contextmanager
def _segment_service(delay: float) -> Iterator[str]:
    """The test segment service in a process of its own (not competing for this one's GIL)."""
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


def _enrich_rate(url: str, path: Path, service: str, concurrency: int, records: int) -> float:
    _reset(url)
    job_key = f"bench-enrich-{uuid.uuid4().hex[:8]}"
    (entry,) = _plan(url, job_key, CsvLoadSpec(str(path), "demo.customers"), 1)
    started = time.perf_counter()
    summary = run_csv_chunk(
        url,
        job_key,
        FileChunk.from_dict(entry),
        CsvLoadSpec(str(path), "demo.customers"),
        enrich=EnrichConfig(service, concurrency=concurrency),
    )
    assert summary.rows_written == records, summary
    return records / (time.perf_counter() - started)


def _enrichment(url: str, tmp: Path) -> list[Result]:
    rates: dict[int, float] = {}
    with _segment_service(SERVICE_DELAY) as service:
        for concurrency, records in (
            (1, RECORDS_ONE_AT_A_TIME),
            (ENRICH_CONCURRENCY, RECORDS_ENRICHED),
        ):
            path = tmp / f"enrich-{records}.csv"
            write_customers_csv(path, records)
            rates[concurrency] = _enrich_rate(url, path, service, concurrency, records)
    ratio = rates[ENRICH_CONCURRENCY] / rates[1]
    return [
        Result(
            SUITE,
            f"enrich, {ENRICH_CONCURRENCY} in flight, {SERVICE_DELAY * 1000:.0f} ms service",
            rates[ENRICH_CONCURRENCY],
            "records/s",
            baseline=rates[1],
            goal=f">= {ENRICH_GOAL:g}x",
            passed=ratio >= ENRICH_GOAL,
            extra={"ratio": round(ratio, 2)},
        )
    ]


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp_dir, _database() as url:
        tmp = Path(tmp_dir)
        path = tmp / "customers.csv"
        stats = write_customers_csv(path, RECORDS, bad_every=BAD_EVERY)

        def baseline() -> float:
            _reset(url)
            started = time.perf_counter()
            assert _baseline(url, path) == stats.good_rows
            return time.perf_counter() - started

        def single() -> float:
            _reset(url)
            return _ours(url, path, 1, None)

        with ProcessPoolExecutor(max_workers=CHUNKS) as pool:
            pool.submit(int).result()  # start the workers before the clock does

            def parallel() -> float:
                _reset(url)
                return _ours(url, path, CHUNKS, pool)

            base_s = _best(baseline)
            single_s = _best(single)
            parallel_s = _best(parallel)
        base_rate = RECORDS / base_s
        results = [
            Result(SUITE, "hand-written loader (baseline)", base_rate, "records/s"),
            Result(
                SUITE,
                "run_csv_chunk, 1 chunk",
                RECORDS / single_s,
                "records/s",
                baseline=base_rate,
                extra={"ratio": round(base_s / single_s, 2)},
            ),
            Result(
                SUITE,
                f"run_csv_chunk, {CHUNKS} chunks in {CHUNKS} processes",
                RECORDS / parallel_s,
                "records/s",
                baseline=base_rate,
                goal=f">= {PARALLEL_GOAL:g}x",
                passed=base_s / parallel_s >= PARALLEL_GOAL,
                extra={"ratio": round(base_s / parallel_s, 2)},
            ),
        ]
        results.extend(_enrichment(url, tmp))
    for r in results:
        print(f"   {r.name}: {r.value:,.0f} {r.unit} {r.extra}", flush=True)
    return results
