"""
# parallel_batch_csv

Loads a large CSV file into Postgres in parallel, restartably and exactly once: the demo's
customers file into `demo.customers` by default, optionally enriching each record over HTTP, with
the `ParallelCsvJob` task group and the transforms of `include/transforms/customers.py`.

```
create_target (setup) -> customers.plan -> customers.process [one mapped task per byte range] -> customers.summarize
```

- **plan** checks the file (exists, readable, a header whose columns are the target's) and the
  target before any work; it creates the job (or reuses it) and splits the file into byte ranges
  that start on record boundaries (a quoted newline never splits a record). Each column's type
  comes from the target's catalog.
- **process** runs once per byte range, in the `parallel_batch` pool, as a staged pipeline: read
  and *validate* (parse, convert to the target's types, values the target would refuse or
  round), *transform* (an email must hold an `@`), *enrich* (with `enrich_url`:
  `GET <enrich_url>?email=<email>`, at most `enrich_concurrency` requests in flight per task,
  retried with exponential backoff on 5xx, timeouts and connection errors), *load* (upsert by
  id). Each batch's rows, dead letters and checkpoint commit in one transaction.
- **summarize** checks that every record is in the target or the dead letters and fails the run
  when more than `max_failed_ratio` of them failed.

## Bad records
A record that cannot be loaded goes to `parallel_batch.dead_letters` with its 1-based starting
line in the file and the reason: wrong field count, a bad number or timestamp, an email without
`@`, bytes that are not UTF-8, a value the target refuses, an enrichment that still fails after
its retries, and a **duplicate id**: within a job the occurrence on the smallest line loads, the
others are dead letters.

## How to trigger
- **UI**: *Trigger* on this DAG opens a form with every param below, validated before the run.
- **CLI**: `airflow dags trigger parallel_batch_csv -c '{"path": "/data/customers.csv", "chunks": 8}'`
- With enrichment: `-c '{"enrich_url": "http://segments.internal/segment", "enrich_concurrency": 32}'`
- Demo data: `parallel-batch seed csv --rows 200000 --bad-every 97 --out <path>`; the default
  `path` is the small sample `include/data/customers_sample.csv`.

The file must be readable at `path` by every worker (shared storage). It is not re-planned for an
existing job: if it changed since, the run fails and says to use `full_refresh` or a new `job_key`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, setup, task

from parallel_batch.airflow import ParallelCsvJob
from parallel_batch.airflow.params import csv_params

TRANSFORMS = "include.transforms.customers"
SAMPLE_CSV = Path(__file__).resolve().parents[1] / "include" / "data" / "customers_sample.csv"

with DAG(
    dag_id="parallel_batch_csv",
    # A file load is triggered (by hand, an upstream DAG or an asset), not scheduled.
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["parallel_batch", "csv", "example"],
    default_args={"owner": "parallel_batch", "retries": 2, "retry_delay": dt.timedelta(seconds=10)},
    params=csv_params(path=str(SAMPLE_CSV), target_table="demo.customers"),
    render_template_as_native_obj=True,  # params keep their types in templates
    doc_md=__doc__,
):

    @setup
    @task
    def create_target(params: dict | None = None) -> None:
        """Create the target table in the demo customers shape unless it exists."""
        from parallel_batch.airflow.demo import create_demo_table

        create_demo_table("customers", (params or {})["target_table"])

    create_target() >> ParallelCsvJob(
        group_id="customers",
        path="{{ params.path }}",
        target_table="{{ params.target_table }}",
        key_column="id",
        # without enrichment the check runs over a batch's columns (no Python object a value)
        transform=f"{TRANSFORMS}:{{{{ 'enrich' if params.enrich_url else 'check_arrow' }}}}",
        transform_kind="{{ 'async' if params.enrich_url else 'arrow' }}",
        transform_kwargs="{{ {'url': params.enrich_url, 'timeout': params.enrich_timeout,"
        " 'connections': params.enrich_concurrency} if params.enrich_url else None }}",
        concurrency="{{ params.enrich_concurrency }}",
        retry=[
            f"{TRANSFORMS}:EnrichmentServerError",
            "httpx:TimeoutException",
            "httpx:NetworkError",
            "httpx:RemoteProtocolError",
        ],
        chunk_bytes="{{ params.chunk_bytes }}",
        chunks="{{ params.chunks }}",
        batch_rows="{{ params.batch_rows }}",
        max_failed_ratio="{{ params.max_failed_ratio }}",
        job_key="{{ params.job_key }}",
        full_refresh="{{ params.full_refresh }}",
    )
