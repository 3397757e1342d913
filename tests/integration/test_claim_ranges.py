"""Integer keys claimed by ranges, on a real PostgreSQL: one row per batch, exclusion between
spans (also between transactions in flight), and the move to claims by key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from parallel_batch.store import claim_ranges, claims
from parallel_batch.store.checkpoints import CheckpointStore

PLAN = [{"chunk_id": "c0", "lower": None, "upper": None, "rows": 10}]


@pytest.fixture
def jobs(pg_url: str) -> Iterator[CheckpointStore]:
    with CheckpointStore.connect(pg_url) as store:
        store.ensure_schema()
        for job in ("job", "other"):
            store.ensure_job(job, kind="csv", plan=PLAN)
        yield store


def claim(
    conn: psycopg.Connection, job: str, chunk: str, keys: list[int], first_line: int = 2
) -> list[tuple[str, claims.Claim, int]]:
    """Claim ``keys`` in one commit (a batch of them on consecutive lines, none known before)."""
    names = [str(k) for k in keys]
    plan = claims.plan_claims(names, list(range(first_line, first_line + len(keys))), {})
    with conn.transaction():
        return claims.apply_claims(conn, job, chunk, plan, {})


def rows(conn: psycopg.Connection, query: str) -> list[tuple[object, ...]]:
    return conn.execute(query).fetchall()


def by_key(conn: psycopg.Connection, job: str) -> bool:
    return bool(
        rows(conn, f"SELECT claims_by_key FROM parallel_batch.jobs WHERE job_key = '{job}'")[0][0]
    )


def test_that_integer_keys_in_order_take_one_row_per_batch(
    jobs: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test that batches of integer keys whose spans do not meet (two chunks, out of order
    between them) each claim one row and no key claim, and that two jobs' spans never meet."""
    claim(pg_conn, "job", "c0", [1, 2, 3])
    claim(pg_conn, "job", "c1", [10, 12, 11])
    claim(pg_conn, "job", "c0", [4, 5, 9])
    claim(pg_conn, "other", "c0", [1, 2, 3])  # the same keys in another job

    assert rows(pg_conn, "SELECT count(*) FROM parallel_batch.key_claims") == [(0,)]
    stored = rows(
        pg_conn,
        "SELECT j.job_key, r.chunk_id, r.keys, r.lines, r.outputs FROM parallel_batch.range_claims"
        " r JOIN parallel_batch.jobs j ON j.id = r.job_id ORDER BY j.job_key, lower(r.span)",
    )
    assert stored == [
        ("job", "c0", [1, 2, 3], [2, 3, 4], None),
        ("job", "c0", [4, 5, 9], [2, 3, 4], None),
        ("job", "c1", [10, 12, 11], [2, 3, 4], None),
        ("other", "c0", [1, 2, 3], [2, 3, 4], None),
    ]
    assert not by_key(pg_conn, "job")
    assert claims.delete_job_claims(pg_conn, "job") == 9


def test_that_a_span_meeting_another_moves_the_jobs_claims_to_keys(
    jobs: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test that a batch whose span meets another's (a key inside it that is not one of its
    keys, too) needs keys; that the move keeps every claim's line, chunk and outputs; and that
    the key claims then refuse the duplicate and let the other key through."""
    names = [str(k) for k in range(1, 11)]
    plan = claims.plan_claims(names, list(range(2, 12)), {})
    made = {"3": 0, "4": claims.FAILED, "5": 2}
    with pg_conn.transaction():
        claims.apply_claims(pg_conn, "job", "c0", plan, made)
    claim(pg_conn, "other", "c0", [7])  # another job's claims stay as they are

    with pytest.raises(claim_ranges.KeysNeeded), pg_conn.transaction():
        claim(pg_conn, "job", "c1", [20, 7])  # 7: claimed; the span [7, 20] meets [1, 10]
    assert claim_ranges.to_keys(pg_conn, "job") == 10
    assert claim_ranges.to_keys(pg_conn, "job") == 0  # once only

    assert by_key(pg_conn, "job") and not by_key(pg_conn, "other")
    found = claims.find_claims(pg_conn, "job", names)
    assert found == {
        key: claims.Claim(line, "c0", made.get(key, 1))
        for key, line in zip(names, range(2, 12), strict=True)
    }
    assert rows(pg_conn, "SELECT count(*) FROM parallel_batch.range_claims") == [(1,)]
    with pytest.raises(claims.ClaimsChanged):
        claim(pg_conn, "job", "c1", [20, 7], first_line=50)
    claim(pg_conn, "job", "c1", [15], first_line=50)  # a new key needs no range now
    assert claims.find_claims(pg_conn, "job", ["15"]) == {"15": claims.Claim(50, "c1")}


@pytest.mark.parametrize(
    "keys", [["a", "b"], ["007"], ["+7"], ["-0", "0"], ["1,2"], ["1", str(2**63)], ["1 "]]
)
def test_that_keys_that_are_not_bigints_claim_by_key(
    jobs: CheckpointStore, pg_conn: psycopg.Connection, keys: list[str]
) -> None:
    """Test that text keys, an integer written another way than str() writes it, a key with a
    comma (the array's separator) or one beyond bigint need keys, and that they are claimed by
    key after the move, each as itself ("-0" and "0" are two keys)."""
    plan = claims.plan_claims(keys, list(range(2, 2 + len(keys))), {})
    with pytest.raises(claim_ranges.KeysNeeded), pg_conn.transaction():
        claims.apply_claims(pg_conn, "job", "c0", plan, {})
    assert claim_ranges.to_keys(pg_conn, "job") == 0
    with pg_conn.transaction():
        claims.apply_claims(pg_conn, "job", "c0", plan, {})
    assert claims.find_claims(pg_conn, "job", keys).keys() == set(keys)


def _in_thread(
    pg_url: str, job: str, chunk: str, keys: list[int]
) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def work() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            try:
                claim(conn, job, chunk, keys, first_line=100)
                outcome.append("claimed")
            except claim_ranges.KeysNeeded as exc:
                outcome.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("first_commits", [True, False])
def test_that_an_overlapping_claim_waits_for_the_one_in_flight(
    jobs: CheckpointStore, pg_conn: psycopg.Connection, pg_url: str, first_commits: bool
) -> None:
    """Test that a span meeting one not yet committed waits for that commit: then it needs keys;
    when the first rolls back instead, it claims its range."""
    tx = pg_conn.transaction()
    tx.__enter__()
    claims.apply_claims(pg_conn, "job", "c0", claims.plan_claims(["1", "9"], [2, 3], {}), {})
    thread, outcome = _in_thread(pg_url, "job", "c1", [5, 6])
    time.sleep(0.5)
    assert thread.is_alive() and not outcome  # waiting on the first span
    if first_commits:
        tx.__exit__(None, None, None)
    else:
        tx.__exit__(RuntimeError, RuntimeError("roll back"), None)
    thread.join(10)
    assert len(outcome) == 1
    if first_commits:
        assert isinstance(outcome[0], claim_ranges.KeysNeeded)
    else:
        assert outcome == ["claimed"]


def test_that_the_move_waits_for_range_claims_in_flight(
    jobs: CheckpointStore, pg_conn: psycopg.Connection, pg_url: str
) -> None:
    """Test that moving a job to key claims waits for a range claim in flight and moves it too
    (none is left behind by range)."""
    tx = pg_conn.transaction()
    tx.__enter__()
    claims.apply_claims(pg_conn, "job", "c0", claims.plan_claims(["1", "2"], [2, 3], {}), {})
    moved: list[int] = []

    def move() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            moved.append(claim_ranges.to_keys(conn, "job"))

    thread = threading.Thread(target=move, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and not moved
    tx.__exit__(None, None, None)
    thread.join(10)
    assert moved == [2]
    assert rows(pg_conn, "SELECT count(*) FROM parallel_batch.range_claims") == [(0,)]
    assert claims.find_claims(pg_conn, "job", ["1", "2"]).keys() == {"1", "2"}
