"""Tests of the CSV source and its chunk reader: batches on record boundaries, exact lines,
resume from an ``{"offset", "line"}`` checkpoint, split, and the source stored as JSON."""

from __future__ import annotations

import json
import os
import pickle
from itertools import pairwise
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallel_batch.core.source import ReadBatch, Sizing
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources import source_from_dict
from parallel_batch.sources.csv import planner
from parallel_batch.sources.csv import source as csv_source
from parallel_batch.sources.csv.files import FileIdentity
from parallel_batch.sources.csv.planner import FileChunk, plan_csv_chunks
from parallel_batch.sources.csv.records import RecordError, parse_record
from parallel_batch.sources.csv.schema import CsvColumn, CsvSchema
from parallel_batch.sources.csv.source import CsvBatchRef, CsvChunkReader, CsvSource
from tests.unit.sources.csv.csv_cases import csv_bytes, oracle_records

TEXT3 = CsvSchema([CsvColumn("a"), CsvColumn("b"), CsvColumn("c")])
TYPED = CsvSchema([CsvColumn("id", "int", required=True), CsvColumn("note")])


def _write(tmp_path: Path, data: bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _readers(source: CsvSource, chunks: int = 1) -> list[CsvChunkReader]:
    entries = source.plan(None, Sizing(chunks, None, 1024))
    return [source.chunk_reader(None, entry) for entry in entries]


def _items(reader: CsvChunkReader, refs: list[CsvBatchRef]) -> list[tuple[int, Any]]:
    """Each record of the refs in file order: (line, values) or (line, (error_type, message))."""
    out: list[tuple[int, Any]] = []
    for ref in refs:
        batch = reader.read(ref)
        assert batch.lines is not None and len(batch.lines) == len(batch.rows)
        assert [reader.item_key(batch, i) for i in range(len(batch.rows))] == [
            f"line:{line}" for line in batch.lines
        ]
        out.extend(zip(batch.lines, batch.rows, strict=True))
        for letter in batch.errors:
            assert letter.item_key == f"line:{letter.line_number}"
            assert letter.line_number is not None
            out.append((letter.line_number, (letter.error_type, letter.message)))
    return sorted(out, key=lambda item: item[0])


def _expected(data: bytes, has_header: bool, schema: CsvSchema) -> list[tuple[int, Any]]:
    """The csv module's records, each parsed alone, as _items gives them."""
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    records = oracle_records(data[start:])[1 if has_header else 0 :]
    out: list[tuple[int, Any]] = []
    for line, _, raw in records:
        item = parse_record(raw, line, schema)
        if isinstance(item, RecordError):
            out.append((line, (csv_source.READER_ERRORS[item.kind], item.reason)))
        elif item is not None:
            out.append((line, item.values))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=csv_bytes(max_records=20),
    chunks=st.integers(1, 4),
    batch_rows=st.integers(1, 6),
    data=st.data(),
)
def test_batches_read_every_record_once_and_resume_after_any_of_them(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, bool],
    chunks: int,
    batch_rows: int,
    data: st.DataObject,
) -> None:
    """Test that a chunk's batches read each record once at its true line, and that resuming
    from the checkpoint of any batch reads exactly the records after it."""
    content, has_header = case
    path = _write(tmp_path_factory.mktemp("batches"), content)
    got: list[tuple[int, Any]] = []
    with mock.patch.object(csv_source, "MIN_BATCH_BYTES", 1):
        for chunk in plan_csv_chunks(path, chunks=chunks, has_header=has_header):
            reader = CsvChunkReader(str(path), chunk, TEXT3, TEXT3.names, 4.0)
            refs = list(reader.batches(None, batch_rows))
            for before, after in pairwise(refs):
                assert (before.end, before.next_line) == (after.start, after.first_line)
            assert (refs[0].start, refs[-1].end) == (reader.chunk.start, reader.chunk.end)
            got.extend(_items(reader, refs))
            k = data.draw(st.integers(0, len(refs) - 1))
            checkpoint = json.loads(json.dumps(reader.position(refs[k])))
            assert checkpoint == {"offset": refs[k].end, "line": refs[k].next_line}
            resumed = list(reader.batches(checkpoint, batch_rows))
            assert [r.start for r in resumed[:1]] == [r.start for r in refs[k + 1 : k + 2]]
            assert _items(reader, resumed) == _items(reader, refs[k + 1 :])
    assert got == _expected(content, has_header, TEXT3)


def test_resume_from_a_checkpoint_seeks_to_its_offset(tmp_path: Path) -> None:
    """Test that a checkpoint in the middle of a chunk reads on from its offset and line."""
    lines = [b"id,note"] + [b'%d,"x\r\ny"' % i for i in range(1, 11)]
    path = _write(tmp_path, b"\r\n".join(lines) + b"\r\n")
    [reader] = _readers(CsvSource(str(path), TYPED, record_bytes=10.0))  # bytes per record
    with mock.patch.object(csv_source, "MIN_BATCH_BYTES", 1):
        refs = list(reader.batches(None, 3))
        assert [reader.read(ref).lines for ref in refs] == [
            [2, 4, 6],
            [8, 10, 12],
            [14, 16, 18],
            [20],
        ]
        checkpoint = reader.position(refs[1])
        assert checkpoint == {"offset": refs[2].start, "line": 14}
        rest = list(reader.batches(checkpoint, 3))
    assert [[row[0] for row in reader.read(ref).rows] for ref in rest] == [[7, 8, 9], [10]]
    assert list(reader.batches(reader.position(refs[-1]), 3)) == []  # the chunk is done


@pytest.mark.parametrize(
    "checkpoint", [7, "line:7", {"line": 7}, {"offset": 10}, {"after_line": 7}]
)
def test_a_checkpoint_of_another_kind_is_refused(tmp_path: Path, checkpoint: Any) -> None:
    """Test that a checkpoint that is not {"offset", "line"} says to start the job over."""
    path = _write(tmp_path, b"id,note\n1,a\n")
    [reader] = _readers(CsvSource(str(path), TYPED))
    with pytest.raises(ConfigurationError, match="start the job over with full_refresh=true"):
        reader.batches(checkpoint, 10)


def test_read_gives_typed_rows_and_dead_letters_at_their_lines(tmp_path: Path) -> None:
    """Test that a batch holds typed rows and, for bad records, dead letters with the raw text."""
    data = b'id,note\r\n1,"two\r\nlines"\r\nx,bad id\r\n3,"open\r\n\r\n4,c\r\n'
    path = _write(tmp_path, data)
    [reader] = _readers(CsvSource(str(path), TYPED))
    [ref] = list(reader.batches(None, 100))
    batch = reader.read(ref)
    assert (batch.rows, batch.lines) == ([(1, "two\r\nlines")], [2])
    assert [(e.item_key, e.line_number, e.error_type, e.message) for e in batch.errors] == [
        ("line:4", 4, "CsvValueError", "id: not an integer"),
        ("line:5", 5, "CsvQuotingError", "malformed CSV: a quoted field is not closed"),
    ]
    assert batch.errors[0].payload == {"raw": "x,bad id"}
    assert batch.read == 3


def test_split_cuts_a_batch_into_at_most_parts_on_record_boundaries(tmp_path: Path) -> None:
    """Test that split covers the batch exactly with at most `parts` batches, each on a record
    boundary with its true lines, and refuses to split a single record."""
    data = b"id,note\n" + b"".join(
        b'%d,"note\nof %d"\n' % (i, i) if i % 3 == 0 else b"%d,plain\n" % i for i in range(1, 31)
    )
    path = _write(tmp_path, data)
    [reader] = _readers(CsvSource(str(path), TYPED))
    [whole] = list(reader.batches(None, 1000))
    expected = reader.read(whole)
    for parts in range(2, 40):
        split = reader.split(whole, parts)
        assert split is not None and 1 < len(split) <= parts, parts
        assert (split[0].start, split[0].first_line) == (whole.start, whole.first_line)
        assert (split[-1].end, split[-1].next_line) == (whole.end, whole.next_line)
        for before, after in pairwise(split):
            assert (before.end, before.next_line) == (after.start, after.first_line)
        reads = [reader.read(ref) for ref in split]
        assert [row for r in reads for row in r.rows] == expected.rows
        assert [line for r in reads for line in r.lines or ()] == expected.lines
    one = next(ref for ref in reader.split(whole, 30) or () if reader.read(ref).lines == [4])
    assert one.next_line == 6 and reader.split(one, 4) is None  # one record over two lines


def test_reader_pickles_and_names_its_columns(tmp_path: Path) -> None:
    """Test that a reader goes to a worker process as plain data and names its values."""
    path = _write(tmp_path, b"id,note\n1,a\n")
    source = CsvSource(str(path), TYPED, names=("customer_id", "remark"))
    [reader] = _readers(source)
    copy = pickle.loads(pickle.dumps(reader))
    assert copy == reader and copy.columns == ("customer_id", "remark") == source.columns
    [ref] = list(copy.batches(None, 10))
    assert copy.read(ref) == ReadBatch([(1, "a")], [2], [])
    assert copy.owned() is None


def test_source_round_trips_through_json(tmp_path: Path) -> None:
    """Test that a planned source, stored as JSON, comes back equal (identity and sample too)."""
    path = _write(tmp_path, b"id,note\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(100)))
    source = CsvSource(str(path), TYPED, names=("id", "remark")).planned()
    assert source.identity == FileIdentity.of(path)
    assert source.record_bytes == pytest.approx(len(b"10,n10\n"), abs=1.5)
    stored = json.loads(json.dumps({"kind": source.kind, **source.to_dict()}))
    assert source_from_dict(stored) == source
    headerless = CsvSource(str(path), TYPED, header=False)
    assert CsvSource.from_dict(json.loads(json.dumps(headerless.to_dict()))) == headerless


def test_plan_estimates_the_records_of_each_chunk(tmp_path: Path) -> None:
    """Test that plan entries are the byte ranges with their records counted (one-line records:
    exactly), and that a file without a header plans from its first line."""
    body = b"".join(b"%d,note %d\n" % (i, i) for i in range(1, 1001))
    path = _write(tmp_path, b"id,note\n" + body)
    entries = CsvSource(str(path), TYPED).planned().plan(None, Sizing(4, None, 1024))
    assert [FileChunk.from_dict(e) for e in entries] == plan_csv_chunks(path, chunks=4)
    assert sum(e["rows"] for e in entries) == 1000
    bare = _write(tmp_path, body, "bare.csv")
    entries = CsvSource(str(bare), TYPED, header=False).plan(
        None, Sizing(None, len(body) // 3, 1024)
    )
    assert entries[0]["start"] == 0 and entries[0]["first_line"] == 1
    assert len(entries) == 3 and sum(e["rows"] for e in entries) == 1000


def test_a_changed_or_missing_file_is_refused(tmp_path: Path) -> None:
    """Test that a chunk of a file changed since planning, or gone, is never read."""
    path = _write(tmp_path, b"id,note\n1,a\n2,b\n")
    source = CsvSource(str(path), TYPED).planned()
    entry = source.plan(None, Sizing(1, None, 1024))[0]
    with path.open("ab") as out:
        out.write(b"3,c\n")
    with pytest.raises(ConfigurationError, match="changed after its chunks were planned"):
        source.chunk_reader(None, entry)
    os.remove(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        source.chunk_reader(None, entry)


def test_a_header_other_than_the_schema_is_refused(tmp_path: Path) -> None:
    """Test that planning checks the header against the CSV columns."""
    path = _write(tmp_path, b"id,remark\n1,a\n")
    with pytest.raises(ConfigurationError, match="does not match the expected columns"):
        CsvSource(str(path), TYPED).plan(None, Sizing(1, None, 4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": ""}, "path must not be empty"),
        ({"names": ("one",)}, "names must give one name per CSV column"),
    ],
)
def test_source_arguments_are_checked(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    """Test that a source refuses an empty path and names that do not match its columns."""
    arguments: dict[str, Any] = {"path": str(tmp_path / "x.csv"), "schema": TYPED, **kwargs}
    with pytest.raises(ValueError, match=message):
        CsvSource(**arguments)


def test_blocks_cut_inside_quotes_change_no_batch(tmp_path: Path) -> None:
    """Test that the planner's block size (blocks ending inside quoted fields) changes no batch:
    one record per batch here, each at its true first line."""
    data = b"id,note\n" + b'1,"a""\n""b"\n2,"""\n"\n3,x"y\n' * 20
    path = _write(tmp_path, data)
    [reader] = _readers(CsvSource(str(path), TYPED, record_bytes=1.0))
    with mock.patch.object(csv_source, "MIN_BATCH_BYTES", 1):
        expected = list(reader.batches(None, 2))
        for block in (1, 2, 3, 5):
            with mock.patch.object(planner, "PLAN_BLOCK_BYTES", block):
                assert list(reader.batches(None, 2)) == expected
    assert [ref.first_line for ref in expected] == [
        line + 5 * k for k in range(20) for line in (2, 4, 6)
    ]


def test_split_of_short_records_stays_within_parts(tmp_path: Path) -> None:
    """Test that records of equal length, where every cut lands on a record start, still give
    at most `parts` batches (a step of size // parts gave up to twice as many)."""
    schema = CsvSchema([CsvColumn("id", "int", required=True)])
    path = _write(tmp_path, b"id\n" + b"".join(b"%d\n" % (i % 10) for i in range(1, 11)))
    [reader] = _readers(CsvSource(str(path), schema))
    [whole] = list(reader.batches(None, 1000))
    counts = {parts: len(reader.split(whole, parts) or ()) for parts in range(2, 30)}
    assert all(1 < n <= parts for parts, n in counts.items()), counts
    assert (counts[3], counts[7], counts[10], counts[29]) == (3, 7, 10, 10)
