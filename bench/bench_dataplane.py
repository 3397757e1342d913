"""The data plane: reader + writer against raw COPY, the reader variants, the planner at 10M rows.

(a) Round trip of ``demo.events`` (ROUND_TRIP_ROWS rows, 5 columns incl. numeric and
    timestamptz) into an empty copy of it with a primary key, in this process:

    - ours: what the runner does in process, without its checkpoint: each batch planned as a
      key range (``RangeReader.ranges``), read, identity-transformed and encoded for the target
      (``batch_work.prepare_batch``) on a thread one batch ahead (``ReadAhead``), while this
      thread writes the previous one as bytes with ``write_rows`` (default "auto" mode) and
      commits; DEFAULT_BATCH_ROWS rows at a time, TimeZone=UTC;
    - ours, rows: the earlier path, ``read_batches`` -> identity -> ``write_rows`` of Python
      rows (psycopg encodes each row in the writing process), in the server's TimeZone;
    - baseline "decoded": one binary ``COPY ... TO STDOUT`` with ``set_types`` -> ``rows()`` ->
      ``write_row`` into one binary ``COPY ... FROM STDIN``: the least a hand-written program
      that can look at the values does, in one transaction;
    - baseline "raw bytes": the same two COPYs passing the undecoded bytes through (no program
      can transform rows this way: it is the ceiling).

    Goal: ours >= 0.8x the baseline's rows/s, against each baseline. Ours and raw run ROUNDS
    times, interleaved, best kept (the 2 cores are shared with other work); the others once.
    Each run also reports its CPU per row (this process + its two server backends), which other
    load on the machine hardly moves.

(b) The reader variants the reader was chosen from, read-only, READER_ROWS rows in batches of
    DEFAULT_BATCH_ROWS: plain SELECT with keyset pagination (text / binary results), a
    server-side cursor re-opened per batch, a binary ``COPY (SELECT ... LIMIT n)`` per batch, and
    the runner's key ranges (a boundary scan, then the range's rows, TimeZone=UTC).

(c) The planner on PLANNER_SIZES rows (skewed bigint keys, 90% of them in 1% of the key space):
    1024 chunks without a filter (keyset jumps) and with a filter selecting a third of the rows
    (window query), each size in its own subprocess for its peak RSS. Goal: peak RSS flat in
    the table's size (10M within MEMORY_SLACK_MIB of 1M).

Runs on the embedded server (or PARALLEL_BATCH_DATABASE_URL) in a database of its own, dropped
at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.common import Result
from parallel_batch.core.batch_work import BatchWork, connect_reader, prepare_batch
from parallel_batch.core.row_isolation import DEFAULT_RETRY
from parallel_batch.core.table_job import DEFAULT_BATCH_ROWS
from parallel_batch.demo import events as demo
from parallel_batch.engine.readahead import ReadAhead
from parallel_batch.local.config import database_url
from parallel_batch.sources.table.planner import RowFilter, TableChunk, plan_table_chunks
from parallel_batch.sources.table.ranges import RangeReader
from parallel_batch.sources.table.reader import read_batches
from parallel_batch.store.writer import copy_format, write_rows

SUITE = "dataplane"
ROUND_TRIP_ROWS = 2_000_000
READER_ROWS = 200_000
PLANNER_SIZES = (1_000_000, 10_000_000)
PLAN_CHUNKS = 1024
ROUNDS = 2
# Round-trip variants measured in the first round only, to keep the module near 3 minutes: the
# decoded baseline is the slowest by far (psycopg's COPY TO hands out one row per call).
ONCE = frozenset({"decoded", "ours_rows"})
RATIO_GOAL = 0.8
MEMORY_SLACK_MIB = 10.0
ROOT = Path(__file__).resolve().parents[1]
SOURCE = "demo.events"
TARGET = "public.round_trip"
COLUMNS = demo.EVENTS_COLUMNS
UTC_SESSION = "-c TimeZone=UTC"
WHOLE_TABLE = TableChunk(None, None, 0)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def _database() -> Iterator[str]:
    server = database_url()
    name = f"pb_bench_dataplane_{uuid.uuid4().hex[:8]}"
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


class Run(NamedTuple):
    """One measured run: rows/s, and CPU per row (this process + its server backends)."""

    rate: float
    cpu_us: float


class _Meter:
    """Wall and CPU time of a run: this process's CPU plus its connections' backends' (read from
    /proc when the server is local; background writers and checkpoints are not included). CPU
    per row hardly moves with other load on the machine, where rows/s does."""

    def __init__(self, *conns: psycopg.Connection) -> None:
        self._pids = [c.info.backend_pid for c in conns]
        self._cpu = self._cpu_now()
        self._wall = time.perf_counter()

    def _cpu_now(self) -> float:
        total = time.process_time()
        for pid in self._pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        return total

    def done(self, rows: int) -> Run:
        wall = time.perf_counter() - self._wall
        return Run(rows / wall, (self._cpu_now() - self._cpu) * 1e6 / max(rows, 1))


# ---------------------------------------------------------------- (a) round trip


def _reset_target(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TARGET}")
        conn.execute(f"CREATE TABLE {TARGET} (LIKE {SOURCE} INCLUDING ALL)")
        conn.execute("CHECKPOINT")  # each run starts without the previous one's dirty pages


def _check_target(url: str, rows: int) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TARGET}").fetchone()
    if row is None or row[0] != rows:
        raise RuntimeError(f"round trip wrote {row} rows, expected {rows}")


def _identity(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return rows


def _ours(url: str) -> Run:
    with (
        connect_reader(url, application_name="bench reader") as reader_conn,
        psycopg.connect(url) as writer,
    ):
        meter = _Meter(reader_conn, writer)
        reader = RangeReader.build(reader_conn, SOURCE, COLUMNS, "id", chunk=WHOLE_TABLE)
        work = BatchWork(
            None, reader, _identity, DEFAULT_RETRY, copy_format(writer, TARGET, COLUMNS)
        )
        rows = 0
        prepared = (
            prepare_batch(work, reader_conn, batch)
            for batch in reader.ranges(reader_conn, None, DEFAULT_BATCH_ROWS)
        )
        with ReadAhead(prepared, depth=1) as ahead:
            for batch in ahead:
                rows += write_rows(writer, TARGET, COLUMNS, batch.data)
                writer.commit()
        return meter.done(rows)


def _ours_rows(url: str, options: str = "") -> Run:
    with (
        psycopg.connect(url, autocommit=True, options=options) as reader,
        psycopg.connect(url, options=options) as writer,
    ):
        meter = _Meter(reader, writer)
        rows = 0
        for batch in read_batches(
            reader,
            SOURCE,
            COLUMNS,
            "id",
            chunk=WHOLE_TABLE,
            after_key=None,
            batch_rows=DEFAULT_BATCH_ROWS,
        ):
            rows += write_rows(writer, TARGET, COLUMNS, batch)  # the identity transform
            writer.commit()
        return meter.done(rows)


def _copy_round_trip(url: str, decoded: bool) -> Run:
    cols = ", ".join(COLUMNS)
    types = ["int8", "int4", "text", "numeric", "timestamptz"]
    with psycopg.connect(url) as source, psycopg.connect(url) as target:
        meter = _Meter(source, target)
        rows = 0
        with (
            source.cursor().copy(
                f"COPY (SELECT {cols} FROM {SOURCE}) TO STDOUT (FORMAT BINARY)"
            ) as out,
            target.cursor().copy(f"COPY {TARGET} ({cols}) FROM STDIN (FORMAT BINARY)") as into,
        ):
            if decoded:
                out.set_types(types)
                into.set_types(types)
                for row in out.rows():
                    into.write_row(row)
                    rows += 1
            else:
                for data in out:
                    into.write(data)
                rows = ROUND_TRIP_ROWS
        target.commit()
        return meter.done(rows)


def _round_trip(url: str) -> list[Result]:
    variants: dict[str, Callable[[], Run]] = {
        "raw": lambda: _copy_round_trip(url, decoded=False),
        "decoded": lambda: _copy_round_trip(url, decoded=True),
        "ours": lambda: _ours(url),
        "ours_rows": lambda: _ours_rows(url),
    }
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for round_number in range(ROUNDS):
        order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
        for name in order:
            if name in ONCE and round_number > 0:
                continue
            _reset_target(url)
            run = variants[name]()
            _check_target(url, ROUND_TRIP_ROWS)
            runs[name].append(run)
            print(
                f"   round trip {name:<9} {run.rate:>10,.0f} rows/s {run.cpu_us:6.2f} us CPU/row",
                flush=True,
            )
    best = {name: max(r.rate for r in found) for name, found in runs.items()}
    cpu = {name: min(r.cpu_us for r in found) for name, found in runs.items()}
    extra = {
        "rows": ROUND_TRIP_ROWS,
        "batch_rows": DEFAULT_BATCH_ROWS,
        "rounds": ROUNDS,
        "cpu_us_per_row": cpu,
    }
    results = [
        Result(
            SUITE,
            f"COPY round trip raw bytes, {ROUND_TRIP_ROWS:,} rows",
            best["raw"],
            "rows/s",
            extra=extra,
        ),
        Result(
            SUITE,
            f"COPY round trip decoded, {ROUND_TRIP_ROWS:,} rows",
            best["decoded"],
            "rows/s",
            extra=extra,
        ),
        Result(
            SUITE, "ranges + prepare + write bytes, identity", best["ours"], "rows/s", extra=extra
        ),
        Result(
            SUITE,
            "read_batches + write_rows identity (rows path)",
            best["ours_rows"],
            "rows/s",
            extra=extra,
        ),
    ]
    results.append(
        Result(
            SUITE,
            "CPU per row: identity (baseline: raw bytes)",
            cpu["ours"],
            "us/row",
            baseline=cpu["raw"],
            extra=extra,
        )
    )
    for baseline in ("decoded", "raw"):
        ratio = best["ours"] / best[baseline]
        results.append(
            Result(
                SUITE,
                f"identity / {baseline} COPY round trip",
                ratio,
                "x",
                baseline=best[baseline],
                goal=f">= {RATIO_GOAL}x",
                passed=ratio >= RATIO_GOAL,
                extra={
                    **extra,
                    "ours": best["ours"],
                    "ours_rows": best["ours_rows"],
                    "cpu_ratio": cpu[baseline] / cpu["ours"],
                },
            )
        )
    return results


# ---------------------------------------------------------------- (b) reader variants

_KEYSET = f"SELECT {', '.join(COLUMNS)} FROM {SOURCE} WHERE id > %s ORDER BY id LIMIT %s"


def _read_select(url: str, binary: bool) -> Run:
    with psycopg.connect(url, autocommit=True) as conn:
        meter = _Meter(conn)
        last, rows = 0, 0
        with conn.cursor(binary=binary) as cur:
            while rows < READER_ROWS:
                batch = cur.execute(_KEYSET, (last, DEFAULT_BATCH_ROWS)).fetchall()
                rows += len(batch)
                last = batch[-1][0]
        return meter.done(rows)


def _read_named_cursor(url: str) -> Run:
    with psycopg.connect(url, autocommit=True) as conn:
        meter = _Meter(conn)
        last, rows = 0, 0
        while rows < READER_ROWS:
            with conn.transaction(), conn.cursor(name="window", binary=True) as cur:
                cur.execute(_KEYSET, (last, DEFAULT_BATCH_ROWS))
                batch = cur.fetchall()
            rows += len(batch)
            last = batch[-1][0]
        return meter.done(rows)


def _read_copy(url: str) -> Run:
    types = ["int8", "int4", "text", "numeric", "timestamptz"]
    query = sql.SQL(
        "COPY (SELECT {} FROM {} WHERE id > {} ORDER BY id LIMIT {}) TO STDOUT (FORMAT BINARY)"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        meter = _Meter(conn)
        last, rows = 0, 0
        with conn.cursor() as cur:
            while rows < READER_ROWS:
                statement = query.format(
                    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                    sql.Identifier(*SOURCE.split(".")),
                    sql.Literal(last),
                    sql.Literal(DEFAULT_BATCH_ROWS),
                )
                with cur.copy(statement) as copy:
                    copy.set_types(types)
                    batch = list(copy.rows())
                rows += len(batch)
                last = batch[-1][0]
        return meter.done(rows)


def _read_batches(url: str, options: str = "") -> Run:
    with psycopg.connect(url, autocommit=True, options=options) as conn:
        meter = _Meter(conn)
        rows = 0
        chunk = TableChunk(None, READER_ROWS, READER_ROWS)
        for batch in read_batches(
            conn, SOURCE, COLUMNS, "id", chunk=chunk, after_key=None, batch_rows=DEFAULT_BATCH_ROWS
        ):
            rows += len(batch)
        return meter.done(rows)


def _read_ranges(url: str) -> Run:
    with connect_reader(url, application_name="bench reader") as conn:
        meter = _Meter(conn)
        rows = 0
        chunk = TableChunk(None, READER_ROWS, READER_ROWS)
        reader = RangeReader.build(conn, SOURCE, COLUMNS, "id", chunk=chunk)
        for batch in reader.ranges(conn, None, DEFAULT_BATCH_ROWS):
            rows += len(reader.rows(conn, batch))
        return meter.done(rows)


def _reader_variants(url: str) -> list[Result]:
    variants: dict[str, Callable[[], Run]] = {
        "key ranges (the runner's), TimeZone=UTC": lambda: _read_ranges(url),
        "read_batches (text results: numeric)": lambda: _read_batches(url),
        "read_batches, TimeZone=UTC": lambda: _read_batches(url, UTC_SESSION),
        "SELECT keyset, text results": lambda: _read_select(url, binary=False),
        "SELECT keyset, binary results": lambda: _read_select(url, binary=True),
        "cursor per batch, binary": lambda: _read_named_cursor(url),
        "binary COPY (SELECT..LIMIT n) per batch": lambda: _read_copy(url),
    }
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for round_number in range(ROUNDS):
        order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
        for name in order:
            runs[name].append(variants[name]())
    results = []
    for name, found in runs.items():
        rate = max(r.rate for r in found)
        cpu = min(r.cpu_us for r in found)
        print(f"   reader {name:<40} {rate:>10,.0f} rows/s {cpu:6.2f} us CPU/row", flush=True)
        extra = {
            "rows": READER_ROWS,
            "batch_rows": DEFAULT_BATCH_ROWS,
            "columns": list(COLUMNS),
            "cpu_us_per_row": cpu,
        }
        results.append(Result(SUITE, f"reader: {name}", rate, "rows/s", extra=extra))
    return results


# ---------------------------------------------------------------- (c) planner

_PLANNER_TABLE = """
CREATE UNLOGGED TABLE {table} AS
SELECT CASE WHEN i <= %(dense)s THEN i ELSE %(dense)s + (i - %(dense)s) * 1000 END AS id,
       timestamptz '2024-01-01' + ((i * 7919) %% 30000) * interval '86.4 second' AS created_at
FROM generate_series(1, %(rows)s::bigint) AS i
"""


def _seed_planner_table(url: str, rows: int) -> str:
    table = f"keys_{rows}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(_PLANNER_TABLE).format(table=sql.Identifier(table)),
            {"rows": rows, "dense": rows * 9 // 10},  # 90% of the rows in 1% of the key space
        )
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    return table


def _planner_child(url: str, table: str) -> dict[str, Any]:
    """Runs in a subprocess of its own: plan twice, report seconds and peak RSS."""
    import resource

    def rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        before = rss()
        started = time.perf_counter()
        plain = plan_table_chunks(conn, table, "id", chunks=PLAN_CHUNKS)
        plain_seconds = time.perf_counter() - started
        third = RowFilter(
            "created_at",
            dt.datetime(2024, 1, 11, tzinfo=dt.UTC),
            dt.datetime(2024, 1, 21, tzinfo=dt.UTC),
        )
        started = time.perf_counter()
        filtered = plan_table_chunks(conn, table, "id", chunks=PLAN_CHUNKS, row_filter=third)
        filtered_seconds = time.perf_counter() - started
    return {
        "plain_seconds": plain_seconds,
        "plain_chunks": len(plain),
        "plain_rows": [min(c.rows for c in plain), max(c.rows for c in plain)],
        "filtered_seconds": filtered_seconds,
        "filtered_chunks": len(filtered),
        "filtered_rows": [min(c.rows for c in filtered), max(c.rows for c in filtered)],
        "rss_before_mib": before,
        "peak_rss_mib": rss(),
    }


def _planner(url: str) -> list[Result]:
    measured: dict[int, dict[str, Any]] = {}
    for rows in PLANNER_SIZES:
        started = time.perf_counter()
        table = _seed_planner_table(url, rows)
        print(
            f"   planner table of {rows:,} rows seeded in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_dataplane", "--planner-child", url, table],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        measured[rows] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"   planner {rows:>12,} rows: {measured[rows]}", flush=True)
    small, large = (measured[n] for n in PLANNER_SIZES)
    flat = large["peak_rss_mib"] <= small["peak_rss_mib"] + MEMORY_SLACK_MIB
    big = PLANNER_SIZES[-1]
    return [
        Result(
            SUITE,
            f"planner {big:,} rows -> {PLAN_CHUNKS} chunks",
            large["plain_seconds"],
            "s",
            baseline=small["plain_seconds"],
            extra={"baseline_rows": PLANNER_SIZES[0], **large},
        ),
        Result(
            SUITE,
            f"planner {big:,} rows, 1/3 filtered -> {PLAN_CHUNKS}",
            large["filtered_seconds"],
            "s",
            baseline=small["filtered_seconds"],
            extra={"baseline_rows": PLANNER_SIZES[0], **large},
        ),
        Result(
            SUITE,
            f"planner peak RSS {big:,} vs {PLANNER_SIZES[0]:,} rows",
            large["peak_rss_mib"],
            "MiB",
            baseline=small["peak_rss_mib"],
            goal=f"<= +{MEMORY_SLACK_MIB:g} MiB",
            passed=flat,
            extra={"small": small, "large": large},
        ),
    ]


# ---------------------------------------------------------------- entry points


def run() -> list[Result]:
    results: list[Result] = []
    with _database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            demo.seed_events(conn, ROUND_TRIP_ROWS)
            seconds = time.perf_counter() - started
        print(f"   seeded {ROUND_TRIP_ROWS:,} events in {seconds:.1f} s", flush=True)
        results.append(
            Result(
                SUITE,
                f"seed demo.events ({ROUND_TRIP_ROWS:,} rows)",
                ROUND_TRIP_ROWS / seconds,
                "rows/s",
                extra={"seconds": seconds},
            )
        )
        results += _round_trip(url)
        results += _reader_variants(url)
        results += _planner(url)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--planner-child":
        print(json.dumps(_planner_child(sys.argv[2], sys.argv[3])))
    else:
        raise SystemExit("usage: python -m bench dataplane")
