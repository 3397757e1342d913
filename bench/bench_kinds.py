"""The transform kinds on the chunk runner's data plane (issue 8, section Performance).

All on the same ``demo.events`` of ROWS rows (env ``PB_BENCH_ROWS``, default 5,000,000) in one
run (2 shared cores: the load average is recorded with each figure). The data plane is
``core.runner.run_chunk`` over a job's chunks of CHUNK_ROWS rows (about 1M, as many chunks as a
multiple of PROCESSES: env ``PB_BENCH_CHUNK_ROWS`` overrides), in PROCESSES processes side by
side, each with a ``WorkerPool(WORKERS)`` as a chunk task runs it, each taking the next chunk
nobody holds (as Airflow's pool slots take the next mapped task; ``bench_table_dag``'s (b))::

    bench (this process)                 seeds, plans a job per run, checks the target
      |-- child: hand-written baseline   COPY TO -> enrich_event per row -> COPY FROM, one txn
      |-- child x PROCESSES: run_chunk   chunk after chunk, WorkerPool(WORKERS) each
      '-- child: one chunk, one process  peak RSS (its own and its pool worker's, VmHWM)

(1) batch kind: ``include.transforms.events:enrich_events`` into ``demo.events_enriched``;
    baseline: the hand-written single-process program (binary COPY both ways, the demo's
    ``enrich_event`` per row).
(2) rows kind: ``include.transforms.events:enrich`` (a dict in, a dict out), same target.
    Goal: within ROWS_GOAL x the batch kind's time.
(3) a vectorisable transform in both kinds into ``demo.event_stats``:
    ``include.transforms.examples:stats`` (dataframe) against ``...:stats_row`` (rows).
    Goal: the dataframe kind at least DATAFRAME_GOAL x faster. Each kind runs with its default
    batch size (``core.job.default_batch_rows``: 50,000 rows for a dataframe transform, 10,000
    for the others); the dataframe kind at 10,000 rows a batch is measured too (no goal).
(4) peak memory: one chunk of ROWS rows and one of ROWS / MEMORY_FACTOR rows, each run by one
    chunk process with a WorkerPool(1), for the batch kind and for the dataframe kind (stats,
    at its 50,000 rows a batch). Goal: MEMORY_FACTOR x the rows within
    MEMORY_GOAL x the peak RSS, for the chunk process and for its worker.

A run's time is from the first chunk process's start on its chunks to the last one's end: the
interpreters' start-up is left out, the pools' start and the transforms' imports are in. The
kinds' runs take turns (A B C D, then D C B A ...) for ROUNDS rounds, best of each kept.
Every run's target is checked: ROWS rows written, every chunk reconciled, no dead letter.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any

import psycopg

from bench.common import (
    Result,
    child_main,
    child_result,
    load_average,
    run_child,
    scratch_database,
    spawn_child,
    vm_hwm_mib,
)
from parallel_batch.core.job import DEFAULT_BATCH_ROWS, JobSpec, default_batch_rows
from parallel_batch.core.planning import plan_job, resolve_columns
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.demo.events import ENRICHED_COLUMNS, EVENTS_COLUMNS, seed_events
from parallel_batch.demo.tables import (
    ENRICHED_TABLE,
    EVENTS_TABLE,
    create_events_enriched,
    create_table_if_missing,
)
from parallel_batch.sources import TableSource, source_from_dict
from parallel_batch.sources.table.planner import TableChunk
from parallel_batch.store.checkpoints import CheckpointStore

SUITE = "kinds"
MODULE = "bench.bench_kinds"
ROWS = int(os.environ.get("PB_BENCH_ROWS", "5000000"))
PROCESSES = 2
# Chunks of about the DAG's default size (airflow/params.py DEFAULT_CHUNK_ROWS, 1M) that the
# processes share evenly: 4 of 1.25M for 5M rows, 2 each. With 5 chunks of 1M the last one runs
# alone while the other process idles, and that tail costs the kinds unequally (the kind whose
# worker does the most, rows, gains least from having the machine to itself): rows vs batch
# measured 1.22x-1.46x that way, against 1.24x with even chunks in the same hour.
_EVEN_CHUNKS = max(PROCESSES, PROCESSES * round(ROWS / 1_000_000 / PROCESSES))
CHUNK_ROWS = int(os.environ.get("PB_BENCH_CHUNK_ROWS") or -(-ROWS // _EVEN_CHUNKS))
# The DAG's default (airflow/params.py DEFAULT_WORKERS), stated here so that the bench does not
# import Airflow.
WORKERS = int(os.environ.get("PB_BENCH_WORKERS", "1"))
ROUNDS = 3  # the rows kind's runs vary most (by up to a third on 2 shared cores): best of 3
ROWS_GOAL = 1.3  # rows kind time / batch kind time, at most
DATAFRAME_GOAL = 1.5  # rows kind time / dataframe kind time on stats, at least
MEMORY_FACTOR = 10
MEMORY_GOAL = 1.2  # peak RSS at ROWS / peak RSS at ROWS / MEMORY_FACTOR, at most
MEMORY_KINDS = ("batch", "stats dataframe")  # the smallest batches and the largest
STATS_TABLE = "demo.event_stats"
EVENTS = "include.transforms.events"
EXAMPLES = "include.transforms.examples"
# name -> (target table, transform)
KINDS: dict[str, tuple[str, TransformSpec]] = {
    "batch": (ENRICHED_TABLE, TransformSpec(f"{EVENTS}:enrich_events", "batch")),
    "rows": (ENRICHED_TABLE, TransformSpec(f"{EVENTS}:enrich", "rows")),
    "stats dataframe": (STATS_TABLE, TransformSpec(f"{EXAMPLES}:stats", "dataframe")),
    "stats rows": (STATS_TABLE, TransformSpec(f"{EXAMPLES}:stats_row", "rows")),
    # diagnostic, no goal: the dataframe kind at the rows kind's batch size
    "stats dataframe 10k": (STATS_TABLE, TransformSpec(f"{EXAMPLES}:stats", "dataframe")),
}
# Each kind runs with its own default batch size (core.job.default_batch_rows), but this one.
BATCH_ROWS = {"stats dataframe 10k": DEFAULT_BATCH_ROWS}
IN_TYPES = ["int8", "int4", "text", "numeric", "timestamptz"]
OUT_TYPES = ["int8", "int4", "text", "int8", "timestamptz"]
UTC_SESSION = "-c TimeZone=UTC"  # psycopg's fastest datetime path, as our reader's sessions


def _spec(url: str, kind: str) -> JobSpec:
    """The job of ``kind`` as a plan task builds it (source and written columns resolved)."""
    target, transform = KINDS[kind]
    source = TableSource(EVENTS_TABLE, "id", EVENTS_COLUMNS)
    spec = JobSpec(source, target, transform, batch_rows=BATCH_ROWS.get(kind))
    with psycopg.connect(url, autocommit=True) as conn:
        return resolve_columns(conn, spec, source.columns)


def _plan(url: str, kind: str, rows: int | None = None) -> str:
    """Plan a new job of ``kind``: chunks of CHUNK_ROWS, or one chunk of the first ``rows`` ids."""
    job_key = f"bench-kinds-{uuid.uuid4().hex[:8]}"
    spec = _spec(url, kind)
    with CheckpointStore.connect(url) as store:
        if rows is None:
            plan_job(
                store,
                job_key,
                spec,
                source_conninfo=url,
                make_source=source_from_dict,
                chunk_size=CHUNK_ROWS,
                max_chunks=1024,
            )
        else:  # ids are 1..ROWS
            chunk = TableChunk(None, rows, rows)
            store.ensure_job(
                job_key, kind="table", plan=[chunk.to_dict()], params={"spec": spec.to_dict()}
            )
    return job_key


def _reset(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        # No autovacuum of the last run's 5M rows while the next run is timed (it would take
        # CPU from whichever kind came next); the tables are emptied between runs anyway.
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        conn.execute(f"TRUNCATE {table}")  # a constant of this module
        conn.execute("CHECKPOINT")  # each run starts without the previous one's dirty pages


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------- children (own processes)


def _child_baseline(url: str) -> dict[str, Any]:
    """COPY out, the demo's ``enrich_event`` per row, COPY in; one process, one transaction."""
    from include.transforms.events import enrich_event

    cols, out_cols = ", ".join(EVENTS_COLUMNS), ", ".join(ENRICHED_COLUMNS)
    with (
        psycopg.connect(url, options=UTC_SESSION) as source,
        psycopg.connect(url, options=UTC_SESSION) as target,
    ):
        started, cpu = time.perf_counter(), time.process_time()
        rows = 0
        with (
            source.cursor().copy(
                f"COPY (SELECT {cols} FROM {EVENTS_TABLE}) TO STDOUT (FORMAT BINARY)"
            ) as out,
            target.cursor().copy(
                f"COPY {ENRICHED_TABLE} ({out_cols}) FROM STDIN (FORMAT BINARY)"
            ) as into,
        ):
            out.set_types(IN_TYPES)
            into.set_types(OUT_TYPES)
            write_row = into.write_row
            for row in out.rows():
                write_row(enrich_event(row))
                rows += 1
        target.commit()
        seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu_us_per_row": (time.process_time() - cpu) * 1e6 / max(rows, 1),
        "peak_rss_mib": vm_hwm_mib(),
    }


def _child_chunks(url: str, job_key: str) -> dict[str, Any]:
    """Run every chunk of the job nobody else holds, in plan order, with the job's stored spec
    (as a chunk task does); report the rows, seconds and peak RSS of this process and its
    pool's workers."""
    import psutil

    from parallel_batch.core.planning import stored_spec
    from parallel_batch.core.runner import run_chunk
    from parallel_batch.engine.pool import WorkerPool
    from parallel_batch.exceptions import ChunkBusyError

    with CheckpointStore.connect(url) as store:
        job = store.get_job(job_key)
    assert job is not None
    spec = stored_spec(job, source_from_dict)
    rows = failed = 0
    reconciled = True
    started, cpu = time.time(), time.process_time()
    with WorkerPool(WORKERS) as pool:
        for entry in job.plan:
            try:
                summary = run_chunk(spec, job_key, entry, conninfo=url, pool=pool, wait_timeout=0)
            except ChunkBusyError:
                continue  # the other process has it
            rows += summary.rows_this_attempt
            failed += summary.rows_failed
            reconciled = reconciled and summary.reconciles
        ended = time.time()
        workers = [vm_hwm_mib(p.pid) for p in psutil.Process().children(recursive=True)]
    return {
        "rows": rows,
        "rows_failed": failed,
        "reconciled": reconciled,
        "started": started,
        "ended": ended,
        "cpu_us_per_row": (time.process_time() - cpu) * 1e6 / max(rows, 1),
        "peak_rss_mib": vm_hwm_mib(),
        "worker_peak_rss_mib": max(workers, default=0.0),
    }


def _child(args: list[str]) -> dict[str, Any]:
    mode, url = args[0], args[1]
    if mode == "baseline":
        return _child_baseline(url)
    if mode == "chunks":
        return _child_chunks(url, args[2])
    raise SystemExit(f"unknown child mode {mode!r}")


# ---------------------------------------------------------------- runs


def _data_plane(url: str, kind: str, rows: int | None = None, processes: int = PROCESSES) -> Any:
    """Plan a job of ``kind``, run it in ``processes`` children, check the target; return the
    seconds from the first child's start on its chunks to the last one's end (interpreter
    start-up left out; the pool's start and the transform's imports counted), the children's
    results and the load average after."""
    table = KINDS[kind][0]
    _reset(url, table)
    job_key = _plan(url, kind, rows)
    children = [spawn_child(MODULE, "chunks", url, job_key) for _ in range(processes)]
    found = [child_result(child) for child in children]
    wall = max(f["ended"] for f in found) - min(f["started"] for f in found)
    expected = ROWS if rows is None else rows
    read = sum(f["rows"] for f in found)
    written = _count(url, table)
    if read != expected or written != expected:
        raise RuntimeError(f"{kind}: {read} rows read, {written} written, expected {expected}")
    if not all(f["reconciled"] for f in found) or any(f["rows_failed"] for f in found):
        raise RuntimeError(f"{kind}: a chunk did not reconcile or had dead letters: {found}")
    return wall, found, load_average()


def _kinds(url: str) -> dict[str, dict[str, Any]]:
    """Each kind's best run of ROUNDS, the kinds taking turns."""
    best: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for round_number in range(ROUNDS):
        order = list(KINDS) if round_number % 2 == 0 else list(reversed(KINDS))
        for kind in order:
            wall, found, load = _data_plane(url, kind)
            print(f"   {kind:<16} {ROWS / wall:>10,.0f} rows/s in {wall:.1f} s", flush=True)
            if kind not in best or wall < best[kind]["seconds"]:
                best[kind] = {
                    "seconds": wall,
                    "rate": ROWS / wall,
                    "load_average": load,
                    "parent_cpu_us_per_row": sum(f["cpu_us_per_row"] * f["rows"] for f in found)
                    / ROWS,
                    "peak_rss_mib": max(f["peak_rss_mib"] for f in found),
                    "worker_peak_rss_mib": max(f["worker_peak_rss_mib"] for f in found),
                }
            runs[kind].append(round(wall, 2))
            best[kind]["runs_seconds"] = runs[kind]
    return best


def _memory(url: str) -> dict[str, dict[int, dict[str, Any]]]:
    """Per MEMORY_KINDS kind: one chunk of ROWS and one of ROWS / MEMORY_FACTOR rows, one
    process each."""
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    for kind in MEMORY_KINDS:
        for rows in (ROWS // MEMORY_FACTOR, ROWS):
            _, (found,), load = _data_plane(url, kind, rows=rows, processes=1)
            measured.setdefault(kind, {})[rows] = {**found, "load_average": load}
            print(
                f"   {kind}, one chunk of {rows:,} rows: chunk process "
                f"{found['peak_rss_mib']:.0f} MiB, its worker {found['worker_peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    return measured


def run() -> list[Result]:
    with scratch_database("pb_bench_kinds") as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            seed_events(conn, ROWS)
            create_events_enriched(conn)
            create_table_if_missing(conn, STATS_TABLE, "event_stats")
        print(f"   seeded {ROWS:,} events in {time.perf_counter() - started:.1f} s", flush=True)
        _reset(url, ENRICHED_TABLE)
        base = run_child(MODULE, "baseline", url)
        base["load_average"] = load_average()
        if base["rows"] != ROWS or _count(url, ENRICHED_TABLE) != ROWS:
            raise RuntimeError(f"baseline: {base['rows']} rows, expected {ROWS}")
        baseline = ROWS / base["seconds"]
        print(f"   hand-written baseline {baseline:,.0f} rows/s", flush=True)
        kinds = _kinds(url)
        memory = _memory(url)
    return _results(base, kinds, memory)


def _results(
    base: dict[str, Any],
    kinds: dict[str, dict[str, Any]],
    memory: dict[str, dict[int, dict[str, Any]]],
) -> list[Result]:
    loads = {
        "baseline": base["load_average"],
        **{kind: found["load_average"] for kind, found in kinds.items()},
        **{
            f"memory {kind} {rows:,} rows": found["load_average"]
            for kind, by_rows in memory.items()
            for rows, found in by_rows.items()
        },
    }
    common = {
        "rows": ROWS,
        "chunk_rows": CHUNK_ROWS,
        "workers": WORKERS,
        "processes": PROCESSES,
        "batch_rows": {
            kind: BATCH_ROWS.get(kind) or default_batch_rows(transform.kind)
            for kind, (_, transform) in KINDS.items()
        },
        "rounds": ROUNDS,
        "load_average": loads,
    }
    baseline = ROWS / base["seconds"]
    batch, rows = kinds["batch"], kinds["rows"]
    frame, per_row = kinds["stats dataframe"], kinds["stats rows"]
    frame_10k = kinds["stats dataframe 10k"]
    rows_ratio = rows["seconds"] / batch["seconds"]
    frame_ratio = per_row["seconds"] / frame["seconds"]
    plane = f"{PROCESSES} x WorkerPool({WORKERS})"
    # fmt: off
    results = [
        Result(SUITE, f"hand-written COPY + enrich_event, {ROWS:,} rows", baseline, "rows/s",
               extra={**common, **base}),
        Result(SUITE, f"batch kind (enrich_events), {plane}", batch["rate"], "rows/s",
               baseline=baseline, extra={**common, **batch, "ratio": batch["rate"] / baseline}),
        Result(SUITE, f"rows kind (enrich), {plane}", rows["rate"], "rows/s",
               baseline=batch["rate"], extra={**common, **rows}),
        Result(SUITE, "rows kind time / batch kind time", rows_ratio, "x", baseline=1.0,
               goal=f"<= {ROWS_GOAL:g}x", passed=rows_ratio <= ROWS_GOAL, extra=common),
        Result(SUITE, f"dataframe kind (stats), {plane}", frame["rate"], "rows/s",
               baseline=per_row["rate"], extra={**common, **frame}),
        Result(SUITE, f"rows kind (stats_row), {plane}", per_row["rate"], "rows/s",
               extra={**common, **per_row}),
        Result(SUITE, "stats: rows kind time / dataframe kind time", frame_ratio, "x",
               baseline=1.0, goal=f">= {DATAFRAME_GOAL:g}x", passed=frame_ratio >= DATAFRAME_GOAL,
               extra=common),
        Result(SUITE, f"dataframe kind (stats) at {DEFAULT_BATCH_ROWS:,} rows a batch",
               frame_10k["rate"], "rows/s", baseline=per_row["rate"],
               extra={**common, **frame_10k,
                      "rows_time_ratio": per_row["seconds"] / frame_10k["seconds"]}),
    ]
    # fmt: on
    for kind, (what, key) in itertools.product(
        MEMORY_KINDS, (("chunk process", "peak_rss_mib"), ("pool worker", "worker_peak_rss_mib"))
    ):
        small, large = memory[kind][ROWS // MEMORY_FACTOR], memory[kind][ROWS]
        ratio = large[key] / small[key] if small[key] else float("inf")
        results.append(
            Result(
                SUITE,
                f"peak RSS {what}, {kind}, {ROWS:,}-row chunk",
                large[key],
                "MiB",
                baseline=small[key],
                goal=f"<= {MEMORY_GOAL:g}x",
                passed=ratio <= MEMORY_GOAL,
                extra={
                    **common,
                    "ratio": ratio,
                    "baseline_rows": ROWS // MEMORY_FACTOR,
                    "small": small,
                    "large": large,
                },
            )
        )
    return results


if __name__ == "__main__":
    child_main(MODULE, _child)
