"""How the progress views' values read: for people (counts, rates, ETAs, ages, percents) and
for scripts (:func:`json_ready`). Shared by the terminal and the web page."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from parallel_batch.engine.progress import format_duration

__all__ = [
    "MESSAGE_CHARS",
    "cut",
    "format_age",
    "format_count",
    "format_eta",
    "format_percent",
    "format_rate",
    "json_ready",
]

# A message (a dead letter's, a chunk's error) is cut to this many characters on the page (the
# table keeps it whole; a traceback can be thousands). Longer: more context; shorter: a denser
# table.
MESSAGE_CHARS = 300


def cut(text: str, chars: int = MESSAGE_CHARS) -> str:
    """Return ``text`` on one line, cut to ``chars`` characters with an ellipsis."""
    if chars < 4:
        raise ValueError("chars must be at least 4")
    line = " ".join(text.split())
    return line if len(line) <= chars else line[: chars - 1] + "…"


def format_count(value: int | None) -> str:
    """``1,234``; ``?`` when unknown."""
    return "?" if value is None else f"{value:,}"


def format_rate(rows_per_second: float | None) -> str:
    """``12,345 rows/s``; ``-`` when unknown."""
    if rows_per_second is None or not math.isfinite(rows_per_second):
        return "-"
    return f"{rows_per_second:,.0f} rows/s"


def format_eta(seconds: float | None) -> str:
    """``3m05s``; ``done`` at 0; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    return "done" if seconds == 0 else format_duration(seconds)


def format_age(seconds: float | None) -> str:
    """``12s ago``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{format_duration(max(0.0, seconds))} ago"


def format_percent(percent: float) -> str:
    """``45%``, rounded down (99.9 is ``99%``: nothing reads 100% before it is done)."""
    return f"{math.floor(max(0.0, min(100.0, percent)))}%"


def json_ready(value: Any) -> Any:
    """Return ``value`` (rows, lists, dicts) as JSON-able data: dataclasses become dicts with
    their properties, datetimes ISO-8601 text, non-finite floats None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in dir(type(value)):
            if isinstance(getattr(type(value), name), property):
                data[name] = json_ready(getattr(value, name))
        return data
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
