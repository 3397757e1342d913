"""The demo's table transform: ``demo.events`` -> ``demo.events_enriched``, in every kind.

For each event, the SHA-256 of its payload and its amount in cents::

    (id, user_id, payload, amount, created_at)
        -> (id, user_id, sha256(payload).hexdigest(), int(amount * 100), created_at)

A row whose payload starts with ``poison:`` raises :class:`PoisonRowError` on every attempt; one
starting with ``crash:`` ends the process that handles it at once, as a segfault or the OOM killer
would (the worker pool replaces the process; the row ends in the dead letters).

    enrich_events   transform_kind="batch"      the fast path: tuples in, tuples out
    enrich          transform_kind="rows"       a dict in, a dict out
    enrich_frame    transform_kind="dataframe"  vectorised with pandas
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import pandas as pd

POISON_PREFIX = "poison:"
CRASH_PREFIX = "crash:"
# What a shell reports for a process killed by SIGSEGV (128 + 11).
CRASH_EXIT_CODE = 139

_BAD_PREFIXES = (POISON_PREFIX, CRASH_PREFIX)
_HUNDRED = Decimal(100)


class PoisonRowError(Exception):
    """Raised for a row that is bad for good: it fails on every attempt."""


def _cents(amount: Any) -> int | None:
    if amount is None:
        return None
    if isinstance(amount, Decimal | int):
        return int(amount * 100)
    return int(Decimal(str(amount)) * 100)  # a float: its shortest text, not its binary value


def _reject(event_id: Any, payload: str) -> NoReturn:
    """Fail for a poison row; end the process for a crash row."""
    if payload.startswith(CRASH_PREFIX):
        os._exit(CRASH_EXIT_CODE)  # abruptly: no cleanup, no exception, like a segfault
    raise PoisonRowError(f"event {event_id} is a poison row")


def enrich_event(row: Sequence[Any]) -> tuple[Any, ...]:
    """Return one event enriched: ``(id, user_id, payload_sha256, amount_cents, created_at)``.

    :raises PoisonRowError: for a poison row, on every call. A crash row ends the process.
    """
    event_id, user_id, payload, amount, created_at = row
    if payload is not None and payload.startswith(_BAD_PREFIXES):
        _reject(event_id, payload)
    digest = None if payload is None else hashlib.sha256(payload.encode()).hexdigest()
    return (event_id, user_id, digest, _cents(amount), created_at)


def enrich_events(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Enrich a batch of events (``transform_kind="batch"``), as :func:`enrich_event` does each.

    :raises PoisonRowError: at the first poison row. A crash row ends the process.
    """
    sha256 = hashlib.sha256
    hundred = _HUNDRED
    bad = _BAD_PREFIXES
    try:
        return [
            (event_id, user_id, sha256(payload.encode()).hexdigest(), int(amount * hundred), at)
            for event_id, user_id, payload, amount, at in rows
            if not payload.startswith(bad) or _reject(event_id, payload)
        ]
    except (AttributeError, TypeError):  # a NULL payload or amount, a float amount
        return [enrich_event(row) for row in rows]


def enrich(row: dict[str, Any]) -> dict[str, Any]:
    """Enrich one event given as a dict (``transform_kind="rows"``)."""
    payload, amount = row["payload"], row["amount"]
    if payload is None or amount is None or payload.startswith(_BAD_PREFIXES):
        event_id, user_id, digest, cents, created_at = enrich_event(tuple(row.values()))
    else:
        digest, cents = hashlib.sha256(payload.encode()).hexdigest(), int(amount * _HUNDRED)
        event_id, user_id, created_at = row["id"], row["user_id"], row["created_at"]
    return {
        "id": event_id,
        "user_id": user_id,
        "payload_sha256": digest,
        "amount_cents": cents,
        "created_at": created_at,
    }


def enrich_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Enrich a DataFrame of events (``transform_kind="dataframe"``)."""
    bad = df["payload"].str.startswith(_BAD_PREFIXES, na=False)
    if bad.any():
        first = df[bad].iloc[0]
        _reject(first["id"], first["payload"])
    return df.assign(
        payload_sha256=[
            None if p is None else hashlib.sha256(p.encode()).hexdigest() for p in df["payload"]
        ],
        amount_cents=(df["amount"] * _HUNDRED).map(lambda v: None if v is None else int(v)),
    )[["id", "user_id", "payload_sha256", "amount_cents", "created_at"]]
