"""Prepare a batch as columns: read, keep first occurrences, transform and encode, no object a value.

:func:`~parallel_batch.core.prepare.prepare`'s columnar path, taken when the reader reads columns
(a CSV), the transform is none or of the ``arrow`` kind and every target column has an Arrow
encoding (:func:`columns_ready`)::

    reader.read_columns(ref)    typed columns, lines, the bad records' dead letters
        |                       (None: a batch only the row reader reads -> the row path)
    plan_claims                 the same claims as the row path, keys spelled as str() does
        |                       (integer and text keys only)
    isolate(call_arrow)         the arrow transform over the kept rows; a refused row is
        |                       retried alone, then a dead letter (as the batch kind's)
    ArrowCopyEncoder.encode     binary COPY rows (pgpq); a value the target would refuse or
        v                       change -> the row path, whose checks name row and column
    PreparedBatch               as the row path's: same rows written, same dead letters

Returns None whenever the row path must do the batch; nothing is decided before then (the
claims go with the PreparedBatch), so the row path starts afresh.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from parallel_batch.core.arrow_kind import call_arrow, input_types
from parallel_batch.core.source import ColumnsBatch
from parallel_batch.core.target import TargetValueError
from parallel_batch.core.transforms import with_columns
from parallel_batch.engine.isolation import Attempted, isolate, split_range
from parallel_batch.exceptions import TransformOutputError
from parallel_batch.store.arrow_copy import ArrowCopyEncoder, ColumnsRefused, arrow_type_of
from parallel_batch.store.claim_ranges import Packed
from parallel_batch.store.claims import FAILED, Claim, plan_claims
from parallel_batch.store.copy_data import CopyData
from parallel_batch.store.deadletters import DeadLetter, json_payload

__all__ = ["COLUMNS_ENV", "columns_ready", "prepare_columns"]

# Set to 0 to prepare every batch as rows (to compare the two paths, or rule one out).
COLUMNS_ENV = "PARALLEL_BATCH_COLUMNS"
Unit = tuple[int, int]
# The Arrow type of each CSV column kind the columnar reader gives (columns_convert).
KIND_TYPES = {
    "int": pa.int64(),
    "decimal": pa.decimal128(38, 0),
    "text": pa.string(),
    "email": pa.string(),
    "timestamp": pa.timestamp("us", "UTC"),
    "localtime": pa.timestamp("us"),
    "date": pa.date32(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}


def columns_ready(work: Any) -> bool:
    """Whether ``work`` (a BatchWork) can take the columnar path at all."""
    reader, target, transform = work.reader, work.target, work.transform
    if os.environ.get(COLUMNS_ENV, "1") == "0":
        return False
    if not getattr(reader, "columns_ready", lambda: False)():
        return False
    if transform.path is None:
        if not set(target.columns) <= set(reader.columns):
            return False  # the row path says which column is missing
    elif transform.kind != "arrow":
        return False
    if not target.copy.binary or not ArrowCopyEncoder.ready(target.types):
        return False
    written = dict(zip(target.columns, target.types, strict=True))
    for name, column in zip(reader.columns, reader.schema.columns, strict=True):
        found = arrow_type_of(written[name]) if name in written else None
        if found is not None and not found[1](KIND_TYPES.get(column.kind, pa.null())):
            return False  # e.g. timestamptz values into a timestamp column: the row path's
    if work.dedup_key is not None:
        kinds = dict(zip(reader.columns, (c.kind for c in reader.schema.columns), strict=True))
        if kinds.get(work.dedup_key) not in ("int", "text", "email"):
            return False  # a key spelled as str() spells it: integers and text only
    return True


def _letter(
    reader: Any,
    batch: ColumnsBatch,
    index: int,
    error_type: str,
    message: str,
    attempts: int = 1,
    times: tuple[Any, Any] = (None, None),
) -> DeadLetter:
    return DeadLetter(
        item_key=reader.item_key(batch, index),
        line_number=batch.lines[index],
        payload=json_payload(reader.columns, batch.row(index)),
        error_type=error_type,
        message=message,
        attempts=attempts,
        first_failed_at=times[0],
        last_failed_at=times[1],
    )


def _joined(values: pa.Array | pa.ChunkedArray) -> str:
    """``"{v1,v2,...}"``: an array literal of the values as text, joined in C++."""
    strings = pc.cast(values, pa.string())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    offsets = pa.array([0, len(strings)], pa.int32())
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, strings), ",")[0].as_py()
    return "{" + str(joined) + "}"


def _packed(keys: pa.ChunkedArray, lines: list[int], plan: Any) -> Packed | None:
    """The range row's values (claim_ranges.pack) from an integer key column, when every record
    of the batch is a new claim, in order (unique keys, none claimed before); else None."""
    if not pa.types.is_integer(keys.type) or len(plan.new) != len(keys) or keys.null_count:
        return None
    if not len(keys):
        return None
    low, high = pc.min_max(keys).values()
    return Packed(_joined(keys), _joined(pa.array(lines, pa.int64())), low.as_py(), high.as_py())


def _outputs_array(failed: list[int], size: int) -> str | None:
    """``outputs_array`` of a batch whose every record is claimed in order and became one row
    but those at ``failed`` (positions among them): FAILED there."""
    if not failed:
        return None
    made = np.ones(size, dtype=np.int64)
    made[failed] = FAILED
    return _joined(pa.array(made))


def _keys(column: pa.ChunkedArray) -> list[str]:
    strings = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    return [str(key) for key in strings.to_pylist()]


def prepare_columns(work: Any, ref: Any, claimed: dict[str, Claim] | None = None) -> Any | None:
    """The batch ``ref`` prepared as columns (a PreparedBatch), or None for the row path."""
    from parallel_batch.core.prepare import DUPLICATE_ERROR, BatchClaims, PreparedBatch

    reader, target = work.reader, work.target
    batch: ColumnsBatch | None = reader.read_columns(ref)
    if batch is None:
        return None
    letters = list(batch.errors)
    table = batch.table
    order: list[int] = list(range(table.num_rows))
    plan = None
    if work.dedup_key is not None:
        plan = plan_claims(_keys(table.column(work.dedup_key)), batch.lines, claimed or {})
        packed = _packed(table.column(work.dedup_key), batch.lines, plan)
        if packed is None:
            plan.new.packed()  # the range row's arrays made here, in the worker (see NewClaims)
        letters.extend(
            _letter(
                reader,
                batch,
                i,
                DUPLICATE_ERROR,
                f"duplicate {work.dedup_key} {key}: the record on line {first} has it too, and "
                "the first occurrence in the file is the one loaded",
            )
            for i, (key, first) in sorted(plan.duplicates.items())
        )
        if len(plan.loads) != len(order):
            order = plan.loads
            table = table.take(pa.array(order, pa.int64()))
    outputs: dict[str, int] = {}
    given_up_at: list[int] = []  # positions among the rows transformed
    try:
        if work.transform.path is None:
            out = table.select(list(target.columns))
        else:
            found = _transformed(work, _typed(table, target))
            if found is None:
                return None
            out, given_up = found
            for unit, error, attempts, times in given_up:
                given_up_at.append(unit[0])
                index = order[unit[0]]
                letters.append(
                    _letter(reader, batch, index, type(error).__name__, str(error), attempts, times)
                )
                if plan is not None:
                    outputs[_keys(batch.table.slice(index, 1).column(work.dedup_key))[0]] = FAILED
        data: CopyData = ArrowCopyEncoder(target.columns, target.types).encode(out)
    except ColumnsRefused as refused:
        if refused.by_type:  # every batch would be: the row path's from now on
            object.__setattr__(work, "columnar", False)
        return None
    except (pa.ArrowException, KeyError):  # outputs of types that do not go together
        return None
    claims = None
    if plan is not None:
        if packed is not None:  # every record claimed, in order: outputs by position
            plan.new.made(packed, outputs, _outputs_array(given_up_at, len(plan.new)))
        else:
            plan.new.outputs_array(outputs)  # made here, in the worker, as the arrays are
        claims = BatchClaims(plan, outputs)
    prepared = PreparedBatch(
        read=batch.read,
        data=data,
        letters=letters,
        filtered=0,
        fanout=0,
        position=reader.position(ref),
        claims=claims,
    )
    prepared.check()
    return prepared


def _typed(table: pa.Table, target: Any) -> pa.Table:
    """The transform's input with the types the row path gives it (``input_types``).

    :raises ColumnsRefused: for a value its type cannot hold (more decimals than the scale):
        the row path's target check words it.
    """
    types = input_types(table.column_names, target.columns, target.types)
    columns = []
    for column, wanted in zip(table.columns, types, strict=True):
        if wanted is not None and column.type != wanted:
            try:
                column = pc.cast(column, wanted)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ColumnsRefused(str(exc)) from exc
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _transformed(
    work: Any, table: pa.Table
) -> tuple[pa.Table, list[tuple[Unit, Exception, int, tuple[Any, Any]]]] | None:
    """The arrow transform over ``table`` (isolated as the row path isolates a batch
    transform): the output rows in order, and the rows given up on. None: an output the row
    path must judge (a column the target lacks)."""
    fn = work.transform.load()
    fn = with_columns(fn, tuple(table.column_names), work.target.columns)
    retry = work.transform.retry
    policy = dataclasses.replace(
        retry, give_up_on=(*retry.give_up_on, TargetValueError, TransformOutputError)
    )

    def attempt(unit: Unit) -> Attempted[Unit, pa.Table]:
        out, _, refused = call_arrow(fn, table.slice(unit[0], unit[1] - unit[0]))
        errors = [((unit[0] + i, unit[0] + i + 1), exc) for i, exc in sorted(refused.items())]
        return Attempted(out, errors)

    if not table.num_rows:  # nothing to transform (every record bad or a duplicate)
        return _in_target(table, work.target.columns, empty=True), []
    isolated = isolate((0, table.num_rows), attempt, split_range, policy)
    parts = [part for _, part in sorted(isolated.done, key=lambda done: done[0])]
    columns = set(work.target.columns)
    if any(not set(part.column_names) <= columns for part in parts):
        return None
    out = pa.concat_tables(
        [_in_target(part, work.target.columns) for part in parts]
        or [_in_target(table.slice(0, 0), work.target.columns, empty=True)],
        promote_options="permissive",
    )
    given_up = [
        (f.unit, f.error, f.attempts, (f.first_failed_at, f.last_failed_at))
        for f in sorted(isolated.failed, key=lambda f: f.unit)
    ]
    return out, given_up


def _in_target(part: pa.Table, columns: tuple[str, ...], *, empty: bool = False) -> pa.Table:
    """``part``'s columns in the target's order, a column it lacks as NULLs."""
    arrays = [
        part.column(name) if name in part.column_names and not empty else pa.nulls(part.num_rows)
        for name in columns
    ]
    return pa.table(arrays, names=list(columns))
