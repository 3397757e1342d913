"""A tiny mapped DAG for the end-to-end tests: one mapped task per item of the run's conf.

Trigger it with a conf, as the UI trigger form does: ``{"items": [2, 3, 5], "factor": 10}``;
``multiply`` then runs three times and ``total`` returns 100.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task


@dag(
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["e2e"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=1)},
    params={
        "items": Param([1, 2], type="array", items={"type": "integer"}),
        "factor": Param(1, type="integer"),
    },
    doc_md=__doc__,
)
def e2e_mapped() -> None:
    @task
    def plan() -> list[int]:
        items: list[int] = get_current_context()["params"]["items"]
        return items

    @task
    def multiply(item: int) -> int:
        factor: int = get_current_context()["params"]["factor"]
        return item * factor

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    total(multiply.expand(item=plan()))


e2e_mapped()
