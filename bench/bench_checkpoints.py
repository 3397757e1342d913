"""Checkpoint cost, and the batch size the chunk runner uses by default.

One chunk of ``demo.events`` (ROWS rows) -> ``demo.events_enriched`` (the demo's batch transform
``include.transforms.events:enrich_events``, binary COPY into the target), each run in a process
of its own::

    checked   core.runner.run_chunk in process: lease, the batches prepared on a read-ahead
              thread one ahead, a fenced checkpoint in every batch's transaction, completion
    plain     the same reader, core.prepare, read-ahead thread and write_rows, a plain
              transaction per batch: no lease, no checkpoint, no completion
    pool      run_chunk with a WorkerPool(1), as a chunk task runs it (the worker started, the
              core and the transform imported in it, before the clock)

- Cost: ``checked`` against ``plain`` in REPEATS back-to-back pairs (A B, B A, ...) so that
  background load and the server's own checkpoints hit both alike; goal: the best checked run
  at most COST_GOAL_PERCENT slower than the best plain one (every pair is reported beside it).
  Beside it, the checkpoint's statement timed alone (``commit_batch`` against a plain
  transaction, BATCHES_ALONE times: far less noisy on shared cores) as a share of a plain run,
  and the chunk task's default (``pool``).
- Batch size: ``plain`` then ``checked`` at SWEEP_SIZES rows per batch, each size in a fresh
  process, for rows/s, peak RSS (VmHWM) and the checkpoint cost at that size: what
  DEFAULT_BATCH_ROWS is chosen from.

Sizes scale with PB_BENCH_SCALE; the load average is recorded with the figures.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import psycopg

from bench.common import (
    Result,
    child_main,
    load_average,
    run_child,
    scaled,
    scratch_database,
    vm_hwm_mib,
)
from parallel_batch.core.job import DEFAULT_BATCH_ROWS
from parallel_batch.demo import events as demo
from parallel_batch.demo.tables import create_events_enriched
from parallel_batch.sources.table.planner import TableChunk

SUITE = "checkpoints"
MODULE = "bench.bench_checkpoints"
ROWS = scaled(150_000, 10_000)
REPEATS = 5
BATCHES_ALONE = 300
COST_GOAL_PERCENT = 3.0
SWEEP_ROWS = scaled(100_000, 10_000)
SWEEP_SIZES = (1_000, 5_000, 10_000, 50_000)
TRANSFORM = "include.transforms.events:enrich_events"
WHOLE_TABLE = TableChunk(lower=None, upper=None, rows=0)


def _seed(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        demo.seed_events(conn, rows)
        create_events_enriched(conn)
        conn.execute("VACUUM ANALYZE demo.events")


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE demo.events_enriched")
        conn.execute("CHECKPOINT")  # each run starts with no dirty buffers of the previous one


# ---------------------------------------------------------------- children (own processes)


def _spec(url: str, batch_rows: int) -> Any:
    from parallel_batch.core.job import JobSpec
    from parallel_batch.core.planning import resolve_columns
    from parallel_batch.core.transforms import TransformSpec
    from parallel_batch.sources import TableSource

    source = TableSource("demo.events", "id", demo.EVENTS_COLUMNS)
    spec = JobSpec(source, "demo.events_enriched", TransformSpec(TRANSFORM, "batch"),
                   write_mode="copy", batch_rows=batch_rows)  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        return resolve_columns(conn, spec, source.columns)


def _checked(url: str, batch_rows: int, workers: int = 0) -> float:
    """The chunk runner (``workers``: a WorkerPool of that many, warmed before the clock)."""
    import contextlib

    from parallel_batch.core.runner import run_chunk
    from parallel_batch.engine.pool import WorkerPool
    from parallel_batch.store.checkpoints import CheckpointStore

    spec = _spec(url, batch_rows)
    job_key = f"bench-{uuid.uuid4().hex[:8]}"
    with CheckpointStore.connect(url) as store:
        store.ensure_job(job_key, kind="table", plan=[WHOLE_TABLE.to_dict()],
                         params={"spec": spec.to_dict()})  # fmt: skip
    with WorkerPool(workers) if workers else contextlib.nullcontext() as pool:
        if pool is not None:  # the worker started, the core and the transform imported
            pool.submit(exec, f"import parallel_batch.core.prepare, {TRANSFORM.split(':')[0]}")
            pool.submit(int).result()
        started = time.perf_counter()
        summary = run_chunk(spec, job_key, WHOLE_TABLE.to_dict(), conninfo=url, pool=pool)
        seconds = time.perf_counter() - started
    assert summary.rows_written == summary.rows_read > 0 and summary.reconciles
    return seconds


def _plain(url: str, batch_rows: int) -> float:
    """The same read -> prepare -> COPY loop, a plain transaction per batch, no checkpoint."""
    from parallel_batch.core.prepare import BatchWork, prepare
    from parallel_batch.core.target import Target
    from parallel_batch.engine.readahead import ReadAhead
    from parallel_batch.store.writer import write_rows

    spec = _spec(url, batch_rows)
    written = 0
    started = time.perf_counter()  # from its connection on, as run_chunk's from its store's
    with psycopg.connect(url, autocommit=True) as conn:
        target = Target.resolve(conn, spec.target_table, columns=spec.target_columns,
                                key_columns=spec.key_columns, write_mode=spec.write_mode)  # fmt: skip
        reader = spec.source.chunk_reader(url, WHOLE_TABLE.to_dict())
        work = BatchWork(reader, spec.transform, target)
        batches = ((ref, prepare(work, ref)) for ref in reader.batches(None, batch_rows))
        with ReadAhead(batches, depth=1) as ahead:
            for _, prepared in ahead:
                with conn.transaction():
                    written += write_rows(conn, target.table, target.columns, prepared.data,
                                          mode=target.write_mode)  # fmt: skip
        reader.close()
        seconds = time.perf_counter() - started
    assert written > 0
    return seconds


def _statement_overhead(url: str) -> float:
    """Seconds a checkpoint adds to one batch's transaction, measured alone (low noise).

    The difference between BATCHES_ALONE transactions that insert one row and commit a
    checkpoint (the fenced UPDATE of the chunk row, which also counts the rows written) and as
    many that only insert the row (so that both commits flush the WAL, as every real batch's
    does), per transaction.
    """
    from parallel_batch.store.checkpoints import CheckpointStore

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_scratch (n int)")
    job_key = f"bench-alone-{uuid.uuid4().hex[:8]}"
    with CheckpointStore.connect(url) as store:
        store.ensure_job(job_key, kind="table", plan=[WHOLE_TABLE.to_dict()])
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
                store.commit_batch(lease, last_key=key, rows_read=1, write=_insert_one,
                                   rows_written=1)  # fmt: skip
            checked.append(time.perf_counter() - started)
        store.release(lease)
    return (min(checked) - min(plain)) / BATCHES_ALONE


def _insert_one(conn: psycopg.Connection) -> int:
    conn.execute("INSERT INTO bench_scratch VALUES (1)")
    return 1


def _child(args: list[str]) -> dict[str, Any]:
    mode, url = args[0], args[1]
    if mode == "alone":
        return {"seconds": _statement_overhead(url)}
    batch_rows = int(args[2])
    if mode == "sweep":  # one size: plain, then checked, in this process
        _reset(url)
        plain = _plain(url, batch_rows)
        _reset(url)
        checked = _checked(url, batch_rows)
        return {"plain": plain, "checked": checked, "peak_rss_mib": vm_hwm_mib()}
    runs = {"plain": _plain, "checked": _checked, "pool": lambda u, b: _checked(u, b, 1)}
    return {"seconds": runs[mode](url, batch_rows), "peak_rss_mib": vm_hwm_mib()}


# ---------------------------------------------------------------- the runs


def _timed(url: str, mode: str, batch_rows: int = DEFAULT_BATCH_ROWS) -> float:
    _reset(url)
    seconds: float = run_child(MODULE, mode, url, str(batch_rows))["seconds"]
    return seconds


def _cost() -> list[Result]:
    with scratch_database("pb_bench_checkpoints") as (url, _):
        _seed(url, ROWS)
        _timed(url, "plain")  # warm the cache
        plain: list[float] = []
        checked: list[float] = []
        for repeat in range(REPEATS):
            for variant in ("plain", "checked") if repeat % 2 == 0 else ("checked", "plain"):
                (plain if variant == "plain" else checked).append(_timed(url, variant))
        pool = _timed(url, "pool")
        per_batch = run_child(MODULE, "alone", url)["seconds"]
        load = load_average()
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
        "load_average": load,
    }
    print(f"   checkpoint: {per_batch * 1000:.2f} ms per batch alone, {estimate:.2f}% of a plain "
          f"run; pairs {extra['pair_cost_percent']}", flush=True)  # fmt: skip
    return [
        Result(SUITE, f"checkpoint cost at batch_rows={DEFAULT_BATCH_ROWS}", cost, "%",
               baseline=0.0, goal=f"<= {COST_GOAL_PERCENT:g}%", passed=cost <= COST_GOAL_PERCENT,
               extra=extra),
        Result(SUITE, "checkpoint cost, statements alone (estimate)", estimate, "%",
               goal=f"<= {COST_GOAL_PERCENT:g}%", passed=estimate <= COST_GOAL_PERCENT,
               extra={"ms_per_batch": per_batch * 1000.0, "load_average": load}),
        Result(SUITE, "run_chunk in process, checkpoint every batch", ROWS / statistics.median(
               checked), "rows/s", baseline=ROWS / plain_s,
               extra={"baseline": "same loop, no checkpoint", "load_average": load}),
        Result(SUITE, "run_chunk, WorkerPool(1) (a chunk task's default)", ROWS / pool, "rows/s",
               baseline=ROWS / plain_s, extra={"load_average": load}),
    ]  # fmt: skip


def _sweep() -> list[Result]:
    results: list[Result] = []
    with scratch_database("pb_bench_checkpoints") as (url, _):
        _seed(url, SWEEP_ROWS)
        for batch_rows in SWEEP_SIZES:
            figures = run_child(MODULE, "sweep", url, str(batch_rows))
            rate, plain = SWEEP_ROWS / figures["checked"], SWEEP_ROWS / figures["plain"]
            results.append(
                Result(
                    SUITE,
                    f"run_chunk at batch_rows={batch_rows} (rows/s)",
                    rate,
                    "rows/s",
                    baseline=plain,
                    extra={
                        "peak_rss_mib": figures["peak_rss_mib"],
                        "checkpoint_cost_percent": 100.0
                        * (figures["checked"] / figures["plain"] - 1.0),
                        "default": batch_rows == DEFAULT_BATCH_ROWS,
                        "load_average": load_average(),
                    },
                )
            )
            print(f"   batch_rows={batch_rows:>6}: {rate:>9,.0f} rows/s (plain {plain:,.0f}), "
                  f"peak RSS {figures['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
    return results


def run() -> list[Result]:
    """The checkpoint cost at the default batch size, then the batch size sweep."""
    return _cost() + _sweep()


if __name__ == "__main__":
    child_main(MODULE, _child)
