"""CSV columns typed from the target's catalog (``typed_csv_source``), loaded with no transform
into a real PostgreSQL: every type of its table, an enum (text COPY), a domain, and values the
reader or the target refuses."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg

from parallel_batch.core.target import Target
from parallel_batch.sources.csv.typed import typed_csv_source
from tests.integration.sources.csv.csv_jobs import letters_by_line, load_source

UUID = uuid.UUID("0b4c2f3e-1111-2222-3333-444455556666")
UTC = dt.UTC
TYPES_TABLE = """
CREATE TABLE t.all_types (
    k integer PRIMARY KEY, s smallint, i integer, b bigint, n numeric(6,2), r real,
    d double precision, flag boolean, day date, ts timestamp, tstz timestamptz, u uuid,
    j json, jb jsonb, t text, v varchar(5), nm name
)"""
TYPES_COLUMNS = ["k", "s", "i", "b", "n", "r", "d", "flag", "day", "ts", "tstz", "u", "j", "jb", "t", "v", "nm"]  # fmt: skip
BOOLEANS = {
    "t": True, "true": True, "y": True, "yes": True, "on": True, "1": True, "TRUE": True,
    " Yes ": True, "f": False, "false": False, "n": False, "no": False, "off": False,
    "0": False, "False": False, "OFF": False,
}  # fmt: skip


def _write(
    path: Path, header: list[str] | None, records: dict[int, dict[str, str]]
) -> dict[int, int]:
    """Write records (by key: field by column, the rest empty) with the csv module; return the
    line each key's record starts on."""
    columns = header or TYPES_COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    lines: dict[int, int] = {}
    for key, fields in records.items():
        lines[key] = out.getvalue().count("\n") + 1
        writer.writerow([fields.get(c, str(key) if c == columns[0] else "") for c in columns])
    path.write_text(out.getvalue(), encoding="utf-8")
    return lines


def test_every_type_of_the_table_loads_typed(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that each target type reads with its kind: values land exactly, and a value the
    reader or the target refuses is a dead letter at its line naming the column."""
    schema.execute(TYPES_TABLE)
    good = {
        1: {
            "s": "-32768", "i": "2147483647", "b": "-9223372036854775808", "n": "9999.99",
            "r": "1.5", "d": "1e300", "flag": "yes", "day": "2024-02-29",
            "ts": "2024-05-01T12:00:00+02:00", "tstz": "2024-05-01T12:00:00+02:00",
            "u": str(UUID).upper(), "j": '{"a": [1, 2]}', "jb": '[1, null, "x"]',
            "t": 'hé, "quoted"\nnewline', "v": "abcde", "nm": "pg",
        },
        2: {},  # every other column empty: NULL
        3: {
            "s": "32767", "i": "-2147483648", "b": "9223372036854775807", "n": "-0.5",
            "r": "-Infinity", "d": "NaN", "flag": " OFF ", "day": "1999-12-31",
            "ts": "2024-05-01 08:30:00", "tstz": "2024-05-01T08:30:00", "u": f"urn:uuid:{UUID}",
            "j": '"text"', "jb": "5", "t": "x", "v": "ab", "nm": "x",
        },
    }  # fmt: skip
    flags = {10 + n: {"flag": text} for n, text in enumerate(BOOLEANS)}
    bad = {
        100: ({"s": "32768"}, ("TargetValueError", "s: out of the range of smallint")),
        101: ({"s": "-32769"}, ("TargetValueError", "s: out of the range of smallint")),
        102: ({"i": "2147483648"}, ("TargetValueError", "i: out of the range of integer")),
        103: ({"b": "9223372036854775808"}, ("CsvValueError", "b: integer out of the 64-bit range")),
        104: ({"n": "1.005"}, ("TargetValueError", "n: more than 2 decimal places (numeric(6,2) would round it)")),
        105: ({"n": "10000"}, ("TargetValueError", "n: out of the range of numeric(6,2)")),
        106: ({"n": "abc"}, ("CsvValueError", "n: not a decimal number")),
        107: ({"d": "1,5"}, ("CsvFieldCountError", "expected 17 fields, found 18")),
        108: ({"d": "abc"}, ("CsvValueError", "d: not a number")),
        109: ({"flag": "maybe"}, ("CsvValueError", "flag: not a boolean (true/false, t/f, yes/no, on/off, 1/0)")),
        110: ({"day": "2023-02-29"}, ("CsvValueError", "day: not an ISO-8601 date")),
        111: ({"ts": "yesterday"}, ("CsvValueError", "ts: not an ISO-8601 timestamp")),
        112: ({"tstz": "2024-13-01"}, ("CsvValueError", "tstz: not an ISO-8601 timestamp")),
        113: ({"u": "nope"}, ("CsvValueError", "u: not a UUID")),
        114: ({"jb": "{bad"}, ("CsvValueError", "jb: not valid JSON")),
        115: ({"v": "toolong"}, ("StringDataRightTruncation", "the target refused the row: value too long for type character varying(5)")),
        116: ({"k": ""}, ("CsvValueError", "k: a value is required")),
    }  # fmt: skip
    path = tmp_path / "types.csv"
    lines = _write(
        path, TYPES_COLUMNS, {**good, **flags, **{k: fields for k, (fields, _) in bad.items()}}
    )
    # 107: the writer quotes "1,5" -- unquote it so the record has a field too many
    path.write_text(path.read_text().replace('"1,5"', "1,5"))

    source = typed_csv_source(schema, str(path), "t.all_types")

    kinds = {c.name: (c.kind, c.required) for c in source.schema.columns}
    assert kinds == {
        "k": ("int", True), "s": ("int", False), "i": ("int", False), "b": ("int", False),
        "n": ("decimal", False), "r": ("float", False), "d": ("float", False),
        "flag": ("bool", False), "day": ("date", False), "ts": ("localtime", False),
        "tstz": ("timestamp", False), "u": ("uuid", False), "j": ("json", False),
        "jb": ("json", False), "t": ("text", False), "v": ("text", False), "nm": ("text", False),
    }  # fmt: skip
    summary = load_source(pg_url, source, "t.all_types")

    assert (summary.rows_read, summary.rows_failed) == (3 + len(flags) + len(bad), len(bad))
    rows = {row[0]: row for row in schema.execute("SELECT * FROM t.all_types")}
    assert rows[1] == (
        1, -32768, 2147483647, -(2**63), Decimal("9999.99"), 1.5, 1e300, True,
        dt.date(2024, 2, 29), dt.datetime(2024, 5, 1, 12, 0),
        dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC), UUID, {"a": [1, 2]}, [1, None, "x"],
        'hé, "quoted"\nnewline', "abcde", "pg",
    )  # fmt: skip
    assert rows[2] == (2, *[None] * 16)
    three = rows[3]
    assert three[:5] == (3, 32767, -(2**31), 2**63 - 1, Decimal("-0.50"))
    assert three[5] == -math.inf and math.isnan(three[6])
    assert three[7:] == (
        False, dt.date(1999, 12, 31), dt.datetime(2024, 5, 1, 8, 30),
        dt.datetime(2024, 5, 1, 8, 30, tzinfo=UTC), UUID, "text", 5, "x", "ab", "x",
    )  # fmt: skip
    assert {key: rows[key][7] for key in flags} == {
        key: BOOLEANS[fields["flag"]] for key, fields in flags.items()
    }
    assert letters_by_line(schema) == {lines[key]: letter for key, (_, letter) in bad.items()}
    assert lines[2] == 4  # the record before it spans two lines


def test_a_target_with_an_enum_loads_through_text_copy(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that an enum (and inet, char, json) column makes the target take text COPY: those
    fields go as text for the server to parse, the typed ones still convert and are checked."""
    schema.execute("CREATE TYPE t.mood AS ENUM ('happy', 'sad')")
    schema.execute(
        "CREATE TABLE t.moods (k integer PRIMARY KEY, mood t.mood, addr inet, code char(2),"
        " day date, amount numeric(6,2), note text, doc jsonb)"
    )
    columns = ["k", "mood", "addr", "code", "day", "amount", "note", "doc"]
    records = {
        1: {"mood": "happy", "addr": "10.0.0.1", "code": "ab", "day": "2024-01-02",
            "amount": "1.25", "note": "tab\there, back\\slash\nand a newline",
            "doc": '{"a": [1, "x"]}'},
        2: {"mood": "sad", "addr": "::1", "code": "c", "doc": '"text"'},
        3: {"mood": "angry"},
        4: {"addr": "not-an-ip"},
        5: {"amount": "1.005"},
        6: {"day": "2024-02-30"},
        7: {"doc": "{bad"},
    }  # fmt: skip
    path = tmp_path / "moods.csv"
    lines = _write(path, columns, records)

    source = typed_csv_source(schema, str(path), "t.moods")

    assert [c.kind for c in source.schema.columns] == [
        "int", "text", "text", "text", "date", "decimal", "text", "text",
    ]  # fmt: skip
    assert Target.resolve(schema, "t.moods").copy.binary is False
    load_source(pg_url, source, "t.moods")

    found = schema.execute(
        "SELECT k, mood::text, host(addr), code, day, amount, note, doc FROM t.moods ORDER BY k"
    ).fetchall()
    assert found == [
        (1, "happy", "10.0.0.1", "ab", dt.date(2024, 1, 2), Decimal("1.25"),
         "tab\there, back\\slash\nand a newline", {"a": [1, "x"]}),
        (2, "sad", "::1", "c ", None, None, None, "text"),
    ]  # fmt: skip
    letters = letters_by_line(schema)
    assert sorted(letters) == [lines[k] for k in (3, 4, 5, 6, 7)]
    assert letters[lines[3]] == (
        "InvalidTextRepresentation",
        'the target refused the row: invalid input value for enum t.mood: "angry"',
    )
    assert letters[lines[4]] == (
        "InvalidTextRepresentation",
        'the target refused the row: invalid input syntax for type inet: "not-an-ip"',
    )
    assert letters[lines[5]][0] == "TargetValueError"
    assert letters[lines[6]] == ("CsvValueError", "day: not an ISO-8601 date")
    assert letters[lines[7]][1].startswith(
        "the target refused the row: invalid input syntax for type json"
    )


def test_a_domain_loads_as_its_base_type(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a domain column reads with its base type's kind, and a value its constraint
    refuses is a dead letter at its line."""
    schema.execute("CREATE DOMAIN t.positive AS integer CHECK (VALUE > 0)")
    schema.execute("CREATE DOMAIN t.label AS varchar(10)")
    schema.execute("CREATE TABLE t.counts (k integer PRIMARY KEY, n t.positive, tag t.label)")
    path = tmp_path / "counts.csv"
    path.write_text("k,n,tag\n1,5,five\n2,-1,minus\n3,x,ex\n")

    source = typed_csv_source(schema, str(path), "t.counts")

    assert [c.kind for c in source.schema.columns] == ["int", "int", "text"]
    load_source(pg_url, source, "t.counts")
    assert schema.execute("SELECT * FROM t.counts").fetchall() == [(1, 5, "five")]
    letters = letters_by_line(schema)
    assert letters[4] == ("CsvValueError", "n: not an integer")
    assert letters[3][0] == "CheckViolation"
    assert letters[3][1].startswith("the target refused the row: value for domain t.positive")


def test_a_failed_record_with_a_non_finite_float_is_a_dead_letter(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a record holding NaN or Infinity that fails for another reason becomes a dead
    letter like any other (its payload must still be valid jsonb) and the chunk completes.

    Fails today: ``store.deadletters.json_payload`` writes NaN/Infinity into the payload, which
    jsonb refuses, so the whole batch's commit fails with InvalidTextRepresentation."""
    schema.execute("CREATE TABLE t.measures (k integer PRIMARY KEY, small smallint, x float8)")
    path = tmp_path / "measures.csv"
    path.write_text("k,small,x\n1,1,NaN\n2,40000,NaN\n3,40000,-Infinity\n4,2,2.5\n")

    load_source(pg_url, typed_csv_source(schema, str(path), "t.measures"), "t.measures")

    assert [row[0] for row in schema.execute("SELECT k FROM t.measures ORDER BY k")] == [1, 4]
    assert letters_by_line(schema) == {
        3: ("TargetValueError", "small: out of the range of smallint"),
        4: ("TargetValueError", "small: out of the range of smallint"),
    }


def test_a_real_out_of_its_range_is_refused_not_stored_as_infinity(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a value too large for a real column is a dead letter naming the column, as
    PostgreSQL would refuse it, rather than a row holding Infinity.

    Fails today: binary COPY sends the float4 that 1e300 rounds to (Infinity); the target's
    checks (``core.target``) cover integers, numerics and NUL, not real's range."""
    schema.execute("CREATE TABLE t.reals (k integer PRIMARY KEY, r real)")
    path = tmp_path / "reals.csv"
    path.write_text("k,r\n1,1e300\n2,1.5\n")

    load_source(pg_url, typed_csv_source(schema, str(path), "t.reals"), "t.reals")

    assert schema.execute("SELECT k, r FROM t.reals ORDER BY k").fetchall() == [(2, 1.5)]
    [(error_type, message)] = letters_by_line(schema).values()
    assert error_type == "TargetValueError" and message.startswith("r: ")
