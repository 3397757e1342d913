"""
# example_dataframe

A `dataframe` transform: each batch arrives as a pandas DataFrame and the transform computes its
output a column at a time (`include/transforms/examples.py:stats`) into `demo.event_stats`. The
output columns' dtypes are checked against the target's types before anything is written.

`airflow dags trigger example_dataframe` after `parallel-batch seed events --rows 100000`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, setup, task

from parallel_batch.airflow import ParallelTableJob

with DAG(
    "example_dataframe",
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

        create_demo_table("event_stats", "demo.event_stats")

    create_target() >> ParallelTableJob(
        group_id="stats",
        source_table="demo.events",
        target_table="demo.event_stats",
        transform="include.transforms.examples:stats",
        transform_kind="dataframe",
    )
