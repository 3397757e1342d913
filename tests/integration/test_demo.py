"""Tests of the demo data (demo.events, demo.events_enriched) and the enrich transform."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from include.transforms import events as transforms
from include.transforms.events import PoisonRowError
from parallel_batch import cli
from parallel_batch.demo import events as demo
from parallel_batch.demo.tables import create_events_enriched
from parallel_batch.exceptions import InvalidIdentifierError


def _one(conn: psycopg.Connection, query: str) -> tuple:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row


def test_seed_creates_the_contract_table(pg_conn: psycopg.Connection) -> None:
    """Test that seeding creates demo.events with the contract's columns, key and N rows."""
    assert demo.seed_events(pg_conn, 1000) == 1000
    columns = pg_conn.execute(
        "SELECT column_name, data_type, numeric_precision, numeric_scale"
        " FROM information_schema.columns WHERE table_schema = 'demo' AND table_name = 'events'"
        " ORDER BY ordinal_position"
    ).fetchall()
    assert columns == [
        ("id", "bigint", 64, 0),
        ("user_id", "integer", 32, 0),
        ("payload", "text", None, None),
        ("amount", "numeric", 12, 2),
        ("created_at", "timestamp with time zone", None, None),
    ]
    assert _one(pg_conn, "SELECT count(*), min(id), max(id) FROM demo.events") == (1000, 1, 1000)
    primary = _one(
        pg_conn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = i.indkey[0] WHERE i.indrelid = 'demo.events'::regclass AND i.indisprimary",
    )
    assert primary == ("id",)
    assert _one(pg_conn, "SELECT count(*) FROM demo.events WHERE payload LIKE 'poison:%'") == (0,)


def test_seed_spreads_created_at_over_the_last_30_days(pg_conn: psycopg.Connection) -> None:
    """Test that created_at covers the 30 days before now, about evenly."""
    demo.seed_events(pg_conn, 3000)
    now = _one(pg_conn, "SELECT now()")[0]
    oldest, newest = _one(pg_conn, "SELECT min(created_at), max(created_at) FROM demo.events")
    assert now - dt.timedelta(days=30, minutes=1) <= oldest <= now - dt.timedelta(days=29)
    assert now - dt.timedelta(hours=1) <= newest <= now
    per_day = [
        n
        for (n,) in pg_conn.execute(
            "SELECT count(*) FROM demo.events GROUP BY date_trunc('day', now() - created_at)"
        )
    ]
    assert len(per_day) == 30
    assert max(per_day) - min(per_day) <= 2


def test_amounts_have_two_decimals(pg_conn: psycopg.Connection) -> None:
    """Test that amounts are numeric with 2 decimals and not all whole."""
    demo.seed_events(pg_conn, 500)
    amounts = [a for (a,) in pg_conn.execute("SELECT amount FROM demo.events")]
    assert all(isinstance(a, Decimal) and a.as_tuple().exponent == -2 for a in amounts)
    assert len({a % 1 for a in amounts}) > 50


def test_poison_and_crash_spacing(pg_conn: psycopg.Connection) -> None:
    """Test that every K-th row is poison, every J-th a crash row (crash wins), others clean."""
    demo.seed_events(pg_conn, 1000, poison_every=7, crash_every=50)
    poison = [
        i
        for (i,) in pg_conn.execute(
            "SELECT id FROM demo.events WHERE payload LIKE 'poison:%' ORDER BY id"
        )
    ]
    crash = [
        i
        for (i,) in pg_conn.execute(
            "SELECT id FROM demo.events WHERE payload LIKE 'crash:%' ORDER BY id"
        )
    ]
    assert crash == list(range(50, 1001, 50))
    assert poison == [i for i in range(7, 1001, 7) if i % 50 != 0]
    clean = _one(
        pg_conn,
        "SELECT count(*) FROM demo.events WHERE payload NOT LIKE 'poison:%'"
        " AND payload NOT LIKE 'crash:%' AND payload LIKE 'event %'",
    )
    assert clean == (1000 - len(poison) - len(crash),)


def test_rerun_replaces_the_rows(pg_conn: psycopg.Connection) -> None:
    """Test that seeding again replaces the earlier rows (count and poison positions)."""
    demo.seed_events(pg_conn, 1000, poison_every=10)
    demo.seed_events(pg_conn, 300, poison_every=100)
    assert _one(pg_conn, "SELECT count(*), max(id) FROM demo.events") == (300, 300)
    poison = pg_conn.execute(
        "SELECT id FROM demo.events WHERE payload LIKE 'poison:%' ORDER BY id"
    ).fetchall()
    assert poison == [(100,), (200,), (300,)]
    assert demo.seed_events(pg_conn, 0) == 0
    assert _one(pg_conn, "SELECT count(*) FROM demo.events") == (0,)


def test_seed_inside_a_caller_transaction_leaves_the_commit_to_it(pg_url: str) -> None:
    """Test that seeding commits on its own when idle, and in a caller's transaction does not."""
    with psycopg.connect(pg_url) as conn:  # not autocommit, no transaction open yet
        demo.seed_events(conn, 10)  # commits on its own
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute("SELECT 1")  # the caller's transaction
        demo.seed_events(conn, 20)
        conn.rollback()
        assert _one(conn, "SELECT count(*) FROM demo.events") == (10,)


def test_create_events_enriched_is_idempotent(pg_conn: psycopg.Connection) -> None:
    """Test that the enriched table has the contract's columns and survives a second create."""
    create_events_enriched(pg_conn)
    pg_conn.execute("INSERT INTO demo.events_enriched (id) VALUES (1)")
    create_events_enriched(pg_conn)
    columns = pg_conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'demo' AND table_name = 'events_enriched' ORDER BY ordinal_position"
    ).fetchall()
    assert columns == [
        ("id", "bigint"),
        ("user_id", "integer"),
        ("payload_sha256", "text"),
        ("amount_cents", "bigint"),
        ("created_at", "timestamp with time zone"),
    ]
    assert _one(pg_conn, "SELECT count(*) FROM demo.events_enriched") == (1,)


def test_enrich_matches_an_independent_computation(pg_conn: psycopg.Connection) -> None:
    """Test that enrich_events gives Postgres's own sha256 and cents for every clean row."""
    demo.seed_events(pg_conn, 2000, poison_every=97)
    rows = pg_conn.execute(
        "SELECT id, user_id, payload, amount, created_at FROM demo.events"
        " WHERE payload NOT LIKE 'poison:%' ORDER BY id"
    ).fetchall()
    expected = pg_conn.execute(
        "SELECT id, user_id, encode(sha256(convert_to(payload, 'UTF8')), 'hex'),"
        " (amount * 100)::bigint, created_at FROM demo.events"
        " WHERE payload NOT LIKE 'poison:%' ORDER BY id"
    ).fetchall()
    assert transforms.enrich_events(rows) == expected
    assert [transforms.enrich_event(r) for r in rows[:50]] == expected[:50]


def test_enrich_of_unusual_values() -> None:
    """Test that non-ASCII payloads, NULLs and float amounts are enriched correctly."""
    created = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = [
        (1, 2, "héllo wörld ✓", Decimal("0.29"), created),
        (2, None, None, None, None),
        (3, 4, "x", 0.29, created),  # 0.29 * 100 is 28.999999999999996 as a float
        (4, 5, "", Decimal("-12.50"), created),
    ]
    assert transforms.enrich_events(rows) == [
        (1, 2, hashlib.sha256("héllo wörld ✓".encode()).hexdigest(), 29, created),
        (2, None, None, None, None),
        (3, 4, hashlib.sha256(b"x").hexdigest(), 29, created),
        (4, 5, hashlib.sha256(b"").hexdigest(), -1250, created),
    ]


def test_poison_rows_raise_on_every_attempt() -> None:
    """Test that a poison row raises PoisonRowError each time, alone or in a batch."""
    poison = (7, 1, "poison: event 7", Decimal("1.00"), None)
    clean = (6, 1, "event 6", Decimal("1.00"), None)
    for _ in range(3):
        with pytest.raises(PoisonRowError, match="event 7 is a poison row"):
            transforms.enrich_event(poison)
        with pytest.raises(PoisonRowError, match="event 7 is a poison row"):
            transforms.enrich_events([clean, poison])


@pytest.mark.parametrize("function", ["enrich_event", "enrich_events"])
def test_crash_rows_end_the_process_abruptly(function: str) -> None:
    """Test that a crash row kills the process that handles it with the crash exit code."""
    row = "(9, 1, 'crash: event 9', __import__('decimal').Decimal('1.00'), None)"
    arg = row if function == "enrich_event" else f"[{row}]"
    code = f"from include.transforms import events\nevents.{function}({arg})\nprint('survived')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == transforms.CRASH_EXIT_CODE
    assert "survived" not in done.stdout


def test_seed_rejects_bad_arguments(pg_conn: psycopg.Connection) -> None:
    """Test that seed_events checks its arguments and table name up front."""
    with pytest.raises(ValueError, match="rows must not be negative"):
        demo.seed_events(pg_conn, -1)
    with pytest.raises(ValueError, match="poison_every must be greater than 0"):
        demo.seed_events(pg_conn, 10, poison_every=0)
    with pytest.raises(ValueError, match="crash_every must be greater than 0"):
        demo.seed_events(pg_conn, 10, crash_every=-3)
    with pytest.raises(InvalidIdentifierError, match="Invalid table name"):
        demo.seed_events(pg_conn, 10, table="demo.events; DROP SCHEMA demo")


def test_cli_seed_events(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that `parallel-batch seed events` seeds the configured database."""
    monkeypatch.setenv("PARALLEL_BATCH_DATABASE_URL", pg_url)
    assert cli.main(["seed", "events", "--rows", "120", "--poison-every", "40"]) == 0
    with psycopg.connect(pg_url) as conn:
        assert _one(conn, "SELECT count(*) FROM demo.events") == (120,)
        poison = conn.execute(
            "SELECT id FROM demo.events WHERE payload LIKE 'poison:%' ORDER BY id"
        ).fetchall()
        assert poison == [(40,), (80,), (120,)]
        assert _one(conn, "SELECT count(*) FROM demo.events_enriched") == (0,)
    with pytest.raises(SystemExit):
        cli.main(["seed", "events", "--rows", "10", "--crash-every", "0"])


def test_that_concurrent_target_creation_never_collides(pg_url: str) -> None:
    """Test that setup tasks creating the same target at once (a backfill) all succeed."""
    import threading

    errors: list[BaseException] = []

    def create(n: int) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for attempt in range(10):
                try:
                    create_events_enriched(conn, f"race{attempt}.enriched")
                except BaseException as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'race%' AND tablename = 'enriched'"
        ).fetchone()
    assert count == (10,)


def test_the_demo_starts_from_empty_targets(pg_conn: psycopg.Connection) -> None:
    """Test that the demo empties its target tables where they exist (a second demo then runs
    as the first did) and that missing ones are no error."""
    from parallel_batch.demo.run import empty_targets
    from parallel_batch.demo.tables import create_customers

    pg_conn.execute("CREATE SCHEMA IF NOT EXISTS demo")
    empty_targets(pg_conn)  # neither table exists yet
    create_events_enriched(pg_conn)
    pg_conn.execute(
        "INSERT INTO demo.events_enriched VALUES (1, 1, 'x', 100, now()), (2, 2, 'y', 200, now())"
    )
    empty_targets(pg_conn)  # demo.customers does not exist yet
    assert _one(pg_conn, "SELECT count(*) FROM demo.events_enriched") == (0,)
    create_customers(pg_conn)
    pg_conn.execute("INSERT INTO demo.customers (id, name) VALUES (1, 'a')")
    pg_conn.execute("INSERT INTO demo.events_enriched VALUES (3, 3, 'z', 300, now())")
    empty_targets(pg_conn)
    assert _one(pg_conn, "SELECT count(*) FROM demo.events_enriched") == (0,)
    assert _one(pg_conn, "SELECT count(*) FROM demo.customers") == (0,)


@pytest.mark.parametrize("dag_id", ["parallel_batch_table", "parallel_batch_csv"])
def test_the_demo_parses_only_its_dags_own_file(dag_id: str, tmp_path: Path) -> None:
    """Test that each demo DAG run names its own file of the DAGs folder (a file that exists
    and defines that DAG id), and that a DAG without a file of its name parses the folder."""
    from parallel_batch.demo.run import dags_test_argv
    from parallel_batch.local import env as localenv

    env = localenv.airflow_environment("postgresql://localhost/unused", home=tmp_path)
    argv = dags_test_argv(env, dag_id, {"chunks": 2})
    assert argv[argv.index("test") + 1 :][:3] == [dag_id, "-c", '{"chunks": 2}']
    dag_file = Path(argv[argv.index("--dagfile-path") + 1])
    assert dag_file.parent == Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    assert f'dag_id="{dag_id}"' in dag_file.read_text()
    assert "--dagfile-path" not in dags_test_argv(env, "no_such_dag", {})
