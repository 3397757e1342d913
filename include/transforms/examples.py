"""The transforms of the example DAGs (``dags/examples/``), one per transform kind, on demo.events.

parts   rows       an event's amount in parts of at most 1000.00: no part for a zero
                   amount (filtered), several for a large one (fan-out)
stats   dataframe  figures computed a column at a time (pandas)
tier    async      the user's tier from an HTTP service, ``GET {url}/users/{user_id}``
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pandas as pd

from include.transforms.http import ClientPool, pool_for_loop

PART_CENTS = 100_000  # 1000.00 a part at most
BIG_CENTS = 500_000


def parts(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Split an event's amount into parts of at most 1000.00 (none for a zero amount)."""
    cents = int(row["amount"] * 100) if row["amount"] is not None else 0
    return [
        {"event_id": row["id"], "part": n, "amount_cents": min(PART_CENTS, cents - start)}
        for n, start in enumerate(range(0, cents, PART_CENTS))
    ]


def stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per event: its user's bucket, its payload's length, its amount in cents, whether it is big."""
    cents = (df["amount"].astype("float64") * 100).round().astype("Int64")
    return pd.DataFrame(
        {
            "id": df["id"],
            "user_bucket": df["user_id"] % 100,
            "payload_length": df["payload"].str.len(),
            "amount_cents": cents,
            "big": cents > BIG_CENTS,
        }
    )


def stats_row(row: dict[str, Any]) -> dict[str, Any]:
    """:func:`stats` for one row as a dict (``rows`` kind), to compare the two kinds."""
    amount = row["amount"]
    cents = None if amount is None else int((amount * 100).quantize(Decimal(1)))
    return {
        "id": row["id"],
        "user_bucket": None if row["user_id"] is None else row["user_id"] % 100,
        "payload_length": None if row["payload"] is None else len(row["payload"]),
        "amount_cents": cents,
        "big": None if cents is None else cents > BIG_CENTS,
    }


class TierServiceError(Exception):
    """Raised when the tier service answers 5xx or 429: worth retrying."""


# Connections each event loop keeps: at least the requests a task has in flight (concurrency).
CONNECTIONS = 64


async def tier(row: dict[str, Any], *, url: str) -> dict[str, Any]:
    """Look the event's user tier up: ``GET {url}/users/{user_id}`` -> ``{"tier": ...}``."""
    client = pool_for_loop("tier", lambda: ClientPool(CONNECTIONS, timeout=10.0))
    response = await client.get(f"{url.rstrip('/')}/users/{row['user_id']}")
    if response.status_code >= 500 or response.status_code == 429:
        raise TierServiceError(f"the tier service answered HTTP {response.status_code}")
    response.raise_for_status()
    return {"id": row["id"], "user_id": row["user_id"], "tier": response.json()["tier"]}
