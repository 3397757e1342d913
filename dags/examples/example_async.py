"""
# example_async

An `async` transform: `async def tier(row, *, url)` looks each event's user up over HTTP, at most
`concurrency` requests in flight per chunk task, each row retried with backoff and jitter on the
errors `retry` names (5xx and 429 answers, timeouts, connection errors); a row still failing
after its retries is a dead letter. Into `demo.event_tiers`.

`airflow dags trigger example_async -c '{"url": "http://tiers.internal"}'`: the service answers
`GET {url}/users/{user_id}` with `{"tier": "..."}`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, setup, task

from parallel_batch.airflow import ParallelTableJob

with DAG(
    "example_async",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    tags=["parallel_batch", "example"],
    default_args={"retries": 2},
    params={"url": Param("http://localhost:8000", type="string", pattern="^https?://")},
    render_template_as_native_obj=True,
    doc_md=__doc__,
):

    @setup
    @task
    def create_target() -> None:
        from parallel_batch.airflow.demo import create_demo_table

        create_demo_table("event_tiers", "demo.event_tiers")

    create_target() >> ParallelTableJob(
        group_id="tiers",
        source_table="demo.events",
        target_table="demo.event_tiers",
        transform="include.transforms.examples:tier",
        transform_kind="async",
        transform_kwargs={"url": "{{ params.url }}"},
        concurrency=32,
        retry=[
            "include.transforms.examples:TierServiceError",
            "httpx:TimeoutException",
            "httpx:NetworkError",
        ],
    )
