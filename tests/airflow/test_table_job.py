"""ParallelTableJob through real Airflow (dag.test()), one transform kind at a time.

The transforms (tests/airflow/kind_transforms.py) enrich demo.events, filter rows whose amount is
0, fan rows over 9000 out into a second row, fail the rows listed in PB_TEST_FAIL_IDS, and (the
sync kinds) kill their worker process on a ``crash:`` row. Every outcome is computed in SQL from
the source, independently of the job.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import psycopg
import pytest

from parallel_batch.demo.events import seed_events
from parallel_batch.demo.tables import create_events_enriched
from parallel_batch.local import env as localenv
from tests.airflow.dagrun import DAGS_FOLDER, dead_letters, run_dag
from tests.airflow.kind_transforms import FAIL_ENV, FAN_OUT_AMOUNT, FAN_OUT_OFFSET

ROWS = 3_000
CRASH_EVERY = 997
FAILING = (7, 1_501)  # neither filtered (amount 0) nor a crash row
KINDS = {"rows": "rows", "batch": "batch", "dataframe": "frame", "async": "rows_async"}

_DAG = """
import datetime as dt

from airflow.sdk import DAG

from parallel_batch.airflow import ParallelTableJob

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)):
    ParallelTableJob(
        group_id="job",
        source_table="demo.events",
        target_table="demo.events_enriched",
        transform="tests.airflow.kind_transforms:{function}",
        transform_kind="{kind}",
        chunks=3,
        batch_rows=200,
        workers=2,
        concurrency=8,
        job_key="{job_key}",
        conn_id="{conn_id}",
        target_conn_id="parallel_batch_default",
        asset=False,
    )
"""

# What the target must hold: every source row but the filtered, failed and crash ones, enriched,
# plus a second row for the big ones.
_EXPECTED = """
SELECT id, user_id, encode(sha256(convert_to(payload, 'UTF8')), 'hex'), (amount * 100)::bigint,
       created_at
FROM demo.events WHERE NOT (id = ANY(%(gone)s)) AND (%(batch)s OR amount <> 0)
UNION ALL
SELECT id + %(offset)s, user_id, encode(sha256(convert_to(payload, 'UTF8')), 'hex'),
       (amount * 100)::bigint, created_at
FROM demo.events WHERE NOT (id = ANY(%(gone)s)) AND NOT %(batch)s AND amount > %(big)s
ORDER BY 1
"""


def _dag(folder: Path, kind: str, *, conn_id: str = "parallel_batch_default") -> object:
    from airflow.dag_processing.dagbag import DagBag

    dag_id = f"kind_{kind}"
    (folder / f"{dag_id}.py").write_text(
        textwrap.dedent(
            _DAG.format(
                dag_id=dag_id,
                function=KINDS[kind],
                kind=kind,
                job_key=f"{dag_id}-job",
                conn_id=conn_id,
            )
        )
    )
    dag = DagBag(str(folder)).get_dag(dag_id)
    assert dag is not None
    return dag


def _replay_dag(folder: Path) -> object:
    """The project's replay DAG, from the test's DAGs folder (dag.test() runs a DAG of its bundle)."""
    from airflow.dag_processing.dagbag import DagBag

    shutil.copy(DAGS_FOLDER / "parallel_batch_replay.py", folder)
    dag = DagBag(str(folder)).get_dag("parallel_batch_replay")
    assert dag is not None
    return dag


def _seed(conn: psycopg.Connection) -> tuple[list[int], list[int]]:
    """Seed the source; return the zero-amount ids and the crash ids."""
    seed_events(conn, ROWS, crash_every=CRASH_EVERY)
    create_events_enriched(conn)
    conn.execute("UPDATE demo.events SET amount = 0 WHERE id % 50 = 0")
    zero = [i for (i,) in conn.execute("SELECT id FROM demo.events WHERE amount = 0")]
    crash = [i for (i,) in conn.execute("SELECT id FROM demo.events WHERE payload LIKE 'crash:%'")]
    return zero, crash


def _expected(conn: psycopg.Connection, kind: str, gone: list[int]) -> list[tuple[object, ...]]:
    params = {
        "gone": gone,
        "batch": kind == "batch",
        "offset": FAN_OUT_OFFSET,
        "big": FAN_OUT_AMOUNT,
    }
    return conn.execute(_EXPECTED, params).fetchall()


def _target(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT * FROM demo.events_enriched ORDER BY id").fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_filters_fans_out_isolates_and_replays(
    kind: str,
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    tmp_dags_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test that each kind writes exactly the expected rows, counts filtered and fan-out rows,
    dead-letters failing and crashing rows with their reason, and replays them after a fix."""
    zero, crash = _seed(pg_conn)
    crashing = crash if kind != "async" else []  # an async transform runs in the task process
    monkeypatch.setenv(FAIL_ENV, ",".join(map(str, FAILING)))
    dag = _dag(tmp_dags_folder, kind)

    result = run_dag(dag, {})

    assert result.state == "success", result.tis
    gone = [*FAILING, *crashing]
    expected = _expected(pg_conn, kind, gone)
    assert _target(pg_conn) == expected
    summary = result.xcom("job.summarize")
    written = len(expected)
    fanout = 0 if kind == "batch" else written - (ROWS - len(zero) - len(gone))
    filtered = 0 if kind == "batch" else len(zero)
    assert fanout > 0 or kind == "batch"
    assert (summary["rows_read"], summary["rows_written"]) == (ROWS, written)
    assert (summary["rows_filtered"], summary["rows_fanout"]) == (filtered, fanout), str(summary)
    assert summary["rows_failed"] == summary["dead_letters"] == len(gone)
    letters = dead_letters(pg_conn, f"kind_{kind}-job")
    assert letters == {
        **{str(i): "FlakyRowError" for i in FAILING},
        **{str(i): "WorkerCrashedError" for i in crashing},
    }

    # The fix: the rows no longer fail (crash rows still do); replay the dead letters.
    monkeypatch.delenv(FAIL_ENV)
    replay = run_dag(
        _replay_dag(tmp_dags_folder), {"job_key": f"kind_{kind}-job", "max_failed_ratio": 1}
    )

    assert replay.state == "success", replay.tis
    totals = replay.xcom("replay")
    assert (totals["replayed"], totals["failed_again"]) == (len(FAILING), len(crashing))
    assert _target(pg_conn) == _expected(pg_conn, kind, crashing)
    assert dead_letters(pg_conn, f"kind_{kind}-job") == {
        str(i): "WorkerCrashedError" for i in crashing
    }


@pytest.mark.slow
def test_source_in_another_database(
    parallel_batch_conn: str,
    pg_conn: psycopg.Connection,
    pg_server_url: str,
    tmp_dags_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test that a job reads its source through conn_id and keeps its target, checkpoints and
    dead letters in target_conn_id's database, writing nothing into the source's."""
    import uuid

    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"pbtest_source_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    source_url = make_conninfo(pg_server_url, dbname=name)
    try:
        with psycopg.connect(source_url, autocommit=True) as source:
            seed_events(source, 1_000)
        create_events_enriched(pg_conn)
        monkeypatch.setenv("AIRFLOW_CONN_PB_SOURCE", localenv.connection_json(source_url))

        result = run_dag(_dag(tmp_dags_folder, "batch", conn_id="pb_source"), {})

        assert result.state == "success", result.tis
        assert pg_conn.execute("SELECT count(*) FROM demo.events_enriched").fetchone() == (1_000,)
        assert pg_conn.execute("SELECT to_regclass('demo.events')").fetchone() == (None,)
        assert pg_conn.execute(
            "SELECT status, rows_read FROM parallel_batch.jobs WHERE job_key = 'kind_batch-job'"
        ).fetchone() == ("completed", 1_000)
        with psycopg.connect(source_url) as source:
            schema = source.execute("SELECT to_regnamespace('parallel_batch')").fetchone()
        assert schema == (None,)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
