"""Read a batch of a CSV file as Arrow columns: the row reader's results, without an object a field.

The row reader (:mod:`parallel_batch.sources.csv.reader`) makes a Python string of every field and a
Python value of every string. This reader gives the same records, values, lines and errors as
typed Arrow columns, from C++ and NumPy calls over the whole batch::

    batch bytes ─► scan_records (NumPy): records, their lines, their field counts
                │     None: something only the row reader reads (see columns_scan)
                ├─► undecodable bytes ─► their records: errors, as split_record words them
                ├─► a wrong field count ─► its record: an error
                ├─► the other records ─► pyarrow.csv: one string column per CSV column
                └─► convert_table: typed columns; a field that does not convert: its record
                    an error, as the row reader words it
                                                        ▼
                        ColumnBatch(table, lines, errors)

:func:`read_columns` returns None for a batch it does not read exactly as the row reader would;
the caller reads that batch with the row reader. :func:`columnar_ready` says whether a file's
schema and dialect suit it at all. The tests hold both readers to the same results.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from parallel_batch.core.source import ColumnsBatch
from parallel_batch.sources.csv.columns_convert import (
    COLUMNAR_KINDS,
    RowReaderNeeded,
    convert_table,
)
from parallel_batch.sources.csv.columns_scan import Ints, scan_records
from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.records import (
    MalformedRecord,
    RecordError,
    field_count_reason,
    raw_text,
    split_record,
)
from parallel_batch.sources.csv.rows import _decode
from parallel_batch.sources.csv.schema import CsvSchema
from parallel_batch.store.deadletters import DeadLetter

__all__ = ["ColumnBatch", "columnar_ready", "read_columns"]


@dataclass
class ColumnBatch:
    """A batch's records as typed columns, and the records that could not be read.

    :param table: one typed column per schema column (named as the schema), one row per record
        read.
    :param lines: each row's starting line.
    :param errors: the records that could not be read, in file order.
    :param texts: each row's fields as read, one string column per schema column.
    """

    table: pa.Table
    lines: Ints
    errors: list[RecordError] = field(default_factory=list)
    texts: list[pa.Array] = field(default_factory=list)

    schema: CsvSchema | None = None

    def fields(self, index: int) -> list[str]:
        """The fields of row ``index`` as read (convert them again for its Python values)."""
        return [column[index].as_py() for column in self.texts]

    def batch(
        self,
        names: Sequence[str],
        dialect: CsvDialect,
        letter: Callable[[RecordError], DeadLetter],
    ) -> ColumnsBatch:
        """The core's view: columns named ``names``, errors made dead letters by ``letter``."""
        schema, nulls = self.schema, dialect.nulls
        assert schema is not None

        def row(index: int) -> tuple[Any, ...]:
            return schema.convert(self.fields(index), nulls)

        return ColumnsBatch(
            self.table.rename_columns(list(names)),
            self.lines.tolist(),
            list(map(letter, self.errors)),
            row,
        )

    def __len__(self) -> int:
        return self.table.num_rows + len(self.errors)


def columnar_ready(schema: CsvSchema, dialect: CsvDialect) -> str | None:
    """None when files of this schema and dialect can be read as columns, else why not."""
    if not dialect.utf8:
        return f"the columnar reader reads UTF-8 only, not {dialect.encoding}"
    kinds = sorted({c.kind for c in schema.columns} - COLUMNAR_KINDS)
    if kinds:
        return f"the columnar reader does not convert {', '.join(kinds)} columns"
    return None


def _parse(data: bytes, width: int, dialect: CsvDialect) -> tuple[list[pa.Array], int]:
    """One string column per CSV column, of the records with ``width`` fields; and how many
    records with another number of fields were left out."""
    names = [f"f{i}" for i in range(width)]
    skipped = 0

    def skip(_: object) -> str:
        nonlocal skipped
        skipped += 1
        return "skip"

    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(
            column_names=names, use_threads=False, block_size=max(len(data) + 1, 1 << 20)
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter=dialect.delimiter,
            quote_char=dialect.quotechar if dialect.quotechar is not None else False,
            double_quote=True,
            escape_char=False,
            newlines_in_values=True,
            ignore_empty_lines=True,
            invalid_row_handler=skip,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=False,  # a record with an undecodable byte is an error: not converted
        ),
    )
    return [table.column(name).combine_chunks() for name in names], skipped


def read_columns(
    data: bytes, first_line: int, schema: CsvSchema, dialect: CsvDialect
) -> ColumnBatch | None:
    """Read ``data`` (whole records, the first starting on ``first_line``) as columns, or None
    when the row reader must read it (see the module's doc). ``columnar_ready`` must hold."""
    if data.startswith(b"\xef\xbb\xbf"):
        return None  # the parser would drop a BOM the row reader keeps (mid-file, in a field)
    spans = scan_records(data, first_line, dialect)
    if spans is None:
        return None
    encoding, width = dialect.encoding, len(schema.columns)
    errors: list[RecordError] = []
    bad = np.zeros(len(spans), dtype=bool)
    _, undecodable = _decode(data, encoding)
    if undecodable:
        owners = np.searchsorted(spans.starts, undecodable, side="right") - 1
        for i in sorted(set(owners[owners >= 0].tolist())):
            record = data[spans.starts[i] : spans.ends[i]]
            try:
                split_record(record, dialect)
            except MalformedRecord as exc:
                errors.append(
                    RecordError(int(spans.lines[i]), str(exc), raw_text(record, encoding), exc.kind)
                )
                bad[i] = True
    if (bad & (spans.fields != width)).any():
        return None  # the parser would hand such a record's undecodable text to skip()
    for i in np.flatnonzero((spans.fields != width) & ~bad).tolist():
        record = data[spans.starts[i] : spans.ends[i]]
        reason = field_count_reason(width, int(spans.fields[i]))
        errors.append(
            RecordError(int(spans.lines[i]), reason, raw_text(record, encoding), "field_count")
        )
        bad[i] = True
    counted = spans.fields == width  # what the parser reads (the others it skips)
    good = np.flatnonzero(~bad)
    lines = spans.lines[good]
    try:
        if counted.any():
            columns, skipped = _parse(data, width, dialect)
            if len(columns[0]) != int(counted.sum()) or skipped != len(spans) - len(columns[0]):
                return None  # pragma: no cover  # the scan and the parser disagree: never seen
            if len(good) != len(columns[0]):  # leave out the records with undecodable bytes
                keep = pa.array(~bad[counted])
                columns = [column.filter(keep) for column in columns]
        else:
            columns = [pa.array([], pa.string())] * width
        arrays, failures = convert_table(schema, columns, dialect.nulls)
    except (pa.ArrowInvalid, RowReaderNeeded):
        return None
    if failures:
        for i, reason in failures.items():
            record = data[int(spans.starts[good[i]]) : int(spans.ends[good[i]])]
            errors.append(RecordError(int(lines[i]), reason, raw_text(record, encoding), "value"))
        keep = np.ones(len(good), dtype=bool)
        keep[list(failures)] = False
        arrays = [array.filter(pa.array(keep)) for array in arrays]
        columns = [column.filter(pa.array(keep)) for column in columns]
        lines = lines[keep]
    errors.sort()
    return ColumnBatch(pa.table(arrays, names=list(schema.names)), lines, errors, columns, schema)
