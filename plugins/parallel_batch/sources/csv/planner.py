"""Split a CSV file into byte ranges that start on record boundaries: the chunks of a mapped run.

One streaming pass over the file in constant memory::

    file ─► [BOM] ─► header record ─► data ───────────────────────────────────────► EOF
                                      │ target offsets: evenly spaced (chunks) or every
                                      │ chunk_bytes, at most max_chunks
                                      ▼
            each target moves forward to the next record start (a newline outside quotes),
            and the physical lines before it are counted so the chunk knows its first line

Quoting is tracked by :class:`~parallel_batch.sources.csv.scan.QuoteScanner` (the reader uses the
same scanner, so both agree on every record boundary): a newline inside a quoted field never
ends a chunk. The scan stops as soon as the last boundary is found.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.files import StorageOptions, open_binary, stream_size
from parallel_batch.sources.csv.scan import Scanner, iter_blocks, scanner_for

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
# Bytes per read while planning. Larger: fewer Python iterations (faster, up to a point);
# smaller: less memory. 4 MiB reaches the scanner's full speed.
PLAN_BLOCK_BYTES = 4 << 20
# Airflow's default max_map_length: a mapped task cannot expand to more.
DEFAULT_MAX_CHUNKS = 1024


@dataclass(frozen=True)
class FileChunk:
    """A byte range of a CSV file holding whole records; identified by its range alone.

    :param start: offset of the chunk's first record.
    :param end: offset just after its last record (exclusive): the next chunk's start or EOF.
    :param first_line: the 1-based physical line of the file on which its first record starts.
    """

    start: int
    end: int
    first_line: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a chunk needs 0 <= start < end, got [{self.start}, {self.end})")
        if self.first_line < 1:
            raise ValueError("first_line must be greater than 0")

    @property
    def chunk_id(self) -> str:
        """A stable id derived from the range, e.g. ``bytes[37,1048576)``."""
        return f"bytes[{self.start},{self.end})"

    @property
    def size(self) -> int:
        """The chunk's length in bytes."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (for XCom); :meth:`from_dict` reads it back."""
        return {
            "chunk_id": self.chunk_id,
            "start": self.start,
            "end": self.end,
            "first_line": self.first_line,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileChunk:
        """Rebuild a chunk from :meth:`to_dict`'s output; a ``chunk_id`` there must match."""
        chunk = cls(
            start=int(data["start"]), end=int(data["end"]), first_line=int(data["first_line"])
        )
        if "chunk_id" in data and data["chunk_id"] != chunk.chunk_id:
            raise ValueError(f"chunk_id {data['chunk_id']!r} does not match {chunk.chunk_id!r}")
        return chunk


def plan_csv_chunks(
    path: str | os.PathLike[str],
    *,
    chunks: int | None = None,
    chunk_bytes: int | None = None,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
    has_header: bool = True,
    dialect: CsvDialect = DEFAULT_DIALECT,
    storage_options: StorageOptions | None = None,
) -> list[FileChunk]:
    """Plan the chunks of a CSV file: byte ranges aligned to record starts, in file order.

    Give exactly one of ``chunks`` (about that many chunks of equal size) or ``chunk_bytes``
    (the fewest chunks of equal size no larger than about that). Either way there are never
    more than ``max_chunks``; a record longer than the spacing makes fewer chunks. An empty or
    header-only file has none.

    :param path: the CSV file, a local path or a URL (RFC 4180 quoting in its dialect; a
        UTF-8 BOM and CRLF line endings are fine).
    :param chunks: the number of chunks wanted.
    :param chunk_bytes: the size of each chunk in bytes.
    :param max_chunks: the most chunks to return (Airflow's ``max_map_length``).
    :param has_header: whether the first record is a header, which no chunk includes.
    :param dialect: the file's dialect.
    :param storage_options: the filesystem's options for a URL (credentials, endpoint).
    """
    if (chunks is None) == (chunk_bytes is None):
        raise ValueError("give exactly one of chunks or chunk_bytes")
    if chunks is not None and chunks < 1:
        raise ValueError("chunks must be greater than 0")
    if chunk_bytes is not None and chunk_bytes < 1:
        raise ValueError("chunk_bytes must be greater than 0")
    if max_chunks < 1:
        raise ValueError("max_chunks must be greater than 0")
    with open_binary(path, storage_options) as stream:
        size = stream_size(stream)
        start = data_start(stream, dialect)
        plan = _Plan(size, chunks, chunk_bytes, max_chunks, even=True)
        if not has_header:
            plan.begin(start, 1)
        _scan(stream, plan, start, None, dialect)
    chunks_planned = plan.chunks()
    log.info("Planned %d chunks over %d bytes of CSV data", len(chunks_planned), size)
    return chunks_planned


def data_start(stream: BinaryIO, dialect: CsvDialect) -> int:
    """The offset of a file's first record: after a UTF-8 BOM, if any."""
    stream.seek(0)
    return len(BOM) if dialect.utf8 and stream.read(len(BOM)) == BOM else 0


def plan_ranges(
    path: str | os.PathLike[str],
    chunk: FileChunk,
    *,
    step_bytes: int,
    dialect: CsvDialect = DEFAULT_DIALECT,
    storage_options: StorageOptions | None = None,
) -> tuple[list[FileChunk], int]:
    """Cut a chunk into ranges of about ``step_bytes`` that start on record boundaries (a
    chunk's batches), in one pass over the chunk only.

    :param chunk: a range that starts and ends on record boundaries (a planned chunk, a batch).
    :returns: the ranges, and the line on which the record after the chunk starts.
    """
    if step_bytes < 1:
        raise ValueError("step_bytes must be greater than 0")
    with open_binary(path, storage_options) as stream:
        plan = _Plan(chunk.end, None, step_bytes, chunk.end)
        plan.begin(chunk.start, chunk.first_line)
        lines = _scan(stream, plan, chunk.start, chunk.end, dialect, chunk.first_line)
    return plan.chunks(), lines.line


def _scan(
    stream: BinaryIO,
    plan: _Plan,
    start: int,
    end: int | None,
    dialect: CsvDialect,
    first_line: int = 1,
) -> _LineCounter:
    """Walk ``[start, end)`` of the stream, settling the plan's boundaries (after the header
    when the plan has not begun); return the line counter at the end of the walk."""
    scanner = scanner_for(dialect)
    lines = _LineCounter(start, first_line)
    for offset, block in iter_blocks(stream, start, end, PLAN_BLOCK_BYTES):
        pos = scanner.enter(block)
        if pos is not None:
            if plan.data_start is None:
                header_end = scanner.next_record_end(block, pos)
                if header_end is not None:
                    plan.begin(offset + header_end, lines.at(block, offset, header_end))
                    pos = header_end
            if plan.data_start is not None:
                pos = plan.resolve(scanner, block, offset, pos, lines)
            if plan.done and end is None:
                break
            scanner.leave(block, pos)
        lines.at(block, offset, len(block))
    return lines


class _LineCounter:
    """The physical line number at a file offset that only moves forward; counts each byte once."""

    def __init__(self, offset: int, line: int = 1) -> None:
        self.offset = offset
        self.line = line

    def at(self, block: bytes, block_offset: int, pos: int) -> int:
        """Move to offset ``pos`` of ``block`` (which starts at ``block_offset``); return its line."""
        self.line += block.count(b"\n", self.offset - block_offset, pos)
        self.offset = block_offset + pos
        return self.line


class _Plan:
    """The boundaries found so far and the targets still to place."""

    def __init__(
        self,
        size: int,
        chunks: int | None,
        chunk_bytes: int | None,
        max_chunks: int,
        *,
        even: bool = False,
    ) -> None:
        """:param even: cut by ``chunk_bytes`` into the fewest parts of one size (chunks: no
        small last one that runs alone while the other workers idle), not every
        ``chunk_bytes`` (a chunk's batches)."""
        self.size = size
        self._even = even
        self.data_start: int | None = None
        self._chunks = chunks
        self._chunk_bytes = chunk_bytes
        self._max_chunks = max_chunks
        self._boundaries: list[tuple[int, int]] = []  # (offset, line) of each chunk's start
        self._targets: Iterator[int] = iter(())
        self._target: int | None = None

    @property
    def done(self) -> bool:
        return self.data_start is not None and self._target is None

    def begin(self, data_start: int, line: int) -> None:
        """Record where the data starts; set the targets."""
        self.data_start = data_start
        if data_start < self.size:
            self._boundaries.append((data_start, line))
        self._targets = self._make_targets(data_start)
        self._target = next(self._targets, None)

    def _make_targets(self, data_start: int) -> Iterator[int]:
        data_bytes = self.size - data_start
        if data_bytes <= 0:
            return iter(())
        if self._chunk_bytes is not None:
            count = math.ceil(data_bytes / self._chunk_bytes)
            if count <= self._max_chunks and not self._even:
                return iter(range(data_start + self._chunk_bytes, self.size, self._chunk_bytes))
            if count > self._max_chunks:
                log.info(
                    "chunk_bytes=%d would make %d chunks; planning max_chunks=%d instead",
                    self._chunk_bytes,
                    count,
                    self._max_chunks,
                )
        else:
            assert self._chunks is not None
            count = self._chunks
            if count > self._max_chunks:
                log.info("Capping chunks=%d to max_chunks=%d", count, self._max_chunks)
        count = min(count, self._max_chunks, data_bytes)
        return (data_start + -(-k * data_bytes // count) for k in range(1, count))

    def resolve(
        self, scanner: Scanner, block: bytes, offset: int, pos: int, lines: _LineCounter
    ) -> int:
        """Move every target this block can settle to the next record start.

        :param pos: an offset of ``block`` outside quoted fields, past the last boundary.
        :param lines: the line counter, at or before ``offset + pos``.
        :returns: the last offset known to be outside quoted fields.
        """
        while self._target is not None and self._target - offset <= len(block):
            # A record starts at t when t - 1 ends a record: look from t - 1 on.
            outside = scanner.outside_at(block, pos, self._target - offset - 1)
            if outside is None:
                break  # the quoted field at the target goes on into the next block
            pos = outside
            found = scanner.next_record_end(block, pos)
            if found is None:
                break  # no record ends in the rest of this block: look in the next one
            pos = found
            boundary = offset + found
            if boundary < self.size and boundary > self._boundaries[-1][0]:
                self._boundaries.append((boundary, lines.at(block, offset, found)))
            while self._target is not None and self._target <= boundary:
                self._target = next(self._targets, None)
        return pos

    def chunks(self) -> list[FileChunk]:
        if not self._boundaries:
            return []
        ends = [offset for offset, _ in self._boundaries[1:]] + [self.size]
        return [
            FileChunk(start, end, line)
            for (start, line), end in zip(self._boundaries, ends, strict=True)
        ]
