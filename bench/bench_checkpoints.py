"""Checkpoint cost, and the batch size that the runner uses by default.

- Cost: one chunk of ``demo.events`` -> ``demo.events_enriched`` (``demo.enrich_events``, binary
  COPY into the target) run by ``run_table_chunk`` with a checkpoint in every batch's transaction
  (fenced UPDATE of the chunk row, lease, completion), against the same read -> transform -> write
  loop with a plain transaction per batch and no checkpoint at all. Both run in this process
  without read-ahead, in REPEATS back-to-back pairs (A B, B A, ...) so that background load and
  the server's own checkpoints hit both alike; goal: the best run with checkpoints at most 3%
  slower than the best run without (the median pair is reported beside it).
  Beside it, the checkpoint's statements timed alone (commit_batch against a plain transaction,
  many times: far less noisy on shared cores) as a share of a plain run, and the runner's
  default (one batch read ahead on a thread).
- Batch size: the runner at 1k .. 50k rows per batch, each size in a fresh subprocess, for rows/s,
  peak RSS and the checkpoint cost at that size; this is what DEFAULT_BATCH_ROWS is chosen from.

Runs on the embedded server (or PARALLEL_BATCH_DATABASE_URL) in a database of its own, dropped
at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.common import Result, peak_rss_mib
from parallel_batch.core.batch_transform import BatchTransformer
from parallel_batch.core.runner import TableJobSpec, run_table_chunk
from parallel_batch.core.table_job import DEFAULT_BATCH_ROWS
from parallel_batch.demo import events as demo
from parallel_batch.local.config import database_url
from parallel_batch.sources.table.planner import TableChunk
from parallel_batch.sources.table.reader import read_batches
from parallel_batch.store.checkpoints import CheckpointStore, plan_from_chunks
from parallel_batch.store.writer import write_rows

SUITE = "checkpoints"
ROWS = 150_000
REPEATS = 5
BATCHES_ALONE = 300
COST_GOAL_PERCENT = 3.0
SWEEP_ROWS = 100_000
SWEEP_SIZES = (1_000, 5_000, 10_000, 50_000)
ROOT = Path(__file__).resolve().parents[1]
WHOLE_TABLE = TableChunk(lower=None, upper=None, rows=0)


def _spec(batch_rows: int) -> TableJobSpec:
    return TableJobSpec(
        source_table="demo.events",
        target_table="demo.events_enriched",
        key_column="id",
        source_columns=demo.EVENTS_COLUMNS,
        target_columns=demo.ENRICHED_COLUMNS,
        write_mode="copy",
        batch_rows=batch_rows,
    )


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


def _seed(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        demo.seed_events(conn, rows)
        demo.create_events_enriched(conn)
        conn.execute("VACUUM ANALYZE demo.events")
    with CheckpointStore.connect(url) as store:
        store.ensure_schema()


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE demo.events_enriched")
        conn.execute("CHECKPOINT")  # each run starts with no dirty buffers of the previous one


def _with_checkpoints(url: str, batch_rows: int, read_ahead: int) -> float:
    """The runner: lease, a fenced checkpoint in every batch's transaction, completion."""
    job_key = f"bench-{uuid.uuid4().hex[:8]}"
    with CheckpointStore.connect(url) as store:
        store.ensure_job(job_key, kind="table", plan=plan_from_chunks([WHOLE_TABLE]))
    started = time.perf_counter()
    summary = run_table_chunk(
        url, job_key, WHOLE_TABLE, _spec(batch_rows), demo.enrich_events, read_ahead=read_ahead
    )
    seconds = time.perf_counter() - started
    assert summary.rows_written == summary.rows_read > 0
    return seconds


def _without_checkpoints(url: str, batch_rows: int) -> float:
    """The same read -> transform -> COPY loop, a plain transaction per batch, no checkpoint."""
    spec = _spec(batch_rows)
    transformer = BatchTransformer(demo.enrich_events)
    written = 0
    started = time.perf_counter()
    with (
        psycopg.connect(url, autocommit=True) as read_conn,
        psycopg.connect(url, autocommit=True) as write_conn,
    ):
        for batch in read_batches(
            read_conn,
            spec.source_table,
            spec.source_columns,
            spec.key_column,
            chunk=WHOLE_TABLE,
            after_key=None,
            batch_rows=batch_rows,
        ):
            result = transformer.transform(batch)
            with write_conn.transaction():
                written += write_rows(
                    write_conn,
                    spec.target_table,
                    spec.target_columns,
                    result.outputs,
                    mode=spec.write_mode,
                )
    seconds = time.perf_counter() - started
    assert written > 0
    return seconds


def _statement_overhead(url: str) -> float:
    """Seconds a checkpoint adds to one batch's transaction, measured alone (low noise).

    The difference between BATCHES_ALONE transactions that insert one row and commit a
    checkpoint (fenced UPDATE, rows_written UPDATE) and as many that only insert the row (so that
    both commits flush the WAL, as every real batch's does), per transaction.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_scratch (n int)")
    job_key = f"bench-alone-{uuid.uuid4().hex[:8]}"
    with CheckpointStore.connect(url) as store:
        store.ensure_job(job_key, kind="table", plan=plan_from_chunks([WHOLE_TABLE]))
        lease = store.acquire(job_key, WHOLE_TABLE.chunk_id)
        conn = store.conn
        plain: list[float] = []
        checked: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(BATCHES_ALONE):
                with conn.transaction():
                    _insert_one(conn)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            for key in range(BATCHES_ALONE):
                store.commit_batch(lease, last_key=key, rows_read=1, write=_insert_one)
            checked.append(time.perf_counter() - started)
        store.release(lease)
    return (min(checked) - min(plain)) / BATCHES_ALONE


def _insert_one(conn: psycopg.Connection) -> int:
    conn.execute("INSERT INTO bench_scratch VALUES (1)")
    return 1


def _cost() -> list[Result]:
    with _database() as url:
        _seed(url, ROWS)
        _reset(url)
        _without_checkpoints(url, DEFAULT_BATCH_ROWS)  # warm the cache and the code paths
        plain: list[float] = []
        checked: list[float] = []
        for repeat in range(REPEATS):
            order = ("plain", "checked") if repeat % 2 == 0 else ("checked", "plain")
            for variant in order:
                _reset(url)
                if variant == "plain":
                    plain.append(_without_checkpoints(url, DEFAULT_BATCH_ROWS))
                else:
                    checked.append(_with_checkpoints(url, DEFAULT_BATCH_ROWS, read_ahead=0))
        _reset(url)
        ahead = _with_checkpoints(url, DEFAULT_BATCH_ROWS, read_ahead=1)
        per_batch = _statement_overhead(url)
    # Load from other processes only ever slows a run down: the best run of each variant is the
    # least disturbed one, and their ratio the goal's figure. The pairs (back to back) are kept.
    ratios = sorted(c / p for c, p in zip(checked, plain, strict=True))
    cost = 100.0 * (min(checked) / min(plain) - 1.0)
    plain_s = statistics.median(plain)
    batches = -(-ROWS // DEFAULT_BATCH_ROWS)
    estimate = 100.0 * per_batch * batches / min(plain)
    extra = {
        "rows": ROWS,
        "batch_rows": DEFAULT_BATCH_ROWS,
        "plain_seconds": plain,
        "checkpointed_seconds": checked,
        "pair_cost_percent": [round(100.0 * (r - 1.0), 2) for r in ratios],
        "median_pair_cost_percent": 100.0 * (statistics.median(ratios) - 1.0),
        "checkpoint_ms_per_batch": per_batch * 1000.0,
        "estimated_cost_percent": estimate,
    }
    print(
        f"   checkpoint: {per_batch * 1000:.2f} ms per batch alone, {estimate:.2f}% of a plain "
        f"run; pairs {extra['pair_cost_percent']}",
        flush=True,
    )
    return [
        Result(
            SUITE,
            f"checkpoint cost at batch_rows={DEFAULT_BATCH_ROWS}",
            cost,
            "%",
            baseline=0.0,
            goal=f"<= {COST_GOAL_PERCENT:g}%",
            passed=cost <= COST_GOAL_PERCENT,
            extra=extra,
        ),
        Result(
            SUITE,
            "checkpoint cost, statements alone (estimate)",
            estimate,
            "%",
            goal=f"<= {COST_GOAL_PERCENT:g}%",
            passed=estimate <= COST_GOAL_PERCENT,
            extra={"ms_per_batch": per_batch * 1000.0},
        ),
        Result(
            SUITE,
            "runner, checkpoint every batch (rows/s)",
            ROWS / statistics.median(checked),
            "rows/s",
            baseline=ROWS / plain_s,
            extra={"baseline": "same loop, no checkpoint"},
        ),
        Result(
            SUITE,
            "runner default, read-ahead 1 (rows/s)",
            ROWS / ahead,
            "rows/s",
            baseline=ROWS / plain_s,
        ),
    ]


def _sweep_one(url: str, batch_rows: int) -> dict[str, float]:
    """Run in a fresh subprocess: one size, checkpointed and plain, and this process's peak RSS."""
    _reset(url)
    plain = _without_checkpoints(url, batch_rows)
    _reset(url)
    checked = _with_checkpoints(url, batch_rows, read_ahead=1)
    return {"plain": plain, "checked": checked, "peak_rss_mib": peak_rss_mib()}


def _sweep() -> list[Result]:
    results: list[Result] = []
    with _database() as url:
        _seed(url, SWEEP_ROWS)
        for batch_rows in SWEEP_SIZES:
            out = subprocess.run(
                [sys.executable, "-m", "bench.bench_checkpoints", "--sweep-one", str(batch_rows)],
                input=url,
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(
                Result(
                    SUITE,
                    f"runner at batch_rows={batch_rows} (rows/s)",
                    SWEEP_ROWS / figures["checked"],
                    "rows/s",
                    baseline=SWEEP_ROWS / figures["plain"],
                    extra={
                        "peak_rss_mib": figures["peak_rss_mib"],
                        "checkpoint_cost_percent": 100.0
                        * (figures["checked"] / figures["plain"] - 1.0),
                        "default": batch_rows == DEFAULT_BATCH_ROWS,
                    },
                )
            )
            print(
                f"   batch_rows={batch_rows:>6}: {SWEEP_ROWS / figures['checked']:>9,.0f} rows/s "
                f"(plain {SWEEP_ROWS / figures['plain']:,.0f}), "
                f"peak RSS {figures['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    return results


def run() -> list[Result]:
    """The checkpoint cost at the default batch size, then the batch size sweep."""
    return _cost() + _sweep()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sweep-one", type=int, required=True, metavar="BATCH_ROWS")
    args = parser.parse_args(argv)
    url = sys.stdin.read().strip()
    print(json.dumps(_sweep_one(url, args.sweep_one)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
