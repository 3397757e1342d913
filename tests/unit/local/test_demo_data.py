"""Tests of parallel_batch.local.demo_data and `parallel-batch airflow`'s use of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg
import pytest

from parallel_batch.demo.events import seed_events
from parallel_batch.demo.tables import EVENTS_TABLE
from parallel_batch.local.demo_data import DEMO_EVENTS, seed_missing_demo_data


def test_seeds_what_is_missing(pg_url: str, pg_conn: psycopg.Connection) -> None:
    """Test that a database without demo.events gets it, said in one line."""
    done = seed_missing_demo_data(pg_url)

    assert done == [
        f"seeded {EVENTS_TABLE} with {DEMO_EVENTS:,} rows (parallel_batch_table's source)",
    ]
    assert pg_conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone() == (DEMO_EVENTS,)
    poison = pg_conn.execute(
        f"SELECT count(*) FROM {EVENTS_TABLE} WHERE payload LIKE 'poison:%'"
    ).fetchone()
    assert poison is not None and poison[0] > 0


def test_keeps_what_is_there(pg_url: str, pg_conn: psycopg.Connection) -> None:
    """Test that an existing demo.events is left exactly as it is."""
    seed_events(pg_conn, 7)

    done = seed_missing_demo_data(pg_url)

    assert done == []
    assert pg_conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone() == (7,)


def test_airflow_command_seeds_before_serving(
    pg_url: str,
    pg_conn: psycopg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test that `parallel-batch airflow` seeds the missing demo data into the connection's
    database and hands the lines to the banner (Airflow's own start is left out here)."""
    from parallel_batch.cli import main
    from parallel_batch.local import env as localenv
    from parallel_batch.local import serve

    served: list[tuple[Mapping[str, str], Sequence[str]]] = []

    def fake_serve(env: Mapping[str, str], *, demo_data: Sequence[str] = ()) -> int:
        served.append((env, demo_data))
        return 0

    monkeypatch.setenv("PARALLEL_BATCH_DATABASE_URL", pg_url)
    monkeypatch.setenv("PARALLEL_BATCH_HOME", str(tmp_path / ".parallel_batch"))
    monkeypatch.setattr(localenv, "prepare_airflow", lambda env: None)  # no metadata DB here
    monkeypatch.setattr(serve, "serve", fake_serve)

    assert main(["airflow", "--port", "8199"]) == 0

    ((env, demo_data),) = served
    assert env["AIRFLOW__API__PORT"] == "8199"
    assert [line.split(" ")[0] for line in demo_data] == ["seeded"]
    assert pg_conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone() == (DEMO_EVENTS,)

    assert main(["airflow", "--port", "8199", "--no-demo-data"]) == 0
    assert served[-1][1] == []
