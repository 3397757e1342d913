"""Helpers of the end-to-end tests of ``parallel_batch_table``: data, checkpoints, task processes.

The expected rows and dead letters are computed in SQL by ``tests/airflow/dagrun.py``
(``mismatches``, ``bad_rows``, ``dead_letters``); what is here is what only a real scheduler
needs: the state of a job's chunks while it runs, and the process of a running task instance.
No ``import airflow``: the test process talks to Airflow through its REST API only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg
from psycopg import sql

from parallel_batch.demo import events as demo
from parallel_batch.store.checkpoints import CheckpointStore, ChunkState
from parallel_batch.store.identifiers import table_sql
from tests.e2e.conftest import AirflowClient

DAG_ID = "parallel_batch_table"
# Seconds between two polls of the checkpoint table while a chunk runs. Shorter: a kill lands
# closer to the checkpoint it waited for; longer: fewer queries on two busy cores.
POLL_INTERVAL = 0.05
# Seconds between two REST polls for a task instance to run (each lists the run's instances).
TASK_POLL_INTERVAL = 0.5
# Seconds to wait for a chunk to reach a state, and for a killed process tree to be gone.
CHUNK_TIMEOUT = 180.0
EXIT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Tables:
    """A test's own source and target tables (a schema of its own in the session database).

    :param schema: the schema both live in.
    """

    schema: str

    @property
    def source(self) -> str:
        return f"{self.schema}.events"

    @property
    def target(self) -> str:
        return f"{self.schema}.events_enriched"

    def conf(self, **params: Any) -> dict[str, Any]:
        """Return a run conf for these tables, with ``params`` on top."""
        return {"source_table": self.source, "target_table": self.target, **params}


def seed(
    conn: psycopg.Connection,
    tables: Tables,
    rows: int,
    *,
    poison_every: int | None = None,
    crash_every: int | None = None,
) -> None:
    """(Re)create ``tables.source`` with the demo's rows; drop ``tables.target`` if it exists."""
    demo.seed_events(
        conn, rows, poison_every=poison_every, crash_every=crash_every, table=tables.source
    )
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table_sql(tables.target)))


def dead_letter_count(conn: psycopg.Connection, job_key: str) -> int:
    """Return a job's pending dead-letter rows (a row recorded twice counts twice)."""
    row = conn.execute(
        "SELECT count(*) FROM parallel_batch.dead_letters"
        " WHERE job_key = %s AND replayed_at IS NULL",
        (job_key,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def chunk_states(url: str, job_key: str) -> list[ChunkState]:
    """Return a job's chunks as the status view sees them (liveness included)."""
    with CheckpointStore.connect(url, application_name="e2e test") as store:
        return store.chunk_rows(job_key)


def wait_for_chunk(
    url: str,
    job_key: str,
    condition: Callable[[ChunkState], bool],
    what: str,
    *,
    timeout: float = CHUNK_TIMEOUT,
    check: Callable[[], None] | None = None,
) -> ChunkState:
    """Poll the job's chunks until one satisfies ``condition``; return it.

    :param what: the awaited state in words, for the failure message.
    :param check: called on every poll (e.g. to fail fast when Airflow died).
    """
    deadline = time.monotonic() + timeout
    last: list[ChunkState] = []
    with CheckpointStore.connect(url, application_name="e2e test") as store:
        while time.monotonic() < deadline:
            if check is not None:
                check()
            last = store.chunk_rows(job_key)
            for chunk in last:
                if condition(chunk):
                    return chunk
            time.sleep(POLL_INTERVAL)
    raise AssertionError(f"no chunk of job {job_key} {what} within {timeout:.0f} s: {last}")


def _titled(title: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if " ".join(proc.info["cmdline"] or ()).startswith(title):
            found.append(proc)
    return found


def wait_for_task_process(
    airflow: AirflowClient,
    run_id: str,
    task_id: str,
    map_index: int = -1,
    *,
    timeout: float = CHUNK_TIMEOUT,
) -> tuple[dict[str, Any], psutil.Process]:
    """Wait until a task instance runs; return it (as the REST API lists it) and its process.

    Airflow 3's task runner titles its process ``airflow worker -- <task instance id>``; the
    REST API's ``pid`` of the running task instance must name the same process.
    """
    deadline = time.monotonic() + timeout
    while True:
        airflow.airflow.check_alive()
        tis = [
            ti
            for ti in airflow.task_instances(DAG_ID, run_id)
            if (ti["task_id"], ti["map_index"]) == (task_id, map_index)
        ]
        if tis and tis[0]["state"] == "running" and tis[0]["pid"]:
            ti = tis[0]
            found = _titled(f"airflow worker -- {ti['id']}")
            if found:
                assert len(found) == 1, f"{len(found)} processes run {ti['id']}: {found}"
                assert ti["pid"] == found[0].pid, f"REST pid {ti['pid']}, process {found[0]}"
                return ti, found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{task_id}[{map_index}] of {run_id} not running: {tis}")
        time.sleep(TASK_POLL_INTERVAL)


def wait_until_gone(procs: list[psutil.Process], timeout: float = EXIT_TIMEOUT) -> list[str]:
    """Wait until every process of ``procs`` has exited; return those still alive (described)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [_describe(p) for p in procs if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_INTERVAL)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())}"
    except psutil.Error:
        return str(proc.pid)
