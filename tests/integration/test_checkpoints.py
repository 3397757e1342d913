"""Tests of the checkpoint store: jobs, leases, fenced batch commits, dead letters, progress."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from parallel_batch.exceptions import ChunkBusyError, ConfigurationError, LeaseLostError
from parallel_batch.store import deadletters
from parallel_batch.store.checkpoints import CheckpointStore, DeadLetter, Lease

PLAN: list[dict[str, Any]] = [
    {"chunk_id": "(-inf,100]", "lower": None, "upper": 100, "rows": 100},
    {"chunk_id": "(100,+inf]", "lower": 100, "upper": None, "rows": 50},
]
CHUNK: str = PLAN[0]["chunk_id"]


@pytest.fixture
def store(pg_url: str) -> Iterator[CheckpointStore]:
    with CheckpointStore.connect(pg_url) as store:
        yield store


@pytest.fixture
def target(pg_conn: psycopg.Connection) -> str:
    pg_conn.execute("CREATE TABLE target (id int PRIMARY KEY, v text)")
    return "target"


def insert(ids: range | list[int]) -> Callable[[psycopg.Connection], int]:
    """A write callback that inserts rows with these ids into the target table."""

    def write(conn: psycopg.Connection) -> int:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO target VALUES (%s, 'x')", [(i,) for i in ids])
        return len(ids)

    return write


def letter(key: str, attempts: int = 1, message: str = "bad row") -> DeadLetter:
    return DeadLetter(
        item_key=key,
        line_number=None,
        payload={"id": key},
        error_type="PoisonRowError",
        message=message,
        attempts=attempts,
    )


def chunk_row(conn: psycopg.Connection, chunk_id: str = CHUNK) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM parallel_batch.chunks WHERE job_key = 'job' AND chunk_id = %s",
            (chunk_id,),
        ).fetchone()
    assert row is not None
    return row


def count(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# ---- jobs ------------------------------------------------------------------------------------


def test_that_ensure_job_creates_the_job_and_its_chunks(
    store: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test that a new job stores its plan and one pending chunk per plan entry."""
    job = store.ensure_job("job", kind="table", plan=PLAN, params={"batch_rows": 10})
    assert job.status == "pending"
    assert job.chunk_ids == [p["chunk_id"] for p in PLAN]
    assert job.rows_total == 150
    assert job.params == {"batch_rows": 10}
    rows = pg_conn.execute(
        "SELECT chunk_id, status, rows_total FROM parallel_batch.chunks ORDER BY position"
    ).fetchall()
    assert rows == [(CHUNK, "pending", 100), ("(100,+inf]", "pending", 50)]


def test_that_the_same_job_key_reuses_the_stored_plan(store: CheckpointStore) -> None:
    """Test that ensure_job with an existing job_key returns the stored plan, not the new one."""
    store.ensure_job("job", kind="table", plan=PLAN)
    other = [{"chunk_id": "(0,10]", "rows": 10}]
    job = store.ensure_job("job", kind="table", plan=other)
    assert job.chunk_ids == [p["chunk_id"] for p in PLAN]
    assert job.plan == PLAN


def test_that_an_empty_plan_makes_a_completed_job(store: CheckpointStore) -> None:
    """Test that a job with no chunks (an empty source) is completed at once."""
    assert store.ensure_job("empty", kind="table", plan=[]).status == "completed"


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ([{"rows": 1}], "every plan entry must be a dict with a 'chunk_id' string"),
        ([{"chunk_id": "a"}, {"chunk_id": "a"}], "duplicate chunk_id 'a' in the plan"),
        ([{"chunk_id": "a", "rows": -1}], "rows must be an int >= 0"),
    ],
)
def test_that_a_bad_plan_is_refused(
    store: CheckpointStore, plan: list[dict[str, Any]], message: str
) -> None:
    """Test that plan entries without a unique chunk_id or with bad rows raise ValueError."""
    with pytest.raises(ValueError, match=message):
        store.ensure_job("job", kind="table", plan=plan)


def test_that_the_store_needs_an_autocommit_connection(pg_url: str) -> None:
    """Test that a non-autocommit connection is refused with a message that says what to do."""
    with (
        psycopg.connect(pg_url) as conn,
        pytest.raises(ValueError, match="needs an autocommit connection"),
    ):
        CheckpointStore(conn)


# ---- leases and batch commits ----------------------------------------------------------------


def test_that_a_chunk_is_processed_and_completed(
    store: CheckpointStore, target: str, pg_conn: psycopg.Connection
) -> None:
    """Test that acquire, two batch commits and complete leave rows, checkpoint and totals."""
    store.ensure_job("job", kind="table", plan=PLAN)
    lease = store.acquire("job", CHUNK, holder="me")
    assert (lease.completed, lease.last_key, lease.attempts, lease.rows_read) == (False, None, 1, 0)
    assert chunk_row(pg_conn)["status"] == "running"
    store.commit_batch(
        lease, last_key=50, rows_read=50, write=insert(range(1, 50)), dead_letters=[letter("50")]
    )
    store.commit_batch(lease, last_key=100, rows_read=50, write=insert(range(51, 101)))
    store.complete(lease)
    row = chunk_row(pg_conn)
    assert (row["status"], row["last_key"], row["holder"]) == ("completed", 100, "me")
    assert (row["rows_read"], row["rows_written"], row["rows_failed"]) == (100, 99, 1)
    assert count(pg_conn, "SELECT count(*) FROM target") == 99
    assert (lease.rows_read, lease.rows_written, lease.rows_failed) == (100, 99, 1)
    job = store.get_job("job")
    assert job is not None
    assert (job.status, job.rows_written, job.rows_failed) == ("running", 99, 1)


def test_that_the_job_completes_with_its_last_chunk(store: CheckpointStore) -> None:
    """Test that the job's status rolls up to completed when every chunk is completed."""
    store.ensure_job("job", kind="table", plan=PLAN)
    for entry in PLAN:
        lease = store.acquire("job", entry["chunk_id"])
        store.commit_batch(lease, last_key=1, rows_read=0)
        store.complete(lease)
    job = store.get_job("job")
    assert job is not None
    assert job.status == "completed"
    assert job.finished_at is not None


def test_that_a_completed_chunk_is_skipped(
    store: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test that acquiring a completed chunk returns completed=True and changes nothing."""
    store.ensure_job("job", kind="table", plan=PLAN)
    lease = store.acquire("job", CHUNK)
    store.complete(lease)
    again = store.acquire("job", CHUNK)
    assert again.completed
    assert again.token == lease.token
    assert chunk_row(pg_conn)["attempts"] == 1
    with pytest.raises(ValueError, match="is completed"):
        store.commit_batch(again, last_key=1, rows_read=1)


def test_that_a_new_attempt_resumes_after_the_last_committed_key(
    pg_url: str, target: str, pg_conn: psycopg.Connection
) -> None:
    """Test that after a holder dies mid-chunk, the next lease starts at its last checkpoint."""
    first = CheckpointStore.connect(pg_url)
    first.ensure_job("job", kind="table", plan=PLAN)
    lease = first.acquire("job", CHUNK)
    first.commit_batch(lease, last_key=40, rows_read=40, write=insert(range(1, 41)))
    first.close()  # the holder dies: its session, and its lock, are gone
    with CheckpointStore.connect(pg_url) as second:
        resumed = second.acquire("job", CHUNK, wait_timeout=0)
        assert (resumed.last_key, resumed.resumed_from, resumed.rows_read) == (40, 40, 40)
        assert resumed.attempts == 2
        assert resumed.token > lease.token
        second.commit_batch(resumed, last_key=100, rows_read=60, write=insert(range(41, 101)))
        second.complete(resumed)
    assert count(pg_conn, "SELECT count(*) FROM target") == 100
    assert chunk_row(pg_conn)["rows_read"] == 100


def test_that_a_stale_lease_cannot_commit(
    pg_url: str, target: str, pg_conn: psycopg.Connection
) -> None:
    """Test that a zombie's commit after a takeover raises LeaseLostError and writes nothing."""
    zombie = CheckpointStore.connect(pg_url)
    zombie.ensure_job("job", kind="table", plan=PLAN)
    stale = zombie.acquire("job", CHUNK, holder="zombie")
    zombie.commit_batch(stale, last_key=10, rows_read=10, write=insert(range(1, 11)))
    zombie.close()  # its connection drops (a network partition, a killed session) ...
    with CheckpointStore.connect(pg_url) as successor:
        successor.acquire("job", CHUNK, holder="successor", wait_timeout=0)
        before = chunk_row(pg_conn)
        with CheckpointStore.connect(pg_url) as reconnected:  # ... and it reconnects, unaware
            with pytest.raises(
                LeaseLostError,
                match=r"lease lost: chunk \(-inf,100\] of job job "
                r"was taken over by another attempt \(token \d+, held by successor",
            ):
                reconnected.commit_batch(
                    stale,
                    last_key=20,
                    rows_read=10,
                    write=insert(range(11, 21)),
                    dead_letters=[letter("15")],
                )
            with pytest.raises(LeaseLostError, match="lease lost"):
                reconnected.heartbeat(stale)
            with pytest.raises(LeaseLostError, match="lease lost"):
                reconnected.complete(stale)
            assert reconnected.fail(stale, "zombie error") is False
    after = chunk_row(pg_conn)
    assert count(pg_conn, "SELECT count(*) FROM target") == 10
    assert count(pg_conn, "SELECT count(*) FROM parallel_batch.dead_letters") == 0
    assert (after["last_key"], after["rows_read"], after["holder"]) == (10, 10, "successor")
    assert after["status"] == before["status"] == "running"
    assert after["lease_token"] == before["lease_token"]


def test_that_a_write_error_rolls_the_checkpoint_back(
    store: CheckpointStore, target: str, pg_conn: psycopg.Connection
) -> None:
    """Test that when the write fails, neither rows nor checkpoint nor dead letters move."""
    store.ensure_job("job", kind="table", plan=PLAN)
    lease = store.acquire("job", CHUNK)
    store.commit_batch(lease, last_key=5, rows_read=5, write=insert(range(1, 6)))
    with pytest.raises(psycopg.errors.UniqueViolation):
        store.commit_batch(
            lease, last_key=10, rows_read=5, write=insert(range(5, 10)), dead_letters=[letter("9")]
        )
    row = chunk_row(pg_conn)
    assert (row["last_key"], row["rows_read"], row["rows_written"]) == (5, 5, 5)
    assert (lease.last_key, lease.rows_read) == (5, 5)
    assert count(pg_conn, "SELECT count(*) FROM target") == 5
    assert count(pg_conn, "SELECT count(*) FROM parallel_batch.dead_letters") == 0


def test_that_announced_rows_written_are_checked(
    store: CheckpointStore, target: str, pg_conn: psycopg.Connection
) -> None:
    """Test that rows_written counts in the fenced UPDATE, and a mismatch rolls the batch back."""
    store.ensure_job("job", kind="table", plan=PLAN)
    lease = store.acquire("job", CHUNK)
    store.commit_batch(lease, last_key=3, rows_read=3, write=insert(range(1, 4)), rows_written=3)
    with pytest.raises(ValueError, match="write wrote 2 rows where rows_written announced 3"):
        store.commit_batch(lease, last_key=6, rows_read=3, write=insert([4, 5]), rows_written=3)
    row = chunk_row(pg_conn)
    assert (row["last_key"], row["rows_read"], row["rows_written"]) == (3, 3, 3)
    assert count(pg_conn, "SELECT count(*) FROM target") == 3


def test_that_two_workers_racing_for_a_chunk_get_one_lease(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that of two workers taking one chunk at once, one wins and the other gets busy,
    having said whom it waits for and how fresh its heartbeat is."""
    caplog.set_level(logging.WARNING, logger="parallel_batch.store.leases")
    with CheckpointStore.connect(pg_url) as setup:
        setup.ensure_job("job", kind="table", plan=PLAN)
    start = threading.Barrier(2)
    done = threading.Barrier(2)
    leases: list[Lease] = []
    busy: list[ChunkBusyError] = []

    def worker(name: str) -> None:
        with CheckpointStore.connect(pg_url) as store:
            start.wait()
            try:
                leases.append(store.acquire("job", CHUNK, holder=name, wait_timeout=0.5))
            except ChunkBusyError as exc:
                busy.append(exc)
            done.wait()  # the winner holds its lease until the loser has given up

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(leases) == 1
    assert len(busy) == 1
    assert f"held by a live attempt ({leases[0].holder}" in str(busy[0])
    waits = [r.getMessage() for r in caplog.records if "held by a live attempt" in r.getMessage()]
    assert waits
    for message in waits:
        assert re.search(r"(last heartbeat \d+ s ago|no heartbeat yet); waiting up to", message)


def test_that_a_caller_that_does_not_wait_gets_busy_without_a_warning(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that wait_timeout=0 on a held chunk raises ChunkBusyError naming the holder, and
    logs no warning (the caller asked not to wait: it takes another chunk)."""
    caplog.set_level(logging.DEBUG, logger="parallel_batch.store.leases")
    with CheckpointStore.connect(pg_url) as holder, CheckpointStore.connect(pg_url) as other:
        holder.ensure_job("job", kind="table", plan=PLAN)
        holder.acquire("job", CHUNK, holder="first")
        with pytest.raises(ChunkBusyError, match=r"held by a live attempt \(first"):
            other.acquire("job", CHUNK, holder="second", wait_timeout=0)
    held = [r for r in caplog.records if "held by a live attempt" in r.getMessage()]
    assert [r.levelno for r in held] == [logging.DEBUG]


def test_that_a_waiting_duplicate_skips_the_chunk_its_holder_completed(pg_url: str) -> None:
    """Test that a duplicate waits for the live holder, then finds the chunk completed."""
    holder = CheckpointStore.connect(pg_url)
    holder.ensure_job("job", kind="table", plan=PLAN)
    lease = holder.acquire("job", CHUNK, holder="first")
    results: list[Lease] = []

    def duplicate() -> None:
        with CheckpointStore.connect(pg_url) as store:
            results.append(store.acquire("job", CHUNK, holder="second", wait_timeout=60))

    thread = threading.Thread(target=duplicate)
    thread.start()
    thread.join(0.5)
    assert results == []  # still waiting for the holder
    holder.commit_batch(lease, last_key=100, rows_read=100)
    holder.complete(lease)
    thread.join(60)
    holder.close()
    assert len(results) == 1
    assert results[0].completed
    assert results[0].rows_read == 100


def test_that_a_killed_holder_process_does_not_block_its_successor(
    pg_url: str, pg_conn: psycopg.Connection
) -> None:
    """Test that after SIGKILL of the process holding a chunk, the next attempt takes it."""
    with CheckpointStore.connect(pg_url) as setup:
        setup.ensure_job("job", kind="table", plan=PLAN)
    script = textwrap.dedent(
        f"""
        import sys, time
        from parallel_batch.store.checkpoints import CheckpointStore
        store = CheckpointStore.connect({pg_url!r})
        lease = store.acquire("job", {CHUNK!r}, holder="doomed")
        store.commit_batch(lease, last_key=7, rows_read=7)
        print("holding", flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "holding"
        with CheckpointStore.connect(pg_url) as busy, pytest.raises(ChunkBusyError):
            busy.acquire("job", CHUNK, wait_timeout=0)
        process.kill()
        process.wait(30)
        with CheckpointStore.connect(pg_url) as successor:
            lease = successor.acquire("job", CHUNK, holder="successor", wait_timeout=30)
            assert (lease.completed, lease.last_key, lease.attempts) == (False, 7, 2)
    finally:
        process.kill()
        process.wait(30)
    assert chunk_row(pg_conn)["holder"] == "successor"


def test_that_a_silent_holder_is_terminated_after_stale_after(
    pg_url: str, pg_conn: psycopg.Connection
) -> None:
    """Test that with stale_after, a holder without heartbeats loses its session and lease."""
    hung = CheckpointStore.connect(pg_url)
    hung.ensure_job("job", kind="table", plan=PLAN)
    stale = hung.acquire("job", CHUNK, holder="hung")
    pg_conn.execute(
        "UPDATE parallel_batch.chunks SET heartbeat_at = now() - interval '1 hour'"
        " WHERE chunk_id = %s",
        (CHUNK,),
    )
    with CheckpointStore.connect(pg_url) as successor:
        lease = successor.acquire("job", CHUNK, holder="next", wait_timeout=30, stale_after=60)
        assert lease.token > stale.token
    with pytest.raises(psycopg.OperationalError):
        hung.commit_batch(stale, last_key=1, rows_read=1)
    hung.close()


def test_that_one_store_cannot_lease_a_chunk_twice(store: CheckpointStore) -> None:
    """Test that a second acquire through the same store (same session) is refused."""
    store.ensure_job("job", kind="table", plan=PLAN)
    store.acquire("job", CHUNK)
    with pytest.raises(ChunkBusyError, match="already leased through this store"):
        store.acquire("job", CHUNK)


def test_that_an_unknown_chunk_is_a_configuration_error(store: CheckpointStore) -> None:
    """Test that acquiring a chunk that is not in the plan says so."""
    store.ensure_job("job", kind="table", plan=PLAN)
    with pytest.raises(ConfigurationError, match=r"chunk \(0,1\] is not in the plan of job job"):
        store.acquire("job", "(0,1]")


def test_that_a_failed_chunk_is_recorded_and_retried(
    store: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test that fail() records the error, and the next acquire resumes the failed chunk."""
    store.ensure_job("job", kind="table", plan=PLAN[:1])
    lease = store.acquire("job", CHUNK)
    store.commit_batch(lease, last_key=30, rows_read=30)
    assert store.fail(lease, RuntimeError("disk full")) is True
    row = chunk_row(pg_conn)
    assert (row["status"], row["error"]) == ("failed", "RuntimeError: disk full")
    job = store.get_job("job")
    assert job is not None
    assert (job.status, job.error) == ("failed", f"{CHUNK}: RuntimeError: disk full")
    retry = store.acquire("job", CHUNK, wait_timeout=0)
    assert (retry.last_key, retry.attempts) == (30, 2)
    job = store.get_job("job")
    assert job is not None
    assert (job.status, job.error) == ("running", None)


# ---- dead letters ----------------------------------------------------------------------------


def test_that_a_dead_letter_is_written_once_per_item_across_resumes(
    pg_url: str, pg_conn: psycopg.Connection
) -> None:
    """Test that the same item failing in two attempts leaves one dead letter, attempts added."""
    for message in ("first", "second"):
        with CheckpointStore.connect(pg_url) as store:
            store.ensure_job("job", kind="table", plan=PLAN)
            lease = store.acquire("job", CHUNK, wait_timeout=30)
            store.commit_batch(
                lease, last_key=3, rows_read=1, dead_letters=[letter("3", 3, message)]
            )
    rows = pg_conn.execute(
        "SELECT item_key, attempts, message, replayed_at FROM parallel_batch.dead_letters"
    ).fetchall()
    assert rows == [("3", 6, "second", None)]


def test_that_a_batch_of_dead_letters_is_stored_field_for_field(
    store: CheckpointStore, pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that letters recorded together (one statement) keep every field as given (NULL
    payload and line, given failure times, a NUL in a message spelled out), and that letters
    of one item in one call (updated in turn) add their attempts as separate calls do."""
    import datetime as dt

    one_by_one = deadletters._UPSERT_ONE
    # letters of distinct items must not take the statement per letter
    monkeypatch.setattr(deadletters, "_UPSERT_ONE", "SELECT 'not this one' FROM nowhere")

    store.ensure_job("job", kind="table", plan=PLAN)
    first = dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    last = first + dt.timedelta(seconds=90)
    letters = [
        DeadLetter("a", None, None, "KeyError", "no key", 2, first, last),
        DeadLetter("line:7", 7, {"id": 7, "note": "x"}, "CsvValueError", "bad\x00byte", 1),
    ]
    with store.conn.transaction():
        assert deadletters.record_dead_letters(store.conn, "job", CHUNK, letters) == 2
    rows = pg_conn.execute(
        "SELECT item_key, line_number, payload, payload IS NULL, error_type, message, attempts,"
        " first_failed_at, last_failed_at, chunk_id FROM parallel_batch.dead_letters"
        " ORDER BY item_key"
    ).fetchall()
    assert rows[0] == ("a", None, None, True, "KeyError", "no key", 2, first, last, CHUNK)
    assert rows[1][:7] == ("line:7", 7, {"id": 7, "note": "x"}, False, "CsvValueError",
                           "bad\\u0000byte", 1)  # fmt: skip
    assert rows[1][7] == rows[1][8] and rows[1][7] > first  # the commit's time
    monkeypatch.setattr(deadletters, "_UPSERT_ONE", one_by_one)
    again = [
        DeadLetter("a", None, None, "ValueError", "still", 1, first, last),
        DeadLetter("a", None, None, "TypeError", "again", 3, first, last + dt.timedelta(1)),
    ]
    with store.conn.transaction():
        assert deadletters.record_dead_letters(store.conn, "job", CHUNK, again) == 2
    found = pg_conn.execute(
        "SELECT error_type, message, attempts, first_failed_at, last_failed_at"
        " FROM parallel_batch.dead_letters WHERE item_key = 'a'"
    ).fetchone()
    assert found == ("TypeError", "again", 6, first, last + dt.timedelta(1))


def test_that_dead_letters_can_be_listed_counted_and_replayed(
    store: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test the dead-letter queries: list, counts, fetch for replay and mark replayed."""
    store.ensure_job("job", kind="table", plan=PLAN)
    lease = store.acquire("job", CHUNK)
    letters = [letter(str(k)) for k in (1, 2, 3)]
    store.commit_batch(lease, last_key=3, rows_read=3, dead_letters=letters)
    conn = store.conn
    assert deadletters.count_dead_letters(conn, "job") == 3
    assert deadletters.count_by_chunk(conn, "job") == {CHUNK: 3}
    assert deadletters.count_by_error_type(conn, "job") == {"PoisonRowError": 3}
    page = deadletters.list_dead_letters(conn, "job", limit=2)
    assert [d.item_key for d in page] == ["1", "2"]
    assert page[0].payload == {"id": "1"}
    rest = deadletters.list_dead_letters(conn, "job", limit=2, after_id=page[-1].id)
    assert [d.item_key for d in rest] == ["3"]
    with conn.transaction():
        todo = deadletters.fetch_for_replay(conn, "job", limit=10)
        assert [d.item_key for d in todo] == ["1", "2", "3"]
        assert deadletters.mark_replayed(conn, "job", ["1", "3"]) == 2
    assert deadletters.count_dead_letters(conn, "job") == 1
    assert deadletters.count_dead_letters(conn, "job", include_replayed=True) == 3
    with pytest.raises(ValueError, match="limit must be greater than 0"):
        deadletters.list_dead_letters(conn, "job", limit=0)


def test_that_a_payload_survives_json(store: CheckpointStore) -> None:
    """Test that json_payload turns Decimal, datetime and bytes into exact text."""
    import datetime as dt
    from decimal import Decimal

    payload = deadletters.json_payload(
        ("id", "amount", "at", "raw"),
        (1, Decimal("12.30"), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), b"\x00\xff"),
    )
    assert payload == {"id": 1, "amount": "12.30", "at": "2024-01-02T03:04:05+00:00", "raw": "AP8="}
    with pytest.raises(ValueError, match="row has 1 values but 2 columns were given"):
        deadletters.json_payload(("a", "b"), (1,))


# ---- full refresh ------------------------------------------------------------------------------


def test_that_full_refresh_restarts_chunks_and_fences_old_leases(
    pg_url: str, target: str, pg_conn: psycopg.Connection
) -> None:
    """Test that full_refresh resets progress, flags needs_reset and invalidates running leases."""
    with CheckpointStore.connect(pg_url) as store:
        store.ensure_job("job", kind="table", plan=PLAN)
        done = store.acquire("job", CHUNK)
        store.commit_batch(
            done,
            last_key=100,
            rows_read=100,
            write=insert(range(1, 100)),
            dead_letters=[letter("100")],
        )
        store.complete(done)
        running = store.acquire("job", "(100,+inf]")
        store.commit_batch(running, last_key=120, rows_read=20)
        with CheckpointStore.connect(pg_url) as planner:
            job = planner.ensure_job("job", kind="table", plan=PLAN, full_refresh=True)
        assert job.status == "pending"
        with pytest.raises(LeaseLostError, match="lease lost"):
            store.commit_batch(running, last_key=130, rows_read=10)
    row = chunk_row(pg_conn)
    assert (row["status"], row["needs_reset"], row["rows_read"], row["last_key"]) == (
        "pending",
        True,
        0,
        None,
    )
    with CheckpointStore.connect(pg_url) as store:
        lease = store.acquire("job", CHUNK, wait_timeout=0)
        assert (lease.completed, lease.needs_reset, lease.last_key) == (False, True, None)

        def replace(conn: psycopg.Connection) -> int:
            conn.execute("DELETE FROM target WHERE id <= 100")
            return insert(range(1, 101))(conn)

        store.commit_batch(lease, last_key=100, rows_read=100, write=replace)
        assert lease.needs_reset is False
        store.complete(lease)
    assert count(pg_conn, "SELECT count(*) FROM target") == 100
    assert count(pg_conn, "SELECT count(*) FROM parallel_batch.dead_letters") == 0


def test_that_completing_a_chunk_that_needs_its_reset_is_refused(store: CheckpointStore) -> None:
    """Test that complete() refuses a chunk whose earlier output was not replaced yet."""
    store.ensure_job("job", kind="table", plan=PLAN, full_refresh=True)
    lease = store.acquire("job", CHUNK)
    with pytest.raises(ValueError, match="still needs its earlier output replaced"):
        store.complete(lease)


def test_that_a_refresh_with_a_new_plan_drops_orphan_dead_letters(
    store: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test that a refresh to a new plan deletes dead letters of chunks that no longer exist."""
    store.ensure_job("job", kind="table", plan=PLAN)
    lease = store.acquire("job", CHUNK)
    store.commit_batch(lease, last_key=5, rows_read=1, dead_letters=[letter("5")])
    store.release(lease)
    new_plan = [{"chunk_id": "(-inf,+inf]", "lower": None, "upper": None, "rows": 150}]
    job = store.ensure_job("job", kind="table", plan=new_plan, full_refresh=True)
    assert job.chunk_ids == ["(-inf,+inf]"]
    assert count(pg_conn, "SELECT count(*) FROM parallel_batch.dead_letters") == 0
    assert count(pg_conn, "SELECT count(*) FROM parallel_batch.chunks") == 1


def test_that_a_refresh_drops_its_jobs_key_claims_only(
    store: CheckpointStore, pg_conn: psycopg.Connection
) -> None:
    """Test that a full refresh of a job half way deletes its key claims, by key and by range
    (its chunks claim the keys afresh), and leaves another job's claims alone."""
    from parallel_batch.store import claim_ranges, claims

    for job in ("job", "other"):
        store.ensure_job(job, kind="csv", plan=PLAN)
        with pg_conn.transaction():  # integers in order: one range claim
            plan = claims.plan_claims(["1", "2"], [2, 3], {})
            claims.apply_claims(pg_conn, job, CHUNK, plan, {})
    claim_ranges.to_keys(pg_conn, "job")  # the job's claims by key, another batch's by range
    with pg_conn.transaction():
        claims.apply_claims(pg_conn, "job", CHUNK, claims.plan_claims(["3"], [4], {}), {})
    assert claims.find_claims(pg_conn, "job", ["1", "2", "3"]).keys() == {"1", "2", "3"}
    store.ensure_job("job", kind="csv", plan=PLAN, full_refresh=True)
    assert claims.find_claims(pg_conn, "job", ["1", "2", "3"]) == {}
    assert count(pg_conn, "SELECT count(*) FROM parallel_batch.range_claims") == 1  # other's
    claim_ranges.to_keys(pg_conn, "other")
    assert claims.find_claims(pg_conn, "other", ["1", "2"]) == {
        "1": claims.Claim(2, CHUNK),
        "2": claims.Claim(3, CHUNK),
    }


# ---- progress ----------------------------------------------------------------------------------


def test_that_status_views_show_progress_and_liveness(store: CheckpointStore, pg_url: str) -> None:
    """Test that job_status, chunk_rows and list_jobs report counts, liveness and dead letters."""
    assert store.list_jobs() == []
    store.ensure_job("job", kind="table", plan=PLAN, source="demo.events", target="t")
    lease = store.acquire("job", CHUNK, holder="me")
    store.commit_batch(lease, last_key=60, rows_read=60, dead_letters=[letter("7")])
    status = store.job_status("job")
    assert status is not None
    assert (status.chunks_total, status.chunks_running, status.chunks_pending) == (2, 1, 1)
    assert (status.rows_total, status.rows_read, status.rows_failed) == (150, 60, 1)
    assert status.dead_letters == 1
    assert status.percent == pytest.approx(40.0)
    assert status.job.source == "demo.events"
    chunks = store.chunk_rows("job")
    assert [(c.chunk_id, c.status, c.alive, c.dead_letters) for c in chunks] == [
        (CHUNK, "running", True, 1),
        ("(100,+inf]", "pending", False, 0),
    ]
    store.release(lease)
    assert store.chunk_rows("job")[0].alive is False
    assert [s.job.job_key for s in store.list_jobs()] == ["job"]
    assert store.list_jobs(status="completed") == []
    assert store.job_status("missing") is None
