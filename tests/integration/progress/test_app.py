"""Tests of the progress view's app (HTML and JSON) on a real checkpoint store, without Airflow."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from parallel_batch import __version__
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.progress.app import create_app
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.deadletters import DeadLetter
from parallel_batch.store.schema import ensure_schema

JOB = "parallel_batch_table:2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"
DONE_JOB = "parallel_batch_table:manual__2024-01-01T00:00:00+00:00"
PLAN = [
    {"chunk_id": "(-inf,100]", "rows": 100},
    {"chunk_id": "(100,200]", "rows": 100},
    {"chunk_id": "(200,300]", "rows": 100},
    {"chunk_id": "(300,+inf]", "rows": 100},
]
# In every dead letter's payload: it must never reach the page or the JSON.
SECRET = "secret-payload-value"


def _insert(rows: int) -> Callable[[psycopg.Connection], int]:
    def write(conn: psycopg.Connection) -> int:
        return conn.execute("INSERT INTO target SELECT generate_series(1, %s)", (rows,)).rowcount

    return write


def _letter(key: int, error_type: str, message: str) -> DeadLetter:
    return DeadLetter(str(key), None, {"id": key, "payload": SECRET}, error_type, message)


@pytest.fixture
def holder(pg_url: str, pg_conn: psycopg.Connection) -> Iterator[CheckpointStore]:
    """A job of 4 chunks: completed (2 dead letters), running (held), failed (1 dead letter),
    pending; and an older completed job. Yields the store that holds the running chunk."""
    pg_conn.execute("CREATE TABLE target (id int)")
    with CheckpointStore.connect(pg_url) as setup:
        setup.ensure_job(DONE_JOB, kind="table", plan=PLAN[:1], source="demo.a", target="demo.b")
        lease = setup.acquire(DONE_JOB, PLAN[0]["chunk_id"], holder="worker-z")
        setup.commit_batch(lease, last_key=100, rows_read=100, write=_insert(100))
        setup.complete(lease)
        setup.ensure_job(
            JOB,
            kind="table",
            plan=PLAN,
            params={"dag_id": "parallel_batch_table", "run_id": "scheduled__2024-01-02"},
            source="demo.events",
            target="demo.events_enriched",
        )
        done = setup.acquire(JOB, "(-inf,100]", holder="worker-a")
        setup.commit_batch(
            done,
            last_key=100,
            rows_read=100,
            write=_insert(98),
            dead_letters=[
                _letter(7, "PoisonRowError", "event 7 is poison"),
                _letter(9, "PoisonRowError", "event 9 is poison"),
            ],
        )
        setup.complete(done)
        failed = setup.acquire(JOB, "(200,300]", holder="worker-c")
        setup.commit_batch(
            failed,
            last_key=230,
            rows_read=30,
            write=_insert(29),
            dead_letters=[_letter(213, "WorkerCrashedError", "worker died on event 213")],
        )
        setup.fail(failed, "OperationalError: server closed the connection")
    store = CheckpointStore.connect(pg_url)
    running = store.acquire(JOB, "(100,200]", holder="worker-b")
    store.commit_batch(running, last_key=150, rows_read=50, write=_insert(50))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def client(pg_url: str) -> Iterator[TestClient]:
    """A client of the app reading the test's database."""
    with TestClient(create_app(lambda: pg_url)) as test_client:
        yield test_client


def _job(client: TestClient, key: str = JOB) -> dict[str, Any]:
    response = client.get("/api/job", params={"key": key})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_job_list_json_gives_each_jobs_progress(
    holder: CheckpointStore, client: TestClient
) -> None:
    """Test that /api/jobs gives state, chunk counts, rows done/total, percent and dead letters."""
    response = client.get("/api/jobs")

    assert response.status_code == 200
    jobs = response.json()["jobs"]
    assert [j["job_key"] for j in jobs] == [JOB, DONE_JOB]
    job = jobs[0]
    assert job["status"] == "running"
    assert (job["chunks_completed"], job["chunks_running"], job["chunks_failed"]) == (1, 1, 1)
    assert (job["chunks_pending"], job["chunks_total"]) == (1, 4)
    assert (job["rows_done"], job["rows_total"], job["dead_letters"]) == (180, 400, 3)
    assert job["percent"] == pytest.approx(45.0)
    assert (job["dag_id"], job["run_id"]) == ("parallel_batch_table", "scheduled__2024-01-02")
    assert jobs[1]["status"] == "completed" and jobs[1]["eta_seconds"] == 0.0


def test_job_list_page_shows_bars_counts_and_links(
    holder: CheckpointStore, client: TestClient
) -> None:
    """Test that the job list page shows each job's bar, rows, chunks and dead letters."""
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<progress class="running" value="45.0" max="100">' in page
    assert '<progress class="completed" value="100.0" max="100">' in page
    assert '180<div class="small muted">of 400</div>' in page
    assert '<span class="bad">1 failed</span>' in page
    assert '<span class="bad">3</span>' in page  # dead letters of the running job
    assert "/job?key=parallel_batch_table%3A2024-01-02T00%3A00%3A00%2B00%3A00%2F2024" in page
    assert "demo.events → demo.events_enriched" in page
    assert 'data-refresh="5"' in page


def test_status_filter_lists_only_jobs_in_that_state(
    holder: CheckpointStore, client: TestClient
) -> None:
    """Test that ?status=completed lists the completed job only, and a bad state is a 400."""
    completed = client.get("/api/jobs", params={"status": "completed"}).json()["jobs"]
    bad_json = client.get("/api/jobs", params={"status": "bogus"})
    bad_html = client.get("/", params={"status": "bogus"})

    assert [j["job_key"] for j in completed] == [DONE_JOB]
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "bad_request"
    assert bad_html.status_code == 400
    assert "Unknown job state" in bad_html.text


def test_job_json_gives_chunks_dead_letters_and_replay(
    holder: CheckpointStore, client: TestClient
) -> None:
    """Test that /api/job gives every chunk, the dead letters by type and newest first, the replay."""
    body = _job(client)

    chunks = body["chunks"]
    assert [(c["chunk_id"], c["status"]) for c in chunks] == [
        ("(-inf,100]", "completed"),
        ("(100,200]", "running"),
        ("(200,300]", "failed"),
        ("(300,+inf]", "pending"),
    ]
    assert [(c["rows_done"], c["rows_total"], c["dead_letters"]) for c in chunks] == [
        (100, 100, 2),
        (50, 100, 0),
        (30, 100, 1),
        (0, 100, 0),
    ]
    running = chunks[1]
    assert (running["holder"], running["alive"], running["stalled"]) == ("worker-b", True, False)
    assert running["last_key"] == 150
    assert 0 <= running["heartbeat_age_seconds"] < 60
    assert chunks[2]["error"] == "OperationalError: server closed the connection"
    letters = body["dead_letters"]
    assert letters["pending"] == 3
    assert letters["by_error_type"] == {"PoisonRowError": 2, "WorkerCrashedError": 1}
    assert [(d["where"], d["error_type"]) for d in letters["recent"]] == [
        ("key 213", "WorkerCrashedError"),
        ("key 9", "PoisonRowError"),
        ("key 7", "PoisonRowError"),
    ]
    assert body["replay"]["available"] is True
    assert body["replay"]["conf"] == {"job_key": JOB}
    assert body["replay"]["command"].startswith("airflow dags trigger parallel_batch_replay -c ")
    assert body["notes"] == []
    assert SECRET not in str(body)


def test_job_page_shows_chunks_holders_dead_letters_and_replay(
    holder: CheckpointStore, client: TestClient
) -> None:
    """Test that a job's page shows its chunks, lease holder, dead letters and the replay."""
    response = client.get("/job", params={"key": JOB})

    assert response.status_code == 200
    page = response.text
    for chunk_id in ("(-inf,100]", "(100,200]", "(200,300]", "(300,+inf]"):
        assert f'<td class="mono">{chunk_id}</td>' in page
    assert "worker-b" in page and "session alive" in page
    assert "OperationalError: server closed the connection" in page
    assert "worker died on event 213" in page
    assert '<span class="chip">PoisonRowError<b>2</b></span>' in page
    assert "parallel_batch_replay" in page
    assert "&#34;job_key&#34;" in page  # the CLI's conf, escaped
    assert 'href="/dags/parallel_batch_table/runs/scheduled__2024-01-02"' in page
    assert SECRET not in page


def test_done_never_disagrees_with_the_total(
    pg_url: str, pg_conn: psycopg.Connection, client: TestClient
) -> None:
    """Test that a completed chunk shows the records it read as its total (the plan's rows were
    an estimate), and a running one that read more than planned is not shown over its total,
    nor at 100%."""
    key = "parallel_batch_csv:customers.csv"
    plan = [
        {"chunk_id": "bytes[0,100)", "rows": 202_333},
        {"chunk_id": "bytes[100,200)", "rows": 10},
    ]
    with CheckpointStore.connect(pg_url) as store:
        store.ensure_job(key, kind="csv", plan=plan, source="customers.csv", target="demo.c")
        done = store.acquire(key, "bytes[0,100)", holder="worker-a")
        store.commit_batch(done, last_key=200_000, rows_read=200_000)
        store.complete(done)
        running = store.acquire(key, "bytes[100,200)", holder="worker-b")
        store.commit_batch(running, last_key=12, rows_read=12)
        # The completed chunk's total as planned (a store may keep the estimate).
        pg_conn.execute(
            "UPDATE parallel_batch.chunks SET rows_total = 202333 WHERE rows_read > 100"
        )

        body = _job(client, key)
        page = client.get("/job", params={"key": key}).text

    job, (first, second) = body["job"], body["chunks"]
    assert (first["rows_done"], first["rows_total"], first["percent"]) == (200_000, 200_000, 100)
    assert (second["status"], second["rows_done"], second["rows_total"]) == ("running", 12, 12)
    assert second["percent"] < 100 and second["eta_seconds"] is None
    assert job["rows_done"] <= job["rows_total"] and job["percent"] < 100
    assert '200,000<div class="small muted">of 200,000</div>' in page
    assert '12<div class="small muted">of 12</div>' in page
    assert '<progress class="running" value="99.9" max="100">99%</progress>' in page


def test_a_killed_holder_shows_as_interrupted(holder: CheckpointStore, client: TestClient) -> None:
    """Test that a running chunk whose holder's session died shows as interrupted, with a note."""
    holder.close()  # as a killed task: its session and the chunk's lock are gone

    body = _job(client)
    page = client.get("/job", params={"key": JOB}).text

    running = body["chunks"][1]
    assert (running["status"], running["alive"]) == ("interrupted", False)
    assert "resumes after key 150" in running["attention"]
    assert body["notes"][0].startswith("1 chunk interrupted")
    assert "session gone" in page
    assert '<span class="state interrupted">interrupted</span>' in page


def test_a_silent_live_holder_shows_as_stalled(
    holder: CheckpointStore, client: TestClient, pg_conn: psycopg.Connection
) -> None:
    """Test that a live holder without a heartbeat for 10 minutes shows as stalled."""
    pg_conn.execute(
        "UPDATE parallel_batch.chunks SET heartbeat_at = now() - interval '10 minutes'"
        " WHERE job_key = %s AND chunk_id = '(100,200]'",
        (JOB,),
    )

    running = _job(client)["chunks"][1]
    page = client.get("/job", params={"key": JOB}).text

    assert (running["status"], running["alive"], running["stalled"]) == ("running", True, True)
    assert running["heartbeat_age_seconds"] >= 600
    assert '<span class="state stalled">stalled</span>' in page
    assert "10m00s ago" in page or "10m01s ago" in page


def test_unknown_job_is_a_404_panel(holder: CheckpointStore, client: TestClient) -> None:
    """Test that an unknown job_key answers 404 with a panel, and a JSON error."""
    html = client.get("/job", params={"key": "nope"})
    api = client.get("/api/job", params={"key": "nope"})

    assert html.status_code == 404
    assert "No such job" in html.text and "&#39;nope&#39;" in html.text
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "not_found"


def test_missing_schema_is_an_error_panel(pg_url: str, client: TestClient) -> None:
    """Test that a database without the parallel_batch schema answers 503 with what to do."""
    html = client.get("/")
    api = client.get("/api/jobs")

    assert html.status_code == 503
    assert "No parallel_batch jobs in this database yet" in html.text
    assert "parallel_batch_table" in html.text
    assert api.status_code == 503
    assert api.json()["error"]["code"] == "schema"


def test_empty_schema_says_how_to_start_a_job(pg_url: str, client: TestClient) -> None:
    """Test that a database with the schema but no job shows an empty list that says what to do."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_schema(conn)

    response = client.get("/")

    assert response.status_code == 200
    assert "No jobs yet" in response.text
    assert client.get("/api/jobs").json()["jobs"] == []


def test_missing_connection_is_an_error_panel_not_a_trace() -> None:
    """Test that a connection that cannot be resolved answers 503 with a panel, never a trace."""

    def missing() -> str:
        raise ConfigurationError(
            "The Airflow connection 'parallel_batch_default' is not defined in the api-server."
        )

    with TestClient(create_app(missing)) as client:
        html = client.get("/")
        api = client.get("/api/job", params={"key": JOB})

    assert html.status_code == 503
    assert "No database connection for parallel_batch" in html.text
    assert "AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT" in html.text
    assert "Traceback" not in html.text
    assert api.status_code == 503
    assert api.json()["error"]["code"] == "connection"


def test_unreachable_database_is_an_error_panel_without_password() -> None:
    """Test that a refused connection answers 503 naming the server, and never the password."""
    conninfo = "host=127.0.0.1 port=1 dbname=jobs user=u password=hunter2 connect_timeout=2"

    with TestClient(create_app(lambda: conninfo)) as client:
        response = client.get("/")

    assert response.status_code == 503
    assert "Cannot connect to the parallel_batch database" in response.text
    assert "database &#34;jobs&#34; on 127.0.0.1:1" in response.text
    assert "hunter2" not in response.text


def test_job_keys_are_escaped(pg_url: str, client: TestClient) -> None:
    """Test that markup in a job key or an error is shown as text, never run as markup."""
    key = "<script>alert(1)</script>"
    with CheckpointStore.connect(pg_url) as store:
        store.ensure_job(key, kind="table", plan=PLAN[:1], source="<b>src</b>")

    listing = client.get("/").text
    page = client.get("/job", params={"key": key}).text

    for text in (listing, page):
        assert "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/" in text
        assert "<b>src</b>" not in text and "&lt;b&gt;src&lt;/" in text


def test_bad_limit_is_a_400(client: TestClient) -> None:
    """Test that a limit out of range answers 400, before any database read."""
    response = client.get("/api/jobs", params={"limit": 0})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert "limit" in response.json()["error"]["detail"]


def test_health_static_files_and_security_headers(client: TestClient) -> None:
    """Test that health reads no database, the package's static files (and only they) are served,
    pages carry a CSP."""
    health = client.get("/api/health")
    css = client.get("/static/style.css")
    script = client.get("/static/page.js")
    icon = client.get("/static/icon-dark.svg")
    missing = client.get("/static/nope.css")
    outside = client.get("/static/..%2Fpages.py")

    assert health.json() == {"plugin": "parallel_batch", "status": "alive", "version": __version__}
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "progress::-webkit-progress-value" in css.text
    assert script.status_code == 200 and "pb-content" in script.text
    assert css.headers["cache-control"] == "max-age=3600"
    assert icon.headers["content-type"] == "image/svg+xml" and b"#4aa3ff" in icon.content
    assert missing.status_code == 404 and outside.status_code == 404
    assert "frame-ancestors 'self'" in health.headers["content-security-policy"]
    assert health.headers["cache-control"] == "no-store"
