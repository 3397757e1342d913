"""Test helper: a rows transform for customers records that ends its worker process on a record
named ``CRASH`` (as a segfaulting native library would), and checks every other record as the
demo transform does. Workers import it by ``"tests.integration.sources.csv.crash_transform:check_or_crash"``."""

from __future__ import annotations

import os
from typing import Any

from include.transforms.customers import check

CRASH_NAME = "CRASH"


def check_or_crash(row: dict[str, Any]) -> dict[str, Any]:
    """End this process on a record named CRASH_NAME; else the demo check."""
    if row.get("name") == CRASH_NAME:
        os._exit(139)
    return check(row)
