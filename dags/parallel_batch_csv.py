"""
# parallel_batch_csv

Loads a large CSV file into Postgres in parallel, restartably and exactly once: the demo's
customers file (`parallel-batch seed csv`) into `demo.customers` by default, optionally
enriching each record over HTTP.

```
create_target (setup) -> plan -> process [one mapped task per byte range] -> summarize
```

- **plan** checks the file (exists, readable, header `id,name,email,amount,note,created_at`) and
  the target before any work, failing at once without retries on a bad config; it creates the
  job (or reuses it: the same `job_key` always gets the same plan back) and splits the file into
  byte ranges that start on record boundaries (a quoted newline never splits a record).
- **process** runs once per byte range (named by it in the UI), in the `parallel_batch` pool, as a
  staged pipeline: *validate* (values the target would refuse), *transform*, *enrich*
  (`GET <enrich_url>?email=<email>`, at most `enrich_concurrency` requests in flight, retried
  with exponential backoff on 5xx, timeouts and connection errors), *load* (upsert by id). Each
  batch's rows, dead letters and checkpoint (its last line) commit in one transaction: a retried
  or killed task resumes after its last batch, and a completed chunk is skipped.
- **summarize** checks that every record is in the target or the dead letters and fails the
  run when more than `max_failed_ratio` of them failed.

## Bad records
A record that cannot be loaded goes to `parallel_batch.dead_letters` with its 1-based starting
line in the file and the reason: wrong field count, a bad number or timestamp, an email without
`@`, bytes that are not UTF-8, a value the target refuses, an enrichment that still fails after
its retries, and a **duplicate id**: within a job the occurrence on the smallest line loads, the
others are dead letters. A new `job_key` or `full_refresh` loads the file afresh and updates the
rows already there (never "duplicates" of an earlier load).

## How to trigger
- **UI**: *Trigger* on this DAG opens a form with every param below, validated before the run.
- **CLI**:
  `airflow dags trigger parallel_batch_csv -c '{"path": "/data/customers.csv", "chunks": 8}'`
  (or `airflow dags test parallel_batch_csv -c '...'` after `eval "$(parallel-batch env)"`).
- With enrichment:
  `-c '{"enrich_url": "http://segments.internal/segment", "enrich_concurrency": 32}'`
- Demo data: `parallel-batch seed csv --rows 200000 --bad-every 97 --out <path>`; the default
  `path` is `.parallel_batch/demo/customers.csv` in the project.
- Progress: `parallel-batch status [JOB_KEY]`, the task logs (%, records/s, ETA) and each
  `process` task's task state (`progress`).

The file must be readable at `path` by every worker (shared storage). It is not re-planned for
an existing job: if it changed since, the run fails and says to use `full_refresh` or a new
`job_key`. The default `job_key` is `parallel_batch_csv:<run_id>`, so each trigger is a new load
and clearing a task resumes its run's load.

Concurrency: `process` tasks take slots of the Airflow pool `parallel_batch` (created by
`parallel-batch env`) and at most `MAX_ACTIVE_CHUNKS` run per DAG run; within a task the stages
overlap and the enrichment keeps up to `enrich_concurrency` requests in flight.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, get_current_context, setup

from parallel_batch.airflow.csv_operators import (
    LoadCsvChunkOperator,
    PlanCsvChunksOperator,
    SummarizeCsvJobOperator,
)
from parallel_batch.airflow.csv_params import csv_params
from parallel_batch.airflow.process import MAP_INDEX_TEMPLATE
from parallel_batch.demo.customers import CUSTOMERS_TABLE, default_csv_path
from parallel_batch.local.env import POOL_NAME

DAG_ID = "parallel_batch_csv"
# Chunk tasks of one run at once, at most (the pool bounds them across runs). Larger only helps
# when the pool has more slots; smaller leaves slots to other runs.
MAX_ACTIVE_CHUNKS = 16

with DAG(
    dag_id=DAG_ID,
    # A file load is triggered (by hand, an upstream DAG or an asset), not scheduled.
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["parallel_batch", "csv", "example"],
    default_args={
        "owner": "parallel_batch",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=10),
    },
    params=csv_params(path=str(default_csv_path()), target_table=CUSTOMERS_TABLE),
    # Params keep their types in templates (an int stays an int, null stays None).
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:

    @setup
    def create_target() -> None:
        """Create the target table in the demo customers shape unless it exists."""
        import psycopg

        from parallel_batch.airflow.connection import resolve_conninfo
        from parallel_batch.airflow.params import fail_fast
        from parallel_batch.demo.customers import create_customers
        from parallel_batch.store.identifiers import parse_table

        target = get_current_context()["params"]["target_table"]
        with fail_fast("Invalid configuration"):
            parse_table(target)
        with psycopg.connect(resolve_conninfo(), autocommit=True) as conn:
            create_customers(conn, target)

    plan = PlanCsvChunksOperator(
        task_id="plan",
        path="{{ params.path }}",
        target_table="{{ params.target_table }}",
        chunk_bytes="{{ params.chunk_bytes }}",
        chunks="{{ params.chunks }}",
        batch_rows="{{ params.batch_rows }}",
        job_key="{{ params.job_key }}",
        full_refresh="{{ params.full_refresh }}",
    )

    process = LoadCsvChunkOperator.partial(
        task_id="process",
        batch_rows="{{ params.batch_rows }}",
        enrich_url="{{ params.enrich_url }}",
        enrich_concurrency="{{ params.enrich_concurrency }}",
        enrich_timeout="{{ params.enrich_timeout }}",
        pool=POOL_NAME,
        max_active_tis_per_dagrun=MAX_ACTIVE_CHUNKS,
        map_index_template=MAP_INDEX_TEMPLATE,
    ).expand_kwargs(plan.output)

    summarize = SummarizeCsvJobOperator(
        task_id="summarize",
        job_key="{{ ti.xcom_pull(task_ids='plan', key='job_key') }}",
        summaries=process.output,
        max_failed_ratio="{{ params.max_failed_ratio }}",
        # An empty file (header only) plans no chunk and skips `process`; the summary still runs.
        trigger_rule="none_failed",
    )

    create_target() >> plan
