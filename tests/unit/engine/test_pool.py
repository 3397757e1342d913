"""Tests of the worker pool with real worker processes: real deaths (os._exit, SIGKILL, SIGSEGV),
real timeouts and real exceptions, isolation of the poison items, plain calls (submit), and no
process left behind."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallel_batch.engine.pool import WorkerPool
from parallel_batch.engine.workers import cpus as pool_cpus
from parallel_batch.engine.workers.records import BatchResult, ItemFailure, PoolStatistics
from parallel_batch.engine.workers.worker import RemoteTraceback
from parallel_batch.exceptions import (
    PoolClosedError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerStartError,
    WorkerTaskError,
)
from tests.unit.engine import _pool_helpers as h

ROOT = Path(__file__).resolve().parents[3]
# A hang fails the test instead of blocking the suite; a safety net, not a timing assertion.
HANG_GUARD_SECONDS = 60


def _items(n: int, **marked: int) -> list[str]:
    """``n`` plain items; ``marked`` maps a marker prefix name to the index that carries it."""
    items = [f"item{i}" for i in range(n)]
    for prefix_name, index in marked.items():
        items[index] = getattr(h, prefix_name.rstrip("_").upper()) + f"{index}"
    return items


def _expected(items: list[str], failed: set[int]) -> list[str]:
    return [item.upper() for i, item in enumerate(items) if i not in failed]


def _until(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate()`` holds (state that settles asynchronously)."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never became true: {what}")
        time.sleep(0.02)


def _alive(pids: set[int]) -> set[int]:
    """The pids of ``pids`` that are still running processes (zombies count as gone)."""
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _worker_pids() -> set[int]:
    """Pids of every process below this one except multiprocessing's own helpers (the
    forkserver and the resource tracker, which live as long as this process by design)."""
    me = psutil.Process()
    helpers = {
        child.pid
        for child in me.children()
        if any("forkserver" in part or "resource_tracker" in part for part in child.cmdline())
    }
    pids = set()
    for child in me.children(recursive=True):
        if child.pid in helpers:
            continue
        try:
            command = " ".join(child.cmdline())
            if child.status() != psutil.STATUS_ZOMBIE and (
                child.ppid() in helpers
                or "multiprocessing" in command
                or "parallel_batch.engine.workers.worker" in command
                or child.cmdline() == me.cmdline()  # forked
            ):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """A shared two-worker pool: the tests that use it also show that it survives them all."""
    with WorkerPool(2) as shared:
        yield shared


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_workers": 0}, "^max_workers must be greater than 0$"),
        ({"task_timeout": 0}, "^task_timeout must be greater than 0$"),
        ({"crash_retries": -1}, "^crash_retries must be 0 or greater$"),
        ({"start_method": "teleport"}, "^start_method must be one of .*, got 'teleport'$"),
    ],
)
def test_that_invalid_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    """Test that invalid constructor arguments raise ValueError with the exact message."""
    with pytest.raises(ValueError, match=message):
        WorkerPool(**kwargs)  # type: ignore[arg-type]


def test_that_an_unpicklable_initializer_is_rejected() -> None:
    """Test that a lambda initializer is rejected up front, not in the worker."""
    with pytest.raises(TypeError, match=r"^initializer and initargs must be picklable"):
        WorkerPool(1, initializer=lambda: None)


def test_that_an_unpicklable_fn_is_rejected(pool: WorkerPool) -> None:
    """Test that submitting a lambda raises TypeError at once."""
    with pytest.raises(TypeError, match=r"^fn must be a picklable module-level callable"):
        pool.submit_batch(lambda items: items, [1])


def test_that_max_in_flight_must_be_positive(pool: WorkerPool) -> None:
    """Test that map_batches checks max_in_flight before reading any batch."""
    with pytest.raises(ValueError, match=r"^max_in_flight must be greater than 0$"):
        pool.map_batches(h.echo, [[1]], max_in_flight=0)


def test_that_max_workers_defaults_to_the_usable_cpus() -> None:
    """Test that the default size is the CPU count this process may use."""
    with WorkerPool() as default:
        assert default.max_workers == pool_cpus.usable_cpu_count()


# -- results ------------------------------------------------------------------------------------


def test_that_outputs_come_back_in_batch_order(pool: WorkerPool) -> None:
    """Test that run_batch returns fn's outputs for the whole batch, in order."""
    items = _items(1000)
    result = pool.run_batch(h.upper, items)
    assert result == BatchResult(_expected(items, set()), [])


def test_that_an_empty_batch_gives_an_empty_result(pool: WorkerPool) -> None:
    """Test that an empty batch completes without a worker round trip."""
    no_items: list[str] = []
    assert pool.run_batch(h.upper, no_items) == BatchResult([], [])


def test_that_arun_batch_works_from_asyncio(pool: WorkerPool) -> None:
    """Test that arun_batch can be awaited, and two batches run side by side."""

    async def main() -> list[BatchResult[str, str]]:
        return list(
            await asyncio.gather(
                pool.arun_batch(h.upper, ["a", "b"]), pool.arun_batch(h.upper, ["c"])
            )
        )

    assert asyncio.run(main()) == [BatchResult(["A", "B"], []), BatchResult(["C"], [])]


def test_that_work_is_spread_over_the_workers(pool: WorkerPool) -> None:
    """Test that concurrent batches run in more than one worker process, none in the parent."""
    _until(lambda: pool.statistics().workers == 2, "both workers up")
    futures = [pool.submit_batch(h.sleep_then_pid, [0.2]) for _ in range(4)]
    pids = {pid for future in futures for pid in future.result().outputs}
    assert len(pids) == 2
    assert os.getpid() not in pids


def test_that_the_initializer_runs_in_every_worker() -> None:
    """Test that initializer(*initargs) runs in each worker before its tasks."""
    with WorkerPool(2, initializer=h.set_marker, initargs=("ready",)) as pool:
        assert pool.run_batch(h.read_marker, ["a", "b"]).outputs == ["ready", "ready"]


def test_that_a_failing_initializer_fails_the_batch_and_never_hangs() -> None:
    """Test that a raising initializer gives WorkerStartError with the cause, and close works."""
    with WorkerPool(1, initializer=h.failing_initializer) as pool:
        with pytest.raises(
            WorkerStartError, match="initializer raised RuntimeError: no model file"
        ) as caught:
            pool.run_batch(h.upper, ["a"])
        assert "no model file" in str(caught.value.__cause__)
        assert pool.statistics().workers == 0


# -- crashes --------------------------------------------------------------------------------------


def test_that_one_crasher_among_5000_items_costs_exactly_one_item(pool: WorkerPool) -> None:
    """Test that an item calling os._exit is isolated, and all 4,999 others are returned in order."""
    items = _items(5000, crash=3217)
    result = pool.run_batch(h.upper, items)
    assert result.outputs == _expected(items, {3217})
    [failure] = result.failures
    assert failure.item == "crash:3217"
    assert failure.error_type == "WorkerCrashedError"
    assert failure.message == (
        "worker process died with exit code 3 while processing item 'crash:3217'"
    )
    assert failure.traceback == ""


@pytest.mark.parametrize(
    ("marker", "exit_text"),
    [("kill", "exit code -9 (SIGKILL)"), ("segv", "exit code -11 (SIGSEGV)")],
)
def test_that_a_signal_death_names_the_signal(
    pool: WorkerPool, marker: str, exit_text: str
) -> None:
    """Test that a worker killed by SIGKILL or SIGSEGV is reported with the signal's name."""
    items = _items(40, **{marker: 17})
    result = pool.run_batch(h.upper, items)
    assert result.outputs == _expected(items, {17})
    assert [f.message for f in result.failures] == [
        f"worker process died with {exit_text} while processing item '{marker}:17'"
    ]


def test_that_several_crashers_are_each_isolated(pool: WorkerPool) -> None:
    """Test that three crashing items of one batch fail alone, in batch order, and only they."""
    items = _items(64)
    items[5], items[40], items[41] = "crash:a", "kill:b", "crash:c"
    result = pool.run_batch(h.upper, items)
    assert result.outputs == _expected(items, {5, 40, 41})
    assert [f.item for f in result.failures] == ["crash:a", "kill:b", "crash:c"]
    assert {f.error_type for f in result.failures} == {"WorkerCrashedError"}


def test_that_the_pool_is_usable_after_crashes(pool: WorkerPool) -> None:
    """Test that after workers died the pool is back to full strength and runs batches."""
    pool.run_batch(h.upper, ["crash:x", "kill:y"])
    _until(lambda: pool.statistics().workers == 2, "both workers replaced")
    assert pool.run_batch(h.upper, ["ok"]).outputs == ["OK"]


def test_that_crash_statistics_are_counted() -> None:
    """Test that crashes, splits and completed batches are counted exactly."""
    with WorkerPool(1, crash_retries=0) as pool:
        pool.run_batch(h.upper, ["a", "crash:b"])  # whole batch dies, then "crash:b" alone
        pool.run_batch(h.upper, ["c"])
        _until(lambda: pool.statistics().workers == 1, "the worker replaced")
        assert pool.statistics() == PoolStatistics(
            workers=1,
            busy=0,
            queued=0,
            completed_batches=2,
            crashed_workers=2,
            timeouts=0,
            splits=1,
        )


def test_that_crash_retries_rerun_the_item_before_giving_up() -> None:
    """Test that a crashing item is run alone 1 + crash_retries times and reports those attempts,
    while the rest of its batch runs once."""
    with WorkerPool(1, crash_retries=2) as pool:
        result = pool.run_batch(h.upper, ["a", "crash:x"])
        assert result.outputs == ["A"]
        [failure] = result.failures
        assert failure.attempts == 3
        # the batch, then "crash:x" alone three times ("a" alone succeeded)
        assert pool.statistics().crashed_workers == 4


def test_that_logs_show_crashes_but_only_a_truncated_item(
    pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that a crash is logged at WARNING with a truncated repr, never the whole row."""
    secret = "crash:" + "s" * 500
    with caplog.at_level(logging.WARNING, logger="parallel_batch"):
        [failure] = pool.run_batch(h.upper, ["a", secret]).failures
    assert "died with exit code 3" in caplog.text
    assert "Splitting 2 failing item(s)" in caplog.text
    assert secret not in caplog.text
    assert secret not in failure.message
    assert failure.item == secret


# -- exceptions -------------------------------------------------------------------------------


def test_that_a_raising_item_is_isolated_with_its_traceback(pool: WorkerPool) -> None:
    """Test that with isolate_errors an exception fails only its item, with type, message and
    the worker's traceback."""
    items = _items(100)
    items[60] = "raise:60"
    result = pool.run_batch(h.upper, items)
    assert result.outputs == _expected(items, {60})
    [failure] = result.failures
    assert (failure.item, failure.error_type, failure.message) == (
        "raise:60",
        "ValueError",
        "bad item raise:60",
    )
    assert "_pool_helpers.py" in failure.traceback
    assert "ValueError: bad item raise:60" in failure.traceback
    assert failure.attempts == 1  # isolated inside the worker, never retried


def test_that_errors_propagate_with_the_remote_traceback_when_not_isolated() -> None:
    """Test that with isolate_errors=False fn's exception is raised, its worker traceback chained."""
    with WorkerPool(1, isolate_errors=False) as pool:
        with pytest.raises(ValueError, match=r"^bad item raise:x$") as caught:
            pool.run_batch(h.upper, ["a", "raise:x"])
        cause = caught.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "_pool_helpers.py" in str(cause)
        assert pool.run_batch(h.upper, ["b"]).outputs == ["B"]


def test_that_an_exception_that_cannot_be_unpickled_is_replaced() -> None:
    """Test that an exception the parent cannot rebuild arrives as WorkerTaskError."""
    with (
        WorkerPool(1, isolate_errors=False) as pool,
        pytest.raises(WorkerTaskError, match=r"^NeedsTwoArgsError: first and second$"),
    ):
        pool.run_batch(h.raise_unpicklable, ["a"])


def test_that_fn_must_return_a_list(pool: WorkerPool) -> None:
    """Test that a fn returning a tuple fails its items with a clear TypeError."""
    failures = pool.run_batch(h.not_a_list, ["a"]).failures  # type: ignore[arg-type]
    assert [(f.error_type, f.message) for f in failures] == [
        ("TypeError", "fn must return a list, got tuple")
    ]


def test_that_an_unpicklable_item_is_isolated(pool: WorkerPool) -> None:
    """Test that an item that cannot be sent to a worker fails alone."""
    result = pool.run_batch(h.echo, [1, threading.Lock(), 3])
    assert result.outputs == [1, 3]
    assert [f.error_type for f in result.failures] == ["TypeError"]


def test_that_a_fn_the_worker_cannot_load_fails_the_batch(pool: WorkerPool) -> None:
    """Test that a fn whose module the worker cannot import fails the batch once, not per item."""
    module = types.ModuleType("module_only_in_the_parent")
    exec("def f(items):\n    return items\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(ModuleNotFoundError, match="module_only_in_the_parent"):
            pool.run_batch(module.f, list(range(100)))
    finally:
        del sys.modules[module.__name__]


@settings(max_examples=15, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=300),
    bad=st.sets(st.integers(min_value=0, max_value=299), max_size=5),
)
def test_that_isolation_matches_sequential_processing(
    pool: WorkerPool, size: int, bad: set[int]
) -> None:
    """Test that for any raising items the result equals processing each item on its own."""
    bad = {i for i in bad if i < size}
    items = [f"raise:{i}" if i in bad else f"item{i}" for i in range(size)]
    result = pool.run_batch(h.upper, items)
    assert result.outputs == _expected(items, bad)
    assert [f.item for f in result.failures] == [items[i] for i in sorted(bad)]


def test_that_crashes_and_raises_in_one_batch_are_each_isolated(pool: WorkerPool) -> None:
    """Test that a batch with an item that kills its worker and one that raises fails those two
    only: the parent isolates the crash, the worker the raise."""
    items = _items(300, crash=10, raise_=250)
    result = pool.run_batch(h.upper, items)
    assert result.outputs == _expected(items, {10, 250})
    assert [(f.item, f.error_type) for f in result.failures] == [
        ("crash:10", "WorkerCrashedError"),
        ("raise:250", "ValueError"),
    ]


def test_that_an_output_that_cannot_be_pickled_fails_alone(pool: WorkerPool) -> None:
    """Test that an item whose output cannot be sent back to the parent fails alone."""
    result = pool.run_batch(h.lock_on_marker, ["a", "lock", "b"])
    assert result.outputs == ["a", "b"]
    assert [(f.item, f.error_type) for f in result.failures] == [("lock", "TypeError")]


# -- timeouts ---------------------------------------------------------------------------------


def test_that_an_item_past_the_timeout_fails_alone() -> None:
    """Test that a hanging item is killed, fails alone with TaskTimeoutError, and the rest is done."""
    with WorkerPool(2, task_timeout=1) as pool:
        items = _items(20, sleep=7)
        result = pool.run_batch(h.upper, items)
        assert result.outputs == _expected(items, {7})
        [failure] = result.failures
        assert failure.error_type == "TaskTimeoutError"
        assert failure.message == (
            "task ran longer than task_timeout=1 s while processing item 'sleep:7'; "
            "its worker process was killed"
        )
        assert failure.attempts == 1  # alone once (a timeout is not retried)
        statistics = pool.statistics()
        # The batch of 20 times out and is split 16 ways; "sleep:7" is alone in its part,
        # which times out too.
        assert (statistics.timeouts, statistics.crashed_workers, statistics.splits) == (2, 0, 1)
        assert pool.run_batch(h.upper, ["x"]).outputs == ["X"]


# -- plain calls: submit -------------------------------------------------------------------------


def test_that_submit_returns_the_value_of_one_call(pool: WorkerPool) -> None:
    """Test that submit runs fn(*args) in a worker and its future holds the value."""
    assert [pool.submit(h.add, i, 10).result() for i in range(3)] == [10, 11, 12]


def test_that_a_submitted_call_that_kills_its_worker_raises_worker_crashed(
    pool: WorkerPool,
) -> None:
    """Test that submit's future raises WorkerCrashedError naming the exit, with no retry and no
    isolation, and that the worker is replaced."""
    crashed = pool.statistics().crashed_workers
    with pytest.raises(WorkerCrashedError, match=r"^worker process died with exit code 5$"):
        pool.submit(h.die, 5).result()
    assert pool.statistics().crashed_workers == crashed + 1
    _until(lambda: pool.statistics().workers == 2, "the worker replaced")
    assert pool.submit(h.add, 1, 2).result() == 3


def test_that_a_submitted_call_raises_its_own_exception_with_the_remote_traceback(
    pool: WorkerPool,
) -> None:
    """Test that fn's exception is raised by the future, the worker's traceback as its cause."""
    with pytest.raises(ValueError, match=r"^no such customer$") as caught:
        pool.submit(h.fail, "no such customer").result()
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_pool_helpers.py" in str(cause)


def test_that_a_submitted_call_past_the_timeout_raises_task_timeout() -> None:
    """Test that a call past task_timeout raises TaskTimeoutError and its worker is replaced."""
    with WorkerPool(1, task_timeout=0.5) as pool:
        with pytest.raises(TaskTimeoutError, match=r"^task ran longer than task_timeout=0.5 s"):
            pool.submit(h.sleep_then_pid, [60.0]).result()
        assert pool.statistics().timeouts == 1
        assert pool.submit(h.add, 2, 2).result() == 4


def test_that_the_pool_is_usable_after_many_deaths() -> None:
    """Test that after a dozen deaths in a row the pool still runs calls and batches, at full
    strength."""
    with WorkerPool(2) as pool:
        futures = [pool.submit(h.die, 3) for _ in range(12)]
        for future in futures:
            with pytest.raises(WorkerCrashedError):
                future.result()
        assert pool.statistics().crashed_workers == 12
        _until(lambda: pool.statistics().workers == 2, "both workers replaced")
        assert pool.run_batch(h.upper, ["a", "b"]).outputs == ["A", "B"]


def test_that_submit_checks_its_arguments(pool: WorkerPool) -> None:
    """Test that a lambda fn, arguments that cannot be pickled and a closed pool are refused at
    once."""
    with pytest.raises(TypeError, match=r"^fn must be a picklable module-level callable"):
        pool.submit(lambda: 1)
    with pytest.raises(TypeError, match=r"^the arguments of .* must be picklable"):
        pool.submit(h.echo, [threading.Lock()])
    closed = WorkerPool(1)
    closed.close()
    with pytest.raises(PoolClosedError, match=r"^cannot submit a task to a closed WorkerPool$"):
        closed.submit(h.add, 1, 2)


# -- map_batches ------------------------------------------------------------------------------


def test_that_map_batches_reads_ahead_at_most_max_in_flight(pool: WorkerPool) -> None:
    """Test that the source is never read more than max_in_flight batches ahead of the results."""
    taken = 0

    def source() -> Iterator[list[str]]:
        nonlocal taken
        for b in range(30):
            taken += 1
            yield [f"b{b}-{i}" for i in range(10)]

    outputs = []
    for yielded, result in enumerate(pool.map_batches(h.upper, source(), max_in_flight=3), 1):
        assert taken <= yielded + 3
        outputs.extend(result.outputs)
    assert outputs == [f"B{b}-{i}" for b in range(30) for i in range(10)]


def test_that_unordered_map_batches_yields_every_result(pool: WorkerPool) -> None:
    """Test that ordered=False yields each batch's result exactly once."""
    batches = [[f"b{b}"] for b in range(25)]
    results = list(pool.map_batches(h.upper, batches, ordered=False))
    assert sorted(o for r in results for o in r.outputs) == sorted(f"B{b}" for b in range(25))


def test_that_map_batches_isolates_crashes_per_batch(pool: WorkerPool) -> None:
    """Test that a crasher in one batch of a map costs that item only."""
    batches = [_items(50), _items(50, crash=10), _items(50)]
    results = list(pool.map_batches(h.upper, batches))
    assert [len(r.outputs) for r in results] == [50, 49, 50]
    assert [len(r.failures) for r in results] == [0, 1, 0]


# -- shutdown ---------------------------------------------------------------------------------


def test_that_fork_is_refused() -> None:
    """Test that the fork start method is refused (forked workers inherit each other's fds)."""
    with pytest.raises(ValueError, match="start_method must be one of"):
        WorkerPool(1, start_method="fork")


@pytest.mark.parametrize("start_method", ["exec", "forkserver", "spawn"])
def test_that_close_leaves_no_child_processes(start_method: str) -> None:
    """Test that after close() none of the pool's workers (nor their replacements) is running."""
    others = _worker_pids()  # workers of the shared pool, if it is open
    pool = WorkerPool(2, start_method=start_method)
    seen = set(pool.run_batch(h.pids, [1, 2]).outputs)
    pool.run_batch(h.upper, ["crash:x"])
    _until(lambda: pool.statistics().workers == 2, "replacement started")
    seen |= _worker_pids() - others
    assert len(seen) >= 3  # two first workers and a replacement
    pool.close()
    assert _alive(seen) == set()
    assert _worker_pids() <= others
    assert pool.statistics().workers == 0


def test_that_a_fn_from_main_is_refused_up_front(pool: WorkerPool) -> None:
    """Test that a fn defined in __main__ (which exec'd workers never import) is refused."""
    fn = types.FunctionType(h.echo.__code__, {"__name__": "__main__"}, "script_fn")
    fn.__qualname__ = "script_fn"
    with pytest.raises(TypeError, match=r"^fn 'script_fn' is defined in __main__"):
        pool.submit_batch(fn, [1])


def test_that_submit_after_close_is_refused() -> None:
    """Test that a closed pool refuses batches with PoolClosedError."""
    pool = WorkerPool(1)
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(PoolClosedError, match=r"^cannot submit a batch to a closed WorkerPool$"):
        pool.submit_batch(h.upper, ["a"])


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_that_close_with_cancel_pending_stops_running_and_queued_batches() -> None:
    """Test that close(cancel_pending=True) kills running batches and cancels queued ones."""
    others = _worker_pids()
    pool = WorkerPool(1)
    running = pool.submit_batch(h.sleep_then_pid, [600.0])
    queued = pool.submit_batch(h.upper, ["a"])
    _until(lambda: pool.statistics().busy == 1, "the long batch running")
    pool.close(cancel_pending=True)
    with pytest.raises(PoolClosedError, match="closed before the task finished"):
        running.result()
    with pytest.raises(CancelledError):
        queued.result()
    assert _worker_pids() <= others


@pytest.mark.timeout(HANG_GUARD_SECONDS)
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_that_an_exception_in_the_parent_mid_map_leaves_no_orphans(
    error: type[BaseException],
) -> None:
    """Test that an exception (or Ctrl-C) in the consumer's loop stops every worker promptly."""
    others = _worker_pids()
    seen: set[int] = set()
    with pytest.raises(error, match="consumer failed"), WorkerPool(2) as pool:
        batches = ([0.3] for _ in range(1000))
        for index, result in enumerate(pool.map_batches(h.sleep_then_pid, batches)):
            seen.update(result.outputs)
            if index == 2:
                seen |= _worker_pids() - others
                raise error("consumer failed")
    assert len(seen) == 2
    assert _alive(seen) == set()
    assert _worker_pids() <= others


@pytest.mark.timeout(HANG_GUARD_SECONDS)
def test_that_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """Test that a parent killed with SIGKILL mid-task leaves no worker running."""
    script = textwrap.dedent(
        """
        import sys, time
        from parallel_batch.engine.pool import WorkerPool
        from tests.unit.engine import _pool_helpers as h

        pool = WorkerPool(2)
        pids = pool.run_batch(h.pids, [1]).outputs
        for _ in range(2):
            pool.submit_batch(h.sleep_then_pid, [600.0])
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        workers = {child.pid for child in psutil.Process(parent.pid).children(recursive=True)}
        assert {int(pid) for pid in line.split()} <= workers
    finally:
        parent.kill()
        parent.wait()
    _until(lambda: not _alive(workers), "every worker and helper of the killed parent gone")


# -- building blocks --------------------------------------------------------------------------


def test_that_item_failures_and_results_pickle() -> None:
    """Test that the public records survive pickling (they travel between processes)."""
    result: BatchResult[str, str] = BatchResult(
        ["A"], [ItemFailure("b", "ValueError", "bad", "tb", 2)]
    )
    assert pickle.loads(pickle.dumps(result)) == result


def test_that_usable_cpus_respect_a_cgroup_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Test that a cgroup v2 quota of 1.5 CPUs caps the default pool size at 2, and "max" does not."""
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(pool_cpus, "_CGROUP_V2_CPU_MAX", cpu_max)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    cpu_max.write_text("150000 100000\n")
    assert pool_cpus.usable_cpu_count() == 2
    cpu_max.write_text("max 100000\n")
    assert pool_cpus.usable_cpu_count() == 64
