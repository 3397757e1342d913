"""The operators of a table job, in one place to import them from.

A table DAG chains them (see ``dags/parallel_batch_table.py``)::

    plan = PlanTableChunksOperator(task_id="plan", ...)                     chunk list (XCom)
    process = ProcessTableChunkOperator.partial(task_id="process", ...)     one mapped task
        .expand_kwargs(plan.output)                                         per chunk
    SummarizeTableJobOperator(task_id="summarize", summaries=process.output, ...)

and ``ReplayDeadLettersOperator`` replays a job's dead letters after a fix.
"""

from __future__ import annotations

from parallel_batch.airflow.plan import PlanTableChunksOperator
from parallel_batch.airflow.process import ProcessTableChunkOperator
from parallel_batch.airflow.replay import ReplayDeadLettersOperator
from parallel_batch.airflow.summarize import SummarizeTableJobOperator

__all__ = [
    "PlanTableChunksOperator",
    "ProcessTableChunkOperator",
    "ReplayDeadLettersOperator",
    "SummarizeTableJobOperator",
]
