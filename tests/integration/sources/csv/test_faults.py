"""Faults in the middle of a CSV chunk: an attempt killed mid-way resumes from its checkpoint,
and records that kill their worker process are isolated and dead-lettered at their lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from parallel_batch.core.transforms import TransformSpec
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.engine.pool import WorkerPool
from tests.helpers.customers_csv import customers_csv, dead_letters, target_rows
from tests.helpers.segment_server import SegmentServer, segment_of
from tests.integration.sources.csv.crash_transform import CRASH_NAME
from tests.integration.sources.csv.csv_jobs import check_exact, customers_spec, plan, run

PROJECT = Path(__file__).resolve().parents[4]  # where `include` is imported from

_WORKER = """
import logging, sys
sys.path.insert(0, sys.argv[4])
from parallel_batch.core.planning import stored_spec
from parallel_batch.core.runner import run_chunk
from parallel_batch.sources import source_from_dict
from parallel_batch.store.checkpoints import CheckpointStore
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
url, job_key, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
with CheckpointStore.connect(url) as store:
    job = store.get_job(job_key)
spec = stored_spec(job, source_from_dict)
print("started", flush=True)
run_chunk(spec, job_key, job.plan[chunk], conninfo=url)
print("done", flush=True)
"""


def test_killed_chunk_resumes_without_loss_or_duplicates(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that a chunk SIGKILLed in a subprocess mid-way (enriching over HTTP) resumes after
    its last committed batch, from its {"offset", "line"} checkpoint."""
    case = customers_csv(tmp_path / "customers.csv", 1_200, duplicates={10: None, 97: 1100})
    with SegmentServer(delay=0.003) as server:
        enrich = TransformSpec(
            "include.transforms.customers:enrich",
            "async",
            concurrency=4,
            retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05),
            kwargs={"url": server.url},
        )
        spec = customers_spec(pg_url, case.path, transform=enrich, batch_rows=40)
        job = plan(pg_url, "killed", spec, chunks=1)
        # The worker's batches: MIN_BATCH_BYTES (16 KiB) each, about 160 records.
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER, pg_url, "killed", "0", str(PROJECT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "started"
            deadline = time.monotonic() + 60
            done = 0
            while done < 300 and time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.01)
                row = pg_conn.execute(
                    "SELECT rows_read FROM parallel_batch.chunks WHERE job_key = 'killed'"
                ).fetchone()
                done = int(row[0]) if row else 0
            assert worker.poll() is None, "the chunk finished before it could be killed"
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            worker.kill()
            worker.wait()
        status, committed, checkpoint = pg_conn.execute(
            "SELECT status, rows_read, last_key FROM parallel_batch.chunks WHERE job_key = 'killed'"
        ).fetchone()  # type: ignore[misc]
        assert status == "running" and 300 <= committed < case.records
        assert set(checkpoint) == {"offset", "line"}

        (summary,) = run(pg_url, job, spec)

    assert summary.attempt == 2 and summary.resumed_from == checkpoint
    assert summary.rows_this_attempt == case.records - committed
    check_exact(pg_conn, "killed", case, lambda i: segment_of(case.rows[i][2]))


def test_a_record_that_kills_its_worker_is_a_dead_letter_at_its_line(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that records that end their worker process are isolated by splitting their batch on
    record boundaries (CsvChunkReader.split) and dead-lettered at their true lines; the records
    around them, multi-line ones included, load once."""
    crashing = {20, 21, 45}  # two in a row: a part of the split holds both
    path = tmp_path / "customers.csv"
    data = b"id,name,email,amount,note,created_at\r\n"
    lines: dict[int, int] = {}
    for i in range(1, 61):
        lines[i] = data.count(b"\n") + 1
        name = CRASH_NAME if i in crashing else f"Name {i}"
        note = f'"note\r\nof {i}"' if i % 2 else ""
        data += f"{i},{name},c{i}@example.com,{i}.00,{note},2024-01-01T00:00:00Z\r\n".encode()
    path.write_bytes(data)
    transform = TransformSpec("tests.integration.sources.csv.crash_transform:check_or_crash")
    spec = customers_spec(pg_url, path, transform=transform)
    job = plan(pg_url, "crash", spec, chunks=1)

    with WorkerPool(1) as pool:
        (summary,) = run(pg_url, job, spec, pool=pool)

    assert (summary.rows_read, summary.rows_written, summary.rows_failed) == (60, 57, 3)
    assert [row[0] for row in target_rows(pg_conn)] == sorted(set(range(1, 61)) - crashing)
    assert pg_conn.execute("SELECT note FROM demo.customers WHERE id = 19").fetchone() == (
        "note\r\nof 19",
    )
    found = dead_letters(pg_conn, "crash")
    assert sorted(found) == sorted(lines[i] for i in crashing)
    assert {error_type for error_type, _ in found.values()} == {"WorkerCrashedError"}
