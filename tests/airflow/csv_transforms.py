"""Transforms for the CSV job tests: a rows-kind one that refuses the ids listed in
PB_TEST_CSV_FAIL (read per call, so that a test can "fix" it by clearing the variable before a
replay), and an async one that reports what the chunk task's garbage collector holds frozen."""

from __future__ import annotations

import gc
import os
from typing import Any

FAIL_ENV = "PB_TEST_CSV_FAIL"


def check(row: dict[str, Any]) -> dict[str, Any]:
    """The row unchanged, or ValueError for an id the environment lists."""
    failing = os.environ.get(FAIL_ENV, "")
    if failing and str(row["id"]) in failing.split(","):
        raise ValueError(f"id {row['id']} refused by the test")
    return row


async def freeze_seen(row: dict[str, Any]) -> dict[str, Any]:
    """async (runs in the chunk task's process): the row, its item saying whether the garbage
    collector holds objects frozen."""
    return {**row, "item": str(gc.get_freeze_count() > 0)}


def check_table(table: Any) -> tuple[Any, dict[int, Exception]]:
    """:func:`check` over columns (``arrow`` kind): the ids the environment lists refused by
    index, the other rows kept."""
    import pyarrow as pa

    failing = {value for value in os.environ.get(FAIL_ENV, "").split(",") if value}
    ids = [str(value) for value in table.column("id").to_pylist()]
    refused: dict[int, Exception] = {
        i: ValueError(f"id {value} refused by the test") for i, value in enumerate(ids)
        if value in failing
    }  # fmt: skip
    return table.filter(pa.array([i not in refused for i in range(len(ids))])), refused
