"""Tests of the target's value checks: what PostgreSQL would refuse or change without a word is
refused before the write, naming the column."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from parallel_batch.core.target import ColumnLimit, TargetValueError, parse_limit
from parallel_batch.store.copy_data import CopyEncoder
from tests.unit.core._targets import target

OUT = target(
    id="bigint",
    n="integer",
    small="smallint",
    price="numeric(12,2)",
    code="numeric(5,0)",
    note="text",
)
GOOD: tuple[Any, ...] = (1, 2, 3, Decimal("4.50"), Decimal(99999), "fine")


def _with(**values: Any) -> tuple[Any, ...]:
    row = dict(zip(OUT.columns, GOOD, strict=True))
    row.update(values)
    return tuple(row.values())


@pytest.mark.parametrize(
    ("type_name", "limit"),
    [
        ("smallint", ColumnLimit("smallint", int_range=(-32768, 32767))),
        ("bigint", ColumnLimit("bigint", int_range=(-(2**63), 2**63 - 1))),
        ("numeric(12,2)", ColumnLimit("numeric(12,2)", integer_digits=10, scale=2)),
        ("numeric(5)", ColumnLimit("numeric(5)", integer_digits=5, scale=0)),
        ("numeric", None),
        ("text", None),
    ],
)
def test_that_a_column_type_gives_its_limit(type_name: str, limit: ColumnLimit | None) -> None:
    """Test that integer ranges and numeric digits are read from the type's modifiers."""
    assert parse_limit(type_name) == limit


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n": 2**31}, "^n: out of the range of integer$"),
        ({"small": -(2**15) - 1}, "^small: out of the range of smallint$"),
        ({"price": Decimal("1.005")}, r"^price: more than 2 decimal places \(numeric\(12,2\)"),
        ({"price": Decimal("1e10")}, r"^price: out of the range of numeric\(12,2\)$"),
        ({"code": 100_000}, r"^code: out of the range of numeric\(5,0\)$"),
        ({"code": Decimal("0.5")}, r"^code: more than 0 decimal places"),
        ({"note": "a\x00b"}, "^note: a NUL character, which PostgreSQL text cannot store$"),
    ],
)
def test_that_a_value_its_column_would_refuse_or_round_is_refused(
    values: dict[str, Any], message: str
) -> None:
    """Test that check_row and check_rows refuse the value, naming its column and why."""
    row = _with(**values)
    with pytest.raises(TargetValueError, match=message):
        OUT.check_row(row)
    with pytest.raises(TargetValueError, match=message):
        OUT.check_rows([GOOD, row, GOOD])


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_that_a_bigint_out_of_range_is_left_to_the_encoder_and_explained(value: int) -> None:
    """Test that the batch screen leaves a bigint to binary COPY's encoder, which refuses it
    (a smaller integer would wrap around: screened), and that explain() names the column in
    the check's words."""
    row = _with(id=value)
    OUT.check_rows([GOOD, row, GOOD])  # not screened: the encoder refuses it
    encoder = CopyEncoder(OUT.copy)
    with pytest.raises(OverflowError):
        encoder.encode([GOOD, row])
    try:
        encoder.encode([row])
    except OverflowError as exc:
        explained = OUT.explain(row, exc)
    assert str(explained) == "id: out of the range of bigint"
    with pytest.raises(TargetValueError, match=r"^id: out of the range of bigint$"):
        OUT.check_row(row)


def test_that_values_that_fit_pass_and_nulls_are_not_checked() -> None:
    """Test that values at the limits, trailing zeros and NULLs pass both checks."""
    rows = [
        GOOD,
        _with(n=2**31 - 1, small=-(2**15), price=Decimal("99999999.99"), code=Decimal("-99999")),
        _with(price=Decimal("1.10"), code=Decimal("7.00")),
        tuple(None for _ in OUT.columns),
    ]
    OUT.check_rows(rows)
    for row in rows:
        OUT.check_row(row)


def test_that_a_row_of_another_width_is_refused() -> None:
    """Test that an output row with too few values is refused with the columns it must have."""
    with pytest.raises(
        TargetValueError,
        match=r"the output row has 2 values for the 6 columns written to demo.out \(id, n, ",
    ):
        OUT.check_rows([GOOD, (1, 2)])


def test_that_values_of_another_type_are_left_to_the_encoder() -> None:
    """Test that a value that is not a number in a numeric column passes the checks (the COPY
    encoder refuses it), and does not break the column-at-a-time check of the others."""
    OUT.check_rows([GOOD, _with(n="many", price="lots", note=7)])


@pytest.mark.parametrize(
    ("values", "fits"),
    [
        (["1.10", "99999999.99", "-0.01"], True),  # exactly two places: the quick test
        (["1.10", "2.5", "7"], True),  # fewer places: quantized, and equal
        (["1.10", "2.555"], False),  # PostgreSQL would round it
        (["1.10", "1.00E+1"], True),  # 10.0, one place
        (["1.10", "NaN"], False),  # a suspect: check_row words it
    ],
)
def test_that_the_screen_of_a_numeric_column_passes_what_its_scale_keeps(
    values: list[str], fits: bool
) -> None:
    """Test that the column-at-a-time screen of numeric(12,2) passes values with exactly two
    places (one C call each) or fewer, and flags one that would be rounded."""
    from parallel_batch.core.target import _column_fits

    limit = ColumnLimit("numeric(12,2)", integer_digits=10, scale=2)
    assert _column_fits([Decimal(v) for v in values], limit) is fits


def test_that_a_numeric_of_more_digits_than_python_s_default_context_is_screened_exactly() -> None:
    """Test that a numeric(40,2) value of 30 digits with two places fits, alone or beside a
    value that does not (its fate never depends on its batch), and that one with three places
    is refused for its places."""
    from parallel_batch.core.target import _column_fits, _limit_reason

    limit = ColumnLimit("numeric(40,2)", integer_digits=38, scale=2)
    big = Decimal("1" * 28 + ".00")
    assert _column_fits([big], limit) and _column_fits([big, Decimal("0.5")], limit)
    assert not _column_fits([big, Decimal("1.005")], limit)
    assert _limit_reason(big, limit) is None
    assert _limit_reason(Decimal("1" * 30 + ".005"), limit) == (
        "more than 2 decimal places (numeric(40,2) would round it)"
    )
