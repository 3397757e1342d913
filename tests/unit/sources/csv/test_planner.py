"""Tests of the CSV chunk planner (chunks of a file, ranges of a chunk) and the quote scanner it
shares with the reader."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_batch.sources.csv import planner
from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.planner import FileChunk, plan_csv_chunks, plan_ranges
from parallel_batch.sources.csv.scan import QuoteScanner
from tests.unit.sources.csv.csv_cases import SWAP, csv_bytes, oracle_records, oracle_rows

BOM = b"\xef\xbb\xbf"


def _write(tmp_path: Path, data: bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _data_start(data: bytes, has_header: bool) -> int:
    start = len(BOM) if data.startswith(BOM) else 0
    if has_header and start < len(data):
        records = oracle_records(data[start:])
        start += len(records[0][2]) if records else len(data) - start
    return start


def _check_plan(data: bytes, has_header: bool, chunks: list[FileChunk], max_chunks: int) -> None:
    """Assert that the chunks tile the data and cut it only between records, lines exact."""
    start = _data_start(data, has_header)
    if start >= len(data):
        assert chunks == []
        return
    assert 1 <= len(chunks) <= max_chunks
    assert chunks[0].start == start
    assert chunks[-1].end == len(data)
    for before, after in pairwise(chunks):
        assert before.end == after.start
    whole = oracle_rows(data[start:])
    pieces = [row for chunk in chunks for row in oracle_rows(data[chunk.start : chunk.end])]
    assert pieces == whole
    for chunk in chunks:
        assert chunk.first_line == 1 + data[: chunk.start].count(b"\n")
        assert chunk.start < chunk.end


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=csv_bytes(),
    chunks=st.integers(1, 40),
    block=st.integers(1, 9),
    max_chunks=st.integers(1, 50),
)
def test_chunks_concatenate_to_the_whole_file(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, bool],
    chunks: int,
    block: int,
    max_chunks: int,
) -> None:
    """Test that the chunks' records, read apart, are the file's records, with exact lines."""
    data, has_header = case
    path = _write(tmp_path_factory.mktemp("plan"), data)
    with mock.patch.object(planner, "PLAN_BLOCK_BYTES", block):
        plan = plan_csv_chunks(path, chunks=chunks, max_chunks=max_chunks, has_header=has_header)
    _check_plan(data, has_header, plan, max_chunks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=csv_bytes(), chunks=st.integers(1, 20), block=st.integers(1, 9))
def test_another_delimiter_and_quote_plan_the_same_chunks(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[bytes, bool], chunks: int, block: int
) -> None:
    """Test that a file written with ``;`` and ``'`` (the same file with those bytes swapped
    for ``,`` and ``"``) plans exactly as the original does in the default dialect."""
    data, has_header = case
    folder = tmp_path_factory.mktemp("dialect")
    original, swapped = _write(folder, data), _write(folder, data.translate(SWAP), "swapped.csv")
    with mock.patch.object(planner, "PLAN_BLOCK_BYTES", block):
        expected = plan_csv_chunks(original, chunks=chunks, has_header=has_header)
        got = plan_csv_chunks(
            swapped, chunks=chunks, has_header=has_header, dialect=CsvDialect(";", "'")
        )
    assert got == expected


def test_without_quoting_every_newline_ends_a_record(tmp_path: Path) -> None:
    """Test that with no quote character a quote never holds a newline inside a record."""
    data = b'a\tb\n"x\t"y\n"\n' * 50
    path = _write(tmp_path, data)
    plan = plan_csv_chunks(path, chunks=7, has_header=False, dialect=CsvDialect("\t", None))
    assert len(plan) == 7
    for chunk in plan:  # each starts right after a newline, at that line
        assert chunk.start == 0 or data[chunk.start - 1 : chunk.start] == b"\n"
        assert chunk.first_line == 1 + data[: chunk.start].count(b"\n")
    # the default dialect takes "\n" for a quoted newline and plans other boundaries
    assert plan != plan_csv_chunks(path, chunks=7, has_header=False)


def test_quoted_newlines_straddle_every_boundary(tmp_path: Path) -> None:
    """Test that every possible chunk size and count cuts only between records."""
    data = (
        b'id,note\r\n1,"a\r\nb"\r\n2,"x,""y""\nz"\r\n3,plain\r\n4,"\n\n"\r\n'
        b'5,"ends with ""\r\n"""\r\n6,last'
    )
    path = _write(tmp_path, data)
    for size in range(1, len(data) + 1):
        _check_plan(data, True, plan_csv_chunks(path, chunk_bytes=size), 1024)
        _check_plan(data, True, plan_csv_chunks(path, chunks=size), 1024)
    one_per_record = plan_csv_chunks(path, chunk_bytes=1)
    assert [chunk.first_line for chunk in one_per_record] == [2, 4, 6, 7, 10, 12]


def test_chunk_bytes_makes_the_fewest_chunks_of_one_size(tmp_path: Path) -> None:
    """Test that chunk_bytes cuts the data into ceil(size / chunk_bytes) chunks of about one size
    (not chunk_bytes, chunk_bytes, ..., and a small rest that would run alone at the end)."""
    data = b"id,note\n" + b"".join(b"%04d,abcd\n" % i for i in range(100))  # 100 x 10 bytes
    path = _write(tmp_path, data)
    plan = plan_csv_chunks(path, chunk_bytes=300)
    assert [chunk.end - chunk.start for chunk in plan] == [250, 250, 250, 250]
    assert [chunk.first_line for chunk in plan] == [2, 27, 52, 77]
    assert [c.end - c.start for c in plan_csv_chunks(path, chunk_bytes=1000)] == [1000]
    assert [c.end - c.start for c in plan_csv_chunks(path, chunk_bytes=999)] == [500, 500]
    # a chunk's batches are still cut every step: the last one holds the rest
    ranges, _ = plan_ranges(path, plan[0], step_bytes=100)
    assert [r.end - r.start for r in ranges] == [100, 100, 50]


@pytest.mark.parametrize("block", [1, 2, 3, 5, 1 << 20])
def test_block_size_does_not_change_the_plan(tmp_path: Path, block: int) -> None:
    """Test that blocks ending inside quotes (even between the two quotes of "") change nothing."""
    data = b'h\n"a""\n""b"\n""""\n"\n"\nx"y\n"q"\n' * 5
    path = _write(tmp_path, data)
    expected = plan_csv_chunks(path, chunk_bytes=3)
    with mock.patch.object(planner, "PLAN_BLOCK_BYTES", block):
        assert plan_csv_chunks(path, chunk_bytes=3) == expected
    _check_plan(data, True, expected, 1024)


def test_bom_and_header_are_skipped(tmp_path: Path) -> None:
    """Test that the first chunk starts after the BOM and the header, on line 2."""
    data = BOM + b"id,name\r\n1,Zo\xc3\xab\r\n2,Bob\r\n"
    chunks = plan_csv_chunks(_write(tmp_path, data), chunks=1)
    assert chunks == [FileChunk(start=len(BOM) + 9, end=len(data), first_line=2)]


def test_a_header_with_a_quoted_newline(tmp_path: Path) -> None:
    """Test that a header spanning lines is skipped whole and the lines still count."""
    data = b'"i\nd",name\n1,a\n2,b\n'
    chunks = plan_csv_chunks(_write(tmp_path, data), chunks=2)
    assert [c.first_line for c in chunks] == [3, 4]
    assert data[chunks[0].start : chunks[0].end] == b"1,a\n"


def test_without_header(tmp_path: Path) -> None:
    """Test that has_header=False plans from the first byte (after a BOM) on line 1."""
    data = BOM + b"1,a\n2,b\n"
    chunks = plan_csv_chunks(_write(tmp_path, data), chunks=1, has_header=False)
    assert chunks == [FileChunk(start=3, end=len(data), first_line=1)]


@pytest.mark.parametrize(
    "data", [b"", BOM, b"id,name", b"id,name\n", b"id,name\r\n", BOM + b'"id\n",x\r\n']
)
def test_empty_and_header_only_files_have_no_chunks(tmp_path: Path, data: bytes) -> None:
    """Test that an empty or header-only file plans no chunk."""
    assert plan_csv_chunks(_write(tmp_path, data), chunks=4) == []


def test_blank_lines_after_the_header_make_a_chunk(tmp_path: Path) -> None:
    """Test that trailing blank lines still form a chunk (the reader skips them)."""
    chunks = plan_csv_chunks(_write(tmp_path, b"h\n\n\n"), chunks=1)
    assert chunks == [FileChunk(start=2, end=4, first_line=2)]


def test_max_chunks_caps_both_ways_of_asking(tmp_path: Path) -> None:
    """Test that neither chunks nor chunk_bytes yields more than max_chunks."""
    data = b"h\n" + b"".join(b"%d,x\n" % i for i in range(1000))
    path = _write(tmp_path, data)
    by_bytes = plan_csv_chunks(path, chunk_bytes=1, max_chunks=7)
    by_count = plan_csv_chunks(path, chunks=50, max_chunks=7)
    assert len(by_bytes) == 7
    assert by_count == by_bytes
    assert len(plan_csv_chunks(path, chunk_bytes=1, max_chunks=5000)) == 1000
    assert 900 < len(plan_csv_chunks(path, chunk_bytes=1)) <= 1024  # some ranges hold two
    _check_plan(data, True, by_bytes, 7)


def test_chunks_are_even_in_bytes(tmp_path: Path) -> None:
    """Test that chunks=N splits the data into N ranges of nearly equal size."""
    data = b"h\n" + b"".join(b"%06d,some text\n" % i for i in range(10_000))
    chunks = plan_csv_chunks(_write(tmp_path, data), chunks=8)
    sizes = [chunk.size for chunk in chunks]
    assert len(sizes) == 8
    assert max(sizes) - min(sizes) <= 2 * 17  # a record is 17 bytes


def test_long_records_make_fewer_chunks(tmp_path: Path) -> None:
    """Test that a record longer than the chunk spacing yields fewer, never empty, chunks."""
    data = b"h\n" + b'1,"' + b"x\n" * 500 + b'"\n2,y\n'
    chunks = plan_csv_chunks(_write(tmp_path, data), chunks=10)
    assert [(c.first_line, c.size) for c in chunks] == [(2, 1005), (503, 4)]


def test_file_chunk_round_trips_through_json() -> None:
    """Test that to_dict/from_dict survive JSON and the id comes from the range."""
    chunk = FileChunk(start=37, end=1048576, first_line=2)
    data = json.loads(json.dumps(chunk.to_dict()))
    assert data["chunk_id"] == "bytes[37,1048576)"
    assert FileChunk.from_dict(data) == chunk
    assert FileChunk(37, 1048576, 9).chunk_id == chunk.chunk_id


def test_file_chunk_rejects_bad_values() -> None:
    """Test that a chunk checks its range, its line and a mismatched id."""
    with pytest.raises(ValueError, match=r"0 <= start < end"):
        FileChunk(start=5, end=5, first_line=1)
    with pytest.raises(ValueError, match="first_line must be greater than 0"):
        FileChunk(start=0, end=5, first_line=0)
    with pytest.raises(ValueError, match="does not match"):
        FileChunk.from_dict({"chunk_id": "bytes[0,9)", "start": 0, "end": 5, "first_line": 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of chunks or chunk_bytes"),
        ({"chunks": 2, "chunk_bytes": 10}, "give exactly one of chunks or chunk_bytes"),
        ({"chunks": 0}, "chunks must be greater than 0"),
        ({"chunk_bytes": 0}, "chunk_bytes must be greater than 0"),
        ({"chunks": 2, "max_chunks": 0}, "max_chunks must be greater than 0"),
    ],
)
def test_arguments_are_checked(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    """Test that bad arguments fail up front with exact messages."""
    with pytest.raises(ValueError, match=message):
        plan_csv_chunks(_write(tmp_path, b"h\n1\n"), **kwargs)


@settings(max_examples=200, deadline=None)
@given(case=csv_bytes(), cuts=st.lists(st.integers(1, 200), max_size=6))
def test_scanner_finds_the_same_records_whatever_the_blocks(
    case: tuple[bytes, bool], cuts: list[int]
) -> None:
    """Test that record ends found block by block are the csv module's, however cut."""
    data, _ = case
    # The planner skips a BOM before it scans; the csv module would read it as field text.
    data = data.removeprefix(b"\xef\xbb\xbf")
    expected = []
    offset = 0
    for _, _, record in oracle_records(data):
        offset += len(record)
        if record.endswith(b"\n"):
            expected.append(offset)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    scanner = QuoteScanner()
    found = []
    for begin, end in pairwise(points):
        block = data[begin:end]
        outside = scanner.enter(block)
        while outside is not None:
            record_end = scanner.next_record_end(block, outside)
            if record_end is None:
                scanner.leave(block, outside)
                break
            found.append(begin + record_end)
            outside = record_end
    assert found == expected


def _check_ranges(data: bytes, chunk: FileChunk, ranges: list[FileChunk], next_line: int) -> None:
    """Assert that the ranges tile the chunk, start on record boundaries, and know their lines."""
    assert ranges, "a chunk always has at least one range"
    assert ranges[0] == FileChunk(chunk.start, ranges[0].end, chunk.first_line)
    assert ranges[-1].end == chunk.end
    for before, after in pairwise(ranges):
        assert before.end == after.start
    whole = oracle_rows(data[chunk.start : chunk.end])
    pieces = [row for part in ranges for row in oracle_rows(data[part.start : part.end])]
    assert pieces == whole
    for part in ranges:
        assert part.first_line == 1 + data[: part.start].count(b"\n")
    assert next_line == 1 + data[: chunk.end].count(b"\n")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=csv_bytes(max_records=20),
    chunks=st.integers(1, 4),
    step=st.integers(1, 60),
    block=st.integers(1, 9),
)
def test_ranges_tile_each_chunk_on_record_boundaries(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, bool],
    chunks: int,
    step: int,
    block: int,
) -> None:
    """Test that plan_ranges cuts any chunk exactly, between records, with true first lines."""
    data, has_header = case
    path = _write(tmp_path_factory.mktemp("ranges"), data)
    planned = plan_csv_chunks(path, chunks=chunks, has_header=has_header)
    with mock.patch.object(planner, "PLAN_BLOCK_BYTES", block):
        for chunk in planned:
            ranges, next_line = plan_ranges(path, chunk, step_bytes=step)
            _check_ranges(data, chunk, ranges, next_line)


def test_ranges_never_cut_a_quoted_field_near_a_step(tmp_path: Path) -> None:
    """Test that every step size cuts only between records when quoted fields hold newlines
    (CRLF and LF, "" escapes, a field ending right at a newline) around the cut."""
    data = (
        b'id,note\r\n1,"a\r\nb"\r\n2,"x,""y""\nz"\r\n3,plain\r\n4,"\n\n"\r\n'
        b'5,"ends with ""\r\n"""\r\n6,last'
    )
    path = _write(tmp_path, data)
    [chunk] = plan_csv_chunks(path, chunks=1)
    for step in range(1, chunk.size + 1):
        for block in (1, 2, 3, 7, 1 << 20):
            with mock.patch.object(planner, "PLAN_BLOCK_BYTES", block):
                ranges, next_line = plan_ranges(path, chunk, step_bytes=step)
            _check_ranges(data, chunk, ranges, next_line)
    one_per_record, _ = plan_ranges(path, chunk, step_bytes=1)
    assert [r.first_line for r in one_per_record] == [2, 4, 6, 7, 10, 12]
    assert plan_ranges(path, chunk, step_bytes=chunk.size) == ([chunk], 12)


def test_ranges_of_a_chunk_inside_the_file(tmp_path: Path) -> None:
    """Test that a chunk in the middle of the file is cut alone: nothing before or after it is
    read into its ranges, and the line after it is the next chunk's first line."""
    data = b"h\n" + b"".join(b'%d,"line\nbreak"\n' % i for i in range(40))
    path = _write(tmp_path, data)
    _, middle, last = plan_csv_chunks(path, chunks=3)
    ranges, next_line = plan_ranges(path, middle, step_bytes=30)
    _check_ranges(data, middle, ranges, next_line)
    assert next_line == last.first_line
    assert len(ranges) > 3 and all(r.first_line % 2 == 0 for r in ranges)  # records start even


def test_ranges_refuse_a_step_below_one(tmp_path: Path) -> None:
    """Test that plan_ranges checks its step up front."""
    path = _write(tmp_path, b"h\n1\n")
    with pytest.raises(ValueError, match="step_bytes must be greater than 0"):
        plan_ranges(path, FileChunk(2, 4, 2), step_bytes=0)
