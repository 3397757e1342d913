"""Tests of BatchTransformer, the row path: rows in hand, transformed in a pool or in process."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from parallel_batch.core.batch_transform import BatchTransformer, transform_in_worker
from parallel_batch.core.row_isolation import DEFAULT_RETRY, FailedRow
from parallel_batch.demo import events as demo
from parallel_batch.engine.pool import WorkerPool

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _event(i: int, payload: str | None = None) -> tuple[Any, ...]:
    return (i, i % 5, payload or f"event {i}", Decimal(i) / 4, T0)


def _events(n: int, bad: dict[int, str]) -> list[tuple[Any, ...]]:
    return [_event(i, bad.get(i)) for i in range(n)]


def test_that_worker_results_stay_aligned_with_their_rows() -> None:
    """Test that transform_in_worker returns one entry per row, a FailedRow in a failing row's place."""
    rows = _events(5, {2: "poison: event 2"})
    entries = transform_in_worker(demo.enrich_events, DEFAULT_RETRY, rows)
    assert len(entries) == 5
    assert type(entries[2]) is FailedRow
    assert entries[2].error_type == "PoisonRowError"
    assert [e[0] for i, e in enumerate(entries) if i != 2] == [0, 1, 3, 4]


def test_that_in_process_transform_isolates_poison_rows() -> None:
    """Test that without a pool, poison rows come back as failures and the rest as outputs."""
    rows = _events(50, {10: "poison: event 10", 40: "poison: event 40"})
    result = BatchTransformer(demo.enrich_events).transform(rows)
    assert sorted(f.row[0] for f in result.failures) == [10, 40]
    assert sorted(out[0] for out in result.outputs) == [i for i in range(50) if i not in (10, 40)]


@pytest.mark.parametrize("workers", [1, 2])
def test_that_the_pool_isolates_crash_and_poison_rows(workers: int) -> None:
    """Test that in a pool, a crash row becomes a WorkerCrashedError failure and a poison row a
    PoisonRowError one, with every other row transformed."""
    rows = _events(64, {5: "poison: event 5", 33: "crash: event 33"})
    with WorkerPool(workers, crash_retries=0) as pool:
        transformer = BatchTransformer(demo.enrich_events, pool=pool)
        assert transformer.slots == workers
        handles = [transformer.submit(rows[:32]), transformer.submit(rows[32:])]
        results = [transformer.collect(handle) for handle in handles]
        crashed = pool.statistics().crashed_workers
    failures = {f.row[0]: f for result in results for f in result.failures}
    assert {k: f.error_type for k, f in failures.items()} == {
        5: "PoisonRowError",
        33: "WorkerCrashedError",
    }
    assert failures[5].attempts == DEFAULT_RETRY.max_attempts
    assert crashed >= 1
    outputs = sorted(out[0] for result in results for out in result.outputs)
    assert outputs == [i for i in range(64) if i not in (5, 33)]
