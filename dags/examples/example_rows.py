"""
# example_rows

A `rows` transform: one dict in, any number of dicts out. Each event's amount goes into
`demo.event_parts` in parts of at most 1000.00: a zero amount makes no part (the row is
*filtered*, counted apart from failures), a large one several (*fan-out*).

`airflow dags trigger example_rows` after `parallel-batch seed events --rows 100000`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, setup, task

from parallel_batch.airflow import ParallelTableJob

with DAG(
    "example_rows",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    tags=["parallel_batch", "example"],
    default_args={"retries": 2},
    doc_md=__doc__,
):

    @setup
    @task
    def create_target() -> None:
        from parallel_batch.airflow.demo import create_demo_table

        create_demo_table("event_parts", "demo.event_parts")

    create_target() >> ParallelTableJob(
        group_id="parts",
        source_table="demo.events",
        target_table="demo.event_parts",
        transform="include.transforms.examples:parts",
        transform_kind="rows",
    )
