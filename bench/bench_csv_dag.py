"""The CSV DAG through a real Airflow against the hand-written loader (issue 9's measure).

RECORDS records of the demo customers file (every BAD_EVERY-th malformed) into an emptied
``demo.customers``, the loader and the DAG taking turns::

    bench (this process)       writes the file, checks the target and the dead letters
      |-- a local Airflow      api-server, scheduler, dag-processor, LocalExecutor, the
      |                        ``parallel_batch`` pool of POOL_SLOTS; ``parallel_batch_csv``
      |                        triggered over REST with its defaults but ``path`` and a fresh
      |                        ``job_key``: one warm-up run, then REPEATS timed runs
      '-- child: baseline      bench_csv_load's hand-written loader (csv.reader -> the same
                               checks -> binary COPY) before each timed run and after the last,
                               with every Airflow process stopped (SIGSTOP) meanwhile: a
                               machine as quiet as without Airflow, minutes apart at most

    warm-up, loader, DAG, loader, DAG, loader

Goal: the DAG's time at most GOAL x the loader's (the best of each). Each timed run is also
divided by the mean of the two loader runs around it (this machine's speed wanders by a third
within minutes; a pair compares like with like): their median is reported beside the goal.
Airflow's start is not timed, nor is the first run after it: that run's first task waits ~3.4 s
for Airflow to load the DAG bundle, once per Airflow start (seen in its log: "DAG bundles
loaded"), which a long-running Airflow never pays again; the first run's time is reported apart.
A timed run's tasks' start-up, planning and summary are timed. Sizes scale with PB_BENCH_SCALE.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import bench_csv_load as csv_load
from bench import bench_table_dag as table_dag
from bench.common import Result, load_average, run_child, scaled, scratch_database
from parallel_batch.demo.csv_file import write_customers_csv

SUITE = "csv_dag"
DAG_ID = "parallel_batch_csv"
RECORDS = scaled(2_000_000, 1_000)
BAD_EVERY = csv_load.BAD_EVERY
REPEATS = 2
# The DAG's chunk_bytes (env PB_BENCH_CSV_CHUNK_BYTES; unset: the DAG's default).
CHUNK_BYTES = os.environ.get("PB_BENCH_CSV_CHUNK_BYTES")
GOAL = 1.0  # DAG time / loader time, at most


def _baseline(url: str, path: str, good: int) -> float:
    csv_load._reset(url)
    found = run_child(csv_load.MODULE, "baseline", url, path)
    if found["rows"] != good or csv_load._outcome(url)[0] != good:
        raise RuntimeError(f"baseline loaded {found['rows']} rows, expected {good}")
    return float(found["ended"] - found["started"])


@contextlib.contextmanager
def _airflow_stopped(af: Any) -> Iterator[int]:
    """Every Airflow process (its services, their workers) stopped with SIGSTOP for the block
    and resumed after; yields how many. The embedded server and this process are not Airflow's
    and run on."""
    stopped = []
    for process in af.processes():
        with contextlib.suppress(psutil.Error):
            if _is_airflow(process.cmdline()):
                process.suspend()
                stopped.append(process)
    try:
        yield len(stopped)
    finally:
        for process in stopped:
            with contextlib.suppress(psutil.Error):
                process.resume()


def _is_airflow(args: list[str]) -> bool:
    """An ``airflow`` command, or a process that titled itself so ("airflow scheduler",
    "airflow worker -- LocalExecutor: ..."); not a server whose data path says airflow."""
    return " ".join(args[:1]).startswith("airflow") or any(
        arg.rsplit("/", 1)[-1] == "airflow" for arg in args[:2]
    )


def _quiet_baseline(af: Any, url: str, path: str, good: int) -> float:
    with _airflow_stopped(af) as stopped:
        seconds = _baseline(url, path, good)
    print(f"   baseline {RECORDS / seconds:>9,.0f} records/s ({stopped} Airflow processes "
          "stopped)", flush=True)  # fmt: skip
    return seconds


def _dag_run(http: Any, af: Any, url: str, path: str, good: int, label: str) -> dict[str, Any]:
    csv_load._reset(url)
    job_key = f"bench-csv-dag-{uuid.uuid4().hex[:8]}"
    conf: dict[str, Any] = {"path": path, "job_key": job_key}
    if CHUNK_BYTES:
        conf["chunk_bytes"] = int(CHUNK_BYTES)
    run = table_dag.trigger_and_wait(http, af, conf, DAG_ID)
    outcome = csv_load._outcome(url, job_key)
    if outcome != (good, RECORDS - good):
        raise RuntimeError(f"{DAG_ID}: (rows, dead letters) {outcome}, expected "
                           f"{(good, RECORDS - good)}")  # fmt: skip
    print(f"   {label:<8} {RECORDS / run['seconds']:>9,.0f} records/s {run['tasks']}", flush=True)
    return run


def _taking_turns(
    url: str, server: str, path: str, good: int
) -> tuple[dict[str, Any], list[float], list[dict[str, Any]]]:
    """The warm-up run, then the loader and the DAG taking turns, the loader last too."""
    bases: list[float] = []
    runs: list[dict[str, Any]] = []
    with table_dag.local_airflow(url, server, DAG_ID) as (http, af, _):
        warm_up = _dag_run(http, af, url, path, good, "warm-up")
        for _ in range(REPEATS):
            bases.append(_quiet_baseline(af, url, path, good))
            runs.append(_dag_run(http, af, url, path, good, "DAG"))
        bases.append(_quiet_baseline(af, url, path, good))
    return warm_up, bases, runs


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp, scratch_database("pb_bench_csv_dag") as dbs:
        url, server = dbs
        path = str(Path(tmp) / "customers.csv")
        good = write_customers_csv(path, RECORDS, bad_every=BAD_EVERY).good_rows
        with psycopg.connect(url, autocommit=True) as conn:
            from parallel_batch.store.schema import ensure_schema

            ensure_schema(conn)
        warm_up, bases, runs = _taking_turns(url, server, path, good)
    seconds = [run["seconds"] for run in runs]
    base, dag = min(bases), min(seconds)
    # each timed run against the loader runs just before and after it
    around = [(before + after) / 2 for before, after in itertools.pairwise(bases)]
    pairs = [t / b for t, b in zip(seconds, around, strict=True)]
    extra = {"records": RECORDS, "bad_every": BAD_EVERY, "load_average": load_average(),
             "chunk_bytes": CHUNK_BYTES or "the DAG's default",
             "baseline_seconds": [round(b, 2) for b in bases],
             "dag_seconds": [round(s, 2) for s in seconds],
             "pair_ratios": [round(r, 3) for r in pairs],
             "warm_up_seconds": round(warm_up["seconds"], 2),
             "tasks": min(runs, key=lambda r: r["seconds"])["tasks"]}  # fmt: skip
    return [
        Result(SUITE, f"hand-written loader, {RECORDS:,} records", RECORDS / base, "records/s",
               extra=extra),
        Result(SUITE, f"{DAG_ID} through Airflow (trigger -> success)", RECORDS / dag,
               "records/s", baseline=RECORDS / base, extra=extra),
        Result(SUITE, "DAG time / loader time", dag / base, "x", baseline=1.0,
               goal=f"<= {GOAL:g}x", passed=dag / base <= GOAL, extra=extra),
        Result(SUITE, "each DAG run / the loader runs around it (median)",
               statistics.median(pairs), "x", baseline=1.0, extra=extra),
    ]  # fmt: skip
