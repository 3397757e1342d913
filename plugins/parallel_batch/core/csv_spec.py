"""What a CSV load job is (:class:`CsvLoadSpec`) and which file it planned on (:class:`FileIdentity`).

Both travel as plain dicts: the spec in the job's stored params (so every chunk task, retry and
rerun of the job loads the same file the same way), the identity with it, so that a file
changed after planning is refused instead of being read at byte offsets that no longer fall on
record boundaries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.schema import CUSTOMERS_SCHEMA, CsvColumn, CsvSchema
from parallel_batch.store.identifiers import column_sql, parse_table

__all__ = ["DEFAULT_CSV_BATCH_ROWS", "CsvLoadSpec", "FileIdentity"]

# Records per batch: one pass through the stages and one committed transaction (rows, dead
# letters, checkpoint) each. Larger: the per-commit cost (a few ms) is shared by more records;
# smaller: less memory per batch in flight and less work redone after a kill. The reader's rate
# flattens out above a few thousand records per batch.
DEFAULT_CSV_BATCH_ROWS = 5_000


@dataclass(frozen=True)
class CsvLoadSpec:
    """How to load a CSV file into a table, chunk by chunk.

    The CSV columns load into the target columns of the same names; ``segment_column`` (if any)
    is filled by the HTTP enrichment and NULL without it.

    :param path: the CSV file; every chunk task must see it at this path.
    :param target_table: ``schema.table`` (or ``table``) to upsert into by ``key_column``.
    :param schema: the CSV's columns, in file order.
    :param key_column: the CSV column that identifies a record (unique in the target); it must
        be required (never empty).
    :param segment_column: the target column the enrichment writes; None: no such column.
    :param email_column: the CSV column sent to the enrichment service.
    :param batch_rows: records per batch (one committed transaction).
    """

    path: str
    target_table: str
    schema: CsvSchema = CUSTOMERS_SCHEMA
    key_column: str = "id"
    segment_column: str | None = "segment"
    email_column: str = "email"
    batch_rows: int = DEFAULT_CSV_BATCH_ROWS

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError("path must not be empty")
        parse_table(self.target_table)
        names = self.schema.names
        for name in names:
            column_sql(name)
        by_name = {column.name: column for column in self.schema.columns}
        key = by_name.get(self.key_column)
        if key is None:
            raise ValueError(f"key_column {self.key_column!r} is not a CSV column {list(names)}")
        if not key.required:
            raise ValueError(f"key_column {self.key_column!r} must be a required CSV column")
        if self.email_column not in by_name:
            raise ValueError(f"email_column {self.email_column!r} is not a CSV column")
        if self.segment_column is not None:
            column_sql(self.segment_column)
            if self.segment_column in by_name:
                raise ValueError(f"segment_column {self.segment_column!r} is also a CSV column")
        if (
            not isinstance(self.batch_rows, int)
            or isinstance(self.batch_rows, bool)
            or self.batch_rows <= 0
        ):
            raise ValueError("batch_rows must be greater than 0")

    @property
    def target_columns(self) -> tuple[str, ...]:
        """The target columns written, in row order: the CSV's, then the segment column."""
        extra = () if self.segment_column is None else (self.segment_column,)
        return (*self.schema.names, *extra)

    @property
    def key_index(self) -> int:
        """Where the key is in a record's values (and in a target row)."""
        return self.schema.names.index(self.key_column)

    @property
    def email_index(self) -> int:
        """Where the email is in a record's values (and in a target row)."""
        return self.schema.names.index(self.email_column)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-able dict (for the job's stored params)."""
        return {
            "path": self.path,
            "target_table": self.target_table,
            "schema": [
                {"name": c.name, "kind": c.kind, "required": c.required}
                for c in self.schema.columns
            ],
            "key_column": self.key_column,
            "segment_column": self.segment_column,
            "email_column": self.email_column,
            "batch_rows": self.batch_rows,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CsvLoadSpec:
        """Rebuild a spec from :meth:`to_dict`'s output."""
        values = dict(data)
        values["schema"] = CsvSchema([CsvColumn(**column) for column in values["schema"]])
        return cls(**values)


@dataclass(frozen=True)
class FileIdentity:
    """A file's size and modification time: what must not change between planning and loading.

    :param size: bytes.
    :param mtime_ns: modification time, ns since the epoch.
    """

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileIdentity:
        """Return the identity of the file at ``path``.

        :raises ConfigurationError: when it does not exist, is not a regular file or cannot be
            read.
        """
        name = os.fspath(path)
        try:
            info = os.stat(name)
        except FileNotFoundError:
            raise ConfigurationError(
                f"CSV file {name!r} does not exist (every chunk task must see it at this path)"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read CSV file {name!r}: {exc}") from exc
        if not os.path.isfile(name):
            raise ConfigurationError(f"{name!r} is not a regular file")
        if not os.access(name, os.R_OK):
            raise ConfigurationError(f"CSV file {name!r} is not readable")
        return cls(info.st_size, info.st_mtime_ns)

    def check(self, path: str | os.PathLike[str]) -> None:
        """Raise ConfigurationError unless the file at ``path`` still has this identity."""
        now = FileIdentity.of(path)
        if now != self:
            raise ConfigurationError(
                f"CSV file {os.fspath(path)!r} changed after its chunks were planned "
                f"(size {self.size} -> {now.size} bytes, mtime {self.mtime_ns} -> "
                f"{now.mtime_ns}): its byte ranges no longer fit it; load it again with "
                "full_refresh=true or under a new job_key"
            )

    def to_dict(self) -> dict[str, int]:
        """Return the identity as a JSON-able dict."""
        return {"size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileIdentity:
        """Rebuild an identity from :meth:`to_dict`'s output."""
        return cls(int(data["size"]), int(data["mtime_ns"]))
