"""Test helper: a demo customers CSV with known bad records and duplicate ids, and what loading it
must give, worked out independently of the reader under test.

The file comes from ``write_customers_csv`` (every ``bad_every``-th record malformed, the kinds
taking turns), with duplicate records inserted (before a given record, or at the end), LF or
CRLF line endings and an optional BOM. The expected outcome is computed with Python's ``csv``
module and plain conversions, for a job that loads ``demo.customers`` with ``dedup_key="id"``
through the demo transform ``include.transforms.customers:check`` (or ``enrich``)::

    a record the reader refuses (field count, amount, created_at, encoding)
                                        -> a dead letter of its kind at its starting line; it
                                           claims no id
    an id claimed on an earlier line    -> a DuplicateKeyError dead letter
    an email without @                  -> an InvalidEmailError dead letter (the transform
                                           refuses it; its id stays claimed: first one wins)
    anything else                       -> a target row with exactly these values
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from parallel_batch.demo.csv_file import write_customers_csv

BOM = b"\xef\xbb\xbf"
DUPLICATE_NAME = "Duplicate"
# The dead-letter error_type for each kind of record the generator spoils.
ERROR_TYPES = {
    "field_count": "CsvFieldCountError",
    "amount": "CsvValueError",
    "created_at": "CsvValueError",
    "email": "InvalidEmailError",  # the demo transform refuses it
    "encoding": "CsvEncodingError",
}
# What the dead letter's message starts with, by kind.
REASONS = {
    "field_count": "expected 6 fields, found ",
    "amount": "amount: ",
    "created_at": "created_at: ",
    "email": "email: ",
    "encoding": "invalid UTF-8",
}
# The kinds of bad record the reader reads whole and the demo transform refuses.
TRANSFORM_REFUSES = frozenset({"email"})
_DUPLICATE = re.compile(r"duplicate id (\d+): the record on line (\d+) has it too")
TARGET_SQL = "SELECT id, name, email, amount, note, created_at, segment FROM {} ORDER BY id"


@dataclass
class CustomersCsv:
    """A CSV file and what loading it must give.

    :param path: the file.
    :param records: records in it (the header not counted).
    :param rows: the target rows by id: ``(id, name, email, amount, note, created_at)``.
    :param dead: the dead letters by starting line: ``(error_type, message prefix)``.
    :param lines: the line of the record that claimed each id (loaded, or refused by the
        transform).
    :param readable: the lines of every record of each id that the reader reads whole.
    """

    path: Path
    records: int
    rows: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    dead: dict[int, tuple[str, str]] = field(default_factory=dict)
    lines: dict[int, int] = field(default_factory=dict)
    readable: dict[int, list[int]] = field(default_factory=dict)

    def expected_rows(self, segment: Any = None) -> list[tuple[Any, ...]]:
        """The target's rows in id order; ``segment`` is a value or a function of the id."""
        return [
            (*row, segment(row[0]) if callable(segment) else segment)
            for _, row in sorted(self.rows.items())
        ]


def duplicate_record(record_id: int, n: int) -> bytes:
    """A well-formed record reusing ``record_id``, with values of its own."""
    return (
        f"{record_id},{DUPLICATE_NAME} {n},dup{n}@example.com,{n}.25,"
        f'"duplicate\nof {record_id}",2024-03-0{1 + n % 9}T12:00:00+00:00\r\n'
    ).encode()


def customers_csv(
    path: Path,
    rows: int,
    *,
    bad_every: int | None = 97,
    duplicates: Mapping[int, int | None] | Sequence[tuple[int, int | None]] | None = None,
    line_ending: str = "\r\n",
    bom: bool = False,
    seed: int = 0,
) -> CustomersCsv:
    """Write the file and work out what loading it must give.

    :param duplicates: ``{id to reuse: record id to insert it before, or None for the end}``,
        or such pairs in a list (to reuse an id more than once).
    :param line_ending: ``"\\r\\n"`` (the generator's) or ``"\\n"``.
    """
    stats = write_customers_csv(path, rows, bad_every=bad_every, seed=seed)
    data = path.read_bytes()
    tail = b""
    pairs = duplicates.items() if isinstance(duplicates, Mapping) else duplicates or ()
    for n, (record_id, before) in enumerate(pairs):
        record = duplicate_record(record_id, n)
        if before is None:
            tail += record
            continue
        marker = b"\r\n%d," % before  # a record start: nothing in the content looks like it
        at = data.index(marker) + 2
        data = data[:at] + record + data[at:]
    data += tail
    if line_ending == "\n":
        data = data.replace(b"\r\n", b"\n")
    elif line_ending != "\r\n":
        raise ValueError("line_ending must be '\\r\\n' or '\\n'")
    path.write_bytes((BOM if bom else b"") + data)
    return _expected(path, data, stats.bad_ids)


def _expected(path: Path, data: bytes, bad_ids: dict[int, str]) -> CustomersCsv:
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)  # the header
    result = CustomersCsv(path, 0)
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        result.records += 1
        record_id = int(fields[0])
        kind = None if fields[1].startswith(DUPLICATE_NAME) else bad_ids.get(record_id)
        if kind is not None and kind not in TRANSFORM_REFUSES:
            result.dead[line] = (ERROR_TYPES[kind], REASONS[kind])
            continue
        result.readable.setdefault(record_id, []).append(line)
        if record_id in result.lines:
            first = result.lines[record_id]
            result.dead[line] = (
                "DuplicateKeyError",
                f"duplicate id {record_id}: the record on line {first} has it too",
            )
            continue
        result.lines[record_id] = line
        if kind is not None:
            result.dead[line] = (ERROR_TYPES[kind], REASONS[kind])
            continue
        _, name, email, amount, note, created_at = fields
        result.rows[record_id] = (
            record_id,
            name or None,
            email,
            Decimal(amount),
            note or None,
            dt.datetime.fromisoformat(created_at),
        )
    return result


def target_rows(conn: psycopg.Connection, table: str = "demo.customers") -> list[tuple[Any, ...]]:
    """The target's rows in id order."""
    from psycopg import sql

    from parallel_batch.store.identifiers import table_sql

    return conn.execute(sql.SQL(TARGET_SQL).format(table_sql(table))).fetchall()


def dead_letters(conn: psycopg.Connection, job_key: str) -> dict[int, tuple[str, str]]:
    """A job's pending dead letters by line: ``(error_type, message)``."""
    rows = conn.execute(
        "SELECT line_number, error_type, message FROM parallel_batch.dead_letters"
        " WHERE job_key = %s AND replayed_at IS NULL",
        (job_key,),
    ).fetchall()
    return {line: (error_type, message) for line, error_type, message in rows}


def assert_dead_letters(
    found: dict[int, tuple[str, str]], case: CustomersCsv, *, any_earlier_duplicate: bool = False
) -> None:
    """Assert that the dead letters are exactly the expected lines, types and reasons.

    :param any_earlier_duplicate: a duplicate's message may name any earlier record of its id,
        not only the one loaded (chunks committed out of order: the third occurrence of an id
        was refused for the second one, which a chunk with the first displaced later).
    """
    assert sorted(found) == sorted(case.dead)
    for line, (error_type, prefix) in case.dead.items():
        assert found[line][0] == error_type, (line, found[line])
        if any_earlier_duplicate and error_type == "DuplicateKeyError":
            match = _DUPLICATE.match(found[line][1])
            assert match is not None, (line, found[line])
            record_id, named = int(match[1]), int(match[2])
            assert named < line and named in case.readable[record_id], (line, found[line])
            continue
        assert found[line][1].startswith(prefix), (line, found[line], prefix)
