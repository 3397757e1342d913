"""Worker pool: speedup on CPU-bound batches, the cost of a crash, and start-up costs.

- Speedup: ``WorkerPool.map_batches`` over chained SHA-256 rounds, against the same batches run
  one after another in this process (goal on 2 cores: >= 1.8x). Both are measured REPEATS
  times, interleaved, so a burst of load from other processes on the machine hits both; the
  ratio of the best times is the goal's figure, the median of the per-round ratios is
  reported beside it, with the 1-minute load average. Linux shares the CPUs fairly between
  sessions (autogroup scheduling), not between processes: while another session is busy, this
  one gets about one core however many workers it runs, so only a quiet machine shows the
  speedup. The pool's CPU seconds per single-process CPU second (its overhead, which load does
  not change) is reported too.
- Crash: the time a worker death costs (detect, replace, run again), and what one poison item
  among 5,000 costs against the same batch without it.
- Start: pool start (until the first result, and until every worker is up) and one worker's
  start per start method, each in a fresh interpreter (forkserver's first pool also starts
  the fork server, once per process); then again in a process whose ``__main__`` imported
  Airflow, as an Airflow task's does.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench._pool_work import ROUNDS, crash_on_marker, sha256_rounds
from bench.common import Result
from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.workers.cpus import usable_cpu_count

SUITE = "pool"
ITEMS = 12_000
BATCH = 500
REPEATS = 3
SPEEDUP_GOAL = 1.8
CRASH_SAMPLES = 10
POISON_BATCH = 5_000
ROOT = Path(__file__).resolve().parents[1]


def _batches() -> list[list[str]]:
    items = [f"payload-{i}" for i in range(ITEMS)]
    return [items[i : i + BATCH] for i in range(0, ITEMS, BATCH)]


def _speedup() -> list[Result]:
    batches = _batches()
    single: list[float] = []
    pooled: list[float] = []
    single_cpu: list[float] = []
    pooled_cpu: list[float] = []
    with WorkerPool() as pool:
        workers = pool.max_workers
        pool.run_batch(sha256_rounds, ["warm-up"] * workers)  # workers up, fn imported
        for _ in range(REPEATS):
            started, cpu = time.perf_counter(), _cpu_seconds()
            expected = [out for batch in batches for out in sha256_rounds(batch)]
            single.append(time.perf_counter() - started)
            single_cpu.append(_cpu_seconds() - cpu)
            started, cpu = time.perf_counter(), _cpu_seconds()
            got = [out for r in pool.map_batches(sha256_rounds, batches) for out in r.outputs]
            pooled.append(time.perf_counter() - started)
            pooled_cpu.append(_cpu_seconds() - cpu)
            assert got == expected, "the pool's outputs differ from the single process's"
    ratios = [s / p for s, p in zip(single, pooled, strict=True)]
    best, median = min(single) / min(pooled), statistics.median(ratios)
    extra = {
        "workers": workers,
        "usable_cpus": usable_cpu_count(),
        "items": ITEMS,
        "batch": BATCH,
        "rounds": ROUNDS,
        "single_s": [round(s, 3) for s in single],
        "pool_s": [round(p, 3) for p in pooled],
        "speedups": [round(r, 3) for r in ratios],
        "median_speedup": round(median, 3),
        # CPU seconds (this process and its workers) the pool spent per CPU second of the
        # single process: its overhead, which contention from other processes does not change.
        "cpu_ratio": round(statistics.median(pooled_cpu) / statistics.median(single_cpu), 3),
        "load_average_1m": os.getloadavg()[0],
    }
    return [
        Result(SUITE, "sha256 items/s, one process", ITEMS / min(single), "items/s"),
        Result(
            SUITE,
            f"sha256 items/s, map_batches ({workers} workers)",
            ITEMS / min(pooled),
            "items/s",
            baseline=ITEMS / min(single),
        ),
        Result(
            SUITE,
            "speedup map_batches / one process (best times)",
            best,
            "x",
            baseline=1.0,
            goal=f">= {SPEEDUP_GOAL}x",
            passed=best >= SPEEDUP_GOAL,
            extra=extra,
        ),
    ]


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its live child processes (the workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return total


def _crash_cost() -> list[Result]:
    with WorkerPool(1, crash_retries=0) as pool:
        pool.run_batch(crash_on_marker, ["warm-up"])
        clean: list[float] = []
        crashed: list[float] = []
        for _ in range(CRASH_SAMPLES):
            started = time.perf_counter()
            pool.run_batch(crash_on_marker, ["a"])
            pool.run_batch(crash_on_marker, ["b"])
            clean.append(time.perf_counter() - started)
            started = time.perf_counter()
            failures = pool.run_batch(crash_on_marker, ["crash:a"]).failures
            pool.run_batch(crash_on_marker, ["b"])  # waits for the replacement worker
            crashed.append(time.perf_counter() - started)
            assert len(failures) == 1
    with WorkerPool(crash_retries=1) as pool:
        items = [f"item-{i}" for i in range(POISON_BATCH)]
        pool.run_batch(crash_on_marker, items)
        started = time.perf_counter()
        pool.run_batch(crash_on_marker, items)
        without = time.perf_counter() - started
        items[POISON_BATCH * 2 // 3] = "crash:poison"
        started = time.perf_counter()
        result = pool.run_batch(crash_on_marker, items)
        with_poison = time.perf_counter() - started
        assert len(result.failures) == 1 and len(result.outputs) == POISON_BATCH - 1
        crashes = pool.statistics().crashed_workers
    per_crash = statistics.median(crashed) - statistics.median(clean)
    return [
        Result(
            SUITE,
            "one crash: detect + replace worker",
            per_crash * 1000,
            "ms",
            extra={
                "samples": CRASH_SAMPLES,
                "clean_ms": [round(c * 1000, 1) for c in clean],
                "crashed_ms": [round(c * 1000, 1) for c in crashed],
            },
        ),
        Result(
            SUITE,
            f"1 poison item in {POISON_BATCH:,}: batch time",
            with_poison,
            "s",
            baseline=without,
            extra={"worker_crashes": crashes, "failed_items": len(result.failures)},
        ),
    ]


def measure_start(start_method: str, worker_samples: int = 5, pools: int = 2) -> dict[str, float]:
    """In this (fresh) process: the first ``pools`` pools' start times and one worker's start,
    in seconds."""
    import pickle

    from parallel_batch.engine.workers.process import WorkerProcess

    figures: dict[str, float] = {}
    for label in ("cold", "warm")[:pools]:
        started = time.perf_counter()
        pool = WorkerPool(2, start_method=start_method)
        pool.run_batch(crash_on_marker, ["x"])
        figures[f"{label}_first_result_s"] = time.perf_counter() - started
        while pool.statistics().workers < 2:
            time.sleep(0.001)
        figures[f"{label}_all_workers_s"] = time.perf_counter() - started
        pool.close()
    samples = []
    for _ in range(worker_samples):
        started = time.perf_counter()
        worker = WorkerProcess(start_method, pickle.dumps((None, ())))
        samples.append(time.perf_counter() - started)
        worker.stop()
    figures["worker_start_s"] = statistics.median(samples)
    return figures


# A parent whose __main__ has imported Airflow, as in an Airflow task process (its __main__ is
# the `airflow` or celery entry script). spawn and forkserver re-run __main__ in every worker
# (on Python 3.11 the fork server does not preload it); exec does not.
_AIRFLOW_MAIN = """\
import json
import sys

import airflow.sdk  # noqa: F401

from bench.bench_pool import measure_start

if __name__ == "__main__":
    print(json.dumps(measure_start(sys.argv[1], worker_samples=2, pools=1)))
"""


def _start_in_fresh_process(method: str, airflow_main: bool, scratch: Path) -> dict[str, float]:
    if airflow_main:
        script = scratch / "airflow_main.py"
        script.write_text(_AIRFLOW_MAIN)
        command = [sys.executable, str(script), method]
    else:
        code = f"import json; from bench.bench_pool import measure_start; print(json.dumps(measure_start({method!r})))"
        command = [sys.executable, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _start_costs() -> list[Result]:
    cases = [
        ("exec", False),
        ("forkserver", False),
        ("spawn", False),
        ("exec", True),
        ("forkserver", True),
        ("spawn", True),
    ]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for method, airflow_main in cases:
            figures = _start_in_fresh_process(method, airflow_main, Path(scratch))
            what = method
            if airflow_main:
                what += ", airflow in __main__"
            extra = {k: round(v * 1000, 1) for k, v in figures.items()}
            results.append(
                Result(
                    SUITE,
                    f"pool start, {what}",
                    figures["cold_first_result_s"] * 1000,
                    "ms",
                    extra=extra,
                )
            )
            results.append(
                Result(SUITE, f"worker start, {what}", figures["worker_start_s"] * 1000, "ms")
            )
    return results


def run() -> list[Result]:
    return _speedup() + _crash_cost() + _start_costs()
