"""The Airflow layer: task groups, operators, params, the plugin, provider info.

The only package that imports airflow. Users write::

    from parallel_batch.airflow import ParallelTableJob, ParallelCsvJob

The task groups are imported on first use (PEP 562), so the constants below can be imported by
code that must not import Airflow yet (``parallel-batch env`` computes Airflow's environment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DEFAULT_CONN_ID", "POOL_NAME", "ParallelCsvJob", "ParallelTableJob"]

# The Airflow connection of the database jobs run on (their target; a table's source by default).
DEFAULT_CONN_ID = "parallel_batch_default"
# The Airflow pool chunk tasks take a slot of (`parallel-batch env` creates it, one slot per core).
POOL_NAME = "parallel_batch"

if TYPE_CHECKING:
    from parallel_batch.airflow.groups import ParallelCsvJob, ParallelTableJob


def __getattr__(name: str) -> Any:
    if name in ("ParallelTableJob", "ParallelCsvJob"):
        from parallel_batch.airflow import groups

        return getattr(groups, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
