"""What a job is (:class:`JobSpec`) and what one chunk of it did (:class:`ChunkSummary`).

A job reads one source through one transform into one target. Its spec is stored with the job
(the jobs row's params) when it is planned, so every chunk task, retry and replay runs exactly
that; the summary is a small dict for an XCom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from parallel_batch.core.source import Source
from parallel_batch.core.target import Target
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.store.identifiers import column_sql, parse_table
from parallel_batch.store.writer import WRITE_MODES, WriteMode

__all__ = [
    "DATAFRAME_BATCH_ROWS",
    "DEFAULT_BATCH_ROWS",
    "ChunkSummary",
    "JobSpec",
    "default_batch_rows",
]

# Rows per batch: one read, one transform call and one committed transaction each.
# From bench/bench_checkpoints.py (2 shared cores): a checkpoint costs about 0.5-1.5 ms per batch,
# 0.4% of the run at 10k rows but several % at 1k, where the per-batch round trips and commit
# also cut throughput. Peak RSS stays at the interpreter's ~62 MiB up to 10k rows and grows
# beyond for no more rows/s. A killed attempt redoes at most one batch. 10k is the knee.
DEFAULT_BATCH_ROWS = 10_000
# A ``dataframe`` transform's batches: each call pays pandas' fixed cost (building the frame, the
# transform's column operations, the result's checks and encoding: ~3 ms of a worker's CPU a
# batch on the demo's events, whatever its rows), which 10k rows do not amortise. On 2 cores
# (bench/bench_kinds.py, `stats` over 2M events in 2 chunk processes) the kind moved ~20 % more
# rows a second at 25-50k rows than at 10k, and no more at 100k. A batch is one frame in memory:
# lower batch_rows for wide rows.
DATAFRAME_BATCH_ROWS = 50_000


def default_batch_rows(kind: str) -> int:
    """Rows per batch when a job does not say: more for a ``dataframe`` transform."""
    return DATAFRAME_BATCH_ROWS if kind == "dataframe" else DEFAULT_BATCH_ROWS


@dataclass(frozen=True)
class JobSpec:
    """How a job's chunks are processed.

    :param source: what is read (a table, a file).
    :param target_table: ``schema.table`` written; it must exist.
    :param transform: the transform (its path, kind, concurrency, retries).
    :param target_columns: the columns written, in output order; None: decided from the
        catalog when the job is planned (see :mod:`parallel_batch.core.planning`).
    :param key_columns: the target's conflict key for upserts; None: its primary key.
    :param write_mode: ``"auto"`` (COPY, upsert when a key exists), ``"upsert"`` or ``"copy"``.
    :param batch_rows: rows per batch (one read, one transform call, one commit); None: the
        transform kind's default (:func:`default_batch_rows`).
    :param dedup_key: a source column whose later occurrences are dead letters (the first one in
        the source wins); None: none.
    """

    source: Source
    target_table: str
    transform: TransformSpec = field(default_factory=TransformSpec)
    target_columns: tuple[str, ...] | None = None
    key_columns: tuple[str, ...] | None = None
    write_mode: WriteMode = "auto"
    batch_rows: int = None  # type: ignore[assignment]  # None: the kind's, set below
    dedup_key: str | None = None

    def __post_init__(self) -> None:
        parse_table(self.target_table)
        if self.batch_rows is None:
            object.__setattr__(self, "batch_rows", default_batch_rows(self.transform.kind))
        for name in ("target_columns", "key_columns"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
                for column in getattr(self, name):
                    column_sql(column)
        if self.write_mode not in WRITE_MODES:
            raise ValueError(
                f"write_mode must be one of {list(WRITE_MODES)}, got {self.write_mode!r}"
            )
        if (
            not isinstance(self.batch_rows, int)
            or isinstance(self.batch_rows, bool)
            or self.batch_rows <= 0
        ):
            raise ValueError("batch_rows must be greater than 0")
        if self.dedup_key is not None:
            column_sql(self.dedup_key)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data; the source as ``{"kind": ..., **its dict}``."""
        return {
            "source": {"kind": self.source.kind, **self.source.to_dict()},
            "target_table": self.target_table,
            "transform": self.transform.to_dict(),
            "target_columns": None if self.target_columns is None else list(self.target_columns),
            "key_columns": None if self.key_columns is None else list(self.key_columns),
            "write_mode": self.write_mode,
            "batch_rows": self.batch_rows,
            "dedup_key": self.dedup_key,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], make_source: Callable[[dict[str, Any]], Source]
    ) -> JobSpec:
        """Rebuild a spec from :meth:`to_dict`'s output; ``make_source`` turns the source's dict
        (with its ``kind``) back into a source (``parallel_batch.sources.source_from_dict``)."""
        columns, keys = data.get("target_columns"), data.get("key_columns")
        transform = TransformSpec.from_dict(data.get("transform") or {})
        return cls(
            source=make_source(dict(data["source"])),
            target_table=data["target_table"],
            transform=transform,
            target_columns=None if columns is None else tuple(columns),
            key_columns=None if keys is None else tuple(keys),
            write_mode=data.get("write_mode", "auto"),
            batch_rows=int(data.get("batch_rows") or default_batch_rows(transform.kind)),
            dedup_key=data.get("dedup_key"),
        )

    def resolve_target(self, conn: psycopg.Connection) -> Target:
        """The target as the catalog has it, with the columns and key this job writes."""
        return Target.resolve(
            conn,
            self.target_table,
            columns=self.target_columns,
            key_columns=self.key_columns,
            write_mode=self.write_mode,
        )

    def identity(self) -> dict[str, Any]:
        """What must not change for a run to resume the job (batch size may)."""
        data = self.to_dict()
        del data["batch_rows"]
        data["transform"] = {k: data["transform"][k] for k in ("path", "kind")}
        return data


@dataclass(frozen=True)
class ChunkSummary:
    """What became of one chunk, small enough for an XCom.

    The row counts are the chunk's totals over all its attempts, so that summing the summaries
    of a job's chunks reconciles with its source:
    ``rows_read == rows_written - rows_fanout + rows_filtered + rows_failed``.

    :param chunk_id: the chunk's range id.
    :param rows_read: source rows read.
    :param rows_written: rows written to the target.
    :param rows_failed: rows sent to the dead letters.
    :param seconds: this attempt's wall time.
    :param skipped: the chunk was already completed; this attempt did nothing.
    :param resumed_from: the checkpoint this attempt started after (None: from the start).
    :param attempt: which attempt this was (1 for the first).
    :param rows_this_attempt: rows this attempt read.
    :param rows_filtered: source rows the transform dropped.
    :param rows_fanout: output rows beyond one per source row.
    """

    chunk_id: str
    rows_read: int
    rows_written: int
    rows_failed: int
    seconds: float
    skipped: bool
    resumed_from: Any
    attempt: int
    rows_this_attempt: int
    rows_filtered: int = 0
    rows_fanout: int = 0

    @property
    def reconciles(self) -> bool:
        """Every row read is in the target, filtered out, or in the dead letters."""
        return self.rows_read == (
            self.rows_written - self.rows_fanout + self.rows_filtered + self.rows_failed
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChunkSummary:
        """Rebuild a summary from :meth:`to_dict`'s output."""
        return cls(**data)
