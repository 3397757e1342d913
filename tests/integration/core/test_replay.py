"""Tests of replaying a job's dead letters after a fix (core.replay), for every transform kind:
from the source after a data fix, from the stored payloads after a transform fix, rows that
fail again, rows gone from the source, rows that kill their worker, rows the target refuses."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from parallel_batch.core.job import JobSpec
from parallel_batch.core.replay import replay_job
from parallel_batch.core.transforms import DEFAULT_RETRY, TransformKind, TransformSpec
from parallel_batch.engine.pool import WorkerPool
from tests.helpers.events_job import (
    BATCH,
    EXPECTED_SQL,
    JobCheck,
    check_job,
    events_spec,
    plan,
    run_job,
    seed,
)
from tests.integration.core.transforms import SHAPED_EXPECTED_SQL, path

ROWS = 400
POISON_EVERY = 37
POISON = [str(i) for i in range(POISON_EVERY, ROWS + 1, POISON_EVERY)]
FIX_SQL = "UPDATE demo.events SET payload = 'fixed ' || id WHERE payload LIKE 'poison:%'"

KINDS: dict[str, tuple[str, str]] = {
    "rows": (path("enrich_shaped"), SHAPED_EXPECTED_SQL),
    "batch": (BATCH, EXPECTED_SQL),
    "dataframe": (path("frame_shaped"), SHAPED_EXPECTED_SQL),
    "async": (path("aenrich_shaped"), SHAPED_EXPECTED_SQL),
    "arrow": (path("enrich_arrow"), EXPECTED_SQL),
}


def _run(url: str, kind: TransformKind = "batch", crash_every: int | None = None) -> JobSpec:
    seed(url, ROWS, poison_every=POISON_EVERY, crash_every=crash_every)
    transform, _ = KINDS[kind]
    spec = events_spec(url, transform=transform, kind=kind, batch_rows=100)
    plan(url, "job", spec, chunks=2)
    if crash_every is None:
        run_job(url, "job")
    else:
        with WorkerPool(2, crash_retries=0) as pool:
            run_job(url, "job", pool=pool)
    return spec


def _check(url: str, expected_sql: str = EXPECTED_SQL, failing_sql: str | None = None) -> JobCheck:
    with psycopg.connect(url, autocommit=True) as conn:
        if failing_sql is None:
            return check_job(conn, "job", expected_sql=expected_sql)
        return check_job(conn, "job", expected_sql=expected_sql, failing_sql=failing_sql)


def _letters(url: str) -> dict[str, tuple[str, int, bool]]:
    """item key -> (error type, attempts, replayed)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT item_key, error_type, attempts, replayed_at IS NOT NULL"
            " FROM parallel_batch.dead_letters WHERE job_key = 'job'"
        ).fetchall()
    return {key: (error, attempts, replayed) for key, error, attempts, replayed in rows}


@pytest.mark.parametrize("kind", list(KINDS))
def test_that_a_replay_after_a_data_fix_resolves_every_dead_letter(
    pg_url: str, kind: TransformKind
) -> None:
    """Test that after the source rows are fixed, a replay writes their outputs (filtered and
    fanned out as the kind does), marks their dead letters replayed, and leaves nothing pending."""
    spec = _run(pg_url, kind)
    assert sorted(_check(pg_url, KINDS[kind][1]).dead_letter_keys, key=int) == POISON
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(FIX_SQL)
    totals = replay_job(pg_url, "job", spec, page_rows=4)
    assert (totals.attempted, totals.replayed, totals.still_pending, totals.skipped) == (
        len(POISON),
        len(POISON),
        0,
        0,
    )
    check = _check(pg_url, KINDS[kind][1])
    assert check.exact, check
    assert check.failing_keys == set() and check.dead_letter_keys == []
    assert {key: replayed for key, (_, _, replayed) in _letters(pg_url).items()} == dict.fromkeys(
        POISON, True
    )
    again = replay_job(pg_url, "job", spec)
    assert again.attempted == 0


def test_that_rows_a_batch_transform_refused_in_place_are_letters_a_replay_resolves(
    pg_url: str,
) -> None:
    """Test that a batch transform returning a poison row's error in its place (in a real
    WorkerPool) makes exactly those rows dead letters with the error's type, tried the policy's
    times alone, the rest written; and that after a data fix a replay writes them."""
    seed(pg_url, ROWS, poison_every=POISON_EVERY)
    policy = dataclasses.replace(DEFAULT_RETRY, base_delay=0.0, max_delay=0.0)
    spec = events_spec(pg_url, transform=path("refuse_poison"), kind="batch", batch_rows=100)
    spec = dataclasses.replace(spec, transform=dataclasses.replace(spec.transform, retry=policy))
    plan(pg_url, "job", spec, chunks=2)
    with WorkerPool(1) as pool:
        run_job(pg_url, "job", pool=pool)
    check = _check(pg_url)
    assert check.exact, check
    assert sorted(check.dead_letter_keys, key=int) == POISON
    assert set(_letters(pg_url).values()) == {("PoisonRowError", policy.max_attempts, False)}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(FIX_SQL)
    totals = replay_job(pg_url, "job", spec)
    assert (totals.attempted, totals.replayed, totals.still_pending) == (
        len(POISON),
        len(POISON),
        0,
    )
    check = _check(pg_url)
    assert check.exact and check.dead_letter_keys == [], check


def test_that_a_replay_from_the_payload_runs_the_fixed_transform(pg_url: str) -> None:
    """Test that replay_from='payload' replays the rows as the dead letters stored them, through
    the job's transform after its fix, even when the source rows have changed since."""
    spec = _run(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE demo.events SET payload = 'changed' WHERE payload LIKE 'poison:%'")
        conn.execute("UPDATE demo.events SET payload = 'poison: event ' || id WHERE id % 37 = 0")
    fixed = dataclasses.replace(spec, transform=TransformSpec(path("enrich_any"), "batch"))
    totals = replay_job(pg_url, "job", fixed, replay_from="payload")
    assert (totals.attempted, totals.replayed, totals.still_pending) == (
        len(POISON),
        len(POISON),
        0,
    )
    check = _check(
        pg_url,
        expected_sql=EXPECTED_SQL.replace("payload NOT LIKE 'poison:%' AND ", ""),
        failing_sql="SELECT '' WHERE false",
    )
    assert check.exact, check


def test_that_rows_still_failing_stay_pending_with_their_attempts_added(pg_url: str) -> None:
    """Test that a replay without a fix leaves the dead letters pending with the new tries
    added, and a row gone from the source pending as SourceRowMissing."""
    spec = _run(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM demo.events WHERE id = %s", (POISON_EVERY,))
    totals = replay_job(pg_url, "job", spec)
    assert (totals.attempted, totals.replayed, totals.failed_again, totals.missing) == (
        len(POISON),
        0,
        len(POISON) - 1,
        1,
    )
    letters = _letters(pg_url)
    assert letters.pop(str(POISON_EVERY)) == (
        "SourceRowMissing",
        DEFAULT_RETRY.max_attempts + 1,
        False,
    )
    assert set(letters.values()) == {("PoisonRowError", 2 * DEFAULT_RETRY.max_attempts, False)}
    assert _check(pg_url).missing == 0


def test_that_a_replay_in_the_pool_isolates_rows_that_kill_their_worker(pg_url: str) -> None:
    """Test that replaying in the WorkerPool dead-letters crash rows again (WorkerCrashedError)
    while the fixed poison rows are written."""
    spec = _run(pg_url, crash_every=150)
    crash = {"150", "300"}
    assert {k for k, v in _letters(pg_url).items() if v[0] == "WorkerCrashedError"} == crash
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(FIX_SQL)
    with WorkerPool(2, crash_retries=0) as pool:
        totals = replay_job(pg_url, "job", spec, pool=pool)
    assert (totals.replayed, totals.failed_again) == (len(POISON), len(crash))
    pending = {k: v[0] for k, v in _letters(pg_url).items() if not v[2]}
    assert pending == dict.fromkeys(crash, "WorkerCrashedError")
    check = _check(pg_url)
    assert check.exact, check


def test_that_a_replayed_row_the_target_refuses_stays_a_dead_letter(pg_url: str) -> None:
    """Test that a replayed row the target still refuses (a CHECK constraint) fails again alone
    as that row's dead letter, and the replay writes the others."""
    spec = _run(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(FIX_SQL)
        conn.execute(
            "ALTER TABLE demo.events_enriched ADD CONSTRAINT refuse CHECK (id <> %s)"
            % (2 * POISON_EVERY)
        )
    totals = replay_job(pg_url, "job", spec)
    assert (totals.replayed, totals.failed_again) == (len(POISON) - 1, 1)
    pending = {k: v[0] for k, v in _letters(pg_url).items() if not v[2]}
    assert pending == {str(2 * POISON_EVERY): "CheckViolation"}
