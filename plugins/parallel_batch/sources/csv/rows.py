"""Whole records' bytes to rows of fields, in bulk, each with its starting line.

A :class:`~parallel_batch.sources.csv.segments.Run` (a block's worth of whole records) is decoded at
once and split with C-level calls: ``str.split`` when it holds no quote, else one ``csv.reader``
over its lines. Anything unusual falls back to the one-record path, :func:`split_record` per
record, so the result is always the same as splitting each record on its own::

    Run ─► decode (surrogateescape) ─┬─ no quote: lines ─► str.split(",")
                                     └─ quotes:   csv.reader(text), strict ─── csv.Error ─┐
                                           │                                            │
              a line holding an undecodable byte ─► split_record ─► RecordError      one record
                                           ▼                                         at a time
                         Rows(lines, fields, raws, errors) ◄────────────────────────────┘
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add
from typing import cast

from parallel_batch.sources.csv import segments
from parallel_batch.sources.csv.records import MalformedRecord, RecordError, raw_text, split_record
from parallel_batch.sources.csv.scan import QuoteScanner
from parallel_batch.sources.csv.segments import Record, Run


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


def rows_of_record(record: Record, after_line: int) -> Rows:
    """Split one record delimited by the scanner (skipped if on or before ``after_line``)."""
    line, data = record.line, record.data
    if line <= after_line:
        return Rows()
    if record.too_long:
        reason = f"record longer than {segments.MAX_RECORD_BYTES} bytes (a quote left open?)"
        return Rows(
            [line], [[]], [data], {0: RecordError(line, reason, raw_text(data), "too_long")}
        )
    try:
        fields = split_record(data)
    except MalformedRecord as exc:
        return Rows(
            [line], [[]], [data], {0: RecordError(line, str(exc), raw_text(data), exc.kind)}
        )
    return Rows([line], [fields], [data]) if fields else Rows()


def rows_of_run(run: Run, after_line: int) -> Rows:
    """Split a run of whole records, skipping those on or before ``after_line``."""
    if run.line + run.data.count(b"\n") <= after_line + 1:  # it ends on or before that line
        return Rows()
    try:
        text, undecodable = run.data.decode("utf-8"), False
    except UnicodeDecodeError:
        text, undecodable = run.data.decode("utf-8", "surrogateescape"), True
    crlf_only = "\r" not in text or text.count("\r") == text.count("\r\n")
    if not crlf_only:  # a bare carriage return: rare, and the csv module's error if unquoted
        return _rows_one_by_one(run, after_line)
    if '"' not in text:
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # what follows the last line ending
        numbers: Sequence[int] = range(run.line, run.line + len(lines))
        raws: Sequence[str] = lines
        fields: list[list[str]] = list(map(str.split, lines, repeat(",")))
        blank: list[str] = [""]  # what str.split makes of a blank line
    else:
        parsed = _split_with_csv(text, run.line)
        if parsed is None:
            return _rows_one_by_one(run, after_line)
        numbers, fields, raws = parsed
        blank = []  # what the csv module makes of one
    rows = Rows(numbers, fields, raws)
    if blank in fields:
        rows = _without_blanks(rows, blank)
    if after_line >= run.line:
        skip = bisect_right(rows.lines, after_line)
        rows = Rows(rows.lines[skip:], rows.fields[skip:], rows.raws[skip:])
    if undecodable:
        _mark_undecodable(rows)
    return rows


def _split_with_csv(
    text: str, first_line: int
) -> tuple[Sequence[int], list[list[str]], Sequence[str]] | None:
    """Split with one csv reader over the text; None if any record needs a closer look.

    The text must hold no bare carriage return: the reader's line count, which numbers the
    records here, counts one as a line break.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
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


def _mark_undecodable(rows: Rows) -> None:
    """Turn each record holding an undecodable byte into its error, as split_record words it."""
    raws = rows.raws
    encoded: list[bytes] = []
    while len(encoded) < len(raws):  # str.encode refuses the surrogates that stand for bad bytes
        try:
            encoded.extend(map(str.encode, cast("Sequence[str]", raws[len(encoded) :])))
        except UnicodeEncodeError:
            i = len(encoded)
            data = cast(str, raws[i]).encode("utf-8", "surrogateescape")
            encoded.append(data)
            try:
                split_record(data)
            except MalformedRecord as exc:
                rows.errors[i] = RecordError(rows.lines[i], str(exc), raw_text(data), exc.kind)
                rows.fields[i] = []


def _rows_one_by_one(run: Run, after_line: int) -> Rows:
    """Split a run record by record (when one of them is malformed)."""
    rows = Rows([], [], [])
    assert isinstance(rows.lines, list) and isinstance(rows.raws, list)
    scanner = QuoteScanner()
    data, line = run.data, run.line
    start = 0
    outside = scanner.enter(data)
    while start < len(data):
        end = None if outside is None else scanner.next_record_end(data, outside)
        end = len(data) if end is None else end  # the file's last record, without a line ending
        piece = data[start:end]
        next_line = line + piece.count(b"\n")
        one = rows_of_record(Record(line, piece, next_line, False), after_line)
        for error in one.errors.values():
            rows.errors[len(rows.lines)] = error
        rows.lines.extend(one.lines)
        rows.fields.extend(one.fields)
        rows.raws.extend(one.raws)
        line, start, outside = next_line, end, end
    return rows
