"""Tests of rows to a DataFrame and back for the dataframe kind: dtype checks that name the
column, NULLs, value conversions, and which input row each output came from."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from parallel_batch.core.frames import frame_in, frame_out
from parallel_batch.exceptions import TransformOutputError
from tests.unit.core._targets import target

OUT = target(
    id="bigint",
    amount="numeric(12,2)",
    ratio="double precision",
    label="text",
    flag="boolean",
    at="timestamp with time zone",
    day="date",
)
T0 = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_that_a_unit_becomes_a_frame_indexed_by_batch_position() -> None:
    """Test that frame_in takes the unit's rows only, named by the source columns, indexed by
    each row's position in the batch."""
    rows = [(i, f"r{i}") for i in range(10)]
    df = frame_in(rows, (4, 7), ["id", "name"])
    assert list(df.columns) == ["id", "name"]
    assert list(df.index) == [4, 5, 6]
    assert df["name"].tolist() == ["r4", "r5", "r6"]


@pytest.mark.parametrize(
    "column",
    [
        pytest.param([1, 2, 3, 4], id="int"),
        pytest.param([1, None, 3, 4], id="int-with-null"),
        pytest.param([1, 2**70, 3, 4], id="beyond-int64"),
        pytest.param([1, True, 3, 4], id="int-then-bool"),
        pytest.param([1, 2.5, 3, 4], id="int-then-float"),
        pytest.param([0.5, None, 1.5, float("nan")], id="float-with-null"),
        pytest.param([True, False, None, True], id="bool-with-null"),
        pytest.param(["a", None, "c", "d"], id="text-with-null"),
        pytest.param([Decimal("1.10"), None, Decimal(2), Decimal(3)], id="numeric"),
        pytest.param([T0, None, T0, T0], id="timestamptz-with-null"),
        pytest.param([None, None, None, None], id="all-null"),
    ],
)
def test_that_frame_in_makes_the_frame_from_records_makes(column: list[Any]) -> None:
    """Test that frame_in's columns have the dtypes and values DataFrame.from_records gives the
    same rows, for a unit that does not start the batch."""
    rows = [(i, value) for i, value in enumerate([0, 0, *column])]
    expected = pd.DataFrame.from_records(rows[2:6], columns=["id", "v"], index=pd.RangeIndex(2, 6))
    got = frame_in(rows, (2, 6), ["id", "v"])
    pd.testing.assert_frame_equal(got, expected)


def test_that_an_empty_unit_becomes_an_empty_frame_with_the_columns() -> None:
    """Test that a unit of no rows is a frame of the source columns and no rows."""
    df = frame_in([(1, "a")], (1, 1), ["id", "name"])
    assert list(df.columns) == ["id", "name"]
    assert len(df) == 0


def test_that_outputs_come_in_target_order_with_nulls_and_python_values() -> None:
    """Test that frame_out orders the columns as the target, fills the missing ones with NULL,
    turns NaN/NaT/None into NULL, floats into exact Decimals for numeric, and times into
    Python datetimes and dates."""
    df = pd.DataFrame(
        {
            "day": pd.to_datetime(["2024-01-02", None]),
            "at": pd.to_datetime([T0, None], utc=True),
            "amount": [1.1, np.nan],
            "id": pd.array([1, None], dtype="Int64"),
            "label": [7, 8],
        },
        index=[3, 4],
    )
    rows, owners = frame_out(df, (3, 5), OUT)
    assert rows == [
        (1, Decimal("1.1"), None, "7", None, T0, dt.date(2024, 1, 2)),
        (None, None, None, "8", None, None, None),
    ]
    assert type(rows[0][5]) is dt.datetime and owners == [3, 4]


def test_that_owners_follow_filters_and_fan_out() -> None:
    """Test that a result indexed by input positions tells which input row each output came
    from (a filtered row has none, a fanned-out row several); another index tells nothing."""
    df = frame_in([(i,) for i in range(6)], (2, 6), ["id"])
    kept = df[df["id"] != 3]
    fanned = pd.concat([kept, kept[kept["id"] == 5]])
    assert frame_out(fanned, (2, 6), OUT)[1] == [2, 4, 5, 5]
    assert frame_out(fanned.reset_index(drop=True), (2, 6), OUT)[1] is None
    assert frame_out(df.iloc[0:0], (2, 6), OUT) == ([], [])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            pd.DataFrame({"id": [1.5]}),
            r"column 'id': float64 values cannot be written to bigint column of demo.out "
            r"\(pandas makes integers with gaps float64: use .astype\('Int64'\)\)",
        ),
        (
            pd.DataFrame({"flag": [1]}),
            "column 'flag': int64 values cannot be written to boolean column of demo.out$",
        ),
        (
            pd.DataFrame({"at": [1.0]}),
            "column 'at': float64 values cannot be written to timestamp with time zone column",
        ),
        (
            pd.DataFrame({"nope": [1]}),
            r"column 'nope' is not a column written to demo.out \(columns: id, amount, ratio,",
        ),
        (pd.DataFrame([[1, 2]], columns=["id", "id"]), "duplicate columns: \\['id', 'id'\\]"),
        ([{"id": 1}], "the transform returned a list; a 'dataframe' transform returns a pandas"),
    ],
)
def test_that_an_output_its_target_cannot_take_is_refused(frame: Any, message: str) -> None:
    """Test that frame_out refuses a dtype its target column cannot take, an unknown or doubled
    column, or a result that is not a DataFrame, naming what is wrong."""
    with pytest.raises(TransformOutputError, match=message):
        frame_out(frame, (0, 1), OUT)


def test_that_numbers_and_booleans_may_go_to_text_and_floats_to_numeric() -> None:
    """Test that the dtype checks let through what PostgreSQL stores without loss."""
    df = pd.DataFrame({"label": [True], "ratio": [2], "amount": [np.float64(0.1)]})
    rows, _ = frame_out(df, (0, 1), OUT)
    assert rows == [(None, Decimal("0.1"), 2, "True", None, None, None)]
