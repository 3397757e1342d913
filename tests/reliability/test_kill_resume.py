"""Kill tests: a table job SIGKILLed at random moments and resumed ends with every row exactly once.

A real subprocess (``tests/reliability/chunk_worker.py``) runs the chunks of a seeded
``demo.events`` job with poison rows on the chunk-job core; it is SIGKILLed at random moments
(during start-up, reads, transforms, commits, chunk completion) and started again each time. At the end the target must
hold every expected row exactly once with the values SQL computes independently, and the dead
letters exactly the poison rows. Set ``KILL_TEST_SEED`` to replay a run's kill moments.
"""

from __future__ import annotations

import ast
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from parallel_batch.engine.pool import WorkerPool
from parallel_batch.store.checkpoints import CheckpointStore
from tests.helpers.events_job import check_job, events_spec, plan, run_job, seed

PROJECT_ROOT = Path(__file__).resolve().parents[2]

KILLS = 20
ROWS = 600_000
POISON_EVERY = 997
BATCH_ROWS = 200
CHUNKS = 4
# A kill lands this long at most after the worker said "started" (imports done). The worker
# needs more than KILLS * MAX_KILL_DELAY / 2 seconds for the whole job (ROWS: about 7 s
# uninterrupted on 2 shared cores), so most kills land before the end, and the final, unkilled
# run still has work left.
MAX_KILL_DELAY = 0.5
START_TIMEOUT = 60.0


def _start_worker(url: str, job_key: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.reliability.chunk_worker",
            "--url",
            url,
            "--job-key",
            job_key,
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


@pytest.mark.slow
def test_that_a_job_killed_at_random_moments_ends_exactly_once(pg_url: str, tmp_path: Path) -> None:
    """Test that 20 SIGKILLs and resumes leave every row exactly once and the poison dead-lettered."""
    kill_seed = int(os.environ.get("KILL_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(kill_seed)
    seed(pg_url, ROWS, poison_every=POISON_EVERY)
    job = plan(pg_url, "kill-test", events_spec(pg_url, batch_rows=BATCH_ROWS), chunks=CHUNKS)
    assert len(job.plan) == CHUNKS

    killed = 0
    for attempt in range(KILLS):
        worker = _start_worker(pg_url, "kill-test", tmp_path / f"worker-{attempt}.log")
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "started", f"seed {kill_seed}"
            try:
                worker.wait(rng.uniform(0.0, MAX_KILL_DELAY))
            except subprocess.TimeoutExpired:
                worker.send_signal(signal.SIGKILL)
        finally:
            worker.kill()
            worker.wait(START_TIMEOUT)
            if worker.stdout is not None:
                worker.stdout.close()
        if worker.returncode == -signal.SIGKILL:
            killed += 1
        else:
            assert worker.returncode == 0, (tmp_path / f"worker-{attempt}.log").read_text()

    final = _start_worker(pg_url, "kill-test", tmp_path / "final.log")
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, (tmp_path / "final.log").read_text()
    *printed, last = out.strip().splitlines()
    assert last == "done"
    final_rows = sum(ast.literal_eval(line)["rows_this_attempt"] for line in printed[1:])
    assert final_rows > 0, f"seed {kill_seed}: the job ended before the last kill"

    with psycopg.connect(pg_url, autocommit=True) as conn:
        check = check_job(conn, "kill-test")
        with CheckpointStore(conn) as store:
            status = store.job_status("kill-test")
            chunks = store.chunk_rows("kill-test")
    assert check.exact, f"seed {kill_seed}: {check}"
    assert check.expected_rows == ROWS - ROWS // POISON_EVERY
    assert status is not None and status.job.status == "completed", f"seed {kill_seed}: {status}"
    assert status.rows_read == ROWS
    assert status.rows_written == check.target_rows
    assert status.rows_failed == len(check.failing_keys) == status.dead_letters
    # The kills did interrupt the job: most landed before its end, and chunks were resumed.
    assert killed >= KILLS // 2, f"seed {kill_seed}: only {killed} kills landed before the end"
    assert sum(c.attempts for c in chunks) > CHUNKS, f"seed {kill_seed}: no chunk was resumed"
    print(f"seed {kill_seed}: {killed} kills, attempts {[c.attempts for c in chunks]}")


def test_that_rows_that_crash_their_worker_become_dead_letters(pg_url: str) -> None:
    """Test that through the WorkerPool, crash rows end in the dead letters and the rest in the target."""
    seed(pg_url, 1_200, poison_every=301, crash_every=700)
    # Small batches: isolating a crash row costs a dead worker per split of its batch, and
    # CRASH_RETRY's tries of the row alone.
    plan(pg_url, "crash-test", events_spec(pg_url, batch_rows=32), chunks=2)
    with WorkerPool(max_workers=2, crash_retries=0) as pool:
        summaries = run_job(pg_url, "crash-test", pool=pool)
        crashed = pool.statistics().crashed_workers
    with psycopg.connect(pg_url, autocommit=True) as conn:
        check = check_job(conn, "crash-test")
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT item_key, error_type FROM parallel_batch.dead_letters"
                " WHERE job_key = 'crash-test'"
            ).fetchall()
        )
        crash_keys = {
            key
            for (key,) in conn.execute(
                "SELECT id::text FROM demo.events WHERE payload LIKE 'crash:%'"
            ).fetchall()
        }
    assert check.exact, check
    assert crash_keys and crashed >= len(crash_keys)
    assert {k for k, t in types.items() if t == "WorkerCrashedError"} == crash_keys
    assert {t for k, t in types.items() if k not in crash_keys} == {"PoisonRowError"}
    assert sum(s.rows_read for s in summaries) == 1_200
    assert all(s.reconciles for s in summaries)
