"""A CSV's columns typed from the target table's catalog.

::

    header (or the ``columns`` list of a file without one)
        each CSV column -> its target column (``columns`` mapping; default: the same name)
        the target column's type -> how its fields convert:

        smallint integer bigint -> int        numeric -> decimal     real double -> float
        boolean -> bool        date -> date   timestamp -> localtime timestamptz -> timestamp
        uuid -> uuid           json jsonb -> json                    text varchar char -> text

        a domain -> its base type's kind (the server checks its constraints)
        a CSV column without a target column: refused (map it with ``columns``)
        a NOT NULL target column without a default: the field is required

Another type (an enum, inet, an array...) loads as text when the target takes text COPY (the
server parses it), and is refused up front otherwise. So do json and jsonb columns under text
COPY: a parsed JSON value has no text form COPY would take, the field itself is one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psycopg

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.convert import ColumnKind
from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.files import FileIdentity, StorageOptions
from parallel_batch.sources.csv.reader import read_csv_header
from parallel_batch.sources.csv.schema import CsvColumn, CsvSchema
from parallel_batch.sources.csv.source import CsvSource
from parallel_batch.store.catalog import table_columns
from parallel_batch.store.writer import copy_format

__all__ = ["KIND_OF_TYPE", "typed_csv_source"]

KIND_OF_TYPE: dict[str, ColumnKind] = {
    "smallint": "int",
    "integer": "int",
    "bigint": "int",
    "numeric": "decimal",
    "real": "float",
    "double precision": "float",
    "boolean": "bool",
    "date": "date",
    "timestamp without time zone": "localtime",
    "timestamp with time zone": "timestamp",
    "uuid": "uuid",
    "json": "json",
    "jsonb": "json",
    "text": "text",
    "character varying": "text",
    "character": "text",
    "citext": "text",
    "name": "text",
}


def typed_csv_source(
    conn: psycopg.Connection,
    path: str,
    target_table: str,
    *,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    header: bool = True,
    key_column: str | None = None,
    dialect: CsvDialect = DEFAULT_DIALECT,
    storage_conn_id: str | None = None,
    storage_options: StorageOptions | None = None,
) -> CsvSource:
    """The CSV source of ``path`` with its columns typed from ``target_table``.

    :param columns: CSV column -> target column (default: by name); for a file without a header,
        the target column of each CSV column, in file order.
    :param header: whether the file's first record names its columns.
    :param key_column: a column that must never be empty (the key whose duplicates are refused).
    :param dialect: the file's delimiter, quoting, encoding and NULL spellings.
    :param storage_conn_id: the Airflow connection behind ``storage_options`` (kept by name).
    :param storage_options: the filesystem's options when ``path`` is a URL.
    :raises ConfigurationError: for a missing or unreadable file, a header without the mapped
        columns, a mapped column missing from the target, or a type CSV cannot load.
    """
    FileIdentity.of(path, storage_options)  # there and readable, or a ConfigurationError
    if header:
        csv_names = [name.strip() for name in read_csv_header(path, dialect, storage_options)]
        mapping = dict(columns) if isinstance(columns, Mapping) else {}
        if columns is not None and not isinstance(columns, Mapping):
            raise ConfigurationError(
                "columns: a file with a header takes a mapping {csv column: target column}"
            )
        unknown = [name for name in mapping if name not in csv_names]
        if unknown:
            raise ConfigurationError(
                f"columns maps {unknown} which the header of {path} does not have "
                f"(its columns: {', '.join(csv_names)})"
            )
    else:
        if columns is None or isinstance(columns, Mapping | str):
            raise ConfigurationError(
                "a file without a header needs columns: the target column of each CSV column, "
                "in file order"
            )
        csv_names = [str(name) for name in columns]
        mapping = {}
    names = [mapping.get(name, name) for name in csv_names]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"two CSV columns load into the same column: {names}")
    found = {c.name: c for c in table_columns(conn, target_table)}
    for csv_name, name in mapping.items():
        if name not in found:
            raise ConfigurationError(
                f"columns maps {csv_name!r} to {name!r}, which is not a column of {target_table}"
            )
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigurationError(
            f"Column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
            f"{'do' if len(missing) > 1 else 'does'} not exist in table {target_table!r}: "
            "every CSV column loads into the target column of its name (or the one "
            "`columns` maps it to)"
        )
    binary = copy_format(conn, target_table, names).binary
    schema_columns = []
    for csv_name, name in zip(csv_names, names, strict=True):
        column = found[name]
        kind = KIND_OF_TYPE.get(column.type_name)
        if kind is None:  # a domain: its base type's kind (column.oid is the base type's)
            base = conn.execute("SELECT format_type(%s, NULL)", (column.oid,)).fetchone()
            kind = None if base is None else KIND_OF_TYPE.get(base[0])
        if kind is None:
            if binary:
                raise ConfigurationError(
                    f"column {name!r} of {target_table} is a {column.type_name}, which a CSV "
                    f"cannot load yet (supported: {', '.join(sorted(KIND_OF_TYPE))})"
                )
            kind = "text"  # text COPY: the server parses it
        elif kind == "json" and not binary:
            kind = "text"  # the field is the JSON text; the server parses it
        required = name == key_column or (column.not_null and not column.has_default)
        schema_columns.append(CsvColumn(csv_name, kind, required))
    if key_column is not None and key_column not in names:
        raise ConfigurationError(
            f"key_column {key_column!r} is not a column of {path} (columns: {', '.join(names)})"
        )
    return CsvSource(
        path,
        CsvSchema(schema_columns),
        tuple(names),
        header,
        dialect=dialect,
        storage_conn_id=storage_conn_id,
        storage_options=storage_options,
    )
