"""Whole records' bytes to rows of fields, in bulk, each with its starting line.

A :class:`~parallel_batch.sources.csv.segments.Run` (a block's worth of whole records) is decoded at
once and split with C-level calls: ``str.split`` when it holds no quote, else one ``csv.reader``
over its lines. Anything unusual falls back to the one-record path, :func:`split_record` per
record, so the result is always the same as splitting each record on its own::

    Run ─► decode (bad bytes noted) ─┬─ no quote: lines ─► str.split(",")
                                     └─ quotes:   csv.reader(text), strict ─── csv.Error ─┐
                                           │                                            │
              a line holding an undecodable byte ─► split_record ─► RecordError      one record
                                           ▼                                         at a time
                         Rows(lines, fields, raws, errors) ◄────────────────────────────┘
"""

from __future__ import annotations

import codecs
import csv
import io
import threading
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add
from typing import cast

from parallel_batch.sources.csv import segments
from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.records import MalformedRecord, RecordError, raw_text, split_record
from parallel_batch.sources.csv.scan import scanner_for
from parallel_batch.sources.csv.segments import Record, Run

# A decode error handler that notes where each undecodable byte sequence starts, then does what
# surrogateescape does: the text is decoded once, at C speed, and the bad bytes are found without
# searching it (a regex search of the text and a second decode cost ~0.7 us a record of the demo
# file, whose runs nearly all hold one bad record).
_NOTE_ERRORS = "parallel_batch.note_undecodable"
_noted = threading.local()
_surrogateescape = codecs.lookup_error("surrogateescape")


def _note_undecodable(exc: UnicodeError) -> tuple[str | bytes, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _noted.starts.append(exc.start)
    return _surrogateescape(exc)


codecs.register_error(_NOTE_ERRORS, _note_undecodable)


def _decode(data: bytes, encoding: str) -> tuple[str, list[int]]:
    """``data`` decoded as surrogateescape decodes it, and the byte offset of each undecodable
    sequence (ascending; none for a clean run)."""
    starts: list[int] = []
    _noted.starts = starts
    try:
        return data.decode(encoding, _NOTE_ERRORS), starts
    finally:
        del _noted.starts


@dataclass
class Rows:
    """Consecutive records split into fields, or the reason they could not be.

    :param lines: each record's starting physical line, ascending.
    :param fields: each record's fields; none (``[]``) where it failed (see ``errors``).
    :param raws: each record's text, for the message if it turns out bad later.
    :param errors: the failures by index.
    """

    lines: Sequence[int] = ()
    fields: list[list[str]] = field(default_factory=list)
    raws: Sequence[str | bytes] = ()
    errors: dict[int, RecordError] = field(default_factory=dict)


def rows_of_record(record: Record, after_line: int, dialect: CsvDialect = DEFAULT_DIALECT) -> Rows:
    """Split one record delimited by the scanner (skipped if on or before ``after_line``)."""
    line, data = record.line, record.data
    if line <= after_line:
        return Rows()
    if record.too_long:
        reason = f"record longer than {segments.MAX_RECORD_BYTES} bytes (a quote left open?)"
        error = RecordError(line, reason, raw_text(data, dialect.encoding), "too_long")
        return Rows([line], [[]], [data], {0: error})
    try:
        fields = split_record(data, dialect)
    except MalformedRecord as exc:
        error = RecordError(line, str(exc), raw_text(data, dialect.encoding), exc.kind)
        return Rows([line], [[]], [data], {0: error})
    return Rows([line], [fields], [data]) if fields else Rows()


def rows_of_run(run: Run, after_line: int, dialect: CsvDialect = DEFAULT_DIALECT) -> Rows:
    """Split a run of whole records, skipping those on or before ``after_line``."""
    if run.line + run.data.count(b"\n") <= after_line + 1:  # it ends on or before that line
        return Rows()
    data = run.data
    # the encodings allowed are ASCII-compatible (dialect.py): line ends are counted in bytes
    crlf_only = b"\r" not in data or data.count(b"\r") == data.count(b"\r\n")
    if not crlf_only:  # a bare carriage return: rare, and the csv module's error if unquoted
        return _rows_one_by_one(run, after_line, dialect)
    text, undecodable = _decode(data, dialect.encoding)
    quote = dialect.quotechar
    if quote is None or quote not in text:
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # what follows the last line ending
        numbers: Sequence[int] = range(run.line, run.line + len(lines))
        raws: Sequence[str] = lines
        fields: list[list[str]] = list(map(str.split, lines, repeat(dialect.delimiter)))
        blank: list[str] = [""]  # what str.split makes of a blank line
    else:
        parsed = _split_with_csv(text, run.line, dialect)
        if parsed is None:
            return _rows_one_by_one(run, after_line, dialect)
        numbers, fields, raws = parsed
        blank = []  # what the csv module makes of one
    rows = Rows(numbers, fields, raws)
    if blank in fields:
        rows = _without_blanks(rows, blank)
    if after_line >= run.line:
        skip = bisect_right(rows.lines, after_line)
        rows = Rows(rows.lines[skip:], rows.fields[skip:], rows.raws[skip:])
    if undecodable:
        _mark_undecodable(rows, dialect, data, undecodable, run.line)
    return rows


def _split_with_csv(
    text: str, first_line: int, dialect: CsvDialect
) -> tuple[Sequence[int], list[list[str]], Sequence[str]] | None:
    """Split with one csv reader over the text; None if any record needs a closer look.

    The text must hold no bare carriage return: the reader's line count, which numbers the
    records here, counts one as a line break.
    """
    reader = csv.reader(io.StringIO(text, newline=""), **dialect.csv_options)
    fields: list[list[str]] = []
    ends: list[int] = []  # the line count after each record: where the next one starts
    try:
        for row in reader:
            fields.append(row)
            ends.append(reader.line_num)
    except csv.Error:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not ends or ends[-1] != len(lines):  # pragma: no cover  # strict mode raises first
        return None
    if len(fields) == len(lines):  # every record is one line
        return range(first_line, first_line + len(lines)), fields, lines
    starts = [0, *ends[:-1]]
    raws = list(map("\n".join, map(lines.__getitem__, map(slice, starts, ends))))
    return list(map(add, starts, repeat(first_line))), fields, raws


def _without_blanks(rows: Rows, blank: list[str]) -> Rows:
    keep = [i for i, fields in enumerate(rows.fields) if fields != blank]
    return Rows(
        [rows.lines[i] for i in keep], [rows.fields[i] for i in keep], [rows.raws[i] for i in keep]
    )


def _mark_undecodable(
    rows: Rows, dialect: CsvDialect, data: bytes, starts: list[int], first_line: int
) -> None:
    """Turn each record holding an undecodable byte into its error, as split_record words it.

    ``starts`` are the bad bytes' offsets in ``data`` (the run), each found at its line, so only
    their records are looked at again.
    """
    raws, lines = rows.raws, rows.lines
    line, counted = first_line, 0  # the line of data[counted]
    marked = -1
    for start in starts:
        line += data.count(b"\n", counted, start)
        counted = start
        i = bisect_right(lines, line) - 1  # the record that starts on or before that line
        if i < 0 or i == marked:  # a record skipped (resumed after it), or marked already
            continue
        marked = i
        record = cast(str, raws[i]).encode(dialect.encoding, "surrogateescape")
        try:
            split_record(record, dialect)
        except MalformedRecord as exc:
            error = RecordError(lines[i], str(exc), raw_text(record, dialect.encoding), exc.kind)
            rows.errors[i] = error
            rows.fields[i] = []


def _rows_one_by_one(run: Run, after_line: int, dialect: CsvDialect) -> Rows:
    """Split a run record by record (when one of them is malformed)."""
    rows = Rows([], [], [])
    assert isinstance(rows.lines, list) and isinstance(rows.raws, list)
    scanner = scanner_for(dialect)
    data, line = run.data, run.line
    start = 0
    outside = scanner.enter(data)
    while start < len(data):
        end = None if outside is None else scanner.next_record_end(data, outside)
        end = len(data) if end is None else end  # the file's last record, without a line ending
        piece = data[start:end]
        next_line = line + piece.count(b"\n")
        one = rows_of_record(Record(line, piece, next_line, False), after_line, dialect)
        for error in one.errors.values():
            rows.errors[len(rows.lines)] = error
        rows.lines.extend(one.lines)
        rows.fields.extend(one.fields)
        rows.raws.extend(one.raws)
        line, start, outside = next_line, end, end
    return rows
