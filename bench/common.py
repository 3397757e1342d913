"""What every benchmark module shares: a result row and a peak-memory probe."""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    """One line of the benchmark table: a measured value beside its baseline and goal."""

    suite: str
    name: str
    value: float
    unit: str
    baseline: float | None = None  # the thing we compare against, measured in the same run
    goal: str = ""  # e.g. ">= 1.8x", "<= 3%"
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mib(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024
