"""The operators behind the task groups, in one place to import them from.

A job's DAG can chain them by hand instead of using ``ParallelTableJob``/``ParallelCsvJob``::

    plan = PlanTableJobOperator(task_id="plan", ...)                  chunk list (XCom)
    process = ProcessChunkOperator.partial(task_id="process", ...)    one mapped task per chunk
        .expand_kwargs(plan.output)
    SummarizeJobOperator(task_id="summarize", job_key=XComArg(plan, key="job_key"),
                         summaries=process.output)

and ``ReplayDeadLettersOperator`` replays a job's dead letters after a fix.
"""

from __future__ import annotations

from parallel_batch.airflow.plan import PlanJobOperator
from parallel_batch.airflow.plan_sources import PlanCsvJobOperator, PlanTableJobOperator
from parallel_batch.airflow.process import ProcessChunkOperator
from parallel_batch.airflow.replay import ReplayDeadLettersOperator
from parallel_batch.airflow.summarize import SummarizeJobOperator

__all__ = [
    "PlanCsvJobOperator",
    "PlanJobOperator",
    "PlanTableJobOperator",
    "ProcessChunkOperator",
    "ReplayDeadLettersOperator",
    "SummarizeJobOperator",
]
