"""The plan task for each source: a table's key ranges, a CSV file's byte ranges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from parallel_batch.airflow.jobkeys import RunScope
from parallel_batch.airflow.plan import PlanJobOperator
from parallel_batch.airflow.storage import storage_options
from parallel_batch.airflow.values import null, optional_positive_int, true_or_false
from parallel_batch.core.source import Source
from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.source import CsvSource
from parallel_batch.sources.csv.typed import typed_csv_source
from parallel_batch.sources.table.source import TableSource
from parallel_batch.store.identifiers import column_sql, parse_table

__all__ = ["DEFAULT_CHUNK_BYTES", "PlanCsvJobOperator", "PlanTableJobOperator"]

# Bytes per CSV chunk (one mapped task each), about 1.3 million demo records: like the table
# job's million rows, tens of seconds of work per task, so that a task's own cost stays small
# (on 2 cores: ~1.5 s of CPU for its supervisor, task process and worker start, and a second or
# so between one wave of tasks and the next). `make bench`'s csv_dag, 2M records on 2 pool slots:
# 8 MiB (26 tasks) 3.27x the hand-written loader's time, 32 MiB 2.75x, 64 MiB 2.54x (an earlier
# build); later, 64 MiB (4 tasks, two waves) against 2 chunks (one wave), taking turns in one
# Airflow: 17.2-19.8 s against 15.0-18.9 s. 128 MiB is also Spark's default split. Smaller: more
# tasks for a file of a few hundred MB on many workers (set `chunks` to the slots you have),
# cheaper retries; a 2 GiB file makes 16 tasks.
DEFAULT_CHUNK_BYTES = 128 << 20


class PlanTableJobOperator(PlanJobOperator):
    """Plan a job that reads a table by key ranges.

    :param source_table: ``schema.table`` to read (templated).
    :param key_column: its unique, NOT NULL key: chunks and batches are its ranges (templated).
    :param source_columns: the columns read (default: every column) (templated).
    :param interval_column: the column a run's data interval filters on; None: the whole table
        (templated).
    :param interval_start: only rows with ``interval_column >=`` this (templated).
    :param interval_end: only rows with ``interval_column <`` this (templated).
    :param chunk_rows: rows per chunk (grown to stay within max_map_length) (templated).
    :param source_conn_id: the source's database when it is not the target's (templated).
    """

    template_fields: Sequence[str] = (
        *PlanJobOperator.template_fields,
        "source_table",
        "key_column",
        "source_columns",
        "interval_column_name",
        "interval_start",
        "interval_end",
        "chunk_rows",
        "source_conn",
    )

    def __init__(
        self,
        *,
        source_table: str,
        key_column: str = "id",
        source_columns: Sequence[str] | None = None,
        interval_column: str | None = None,
        interval_start: Any = None,
        interval_end: Any = None,
        chunk_rows: int | str | None = None,
        source_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_table = source_table
        self.key_column = key_column
        self.source_columns = source_columns
        self.interval_column_name = interval_column
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.chunk_rows = chunk_rows
        self.source_conn = source_conn_id

    def interval_column(self) -> str | None:
        column = null(self.interval_column_name)
        if column is not None:
            column_sql(str(column))
        return column

    def source_conn_id(self) -> str:
        return str(null(self.source_conn) or self.conn_id)

    def chunk_size(self) -> int | None:
        from parallel_batch.airflow.values import DEFAULT_CHUNK_ROWS

        size = optional_positive_int(self.chunk_rows, "chunk_rows")
        return DEFAULT_CHUNK_ROWS if size is None else size

    def source(self, scope: RunScope) -> Source:
        parse_table(str(self.source_table))
        columns = null(self.source_columns)
        return TableSource(
            str(self.source_table),
            str(self.key_column),
            tuple(columns or ()),
            scope.row_filter,
        )

    def resolve_source(
        self, source: Source, source_conninfo: str, conn: psycopg.Connection
    ) -> Source:
        assert isinstance(source, TableSource)
        return source.resolved(source_conninfo)


class PlanCsvJobOperator(PlanJobOperator):
    """Plan a job that loads a CSV file by byte ranges on record boundaries.

    :param path: the file, as every worker sees it (templated).
    :param columns: CSV column -> target column (default: by header name); a list of target
        columns in file order for a file without a header (templated).
    :param header: whether the first record names the columns (templated).
    :param key_column: a column whose duplicates are dead letters, the first in the file
        winning; None: none (templated).
    :param chunk_bytes: bytes per chunk (templated).
    :param dialect: the file's ``delimiter``, ``quotechar``, ``encoding`` and ``null_values``
        (:meth:`CsvDialect.of`'s arguments; each defaults as there) (templated).
    :param storage_conn_id: the Airflow connection whose credentials read a ``path`` URL
        (``aws_default``...), through ``ObjectStoragePath``; None: the filesystem's own
        (environment, instance profile) (templated).
    """

    template_fields: Sequence[str] = (
        *PlanJobOperator.template_fields,
        "path",
        "columns",
        "header",
        "key_column",
        "chunk_bytes",
        "dialect",
        "storage_conn_id",
    )

    def __init__(
        self,
        *,
        path: str,
        columns: Mapping[str, str] | Sequence[str] | None = None,
        header: bool | str = True,
        key_column: str | None = None,
        chunk_bytes: int | str | None = DEFAULT_CHUNK_BYTES,
        dialect: Mapping[str, Any] | None = None,
        storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.columns = columns
        self.header = header
        self.key_column = key_column
        self.chunk_bytes = chunk_bytes
        self.dialect = dict(dialect or {})
        self.storage_conn_id = storage_conn_id

    def csv_dialect(self) -> CsvDialect:
        """The dialect from the rendered options: a null quotechar means no quoting, another
        null option its default."""
        # not null(): it strips, and a tab delimiter is whitespace
        options: dict[str, Any] = {
            key: None if value is None or value in ("", "None") else value
            for key, value in self.dialect.items()
        }
        return CsvDialect.of(
            **{k: v for k, v in options.items() if v is not None or k == "quotechar"}
        )

    def dedup_key(self) -> str | None:
        key = null(self.key_column)
        if key is not None:
            column_sql(str(key))
        return key

    def chunk_size(self) -> int | None:
        size = optional_positive_int(self.chunk_bytes, "chunk_bytes")
        return DEFAULT_CHUNK_BYTES if size is None else size

    def source(self, scope: RunScope) -> Source:
        from parallel_batch.sources.csv.schema import CsvColumn, CsvSchema

        # A placeholder until the target's catalog types it (resolve_source).
        return CsvSource(
            str(self.path),
            CsvSchema([CsvColumn("_")]),
            header=true_or_false(self.header, "header"),
            dialect=self.csv_dialect(),
            storage_conn_id=null(self.storage_conn_id),
        )

    def resolve_source(
        self, source: Source, source_conninfo: str, conn: psycopg.Connection
    ) -> Source:
        assert isinstance(source, CsvSource)
        columns = null(self.columns)
        typed = typed_csv_source(
            conn,
            source.path,
            str(self.target_table),
            columns=columns,
            header=source.header,
            key_column=self.dedup_key(),
            dialect=source.dialect,
            storage_conn_id=source.storage_conn_id,
            storage_options=storage_options(source.path, source.storage_conn_id),
        )
        return typed.planned()
