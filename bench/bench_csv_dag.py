"""The CSV DAG through a real Airflow against the hand-written loader (issue 9's measure).

RECORDS records of the demo customers file (every BAD_EVERY-th malformed) into an emptied
``demo.customers``::

    bench (this process)       writes the file, checks the target and the dead letters
      |-- child: baseline      bench_csv_load's hand-written loader (csv.reader -> the same
      |                        checks -> binary COPY), before and after the DAG runs
      '-- a local Airflow      api-server, scheduler, dag-processor, LocalExecutor, the
                               ``parallel_batch`` pool of POOL_SLOTS; ``parallel_batch_csv``
                               triggered over REST with its defaults but ``path`` and a fresh
                               ``job_key``: one warm-up run, then REPEATS times: trigger ->
                               success

Goal: the DAG's time at most GOAL x the loader's (the best of each). Airflow's start is not
timed, nor is the first run after it: that run's first task waits ~3.4 s for Airflow to load
the DAG bundle, once per Airflow start (seen in its log: "DAG bundles loaded"), which a
long-running Airflow never pays again; the first run's time is reported apart. A timed run's
tasks' start-up, planning and summary are timed. Sizes scale with PB_BENCH_SCALE.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

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


def _dag_runs(url: str, server: str, path: str, good: int) -> list[dict[str, Any]]:
    """The warm-up run, then REPEATS timed runs."""
    runs = []
    with table_dag.local_airflow(url, server, DAG_ID) as (http, af, _):
        for _ in range(1 + REPEATS):
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
            label = "DAG" if runs else "warm-up"
            print(f"   {label:<8} {RECORDS / run['seconds']:>9,.0f} records/s {run['tasks']}")
            runs.append(run)
    return runs


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp, scratch_database("pb_bench_csv_dag") as dbs:
        url, server = dbs
        path = str(Path(tmp) / "customers.csv")
        good = write_customers_csv(path, RECORDS, bad_every=BAD_EVERY).good_rows
        with psycopg.connect(url, autocommit=True) as conn:
            from parallel_batch.store.schema import ensure_schema

            ensure_schema(conn)
        bases = [_baseline(url, path, good)]
        print(f"   baseline {RECORDS / bases[0]:>9,.0f} records/s", flush=True)
        warm_up, *runs = _dag_runs(url, server, path, good)
        bases.append(_baseline(url, path, good))
        print(f"   baseline {RECORDS / bases[1]:>9,.0f} records/s", flush=True)
    base, dag = min(bases), min(run["seconds"] for run in runs)
    extra = {"records": RECORDS, "bad_every": BAD_EVERY, "load_average": load_average(),
             "chunk_bytes": CHUNK_BYTES or "the DAG's default",
             "baseline_seconds": [round(b, 2) for b in bases],
             "dag_seconds": [round(r["seconds"], 2) for r in runs],
             "warm_up_seconds": round(warm_up["seconds"], 2),
             "tasks": min(runs, key=lambda r: r["seconds"])["tasks"]}  # fmt: skip
    return [
        Result(SUITE, f"hand-written loader, {RECORDS:,} records", RECORDS / base, "records/s",
               extra=extra),
        Result(SUITE, f"{DAG_ID} through Airflow (trigger -> success)", RECORDS / dag,
               "records/s", baseline=RECORDS / base, extra=extra),
        Result(SUITE, "DAG time / loader time", dag / base, "x", baseline=1.0,
               goal=f"<= {GOAL:g}x", passed=dag / base <= GOAL, extra=extra),
    ]  # fmt: skip
