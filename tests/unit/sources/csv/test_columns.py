"""Tests of the columnar CSV reader: a batch reads exactly as the row reader reads it, or not at all.

``read_columns`` may decline a batch (None: the row reader reads it); when it does not, its lines,
errors and values must be the row reader's for the same byte range, value for value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_batch.core.source import Sizing
from parallel_batch.demo.csv_file import write_customers_csv
from parallel_batch.sources.csv.columns import ColumnBatch, columnar_ready, read_columns
from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.planner import FileChunk, plan_csv_chunks, plan_ranges
from parallel_batch.sources.csv.reader import read_csv_chunk
from parallel_batch.sources.csv.records import CsvBatch
from parallel_batch.sources.csv.schema import CUSTOMERS_SCHEMA, CsvColumn, CsvSchema
from parallel_batch.sources.csv.source import CsvSource
from tests.unit.sources.csv.csv_cases import SWAP, csv_bytes
from tests.unit.sources.csv.test_reader import TEXT3, TYPED, TYPED_FIELDS

SWAPPED = CsvDialect(";", "'")
UNQUOTED = CsvDialect(quotechar=None)
DEMO_ROWS = 30_000


def _row_batch(path: Path, ref: FileChunk, schema: CsvSchema, dialect: CsvDialect) -> CsvBatch:
    """What the row reader reads of the range: one batch (none for blank lines only)."""
    batches = list(read_csv_chunk(path, ref, schema, batch_rows=1 << 30, dialect=dialect))
    assert len(batches) <= 1
    return batches[0] if batches else CsvBatch()


def _rows(found: ColumnBatch) -> list[tuple[Any, ...]]:
    return list(zip(*[column.to_pylist() for column in found.table.columns], strict=True))


def _types(rows: list[tuple[Any, ...]]) -> list[list[type]]:
    return [[type(value) for value in row] for row in rows]


def _compare(
    path: Path, data: bytes, ref: FileChunk, schema: CsvSchema, dialect: CsvDialect
) -> tuple[ColumnBatch | None, CsvBatch]:
    """Read the range ``ref`` of the file (whose bytes are ``data``) both ways; unless the
    columnar reader declines, assert it reads what the row reader reads."""
    found = read_columns(data[ref.start : ref.end], ref.first_line, schema, dialect)
    want = _row_batch(path, ref, schema, dialect)
    if found is not None:
        where = f"range {ref} of {data[ref.start : ref.end]!r}"
        assert found.table.column_names == list(schema.names), where
        assert found.lines.tolist() == want.lines, where
        assert found.errors == want.errors, where
        rows = _rows(found)
        assert rows == want.values, where
        assert _types(rows) == _types(want.values), where
        assert len(found) == len(want), where
    return found, want


def _planned_ranges(
    path: Path, *, has_header: bool, dialect: CsvDialect, chunks: int, step: int
) -> list[FileChunk]:
    """The file's batches: its chunks, each cut into ranges of about ``step`` bytes."""
    ranges: list[FileChunk] = []
    for chunk in plan_csv_chunks(path, chunks=chunks, has_header=has_header, dialect=dialect):
        ranges.extend(plan_ranges(path, chunk, step_bytes=step, dialect=dialect)[0])
    return ranges


def _whole(
    tmp_path: Path,
    data: bytes,
    schema: CsvSchema,
    *,
    dialect: CsvDialect = DEFAULT_DIALECT,
    columnar: bool | None,
    first_line: int = 1,
) -> CsvBatch:
    """Read all of ``data`` (no header) as one batch both ways: assert the columnar reader
    reads it (``columnar``), declines it (not ``columnar``) or either (None), and what it reads
    is the row reader's. Returns the row reader's batch."""
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    found, want = _compare(path, data, FileChunk(0, len(data), first_line), schema, dialect)
    if columnar is not None:
        assert (found is not None) is columnar, f"read_columns gave {found!r}"
    return want


def _outcome(batch: CsvBatch) -> list[tuple[int, Any]]:
    """Each record's line with its values, or its error's reason, in file order."""
    items: list[tuple[int, Any]] = [*batch.records, *((e.line, e.reason) for e in batch.errors)]
    return sorted(items, key=lambda item: item[0])


# ---------------------------------------------------------------------------------------------
# The demo file


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "customers.csv"
    write_customers_csv(path, DEMO_ROWS, bad_every=100)
    return path


def _demo_batches(path: Path, dialect: CsvDialect) -> tuple[list[ColumnBatch], list[CsvBatch]]:
    """Every batch of the file (about 2,000 records each) read both ways, compared."""
    source = CsvSource(str(path), CUSTOMERS_SCHEMA, dialect=dialect).planned()
    entry = source.plan(None, Sizing(chunks=1, chunk_size=None, max_chunks=1))[0]
    refs = list(source.chunk_reader(None, entry).batches(None, 2_000))
    assert len(refs) >= 10
    data = path.read_bytes()
    columns: list[ColumnBatch] = []
    rows: list[CsvBatch] = []
    for ref in refs:
        chunk = FileChunk(ref.start, ref.end, ref.first_line)
        found, want = _compare(path, data, chunk, CUSTOMERS_SCHEMA, dialect)
        assert found is not None, f"batch {ref} was not read as columns"
        columns.append(found)
        rows.append(want)
    return columns, rows


def _assert_demo_read(columns: list[ColumnBatch], rows: list[CsvBatch], text: bytes) -> None:
    """The batches hold every record, every kind of bad one, and multi-line records."""
    assert b"\r\n" in text
    assert sum(map(len, rows)) == DEMO_ROWS
    reasons = [error.reason for batch in columns for error in batch.errors]
    assert len(reasons) == DEMO_ROWS // 100
    for start in ("expected 6 fields", "amount: ", "created_at: ", "email: ", "invalid UTF-8"):
        assert any(reason.startswith(start) for reason in reasons), start
    notes = [note for batch in columns for note in batch.table.column("note").to_pylist()]
    assert any(note and "\n" in note for note in notes)  # records that span lines
    lines = [line for batch in columns for line in batch.lines.tolist()]
    assert lines == sorted(lines)
    assert lines[-1] > DEMO_ROWS  # the lines of the multi-line records are counted


def test_demo_file_reads_as_columns_exactly(demo_file: Path) -> None:
    """Test that every batch of the demo file (every kind of bad record, quoted newlines, CRLF)
    reads as columns, giving the row reader's lines, errors and values."""
    columns, rows = _demo_batches(demo_file, DEFAULT_DIALECT)
    _assert_demo_read(columns, rows, demo_file.read_bytes())


def test_demo_file_in_another_dialect_reads_as_columns_exactly(
    demo_file: Path, tmp_path: Path
) -> None:
    """Test that the demo file with ``,``/``;`` and ``"``/``'`` swapped, read in
    CsvDialect(";", "'"), reads as columns too, giving the row reader's results."""
    path = tmp_path / "swapped.csv"
    path.write_bytes(demo_file.read_bytes().translate(SWAP))
    columns, rows = _demo_batches(path, SWAPPED)
    _assert_demo_read(columns, rows, path.read_bytes())


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=csv_bytes(max_records=20),
    how=st.sampled_from(["default", "swapped", "unquoted"]),
    chunks=st.integers(1, 4),
    step=st.integers(1, 80),
)
def test_any_text_batch_reads_as_the_row_reader_or_not_at_all(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, bool],
    how: str,
    chunks: int,
    step: int,
) -> None:
    """Test that every batch of awkward CSV bytes (text columns), in the default dialect, the
    swapped one or one without quoting, is either declined or read exactly as the row reader
    reads it."""
    data, has_header = case
    dialect = {"default": DEFAULT_DIALECT, "swapped": SWAPPED, "unquoted": UNQUOTED}[how]
    if how == "swapped":
        data = data.translate(SWAP)
    path = tmp_path_factory.mktemp("text") / "data.csv"
    path.write_bytes(data)
    ranges = _planned_ranges(path, has_header=has_header, dialect=dialect, chunks=chunks, step=step)
    for ref in ranges:
        _compare(path, data, ref, TEXT3, dialect)


# Fields beyond TYPED_FIELDS: the fast paths' edges, the slow path's spellings, NULL, quoting.
MORE_FIELDS = st.sampled_from(
    [
        "NULL",
        "2024-02-29T23:59:59Z",
        "2024-01-01T00:00:00-05:00",
        "2024-01-01T00:00:00.5Z",
        "2024-01-01 08:30:00",
        "2023-02-29T00:00:00Z",
        "+12",
        "-0",
        "9223372036854775807",
        ".5",
        "-0.25",
        "12345678901234567890.12345678901234567",
        "a\u00a0b@c.d",
        "x,y",
        "l1\nl2",
        "l1\r\nl2",
    ]
)
NULL_DIALECTS = st.sampled_from(
    [DEFAULT_DIALECT, CsvDialect(null_values=("NULL", "")), CsvDialect(null_values=("NULL",))]
)


@st.composite
def typed_bytes(draw: st.DrawFn) -> bytes:
    """Well-formed CSV bytes of typed fields (each maybe quoted): the wrong number of fields,
    bad values, blank lines, CRLF, no final line ending; never malformed quoting."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    records: list[str] = []
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.integers(0, 12)) == 0:
            records.append("")  # a blank line
            continue
        fields = draw(st.lists(st.one_of(TYPED_FIELDS, MORE_FIELDS), min_size=4, max_size=6))
        quoted = draw(st.lists(st.booleans(), min_size=len(fields), max_size=len(fields)))
        records.append(",".join(f'"{f}"' if q else f for f, q in zip(fields, quoted, strict=True)))
    text = newline.join(records)
    final: bool = draw(st.booleans())
    if records and final:
        text += newline  # a final line ending, or not
    return text.encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=typed_bytes(),
    dialect=NULL_DIALECTS,
    chunks=st.integers(1, 3),
    step=st.integers(1, 200),
)
def test_any_typed_batch_reads_as_columns_as_the_row_reader(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    dialect: CsvDialect,
    chunks: int,
    step: int,
) -> None:
    """Test that every batch of well-formed typed CSV (bad values and field counts included) is
    read as columns, exactly as the row reader reads it."""
    path = tmp_path_factory.mktemp("typed") / "data.csv"
    path.write_bytes(data)
    ranges = _planned_ranges(path, has_header=False, dialect=dialect, chunks=chunks, step=step)
    for ref in ranges:
        found, _ = _compare(path, data, ref, TYPED, dialect)
        assert found is not None, f"range {ref} of {data[ref.start : ref.end]!r} declined"


def test_clean_typed_file_is_never_declined(tmp_path: Path) -> None:
    """Test that a clean typed file (quoted commas and newlines, CRLF, a header) reads as columns
    in every batch, with the row reader's values."""
    lines = ["i,d,e,t,s"]
    for i in range(600):
        note = f'"note {i}, with ""quotes""\r\nand a second line"' if i % 7 == 0 else f"n{i}"
        lines.append(
            f"{i - 300},{i}.{i % 100:02d},u{i}@example.com,"
            f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T{i % 24:02d}:{i % 60:02d}:00"
            f"{'Z' if i % 3 else '+02:00'},{note}"
        )
    data = ("\r\n".join(lines) + "\r\n").encode()
    path = tmp_path / "clean.csv"
    path.write_bytes(data)
    ranges = _planned_ranges(path, has_header=True, dialect=DEFAULT_DIALECT, chunks=3, step=2_000)
    assert len(ranges) > 10
    records = 0
    for ref in ranges:
        found, _ = _compare(path, data, ref, TYPED, DEFAULT_DIALECT)
        assert found is not None, f"batch {ref} declined"
        assert not found.errors
        records += found.table.num_rows
    assert records == 600


# ---------------------------------------------------------------------------------------------
# Edge cases: structure


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b'1,2,3\n4,a"b,c\n', None, id="quote after text in a bare field"),
        pytest.param(
            b'1,2,3\n"a"b,c,d\n', "malformed CSV: text after a closing quote", id="text after quote"
        ),
        pytest.param(
            b"1,2,3\na,b\rc,d\n",
            "malformed CSV: a carriage return outside quotes",
            id="bare carriage return",
        ),
        pytest.param(b"1,2,3\na,b,c\r", None, id="bare carriage return at the end"),
        pytest.param(
            b'1,2,3\na,b,"c\n', "malformed CSV: a quoted field is not closed", id="quote left open"
        ),
    ],
)
def test_what_only_the_row_reader_reads_is_declined(
    tmp_path: Path, data: bytes, reason: str | None
) -> None:
    """Test that quoting the C++ parser would read otherwise (a quote inside a bare field, text
    after a closing quote, a bare carriage return, a quote left open) is declined."""
    want = _whole(tmp_path, data, TEXT3, columnar=False)
    assert want.lines[0] == 1
    if reason is None:
        assert not want.errors
    else:
        assert [(e.line, e.reason) for e in want.errors] == [(2, reason)]


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    """Test that blank lines (LF and CRLF) between records are skipped, and the records after
    them keep their true lines."""
    data = b"a,b,c\n\n1,2,3\r\n\r\n\n4,5,6\n\n\r\n7,8,9\r\n"
    want = _whole(tmp_path, data, TEXT3, columnar=True, first_line=10)
    assert want.lines == [10, 12, 15, 18]


def test_blank_lines_only(tmp_path: Path) -> None:
    """Test that a batch of blank lines only is read as no records (or declined)."""
    want = _whole(tmp_path, b"\n\r\n\n", TEXT3, columnar=None)
    assert len(want) == 0


def test_last_record_without_line_ending(tmp_path: Path) -> None:
    """Test that the last record counts without a line ending, a quoted newline in it."""
    want = _whole(tmp_path, b'a,b,c\r\n1,2,3\n4,"5\n",6', TEXT3, columnar=True)
    assert _outcome(want) == [(1, ("a", "b", "c")), (2, ("1", "2", "3")), (3, ("4", "5\n", "6"))]


def test_escaped_quotes_and_empty_quoted_fields(tmp_path: Path) -> None:
    """Test that doubled quotes and empty quoted fields read as the csv module reads them."""
    data = b'a,"b""",c\n"",,"""x"""\n"a,""b""\r\nc",d,""\n'
    want = _whole(tmp_path, data, TEXT3, columnar=True)
    assert _outcome(want) == [
        (1, ("a", 'b"', "c")),
        (2, (None, None, '"x"')),
        (3, ('a,"b"\r\nc', "d", None)),
    ]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"a,b\n", id="too few fields"),
        pytest.param(b"a,b,c,d\n", id="too many fields"),
        pytest.param(b"a,\xff,c\n", id="undecodable"),
        pytest.param(b"a,b\n1,\xff,3\n", id="too few and undecodable"),
    ],
)
def test_a_batch_of_bad_records_only(tmp_path: Path, data: bytes) -> None:
    """Test that a batch whose every record is an error reads as those errors (or is
    declined), text columns or not."""
    for schema in (TEXT3, TYPED):
        want = _whole(tmp_path, data, schema, columnar=None)
        assert not want.lines
        assert want.errors


def test_undecodable_bytes_and_field_counts_among_good_records(tmp_path: Path) -> None:
    """Test that undecodable records and wrong field counts are errors at their lines, as the
    row reader words them, and the good records around them read."""
    data = b'1,2,3\n"x\n\xffy",b,c\n4,5\n6,7,8,9\n"\xe6\x9d\x8e",\xc3\xa9,z\r\n'
    want = _whole(tmp_path, data, TEXT3, columnar=True)
    assert _outcome(want) == [
        (1, ("1", "2", "3")),
        (2, "invalid UTF-8: byte 0xff at byte 4 of the record"),
        (4, "expected 3 fields, found 2"),
        (5, "expected 3 fields, found 4"),
        (6, ("李", "é", "z")),
    ]


def test_undecodable_record_with_a_wrong_field_count(tmp_path: Path) -> None:
    """Test that a record with both an undecodable byte and a wrong number of fields is its
    encoding error, among good records (declined or read as the row reader reads it)."""
    want = _whole(tmp_path, b"1,2,3\na,\xff\n4,5,6\n", TEXT3, columnar=None)
    assert _outcome(want) == [
        (1, ("1", "2", "3")),
        (2, "invalid UTF-8: byte 0xff at byte 3 of the record"),
        (3, ("4", "5", "6")),
    ]


def test_a_dialect_without_quoting(tmp_path: Path) -> None:
    """Test that without a quote character quotes are plain text and every line ending ends a
    record, tab-delimited or not."""
    data = b'a,"b,c\n"x",y,"z"\r\n'
    want = _whole(tmp_path, data, TEXT3, dialect=UNQUOTED, columnar=True)
    assert _outcome(want) == [(1, ("a", '"b', "c")), (2, ('"x"', "y", '"z"'))]
    tabs = CsvDialect("\t", None)
    want = _whole(tmp_path, data.replace(b",", b"\t"), TEXT3, dialect=tabs, columnar=True)
    assert _outcome(want) == [(1, ("a", '"b', "c")), (2, ('"x"', "y", '"z"'))]


# ---------------------------------------------------------------------------------------------
# Edge cases: values


def _one_value(
    tmp_path: Path, kind: Any, text: str, *, columnar: bool | None = True
) -> tuple[Any, ...] | str:
    """Read ``text`` as a field of ``kind`` (after a record that takes the fast path) both
    ways; return the row reader's values or reason for it."""
    schema = CsvSchema([CsvColumn("id", "int", required=True), CsvColumn("v", kind)])
    fast = {
        "timestamp": "2024-01-01T00:00:00Z",
        "decimal": "1.25",
        "int": "3",
        "email": "x@y.z",
    }[kind]
    data = f"1,{fast}\r\n2,{text}\r\n".encode()
    want = _whole(tmp_path, data, schema, columnar=columnar)
    [(_, first), (line, second)] = _outcome(want)
    assert first[0] == 1
    assert line == 2
    return second[1] if isinstance(second, tuple) else second


def _zone(hours: int, minutes: int = 0) -> timezone:
    return timezone(timedelta(hours=hours, minutes=minutes))


BAD_TIMESTAMP = "v: not an ISO-8601 timestamp"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),  # a leap day
        ("2023-02-29T00:00:00Z", BAD_TIMESTAMP),
        ("2024-01-01T24:00:00Z", BAD_TIMESTAMP),
        ("2024-13-01T00:00:00Z", BAD_TIMESTAMP),
        ("2024-01-01T00:00:60Z", BAD_TIMESTAMP),
        ("2024-01-01T00:00:00+23:59", datetime(2024, 1, 1, tzinfo=_zone(23, 59))),
        ("2024-01-01T00:00:00+24:00", BAD_TIMESTAMP),
        ("2024-01-01T00:00:00-05:00", datetime(2024, 1, 1, tzinfo=_zone(-5))),
        ("2024-01-01T00:00:00", datetime(2024, 1, 1, tzinfo=UTC)),  # naive: UTC
        # the slow path: spellings datetime.fromisoformat takes beyond the fast one
        ("2024-01-01T00:00:00.250Z", datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)),
        ("2024-05-01 08:30:00", datetime(2024, 5, 1, 8, 30, tzinfo=UTC)),
        ("2024-05-01T08:30:00.5+02:00", datetime(2024, 5, 1, 8, 30, 0, 500000, tzinfo=_zone(2))),
        ("yesterday", BAD_TIMESTAMP),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_timestamps(tmp_path: Path, text: str, value: Any) -> None:
    """Test that a timestamp field reads as columns, as the row reader reads it (its value or
    its error), on the fast path or the slow one."""
    assert _one_value(tmp_path, "timestamp", text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # valid local times whose UTC instant is before year 1 or after year 9999
        ("0001-01-01T00:00:00+05:00", datetime(1, 1, 1, tzinfo=_zone(5))),
        ("0001-01-01 00:00:00+05:00", datetime(1, 1, 1, tzinfo=_zone(5))),
        ("9999-12-31T23:59:59-05:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=_zone(-5))),
    ],
)
def test_timestamps_beyond_the_utc_range(tmp_path: Path, text: str, value: Any) -> None:
    """Test that a timestamp whose UTC instant Python cannot hold is declined or read as the row
    reader reads it."""
    assert _one_value(tmp_path, "timestamp", text, columnar=None) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1.5", Decimal("1.5")),
        ("-0.25", Decimal("-0.25")),
        (".5", Decimal("0.5")),
        ("1.", Decimal(1)),
        ("1e3", Decimal(1000)),
        ("+1.5", Decimal("1.5")),
        ("-0", Decimal(0)),
        ('"1,000.00"', "v: not a decimal number"),
        ("1.0.0", "v: not a decimal number"),
        ("NaN", "v: not a finite decimal number"),
        ("-Infinity", "v: not a finite decimal number"),
        ("\u0661.5", "v: not a finite decimal number"),
        (
            "12345678901234567890.12345678901234567",
            Decimal("12345678901234567890.12345678901234567"),
        ),
        ("123456789012345678901234.5", Decimal("123456789012345678901234.5")),
        ("0.000000000000000000001", Decimal("1e-21")),
    ],
)
def test_decimals(tmp_path: Path, text: str, value: Any) -> None:
    """Test that a decimal field reads as columns, as the row reader reads it."""
    assert _one_value(tmp_path, "decimal", text) == value


def test_decimals_arrow_cannot_hold(tmp_path: Path) -> None:
    """Test that a decimal beyond Arrow's precision is declined or read as the row reader
    reads it."""
    assert _one_value(tmp_path, "decimal", "1E+100", columnar=None) == Decimal("1E+100")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("+12", 12),
        ("-0", 0),
        ("1_000", 1000),
        (" 7", 7),
        ("123456789012345678", 123456789012345678),  # 18 digits: the fast path
        ("9223372036854775807", 2**63 - 1),  # 19 digits: the slow path
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", "v: integer out of the 64-bit range"),
        ("-9223372036854775809", "v: integer out of the 64-bit range"),
        ("99999999999999999999", "v: integer out of the 64-bit range"),
        ("\u0661\u0662", "v: not an integer"),  # Arabic-Indic digits: int() takes them
        ("1.0", "v: not an integer"),
    ],
)
def test_ints(tmp_path: Path, text: str, value: Any) -> None:
    """Test that an int field reads as columns, as the row reader reads it."""
    assert _one_value(tmp_path, "int", text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a@b", "a@b"),
        ("a\u00a0b@c.d", "v: not an email address"),  # a non-breaking space
        ("a\u3000b@c.d", "v: not an email address"),  # an ideographic space
        ("a\u0085b@c.d", "v: not an email address"),  # NEL
        ("a@b@c", "v: not an email address"),
        ("a.b.c", "v: email address without @"),
        ("zoë@exämple.com", "zoë@exämple.com"),
    ],
)
def test_emails(tmp_path: Path, text: str, value: Any) -> None:
    """Test that an email field reads as columns, as the row reader reads it (Python's
    whitespace, not ASCII's, is refused)."""
    assert _one_value(tmp_path, "email", text) == value


NULLS_SCHEMA = CsvSchema(
    [CsvColumn("a", "text", required=True), CsvColumn("b", "int"), CsvColumn("c", "text")]
)


def test_null_spellings_of_the_dialect(tmp_path: Path) -> None:
    """Test that a dialect's NULL spellings read as NULL, and as an error in a required column."""
    data = b'x,1,y\nNULL,2,z\ny,NULL,NULL\n"NULL",,\nz,,\n'
    dialect = CsvDialect(null_values=("NULL", ""))
    want = _whole(tmp_path, data, NULLS_SCHEMA, dialect=dialect, columnar=True)
    assert _outcome(want) == [
        (1, ("x", 1, "y")),
        (2, "a: a value is required"),
        (3, ("y", None, None)),
        (4, "a: a value is required"),
        (5, ("z", None, None)),
    ]


def test_empty_text_when_empty_is_not_null(tmp_path: Path) -> None:
    """Test that an empty field of a text column is the empty string when the dialect's NULL
    spellings leave it out (a required one included), and NULL in other columns."""
    data = b',1,\n"",NULL,x\nNULL,3,x\n'
    dialect = CsvDialect(null_values=("NULL",))
    want = _whole(tmp_path, data, NULLS_SCHEMA, dialect=dialect, columnar=True)
    assert _outcome(want) == [(1, ("", 1, "")), (2, ("", None, "x")), (3, "a: a value is required")]


# ---------------------------------------------------------------------------------------------
# columnar_ready


def test_columnar_ready() -> None:
    """Test that the demo's schema is ready in the default dialect, and that a non-UTF-8
    encoding and uuid or json columns are not, with the reason."""
    assert columnar_ready(CUSTOMERS_SCHEMA, DEFAULT_DIALECT) is None
    assert columnar_ready(CUSTOMERS_SCHEMA, SWAPPED) is None
    latin = columnar_ready(CUSTOMERS_SCHEMA, CsvDialect(encoding="latin-1"))
    assert latin is not None
    assert "UTF-8" in latin
    assert "iso8859-1" in latin
    for kind in ("uuid", "json"):
        schema = CsvSchema([CsvColumn("id", "int"), CsvColumn("x", kind)])
        reason = columnar_ready(schema, DEFAULT_DIALECT)
        assert reason is not None
        assert kind in reason
    both = CsvSchema([CsvColumn("u", "uuid"), CsvColumn("j", "json")])
    assert columnar_ready(both, DEFAULT_DIALECT) == (
        "the columnar reader does not convert json, uuid columns"
    )


def test_a_bom_at_the_start_of_a_batch_is_declined(tmp_path: Path) -> None:
    """Test that a batch starting with a UTF-8 BOM (mid-file: the planner skips the file's own)
    is declined: the C++ parser would drop it, the row reader keeps it in the first field."""
    schema = CsvSchema([CsvColumn("id", "int"), CsvColumn("name")])
    want = _whole(tmp_path, b"\xef\xbb\xbf5,a\n6,b\n", schema, columnar=False)
    assert [(e.line, e.reason) for e in want.errors] == [(1, "id: not an integer")]
    two = CsvSchema([CsvColumn("a"), CsvColumn("b")])
    text = _whole(tmp_path, b"\xef\xbb\xbfx,a\n", two, columnar=False)
    assert text.values == [("\ufeffx", "a")]


def test_python_space_is_what_python_s_regex_calls_a_space() -> None:
    """Test that PYTHON_SPACE, the class the email kind's RE2 pattern (and the demo's
    check_arrow) spell Python's ``\\s`` with, matches exactly the characters ``re``'s ``\\s``
    does, all of Unicode through."""
    import re
    import sys

    import pyarrow as pa
    import pyarrow.compute as pc

    from parallel_batch.sources.csv.columns_convert import PYTHON_SPACE

    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    matched = pc.match_substring_regex(pa.array(chars), f"^[{PYTHON_SPACE}]$").to_pylist()
    assert {c for c, m in zip(chars, matched, strict=True) if m} == {
        c for c in chars if re.fullmatch(r"\s", c)
    }


@st.composite
def timestamp_text(draw: st.DrawFn) -> str:
    """A timestamp as a file may spell it: every part in and a little out of its range, a T or
    a space between date and time, a fraction of 0-7 digits, no zone, Z or an offset."""

    def digits(width: int, top: int) -> str:
        return str(draw(st.integers(0, top))).zfill(width)

    date = f"{digits(4, 9999)}-{digits(2, 13)}-{digits(2, 32)}"
    time = f"{digits(2, 24)}:{digits(2, 60)}:{digits(2, 60)}"
    fraction = "".join(draw(st.lists(st.sampled_from("0123456789"), max_size=7)))
    zone = draw(
        st.one_of(
            st.just(""),
            st.just("Z"),
            st.builds(lambda s, h, m: f"{s}{h}:{m}", st.sampled_from("+-"),
                      st.integers(0, 24).map(lambda v: str(v).zfill(2)),
                      st.integers(0, 60).map(lambda v: str(v).zfill(2))),
        )
    )  # fmt: skip
    return f"{date}{draw(st.sampled_from('T '))}{time}{'.' + fraction if fraction else ''}{zone}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(timestamp_text(), min_size=1, max_size=40))
def test_any_timestamp_reads_as_the_row_reader_reads_it(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str]
) -> None:
    """Test that the NumPy reading of timestamps (fraction, zone and separator found from each
    field's end) gives what datetime.fromisoformat gives, or its reason, for any mix of valid
    and invalid spellings."""
    schema = CsvSchema([CsvColumn("at", "timestamp")])
    data = "".join(f"{text}\n" for text in texts).encode()
    _whole(tmp_path_factory.mktemp("ts"), data, schema, columnar=None)
