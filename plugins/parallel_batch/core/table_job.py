"""What a table job is (:class:`TableJobSpec`) and what one chunk of it did (:class:`ChunkSummary`).

Both are small frozen records that travel as plain dicts (XComs, the jobs table's params).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, get_args

from parallel_batch.sources.table.planner import RowFilter
from parallel_batch.store.catalog import JSONKey
from parallel_batch.store.identifiers import column_sql, parse_table
from parallel_batch.store.writer import WriteMode

# Rows per batch: one read statement, one transform call and one committed transaction each.
# From bench/bench_checkpoints.py (2 shared cores): a checkpoint costs about 0.5-1.5 ms per batch
# (two UPDATEs of the chunk row in the batch's transaction), 0.4% of the run at 10k rows but
# several % at 1k, where the per-batch round trips and commit also cut throughput. Peak RSS stays
# at the interpreter's ~62 MiB up to 10k rows and grows beyond (~80 MiB at 20k, ~110-140 MiB at
# 50k: each row is held as Python tuples in the read-ahead, the transform and the COPY) for no
# more rows/s. A killed attempt redoes at most one batch. 10k is the knee of these curves.
DEFAULT_BATCH_ROWS = 10_000


def _columns(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty sequence of column names")
    columns = tuple(value)
    for column in columns:
        column_sql(column)  # validates
    if len(set(columns)) != len(columns):
        raise ValueError(f"{what} must not name a column twice")
    return columns


@dataclass(frozen=True)
class TableJobSpec:
    """How to process a source table into a target table, chunk by chunk.

    :param source_table: ``schema.table`` (or ``table``) to read.
    :param target_table: ``schema.table`` (or ``table``) to write.
    :param key_column: the source's unique, indexed key the chunks and checkpoints follow.
    :param source_columns: the columns read, in the order the transform receives them; must
        include ``key_column``.
    :param target_columns: the columns written, in the order the transform returns them.
    :param write_mode: ``"copy"`` (fastest; a duplicate key fails), ``"upsert"`` or ``"auto"``
        (COPY, falling back to an upsert when a key exists).
    :param batch_rows: rows per batch (one read, one transform call, one commit).
    :param row_filter: only rows whose filter column is in ``[start, end)`` (a data interval).
    :param target_key_columns: the target's conflict key for upserts; default ``(key_column,)``.
        On a full refresh, target rows are found by matching its first column to the source key.
    """

    source_table: str
    target_table: str
    key_column: str
    source_columns: tuple[str, ...]
    target_columns: tuple[str, ...]
    write_mode: WriteMode = "auto"
    batch_rows: int = DEFAULT_BATCH_ROWS
    row_filter: RowFilter | None = None
    target_key_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_table(self.source_table)
        parse_table(self.target_table)
        column_sql(self.key_column)
        object.__setattr__(self, "source_columns", _columns(self.source_columns, "source_columns"))
        object.__setattr__(self, "target_columns", _columns(self.target_columns, "target_columns"))
        if self.key_column not in self.source_columns:
            raise ValueError(f"key_column {self.key_column!r} must be one of source_columns")
        keys = self.target_key_columns or (self.key_column,)
        object.__setattr__(self, "target_key_columns", _columns(keys, "target_key_columns"))
        missing = [c for c in self.target_key_columns if c not in self.target_columns]
        if missing:
            raise ValueError(f"target_key_columns {missing} must be among target_columns")
        if self.write_mode not in get_args(WriteMode):
            raise ValueError(
                f"write_mode must be one of {list(get_args(WriteMode))}, got {self.write_mode!r}"
            )
        if (
            not isinstance(self.batch_rows, int)
            or isinstance(self.batch_rows, bool)
            or self.batch_rows <= 0
        ):
            raise ValueError("batch_rows must be greater than 0")

    @property
    def key_index(self) -> int:
        """Where the key is in a source row."""
        return self.source_columns.index(self.key_column)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-able dict (for XComs and the job's stored params)."""
        data = asdict(self)
        data["source_columns"] = list(self.source_columns)
        data["target_columns"] = list(self.target_columns)
        data["target_key_columns"] = list(self.target_key_columns)
        data["row_filter"] = None if self.row_filter is None else self.row_filter.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableJobSpec:
        """Rebuild a spec from :meth:`to_dict`'s output."""
        values = dict(data)
        row_filter = values.get("row_filter")
        values["row_filter"] = None if row_filter is None else RowFilter.from_dict(row_filter)
        for name in ("source_columns", "target_columns", "target_key_columns"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class ChunkSummary:
    """What became of one chunk, small enough for an XCom.

    The row counts are the chunk's totals over all its attempts, so that summing the summaries
    of a job's chunks reconciles with its source: ``rows_read == rows_written + rows_failed``.

    :param chunk_id: the chunk's range id.
    :param rows_read: source rows read (each ended in the target or the dead letters).
    :param rows_written: rows written to the target.
    :param rows_failed: rows sent to the dead letters.
    :param seconds: this attempt's wall time.
    :param skipped: the chunk was already completed; this attempt did nothing.
    :param resumed_from: the checkpoint key this attempt started after (None: from the start).
    :param attempt: which attempt this was (1 for the first).
    :param rows_this_attempt: rows this attempt read.
    """

    chunk_id: str
    rows_read: int
    rows_written: int
    rows_failed: int
    seconds: float
    skipped: bool
    resumed_from: JSONKey | None
    attempt: int
    rows_this_attempt: int

    @property
    def reconciles(self) -> bool:
        """Every row read is in the target or in the dead letters."""
        return self.rows_read == self.rows_written + self.rows_failed

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkSummary:
        """Rebuild a summary from :meth:`to_dict`'s output."""
        return cls(**data)
