"""Which database the operators work on: the ``parallel_batch_default`` Airflow connection.

The connection is an ordinary ``postgres`` connection (``AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT``,
the UI, or any secrets backend). The Postgres provider's :class:`PostgresHook` builds its
connection arguments, so everything the hook understands works here too (IAM tokens for RDS,
Redshift and Azure, ``options``, ``sslmode`` and every other libpq keyword in the extras); they
become one libpq conninfo string, which the task and its worker processes connect with::

    Connection(host, port, login, password, schema, extra)
        -> PostgresHook: IAM token, extras minus the hook's own keys  (get_conn's arguments)
        -> host=... port=... user=... password=... dbname=... sslmode=... options=...

A connection that is not defined, or not a Postgres one, fails the task at once, without retries
(:class:`ConnectionConfigError` is an ``AirflowFailException``), with the conn id and how to
define it. There is no fallback: a task that silently wrote into another database than its
connection names would be worse than one that fails. The embedded server of ``parallel_batch.local``
is for the command line only; nothing here starts it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException
from psycopg import pq
from psycopg.conninfo import make_conninfo

from parallel_batch.airflow import DEFAULT_CONN_ID
from parallel_batch.exceptions import ConfigurationError

if TYPE_CHECKING:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

__all__ = ["DEFAULT_CONN_ID", "ConnectionConfigError", "conninfo_from_args", "resolve_conninfo"]

log = logging.getLogger(__name__)

_POSTGRES_TYPES = frozenset({"postgres", "postgresql"})


class ConnectionConfigError(AirflowFailException, ConfigurationError):
    """Raised when the Airflow connection is not defined, or is not a Postgres connection.

    An ``AirflowFailException``, so a task fails at once without retries, and a
    :class:`~parallel_batch.exceptions.ConfigurationError`, so the progress page shows it.
    """


def _undefined_message(conn_id: str) -> str:
    return (
        f"The Airflow connection {conn_id!r} is not defined. Define it as a Postgres connection: "
        f"in the UI (Admin -> Connections), with `airflow connections add {conn_id} --conn-uri "
        f"postgresql://USER:PASSWORD@HOST:5432/DATABASE`, with the environment variable "
        f"AIRFLOW_CONN_{conn_id.upper()} (that URI, or the connection's JSON) in every Airflow "
        "process, or in your secrets backend."
    )


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults())


def conninfo_from_args(args: Mapping[str, Any]) -> str:
    """Return the libpq conninfo string of ``psycopg.connect`` keyword arguments.

    :param args: what :meth:`PostgresHook.get_conn` would connect with; libpq keywords with a
        value are kept, the rest (``row_factory`` of a ``cursor`` extra, ...) is left out.
    """
    keywords = _libpq_keywords()
    params = {k: v for k, v in args.items() if k in keywords and v is not None and v != ""}
    ignored = sorted(set(args) - keywords)
    if ignored:
        log.debug("Ignoring connection arguments that are not libpq parameters: %s", ignored)
    return make_conninfo(**params)


@functools.cache
def _hook_class() -> type[PostgresHook]:
    """Return a :class:`PostgresHook` whose ``get_conn()`` returns its arguments, unconnected."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    if not hasattr(PostgresHook, "_create_connection"):  # the providers before psycopg 3
        raise ConfigurationError(
            "parallel_batch needs apache-airflow-providers-postgres>=7.1, run: "
            "pip install 'apache-airflow-providers-postgres>=7.1'"
        )

    class ConnectArgsHook(PostgresHook):
        def _create_connection(self, conn_args: dict[str, Any]) -> Any:
            return dict(conn_args)

    return ConnectArgsHook


def resolve_conninfo(conn_id: str = DEFAULT_CONN_ID) -> str:
    """Return the psycopg conninfo of the Airflow connection ``conn_id``.

    It is built as the Postgres hook connects: an IAM token is fetched now when the connection's
    extras ask for one (a token is valid for a limited time: resolve again to reconnect later).

    :param conn_id: the Airflow connection id.
    :raises ConnectionConfigError: when the connection is not defined, or is not a Postgres
        connection.
    """
    if not conn_id:
        raise ValueError("conn_id must not be empty")
    hook = _hook_class()(postgres_conn_id=conn_id)
    try:
        conn = hook.connection
    except AirflowNotFoundException as exc:
        raise ConnectionConfigError(_undefined_message(conn_id)) from exc
    if conn.conn_type and conn.conn_type not in _POSTGRES_TYPES:
        raise ConnectionConfigError(
            f"The Airflow connection {conn_id!r} has type {conn.conn_type!r}; "
            "parallel_batch needs a 'postgres' connection"
        )
    args: dict[str, Any] = hook.get_conn()  # type: ignore[assignment]  # ConnectArgsHook's
    return conninfo_from_args(args)
