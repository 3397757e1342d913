"""Cut a chunk of a CSV file into runs of whole records and single long records.

Each block read from the chunk yields at most two segments: the :class:`Record` that began in
an earlier block and ends in this one, then a :class:`Run` of every record that starts and ends
in this block. The bytes after the block's last record-ending newline are carried over::

    block 1:  a,b\n c,"d\ne"\n f,g\n h,"i           block 2:  \nj"\n k,l\n m,n\n o,
              └────── Run(line 1) ─────┘ └ carried ─────────┘ Record(5) ┘└Run(7)─┘ └ carried

Record boundaries come from the :class:`~parallel_batch.sources.csv.scan.QuoteScanner` that the
planner uses too. Memory is bounded by one block plus one record: a record longer than
``MAX_RECORD_BYTES`` (the rest of a file after an unclosed quote, say) keeps only a prefix and
is flagged.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import NamedTuple

from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.files import StorageOptions, open_binary
from parallel_batch.sources.csv.planner import FileChunk
from parallel_batch.sources.csv.scan import READ_BLOCK_BYTES, iter_blocks, scanner_for

# The longest record kept in memory. Larger: admits records with huge fields; smaller: a runaway
# record (an unclosed quote swallowing the rest of the file) costs less memory before it is cut.
# The csv module refuses fields over 128 KiB anyway, so 1 MiB admits every record it can parse.
MAX_RECORD_BYTES = 1 << 20


class Run(NamedTuple):
    """Consecutive whole records of one block.

    :param line: the physical line on which the first one starts.
    :param data: their bytes; each record ends with ``\n`` except perhaps the file's last one.
    """

    line: int
    data: bytes


class Record(NamedTuple):
    """One record, delimited by the quote scanner.

    :param line: the physical line on which it starts.
    :param data: its bytes with its line ending; only a prefix when ``too_long``.
    :param next_line: the line on which the next record starts.
    :param too_long: whether it is longer than ``MAX_RECORD_BYTES``.
    """

    line: int
    data: bytes
    next_line: int
    too_long: bool


def iter_segments(
    path: str | os.PathLike[str],
    chunk: FileChunk,
    *,
    block_bytes: int | None = None,
    dialect: CsvDialect = DEFAULT_DIALECT,
    storage_options: StorageOptions | None = None,
) -> Generator[Run | Record, None, None]:
    """Yield the records of ``chunk`` in order, as :class:`Run` and :class:`Record` segments.

    :param path: the CSV file the chunk was planned on (a local path or a URL).
    :param chunk: the byte range to read; it starts on a record boundary.
    :param block_bytes: bytes per read (default ``READ_BLOCK_BYTES``).
    :param dialect: the file's dialect (its quote character sets the record boundaries).
    :param storage_options: the filesystem's options for a URL.
    """
    scanner = scanner_for(dialect)
    line = chunk.first_line
    carry = _Carry()  # the bytes of a record that started in an earlier block
    with open_binary(path, storage_options) as stream:
        blocks = iter_blocks(stream, chunk.start, chunk.end, block_bytes or READ_BLOCK_BYTES)
        for _, block in blocks:
            outside = scanner.enter(block)
            if outside is None:  # the whole block is inside one quoted field
                carry.add(block)
                continue
            pos = 0  # where the next record starts in this block
            if carry:
                end = scanner.next_record_end(block, outside)
                if end is None:
                    scanner.leave(block, outside)
                    carry.add(block)
                    continue
                carry.add(block[:end])
                record = carry.take(line)
                yield record
                line = record.next_line
                pos = outside = end
            last = scanner.last_record_end(block, outside)
            if last is not None and last > pos:
                data = block[pos:last]
                yield Run(line, data)
                line += data.count(b"\n")
                pos = outside = last
            scanner.leave(block, outside)
            if pos < len(block):
                carry.add(block[pos:])
    if carry:  # the file's last record, without a line ending
        yield carry.take(line)


class _Carry:
    """The bytes of one record gathered across blocks, up to ``MAX_RECORD_BYTES``."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0
        self._newlines = 0
        self._too_long = False
        self._ended = False

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def add(self, data: bytes) -> None:
        """Append the next piece of the record (never empty)."""
        self._newlines += data.count(b"\n")
        self._ended = data.endswith(b"\n")
        room = MAX_RECORD_BYTES - self._size
        if len(data) > room:
            self._too_long = True
            data = data[: max(room, 0)]
        self._pieces.append(data)
        self._size += len(data)

    def take(self, line: int) -> Record:
        """Return the gathered record, starting on ``line``, and start afresh."""
        # The line after the record: past its line ending, or past its last line if it has none.
        next_line = line + self._newlines + (not self._ended)
        record = Record(line, b"".join(self._pieces), next_line, self._too_long)
        self._pieces, self._size, self._newlines, self._too_long = [], 0, 0, False
        return record
