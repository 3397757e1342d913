"""The columnar path against the row path on the same batches: the same rows in PostgreSQL, the
same dead letters and claims, for an ``arrow`` transform that depends on its input's types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from parallel_batch.core.prepare import BatchWork, PreparedBatch, prepare
from parallel_batch.core.prepare_columns import prepare_columns
from parallel_batch.core.transforms import TransformSpec
from parallel_batch.store.writer import write_rows
from tests.helpers.customers_csv import customers_csv
from tests.integration.sources.csv.csv_jobs import customers_spec


def typed_check(table: pa.Table) -> tuple[pa.Table, dict[int, Exception]]:
    """Decimal arithmetic, a time zone's hour and a NULL test: refuse a record whose email is
    NULL or whose moment falls in hour 13 UTC, double the others' amounts (its precision grows:
    decimal128(13,2) from (12,2)) and upper-case their names."""
    hours = pc.fill_null(pc.equal(pc.hour(table.column("created_at")), 13), False)
    refused_mask = pc.or_(pc.is_null(table.column("email")), hours)
    refused = {
        i: ValueError(f"refused {table.column('id')[i].as_py()}")
        for i in pc.indices_nonzero(refused_mask).to_pylist()
    }
    kept = table.filter(pc.invert(refused_mask))
    amount = kept.column("amount")
    out = kept.set_column(kept.column_names.index("amount"), "amount", pc.add(amount, amount))
    out = out.set_column(out.column_names.index("name"), "name", pc.utf8_upper(out.column("name")))
    return out, refused


TYPED_CHECK = TransformSpec(f"{__name__}:typed_check", "arrow")


def no_empty_batch(table: pa.Table) -> pa.Table:
    """The table as it is; a call with no rows raises (it must not be made)."""
    if not table.num_rows:
        raise ValueError("called with no rows")
    return table


NO_EMPTY = TransformSpec(f"{__name__}:no_empty_batch", "arrow")


def _both(url: str, path: Path, transform: TransformSpec) -> tuple[BatchWork, list[Any]]:
    spec = customers_spec(url, path, transform=transform, batch_rows=500)
    with psycopg.connect(url) as conn:
        target = spec.resolve_target(conn)
    entry = spec.source.plan(None, _one())[0]
    reader = spec.source.chunk_reader(None, entry)
    return BatchWork(reader, spec.transform, target, spec.dedup_key), list(
        reader.batches(None, spec.batch_rows)
    )


def _one() -> Any:
    from parallel_batch.core.source import Sizing

    return Sizing(chunks=1, chunk_size=None, max_chunks=1)


def _stored(conn: psycopg.Connection, work: BatchWork, prepared: PreparedBatch) -> list[Any]:
    conn.execute("TRUNCATE demo.customers")
    with conn.transaction():
        write_rows(conn, "demo.customers", work.target.columns, prepared.data)
    return conn.execute("SELECT * FROM demo.customers ORDER BY id").fetchall()


def _letters(prepared: PreparedBatch) -> list[tuple[Any, ...]]:
    return [
        (d.item_key, d.line_number, d.payload, d.error_type, d.message, d.attempts)
        for d in prepared.letters
    ]


def test_that_a_type_sensitive_arrow_transform_gives_the_same_batches_both_ways(
    pg_url: str, pg_conn: psycopg.Connection, target: str, tmp_path: Path
) -> None:
    """Test that each batch of a file with bad records, duplicates, empty emails and offsets
    comes out of the columnar path exactly as out of the row path: rows stored, dead letters
    (with attempts), claims; the function sees the same types both ways (a decimal's
    precision, UTC timestamps, a typed all-NULL column)."""
    case = customers_csv(tmp_path / "c.csv", 3_000, bad_every=41, duplicates={10: 12})
    data = case.path.read_bytes().replace(b",customer7@example.com,", b",,")
    case.path.write_bytes(data)
    work, refs = _both(pg_url, case.path, TYPED_CHECK)
    assert work.columnar
    columnar = 0
    for ref in refs:
        by_columns = prepare_columns(work, ref)
        by_rows = prepare(work, ref, keep_rows=True)  # keep_rows: the row path, always
        assert by_columns is not None
        columnar += 1
        assert _letters(by_columns) == _letters(by_rows)
        assert (by_columns.read, len(by_columns.data)) == (by_rows.read, len(by_rows.data))
        assert by_columns.claims is not None and by_rows.claims is not None
        assert by_columns.claims.outputs == by_rows.claims.outputs
        assert by_columns.claims.plan.new.keys == by_rows.claims.plan.new.keys
        new_columns, new_rows = by_columns.claims.plan.new, by_rows.claims.plan.new
        # the range row as it is sent (packed from Arrow columns; batch 1 holds id 10 twice)
        assert new_columns.packed() == new_rows.packed()
        outputs = by_rows.claims.outputs
        assert new_columns.outputs_array(outputs) == new_rows.outputs_array(outputs)
        assert _stored(pg_conn, work, by_columns) == _stored(pg_conn, work, by_rows)
    assert columnar == len(refs) > 5
    refusals = [
        d for ref in refs for d in prepare(work, ref).letters if d.error_type == "ValueError"
    ]
    assert any(d.payload["email"] is None for d in refusals)  # the empty email
    assert len(refusals) > 10  # hour 13 UTC (offsets in the file: not the local hour)


def test_that_a_batch_with_nothing_to_transform_is_prepared_both_ways(
    pg_url: str, target: str, tmp_path: Path
) -> None:
    """Test that a batch whose records are all bad or duplicates (nothing left to transform)
    is prepared by both paths without calling the transform (one that raises on no rows), every
    record a dead letter."""
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"id,name,email,amount,note,created_at\n"
        b"1,A,a@b.c,1.00,,2024-01-01T00:00:00Z\n"
        b"1,A,a@b.c,1.00,,2024-01-01T00:00:00Z\n"
        b"x,B,b@c.d,2.00,,2024-01-01T00:00:00Z\n"
    )
    work, refs = _both(pg_url, path, NO_EMPTY)
    (ref,) = refs
    # the batch of the last two records: a duplicate and a bad id
    tail = ref._replace(
        start=ref.start + len(b"1,A,a@b.c,1.00,,2024-01-01T00:00:00Z\n"), first_line=3
    )
    claimed = {"1": _claim(line=2)}
    for prepared in (
        prepare_columns(work, tail, claimed),
        prepare(work, tail, claimed, keep_rows=True),
    ):
        assert prepared is not None
        assert (prepared.read, len(prepared.data)) == (2, 0)
        assert [(d.line_number, d.error_type) for d in prepared.letters] == [
            (4, "CsvValueError"),
            (3, "DuplicateKeyError"),
        ]


def _claim(line: int) -> Any:
    from parallel_batch.store.claims import Claim

    return Claim(line_number=line, chunk_id="c0", outputs=1)
