"""Tests of parallel_batch.airflow.plugin: the progress view as the api-server mounts it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def _client() -> TestClient:
    """The plugin's app, without Airflow's authentication (the e2e test covers it)."""
    import functools

    from parallel_batch.airflow import plugin
    from parallel_batch.airflow.connection import DEFAULT_CONN_ID, resolve_conninfo
    from parallel_batch.progress.app import create_app

    assert plugin.ParallelBatchPlugin.fastapi_apps[0]["url_prefix"] == "/parallel-batch"
    return TestClient(create_app(functools.partial(resolve_conninfo, DEFAULT_CONN_ID)))


def test_missing_connection_is_shown_never_another_database(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    """Test that without parallel_batch_default the page says what is missing, and reads no
    other database (not PARALLEL_BATCH_DATABASE_URL, not the embedded server)."""
    monkeypatch.delenv("AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT", raising=False)
    monkeypatch.setenv("PARALLEL_BATCH_DATABASE_URL", pg_url)

    with _client() as client:
        html = client.get("/")
        api = client.get("/api/jobs")

    assert html.status_code == 503
    assert "No database connection for parallel_batch" in html.text
    assert "parallel_batch_default" in html.text and "Traceback" not in html.text
    assert api.json()["error"]["code"] == "connection"
