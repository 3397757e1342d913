"""Tests of applying each transform kind to a unit of rows (core.apply), and of preparing a
batch in process (core.prepare): failing rows isolated and retried, counts that add up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from parallel_batch.core.apply import Applier, RetriedError
from parallel_batch.core.prepare import BatchWork, PreparedBatch, prepare, prepare_in_worker
from parallel_batch.core.source import KeyRange, ReadBatch
from parallel_batch.core.target import TargetValueError
from parallel_batch.core.transforms import DEFAULT_RETRY, TransformKind, TransformSpec
from parallel_batch.engine.isolation import split_range
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.exceptions import TransformOutputError
from parallel_batch.store.copy_data import CopyData, CopyEncoder
from tests.unit.core._targets import target

HERE = __name__
OUT = target(v="bigint", w="integer")
Row = tuple[Any, ...]

# value -> failures left before it succeeds (-1: it always fails); set by each test.
FAILURES: dict[int, int] = {}
# The values of each call of a transform of this module.
CALLS: list[list[int]] = []


class FlakyError(Exception):
    """Raised by the transforms below for a value in FAILURES."""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    FAILURES.clear()
    CALLS.clear()
    yield


def _fail(value: int) -> None:
    left = FAILURES.get(value, 0)
    if left:
        FAILURES[value] = left - 1 if left > 0 else left
        raise FlakyError(f"bad value {value}")


def double(rows: list[Row]) -> list[Row]:
    """batch: (v,) -> (v, 2v); raises at a value in FAILURES."""
    CALLS.append([v for (v,) in rows])
    for (v,) in rows:
        _fail(v)
    return [(v, 2 * v) for (v,) in rows]


def shape(row: dict[str, Any]) -> Any:
    """rows: by v % 5: 0 None, 1 [], 2 two rows, 3 a str (not an output), else one row."""
    v = row["v"]
    CALLS.append([v])
    _fail(v)
    return {
        0: None,
        1: [],
        2: [{"v": v, "w": 1}, {"v": v + 100, "w": 2}],
        3: "oops",
    }.get(v % 5, {"v": v, "w": v})


def double_row(row: dict[str, Any]) -> dict[str, Any]:
    """rows: {v} -> {v, w: 2v}; raises at a value in FAILURES."""
    CALLS.append([row["v"]])
    _fail(row["v"])
    return {"v": row["v"], "w": 2 * row["v"]}


async def ashape(row: dict[str, Any]) -> Any:
    """async: :func:`shape`."""
    return shape(row)


def frame(df: pd.DataFrame) -> pd.DataFrame:
    """dataframe: drop odd values, double the others' rows (w 0 and 1)."""
    CALLS.append(df["v"].tolist())
    for v in df["v"]:
        _fail(int(v))
    even = df[df["v"] % 2 == 0]
    return pd.concat([even.assign(w=0), even.assign(w=1)])


def triple(df: pd.DataFrame) -> pd.DataFrame:
    """dataframe: w = 3v, the input's index kept (one output per input row)."""
    return df.assign(w=df["v"] * 3)


def triple_reindexed(df: pd.DataFrame) -> pd.DataFrame:
    """dataframe: :func:`triple` with a new 0-based index (whose rows are they? unknown)."""
    return triple(df).reset_index(drop=True)


def unknown_column(row: dict[str, Any]) -> dict[str, Any]:
    return {"v": row["v"], "zzz": 1}


def extra_column(row: dict[str, Any]) -> dict[str, Any]:
    return {"v": row["v"], "w": 1, "zzz": 1}


def drop_all(rows: list[Row]) -> list[Row]:
    return []


def too_big_on_7(rows: list[Row]) -> list[Row]:
    """batch: w = 2**40 (more than an integer column takes) for v == 7."""
    return [(v, 2**40 if v == 7 else v) for (v,) in rows]


def too_big_on_7_row(row: dict[str, Any]) -> dict[str, Any]:
    """rows: :func:`too_big_on_7` for one row; raises at a value in FAILURES."""
    _fail(row["v"])
    return {"v": row["v"], "w": 2**40 if row["v"] == 7 else row["v"]}


def refuse_odd(rows: list[Row]) -> list[Row | Exception]:
    """batch: (v,) -> (v, 2v), in place of an odd v its refusal (a FlakyError returned)."""
    CALLS.append([v for (v,) in rows])
    return [FlakyError(f"odd {v}") if v % 2 else (v, 2 * v) for (v,) in rows]


def refuse_odd_too_big_on_4(rows: list[Row]) -> list[Row | Exception]:
    """batch: :func:`refuse_odd`, and w out of an integer's range for v == 4."""
    return [FlakyError(f"odd {v}") if v % 2 else (v, 2**40 if v == 4 else v) for (v,) in rows]


def gc_state(rows: list[Row]) -> list[Row]:
    """batch: (v,) -> (v, 1 if the garbage collector runs during the call else 0)."""
    import gc

    return [(v, int(gc.isenabled())) for (v,) in rows]


def named(rows: list[Row], *, columns: Sequence[str], target_columns: Sequence[str]) -> list[Row]:
    """batch: each output row built by name from the columns it is given."""
    CALLS.append([len(columns), len(target_columns)])
    return [
        tuple(dict(zip(columns, row, strict=True)).get(c, -1) for c in target_columns)
        for row in rows
    ]


def rows_named_columns(columns: list[Row]) -> list[Row]:
    """batch: its rows parameter happens to be named ``columns`` (nothing is injected)."""
    return [(v, v) for (v,) in columns]


def interrupt(rows: list[Row]) -> list[Row]:
    raise KeyboardInterrupt


def interrupt_row(row: dict[str, Any]) -> dict[str, Any]:
    raise KeyboardInterrupt


@dataclass(frozen=True)
class ListReader:
    """A chunk reader over rows in hand: a batch is the index range ``(start, stop)``."""

    rows: tuple[Row, ...]
    columns: tuple[str, ...] = ("v",)

    def batches(self, after: Any, batch_rows: int) -> Iterator[tuple[int, int]]:
        start = 0 if after is None else after
        for a in range(start, len(self.rows), batch_rows):
            yield (a, min(a + batch_rows, len(self.rows)))

    def read(self, ref: tuple[int, int]) -> ReadBatch:
        return ReadBatch(list(self.rows[ref[0] : ref[1]]))

    def split(self, ref: tuple[int, int], parts: int) -> Sequence[tuple[int, int]] | None:
        return split_range(ref, parts)

    def position(self, ref: tuple[int, int]) -> int:
        return ref[1]

    def item_key(self, batch: ReadBatch, index: int) -> str:
        return str(batch.rows[index][0])

    def close(self) -> None:
        pass

    def owned(self) -> KeyRange | None:
        return None


def _values(n: int) -> list[Row]:
    return [(v,) for v in range(n)]


def _spec(fn: str, kind: TransformKind, **options: Any) -> TransformSpec:
    return TransformSpec(f"{HERE}:{fn}", kind, **options)


def _prepare(fn: str, kind: TransformKind, n: int, **options: Any) -> PreparedBatch:
    work = BatchWork(ListReader(tuple(_values(n))), _spec(fn, kind, **options), OUT)
    return prepare(work, (0, n))


# ---- each kind on a unit ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rows", "async"])
def test_that_row_kinds_filter_fan_out_and_fail_rows_alone(kind: TransformKind) -> None:
    """Test that None and [] filter a row, a list fans it out, and a row whose call raises or
    returns something else fails on its own while the others' outputs are kept."""
    FAILURES[4] = -1
    applier = Applier(
        _spec("shape" if kind == "rows" else "ashape", kind), ("v",), OUT, keep_rows=True
    )
    try:
        attempted = applier.attempt(_values(10), (0, 10))
    finally:
        applier.close()
    out = attempted.value
    # 0, 5: None; 1, 6: []; 2, 7: two rows; 3, 8: "oops"; 4: raises; 9: one row
    assert out.rows == [(2, 1), (102, 2), (7, 1), (107, 2), (9, 9)]
    assert out.owners == [2, 2, 7, 7, 9]
    assert out.counts == {0: 0, 1: 0, 2: 2, 5: 0, 6: 0, 7: 2, 9: 1}
    assert (out.written, out.filtered, out.fanout) == (5, 4, 2)
    errors = {unit: error for unit, error in attempted.item_errors}
    assert sorted(errors) == [(3, 4), (4, 5), (8, 9)]
    assert isinstance(errors[(3, 4)], TransformOutputError)
    assert str(errors[(3, 4)]) == (
        f"the transform returned a str; a '{kind}' transform returns a dict (one output row), "
        "a list of dicts, or None (filter the row out)"
    )
    error = errors[(4, 5)]
    if kind == "async":  # retried in the event loop already: the last error, and the tries
        assert isinstance(error, RetriedError)
        assert (error.failure.error_type, error.failure.attempts) == (
            "FlakyError",
            DEFAULT_RETRY.max_attempts,
        )
        assert applier.policy.max_attempts == 1
    else:
        assert isinstance(error, FlakyError)
        assert applier.policy.max_attempts == DEFAULT_RETRY.max_attempts
        assert TargetValueError in applier.policy.give_up_on  # no retry gives another output


def test_that_rows_are_called_once_each_and_a_raise_fails_its_row_alone() -> None:
    """Test that a rows transform is called once per row of a unit that does not start at 0,
    rows after a raising one go on, and a unit of whole dicts is encoded in one pass with one
    output per row (counts None, as claims expect)."""
    FAILURES.update({3: -1, 7: -1})
    applier = Applier(_spec("double_row", "rows"), ("v",), OUT, keep_rows=True)
    attempted = applier.attempt(_values(10), (2, 10))
    assert [[v] for v in range(2, 10)] == CALLS
    out = attempted.value
    assert out.rows == [(v, 2 * v) for v in (2, 4, 5, 6, 8, 9)]
    assert out.owners == [2, 4, 5, 6, 8, 9]
    assert out.counts == dict.fromkeys((2, 4, 5, 6, 8, 9), 1)
    assert [unit for unit, _ in attempted.item_errors] == [(3, 4), (7, 8)]
    assert all(isinstance(error, FlakyError) for _, error in attempted.item_errors)

    CALLS.clear()
    whole = applier.attempt(_values(12), (10, 12)).value
    assert CALLS == [[10], [11]]
    assert (whole.rows, whole.owners, whole.counts) == ([(10, 20), (11, 22)], [10, 11], None)
    assert (whole.written, whole.filtered, whole.fanout) == (2, 0, 0)
    assert whole.data == CopyEncoder(OUT.copy).encode([(10, 20), (11, 22)]).body


def test_that_a_dataframe_keeping_the_index_is_one_output_per_row() -> None:
    """Test that a dataframe transform that keeps its input's index (assign) counts one output
    per input row (counts None, as claims expect), and one that drops the index has outputs of
    unknown rows (counts by net difference)."""
    kept = Applier(_spec("triple", "dataframe"), ("v",), OUT, keep_rows=True)
    out = kept.attempt(_values(12), (4, 12)).value
    assert out.rows == [(v, 3 * v) for v in range(4, 12)]
    assert (out.counts, out.owners, out.filtered, out.fanout) == (None, list(range(4, 12)), 0, 0)
    lost = Applier(_spec("triple_reindexed", "dataframe"), ("v",), OUT, keep_rows=True)
    out = lost.attempt(_values(12), (4, 12)).value
    assert (out.counts, out.owners, out.written) == (None, None, 8)


@pytest.mark.parametrize("fn", ["unknown_column", "extra_column"])
def test_that_a_row_output_with_an_unknown_column_fails_naming_it(fn: str) -> None:
    """Test that a dict key that is not a written column fails its row with TargetValueError,
    in place of a written column or beside all of them."""
    attempted = Applier(_spec(fn, "rows"), ("v",), OUT).attempt(_values(2), (0, 2))
    assert [str(e) for _, e in attempted.item_errors] == [
        "'zzz' is not a column written to demo.out (columns: v, w)"
    ] * 2
    assert all(isinstance(e, TargetValueError) for _, e in attempted.item_errors)


def test_that_a_batch_transform_returns_one_output_per_input() -> None:
    """Test that a batch transform's outputs are checked against its inputs' count."""
    applier = Applier(_spec("drop_all", "batch"), ("v",), OUT)
    with pytest.raises(
        TransformOutputError,
        match=r"^the transform returned 0 rows for 3 input rows; a 'batch' transform returns "
        r"exactly one output row per input row \(use transform_kind='rows' or 'dataframe'",
    ):
        applier.attempt(_values(3), (0, 3))
    out = Applier(_spec("double", "batch"), ("v",), OUT).attempt(_values(4), (1, 3)).value
    assert (out.written, out.filtered, out.fanout, out.counts) == (2, 0, 0, None)


def test_that_a_batch_transform_refuses_rows_in_place() -> None:
    """Test that an exception a batch transform returns in a row's place makes that row alone
    a dead letter (its type and message; no split of the batch, the policy's tries alone), the
    others written; the counts add up and the claims see the refused rows as failed."""
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0)
    prepared = _prepare("refuse_odd", "batch", 8, retry=policy)
    assert [(x.item_key, x.error_type, x.message, x.attempts) for x in prepared.letters] == [
        (str(v), "FlakyError", f"odd {v}", 2) for v in (1, 3, 5, 7)
    ]
    assert (prepared.read, len(prepared.data), prepared.filtered, prepared.fanout) == (8, 4, 0, 0)
    prepared.check()
    # the whole batch, then each refused row alone once more (2 tries in all): never a split
    calls = list(CALLS)
    assert calls == [list(range(8)), [1], [3], [5], [7]]
    out = Applier(_spec("refuse_odd", "batch"), ("v",), OUT, keep_rows=True).attempt(
        _values(6), (1, 6)
    )
    assert [(unit, str(error)) for unit, error in out.item_errors] == [
        ((1, 2), "odd 1"),
        ((3, 4), "odd 3"),
        ((5, 6), "odd 5"),
    ]
    assert (out.value.rows, out.value.owners) == ([(2, 4), (4, 8)], [2, 4])
    assert (out.value.counts, out.value.filtered) == ({2: 1, 4: 1}, 0)


def test_that_a_batch_transform_refusing_rows_still_isolates_a_value_the_target_refuses() -> None:
    """Test that beside rows refused in place, an output the target cannot take fails its own
    row (the unit is split to it), naming the column."""
    prepared = _prepare("refuse_odd_too_big_on_4", "batch", 8, retry=RetryPolicy(max_attempts=1))
    letters = {x.item_key: x for x in prepared.letters}
    assert sorted(letters) == ["1", "3", "4", "5", "7"]
    assert (letters["4"].error_type, letters["4"].message) == (
        "TargetValueError",
        "w: out of the range of integer",
    )
    assert {letters[k].error_type for k in ("1", "3", "5", "7")} == {"FlakyError"}
    assert len(prepared.data) == 3
    prepared.check()


def test_that_a_batch_transform_gets_the_column_names_it_asks_for() -> None:
    """Test that a batch function with ``columns`` and ``target_columns`` parameters is given
    the input row's and the output row's column names (unless its kwargs give them)."""
    out = (
        Applier(_spec("named", "batch"), ("x", "v"), OUT, keep_rows=True)
        .attempt([("a", 1), ("b", 2)], (0, 2))
        .value
    )
    assert out.rows == [(1, -1), (2, -1)] and CALLS == [[2, 2]]
    plain = Applier(_spec("rows_named_columns", "batch"), ("v",), OUT).attempt(_values(2), (0, 2))
    assert plain.value.written == 2 and not plain.item_errors
    given = _spec("named", "batch", kwargs={"columns": ["w", "v"]})
    out = Applier(given, ("x", "v"), OUT, keep_rows=True).attempt([(5, 1)], (0, 1)).value
    assert out.rows == [(1, 5)]


def test_that_a_dataframe_transform_reports_each_input_rows_outputs() -> None:
    """Test that a DataFrame result indexed by the inputs counts filtered and fanned-out rows
    per input row."""
    out = (
        Applier(_spec("frame", "dataframe"), ("v",), OUT, keep_rows=True)
        .attempt(_values(6), (1, 6))
        .value
    )
    assert out.rows == [(2, 0), (4, 0), (2, 1), (4, 1)]
    assert out.counts == {1: 0, 2: 2, 3: 0, 4: 2, 5: 0}
    assert (out.written, out.filtered, out.fanout) == (4, 3, 2)


def test_that_no_transform_writes_the_columns_of_the_same_names() -> None:
    """Test that without a transform each row's written columns are picked by name, and every
    written column must be read."""
    out = (
        Applier(TransformSpec(), ("x", "w", "v"), OUT, keep_rows=True)
        .attempt([("a", 1, 10), ("b", 2, 20)], (0, 2))
        .value
    )
    assert out.rows == [(10, 1), (20, 2)]
    with pytest.raises(
        TransformOutputError, match=r"with no transform, every column written must be read: \['w'\]"
    ):
        Applier(TransformSpec(), ("v", "x"), OUT)


# ---- a batch prepared: isolation, retries, counts ----------------------------------------------


@pytest.mark.parametrize(
    ("fn", "kind"), [("double", "batch"), ("double_row", "rows"), ("frame", "dataframe")]
)
def test_that_raising_rows_are_isolated_and_the_others_written(
    fn: str, kind: TransformKind
) -> None:
    """Test that rows failing on every try end as dead letters after all their tries, in batch
    order, and every other row is transformed."""
    FAILURES.update({12: -1, 40: -1, 44: -1})
    prepared = _prepare(fn, kind, 64)
    assert [letter.item_key for letter in prepared.letters] == ["12", "40", "44"]
    assert {(letter.error_type, letter.attempts) for letter in prepared.letters} == {
        ("FlakyError", DEFAULT_RETRY.max_attempts)
    }
    assert prepared.letters[0].message == "bad value 12"
    assert prepared.letters[0].payload == {"v": 12}
    assert prepared.read == 64 and prepared.position == 64
    prepared.check()
    # each failing row was tried alone max_attempts times in all
    alone = [call[0] for call in CALLS if len(call) == 1 and call[0] in FAILURES]
    assert sorted(alone) == sorted([12, 40, 44] * DEFAULT_RETRY.max_attempts)


def test_that_a_row_that_recovers_on_a_retry_is_written() -> None:
    """Test that a row failing in its batch, alone, and on its first retry, then succeeding, is
    an output and not a dead letter (3 tries alone allowed)."""
    FAILURES[5] = 3
    prepared = _prepare("double", "batch", 10)
    assert prepared.letters == [] and len(prepared.data) == 10


def test_that_an_error_not_worth_retrying_is_given_up_at_once() -> None:
    """Test that an error the policy gives up on is a dead letter after one try alone."""
    FAILURES[1] = -1
    policy = RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=0.0, give_up_on=(FlakyError,))
    (letter,) = _prepare("double", "batch", 4, retry=policy).letters
    assert (letter.item_key, letter.attempts) == ("1", 1)


def test_that_a_transform_losing_rows_dead_letters_each_row() -> None:
    """Test that a batch transform returning no rows makes every row a TransformOutputError."""
    prepared = _prepare("drop_all", "batch", 3, retry=RetryPolicy(max_attempts=1))
    assert [(x.item_key, x.error_type) for x in prepared.letters] == [
        ("0", "TransformOutputError"),
        ("1", "TransformOutputError"),
        ("2", "TransformOutputError"),
    ]
    assert (prepared.read, len(prepared.data)) == (3, 0)


def test_that_a_value_the_target_refuses_fails_its_row_alone() -> None:
    """Test that an output value out of its column's range is its source row's dead letter,
    naming the column, while the rest of the batch is encoded."""
    prepared = _prepare("too_big_on_7", "batch", 20)
    (letter,) = prepared.letters
    assert (letter.item_key, letter.error_type) == ("7", "TargetValueError")
    assert letter.message == "w: out of the range of integer"
    assert len(prepared.data) == 19


def test_that_a_row_output_that_does_not_fit_fails_alone_beside_a_raising_row() -> None:
    """Test that in a rows unit whose results are all dicts, one output out of its column's
    range fails its row alone (the one-pass encoding falls back to row by row), beside a row
    whose call raised."""
    FAILURES[3] = -1
    prepared = _prepare("too_big_on_7_row", "rows", 20)
    letters = {letter.item_key: letter for letter in prepared.letters}
    assert sorted(letters) == ["3", "7"]
    assert (letters["3"].error_type, letters["7"].error_type) == ("FlakyError", "TargetValueError")
    assert letters["7"].message == "w: out of the range of integer"
    expected = [(v, v) for v in range(20) if v not in (3, 7)]
    assert prepared.data.body == CopyEncoder(OUT.copy).encode(expected).body


def test_that_filtered_and_fanned_out_rows_add_up() -> None:
    """Test that a prepared batch's written, filtered, fan-out and failed counts reconcile with
    the rows read."""
    prepared = _prepare("shape", "rows", 20)
    # of 0..19: 8 filtered (v % 5 in 0, 1), 4 fanned out into 8 (v % 5 == 2), 4 refused
    # ("oops"), 4 one row each
    assert (prepared.read, len(prepared.data), prepared.filtered, prepared.fanout) == (20, 12, 8, 4)
    assert len(prepared.letters) == 4
    prepared.check()


@pytest.mark.parametrize(("fn", "kind"), [("interrupt", "batch"), ("interrupt_row", "rows")])
def test_that_a_base_exception_is_not_isolated(fn: str, kind: TransformKind) -> None:
    """Test that KeyboardInterrupt from the transform propagates instead of becoming a dead
    letter."""
    with pytest.raises(KeyboardInterrupt):
        _prepare(fn, kind, 3)


def test_that_counts_that_do_not_add_up_are_a_bug() -> None:
    """Test that PreparedBatch.check refuses a batch whose counts do not reconcile."""
    prepared = PreparedBatch(3, CopyData(b"", 1, True), [], 1, 0, 3)
    with pytest.raises(RuntimeError, match="a batch of 3 records came back as 1 rows written"):
        prepared.check()


WIDE = target(a="bigint", b="text", c="integer", d="text")
# What each row's output holds, by v % 6: the columns left out are NULL wherever they stand.
_PARTS: dict[int, tuple[str, ...]] = {
    0: ("a", "b"),  # the last columns left out
    1: ("a", "c"),  # one in the middle, one at the end
    2: ("a", "b", "c", "d"),  # every column
    3: ("d", "a"),  # another key order
    4: ("c",),  # one column
    5: ("a", "b"),
}


def partial(row: dict[str, Any]) -> dict[str, Any]:
    """rows: the written columns _PARTS[v % 6] names (_PARTS[1] for v >= 1000) only."""
    v = row["v"]
    values = {"a": v, "b": f"b{v}", "c": v % 100, "d": f"d{v}"}
    return {name: values[name] for name in _PARTS[v % 6 if v < 1000 else 1]}


@pytest.mark.parametrize(
    "values",
    [
        [6 * k for k in range(5)],  # all alike, last columns left out
        [1000 + k for k in range(5)],  # all alike, a middle column left out
        [3 + 6 * k for k in range(5)],  # all alike, keys in another order
        [4, 10, 16],  # all alike, one column
        list(range(12)),  # mixed
        [2, 0, 1],  # the first has every column, the others not
    ],
)
def test_that_dicts_leaving_columns_out_are_written_with_nulls_there(values: list[int]) -> None:
    """Test that outputs leaving out written columns (all the same ones, or each its own) are
    the written columns in the target's order with NULL for the others, whichever path built
    them: the same rows and bytes as one dict per output merged over all-NULL."""
    applier = Applier(_spec("partial", "rows"), ("v",), WIDE, keep_rows=True)
    out = applier.attempt([(v,) for v in values], (0, len(values))).value
    expected = []
    for v in values:
        got = partial({"v": v})
        expected.append(tuple(got.get(name) for name in WIDE.columns))
    assert out.rows == expected
    assert out.data == CopyEncoder(WIDE.copy).encode(expected).body
    assert (out.written, out.filtered, out.fanout) == (len(values), 0, 0)


def test_that_a_worker_prepares_a_batch_with_the_garbage_collector_paused() -> None:
    """Test that prepare_in_worker pauses the cyclic garbage collector for the batch only: the
    transform runs without it, it runs again afterwards, and stays off if it was off."""
    import gc

    work = BatchWork(ListReader(tuple(_values(3))), _spec("gc_state", "batch"), OUT)
    encoded = CopyEncoder(OUT.copy).encode([(v, 0) for v in range(3)]).body
    assert gc.isenabled()
    assert prepare_in_worker(work, (0, 3)).data.body == encoded
    assert gc.isenabled()
    assert prepare(work, (0, 3)).data.body != encoded  # in process: the collector as it was
    gc.disable()
    try:
        assert prepare_in_worker(work, (0, 3)).data.body == encoded
        assert not gc.isenabled()
    finally:
        gc.enable()
