"""End-to-end tests of the local Airflow: REST API v2 triggers, backfills, clean teardown."""

from __future__ import annotations

import json

import psycopg
import pytest

from parallel_batch import __version__
from tests.e2e.conftest import AirflowClient, AirflowStarter

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_trigger_with_conf_runs_mapped_tasks(airflow: AirflowClient) -> None:
    """Test that a run triggered through the REST API with a conf maps over the conf's items."""
    airflow.wait_for_dag("e2e_mapped")
    airflow.unpause("e2e_mapped")

    run_id = airflow.trigger("e2e_mapped", {"items": [2, 3, 5], "factor": 10})
    run = airflow.wait_for_run("e2e_mapped", run_id)

    assert run["state"] == "success"
    assert run["conf"] == {"items": [2, 3, 5], "factor": 10}
    mapped = [
        ti for ti in airflow.task_instances("e2e_mapped", run_id) if ti["task_id"] == "multiply"
    ]
    assert sorted(ti["map_index"] for ti in mapped) == [0, 1, 2]
    assert {ti["state"] for ti in mapped} == {"success"}
    values = [airflow.xcom("e2e_mapped", run_id, "multiply", ti["map_index"]) for ti in mapped]
    assert sorted(values) == [20, 30, 50]
    assert airflow.xcom("e2e_mapped", run_id, "total") == 100


def test_backfill_runs_each_day_with_its_interval(airflow: AirflowClient, e2e_db_url: str) -> None:
    """Test that `airflow backfill create` over 3 days runs 3 runs, each with its own interval."""
    with psycopg.connect(e2e_db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE e2e_intervals"
            " (run_id text PRIMARY KEY, interval_start timestamptz, interval_end timestamptz)"
        )
    airflow.wait_for_dag("e2e_daily")
    airflow.unpause("e2e_daily")

    airflow.cli(
        "backfill", "create", "--dag-id", "e2e_daily",
        "--from-date", "2024-01-02", "--to-date", "2024-01-04",
    )  # fmt: skip
    runs = airflow.dag_runs("e2e_daily", run_type="backfill")
    finished = [airflow.wait_for_run("e2e_daily", run["dag_run_id"]) for run in runs]

    assert [run["state"] for run in finished] == ["success"] * 3
    with psycopg.connect(e2e_db_url) as conn:
        rows = conn.execute(
            "SELECT interval_start::date::text, interval_end::date::text FROM e2e_intervals"
            " ORDER BY interval_start"
        ).fetchall()
    assert rows == [
        ("2024-01-02", "2024-01-03"),
        ("2024-01-03", "2024-01-04"),
        ("2024-01-04", "2024-01-05"),
    ]


def test_provider_and_plugin_are_registered(airflow: AirflowClient) -> None:
    """Test that Airflow lists our provider and plugin, and the api-server mounts the plugin app."""
    plugins = airflow.request("GET", "/plugins")["plugins"]
    alive = airflow.http.get(f"{airflow.url}/parallel-batch/api/health")
    providers = json.loads(airflow.cli("providers", "list", "--output", "json"))

    assert [p["name"] for p in plugins if p["name"] == "parallel_batch"] == ["parallel_batch"]
    assert alive.json() == {"plugin": "parallel_batch", "status": "alive", "version": __version__}
    assert "airflow-parallel-batch" in {p["package_name"] for p in providers}


def test_stop_leaves_no_process(start_airflow: AirflowStarter) -> None:
    """Test that stopping the local Airflow ends every process it started, and frees its port."""
    from parallel_batch.local.services import port_is_free

    client = start_airflow()
    services = client.airflow.processes()
    assert len(services) >= 3

    start_airflow.stop()

    assert client.airflow.processes() == []
    assert not any(proc.is_running() and proc.status() != "zombie" for proc in services)
    assert port_is_free(client.airflow.host, client.airflow.port)
