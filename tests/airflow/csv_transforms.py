"""A rows-kind transform for the CSV job tests: refuses the ids listed in PB_TEST_CSV_FAIL (read
per call, so that a test can "fix" it by clearing the variable before a replay)."""

from __future__ import annotations

import os
from typing import Any

FAIL_ENV = "PB_TEST_CSV_FAIL"


def check(row: dict[str, Any]) -> dict[str, Any]:
    """The row unchanged, or ValueError for an id the environment lists."""
    failing = os.environ.get(FAIL_ENV, "")
    if failing and str(row["id"]) in failing.split(","):
        raise ValueError(f"id {row['id']} refused by the test")
    return row
