"""Read one chunk of a CSV file as batches of typed records and per-record errors.

::

    FileChunk ─► iter_segments ─► Run / Record ─► rows_of_run / rows_of_record
                                                     │ fields + starting line per record
                                                     ▼ (records on or before after_line skipped)
                 _BatchBuilder: batch_rows at a time ─► count fields ─► convert column by column
                                                     │
                                                     ▼
                 CsvBatch(lines, values, errors=[RecordError(line, ...)])

A chunk never fails because of its content: every record in it comes out either as a
:class:`CsvRecord` or as a :class:`RecordError`, each at its true starting line. Memory is
bounded by one read block, one record and one batch.

Why the ``csv`` module and bulk ``str`` operations rather than pandas: the output is one Python
tuple per record with its line number, and one bad record must cost only itself. pandas' C
parser cannot say which line failed or where a record starts, and decodes a whole range at once
(one bad byte fails it). Measured on the demo file (``python -m bench csv``), its parse alone is
about 2.5x ours, but once its frames become the same typed tuples it is within about 20% of
ours either way; and with a bad record in nearly every batch (as in the demo) a pandas-first
design would re-parse nearly every batch with the csv module to find the lines anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing
from itertools import compress

from parallel_batch.exceptions import CsvHeaderError
from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.files import StorageOptions, open_binary, stream_size
from parallel_batch.sources.csv.planner import FileChunk, data_start
from parallel_batch.sources.csv.records import (
    CsvBatch,
    MalformedRecord,
    RecordError,
    field_count_reason,
    raw_text,
    split_record,
)
from parallel_batch.sources.csv.rows import Rows, rows_of_record, rows_of_run
from parallel_batch.sources.csv.scan import scanner_for
from parallel_batch.sources.csv.schema import CsvSchema
from parallel_batch.sources.csv.segments import MAX_RECORD_BYTES, Record, Run, iter_segments


def read_csv_chunk(
    path: str | os.PathLike[str],
    chunk: FileChunk,
    schema: CsvSchema,
    *,
    batch_rows: int,
    after_line: int | None = None,
    dialect: CsvDialect = DEFAULT_DIALECT,
    storage_options: StorageOptions | None = None,
) -> Iterator[CsvBatch]:
    """Read a chunk as batches of typed records and per-record errors.

    Each batch holds at most ``batch_rows`` records and errors together. Checkpoint a batch's
    ``end_line`` and pass it back as ``after_line`` to resume: the records that start after
    that line come out, each exactly once. Blank lines are skipped.

    :param path: the CSV file the chunk was planned on.
    :param chunk: the byte range to read, from :func:`~parallel_batch.sources.csv.planner.plan_csv_chunks`.
    :param schema: the columns to convert each record to.
    :param batch_rows: records (and errors) per batch.
    :param after_line: skip the records that start on or before this physical line.
    :param dialect: the file's dialect (delimiter, quoting, encoding, NULL spellings).
    :param storage_options: the filesystem's options for a URL.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be greater than 0")
    if after_line is not None and after_line < 0:
        raise ValueError("after_line must not be negative")
    return _read_batches(path, chunk, schema, batch_rows, after_line or 0, dialect, storage_options)


def _read_batches(
    path: str | os.PathLike[str],
    chunk: FileChunk,
    schema: CsvSchema,
    batch_rows: int,
    after_line: int,
    dialect: CsvDialect,
    storage_options: StorageOptions | None,
) -> Iterator[CsvBatch]:
    builder = _BatchBuilder(schema, batch_rows, dialect)
    segments = iter_segments(path, chunk, dialect=dialect, storage_options=storage_options)
    for segment in segments:
        if isinstance(segment, Run):
            rows = rows_of_run(segment, after_line, dialect)
            next_line = segment.line + segment.data.count(b"\n")
        else:
            rows = rows_of_record(segment, after_line, dialect)
            next_line = segment.next_line
        yield from builder.add(rows, next_line)
    if builder.pending:
        yield builder.flush()


class _BatchBuilder:
    """Rows of fields waiting to be converted: up to ``batch_rows`` of them, errors included."""

    def __init__(self, schema: CsvSchema, batch_rows: int, dialect: CsvDialect) -> None:
        self._schema = schema
        self._nulls = dialect.nulls
        self._encoding = dialect.encoding
        self._width = len(schema.columns)
        self._batch_rows = batch_rows
        self._reset()

    def _reset(self) -> None:
        self._lines: list[int] = []
        self._fields: list[list[str]] = []
        self._raws: list[str | bytes] = []
        self._errors: list[RecordError] = []
        self._end_line = 0

    @property
    def pending(self) -> int:
        """Records gathered for the next batch (errors included)."""
        return len(self._lines)

    def add(self, rows: Rows, next_line: int) -> Iterator[CsvBatch]:
        """Add consecutive records; ``next_line`` is where the record after them starts."""
        start = 0
        while start < len(rows.lines):
            stop = start + self._batch_rows - self.pending
            self._lines.extend(rows.lines[start:stop])
            self._fields.extend(rows.fields[start:stop])
            self._raws.extend(rows.raws[start:stop])
            if rows.errors:
                self._errors.extend(e for i, e in rows.errors.items() if start <= i < stop)
            if stop < len(rows.lines):
                self._end_line = rows.lines[stop] - 1
                yield self.flush()
            start = stop
        self._end_line = next_line - 1
        if self.pending >= self._batch_rows:
            yield self.flush()

    def flush(self) -> CsvBatch:
        """Convert the gathered rows and return them as a batch; start the next one."""
        lines, rows, raws, errors = self._lines, self._fields, self._raws, self._errors
        width, encoding = self._width, self._encoding
        widths = list(map(len, rows))
        if widths.count(width) != len(rows):
            # Some records failed to split (they have no fields) or have too few or too many.
            for i in compress(range(len(rows)), map(width.__ne__, widths)):
                if widths[i]:
                    reason = field_count_reason(width, widths[i])
                    errors.append(
                        RecordError(lines[i], reason, raw_text(raws[i], encoding), "field_count")
                    )
            lines = list(compress(lines, map(width.__eq__, widths)))
            raws = list(compress(raws, map(width.__eq__, widths)))
            rows = list(compress(rows, map(width.__eq__, widths)))
        values, failures = self._schema.convert_rows(rows, self._nulls)
        if failures:
            for i, reason in failures.items():
                errors.append(RecordError(lines[i], reason, raw_text(raws[i], encoding), "value"))
            keep = bytearray(b"\x01") * len(lines)
            for i in failures:
                keep[i] = 0
            lines, values = list(compress(lines, keep)), list(compress(values, keep))
        errors.sort()
        batch = CsvBatch(lines, values, errors, self._end_line)
        self._reset()
        return batch


def read_csv_header(
    path: str | os.PathLike[str],
    dialect: CsvDialect = DEFAULT_DIALECT,
    storage_options: StorageOptions | None = None,
) -> list[str]:
    """Return the field names of a CSV file's first record (after a UTF-8 BOM, if any).

    :raises CsvHeaderError: when the file has no header or its first record cannot be read.
    """
    name = os.fspath(path)
    with open_binary(path, storage_options) as stream:
        size = stream_size(stream)
        start = data_start(stream, dialect)
    if start >= size:
        raise CsvHeaderError(f"{name} is empty: it has no header")
    chunk = FileChunk(start, size, 1)
    segments = iter_segments(path, chunk, dialect=dialect, storage_options=storage_options)
    with closing(segments):
        first = next(segments)
    if isinstance(first, Record) and first.too_long:
        raise CsvHeaderError(f"the header of {name} is longer than {MAX_RECORD_BYTES} bytes")
    data = first.data
    if isinstance(first, Run):  # the header is the run's first record
        scanner = scanner_for(dialect)
        outside = scanner.enter(data)
        end = None if outside is None else scanner.next_record_end(data, outside)
        data = data[:end]
    try:
        fields = split_record(data, dialect)
    except MalformedRecord as exc:
        raise CsvHeaderError(f"cannot read the header of {name}: {exc}") from exc
    if not fields:
        raise CsvHeaderError(f"the header of {name} is a blank line")
    return fields
