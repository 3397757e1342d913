"""``parallel_batch_table`` on the CeleryExecutor: 1 worker against 2 workers, the same run.

``python -m bench celery`` (Redis at ``PB_BENCH_BROKER_URL``, default
``redis://127.0.0.1:6379/13``; a queue of its own). On one scratch database:

(a) the Postgres ceiling: the same transform in SQL, ``INSERT INTO ... SELECT`` (sha256 and
    cents computed by the server, no client, no COPY): the most rows/s this server writes into
    this target;
(b) for 1 and then 2 workers: a :class:`~parallel_batch.local.cluster.LocalCluster` (api-server,
    scheduler, dag-processor, the workers) on a fresh metadata DB, the ``parallel_batch`` pool
    with one slot per core (POOL_SLOTS), the project's DAG unpaused (its scheduled run of
    yesterday's rows is let finish: it warms the workers up), the target emptied, then a manual
    run of the whole table in CHUNKS chunks with ``workers: 1`` per chunk task, triggered through
    the REST API and timed from the trigger to the run's success. Both setups have the same task
    slots in all (POOL_SLOTS chunk tasks at once), so the figures compare one Celery worker with
    two sharing the same cores, and say which worker ran how many chunks.

The load average is reported with each figure (2 shared cores: above 2, the figures are slowed).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from bench.bench_table_dag import (
    DAG_ID,
    _reset_target,
    _settle_scheduled_run,
    _target_rows,
    dag_conf,
    trigger_and_wait,
    wait_for_dag,
)
from bench.common import ROOT, Result, load_average, scaled, scratch_database
from parallel_batch.demo.events import seed_events
from parallel_batch.demo.tables import ENRICHED_TABLE, EVENTS_TABLE, create_events_enriched

SUITE = "celery"
ROWS = scaled(int(os.environ.get("PB_BENCH_CELERY_ROWS", "4000000")), 10_000)
# Two chunk tasks per pool slot: of the DAG's default size (1,000,000 rows) at the default ROWS.
CHUNKS = 2 * (os.cpu_count() or 1)
POOL_SLOTS = os.cpu_count() or 1
BROKER_URL = os.environ.get("PB_BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
SERVICES = ("api-server", "scheduler", "dag-processor")
# The same transform as include/transforms/events.py, in SQL.
CEILING_SQL = """
INSERT INTO {target} (id, user_id, payload_sha256, amount_cents, created_at)
SELECT id, user_id, encode(sha256(convert_to(payload, 'UTF8')), 'hex'),
       (amount * 100)::bigint, created_at
FROM {source}
"""


def _ceiling(url: str) -> dict[str, Any]:
    """Rows/s of the transform as one INSERT ... SELECT in the server (best of 2)."""
    best = float("inf")
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(2):
            _reset_target(url)
            started = time.perf_counter()
            conn.execute(
                sql.SQL(CEILING_SQL).format(
                    target=sql.Identifier(*ENRICHED_TABLE.split(".")),
                    source=sql.Identifier(*EVENTS_TABLE.split(".")),
                )
            )
            best = min(best, time.perf_counter() - started)
    _reset_target(url)
    return {"seconds": best, "rows_per_second": ROWS / best, "load": load_average()}


def _cluster_run(url: str, server: str, workers: int) -> dict[str, Any]:
    """Start a cluster of ``workers`` workers, run the DAG over the whole table; its figures."""
    from parallel_batch.local import env as localenv
    from parallel_batch.local.cluster import (
        LocalCluster,
        cluster_environment,
        forget_queue,
        worker_names,
    )
    from parallel_batch.local.services import free_port

    metadata = f"pb_bench_celery_airflow_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pb-bench-celery-") as home:
        env = cluster_environment(
            url,
            broker_url=BROKER_URL,
            workers=workers,
            worker_concurrency=max(2, 2 * POOL_SLOTS // workers),
            home=Path(home),
            metadata_database=metadata,
            dags_folder=ROOT / "dags",
            api_port=free_port(),
        )
        queue = env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] = f"pb-bench-{uuid.uuid4().hex[:8]}"
        try:
            localenv.prepare_airflow(env, pool_slots=POOL_SLOTS)
            cluster = LocalCluster(env, workers=worker_names(workers), services=SERVICES)
            with cluster, httpx.Client(base_url=f"{cluster.url}/api/v2", timeout=30) as http:
                cluster.wait_until_healthy()
                wait_for_dag(http, cluster)
                ready = time.perf_counter() - started
                settled = _settle_scheduled_run(http, cluster)
                _reset_target(url)
                load_before = load_average()
                conf = dag_conf(chunk_rows=-(-ROWS // CHUNKS), workers=1)
                measured = trigger_and_wait(http, cluster, conf)
                runs = http.get(f"/dags/{DAG_ID}/dagRuns", params={"run_type": "manual"}).json()
                (run,) = runs["dag_runs"]
                tis = http.get(
                    f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances",
                    params={"limit": 1000},
                ).json()["task_instances"]
        finally:
            forget_queue(BROKER_URL, queue)
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(metadata)
                    )
                )
    written = _target_rows(url)
    chunks_by_worker: dict[str, int] = {}
    for ti in tis:
        if ti["task_id"] == "events.process":
            name = (ti["hostname"] or "?").split("@")[0]
            chunks_by_worker[name] = chunks_by_worker.get(name, 0) + 1
    return {
        "workers": workers,
        "worker_concurrency": int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]),
        "cluster_start_seconds": ready,
        "scheduled_run_seconds": settled,
        "seconds": measured["seconds"],
        "rows_per_second": ROWS / measured["seconds"],
        "rows_written": written,
        "chunks_by_worker": chunks_by_worker,
        "load_before": load_before,
        "load_after": load_average(),
        "tasks": measured["tasks"],
    }


def run() -> list[Result]:
    from parallel_batch.local.cluster import broker_problem

    problem = broker_problem(BROKER_URL)
    if problem:
        print(f"   skipped: Redis is needed ({problem}); set PB_BENCH_BROKER_URL")
        return []
    results = []
    with scratch_database("pb_bench_celery") as (url, server):
        with psycopg.connect(url, autocommit=True) as conn:
            seed_events(conn, ROWS)
            create_events_enriched(conn)
        ceiling = _ceiling(url)
        print(f"   INSERT ... SELECT: {ceiling['rows_per_second']:,.0f} rows/s", flush=True)
        figures = {}
        for workers in (1, 2):
            figures[workers] = _cluster_run(url, server, workers)
            f = figures[workers]
            print(
                f"   {workers} worker(s): {f['rows_per_second']:,.0f} rows/s in {f['seconds']:.1f} s"
                f" (chunks {f['chunks_by_worker']}, load {f['load_before']:.2f}"
                f" -> {f['load_after']:.2f})",
                flush=True,
            )
    one, two = figures[1], figures[2]
    results.append(
        Result(
            SUITE,
            "postgres INSERT...SELECT ceiling",
            ceiling["rows_per_second"],
            "rows/s",
            extra={"rows": ROWS, **ceiling},
        )
    )
    results.append(
        Result(
            SUITE,
            "DAG on Celery, 1 worker",
            one["rows_per_second"],
            "rows/s",
            extra={"rows": ROWS, "chunks": CHUNKS, "pool_slots": POOL_SLOTS, **one},
        )
    )
    results.append(
        Result(
            SUITE,
            "DAG on Celery, 2 workers (same cores)",
            two["rows_per_second"],
            "rows/s",
            baseline=one["rows_per_second"],
            goal=">= 0.9x",
            passed=two["rows_per_second"] >= 0.9 * one["rows_per_second"]
            and two["rows_written"] == one["rows_written"] == ROWS,
            extra={"rows": ROWS, "chunks": CHUNKS, "pool_slots": POOL_SLOTS, **two},
        )
    )
    results.append(
        Result(
            SUITE,
            "DAG rows/s per core (2 workers)",
            two["rows_per_second"] / POOL_SLOTS,
            "rows/s",
            extra={"cores": POOL_SLOTS},
        )
    )
    return results
