"""Which database the operators work on: the ``parallel_batch_default`` Airflow connection.

The connection is an ordinary ``postgres`` connection (``AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT``,
the UI, or any secrets backend). It becomes a libpq conninfo string for psycopg 3::

    Connection(host, port, login, password, schema, extra)
        -> host=... port=... user=... password=... dbname=... <libpq keywords from extra>

Extras that are not libpq keywords (the Postgres hook's ``cursor``, ``iam``, ...) are left out.
Only when Airflow is not importable, or the connection is not defined, does the package's own
configuration apply (``PARALLEL_BATCH_DATABASE_URL``, else the embedded server), and the log says
so: a DAG that silently wrote to another database than the one its connection names would be
worse than one that fails.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from psycopg import pq
from psycopg.conninfo import make_conninfo

from parallel_batch.exceptions import ConfigurationError

__all__ = ["DEFAULT_CONN_ID", "conninfo_from_fields", "resolve_conninfo"]

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "parallel_batch_default"


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults())


def conninfo_from_fields(
    *,
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    schema: str | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Return the libpq conninfo string of an Airflow connection's fields.

    :param host: host name, address or Unix-socket directory.
    :param port: the port.
    :param login: the user.
    :param password: the password.
    :param schema: the database name (Airflow calls it "schema").
    :param extra: the connection's extras; libpq keywords among them (``sslmode``,
        ``application_name``, ...) are passed on, other keys are ignored.
    """
    params: dict[str, Any] = {}
    keywords = _libpq_keywords()
    ignored = []
    for key, value in (extra or {}).items():
        if key in keywords and value is not None:
            params[key] = value
        else:
            ignored.append(key)
    if ignored:
        log.debug("Ignoring connection extras that are not libpq parameters: %s", sorted(ignored))
    for key, value in (
        ("host", host),
        ("port", port),
        ("user", login),
        ("password", password),
        ("dbname", schema),
    ):
        if value not in (None, ""):
            params[key] = value
    return make_conninfo(**params)


def _fallback(reason: str) -> str:
    from parallel_batch.local.config import database_url

    url = database_url()
    log.warning("%s: using the configured database instead (PARALLEL_BATCH_DATABASE_URL)", reason)
    return url


def resolve_conninfo(conn_id: str = DEFAULT_CONN_ID) -> str:
    """Return the psycopg conninfo of the Airflow connection ``conn_id``.

    Falls back to :func:`parallel_batch.local.config.database_url` (with a warning in the log) only
    when Airflow is not installed or the connection is not defined.

    :param conn_id: the Airflow connection id.
    :raises ConfigurationError: when the connection exists but is not a Postgres connection.
    """
    if not conn_id:
        raise ValueError("conn_id must not be empty")
    try:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return _fallback("Airflow is not installed")
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return _fallback(f"The Airflow connection {conn_id!r} is not defined")
    if conn.conn_type not in (None, "", "postgres", "postgresql"):
        raise ConfigurationError(
            f"The Airflow connection {conn_id!r} has type {conn.conn_type!r}; "
            "parallel_batch needs a 'postgres' connection"
        )
    return conninfo_from_fields(
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        schema=conn.schema,
        extra=conn.extra_dejson,
    )
