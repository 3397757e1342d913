"""The data plane's parts: read -> prepare -> write against raw COPY, and the reader variants.

Every variant runs in a process of its own (``--child``); each reports rows/s and its CPU per
row (the process + its server backends, read from /proc: other load on the 2 shared cores
hardly moves it, where it moves rows/s).

(a) Round trip of ``demo.events`` (ROUND_TRIP_ROWS rows, 5 columns incl. numeric and
    timestamptz) into an empty copy of it with a primary key, no transform:

    - prepare: what the chunk runner does in a process without a pool, minus its checkpoint:
      the table source's chunk reader plans each batch as a key range, ``core.prepare`` reads
      it, applies no transform, checks and encodes the rows for the target, on a read-ahead
      thread one batch ahead, while this thread writes the bytes with ``write_rows`` ("auto")
      and commits; DEFAULT_BATCH_ROWS rows a batch, TimeZone=UTC;
    - run_chunk: the chunk runner itself, in process (lease, a fenced checkpoint in every
      batch's transaction, completion);
    - rows path: ``read_batches`` -> ``write_rows`` of Python rows (psycopg encodes each row in
      the writing process), in the server's TimeZone;
    - baseline "decoded": one binary ``COPY ... TO STDOUT`` with ``set_types`` -> ``rows()`` ->
      ``write_row`` into one binary ``COPY ... FROM STDIN``: the least a hand-written program
      that can look at the values does, in one transaction;
    - baseline "raw bytes": the same two COPYs passing the undecoded bytes through (no program
      can transform rows this way: it is the ceiling).

    Goal: prepare >= RATIO_GOAL x each baseline's rows/s. Variants run ROUNDS times in turns,
    best kept (those in ONCE only in the first round).

(b) The reader variants the reader was chosen from, read-only, READER_ROWS rows in batches of
    DEFAULT_BATCH_ROWS: plain SELECT with keyset pagination (text / binary results), a
    server-side cursor re-opened per batch, a binary ``COPY (SELECT ... LIMIT n)`` per batch,
    ``read_batches``, and the chunk runner's (the table source's chunk reader: a key range per
    batch, planned by one index scan, then read).

The planner at 10M rows is ``bench_planner``. Sizes scale with PB_BENCH_SCALE.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Result, child_main, run_child, scaled, scratch_database, vm_hwm_mib
from parallel_batch.core.job import DEFAULT_BATCH_ROWS
from parallel_batch.demo import events as demo
from parallel_batch.sources.table.planner import TableChunk

SUITE = "dataplane"
MODULE = "bench.bench_dataplane"
ROUND_TRIP_ROWS = scaled(2_000_000, 10_000)
READER_ROWS = min(scaled(200_000, 10_000), ROUND_TRIP_ROWS)
ROUNDS = 2
# Measured in the first round only, to keep the module near 3 minutes: the decoded baseline is
# the slowest by far (psycopg's COPY TO hands out one row per call).
ONCE = frozenset({"decoded", "rows path"})
RATIO_GOAL = 0.8
SOURCE = "demo.events"
TARGET = "public.round_trip"
COLUMNS = demo.EVENTS_COLUMNS
TYPES = ["int8", "int4", "text", "numeric", "timestamptz"]
UTC_SESSION = "-c TimeZone=UTC"
WHOLE_TABLE = TableChunk(None, None, 0)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class _Meter:
    """Wall and CPU time of a run: this process's CPU plus its backends' (from /proc, the server
    being local; background writers and checkpoints are not included)."""

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

    def done(self, rows: int) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        cpu = (self._cpu_now() - self._cpu) * 1e6 / max(rows, 1)
        return {"rows": rows, "rate": rows / wall, "cpu_us": cpu, "peak_rss_mib": vm_hwm_mib()}


# ---------------------------------------------------------------- (a) round trip (children)


def _prepare(url: str) -> dict[str, float]:
    from parallel_batch.core.prepare import BatchWork, prepare
    from parallel_batch.core.target import Target
    from parallel_batch.core.transforms import TransformSpec
    from parallel_batch.engine.readahead import ReadAhead
    from parallel_batch.sources import TableSource
    from parallel_batch.sources.table.source import reader_connection
    from parallel_batch.store.writer import write_rows

    reader = TableSource(SOURCE, "id", COLUMNS).chunk_reader(url, WHOLE_TABLE.to_dict())
    with psycopg.connect(url) as writer:
        target = Target.resolve(writer, TARGET, columns=COLUMNS)
        writer.commit()
        meter = _Meter(reader_connection(url), writer)
        work = BatchWork(reader, TransformSpec(), target)
        rows = 0
        prepared = ((ref, prepare(work, ref)) for ref in reader.batches(None, DEFAULT_BATCH_ROWS))
        with ReadAhead(prepared, depth=1) as ahead:
            for _, batch in ahead:
                rows += write_rows(
                    writer, TARGET, target.columns, batch.data, key_columns=target.key_columns
                )
                writer.commit()
        found = meter.done(rows)
    reader.close()
    return found


def _run_chunk(url: str) -> dict[str, float]:
    from parallel_batch.core.job import JobSpec
    from parallel_batch.core.planning import resolve_columns
    from parallel_batch.core.runner import process_chunk
    from parallel_batch.sources import TableSource
    from parallel_batch.sources.table.source import TableChunkReader, reader_connection
    from parallel_batch.store.checkpoints import CheckpointStore

    # Keep the reader's connection open past the chunk's end: its backend's CPU is read then.
    TableChunkReader.close = lambda self: None
    source = TableSource(SOURCE, "id", COLUMNS)
    with psycopg.connect(url, autocommit=True) as conn:
        spec = resolve_columns(conn, JobSpec(source, TARGET), COLUMNS)
    job_key = f"bench-dataplane-{os.getpid()}-{time.time_ns()}"
    with CheckpointStore.connect(url) as store:
        store.ensure_job(job_key, kind="table", plan=[WHOLE_TABLE.to_dict()],
                         params={"spec": spec.to_dict()})  # fmt: skip
        meter = _Meter(store.conn, reader_connection(url))
        summary = process_chunk(store, spec, job_key, WHOLE_TABLE.to_dict(), source_conninfo=url)
        return meter.done(summary.rows_read)


def _rows_path(url: str) -> dict[str, float]:
    from parallel_batch.sources.table.reader import read_batches
    from parallel_batch.store.writer import write_rows

    with psycopg.connect(url, autocommit=True) as reader, psycopg.connect(url) as writer:
        meter = _Meter(reader, writer)
        rows = 0
        for batch in read_batches(reader, SOURCE, COLUMNS, "id", chunk=WHOLE_TABLE,
                                  after_key=None, batch_rows=DEFAULT_BATCH_ROWS):  # fmt: skip
            rows += write_rows(writer, TARGET, COLUMNS, batch)  # no transform
            writer.commit()
        return meter.done(rows)


def _copy_round_trip(url: str, decoded: bool) -> dict[str, float]:
    cols = ", ".join(COLUMNS)
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
                out.set_types(TYPES)
                into.set_types(TYPES)
                for row in out.rows():
                    into.write_row(row)
                    rows += 1
            else:
                for data in out:
                    into.write(data)
                rows = ROUND_TRIP_ROWS
        target.commit()
        return meter.done(rows)


# ---------------------------------------------------------------- (b) reader variants (children)

_KEYSET = f"SELECT {', '.join(COLUMNS)} FROM {SOURCE} WHERE id > %s ORDER BY id LIMIT %s"


def _read_select(url: str, binary: bool) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        meter = _Meter(conn)
        last, rows = 0, 0
        with conn.cursor(binary=binary) as cur:
            while rows < READER_ROWS:
                batch = cur.execute(_KEYSET, (last, DEFAULT_BATCH_ROWS)).fetchall()
                rows += len(batch)
                last = batch[-1][0]
        return meter.done(rows)


def _read_named_cursor(url: str) -> dict[str, float]:
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


def _read_copy(url: str) -> dict[str, float]:
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
                    copy.set_types(TYPES)
                    batch = list(copy.rows())
                rows += len(batch)
                last = batch[-1][0]
        return meter.done(rows)


def _read_batches(url: str, options: str = "") -> dict[str, float]:
    from parallel_batch.sources.table.reader import read_batches

    with psycopg.connect(url, autocommit=True, options=options) as conn:
        meter = _Meter(conn)
        rows = 0
        chunk = TableChunk(None, READER_ROWS, READER_ROWS)
        for batch in read_batches(conn, SOURCE, COLUMNS, "id", chunk=chunk, after_key=None,
                                  batch_rows=DEFAULT_BATCH_ROWS):  # fmt: skip
            rows += len(batch)
        return meter.done(rows)


def _read_chunk_reader(url: str) -> dict[str, float]:
    from parallel_batch.sources import TableSource
    from parallel_batch.sources.table.source import reader_connection

    chunk = TableChunk(None, READER_ROWS, READER_ROWS)
    reader = TableSource(SOURCE, "id", COLUMNS).chunk_reader(url, chunk.to_dict())
    meter = _Meter(reader_connection(url))
    rows = sum(len(reader.read(ref).rows) for ref in reader.batches(None, DEFAULT_BATCH_ROWS))
    found = meter.done(rows)
    reader.close()
    return found


ROUND_TRIP: dict[str, Callable[[str], dict[str, float]]] = {
    "raw": lambda url: _copy_round_trip(url, decoded=False),
    "decoded": lambda url: _copy_round_trip(url, decoded=True),
    "prepare": _prepare,
    "run_chunk": _run_chunk,
    "rows path": _rows_path,
}
READERS: dict[str, Callable[[str], dict[str, float]]] = {
    "chunk reader (key ranges), TimeZone=UTC": _read_chunk_reader,
    "read_batches (text results: numeric)": _read_batches,
    "read_batches, TimeZone=UTC": lambda url: _read_batches(url, UTC_SESSION),
    "SELECT keyset, text results": lambda url: _read_select(url, binary=False),
    "SELECT keyset, binary results": lambda url: _read_select(url, binary=True),
    "cursor per batch, binary": _read_named_cursor,
    "binary COPY (SELECT..LIMIT n) per batch": _read_copy,
}


def _child(args: list[str]) -> dict[str, float]:
    group, name, url = args
    return (ROUND_TRIP if group == "round_trip" else READERS)[name](url)


# ---------------------------------------------------------------- the runs


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


def _measure(url: str, group: str, names: list[str], once: frozenset[str]) -> dict[str, Any]:
    """Each variant's best rate and CPU per row over ROUNDS rounds in turns."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_number in range(ROUNDS):
        for name in names if round_number % 2 == 0 else list(reversed(names)):
            if name in once and round_number > 0:
                continue
            if group == "round_trip":
                _reset_target(url)
            found = run_child(MODULE, group, name, url)
            if group == "round_trip":
                _check_target(url, ROUND_TRIP_ROWS)
            runs[name].append(found)
            print(f"   {name:<48} {found['rate']:>10,.0f} rows/s {found['cpu_us']:6.2f} us CPU/row",
                  flush=True)  # fmt: skip
    return {
        name: {
            "rate": max(r["rate"] for r in found),
            "cpu_us": min(r["cpu_us"] for r in found),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in found),
        }
        for name, found in runs.items()
    }


def _round_trip(url: str) -> list[Result]:
    best = _measure(url, "round_trip", list(ROUND_TRIP), ONCE)
    extra = {"rows": ROUND_TRIP_ROWS, "batch_rows": DEFAULT_BATCH_ROWS, "rounds": ROUNDS,
             "load_average": os.getloadavg()[0], "runs": best}  # fmt: skip
    rows = f"{ROUND_TRIP_ROWS:,} rows"
    results = [
        Result(SUITE, f"COPY round trip raw bytes, {rows}", best["raw"]["rate"], "rows/s",
               extra=extra),
        Result(SUITE, f"COPY round trip decoded, {rows}", best["decoded"]["rate"], "rows/s",
               extra=extra),
        Result(SUITE, "chunk reader + prepare + write bytes", best["prepare"]["rate"], "rows/s",
               baseline=best["decoded"]["rate"], extra=extra),
        Result(SUITE, "run_chunk in process (with checkpoints)", best["run_chunk"]["rate"],
               "rows/s", baseline=best["prepare"]["rate"], extra=extra),
        Result(SUITE, "read_batches + write_rows (rows path)", best["rows path"]["rate"],
               "rows/s", extra=extra),
        Result(SUITE, "CPU per row: prepare (baseline: raw bytes)", best["prepare"]["cpu_us"],
               "us/row", baseline=best["raw"]["cpu_us"], extra=extra),
    ]  # fmt: skip
    for baseline in ("decoded", "raw"):
        ratio = best["prepare"]["rate"] / best[baseline]["rate"]
        results.append(
            Result(
                SUITE,
                f"prepare / {baseline} COPY round trip",
                ratio,
                "x",
                baseline=best[baseline]["rate"],
                goal=f">= {RATIO_GOAL}x",
                passed=ratio >= RATIO_GOAL,
                extra={**extra, "cpu_ratio": best[baseline]["cpu_us"] / best["prepare"]["cpu_us"]},
            )
        )
    return results


def _readers(url: str) -> list[Result]:
    best = _measure(url, "readers", list(READERS), frozenset())
    return [
        Result(SUITE, f"reader: {name}", found["rate"], "rows/s",
               extra={"rows": READER_ROWS, "batch_rows": DEFAULT_BATCH_ROWS,
                      "cpu_us_per_row": found["cpu_us"], "load_average": os.getloadavg()[0]})
        for name, found in best.items()
    ]  # fmt: skip


def run() -> list[Result]:
    results: list[Result] = []
    with scratch_database("pb_bench_dataplane") as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            demo.seed_events(conn, ROUND_TRIP_ROWS)
            seconds = time.perf_counter() - started
        print(f"   seeded {ROUND_TRIP_ROWS:,} events in {seconds:.1f} s", flush=True)
        results.append(
            Result(SUITE, f"seed demo.events ({ROUND_TRIP_ROWS:,} rows)",
                   ROUND_TRIP_ROWS / seconds, "rows/s", extra={"seconds": seconds})
        )  # fmt: skip
        results += _round_trip(url)
        results += _readers(url)
    return results


if __name__ == "__main__":
    child_main(MODULE, _child)
