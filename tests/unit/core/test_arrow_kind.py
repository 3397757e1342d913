"""Tests of the ``arrow`` transform kind's contract and of when a batch takes the columnar path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from parallel_batch.core.arrow_kind import arrow_rows, call_arrow, rows_table, table_rows
from parallel_batch.core.prepare import BatchWork
from parallel_batch.core.prepare_columns import COLUMNS_ENV, columns_ready
from parallel_batch.core.target import Target
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.exceptions import TransformOutputError
from parallel_batch.sources.csv.dialect import CsvDialect
from parallel_batch.sources.csv.schema import CsvColumn, CsvSchema
from parallel_batch.sources.csv.source import CsvSource
from parallel_batch.store.copy_data import CopyFormat

TABLE = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})


def _keep_odd(table: pa.Table) -> tuple[pa.Table, dict[int, Exception]]:
    ids = table.column("id").to_pylist()
    refused: dict[int, Exception] = {
        i: ValueError(f"even {v}") for i, v in enumerate(ids) if v % 2 == 0
    }
    return table.filter(pa.array([v % 2 == 1 for v in ids])), refused


def test_that_an_arrow_transform_keeps_rows_in_order_and_refuses_by_index() -> None:
    """Test that call_arrow gives the output, the input indexes kept and the refusals; a
    RecordBatch output counts as a table."""
    out, kept, refused = call_arrow(_keep_odd, TABLE)
    assert out.column("id").to_pylist() == [1, 3] and kept == [0, 2]
    assert {i: str(e) for i, e in refused.items()} == {1: "even 2"}
    batch_out, _, _ = call_arrow(lambda t: t.to_batches()[0], TABLE)
    assert batch_out.num_rows == 3


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda t: t.to_pylist(), "returned a list"),
        (lambda t: t.slice(0, 2), "returned 2 rows for 3 input rows"),
        (lambda t: (t.slice(0, 2), {5: ValueError()}), "refusals map input row indexes"),
        (lambda t: (t.slice(0, 2), {1: "no"}), "refusals map input row indexes"),
    ],
)
def test_that_an_output_breaking_the_contract_is_a_transform_output_error(
    fn: Any, message: str
) -> None:
    """Test that a non-table, a row count that is not one per row kept, and refusals that are
    not input indexes with exceptions raise TransformOutputError."""
    with pytest.raises(TransformOutputError, match=message):
        call_arrow(fn, TABLE)


def test_that_rows_go_in_as_a_table_and_come_out_in_target_order() -> None:
    """Test the row path's conversions: rows to a table, a table to rows of the target's
    columns (NULL for one it lacks; an unknown column refused)."""
    table = rows_table(("id", "name"), [(1, "a"), (2, None)])
    assert table.column_names == ["id", "name"] and table.num_rows == 2
    assert rows_table(("id",), []).num_rows == 0
    assert table_rows(table, ("name", "extra", "id")) == [("a", None, 1), (None, None, 2)]
    with pytest.raises(TransformOutputError, match="'name', which is not a target column"):
        table_rows(table, ("id",))
    target = Target("t.t", ("name", "id"), ("text", "bigint"), CopyFormat((25, 20), True), ())
    rows, kept, refused = arrow_rows(_keep_odd, ("id", "name"), target, [(1, "a"), (2, "b")])
    assert (rows, kept, [(i, str(e)) for i, e in refused]) == ([("a", 1)], [0], [(1, "even 2")])


def _work(tmp_path: Path, **changes: Any) -> BatchWork:
    path = tmp_path / "f.csv"
    path.write_bytes(b"id,name\n1,a\n")
    kinds = changes.pop("kinds", ("int", "text"))
    schema = CsvSchema([CsvColumn("id", kinds[0]), CsvColumn("name", kinds[1])])
    source = CsvSource(str(path), schema, dialect=changes.pop("dialect", CsvDialect())).planned()
    entry = source.plan(None, _sizing())[0]
    types = changes.pop("types", ("bigint", "text"))
    target = Target("t.t", ("id", "name"), types, CopyFormat((20, 25), True), ())
    return BatchWork(
        source.chunk_reader(None, entry),
        changes.pop("transform", TransformSpec(None, "rows")),
        target,
        changes.pop("dedup_key", "id"),
    )


def _sizing() -> Any:
    from parallel_batch.core.source import Sizing

    return Sizing(chunks=1, chunk_size=None, max_chunks=1)


def test_that_the_columnar_path_is_taken_only_where_it_gives_the_same_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that no transform or an arrow one over a CSV of convertible kinds into encodable
    columns takes the columnar path; another kind, a dialect, a column kind or type, a key
    kind it cannot spell as str() does, or PARALLEL_BATCH_COLUMNS=0 keep the row path."""
    assert columns_ready(_work(tmp_path))
    assert columns_ready(_work(tmp_path, transform=TransformSpec("m:f", "arrow")))
    assert _work(tmp_path).columnar
    assert not columns_ready(_work(tmp_path, transform=TransformSpec("m:f", "batch")))
    assert not columns_ready(_work(tmp_path, dialect=CsvDialect(encoding="latin-1")))
    assert not columns_ready(_work(tmp_path, kinds=("int", "uuid")))
    assert not columns_ready(_work(tmp_path, types=("bigint", "jsonb")))
    assert not columns_ready(
        _work(tmp_path, kinds=("decimal", "text"), types=("numeric(9,2)", "text"))
    )
    assert columns_ready(
        _work(tmp_path, kinds=("decimal", "text"), types=("numeric(9,2)", "text"), dedup_key=None)
    )
    # a kind whose values the target's type would take as another value, or not at all
    for kind, type_name in [("timestamp", "timestamp without time zone"), ("int", "text")]:
        work = _work(tmp_path, kinds=(kind, "text"), types=(type_name, "text"), dedup_key=None)
        assert not columns_ready(work), (kind, type_name)
    monkeypatch.setenv(COLUMNS_ENV, "0")
    assert not columns_ready(_work(tmp_path))
