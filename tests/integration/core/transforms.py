"""Transforms for the core's tests, one per kind and per fault. Worker processes import them by
``path("<name>")`` (``"tests.integration.core.transforms:<name>"``), so they live at module
level.

Each enriches events as ``include/transforms/events.py`` does (``poison:`` rows raise,
``crash:`` rows end their process); the ``_shaped`` ones also filter and fan out by id::

    id % 10 == 3   None (filtered)          id % 10 == 6   [] (filtered)
    id % 10 == 9   two rows: the event, and a copy with id + FANOUT_OFFSET

so :data:`SHAPED_EXPECTED_SQL` is what the target must hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from typing import Any

import pandas as pd
import pyarrow as pa

from include.transforms import events

__all__ = [
    "FANOUT_OFFSET",
    "HANG_PREFIX",
    "SHAPED_EXPECTED_SQL",
    "Abort",
    "abort_on_batch",
    "aenrich_shaped",
    "bad_amount_on_5",
    "drop_every_row",
    "enrich_any",
    "enrich_or_hang",
    "enrich_shaped",
    "frame_shaped",
    "path",
    "refuse_poison",
]

FANOUT_OFFSET = 10_000_000
HANG_PREFIX = "hang:"
HANG_SECONDS = 600.0

# What the target holds after a ``_shaped`` transform (see the module docstring).
SHAPED_EXPECTED_SQL = f"""
    SELECT e.id + f.k * {FANOUT_OFFSET} AS id, user_id, payload_sha256, amount_cents, created_at
    FROM (
        SELECT id, user_id, encode(sha256(convert_to(payload, 'UTF8')), 'hex') AS payload_sha256,
               (amount * 100)::bigint AS amount_cents, created_at
        FROM demo.events
        WHERE payload NOT LIKE 'poison:%' AND payload NOT LIKE 'crash:%'
    ) e
    JOIN (VALUES (0), (1)) AS f(k) ON f.k = 0 OR e.id % 10 = 9
    WHERE e.id % 10 NOT IN (3, 6)
"""

Row = tuple[Any, ...]


def path(name: str) -> str:
    """The ``"module:function"`` path of this module's transform ``name``."""
    return f"{__name__}:{name}"


# Whole batches (more than one row) each transform saw, by name (this process only).
calls: Counter[str] = Counter()


class Abort(BaseException):
    """Stands for the attempt dying (a BaseException: no isolation catches it)."""


def _shape(row: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
    out = events.enrich(row)
    last = row["id"] % 10
    if last == 3:
        return None
    if last == 6:
        return []
    if last == 9:
        return [out, {**out, "id": out["id"] + FANOUT_OFFSET}]
    return out


def enrich_shaped(row: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
    """``rows`` kind: enrich, filter and fan out by id."""
    return _shape(row)


async def aenrich_shaped(row: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
    """``async`` kind: :func:`enrich_shaped`, after yielding to the event loop."""
    await asyncio.sleep(0)
    return _shape(row)


def frame_shaped(df: pd.DataFrame) -> pd.DataFrame:
    """``dataframe`` kind: enrich (raising for the whole frame at a poison row), filter and fan
    out by id, keeping the input index (so each output's source row is known)."""
    out = events.enrich_frame(df)
    kept = out[~(out["id"] % 10).isin([3, 6])]
    copies = kept[kept["id"] % 10 == 9].assign(id=lambda d: d["id"] + FANOUT_OFFSET)
    return pd.concat([kept, copies])


def enrich_arrow(table: pa.Table) -> tuple[pa.Table, dict[int, Exception]]:
    """The events' enrichment over a table (``arrow`` kind): a poison row refused by index."""
    outputs: list[dict[str, Any]] = []
    refused: dict[int, Exception] = {}
    for i, row in enumerate(table.to_pylist()):
        try:
            outputs.append(events.enrich(row))
        except events.PoisonRowError as exc:
            refused[i] = exc
    return pa.Table.from_pylist(outputs), refused


def enrich_or_hang(rows: list[Row]) -> list[Row]:
    """``batch`` kind: enrich the events; sleep HANG_SECONDS on a ``hang:`` row."""
    for row in rows:
        if row[2] is not None and row[2].startswith(HANG_PREFIX):
            time.sleep(HANG_SECONDS)
    return events.enrich_events(rows)


def abort_on_batch(rows: list[Row], *, fail_on: int, batch_rows: int) -> list[Row]:
    """``batch`` kind: enrich, but raise :class:`Abort` on the ``fail_on``-th whole batch (of
    ``batch_rows`` rows) of this process; the parts of a batch split to isolate poison rows do
    not count."""
    if len(rows) >= batch_rows:
        calls["abort_on_batch"] += 1
        if calls["abort_on_batch"] == fail_on:
            raise Abort("the attempt dies here")
    return events.enrich_events(rows)


def drop_every_row(rows: list[Row]) -> list[Row]:
    """``batch`` kind: loses every row (a bug: one output per input is the contract)."""
    return []


def enrich_any(rows: list[Row]) -> list[Row]:
    """``batch`` kind: the transform after its fix: a poison payload is hashed like any other."""
    return [
        (i, user, hashlib.sha256(payload.encode()).hexdigest(), int(amount * 100), at)
        for i, user, payload, amount, at in rows
    ]


def refuse_poison(rows: list[Row], *, columns: tuple[str, ...]) -> list[Row | Exception]:
    """``batch`` kind: enrich, a poison row refused in its place (the error returned, not raised),
    the payload found by name."""
    payload = columns.index("payload")
    return [
        events.PoisonRowError(f"event {row[0]} is a poison row")
        if row[payload].startswith(events.POISON_PREFIX)
        else events.enrich_events([row])[0]
        for row in rows
    ]


def bad_amount_on_5(rows: list[Row]) -> list[Row]:
    """``batch`` kind: enrich, but give event 5 an amount_cents its bigint column cannot take."""
    return [
        (*out[:3], "lots", out[4]) if out[0] == 5 else out for out in events.enrich_events(rows)
    ]
