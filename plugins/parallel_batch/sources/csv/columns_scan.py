"""Where a batch's records start and end, their lines and field counts, found with NumPy.

The columnar reader (:mod:`parallel_batch.sources.csv.columns`) hands a batch's bytes to a C++ CSV
parser that says nothing of lines or bad records; this scan says it first, over the whole
batch at once::

    bytes ─► quotes: each one opening or closing (a pair "" inside a field: close + open)
          │      a quote anywhere else (text after a closing quote, one inside a bare
          │      field): None, the row reader's case
          ├─► line ends outside quotes ─► records: [start, end) without the line ending
          ├─► each record's starting line (line ends before it)
          └─► delimiters outside quotes ─► fields per record

None also for what the row reader treats apart: a bare carriage return, a quote left open, a
record longer than ``MAX_RECORD_BYTES``. Only ASCII-compatible encodings are scanned (dialect.py
allows no other), so bytes stand for characters here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.segments import MAX_RECORD_BYTES

__all__ = ["RecordSpans", "scan_records"]

_LF, _CR = 10, 13
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RecordSpans:
    """The records of a batch's bytes, blank lines left out.

    :param starts: each record's first byte.
    :param ends: each record's end (its line ending not included).
    :param lines: each record's starting line.
    :param fields: each record's number of fields.
    """

    starts: Ints
    ends: Ints
    lines: Ints
    fields: Ints

    def __len__(self) -> int:
        return len(self.starts)


def _quotes_well_placed(buf: npt.NDArray[np.uint8], quotes: Ints, delimiter: int) -> bool:
    """Whether every quote opens a field, closes one, or is half of a ``""`` inside one: the
    quoting the csv module (strict) and the C++ parser read alike."""
    size = len(buf)
    opening, closing = quotes[0::2], quotes[1::2]
    # a closing quote right before an opening one: an escaped quote inside the field
    escaped = opening[1:] == closing[:-1] + 1
    after = buf[np.minimum(closing + 1, size - 1)]
    closes = (closing + 1 == size) | (after == delimiter) | (after == _CR) | (after == _LF)
    closes[:-1] |= escaped
    before = buf[np.maximum(opening - 1, 0)]
    opens = (opening == 0) | (before == delimiter) | (before == _LF)
    opens[1:] |= escaped
    return bool(closes.all() and opens.all())


def scan_records(data: bytes, first_line: int, dialect: CsvDialect) -> RecordSpans | None:
    """The records of ``data`` (whole records, the first starting on ``first_line``), or None
    when the batch holds something only the row reader handles (see the module's doc)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == _LF)
    carriage = np.flatnonzero(buf == _CR)
    if len(carriage) and (
        carriage[-1] + 1 >= len(buf) or not (buf[carriage + 1] == _LF).all()
    ):  # a bare carriage return
        return None
    quote = dialect.quote_byte
    quotes = np.flatnonzero(buf == quote) if quote is not None else np.empty(0, np.int64)
    if len(quotes) % 2 or (
        len(quotes) and not _quotes_well_placed(buf, quotes, dialect.delimiter_byte)
    ):
        return None
    # a line ending or delimiter is inside quotes when an odd number of quotes come before it
    outside = np.searchsorted(quotes, newlines) % 2 == 0
    record_ends = newlines[outside]
    starts = np.concatenate(([0], record_ends + 1)).astype(np.int64)
    ends = np.concatenate((record_ends, [len(buf)])).astype(np.int64)
    if starts[-1] == len(buf):  # the data ends with a line ending: no record after it
        starts, ends = starts[:-1], ends[:-1]
    lines = first_line + np.searchsorted(newlines, starts)
    # the line ending's carriage return is not the record's
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == _CR) & (ends < len(buf))
    ends = ends - has_cr
    if len(starts) and int((ends - starts).max()) > MAX_RECORD_BYTES:
        return None
    kept = ends > starts  # a blank line is no record
    starts, ends, lines = starts[kept], ends[kept], lines[kept]
    delimiters = np.flatnonzero(buf == dialect.delimiter_byte)
    delimiters = delimiters[np.searchsorted(quotes, delimiters) % 2 == 0]
    owner = np.searchsorted(starts, delimiters, side="right") - 1
    fields = np.bincount(owner[owner >= 0], minlength=len(starts))[: len(starts)] + 1
    return RecordSpans(starts, ends, lines.astype(np.int64), fields.astype(np.int64))
