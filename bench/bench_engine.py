"""Engine: the per-item cost of ``process_batches``, and its peak memory against the input size.

- Overhead: ``process_batches`` (batches of BATCH_SIZE, CONCURRENCY in flight) with a trivial
  processor over OVERHEAD_ITEMS items, against a plain Python loop doing the same per-item work
  over the same range. Both are timed REPEATS times, interleaved, best run kept (the least
  disturbed by other load on the machine); reported in µs per item, with their ratio.
- Memory: peak RSS of ``process_batches`` over a generator of 10,000,000 items against the same
  over 1,000,000 items, each size in a fresh interpreter of its own (peak RSS never goes down,
  so sizes must not share a process). Goal: equal within 10 %, i.e. memory flat in the data size.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.common import Result
from parallel_batch.engine.batching import process_batches

SUITE = "engine"
OVERHEAD_ITEMS = 1_000_000
BATCH_SIZE = 1_000
CONCURRENCY = 4
REPEATS = 3
OVERHEAD_GOAL = 1.5  # engine time / plain loop time, at BATCH_SIZE items per batch
MEMORY_SIZES = (1_000_000, 10_000_000)
MEMORY_GOAL = 1.10  # peak RSS at 10M items / peak RSS at 1M items
ROOT = Path(__file__).resolve().parents[1]


def _work(batch: list[int]) -> int:
    """The per-item work both sides do: a little arithmetic, summed."""
    total = 0
    for x in batch:
        total += x * 2 + 1
    return total


async def _processor(batch: list[int]) -> int:
    return _work(batch)


def _plain_loop(n: int) -> int:
    total = 0
    for x in range(n):
        total += x * 2 + 1
    return total


async def _engine(n: int) -> int:
    total = 0
    async for result in process_batches(
        range(n), _processor, batch_size=BATCH_SIZE, concurrency=CONCURRENCY
    ):
        total += result
    return total


def _time(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _overhead() -> list[Result]:
    n = OVERHEAD_ITEMS
    expected = _plain_loop(n)
    assert asyncio.run(_engine(n)) == expected
    plain: list[float] = []
    engine: list[float] = []
    for _ in range(REPEATS):
        plain.append(_time(lambda: _plain_loop(n)))
        engine.append(_time(lambda: asyncio.run(_engine(n))))
    plain_us = min(plain) / n * 1e6
    engine_us = min(engine) / n * 1e6
    ratio = engine_us / plain_us
    return [
        Result(
            SUITE,
            f"plain loop, {n:,} items",
            plain_us,
            "µs/item",
        ),
        Result(
            SUITE,
            f"process_batches, {n:,} items (batch {BATCH_SIZE})",
            engine_us,
            "µs/item",
            baseline=plain_us,
            extra={
                "overhead_us_per_item": engine_us - plain_us,
                "overhead_us_per_batch": (engine_us - plain_us) * BATCH_SIZE,
                "concurrency": CONCURRENCY,
            },
        ),
        Result(
            SUITE,
            "process_batches / plain loop",
            ratio,
            "x",
            goal=f"<= {OVERHEAD_GOAL}x",
            passed=ratio <= OVERHEAD_GOAL,
            extra={"plain_runs_s": plain, "engine_runs_s": engine},
        ),
    ]


def _items(n: int) -> Iterator[tuple[int, str]]:
    """A generator of rows, as a table or file reader would give them."""
    for i in range(n):
        yield (i, "payload")


async def _count_rows(batch: list[tuple[int, str]]) -> int:
    return len(batch)


def _memory_child(n: int) -> None:
    """Run in a fresh interpreter: stream ``n`` rows through process_batches, print peak RSS."""

    async def main() -> int:
        done = 0
        async for rows in process_batches(
            _items(n), _count_rows, batch_size=BATCH_SIZE, concurrency=CONCURRENCY
        ):
            done += rows
        return done

    started = time.perf_counter()
    done = asyncio.run(main())
    seconds = time.perf_counter() - started
    assert done == n, (done, n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"items": n, "peak_rss_mib": peak, "seconds": seconds}))


def _measure_memory(n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_engine", "memory", str(n)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _memory() -> list[Result]:
    small, large = (_measure_memory(n) for n in MEMORY_SIZES)
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    return [
        Result(
            SUITE,
            f"peak RSS, process_batches over {MEMORY_SIZES[1]:,} items",
            large["peak_rss_mib"],
            "MiB",
            baseline=small["peak_rss_mib"],
            goal=f"<= {MEMORY_GOAL}x of {MEMORY_SIZES[0]:,}",
            passed=ratio <= MEMORY_GOAL,
            extra={"ratio": ratio, "small": small, "large": large},
        ),
    ]


def run() -> list[Result]:
    return _overhead() + _memory()


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory"]:
        _memory_child(int(sys.argv[2]))
    else:
        for r in run():
            print(r)
