"""Tests of a dataframe result encoded for binary COPY with NumPy: the very bytes psycopg's
encoder gives the same rows (the general way), or None where it cannot give them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from parallel_batch.core.frame_copy import encode_frame
from parallel_batch.core.frames import frame_copy, frame_out
from parallel_batch.exceptions import TransformOutputError
from parallel_batch.store.copy_data import CopyEncoder, CopyFormat
from tests.unit.core._targets import target

OUT = target(
    id="bigint",
    small="smallint",
    mid="integer",
    ratio="double precision",
    single="real",
    flag="boolean",
    at="timestamp with time zone",
    naive="timestamp without time zone",
)
T0 = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
OLD = dt.datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=dt.UTC)  # before 1970 and before 2000


def _general(df: pd.DataFrame) -> bytes:
    rows, _ = frame_out(df, (0, len(df)), OUT)
    return CopyEncoder(OUT.copy).encode(rows).body


def _frames() -> dict[str, pd.DataFrame]:
    n = 4
    return {
        "every type, no NULL": pd.DataFrame(
            {
                "id": np.array([1, -2, 2**62, -(2**63)], dtype=np.int64),
                "small": np.array([0, -(2**15), 2**15 - 1, 7], dtype=np.int16),
                "mid": np.array([0, -(2**31), 2**31 - 1, 7], dtype=np.int64),
                "ratio": [0.0, -1.5, 1e300, 2.0**-1074],
                "single": np.array([0.1, -3.4e38, 1.0, 3.4028234663852886e38]),
                "flag": [True, False, True, False],
                "at": pd.to_datetime([T0, OLD, T0, OLD], utc=True),
                "naive": pd.to_datetime([T0.replace(tzinfo=None)] * n),
            }
        ),
        "NULLs in every type": pd.DataFrame(
            {
                "id": np.arange(n, dtype=np.int64),
                "small": pd.array([1, None, 3, None], dtype="Int16"),
                "mid": pd.array([None, 2, None, 4], dtype="Int64"),
                "ratio": [np.nan, 1.5, None, 2.5],
                "single": pd.array([None, 0.5, 1.5, None], dtype="Float64"),
                "flag": pd.array([True, None, False, None], dtype="boolean"),
                "at": pd.to_datetime([T0, None, OLD, None], utc=True),
                "naive": pd.to_datetime([None, T0.replace(tzinfo=None), None, None]),
            }
        ),
        "columns missing, unsigned, another time zone": pd.DataFrame(
            {
                "id": np.array([1, 2, 3, 4], dtype=np.uint64),
                "mid": np.array([5, 6, 7, 8], dtype=np.uint8),
                "at": pd.to_datetime([T0] * n, utc=True).tz_convert("America/New_York"),
            }
        ),
        "a row of NULLs only": pd.DataFrame({"id": pd.array([None], dtype="Int64")}),
    }


@pytest.mark.parametrize("name", list(_frames()))
def test_that_a_frame_encodes_to_the_bytes_psycopg_gives_its_rows(name: str) -> None:
    """Test that a frame of numbers, booleans and timestamps, with NULLs or without, in target
    order with missing columns NULL, gives exactly the bytes the general way gives."""
    df = _frames()[name]
    data = encode_frame(df, OUT.columns, OUT.copy)
    assert data is not None
    assert data.rows == len(df) and data.binary
    assert data.body == _general(df)


@pytest.mark.parametrize(
    ("column", "values"),
    [
        pytest.param("small", np.array([1, 2**15]), id="beyond smallint"),
        pytest.param("mid", np.array([1, -(2**31) - 1]), id="beyond integer"),
        pytest.param("id", np.array([1, 2**64 - 1], dtype=np.uint64), id="beyond bigint"),
        pytest.param("single", np.array([1.0, 3.5e38]), id="beyond real"),
        pytest.param("ratio", np.array([1.0, np.inf]), id="infinite"),
        pytest.param("at", pd.to_datetime(["2024-01-01 00:00:00.000000001"], utc=True), id="ns"),
        pytest.param("at", pd.to_datetime(["2024-01-01"]), id="naive into timestamptz"),
        pytest.param("naive", pd.to_datetime(["2024-01-01"], utc=True), id="aware into naive"),
        pytest.param("id", pd.Series([1, 2], dtype=object), id="Python objects"),
        pytest.param("ratio", np.array([1, 2]), id="integers into a float column"),
    ],
)
def test_that_a_column_it_cannot_encode_exactly_is_left_to_the_general_way(
    column: str, values: Any
) -> None:
    """Test that encode_frame answers None for a value out of its column's range, a timestamp
    with nanoseconds, a time zone mismatch, or a dtype it does not know."""
    df = pd.DataFrame({column: values})
    assert encode_frame(df, OUT.columns, OUT.copy) is None


TEXT_OUT = target(
    id="bigint",
    note="text",
    at="timestamp with time zone",
    label="character varying",
    flag="boolean",
    short="character varying(5)",
)


def _text_frames() -> dict[str, pd.DataFrame]:
    return {
        "text without NULL": pd.DataFrame(
            {
                "id": [1, 2, 3],
                "note": ["a", "", "é€😀\ttab\nline \\"],
                "label": ["x", "y", "z"],
                "short": ["ab", "abcde", "abcdefgh"],  # too long: the server refuses it
            }
        ),
        "text with NULLs between fixed columns with NULLs": pd.DataFrame(
            {
                "id": np.arange(6, dtype=np.int64),
                "note": ["one", None, "three", np.nan, "", "six"],
                "at": pd.to_datetime([T0, None, T0, OLD, None, T0], utc=True),
                "label": pd.array(["l0", "l1", pd.NA, "l3", "l4", pd.NA], dtype="string"),
                "flag": pd.array([True, None, False, None, True, False], dtype="boolean"),
            }
        ),
        "a text column of NULLs only": pd.DataFrame(
            {"id": [1, 2], "note": pd.Series([None, None], dtype=object)}
        ),
        "the str dtype": pd.DataFrame({"id": [1, 2], "note": pd.Series(["a", "b"], dtype=str)}),
    }


@pytest.mark.parametrize("name", list(_text_frames()))
def test_that_text_encodes_to_the_bytes_psycopg_gives_its_rows(name: str) -> None:
    """Test that frames with text columns (UTF-8 beyond ASCII, empty strings, NULLs as None,
    NaN or pd.NA) among fixed-width ones give exactly the bytes the general way gives."""
    df = _text_frames()[name]
    data = encode_frame(df, TEXT_OUT.columns, TEXT_OUT.copy)
    assert data is not None
    rows, _ = frame_out(df, (0, len(df)), TEXT_OUT)
    assert data.rows == len(df)
    assert data.body == CopyEncoder(TEXT_OUT.copy).encode(rows).body


@pytest.mark.parametrize(
    ("column", "values"),
    [
        pytest.param("note", ["a", "b\x00c"], id="NUL"),
        pytest.param("note", pd.Series(["a", 2], dtype=object), id="not all str"),
        pytest.param("note", np.array([1, 2]), id="numbers into text"),
        # object dtype: pandas' pyarrow-backed str dtype cannot hold a lone surrogate at all
        pytest.param("note", pd.Series(["a", "\ud800"], dtype=object), id="lone surrogate"),
    ],
)
def test_that_text_it_cannot_encode_exactly_is_left_to_the_general_way(
    column: str, values: Any
) -> None:
    """Test that a NUL, values that are not all str, numbers or a string UTF-8 cannot encode
    make encode_frame answer None."""
    df = pd.DataFrame({"id": [1, 2], column: values})
    assert encode_frame(df, TEXT_OUT.columns, TEXT_OUT.copy) is None


def test_that_text_copy_and_an_empty_frame_take_the_general_way() -> None:
    """Test that a target written in text COPY, or a frame of no rows, is not encoded here."""
    df = pd.DataFrame({"id": [1, 2]})
    text = CopyFormat(OUT.copy.type_oids, False)
    assert encode_frame(df, OUT.columns, text) is None
    assert encode_frame(df.iloc[:0], OUT.columns, OUT.copy) is None


def test_that_frame_copy_checks_the_frame_and_gives_the_owners() -> None:
    """Test that frame_copy refuses a column the target does not have (naming it), and gives
    each output's input row: None for a one-to-one frame, the index for a filtered one."""
    df = pd.DataFrame({"id": np.arange(10, 14)}, index=pd.RangeIndex(10, 14))
    with pytest.raises(TransformOutputError, match="'nope'"):
        frame_copy(df.assign(nope=1), (10, 14), OUT)
    whole = frame_copy(df, (10, 14), OUT)
    assert whole is not None and whole[1] == range(10, 14)
    kept = frame_copy(df[df["id"] % 2 == 0], (10, 14), OUT)
    assert kept is not None and list(kept[1] or []) == [10, 12]
    assert kept[0].rows == 2
