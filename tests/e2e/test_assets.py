"""End-to-end: a job's summarize task emits its target table's Asset event, and the scheduler
starts the DAG scheduled on that Asset, which sees the job's rows in the event's extra."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.e2e.conftest import AirflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROWS = 500
# Seconds to wait for the scheduler to create the Asset-triggered run.
TRIGGER_TIMEOUT = 120.0


def test_summarize_emits_the_target_asset_and_triggers_its_consumer(
    airflow: AirflowClient, e2e_db_url: str
) -> None:
    """Test that a run of the producer makes the scheduler run the consumer with the event."""
    with psycopg.connect(e2e_db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS e2e_asset_source, e2e_asset_target, e2e_asset_events")
        conn.execute("CREATE TABLE e2e_asset_source (id bigint PRIMARY KEY, note text)")
        conn.execute(
            "INSERT INTO e2e_asset_source SELECT i, 'note ' || i FROM generate_series(1, %s) i",
            (ROWS,),
        )
        conn.execute("CREATE TABLE e2e_asset_target (id bigint PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE e2e_asset_events (run_id text, uri text, extra jsonb)")
    consumer = airflow.wait_for_dag("e2e_asset_consumer")
    airflow.wait_for_dag("e2e_asset_producer")
    airflow.unpause("e2e_asset_consumer")
    airflow.unpause("e2e_asset_producer")
    assert consumer["timetable_summary"] != "None"  # scheduled on the Asset

    run_id = airflow.trigger("e2e_asset_producer")
    assert airflow.wait_for_run("e2e_asset_producer", run_id)["state"] == "success"

    deadline = time.monotonic() + TRIGGER_TIMEOUT
    runs: list[dict[str, object]] = []
    while time.monotonic() < deadline and not runs:
        runs = [
            r for r in airflow.dag_runs("e2e_asset_consumer") if r["run_type"] == "asset_triggered"
        ]
        time.sleep(1)
    assert runs, "the scheduler created no Asset-triggered run of the consumer"
    (run,) = runs
    assert airflow.wait_for_run("e2e_asset_consumer", str(run["dag_run_id"]))["state"] == "success"
    with psycopg.connect(e2e_db_url) as conn:
        events = conn.execute("SELECT uri, extra FROM e2e_asset_events").fetchall()
        copied = conn.execute("SELECT count(*) FROM e2e_asset_target").fetchone()
    assert copied == (ROWS,)
    ((uri, extra),) = events
    assert uri.startswith("postgres://") and uri.endswith("/public/e2e_asset_target")
    assert extra["rows_written"] == ROWS and extra["rows_read"] == ROWS
    assert extra["dead_letters"] == 0 and extra["job_key"].startswith("e2e_asset_producer:")
