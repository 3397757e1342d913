"""Tests of transform_rows: vectorised first, then row by row with retries in rounds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from parallel_batch.core.row_isolation import (
    DEFAULT_RETRY,
    FailedRow,
    IsolatedRows,
    transform_rows,
)
from parallel_batch.engine.retry import RetryPolicy

Row = tuple[Any, ...]


class _Flaky:
    """Doubles each row's value; a row whose value is in ``bad`` raises ``failures[value]``
    more times (forever with -1). Records every call's size."""

    def __init__(self, failures: dict[int, int], error: type[Exception] = ValueError) -> None:
        self.failures = dict(failures)
        self.error = error
        self.calls: list[int] = []

    def __call__(self, rows: list[Row]) -> list[Row]:
        self.calls.append(len(rows))
        out = []
        for (value,) in rows:
            left = self.failures.get(value, 0)
            if left:
                self.failures[value] = left - 1 if left > 0 else left
                raise self.error(f"bad value {value}")
            out.append((value * 2,))
        return out


class _Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _run(
    fn: Any, rows: list[Row], policy: RetryPolicy = DEFAULT_RETRY
) -> tuple[IsolatedRows, _Sleeps]:
    sleeps = _Sleeps()
    result = transform_rows(fn, rows, policy, sleep=sleeps, rng=random.Random(7))
    return result, sleeps


def test_that_a_batch_without_failures_is_transformed_in_one_call() -> None:
    """Test that a batch whose rows all succeed costs one vectorised call and no wait."""
    fn = _Flaky({})
    result, sleeps = _run(fn, [(i,) for i in range(100)])
    assert result.outputs == [(2 * i,) for i in range(100)]
    assert result.failures == {}
    assert fn.calls == [100]
    assert sleeps.waits == []


def test_that_poison_rows_fail_alone_and_the_others_succeed() -> None:
    """Test that rows failing on every try end as FailedRows with all their attempts, in order."""
    fn = _Flaky({3: -1, 7: -1})
    result, _ = _run(fn, [(i,) for i in range(10)])
    assert result.failures == {
        3: FailedRow((3,), "ValueError", "bad value 3", 3),
        7: FailedRow((7,), "ValueError", "bad value 7", 3),
    }
    assert [out for i, out in enumerate(result.outputs) if i not in (3, 7)] == [
        (2 * i,) for i in range(10) if i not in (3, 7)
    ]
    transformed = result.transformed()
    assert len(transformed.outputs) == 8
    assert [f.row for f in transformed.failures] == [(3,), (7,)]


def test_that_failing_rows_wait_once_per_round_not_once_per_row() -> None:
    """Test that ten failing rows cost max_attempts - 1 waits in all, within the policy's ceilings."""
    fn = _Flaky({i: -1 for i in range(0, 100, 10)})
    result, sleeps = _run(fn, [(i,) for i in range(100)])
    assert len(result.failures) == 10
    assert len(sleeps.waits) == DEFAULT_RETRY.max_attempts - 1
    assert all(0 <= wait <= DEFAULT_RETRY.delay_ceiling(n) for n, wait in enumerate(sleeps.waits))
    # one batch call, one call per row, then one call per failing row and retry
    assert fn.calls == [100] + [1] * 100 + [1] * 10 * (DEFAULT_RETRY.max_attempts - 1)


def test_that_a_row_that_recovers_on_a_retry_is_an_output() -> None:
    """Test that a row failing twice then succeeding is not a dead letter (3 tries allowed)."""
    fn = _Flaky({4: 3})  # the batch call, the row alone, the first retry
    result, sleeps = _run(fn, [(i,) for i in range(6)])
    assert result.failures == {}
    assert result.outputs[4] == (8,)
    assert len(sleeps.waits) == 2


def test_that_errors_not_worth_retrying_fail_at_once() -> None:
    """Test that an error the policy gives up on is recorded after one try alone, without a wait."""
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, give_up_on=(KeyError,))
    fn = _Flaky({1: -1}, error=KeyError)
    result, sleeps = _run(fn, [(0,), (1,)], policy)
    assert result.failures[1].attempts == 1
    assert result.failures[1].error_type == "KeyError"
    assert sleeps.waits == []


def test_that_a_transform_losing_rows_fails_each_row() -> None:
    """Test that a transform returning no rows makes every row a TransformOutputError failure."""
    result, _ = _run(lambda rows: [], [(1,), (2,)], RetryPolicy(max_attempts=1))
    assert [f.error_type for f in result.failures.values()] == ["TransformOutputError"] * 2
    assert result.outputs == [None, None]


def test_that_a_base_exception_is_not_isolated() -> None:
    """Test that KeyboardInterrupt from the transform propagates instead of becoming a failure."""

    def interrupted(rows: list[Row]) -> list[Row]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transform_rows(interrupted, [(1,)])
