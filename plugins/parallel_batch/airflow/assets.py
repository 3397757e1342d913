"""The target table as an Airflow Asset, in the URI form of the Postgres provider.

::

    postgres://<host>:<port>/<database>/<schema>/<table>      (providers.postgres.assets)

The job's summarize task declares it as its outlet, so a downstream DAG can be scheduled on the
table (``schedule=[Asset("postgres://...")]``); each event carries the job's rows in ``extra``.
The host, port and database come from the target's Airflow connection, read when the DAG is
parsed (an environment-variable connection costs nothing; a secrets backend one a lookup per
parse: pass ``asset="postgres://..."`` to skip it). A connection that is not defined at parse time
gives no outlet (logged) rather than a DAG that does not import: the task then fails on it.
"""

from __future__ import annotations

import functools
import logging

from airflow.sdk import Asset

from parallel_batch.store.identifiers import parse_table

__all__ = ["table_asset", "target_asset"]

log = logging.getLogger(__name__)

# A connection to a Unix socket has a directory as its host, which a URI cannot hold: the
# database is on this machine.
_SOCKET_HOST = "localhost"


def table_asset(host: str, port: int | None, database: str, table: str) -> Asset:
    """The Asset of ``table`` (``schema.table``, or ``table`` in ``public``) in a database."""
    name = parse_table(table)
    schema = name.schema or "public"
    if not host or host.startswith("/"):
        host = _SOCKET_HOST
    return Asset(uri=f"postgres://{host}:{port or 5432}/{database}/{schema}/{name.name}")


@functools.cache
def _connection_asset(conn_id: str, table: str) -> Asset | None:
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # not defined here (yet): the task will say so
        log.warning(
            "No Asset outlet for %s: connection %r is not readable while parsing (%s); pass "
            "asset='postgres://host:port/database/schema/table' to declare it",
            table,
            conn_id,
            exc,
        )
        return None
    if not conn.schema:
        return None
    return table_asset(conn.host or "", conn.port, conn.schema, table)


def target_asset(asset: Asset | str | bool | None, conn_id: str, table: str) -> Asset | None:
    """The outlet of a job's summarize task.

    :param asset: an Asset or its URI; True/None: from the connection; False: none.
    :param conn_id: the target's connection.
    :param table: the target table (a template leaves the outlet undecided: none).
    """
    if isinstance(asset, Asset):
        return asset
    if isinstance(asset, str):
        return Asset(uri=asset)
    if asset is False or "{{" in table:
        return None
    return _connection_asset(conn_id, table)
