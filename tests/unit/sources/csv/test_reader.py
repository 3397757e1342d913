"""Tests of the CSV chunk reader: every record comes out once, as a record or an error, at its line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_batch.exceptions import CsvHeaderError
from parallel_batch.sources.csv import planner, segments
from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.planner import FileChunk, plan_csv_chunks
from parallel_batch.sources.csv.reader import read_csv_chunk, read_csv_header
from parallel_batch.sources.csv.records import (
    RAW_MAX_CHARS,
    CsvRecord,
    RecordError,
    parse_record,
)
from parallel_batch.sources.csv.schema import CUSTOMERS_SCHEMA, CsvColumn, CsvSchema
from tests.unit.sources.csv.csv_cases import SWAP, SWAP_TEXT, csv_bytes, oracle_records

TEXT3 = CsvSchema([CsvColumn("a"), CsvColumn("b"), CsvColumn("c")])
HEADER = b"id,name,email,amount,note,created_at\r\n"


def _write(tmp_path: Path, data: bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _read_all(
    path: Path,
    schema: CsvSchema,
    *,
    chunks: int = 1,
    batch_rows: int = 1000,
    has_header: bool = True,
) -> list[CsvRecord | RecordError]:
    """Every record and error of the file, in file order."""
    out: list[CsvRecord | RecordError] = []
    for chunk in plan_csv_chunks(path, chunks=chunks, has_header=has_header):
        for batch in read_csv_chunk(path, chunk, schema, batch_rows=batch_rows):
            assert 0 < len(batch) <= batch_rows
            out.extend(sorted([*batch.records, *batch.errors], key=lambda item: item.line))
    return out


def _expected(data: bytes, has_header: bool, schema: CsvSchema) -> list[CsvRecord | RecordError]:
    """What reading must give: the csv module's records, each parsed on its own."""
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    records = oracle_records(data[start:])
    if has_header:
        records = records[1:]
    parsed = [parse_record(raw, line, schema) for line, _, raw in records]
    return [item for item in parsed if item is not None]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=csv_bytes(max_records=20),
    chunks=st.integers(1, 8),
    batch_rows=st.integers(1, 7),
    block=st.integers(1, 9),
)
def test_every_record_comes_out_once_at_its_line(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, bool],
    chunks: int,
    batch_rows: int,
    block: int,
) -> None:
    """Test that chunked, batched, block-by-block reading equals parsing each record alone."""
    data, has_header = case
    path = _write(tmp_path_factory.mktemp("read"), data)
    with (
        mock.patch.object(planner, "PLAN_BLOCK_BYTES", block),
        mock.patch.object(segments, "READ_BLOCK_BYTES", block),
    ):
        got = _read_all(path, TEXT3, chunks=chunks, batch_rows=batch_rows, has_header=has_header)
    assert got == _expected(data, has_header, TEXT3)


def _swapped_back(item: CsvRecord | RecordError) -> CsvRecord | RecordError:
    if isinstance(item, RecordError):
        return item._replace(raw=item.raw.translate(SWAP_TEXT))
    return item._replace(values=tuple(v and v.translate(SWAP_TEXT) for v in item.values))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=csv_bytes(max_records=20), chunks=st.integers(1, 6), block=st.integers(1, 9))
def test_another_delimiter_and_quote_read_the_same_records(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[bytes, bool], chunks: int, block: int
) -> None:
    """Test that the file with ``,``/``;`` and ``"``/``'`` swapped, read in CsvDialect(";", "'"),
    gives the original's records and errors (fields and raw text swapped back)."""
    data, has_header = case
    path = _write(tmp_path_factory.mktemp("dialect"), data.translate(SWAP))
    dialect = CsvDialect(";", "'")
    got: list[CsvRecord | RecordError] = []
    with (
        mock.patch.object(planner, "PLAN_BLOCK_BYTES", block),
        mock.patch.object(segments, "READ_BLOCK_BYTES", block),
    ):
        for chunk in plan_csv_chunks(path, chunks=chunks, has_header=has_header, dialect=dialect):
            for batch in read_csv_chunk(path, chunk, TEXT3, batch_rows=3, dialect=dialect):
                got.extend(sorted([*batch.records, *batch.errors], key=lambda item: item.line))
    assert list(map(_swapped_back, got)) == _expected(data, has_header, TEXT3)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=csv_bytes(max_records=20), batch_rows=st.integers(1, 5), data=st.data())
def test_resume_after_any_batch_gives_the_rest_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, bool],
    batch_rows: int,
    data: st.DataObject,
) -> None:
    """Test that resuming with after_line=end_line of any batch yields exactly the rest."""
    content, has_header = case
    path = _write(tmp_path_factory.mktemp("resume"), content)
    for chunk in plan_csv_chunks(path, chunks=2, has_header=has_header):
        batches = list(read_csv_chunk(path, chunk, TEXT3, batch_rows=batch_rows))
        if not batches:
            continue
        k = data.draw(st.integers(0, len(batches) - 1))
        rest = list(
            read_csv_chunk(
                path, chunk, TEXT3, batch_rows=batch_rows, after_line=batches[k].end_line
            )
        )
        items = [(b.records, b.errors) for b in batches[k + 1 :]]
        assert [(b.records, b.errors) for b in rest] == items


TYPED = CsvSchema(
    [
        CsvColumn("i", "int", required=True),
        CsvColumn("d", "decimal"),
        CsvColumn("e", "email"),
        CsvColumn("t", "timestamp"),
        CsvColumn("s", "text", required=True),
    ]
)
TYPED_FIELDS = st.sampled_from(
    [
        "",
        "0",
        "-12",
        "1_000",
        " 7",
        "x",
        "99999999999999999999",
        "1.50",
        "NaN",
        "1e3",
        "\u0661",  # an Arabic-Indic digit: int() takes it, the reader must not
        "a@b.c",
        "a b@c",
        "no-at",
        "2024-01-01",
        "2024-01-01T10:00:00+05:00",
        "2024-02-30",
        "é",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.lists(TYPED_FIELDS, min_size=4, max_size=6), max_size=30),
    batch_rows=st.integers(1, 12),
)
def test_batch_conversion_matches_one_record_at_a_time(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], batch_rows: int
) -> None:
    """Test that converting column by column gives each record's own result and reason."""
    data = "".join(",".join(row) + "\n" for row in rows).encode()
    path = _write(tmp_path_factory.mktemp("typed"), data)
    got = _read_all(path, TYPED, chunks=3, batch_rows=batch_rows, has_header=False)
    assert got == _expected(data, False, TYPED)


def test_quoted_newlines_crlf_bom_and_non_ascii(tmp_path: Path) -> None:
    """Test a clean file with every awkward feature: values typed, lines true."""
    data = (
        b"\xef\xbb\xbf"
        + HEADER
        + b"1,Zo\xc3\xab,z@example.com,12.50,,2024-05-01T12:00:00+02:00\r\n"
        b'2,"Smith, Ann",a@example.com,-3,"said ""hi""\r\nthen left",2024-05-01T12:00:00Z\r\n'
        b"3,\xe6\x9d\x8e,l@example.com,,note,2024-05-01 08:30:00\r\n"
    )
    got = _read_all(_write(tmp_path, data), CUSTOMERS_SCHEMA, chunks=3)
    plus2 = timezone(timedelta(hours=2))
    assert got == [
        CsvRecord(
            2,
            (
                1,
                "Zoë",
                "z@example.com",
                Decimal("12.50"),
                None,
                datetime(2024, 5, 1, 12, tzinfo=plus2),
            ),
        ),
        CsvRecord(
            3,
            (
                2,
                "Smith, Ann",
                "a@example.com",
                Decimal(-3),
                'said "hi"\r\nthen left',
                datetime(2024, 5, 1, 12, tzinfo=UTC),
            ),
        ),
        CsvRecord(
            5, (3, "李", "l@example.com", None, "note", datetime(2024, 5, 1, 8, 30, tzinfo=UTC))
        ),
    ]


def test_each_kind_of_bad_record_is_an_error_at_its_line(tmp_path: Path) -> None:
    """Test that bad records become errors at their starting lines and cost nothing else."""
    data = HEADER + (
        b"1,a,a@x.io,1.00,,2024-01-01T00:00:00Z\r\n"  # 2: good
        b"2,b,b@x.io,1.00,2024-01-01T00:00:00Z\r\n"  # 3: five fields
        b'3,"c\nc",c@x.io,1.00,,2024-01-01T00:00:00Z,extra\r\n'  # 4-5: seven fields
        b"4,d,d@x.io,1.0.0,,2024-01-01T00:00:00Z\r\n"  # 6: bad amount
        b"5,e,e@x.io,NaN,,2024-01-01T00:00:00Z\r\n"  # 7: not finite
        b"6,f,f@x.io,1.00,,2024-02-30T00:00:00Z\r\n"  # 8: bad timestamp
        b"7,g,g.x.io,1.00,,2024-01-01T00:00:00Z\r\n"  # 9: email without @
        b'8,"h\n\xffh",h@x.io,1.00,,2024-01-01T00:00:00Z\r\n'  # 10-11: undecodable byte
        b"x9,i,i@x.io,1.00,,2024-01-01T00:00:00Z\r\n"  # 12: bad int
        b",j,j@x.io,1.00,,2024-01-01T00:00:00Z\r\n"  # 13: id required
        b'11,"k"k,k@x.io,1.00,,2024-01-01T00:00:00Z\r\n'  # 14: text after a closing quote
        b"12,l\rl,l@x.io,1.00,,2024-01-01T00:00:00Z\r\n"  # 15: bare carriage return
        b"99999999999999999999,m,m@x.io,1,,2024-01-01T00:00:00Z\r\n"  # 16: out of range
        b"14,n,n@x.io,1.00,,2024-01-01T00:00:00Z\r\n"  # 17: good
        b'15,"o,o@x.io,1.00,,2024-01-01T00:00:00Z\r\n'  # 18: quote never closed
    )
    path = _write(tmp_path, data)
    for chunks in (1, 4, 40):
        for batch_rows in (1, 3, 100):
            got = _read_all(path, CUSTOMERS_SCHEMA, chunks=chunks, batch_rows=batch_rows)
            assert [(item.line, getattr(item, "reason", None)) for item in got] == [
                (2, None),
                (3, "expected 6 fields, found 5"),
                (4, "expected 6 fields, found 7"),
                (6, "amount: not a decimal number"),
                (7, "amount: not a finite decimal number"),
                (8, "created_at: not an ISO-8601 timestamp"),
                (9, "email: email address without @"),
                (10, "invalid UTF-8: byte 0xff at byte 6 of the record"),
                (12, "id: not an integer"),
                (13, "id: a value is required"),
                (14, "malformed CSV: text after a closing quote"),
                (15, "malformed CSV: a carriage return outside quotes"),
                (16, "id: integer out of the 64-bit range"),
                (17, None),
                (18, "malformed CSV: a quoted field is not closed"),
            ]
    errors = [item for item in _read_all(path, CUSTOMERS_SCHEMA) if isinstance(item, RecordError)]
    assert errors[6].raw == '8,"h\n\\xffh",h@x.io,1.00,,2024-01-01T00:00:00Z'
    assert [e.kind for e in errors[:7]] == ["field_count"] * 2 + ["value"] * 4 + ["encoding"]


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    """Test that blank lines yield nothing and the next record keeps its true line."""
    data = b"a,b,c\n\n1,2,3\r\n\r\n\n4,5,6\n\n"
    got = _read_all(_write(tmp_path, data), TEXT3, chunks=3)
    assert got == [CsvRecord(3, ("1", "2", "3")), CsvRecord(6, ("4", "5", "6"))]


def test_last_record_without_line_ending(tmp_path: Path) -> None:
    """Test that the file's last record counts even without a final newline."""
    got = _read_all(_write(tmp_path, b'a,b,c\n1,2,3\n4,"5\n",6'), TEXT3, chunks=2)
    assert got == [CsvRecord(2, ("1", "2", "3")), CsvRecord(3, ("4", "5\n", "6"))]


def test_resume_skips_exactly_what_was_done(tmp_path: Path) -> None:
    """Test that after_line resumes after the checkpointed batch, multi-line records included."""
    lines = [b"a,b,c"] + [b'%d,"x\ny",z' % i for i in range(10)]
    path = _write(tmp_path, b"\n".join(lines) + b"\n")
    [chunk] = plan_csv_chunks(path, chunks=1)
    first = next(read_csv_chunk(path, chunk, TEXT3, batch_rows=4))
    assert [r.line for r in first.records] == [2, 4, 6, 8]
    assert first.end_line == 9
    rest = [
        r.line
        for b in read_csv_chunk(path, chunk, TEXT3, batch_rows=4, after_line=9)
        for r in b.records
    ]
    assert rest == [10, 12, 14, 16, 18, 20]
    middle = [
        r.line
        for b in read_csv_chunk(path, chunk, TEXT3, batch_rows=4, after_line=10)
        for r in b.records
    ]
    assert middle == [12, 14, 16, 18, 20]  # a record that started before the line is done


def test_a_runaway_quote_is_one_too_long_error(tmp_path: Path) -> None:
    """Test that an unclosed quote swallowing the file is one bounded error, not a crash."""
    data = b"a,b,c\n1,2,3\n" + b'4,"' + b"5,6,7\n" * 100
    path = _write(tmp_path, data)
    with (
        mock.patch.object(segments, "MAX_RECORD_BYTES", 64),
        mock.patch.object(segments, "READ_BLOCK_BYTES", 16),
    ):
        got = _read_all(path, TEXT3)
    assert got[0] == CsvRecord(2, ("1", "2", "3"))
    assert len(got) == 2
    assert isinstance(got[1], RecordError)
    assert (got[1].line, got[1].kind) == (3, "too_long")
    assert got[1].reason == "record longer than 64 bytes (a quote left open?)"
    assert len(got[1].raw) <= 64


def test_raw_text_is_truncated(tmp_path: Path) -> None:
    """Test that an error's raw text is cut to RAW_MAX_CHARS."""
    path = _write(tmp_path, b"a,b,c\n" + b"x" * 5000 + b"\n")
    [error] = _read_all(path, TEXT3)
    assert isinstance(error, RecordError)
    assert error.raw == "x" * RAW_MAX_CHARS


def test_header_is_read_and_checked(tmp_path: Path) -> None:
    """Test that the header is read past a BOM and checked against the schema."""
    path = _write(tmp_path, b"\xef\xbb\xbf" + HEADER + b"1,a,a@b.c,1,,2024-01-01\r\n")
    header = read_csv_header(path)
    assert header == list(CUSTOMERS_SCHEMA.names)
    CUSTOMERS_SCHEMA.check_header(header)
    with pytest.raises(
        CsvHeaderError, match=r"does not match the expected columns \['a', 'b', 'c'\]"
    ):
        TEXT3.check_header(header)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),
        (b"\n1,2\n", "blank line"),
        (b"a,\xff\n", "UTF-8"),
    ],
)
def test_unreadable_headers_raise(tmp_path: Path, data: bytes, message: str) -> None:
    """Test that a missing or unreadable header raises CsvHeaderError."""
    with pytest.raises(CsvHeaderError, match=message):
        read_csv_header(_write(tmp_path, data))


def test_arguments_are_checked(tmp_path: Path) -> None:
    """Test that bad arguments fail at the call, before any reading."""
    chunk = FileChunk(0, 1, 1)
    with pytest.raises(ValueError, match="batch_rows must be greater than 0"):
        read_csv_chunk(tmp_path / "missing.csv", chunk, TEXT3, batch_rows=0)
    with pytest.raises(ValueError, match="after_line must not be negative"):
        read_csv_chunk(tmp_path / "missing.csv", chunk, TEXT3, batch_rows=1, after_line=-1)


def test_schema_checks_its_columns() -> None:
    """Test that a schema refuses no columns, duplicate names and unknown kinds."""
    with pytest.raises(ValueError, match="columns must not be empty"):
        CsvSchema([])
    with pytest.raises(ValueError, match="column names must be unique"):
        CsvSchema([CsvColumn("a"), CsvColumn("a")])
    with pytest.raises(ValueError, match="kind must be one of"):
        CsvColumn("a", "complex")  # type: ignore[arg-type]
    assert CUSTOMERS_SCHEMA.header == "id,name,email,amount,note,created_at"
