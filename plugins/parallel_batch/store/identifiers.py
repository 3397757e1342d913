"""Table and column names: validated against a strict pattern, then quoted with psycopg.sql.

Every identifier that reaches SQL in the data plane goes through this module. A name is accepted
only if each part matches ``^[A-Za-z_][A-Za-z0-9_$]{0,62}$`` (what Postgres accepts unquoted,
63 bytes at most); it is then always quoted, so its case is kept as written. Nothing else (no dots
inside a part, no quotes, no spaces) is ever formatted into a statement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from psycopg import sql

from parallel_batch.exceptions import InvalidIdentifierError

IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class TableName(NamedTuple):
    """A table name split into its optional schema and its name.

    :param schema: the schema, or None to follow the connection's search_path.
    :param name: the table's name.
    """

    schema: str | None
    name: str


def _check(part: str, what: str, full: str) -> str:
    # fullmatch: "$" alone would also accept a trailing newline
    if not isinstance(part, str) or _IDENTIFIER.fullmatch(part) is None:
        raise InvalidIdentifierError(
            f"Invalid {what} {full!r}: each part must match {IDENTIFIER_PATTERN} "
            "(letters, digits, _ and $, at most 63 characters, not starting with a digit)"
        )
    return part


def parse_table(name: str) -> TableName:
    """Split ``"schema.table"`` or ``"table"`` into a validated :class:`TableName`.

    :raises InvalidIdentifierError: when a part is not a safe identifier.
    """
    if not isinstance(name, str):
        raise InvalidIdentifierError(f"Invalid table name {name!r}: expected a string")
    parts = name.split(".")
    if len(parts) == 1:
        return TableName(None, _check(parts[0], "table name", name))
    if len(parts) == 2:
        return TableName(_check(parts[0], "table name", name), _check(parts[1], "table name", name))
    raise InvalidIdentifierError(f"Invalid table name {name!r}: expected 'table' or 'schema.table'")


def table_sql(name: str) -> sql.Composed:
    """Return the quoted, schema-qualified (when given) identifier of a table."""
    schema, table = parse_table(name)
    ident = sql.Identifier(table) if schema is None else sql.Identifier(schema, table)
    return sql.Composed([ident])


def column_sql(name: str) -> sql.Identifier:
    """Return the quoted identifier of a column after validating it."""
    return sql.Identifier(_check(name, "column name", name))


def columns_sql(names: Sequence[str]) -> sql.Composed:
    """Return ``"a", "b", "c"``: validated, quoted column names joined by commas."""
    return sql.SQL(", ").join(column_sql(n) for n in names)
