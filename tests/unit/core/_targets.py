"""Targets built without a database: the columns, types and COPY format the catalog would give."""

from __future__ import annotations

import psycopg

from parallel_batch.core.target import Target
from parallel_batch.store.copy_data import CopyFormat

_OIDS = {
    "bigint": "int8",
    "integer": "int4",
    "smallint": "int2",
    "text": "text",
    "numeric(12,2)": "numeric",
    "numeric(5,0)": "numeric",
    "timestamp with time zone": "timestamptz",
    "double precision": "float8",
    "real": "float4",
    "timestamp without time zone": "timestamp",
    "boolean": "bool",
    "date": "date",
    "character varying": "varchar",
    "character varying(5)": "varchar",
}


def target(table: str = "demo.out", **columns: str) -> Target:
    """A Target writing ``columns`` (name -> type with modifiers) in binary COPY, keyed on the
    first column."""
    names = tuple(columns)
    types = tuple(columns.values())
    oids = tuple(psycopg.adapters.types[_OIDS[t]].oid for t in types)
    return Target(table, names, types, CopyFormat(oids, True), key_columns=names[:1])


# The demo's enriched events.
EVENTS_OUT = target(
    "demo.events_enriched",
    id="bigint",
    user_id="integer",
    payload_sha256="text",
    amount_cents="bigint",
    created_at="timestamp with time zone",
)
