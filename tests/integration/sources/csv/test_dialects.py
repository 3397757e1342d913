"""CSV dialects into a real PostgreSQL: other delimiters and quote characters, no quoting, no
header, a single-byte encoding and NULL spellings, each loaded typed from the target's catalog
and split into several chunks on record boundaries."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from parallel_batch.core.job import JobSpec
from parallel_batch.core.planning import resolve_columns
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.source import CsvSource
from parallel_batch.sources.csv.typed import typed_csv_source
from tests.integration.sources.csv.csv_jobs import letters_by_line, load_source, plan, run

TABLE = "CREATE TABLE t.sales (id integer PRIMARY KEY, item text, amount numeric, day date)"


def _rows(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT id, item, amount, day FROM t.sales ORDER BY id").fetchall()


def _source(
    conn: psycopg.Connection, path: Path | str, dialect: CsvDialect, **kwargs: object
) -> CsvSource:
    return typed_csv_source(conn, str(path), "t.sales", dialect=dialect, **kwargs)  # type: ignore[arg-type]


def _sales_file(
    schema: psycopg.Connection, tmp_path: Path, text: str, name: str = "sales.csv"
) -> Path:
    """Create the t.sales target and write ``text`` (UTF-8) to a file; return its path."""
    schema.execute(TABLE)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load_in_chunks(url: str, source: CsvSource, chunks: int) -> int:
    """Plan the file into ``chunks`` chunks and run them all; return the chunks planned."""
    with psycopg.connect(url, autocommit=True) as conn:
        spec = JobSpec(source.planned(), "t.sales", TransformSpec(), batch_rows=2)
        spec = resolve_columns(conn, spec, source.columns)
    job = plan(url, "dialect", spec, chunks=chunks)
    summaries = run(url, job, spec)
    assert all(s.reconciles for s in summaries)
    return len(job.plan)


def test_semicolons_with_quoted_delimiters_and_newlines_across_chunks(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a ``;`` file with ``;`` and newlines inside quotes loads exactly, in 3 chunks
    whose boundaries fall on records, and a bad field dead-letters its true starting line."""
    schema.execute(TABLE)
    path = tmp_path / "sales.csv"
    lines = ["id;item;amount;day"]
    expected = []
    for i in range(1, 31):
        item = f'"part {i}; with ""quotes""\nand a second line"' if i % 3 == 0 else f"part {i}"
        lines.append(f"{i};{item};{i},5;2024-01-{i:02d}".replace(",5", ".5"))
        text = f'part {i}; with "quotes"\nand a second line' if i % 3 == 0 else f"part {i}"
        expected.append((i, text, Decimal(f"{i}.5"), dt.date(2024, 1, i)))
    lines.append("31;bad;not a number;2024-01-31")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = _source(schema, path, CsvDialect.of(";"))
    assert _load_in_chunks(pg_url, source, 3) == 3
    assert _rows(schema) == expected
    # line of record 31: 1 header + 30 records, of which 10 span two lines
    assert letters_by_line(schema) == {42: ("CsvValueError", "amount: not a decimal number")}


@pytest.mark.parametrize(
    ("text", "dialect", "items"),
    [
        pytest.param(  # no quote character: a " is an ordinary character of a field
            'id\titem\tamount\tday\n1\t"quoted" ok\t1\t2024-02-01\n2\tsay "hi\t2\t2024-02-02\n',
            CsvDialect.of("\\t", quotechar=None),
            ['"quoted" ok', 'say "hi'],
            id="tabs-without-quoting",
        ),
        pytest.param(  # ' quotes fields (doubled inside one) and " is plain text
            "id,item,amount,day\n1,'a, b',1,2024-03-01\n2,'it''s \"x\"',2,2024-03-02\n",
            CsvDialect.of(",", quotechar="'"),
            ["a, b", 'it\'s "x"'],
            id="single-quotes",
        ),
    ],
)
def test_quote_characters(
    pg_url: str,
    schema: psycopg.Connection,
    tmp_path: Path,
    text: str,
    dialect: CsvDialect,
    items: list[str],
) -> None:
    """Test that the dialect's quote character (or none) decides what a field holds."""
    path = _sales_file(schema, tmp_path, text)
    summary = load_source(pg_url, _source(schema, path, dialect), "t.sales")
    assert summary.rows_written == 2
    assert [row[1] for row in _rows(schema)] == items


def test_no_header_maps_columns_in_file_order(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a file without a header loads by the ``columns`` list, its first record
    included, and its lines count from 1."""
    path = _sales_file(schema, tmp_path, "x;7;1\nbad;8;2\n")
    source = _source(
        schema, path, CsvDialect.of(";"), header=False, columns=["item", "id", "amount"]
    )
    load_source(pg_url, source, "t.sales")
    assert _rows(schema) == [(7, "x", Decimal(1), None), (8, "bad", Decimal(2), None)]
    assert letters_by_line(schema) == {}


def test_latin1_and_an_undecodable_cp1252_byte(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a Latin-1 file's accents load as text, and that in cp1252 a byte the code page
    does not define dead-letters its record as an encoding error at its line."""
    schema.execute(TABLE)
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,item\n1,café crème\n2,Ærø\n".encode("latin-1"))
    load_source(pg_url, _source(schema, path, CsvDialect.of(encoding="latin-1")), "t.sales")
    assert [row[1] for row in _rows(schema)] == ["café crème", "Ærø"]

    schema.execute("TRUNCATE t.sales; TRUNCATE parallel_batch.dead_letters")
    path = tmp_path / "cp1252.csv"
    path.write_bytes(b"id,item\n1,\x80 euro\n2,bad \x81 byte\n3,ok\n")
    source = _source(schema, path, CsvDialect.of(encoding="cp1252"))
    load_source(pg_url, source, "t.sales", job_key="cp1252")
    assert [row[1] for row in _rows(schema)] == ["€ euro", "ok"]
    ((line, (error_type, message)),) = letters_by_line(schema).items()
    assert (line, error_type) == (3, "CsvEncodingError")
    assert "cp1252" in message and "0x81" in message


def test_null_values(pg_url: str, schema: psycopg.Connection, tmp_path: Path) -> None:
    """Test that the dialect's NULL spellings are NULL in every kind of column, and that an
    empty text field is then the empty string, not NULL."""
    text = "id,item,amount,day\n1,NULL,\\N,NULL\n2,,5,\n3,null,NA,2024-01-01\n"
    path = _sales_file(schema, tmp_path, text, "nulls.csv")
    dialect = CsvDialect.of(null_values=["NULL", "\\N"])
    load_source(pg_url, _source(schema, path, dialect), "t.sales")
    assert _rows(schema)[:2] == [(1, None, None, None), (2, "", Decimal(5), None)]
    # "null" and "NA" are not in null_values: text as written, NA is not a number
    assert letters_by_line(schema) == {4: ("CsvValueError", "amount: not a decimal number")}


def test_a_required_key_spelled_as_null_is_refused(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a NULL spelling in the key column dead-letters the record."""
    path = _sales_file(schema, tmp_path, "id,item\nNULL,a\n2,b\n", "nulls.csv")
    source = _source(schema, path, CsvDialect.of(null_values=["NULL"]), key_column="id")
    load_source(pg_url, source, "t.sales")
    assert [row[0] for row in _rows(schema)] == [2]
    assert letters_by_line(schema) == {2: ("CsvValueError", "id: a value is required")}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"encoding": "utf-16"}, "cannot be read in byte ranges"),
        ({"encoding": "no-such-codec"}, "not a known codec"),
        ({"delimiter": ";;"}, "delimiter must be one ASCII character"),
        ({"delimiter": "\n"}, "delimiter cannot be a line break"),
        ({"quotechar": ";", "delimiter": ";"}, "quotechar and delimiter must differ"),
        ({"delimiter": "é"}, "one ASCII character"),
    ],
)
def test_bad_dialects_are_refused(options: dict[str, str], message: str) -> None:
    """Test that a dialect the byte scanner cannot read is refused before any work."""
    with pytest.raises(ConfigurationError, match=message):
        CsvDialect.of(**options)


def test_a_file_url_reads_the_local_file(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a ``file://`` URL loads like the plain path it names."""
    path = _sales_file(schema, tmp_path, "id;item\n1;a\n2;b\n")
    source = _source(schema, path.as_uri(), CsvDialect.of(";"))
    assert source.path.startswith("file:///")
    load_source(pg_url, source, "t.sales")
    assert [row[:2] for row in _rows(schema)] == [(1, "a"), (2, "b")]
