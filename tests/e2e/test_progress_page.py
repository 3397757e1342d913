"""End-to-end test of the progress view: the page and its JSON served by the real api-server."""

from __future__ import annotations

import uuid

import pytest

from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.deadletters import DeadLetter
from tests.e2e.conftest import AirflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_api_server_serves_the_progress_view(airflow: AirflowClient, e2e_db_url: str) -> None:
    """Test that the api-server mounts the page, reads parallel_batch_default, links it in the UI."""
    key = f"e2e_progress:{uuid.uuid4().hex[:8]}"
    plan = [{"chunk_id": "(-inf,10]", "rows": 10}, {"chunk_id": "(10,+inf]", "rows": 10}]
    with CheckpointStore.connect(e2e_db_url) as store:
        store.ensure_job(key, kind="table", plan=plan, source="demo.src", target="demo.dst")
        lease = store.acquire(key, "(-inf,10]", holder="e2e")
        letter = DeadLetter("7", None, {"id": 7}, "PoisonRowError", "row 7 is poison")
        store.commit_batch(lease, last_key=10, rows_read=10, dead_letters=[letter])
        store.complete(lease)

    page = airflow.http.get(f"{airflow.url}/parallel-batch/job", params={"key": key})
    listing = airflow.http.get(f"{airflow.url}/parallel-batch/")
    job = airflow.http.get(f"{airflow.url}/parallel-batch/api/job", params={"key": key})
    icon = airflow.http.get(f"{airflow.url}/parallel-batch/static/icon.svg")
    plugins = airflow.request("GET", "/plugins")["plugins"]

    assert page.status_code == 200, page.text
    assert "row 7 is poison" in page.text and "parallel_batch_replay" in page.text
    assert 'href="/parallel-batch/static/style.css' in page.text  # links under the mount
    assert listing.status_code == 200 and "e2e_progress:" in listing.text
    body = job.json()
    assert (body["job"]["status"], body["job"]["chunks_completed"]) == ("running", 1)
    assert (body["job"]["rows_done"], body["job"]["rows_total"]) == (10, 20)
    assert body["dead_letters"]["by_error_type"] == {"PoisonRowError": 1}
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    (plugin,) = [p for p in plugins if p["name"] == "parallel_batch"]
    (view,) = plugin["external_views"]
    assert (view["url_route"], view["href"], view["destination"]) == (
        "parallel-batch",
        "parallel-batch/",
        "nav",
    )
