"""`make demo`: seed the demo data, run both demo DAGs through real Airflow, print a summary.

    embedded PostgreSQL ──> seed demo.events (poison + crash rows) and a CSV (bad records)
        ──> `airflow dags test parallel_batch_table -c {...}`   (real Airflow, in-process executor)
        ──> `airflow dags test parallel_batch_csv -c {...}`
        ──> summary from parallel_batch.jobs: rows in, rows out, dead letters, chunks, rows/s
        ──> `parallel-batch status`

No Airflow import here: Airflow runs as the `airflow` CLI with the environment of
``parallel-batch env``, exactly as a user would run it.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from parallel_batch.demo import events as demo
from parallel_batch.demo.csv_file import write_customers_csv
from parallel_batch.demo.tables import CUSTOMERS_TABLE, ENRICHED_TABLE
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.local import env as localenv
from parallel_batch.local.config import database_url
from parallel_batch.local.paths import state_dir
from parallel_batch.progress import terminal as status
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.identifiers import table_sql

log = logging.getLogger(__name__)

# Sizes of the demo (issue: 1,000,000 events with some poison, a 200,000-record CSV with some bad).
DEMO_EVENTS = 1_000_000
DEMO_POISON_EVERY = 10_007  # ~100 poison rows: dead letters, never in the target
DEMO_CRASH_EVERY = 333_331  # 3 rows that kill their worker process: replaced, dead-lettered
DEMO_CSV_RECORDS = 200_000
DEMO_CSV_BAD_EVERY = 997  # ~200 malformed records, dead-lettered at their true line
# A whole-table run in a few chunks: under `airflow dags test` mapped tasks run one after another,
# and each chunk task spreads its batches over the worker processes (one per core).
TABLE_CONF = {"chunks": 4, "batch_rows": 10_000, "workers": 2}
CSV_CONF = {"chunks": 4, "batch_rows": 5_000}


@dataclass(frozen=True)
class DemoResult:
    """One DAG's outcome, read back from the checkpoint tables."""

    dag_id: str
    job_key: str
    chunks: int
    rows_in: int
    rows_out: int
    dead_letters: int
    seconds: float  # wall time of `airflow dags test`, Airflow's start-up included
    job_seconds: float  # from the job's start to its end (planning, chunks, summary)

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.job_seconds if self.job_seconds > 0 else 0.0


def dags_test_argv(env: dict[str, str], dag_id: str, conf: dict[str, object]) -> list[str]:
    """``airflow dags test DAG -c CONF``, parsing only the DAG's own file ``<dag_id>.py`` of the
    DAGs folder when it has one (not every DAG of the folder)."""
    argv = [sys.executable, "-m", "airflow", "dags", "test", dag_id, "-c", json.dumps(conf)]
    dag_file = Path(env.get("AIRFLOW__CORE__DAGS_FOLDER", "dags")) / f"{dag_id}.py"
    if dag_file.is_file():
        argv += ["--dagfile-path", str(dag_file)]
    return argv


def empty_targets(conn: psycopg.Connection) -> None:
    """Empty the demo's target tables, when they exist: each demo starts as the first one did
    (a new job over a target still holding the last demo's rows would upsert every batch)."""
    for table in (ENRICHED_TABLE, CUSTOMERS_TABLE):
        found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if found is not None and found[0] is not None:
            conn.execute(sql.SQL("TRUNCATE {}").format(table_sql(table)))


def _run_dag(env: dict[str, str], dag_id: str, conf: dict[str, object]) -> float:
    """Run ``airflow dags test DAG -c CONF`` (output to a log file); return its wall time."""
    logs = state_dir() / "demo"
    logs.mkdir(exist_ok=True)
    log_file = logs / f"{dag_id}.log"
    argv = dags_test_argv(env, dag_id, conf)
    print(f"--> airflow dags test {dag_id} -c '{json.dumps(conf)}'   (log: {log_file})", flush=True)
    started = time.perf_counter()
    with log_file.open("w") as out:
        done = subprocess.run(
            argv,
            env=localenv.subprocess_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise ConfigurationError(
            f"`airflow dags test {dag_id}` failed (exit {done.returncode}); "
            f"last lines of {log_file}:\n{tail}\nrerun: {shlex.join(argv[2:])}"
        )
    return seconds


def _result(conninfo: str, dag_id: str, job_key: str, seconds: float) -> DemoResult:
    with CheckpointStore.connect(conninfo, application_name="parallel_batch demo") as store:
        job = store.job_status(job_key)
    if job is None:
        raise ConfigurationError(f"the {dag_id} run left no job {job_key!r} in parallel_batch.jobs")
    return DemoResult(
        dag_id=dag_id,
        job_key=job_key,
        chunks=job.chunks_total,
        rows_in=job.rows_read,
        rows_out=job.rows_written,
        dead_letters=job.dead_letters,
        seconds=seconds,
        job_seconds=job.elapsed_seconds or 0.0,
    )


def _print_summary(results: list[DemoResult], wall: float) -> None:
    header = (
        f"{'DAG':<22} {'rows in':>10} {'rows out':>10} {'dead letters':>13} "
        f"{'chunks':>7} {'rows/s':>9} {'job s':>7} {'wall s':>7}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r.dag_id:<22} {r.rows_in:>10,} {r.rows_out:>10,} {r.dead_letters:>13,} "
            f"{r.chunks:>7} {r.rows_per_second:>9,.0f} {r.job_seconds:>7.1f} {r.seconds:>7.1f}"
        )
    print(
        "\nrows/s = rows in / job s (from the job's start to its summary); wall s adds "
        "`airflow dags test`'s own start-up."
        f"\nwall time of the whole demo {wall:.1f} s (preparing Airflow, seeding, both DAG runs)"
    )


def run_demo(
    *, events: int = DEMO_EVENTS, csv_records: int = DEMO_CSV_RECORDS, pool_slots: int | None = None
) -> list[DemoResult]:
    """Seed, run both demo DAGs through Airflow, print the summary and the status view."""
    wall_started = time.perf_counter()
    url = database_url()
    print(f"database: {url}", flush=True)
    env = localenv.airflow_environment(url)
    print("preparing Airflow (metadata DB, pool, schemas) ...", flush=True)
    localenv.prepare_airflow(env, pool_slots=pool_slots)

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        demo.seed_events(conn, events, poison_every=DEMO_POISON_EVERY, crash_every=DEMO_CRASH_EVERY)
        empty_targets(conn)
    print(f"seeded demo.events with {events:,} rows in {time.perf_counter() - started:.1f} s")
    csv_path = state_dir() / "demo" / "customers.csv"
    csv_path.parent.mkdir(exist_ok=True)
    started = time.perf_counter()
    write_customers_csv(csv_path, csv_records, bad_every=DEMO_CSV_BAD_EVERY)
    print(f"wrote {csv_path} with {csv_records:,} records in {time.perf_counter() - started:.1f} s")

    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = []
    table_key = f"demo:parallel_batch_table:{stamp}"
    seconds = _run_dag(env, "parallel_batch_table", {**TABLE_CONF, "job_key": table_key})
    results.append(_result(url, "parallel_batch_table", table_key, seconds))
    csv_key = f"demo:parallel_batch_csv:{stamp}"
    conf = {**CSV_CONF, "path": str(csv_path), "job_key": csv_key}
    seconds = _run_dag(env, "parallel_batch_csv", conf)
    results.append(_result(url, "parallel_batch_csv", csv_key, seconds))

    _print_summary(results, time.perf_counter() - wall_started)
    print()
    status.show(url, rich_output=False)
    print(
        "\nLook at progress: `.venv/bin/parallel-batch status [JOB_KEY]`, or `make airflow` and "
        "http://localhost:8080 (the Parallel batch page shows jobs and chunks live).\n"
        "Replay dead letters after a fix: "
        f"airflow dags trigger parallel_batch_replay -c '{json.dumps({'job_key': table_key})}' "
        '(after `eval "$(.venv/bin/parallel-batch env)"`).'
    )
    return results
