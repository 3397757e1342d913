"""The batch functions bench_pool runs in worker processes.

Every worker, and every replacement after a crash, imports this module: it stays tiny, so the
crash and start figures measure the pool rather than the imports of the benchmark itself.
"""

from __future__ import annotations

import hashlib
import os

ROUNDS = 300  # SHA-256 rounds per item: about 0.3 ms of CPU each on this machine's cores


def sha256_rounds(items: list[str]) -> list[str]:
    """The CPU-bound batch function: ROUNDS chained SHA-256 digests per item."""
    out = []
    for item in items:
        digest = item.encode()
        for _ in range(ROUNDS):
            digest = hashlib.sha256(digest).digest()
        out.append(digest.hex())
    return out


def crash_on_marker(items: list[str]) -> list[str]:
    """Uppercase the items; die like a segfaulting C extension on an item marked ``crash:``."""
    for item in items:
        if item.startswith("crash:"):
            os._exit(3)
    return [item.upper() for item in items]
