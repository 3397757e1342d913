"""The table planner on PLANNER_SIZES rows (moved here from ``bench_dataplane``, unchanged).

A table of skewed bigint keys (90% of the rows in 1% of the key space) and a timestamptz column
per size; each size planned in a process of its own (its peak RSS its own, VmHWM)::

    plan_table_chunks(chunks=PLAN_CHUNKS)   (what TableSource.plan runs)
        no filter          keyset jumps, one short statement per boundary
        a third filtered   one window query over the matching rows (a data interval)

Goal: peak RSS flat in the table's size (the largest within MEMORY_SLACK_MIB of the smallest).
The seconds of each size are reported beside the smallest's. Sizes scale with PB_BENCH_SCALE.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Result, child_main, run_child, scaled, scratch_database, vm_hwm_mib

SUITE = "planner"
MODULE = "bench.bench_planner"
PLANNER_SIZES = (scaled(1_000_000, 10_000), scaled(10_000_000, 100_000))
PLAN_CHUNKS = 1024
MEMORY_SLACK_MIB = 10.0

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


def _child(args: list[str]) -> dict[str, Any]:
    """Plan the table twice (no filter, a third filtered); report seconds and peak RSS."""
    from parallel_batch.sources.table.planner import RowFilter, plan_table_chunks

    url, table = args
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        before = vm_hwm_mib()
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
        "peak_rss_mib": vm_hwm_mib(),
    }


def run() -> list[Result]:
    measured: dict[int, dict[str, Any]] = {}
    with scratch_database("pb_bench_planner") as (url, _):
        for rows in PLANNER_SIZES:
            started = time.perf_counter()
            table = _seed_planner_table(url, rows)
            seconds = time.perf_counter() - started
            print(f"   planner table of {rows:,} rows seeded in {seconds:.1f} s", flush=True)
            measured[rows] = run_child(MODULE, url, table)
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


if __name__ == "__main__":
    child_main(MODULE, _child)
