"""How many CPUs this process may really use: the worker pool's default size.

``os.cpu_count()`` counts the machine's CPUs. This process may be pinned to fewer (CPU affinity,
``taskset``, cpusets) or throttled to fewer by a cgroup CPU quota (``docker --cpus``, a Kubernetes
CPU limit on a Celery worker pod). One worker process per CPU it cannot use only costs memory and
context switches, so the smallest of the three wins.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpu_count"]

# cgroup v2 exposes "quota period" (or "max period") in one file; v1 uses two files.
_CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_DIRS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"))


def usable_cpu_count() -> int:
    """Return the CPUs this process may use: affinity and cgroup quota applied, at least 1."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS and Windows have no affinity API
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _cgroup_cpu_quota() -> int | None:
    """Return the cgroup CPU quota rounded up to whole CPUs, or None when there is none."""
    try:
        fields = _CGROUP_V2_CPU_MAX.read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return math.ceil(int(fields[0]) / int(fields[1]))
        return None
    except (OSError, ValueError):
        pass
    for directory in _CGROUP_V1_DIRS:
        try:
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return math.ceil(quota / period)
        return None
    return None
