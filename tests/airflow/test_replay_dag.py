"""dag.test() runs of dags/parallel_batch_replay.py: dead letters replayed after a fix."""

from __future__ import annotations

import psycopg
import pytest

from parallel_batch.demo import events as demo
from tests.airflow.dagrun import bad_rows, dead_letters, load_dag, mismatches, run_dag

JOB_KEY = "replay-test"


def _attempts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT item_key, attempts FROM parallel_batch.dead_letters WHERE job_key = %s",
        (JOB_KEY,),
    ).fetchall()
    return dict(rows)


def _replayed(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT item_key FROM parallel_batch.dead_letters"
        " WHERE job_key = %s AND replayed_at IS NOT NULL",
        (JOB_KEY,),
    ).fetchall()
    return {key for (key,) in rows}


@pytest.mark.slow
def test_replay_after_a_data_fix(
    parallel_batch_conn: str, pg_conn: psycopg.Connection, capfd: pytest.CaptureFixture[str]
) -> None:
    """Test that a replay fails while rows still fail, then moves them in once the data is fixed."""
    demo.seed_events(pg_conn, 3_000, poison_every=499, crash_every=1_499)
    conf = {"chunk_rows": 1_500, "batch_rows": 500, "workers": 1, "interval_column": None}
    table = run_dag(load_dag("parallel_batch_table"), {**conf, "job_key": JOB_KEY})
    assert table.state == "success", table.tis
    bad = bad_rows(pg_conn)
    assert dead_letters(pg_conn, JOB_KEY) == bad
    first_attempts = _attempts(pg_conn)
    replay = load_dag("parallel_batch_replay")

    # Nothing fixed yet: every item fails again, the run fails (no retry), attempts go up.
    unfixed = run_dag(replay, {"job_key": JOB_KEY})

    assert unfixed.state == "failed"
    assert unfixed.tis[("replay", -1)] == ("failed", 1)
    assert f"{len(bad)} of {len(bad)} dead letters of job '{JOB_KEY}' failed again" in (
        capfd.readouterr().out
    )
    assert dead_letters(pg_conn, JOB_KEY) == bad
    assert all(_attempts(pg_conn)[k] > first_attempts[k] for k in bad)
    assert _replayed(pg_conn) == set()

    # The fix: the bad payloads are corrected in the source; one bad row is deleted instead.
    pg_conn.execute(
        "UPDATE demo.events SET payload = 'fixed event ' || id"
        " WHERE payload LIKE 'poison:%' OR payload LIKE 'crash:%'"
    )
    gone = min(bad, key=int)
    pg_conn.execute("DELETE FROM demo.events WHERE id = %s", (int(gone),))

    fixed = run_dag(replay, {"job_key": JOB_KEY, "max_failed_ratio": 0.5})

    assert fixed.state == "success", fixed.tis
    assert mismatches(pg_conn) == 0  # every source row, fixed ones included, is in the target
    assert _replayed(pg_conn) == set(bad) - {gone}
    assert dead_letters(pg_conn, JOB_KEY) == {gone: "SourceRowMissing"}
    summary = fixed.xcom("replay")
    assert (summary["attempted"], summary["replayed"], summary["missing_source_rows"]) == (
        len(bad),
        len(bad) - 1,
        1,
    )

    # The stored payload of the missing row is still a poison row: it fails again from there.
    from_payload = run_dag(replay, {"job_key": JOB_KEY, "replay_from": "payload"})

    assert from_payload.state == "failed"
    assert dead_letters(pg_conn, JOB_KEY) == {gone: "PoisonRowError"}
    assert pg_conn.execute(
        "SELECT count(*) FROM demo.events_enriched WHERE id = %s", (int(gone),)
    ).fetchone() == (0,)


def test_replay_of_an_unknown_job_fails_without_retry(
    parallel_batch_conn: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Test that replaying a job that does not exist fails at once and says so."""
    result = run_dag(load_dag("parallel_batch_replay"), {"job_key": "no-such-job"})

    assert result.tis[("replay", -1)] == ("failed", 1)
    assert "job 'no-such-job' does not exist" in capfd.readouterr().out


def test_replay_needs_a_job_key(parallel_batch_conn: str) -> None:
    """Test that the replay DAG refuses a trigger without a job_key."""
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="job_key"):
        load_dag("parallel_batch_replay").test(run_conf={})
