"""A batch transform for the runner's pool tests: it runs in worker processes, so it lives at
module level in a module the workers can import.

It enriches events as ``demo.enrich_events`` does, but hangs on a row whose payload starts with
``hang:`` (a call that never returns, which only the pool's task_timeout ends).
"""

from __future__ import annotations

import time
from typing import Any

from parallel_batch.demo import events as demo

HANG_PREFIX = "hang:"
HANG_SECONDS = 600.0


def enrich_or_hang(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Enrich the events; sleep HANG_SECONDS on a ``hang:`` row."""
    for row in rows:
        if row[2] is not None and row[2].startswith(HANG_PREFIX):
            time.sleep(HANG_SECONDS)
    return demo.enrich_events(rows)
