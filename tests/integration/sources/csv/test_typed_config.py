"""``typed_csv_source`` configurations: a `columns` mapping, a file without a header, and what is
refused up front (a CSV column the target lacks, a bad mapping, a type a CSV cannot load)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from parallel_batch.core.transforms import TransformSpec
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.typed import KIND_OF_TYPE, typed_csv_source
from tests.integration.sources.csv.csv_jobs import letters_by_line, load_source


def test_a_type_a_csv_cannot_load_is_refused_up_front(
    schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a binary-COPY target column of a type without a CSV kind is refused by name."""
    schema.execute("CREATE TABLE t.times (k integer PRIMARY KEY, at time)")
    path = tmp_path / "times.csv"
    path.write_text("k,at\n1,12:00\n")

    with pytest.raises(ConfigurationError) as refused:
        typed_csv_source(schema, str(path), "t.times")

    assert str(refused.value) == (
        "column 'at' of t.times is a time without time zone, which a CSV cannot load yet "
        f"(supported: {', '.join(sorted(KIND_OF_TYPE))})"
    )


def test_a_columns_mapping_loads_csv_columns_into_other_target_columns(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that `columns` maps header names to target columns (the others by name), the rows
    and a transform see the target names, and dead letters keep their lines."""
    schema.execute("CREATE TABLE t.people (id bigint PRIMARY KEY, name text, email text NOT NULL)")
    path = tmp_path / "people.csv"
    path.write_text(
        " Customer ID ,name,Mail\n1,Ann,ann@example.com\n2,Bob,bob.example.com\n3,Cy,\n"
    )
    mapping = {"Customer ID": "id", "Mail": "email"}

    source = typed_csv_source(schema, str(path), "t.people", columns=mapping, key_column="id")

    assert source.schema.names == ("Customer ID", "name", "Mail")
    assert source.columns == ("id", "name", "email")
    assert [(c.kind, c.required) for c in source.schema.columns] == [
        ("int", True), ("text", False), ("text", True),
    ]  # fmt: skip
    load_source(
        pg_url, source, "t.people", transform=TransformSpec("include.transforms.customers:check")
    )

    assert schema.execute("SELECT * FROM t.people").fetchall() == [(1, "Ann", "ann@example.com")]
    assert letters_by_line(schema) == {
        3: ("InvalidEmailError", "email: email address without @"),
        4: ("CsvValueError", "Mail: a value is required"),
    }


def test_a_file_without_a_header_names_its_columns_in_order(
    pg_url: str, schema: psycopg.Connection, tmp_path: Path
) -> None:
    """Test that a file without a header loads from its first line, each field into the column
    `columns` names at its position, dead letters at their true lines."""
    schema.execute("CREATE TABLE t.pairs (k integer PRIMARY KEY, label text, weight numeric)")
    path = tmp_path / "pairs.csv"
    path.write_bytes(b'\xef\xbb\xbf1,"one\r\nline two",1.5\r\nx,two,2\r\n3,three,3\r\n')

    source = typed_csv_source(
        schema, str(path), "t.pairs", columns=["k", "label", "weight"], header=False
    )

    assert source.header is False and source.columns == ("k", "label", "weight")
    load_source(pg_url, source, "t.pairs")
    assert schema.execute("SELECT * FROM t.pairs ORDER BY k").fetchall() == [
        (1, "one\r\nline two", Decimal("1.5")),
        (3, "three", Decimal(3)),
    ]
    assert letters_by_line(schema) == {3: ("CsvValueError", "k: not an integer")}


@pytest.mark.parametrize(
    ("header", "kwargs", "message"),
    [
        (
            "k,label,colour",
            {},
            "Column 'colour' does not exist in table 't.pairs': every CSV column loads into "
            "the target column of its name (or the one `columns` maps it to)",
        ),
        ("k,lbl,colour", {}, "Columns 'lbl', 'colour' do not exist in table 't.pairs'"),
        ("k,label", {"columns": {"label": "colour"}}, "columns maps 'label' to 'colour', which"),
        ("k,label", {"columns": {"name": "label"}}, "columns maps ['name'] which the header"),
        ("k,label", {"columns": {"k": "label"}}, "two CSV columns load into the same column"),
        ("k,label", {"columns": ["k", "label"]}, "a file with a header takes a mapping"),
        ("k,label", {"header": False}, "a file without a header needs columns"),
        ("k,label", {"header": False, "columns": {"k": "k"}}, "a file without a header needs"),
        ("k,label", {"key_column": "weight"}, "key_column 'weight' is not a column of"),
    ],
)
def test_configurations_that_cannot_load_are_refused(
    schema: psycopg.Connection, tmp_path: Path, header: str, kwargs: dict[str, Any], message: str
) -> None:
    """Test that a CSV column missing from the target (mapped or not), a bad mapping and a key
    column the file lacks are refused before any plan, saying what to do."""
    schema.execute("CREATE TABLE t.pairs (k integer PRIMARY KEY, label text, weight numeric)")
    path = tmp_path / "pairs.csv"
    path.write_text(f"{header}\n1,a,1\n")

    with pytest.raises(ConfigurationError, match=re.escape(message)):
        typed_csv_source(schema, str(path), "t.pairs", **kwargs)


def test_missing_file_and_table_are_refused(schema: psycopg.Connection, tmp_path: Path) -> None:
    """Test that a file that is not there and a target that does not exist are refused."""
    with pytest.raises(ConfigurationError, match="does not exist"):
        typed_csv_source(schema, str(tmp_path / "nope.csv"), "t.pairs")
    path = tmp_path / "pairs.csv"
    path.write_text("k\n1\n")
    with pytest.raises(ConfigurationError, match=r"t\.nope"):
        typed_csv_source(schema, str(path), "t.nope")
