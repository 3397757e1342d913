"""The databases of the local Airflow, read and created with psycopg (never with Airflow).

:func:`parallel_batch.local.env.prepare_airflow` asks these what is missing and runs the
``airflow`` CLI only for that::

    ensure_database(metadata)      CREATE DATABASE airflow            unless it exists
    needs_migration(home, url)     alembic revision vs the stamp       -> airflow db migrate
    record_migration(home, url)    stamp := Airflow version, URL, revision
    metadata_state(url, pool)      .pool_slots is None                 -> airflow pools set
    ensure_data_schema(conninfo)   CREATE DATABASE + the parallel_batch schema of the data
"""

from __future__ import annotations

import json
import logging
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from parallel_batch.exceptions import ConfigurationError, DatabaseUnavailableError
from parallel_batch.local.conninfo import libpq_url, parse_conninfo
from parallel_batch.store.schema import ensure_schema

__all__ = [
    "MetadataState",
    "ensure_data_schema",
    "ensure_database",
    "metadata_state",
    "needs_migration",
    "record_migration",
]

log = logging.getLogger(__name__)

# Seconds to wait for the server when connecting: a local server answers at once.
CONNECT_TIMEOUT = 10
STAMP_FILE = "prepared.json"


class MetadataState(NamedTuple):
    """What the metadata database holds; None where it is missing."""

    revision: str | None  # alembic revision of the Airflow schema
    pool_slots: int | None  # slots of the pool asked about


def ensure_database(database_url: str) -> bool:
    """Create the database that ``database_url`` names if it is missing; return True if created.

    :param database_url: a libpq URL or ``key=value`` string; the server's ``postgres``
        database is used to create it.
    :raises DatabaseUnavailableError: when the server cannot be reached.
    """
    name = parse_conninfo(database_url).get("dbname")
    if not name:
        raise ConfigurationError("The database URL names no database")
    try:
        with psycopg.connect(
            make_conninfo(database_url, dbname="postgres"),
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                return False  # created meanwhile by a concurrent prepare
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"Cannot reach the database server: {exc}") from exc
    log.info("Created the database %s", name)
    return True


def metadata_state(sqlalchemy_url: str, pool: str) -> MetadataState:
    """Return the alembic revision of the metadata DB and the slots of ``pool``.

    :param sqlalchemy_url: the metadata DB (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``).
    :param pool: the Airflow pool to look up.
    """
    with psycopg.connect(
        libpq_url(sqlalchemy_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT
    ) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
                " AND table_name IN ('alembic_version', 'slot_pool')"
            )
        }
        revision = slots = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        if "slot_pool" in tables:
            found = conn.execute("SELECT slots FROM slot_pool WHERE pool = %s", (pool,)).fetchone()
            slots = int(found[0]) if found else None
    return MetadataState(revision, slots)


def _stamp_key(sqlalchemy_url: str) -> dict[str, str]:
    return {
        "airflow_version": metadata.version("apache-airflow-core"),
        "sql_alchemy_conn": sqlalchemy_url,
    }


def needs_migration(home: Path, sqlalchemy_url: str) -> bool:
    """Return False when the metadata DB is at the revision this home recorded for this Airflow.

    :param home: ``AIRFLOW_HOME``, which holds the stamp of the last migration.
    :param sqlalchemy_url: the metadata DB.
    """
    revision = metadata_state(sqlalchemy_url, "").revision
    try:
        stamp = json.loads((home / STAMP_FILE).read_text())
    except (OSError, ValueError):
        stamp = {}
    if revision is not None and stamp == {**_stamp_key(sqlalchemy_url), "revision": revision}:
        log.debug("The Airflow metadata DB is at %s already", revision)
        return False
    return True


def record_migration(home: Path, sqlalchemy_url: str) -> None:
    """Record the metadata DB's revision for this Airflow version (after ``airflow db migrate``)."""
    revision = metadata_state(sqlalchemy_url, "").revision
    home.mkdir(parents=True, exist_ok=True)
    (home / STAMP_FILE).write_text(json.dumps({**_stamp_key(sqlalchemy_url), "revision": revision}))


def ensure_data_schema(conninfo: str) -> None:
    """Create the data database if missing, and the ``parallel_batch`` schema in it.

    :param conninfo: the data database (the ``parallel_batch_default`` connection).
    """
    ensure_database(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_schema(conn)
