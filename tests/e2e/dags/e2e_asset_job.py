"""A table job whose target is an Asset, and a DAG the scheduler runs on that Asset's events.

``e2e_asset_producer`` copies ``e2e_asset_source`` into ``e2e_asset_target`` with
``ParallelTableJob`` (no transform: columns by name); its summarize task's outlet is the target
table's Asset, derived from the ``parallel_batch_default`` connection. ``e2e_asset_consumer`` is
scheduled on that same Asset and records the events that triggered it into ``e2e_asset_events``.
The test creates the tables.
"""

from __future__ import annotations

import datetime as dt
import json

from airflow.sdk import DAG, get_current_context, task

from parallel_batch.airflow import ParallelTableJob
from parallel_batch.airflow.assets import target_asset

TARGET = "public.e2e_asset_target"
ASSET = target_asset(True, "parallel_batch_default", TARGET)

with DAG(
    "e2e_asset_producer",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    tags=["e2e"],
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=1)},
):
    ParallelTableJob(
        group_id="copy",
        source_table="public.e2e_asset_source",
        target_table=TARGET,
        chunks=2,
        batch_rows=100,
    )

with DAG(
    "e2e_asset_consumer",
    schedule=[ASSET] if ASSET is not None else None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    tags=["e2e"],
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=1)},
):

    @task
    def record() -> None:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        context = get_current_context()
        events = [
            (asset.uri, json.dumps(event.extra))
            for asset, asset_events in context["triggering_asset_events"].items()
            for event in asset_events
        ]
        hook = PostgresHook(postgres_conn_id="parallel_batch_default")
        for uri, extra in events:
            hook.run(
                "INSERT INTO e2e_asset_events (run_id, uri, extra) VALUES (%s, %s, %s)",
                parameters=(context["run_id"], uri, extra),
            )

    record()
