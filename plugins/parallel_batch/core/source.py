"""What the chunk-job core needs of a source: a plan of chunks, and a reader per chunk.

Sources (``parallel_batch.sources``) implement it; they only plan and read, and know nothing of
targets, transforms, the store or Airflow::

    plan task:   source.plan(...)              -> chunk entries (JSON): range, rows, chunk_id
    chunk task:  source.chunk_reader(entry)    -> a ChunkReader (picklable, sent to workers)
                     reader.batches(after)     the batches after a checkpoint, planned cheaply
                     reader.read(ref)          one batch's records, typed (in a worker)
                     reader.split(ref, parts)  a batch cut smaller (isolating a crashing row)
                     reader.position(ref)      the checkpoint once the batch is committed

A batch is a *reference* (a key range, a byte range), not rows in hand: whoever prepares the batch
reads it, so worker processes read, transform and encode side by side and the parent never
decodes a row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from parallel_batch.store.deadletters import DeadLetter, StoredDeadLetter

__all__ = [
    "BatchRef",
    "ChunkReader",
    "ColumnsBatch",
    "KeyRange",
    "ReadBatch",
    "Row",
    "Sizing",
    "Source",
]

Row = tuple[Any, ...]
# A batch's reference: a NamedTuple of plain values (it is pickled to workers and logged).
BatchRef = Any


@dataclass
class ReadBatch:
    """One batch as read: the records that read whole, and those that could not be read.

    :param rows: typed records in source order, values in the reader's ``columns`` order.
    :param lines: each row's 1-based starting line in its file; None for table rows.
    :param errors: records that could not be read (a file's bad records), already dead letters.
    :param keys: each row's dead-letter key, when the reader has them at hand (a replay).
    """

    rows: Sequence[Row]
    lines: list[int] | None = None
    errors: list[DeadLetter] = field(default_factory=list)
    keys: list[str] | None = None

    @property
    def read(self) -> int:
        """Records read: each ends in the target, the filtered count or the dead letters."""
        return len(self.rows) + len(self.errors)


@dataclass
class ColumnsBatch:
    """One batch as read in columns, by a reader that can (``read_columns``: a CSV's).

    :param table: the records that read whole, as a ``pyarrow.Table`` named as the reader's
        ``columns``.
    :param lines: each row's 1-based starting line.
    :param errors: records that could not be read, already dead letters.
    :param row: the Python values of the row at an index, exactly as ``read`` gives them (the
        payload of a dead letter made after reading).
    """

    table: Any
    lines: list[int]
    errors: list[DeadLetter]
    row: Callable[[int], Row]

    @property
    def read(self) -> int:
        """Records read (as :attr:`ReadBatch.read`)."""
        return int(self.table.num_rows) + len(self.errors)


class Sizing(NamedTuple):
    """How to cut a source into chunks.

    :param chunks: about this many chunks (None: by size); or
    :param chunk_size: chunks of about this size (rows of a table, bytes of a file).
    :param max_chunks: never more (Airflow's ``max_map_length``).
    """

    chunks: int | None
    chunk_size: int | None
    max_chunks: int


class KeyRange(NamedTuple):
    """The source rows a chunk owns, by key: what a full refresh deletes from the target before
    the chunk writes again (the target rows whose key is one of these rows' keys).

    :param table: the source table.
    :param key_column: its key.
    :param lower: exclusive lower bound (None: from the first key).
    :param upper: inclusive upper bound (None: to the last key).
    :param filter: ``(column, start, end)`` of a data interval, or None for every row.
    """

    table: str
    key_column: str
    lower: Any
    upper: Any
    filter: tuple[str, Any, Any] | None = None


class ChunkReader(Protocol):
    """Reads one chunk's batches. Picklable: the pool's workers get a copy with each batch."""

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of a row's values, in order."""
        ...

    def batches(self, after: Any, batch_rows: int) -> Iterator[BatchRef]:
        """Yield the chunk's batches after the checkpoint ``after`` (None: from its start)."""
        ...

    def read(self, ref: BatchRef) -> ReadBatch:
        """Read one batch (any process; opens what it needs itself)."""
        ...

    def split(self, ref: BatchRef, parts: int) -> Sequence[BatchRef] | None:
        """Cut a batch into at most ``parts`` batches covering it; None when it holds one record."""
        ...

    def position(self, ref: BatchRef) -> Any:
        """The checkpoint (JSON) that says every record up to the end of ``ref`` is done."""
        ...

    def item_key(self, batch: ReadBatch, index: int) -> str:
        """The dead-letter identity of ``batch.rows[index]`` within its job."""
        ...

    def close(self) -> None:
        """Release what the reader opened in this process (its connection, its file)."""
        ...

    def owned(self) -> KeyRange | None:
        """The source keys this chunk owns (a table's chunk), or None: a refresh then replaces
        earlier output by upserting over it."""
        ...


class Source(Protocol):
    """A job's source: plans the chunks, makes each chunk's reader. Stored with the job as JSON
    (:meth:`to_dict`), so every chunk task and retry reads the same thing the same way.

    ``conninfo`` is the source's database (tables); other sources ignore it.
    """

    @property
    def kind(self) -> str:
        """The job kind this source makes (``"table"``, ``"csv"``)."""
        ...

    @property
    def name(self) -> str:
        """What is read, for display and messages (a table, a path)."""
        ...

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of a row's values, in order (resolved when the job is planned)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The source as JSON-ready data (no secrets)."""
        ...

    def plan(self, conninfo: str | None, sizing: Sizing) -> list[dict[str, Any]]:
        """Split the source into chunks: JSON entries with a ``chunk_id`` (its range) and ``rows``."""
        ...

    def chunk_reader(
        self, conninfo: str | None, entry: dict[str, Any], *, frames: bool = False
    ) -> ChunkReader:
        """The reader of one chunk of the plan. ``frames``: its batches go to a dataframe
        transform; a reader that can read them as columns does (``FrameRows``)."""
        ...

    def replay_rows(
        self, conninfo: str | None, letters: Sequence[StoredDeadLetter], from_payload: bool
    ) -> dict[str, Row]:
        """The rows to replay for these dead letters, by item key: as the source holds them now
        or (``from_payload``) as the dead letters stored them. Missing items are left out."""
        ...
