"""Quote-aware record boundaries in a CSV byte stream, one block at a time, in constant memory.

The planner and the reader share this scanner, so they always agree on where records end.
A newline ends a record unless it lies inside a quoted field. Quoting follows RFC 4180 as
Python's ``csv`` module reads it: a ``"`` opens a quoted field only at the start of a field
(first byte of a record, or right after a ``,``); inside, ``""`` is an escaped quote and a lone
``"`` closes the field; a ``"`` anywhere else is an ordinary character. Only ``\\n`` ends a line:
a CRLF record ends at its ``\\n`` and the ``\\r`` is stripped when the record is parsed.

How a caller walks one block (offsets are into the block)::

    p = scanner.enter(block)            first offset outside a quoted field (None: all inside)
    e = scanner.next_record_end(block, p)   just after the next record-ending newline (or None)
    e = scanner.last_record_end(block, p)   just after the last record-ending newline (or None)
    s = scanner.outside_at(block, p, t)     first outside offset >= t (planner: jump to a target)
    scanner.leave(block, p)             carry the quote state at the block's end to the next block

The work is C-level: ``bytes.find`` for newlines and quotes, and one possessive regex that runs
over whole stretches of quoted and unquoted text; Python code runs once per record at most
(the reader) or once per block and target (the planner), never once per byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import BinaryIO, Protocol

from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect

# Bytes read per call by the reader. Larger: fewer Python iterations per MB; smaller: less
# memory, and fewer parsed rows alive at once (less garbage-collector work). 128-256 KiB
# measured fastest on the demo file (bench/bench_csv.py).
READ_BLOCK_BYTES = 256 << 10

_QUOTE = 0x22
_COMMA = 0x2C
_NEWLINE = 0x0A


@cache
def _patterns(quote: int, delimiter: int) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """The scanner's two regexes for a quote byte and a delimiter byte (``"`` and ``,`` shown).

    ``_BODY``: a quoted field's body after its opening quote: everything before the first lone
    quote. Possessive, so an escaped ``""`` is never split into a closing quote plus a stray one.

    ``_RUN``: a stretch of text outside quoted fields, consuming whole closed quoted fields and
    literal quotes (a quote not at a field start). It stops at the end, at a field-opening quote
    whose field does not close, or at a quote at offset 0 (no byte behind it to tell which it is:
    :meth:`QuoteScanner.enter` handles that one). No capturing group: CPython 3.11's re reports
    wrong spans for groups inside possessive repeats.
    """
    q = re.escape(bytes([quote]))
    d = re.escape(bytes([delimiter]))
    body = rb"[^%s]*+(?:%s%s[^%s]*+)*+" % (q, q, q, q)
    run = rb"(?:[^%s]++|%s(?<=[%s\n]%s)%s%s|(?<=[^%s\n])%s)*+" % (q, q, d, q, body, q, d, q)
    return re.compile(body), re.compile(run)


class QuoteScanner:
    """Carry the quote state of one CSV stream from block to block.

    Start it at a record boundary (the start of the data or of a chunk) and walk every
    following block in order: :meth:`enter`, then any number of :meth:`next_record_end` and
    :meth:`outside_at` calls moving forward, then :meth:`leave` from the last outside offset.
    """

    def __init__(self, quote: int = _QUOTE, delimiter: int = _COMMA) -> None:
        self._quote = quote
        self._quote_bytes = bytes([quote])
        self._field_starts = (delimiter, _NEWLINE)
        self._body, self._run = _patterns(quote, delimiter)
        self._inside = False  # the previous block ended inside a quoted field
        self._pending = False  # ... with a lone quote as its last byte: closing, or half of ""?
        self._prev = _NEWLINE  # the previous block's last byte (a record start before any)

    def enter(self, block: bytes) -> int | None:
        """Settle the state carried into ``block``; return its first offset outside quotes.

        Returns None when the whole block lies inside one quoted field (then do not call
        :meth:`leave` for it). The returned offset is never a quote whose role is unknown.
        """
        size = len(block)
        pos = 0
        if self._pending:
            self._pending = False
            if block[0] == self._quote:  # the pending quote and this one are an escaped ""
                pos = 1
            else:  # the pending quote closed the field
                self._inside = False
                self._prev = self._quote
        if not self._inside:
            if block[0] != self._quote:
                return 0
            if self._prev not in self._field_starts:
                return 1  # a literal quote in an unquoted field
            self._inside = True  # a quoted field opening at offset 0
            pos = 1
        end = self._body.match(block, pos).end()  # type: ignore[union-attr]  # always matches
        if end >= size - 1:
            self._pending = end == size - 1
            return None
        self._inside = False
        return end + 1

    def next_record_end(self, block: bytes, pos: int) -> int | None:
        """Return the offset just after the first record-ending newline at or after ``pos``.

        :param block: the current block.
        :param pos: an offset outside quoted fields (from :meth:`enter` or an earlier call).
        :returns: the offset, or None when no record ends in the rest of the block.
        """
        find = block.find
        while True:
            newline = find(b"\n", pos)
            if newline < 0:
                return None
            # the common case: no quote before the newline
            if find(self._quote_bytes, pos, newline) < 0:
                return newline + 1
            # endpos at the newline is safe: a quote just before it cannot be half of a "".
            stop = self._run_end(block, pos, newline)
            if stop == newline:
                return newline + 1
            after = self._close(block, stop)  # the newline is inside the field opening at stop
            if after is None:
                return None
            pos = after

    def last_record_end(self, block: bytes, pos: int) -> int | None:
        """Return the offset just after the last record-ending newline at or after ``pos``.

        :param block: the current block.
        :param pos: an offset outside quoted fields.
        :returns: the offset, or None when no record ends in the rest of the block.
        """
        newline = block.rfind(b"\n", pos)
        while newline >= 0:
            # endpos at the newline is safe: a quote just before it cannot be half of a "".
            stop = self._run_end(block, pos, newline)
            if stop == newline:
                return newline + 1
            # The newline is inside the quoted field opening at stop: look before that field.
            newline = block.rfind(b"\n", pos, stop)
        return None

    def outside_at(self, block: bytes, pos: int, target: int) -> int | None:
        """Return the first offset at or after ``target`` that lies outside quoted fields.

        :param block: the current block.
        :param pos: an offset outside quoted fields, at or before ``target``.
        :param target: the offset wanted.
        :returns: ``target`` itself, the offset after the quoted field holding it, or None
            when that field does not close within the block.
        """
        if target <= pos:
            return pos
        stop = self._run_end(block, pos, target)
        if stop == target:
            # A field that looks closed just before the cut may go on: "" straddling the cut.
            quote = self._quote
            if block[target - 1] != quote or target >= len(block) or block[target] != quote:
                return target
            stop = self._run_end(block, pos, target - 1)
            if stop == target - 1:  # the quote before the cut is a literal one
                return target
            # else it closes (before the cut) the field opening at stop: in fact a "" inside it
        return self._close(block, stop)

    def leave(self, block: bytes, pos: int) -> None:
        """Record the quote state at the end of ``block``, scanning on from outside offset ``pos``."""
        size = len(block)
        stop = self._run_end(block, pos, size)
        if stop < size:  # a field opened and did not close
            self._inside = True
        elif (
            block[-1] != self._quote
            or pos == size
            or self._run_end(block, pos, size - 1) == size - 1
        ):
            self._inside = False  # the last byte is no quote, or a literal one
            self._prev = block[-1]
        else:  # the last byte closes a field, unless the next block starts with a quote
            self._inside = self._pending = True

    def _run_end(self, block: bytes, pos: int, endpos: int) -> int:
        return self._run.match(block, pos, endpos).end()  # type: ignore[union-attr]  # matches ""

    def _close(self, block: bytes, opening: int) -> int | None:
        """Return the offset after the quoted field opening at ``opening``; None if still open."""
        end = self._body.match(block, opening + 1).end()  # type: ignore[union-attr]
        return end + 1 if end < len(block) - 1 else None


class PlainScanner:
    """The scanner of a file without quoting: every newline ends a record."""

    def enter(self, block: bytes) -> int | None:
        return 0

    def next_record_end(self, block: bytes, pos: int) -> int | None:
        newline = block.find(b"\n", pos)
        return None if newline < 0 else newline + 1

    def last_record_end(self, block: bytes, pos: int) -> int | None:
        newline = block.rfind(b"\n", pos)
        return None if newline < 0 else newline + 1

    def outside_at(self, block: bytes, pos: int, target: int) -> int | None:
        return max(pos, target)

    def leave(self, block: bytes, pos: int) -> None:
        pass


class Scanner(Protocol):
    """What the planner and the reader call (see the module's docstring)."""

    def enter(self, block: bytes) -> int | None: ...
    def next_record_end(self, block: bytes, pos: int) -> int | None: ...
    def last_record_end(self, block: bytes, pos: int) -> int | None: ...
    def outside_at(self, block: bytes, pos: int, target: int) -> int | None: ...
    def leave(self, block: bytes, pos: int) -> None: ...


def scanner_for(dialect: CsvDialect = DEFAULT_DIALECT) -> Scanner:
    """A new scanner for a stream in ``dialect``, started at a record boundary."""
    quote = dialect.quote_byte
    if quote is None:
        return PlainScanner()
    return QuoteScanner(quote, dialect.delimiter_byte)


def iter_blocks(
    stream: BinaryIO, start: int, end: int | None, block_bytes: int = READ_BLOCK_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, block)`` pairs covering ``[start, end)`` of ``stream`` (to EOF if None).

    :param stream: a binary file opened for reading; it is positioned at ``start`` first.
    :param start: the first byte offset to read.
    :param end: the byte offset to stop at (exclusive), or None for the end of the file.
    :param block_bytes: bytes per block.
    """
    if block_bytes < 1:
        raise ValueError("block_bytes must be greater than 0")
    stream.seek(start)
    offset = start
    while end is None or offset < end:
        want = block_bytes if end is None else min(block_bytes, end - offset)
        block = stream.read(want)
        if not block:
            return
        yield offset, block
        offset += len(block)
