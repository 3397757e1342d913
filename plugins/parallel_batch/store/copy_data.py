"""Rows encoded in PostgreSQL's COPY format, so that a batch crosses a process boundary as bytes.

A worker process encodes its batch's output rows; the parent sends the bytes to the target with
one ``Copy.write``, never decoding or re-encoding a value::

    worker:  rows --CopyEncoder.append (psycopg's C dumpers)--> CopyData(body, rows, binary)
                                                                   |  pickled: one bytes object
    parent:  writer.write_rows(conn, table, columns, copy_data) --> COPY t (...) FROM STDIN

:class:`CopyData` holds only the rows (the body): the binary format's signature and trailer are
added when it is sent, so the bodies of several parts of a batch join by concatenation.

Binary COPY applies no casts, so each value must be dumped as its column's exact type:
:class:`CopyFormat` carries the target columns' type oids (``writer.copy_format``). A target
with a column psycopg cannot dump in binary takes text COPY, which the server parses and casts.

The row framing uses psycopg's C implementation (``psycopg._copy_base.format_row_binary``, what
``Copy.write_row`` runs; 0.4-1.4 us per 5-column row here) when it is importable, else the same
framing in Python over the public ``Transformer.dump_sequence`` (about 2.7 us per row).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from psycopg.abc import AdaptContext
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import Format

__all__ = ["BINARY_SIGNATURE", "BINARY_TRAILER", "CopyData", "CopyEncoder", "CopyFormat"]

# The binary COPY header (signature, flags, header extension length) and the end-of-data marker.
BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
BINARY_TRAILER = b"\xff\xff"

_FormatRow = Callable[[Sequence[Any], Any, bytearray], None]


class CopyFormat(NamedTuple):
    """How rows are encoded for one target's columns.

    :param type_oids: the columns' type oids (of the base type for a domain), in order.
    :param binary: True for binary COPY; False for text COPY (a type without a binary dumper).
    """

    type_oids: tuple[int, ...]
    binary: bool


class CopyData:
    """Rows encoded for ``COPY ... FROM STDIN``, without the binary signature and trailer.

    ``len()`` is the number of rows.

    :param body: the encoded rows.
    :param rows: how many rows ``body`` holds.
    :param binary: the format (must match the COPY it is sent with).
    """

    __slots__ = ("binary", "body", "rows")

    def __init__(self, body: bytes, rows: int, binary: bool) -> None:
        if rows < 0:
            raise ValueError("rows must not be negative")
        self.body = body
        self.rows = rows
        self.binary = binary

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        kind = "binary" if self.binary else "text"
        return f"CopyData({self.rows} rows, {len(self.body)} bytes, {kind})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (CopyData, (self.body, self.rows, self.binary))

    def chunks(self) -> Iterable[bytes]:
        """The bytes to send, in order (the binary signature and trailer included)."""
        if not self.binary:
            return (self.body,)
        return (BINARY_SIGNATURE, self.body, BINARY_TRAILER)

    @classmethod
    def join(cls, parts: Sequence[CopyData], *, binary: bool) -> CopyData:
        """Return the rows of ``parts`` as one CopyData of the given format.

        :raises ValueError: when a part has another format.
        """
        if any(part.binary != binary for part in parts):
            raise ValueError("cannot join COPY data of different formats")
        if len(parts) == 1:
            return parts[0]
        return cls(b"".join(p.body for p in parts), sum(p.rows for p in parts), binary)


def _python_format_binary(row: Sequence[Any], tx: Any, out: bytearray) -> None:
    """Frame one row for binary COPY (psycopg's layout), in Python."""
    out += _pack_int2(len(row))
    for value in tx.dump_sequence(row, _binary_formats(len(row))):
        if value is None:
            out += b"\xff\xff\xff\xff"
        else:
            out += _pack_int4(len(value))
            out += value


def _python_format_text(row: Sequence[Any], tx: Any, out: bytearray) -> None:
    """Frame one row for text COPY (tab-separated, backslash escapes, ``\\N`` for NULL)."""
    fields = [
        rb"\N" if value is None else _TEXT_ESCAPE.sub(_escape, bytes(value))
        for value in tx.dump_sequence(row, [PyFormat.TEXT] * len(row))
    ]
    out += b"\t".join(fields)
    out += b"\n"


_pack_int2 = struct.Struct("!h").pack
_pack_int4 = struct.Struct("!i").pack
_TEXT_ESCAPE = re.compile(b"[\b\t\n\v\f\r\\\\]")
_TEXT_ESCAPES = {
    b"\b": b"\\b",
    b"\t": b"\\t",
    b"\n": b"\\n",
    b"\v": b"\\v",
    b"\f": b"\\f",
    b"\r": b"\\r",
    b"\\": b"\\\\",
}


def _escape(match: re.Match[bytes]) -> bytes:
    return _TEXT_ESCAPES[match.group(0)]


def _binary_formats(n: int) -> list[PyFormat]:
    return [PyFormat.BINARY] * n


def _row_formatters() -> tuple[_FormatRow, _FormatRow]:
    """psycopg's C row framing when available (private, stable since 3.2), else ours."""
    try:
        from psycopg._copy_base import format_row_binary, format_row_text
    except ImportError:  # a psycopg that moved it: same bytes, slower
        return _python_format_binary, _python_format_text
    return format_row_binary, format_row_text


_FORMAT_BINARY, _FORMAT_TEXT = _row_formatters()


class CopyEncoder:
    """Encode rows for one target's COPY, one row at a time.

    :param fmt: the target columns' types and the COPY format.
    :param context: the adaptation context (a connection) whose dumpers are used; None: the
        global adapters, UTF-8.
    """

    def __init__(self, fmt: CopyFormat, context: AdaptContext | None = None) -> None:
        if not fmt.type_oids:
            raise ValueError("type_oids must not be empty")
        self.format = fmt
        self._columns = len(fmt.type_oids)
        self._tx = Transformer(context)
        if fmt.binary:
            self._tx.set_dumper_types(list(fmt.type_oids), Format.BINARY)
            self._format_row = _FORMAT_BINARY
        else:
            self._format_row = _FORMAT_TEXT

    def append(self, row: Sequence[Any], out: bytearray) -> None:
        """Append ``row`` encoded to ``out``; when it cannot be encoded, raise and leave ``out``
        as it was.

        :raises ValueError: for a row with another number of values than the target's columns.
        :raises psycopg.Error | TypeError | ValueError: for a value its column cannot take.
        """
        if len(row) != self._columns:
            raise ValueError(f"the row has {len(row)} values for {self._columns} target columns")
        mark = len(out)
        try:
            self._format_row(row, self._tx, out)
        except BaseException:
            del out[mark:]
            raise

    def encode(self, rows: Iterable[Sequence[Any]]) -> CopyData:
        """Encode every row; raise at the first one that cannot be encoded (the loop of
        :meth:`append` without its per-row bookkeeping: about 0.3 us a row less)."""
        out = bytearray()
        count = 0
        columns, format_row, tx = self._columns, self._format_row, self._tx
        for row in rows:
            if len(row) != columns:
                raise ValueError(f"the row has {len(row)} values for {columns} target columns")
            format_row(row, tx, out)
            count += 1
        return CopyData(bytes(out), count, self.format.binary)
