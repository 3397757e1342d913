"""One database server, three spellings: libpq conninfo, SQLAlchemy URL, Airflow connection JSON.

The local Airflow keeps its metadata and the data on one server, so each of its settings is the
same server written the way its reader wants::

    "postgresql://postgres:@/postgres?host=/.../pgdata"    libpq: psycopg, the CLI, the tests
      -> metadata_url()    postgresql+psycopg://postgres@/airflow?host=/.../pgdata   (SQLAlchemy)
      -> connection_json() {"conn_type": "postgres", "host": "/.../pgdata", ...}     (Airflow)
      <- conninfo_from_connection(), libpq_url()                                     (and back)

No Airflow import: these values are computed before Airflow reads its configuration.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parallel_batch.exceptions import ConfigurationError

__all__ = [
    "CONN_ENV",
    "CONN_ID",
    "METADATA_DATABASE",
    "connection_json",
    "conninfo_from_connection",
    "libpq_url",
    "metadata_url",
    "parse_conninfo",
]

CONN_ID = "parallel_batch_default"
CONN_ENV = "AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT"
METADATA_DATABASE = "airflow"


def parse_conninfo(database_url: str) -> dict[str, str]:
    """Parse a libpq URL or ``key=value`` string into its parameters (psycopg's parser).

    :raises ConfigurationError: when the string is malformed.
    """
    try:
        params = conninfo_to_dict(database_url)
    except Exception as exc:  # psycopg.ProgrammingError for a malformed string
        raise ConfigurationError(f"Invalid database URL: {exc}") from exc
    return {key: str(value) for key, value in params.items() if value is not None}


def metadata_url(database_url: str, database: str = METADATA_DATABASE) -> str:
    """Return the SQLAlchemy URL (psycopg 3 driver) of ``database`` on ``database_url``'s server.

    A Unix-socket host (a directory) goes into the query string, ``?host=/path``, the form
    both SQLAlchemy and libpq read; a TCP host stays in the authority part.

    :param database_url: any libpq URL or ``key=value`` string of the server.
    :param database: the database name in the returned URL.
    """
    if not database:
        raise ValueError("database must not be empty")
    params = parse_conninfo(database_url)
    params.pop("dbname", None)
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    if password is not None:
        auth = f"{user}:{quote(password, safe='')}@"
    else:
        auth = f"{user}@" if user else ""
    query: dict[str, str] = {}
    if host.startswith("/") or "," in host:
        query["host"] = host
        netloc = auth
        if port:
            query["port"] = port
    else:
        netloc = f"{auth}{host}" + (f":{port}" if port else "")
    query.update(params)
    url = f"postgresql+psycopg://{netloc}/{quote(database, safe='')}"
    if query:
        # '/' stays readable; '%' and '$' never appear unescaped (Airflow expands $VARS)
        url += "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in sorted(query.items()))
    return url


def libpq_url(sqlalchemy_url: str) -> str:
    """Return the libpq (psycopg) form of a ``postgresql+driver://`` SQLAlchemy URL."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        raise ConfigurationError(
            f"Not a PostgreSQL SQLAlchemy URL: {urlsplit(sqlalchemy_url).scheme or sqlalchemy_url!r}"
        )
    return f"postgresql://{rest}"


def connection_json(database_url: str) -> str:
    """Return the Airflow connection (JSON form) for ``AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT``.

    The JSON form keeps a Unix-socket directory as the plain ``host``, which the Postgres hook
    passes to libpq unchanged; libpq parameters without a connection field go into ``extra``.

    :param database_url: the libpq URL or ``key=value`` string of the data database.
    """
    params = parse_conninfo(database_url)
    conn: dict[str, Any] = {"conn_type": "postgres"}
    for field, key in (("host", "host"), ("login", "user"), ("password", "password")):
        if key in params:
            conn[field] = params.pop(key)
    if "dbname" in params:
        conn["schema"] = params.pop("dbname")
    if "port" in params:
        conn["port"] = int(params.pop("port"))
    if params:
        conn["extra"] = params
    return json.dumps(conn, sort_keys=True)


def conninfo_from_connection(value: str) -> str:
    """Return a libpq ``key=value`` string from an ``AIRFLOW_CONN_*`` JSON value of ours."""
    try:
        conn = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{CONN_ENV} is not the JSON form of a connection") from exc
    params: dict[str, Any] = dict(conn.get("extra") or {})
    for field, key in (("host", "host"), ("login", "user"), ("password", "password")):
        if conn.get(field) is not None:
            params[key] = conn[field]
    if conn.get("schema"):
        params["dbname"] = conn["schema"]
    if conn.get("port"):
        params["port"] = conn["port"]
    return make_conninfo(**params)
