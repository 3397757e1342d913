"""Tests of the demo customers CSV generator and ``parallel-batch seed csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from parallel_batch.cli import main
from parallel_batch.demo.csv_file import BAD_KINDS, write_customers_csv
from parallel_batch.sources.csv.planner import plan_csv_chunks
from parallel_batch.sources.csv.reader import read_csv_chunk, read_csv_header
from parallel_batch.sources.csv.records import CsvRecord, RecordError
from parallel_batch.sources.csv.schema import CUSTOMERS_SCHEMA

# The reader's error kind for each kind of malformed record the generator writes.
READER_KIND = {
    "field_count": "field_count",
    "amount": "value",
    "created_at": "value",
    "email": "value",
    "encoding": "encoding",
}


def _read(path: Path, chunks: int) -> tuple[list[CsvRecord], list[RecordError]]:
    records: list[CsvRecord] = []
    errors: list[RecordError] = []
    for chunk in plan_csv_chunks(path, chunks=chunks):
        for batch in read_csv_chunk(path, chunk, CUSTOMERS_SCHEMA, batch_rows=500):
            records.extend(batch.records)
            errors.extend(batch.errors)
    return records, errors


def test_round_trip_finds_exactly_the_bad_records(tmp_path: Path) -> None:
    """Test that reading the file back gives every good id once and an error per bad line."""
    path = tmp_path / "customers.csv"
    stats = write_customers_csv(path, 3000, bad_every=7, seed=3)
    records, errors = _read(path, chunks=5)
    assert {e.line: e.kind for e in errors} == {
        line: READER_KIND[kind] for line, kind in stats.bad_lines.items()
    }
    assert [r.values[0] for r in records] == sorted(set(range(1, 3001)) - set(stats.bad_ids))
    assert len(records) == stats.good_rows == 3000 - 3000 // 7
    assert set(stats.bad_ids.values()) == set(BAD_KINDS)
    reasons = {e.reason.split(":")[0] for e in errors if e.kind == "value"}
    assert reasons == {"amount", "created_at", "email"}
    assert stats.size == path.stat().st_size
    assert stats.lines == path.read_bytes().count(b"\n")


def test_records_are_awkward_and_valid(tmp_path: Path) -> None:
    """Test that the clean file is RFC 4180 CSV with multi-line, quoted and non-ASCII values."""
    path = tmp_path / "customers.csv"
    stats = write_customers_csv(path, 2000)
    data = path.read_bytes()
    assert data.startswith(b"id,name,email,amount,note,created_at\r\n")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[0] == list(CUSTOMERS_SCHEMA.names)
    assert len(rows) == 2001
    notes = [row[4] for row in rows[1:]]
    assert any("\n" in n for n in notes)
    assert any('"' in n for n in notes)
    assert any("," in n for n in notes)
    assert any(n == "" for n in notes)
    assert any(not row[1].isascii() for row in rows[1:])
    assert stats.lines > 2001  # records span lines
    records, errors = _read(path, chunks=3)
    assert errors == []
    assert [r.values[4] for r in records] == [n or None for n in notes]
    assert all(getattr(r.values[5], "tzinfo", None) is not None for r in records)


def test_output_depends_only_on_the_arguments(tmp_path: Path) -> None:
    """Test that the same seed writes the same bytes and another seed different ones."""
    first, second, third = (tmp_path / f"{n}.csv" for n in "abc")
    write_customers_csv(first, 500, bad_every=10, seed=1)
    write_customers_csv(second, 500, bad_every=10, seed=1)
    write_customers_csv(third, 500, bad_every=10, seed=2)
    assert first.read_bytes() == second.read_bytes() != third.read_bytes()


def test_zero_rows_is_a_header_only_file(tmp_path: Path) -> None:
    """Test that rows=0 writes the header alone, which plans no chunk."""
    path = tmp_path / "empty.csv"
    stats = write_customers_csv(path, 0)
    assert (stats.rows, stats.lines, stats.bad_lines) == (0, 1, {})
    assert read_csv_header(path) == list(CUSTOMERS_SCHEMA.names)
    assert plan_csv_chunks(path, chunks=4) == []


def test_arguments_are_checked(tmp_path: Path) -> None:
    """Test that negative rows and a bad_every below 1 are refused."""
    with pytest.raises(ValueError, match="rows must not be negative"):
        write_customers_csv(tmp_path / "x.csv", -1)
    with pytest.raises(ValueError, match="bad_every must be greater than 0"):
        write_customers_csv(tmp_path / "x.csv", 10, bad_every=0)


def test_seed_csv_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Test that `parallel-batch seed csv` writes the file and says what it wrote."""
    path = tmp_path / "out.csv"
    assert main(["seed", "csv", "--rows", "50", "--out", str(path), "--bad-every", "5"]) == 0
    assert "Wrote 50 customer records (10 malformed" in capsys.readouterr().out
    records, errors = _read(path, chunks=2)
    assert (len(records), len(errors)) == (40, 10)
    with pytest.raises(SystemExit):
        main(["seed", "csv", "--rows", "5", "--out", str(path), "--bad-every", "0"])
