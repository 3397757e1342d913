"""Tests of parallel_batch.progress.formats: how the views' values read."""

from __future__ import annotations

import pytest

from parallel_batch.progress.formats import (
    cut,
    format_age,
    format_count,
    format_eta,
    format_percent,
    format_rate,
    json_ready,
)


def test_formats() -> None:
    """Test that counts, rates, ETAs and ages read well, and unknowns show as such."""
    assert (format_count(1234567), format_count(None)) == ("1,234,567", "?")
    assert (format_rate(12345.6), format_rate(None), format_rate(float("inf"))) == (
        "12,346 rows/s",
        "-",
        "-",
    )
    assert (format_eta(185), format_eta(0.0), format_eta(None)) == ("3m05s", "done", "-")
    assert (format_age(7.2), format_age(None)) == ("7s ago", "-")
    assert cut("a  b\nc") == "a b c"
    with pytest.raises(ValueError, match="chars must be at least 4"):
        cut("text", 3)


def test_percent_rounds_down_and_clamps() -> None:
    """Test that 99.9% reads 99% (never 100% before done), and values outside 0..100 clamp."""
    assert [format_percent(p) for p in (0.0, 45.0, 99.9, 100.0, 250.0, -3.0)] == [
        "0%",
        "45%",
        "99%",
        "100%",
        "100%",
        "0%",
    ]


def test_json_ready_makes_rows_json_able() -> None:
    """Test that non-finite floats become None and tuples lists."""
    assert json_ready({"a": float("nan"), "b": (1, 2.5)}) == {"a": None, "b": [1, 2.5]}
