"""Transforms of every kind for the ParallelTableJob tests, on demo.events -> demo.events_enriched.

Each computes the demo's enrichment; a row fails while its id is listed in the environment
variable PB_TEST_FAIL_IDS (worker processes inherit it), so a test can fail rows, then "fix" them
by clearing the variable and replay them. Rows whose amount is 0 are filtered out (rows, async,
dataframe); a row whose amount is over 9000 fans out into a second row with id + 10**9.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pandas as pd

FAIL_ENV = "PB_TEST_FAIL_IDS"
FAN_OUT_AMOUNT = 9000
FAN_OUT_OFFSET = 10**9


class FlakyRowError(Exception):
    """Raised for a row listed in PB_TEST_FAIL_IDS."""


def _failing() -> set[int]:
    return {int(i) for i in os.environ.get(FAIL_ENV, "").split(",") if i}


def _enriched(row: dict[str, Any], *, crash: bool = True) -> dict[str, Any]:
    if crash and row["payload"].startswith("crash:"):
        os._exit(139)  # as a segfault would: the pool replaces the worker
    if row["id"] in _failing():
        raise FlakyRowError(f"row {row['id']} is listed in {FAIL_ENV}")
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "payload_sha256": hashlib.sha256(row["payload"].encode()).hexdigest(),
        "amount_cents": int(row["amount"] * 100),
        "created_at": row["created_at"],
    }


def rows(row: dict[str, Any], *, crash: bool = True) -> list[dict[str, Any]] | None:
    """``rows``: filter zero amounts, fan big ones out."""
    if row["amount"] == 0:
        return None
    out = _enriched(row, crash=crash)
    if row["amount"] > FAN_OUT_AMOUNT:
        return [out, {**out, "id": row["id"] + FAN_OUT_OFFSET}]
    return [out]


def batch(rows_in: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``batch``: one output per input (no filter, no fan-out)."""
    columns = ("id", "user_id", "payload", "amount", "created_at")
    return [tuple(_enriched(dict(zip(columns, row, strict=True))).values()) for row in rows_in]


def frame(df: pd.DataFrame) -> pd.DataFrame:
    """``dataframe``: filter zero amounts, fan big ones out, vectorised where it can."""
    if df["payload"].str.startswith("crash:").any():
        os._exit(139)
    failing = df["id"].isin(_failing())
    if failing.any():
        raise FlakyRowError(f"rows {sorted(df.loc[failing, 'id'])} are listed in {FAIL_ENV}")
    kept = df[df["amount"] != 0]
    out = pd.DataFrame(
        {
            "id": kept["id"],
            "user_id": kept["user_id"],
            "payload_sha256": [hashlib.sha256(p.encode()).hexdigest() for p in kept["payload"]],
            "amount_cents": [int(a * 100) for a in kept["amount"]],
            "created_at": kept["created_at"],
        },
        index=kept.index,
    )
    big = out[kept["amount"] > FAN_OUT_AMOUNT].assign(id=lambda d: d["id"] + FAN_OUT_OFFSET)
    return pd.concat([out, big])


async def rows_async(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``async``: :func:`rows` after a short wait, as a call to a service would (it runs in the
    task process: a crash row is enriched like any other)."""
    await asyncio.sleep(0.001)
    return rows(row, crash=False)
