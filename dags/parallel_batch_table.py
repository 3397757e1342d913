"""
# parallel_batch_table

Processes a Postgres table in parallel, restartably and exactly once: `demo.events` into
`demo.events_enriched` (SHA-256 of the payload, amount in cents) by default, with the
`ParallelTableJob` task group and the transform `include/transforms/events.py`.

```
create_target (setup) -> events.plan -> events.process [one mapped task per chunk] -> events.summarize
```

- **plan** checks the config (tables, key, columns, transform) before any work and fails at once,
  without retries, on a bad one; it creates the job (or reuses it: the same `job_key` always gets
  the same plan back) and splits the rows into key-range chunks.
- **process** runs once per chunk (named by its key range in the UI), in the `parallel_batch`
  pool, transforming in worker processes. Each batch's rows, dead letters and checkpoint commit in
  one transaction: a retried or killed task resumes after its last batch, and a completed chunk
  is skipped. A `poison:` row fails every attempt and goes to the dead letters; a `crash:` row
  kills its worker process, which is replaced, and goes to the dead letters too.
- **summarize** checks that every row is in the target or the dead letters and fails the run when
  more than `max_failed_ratio` of the rows failed, telling how to replay them
  (`parallel_batch_replay`).

## Which rows, which job
| run | rows | default `job_key` |
|---|---|---|
| scheduled (`@daily`) or backfill | `interval_column` in the run's data interval | `parallel_batch_table:<start>/<end>` |
| manual trigger | the whole table, or `interval_start`..`interval_end` | `parallel_batch_table:<run_id>` |

`interval_column: null` always processes the whole table. Re-running a scheduled interval (a
retry, a cleared task, a backfill re-run) resumes its job and skips completed chunks. Writes are
upserts by key, so a new job over rows an earlier one wrote replaces them, never duplicates them;
`full_refresh: true` reprocesses a job from scratch.

## How to trigger
- **UI**: *Trigger* on this DAG opens a form with every param below, validated before the run.
- **CLI**: `airflow dags trigger parallel_batch_table -c '{"chunk_rows": 100000, "workers": 2}'`
- **Backfill**: `airflow backfill create --dag-id parallel_batch_table --from-date 2024-01-01 --to-date 2024-01-03`
- Demo data: `parallel-batch seed events --rows 1000000 --poison-every 997 --crash-every 4999`.
- Progress: `parallel-batch status [JOB_KEY]`, the Batches page, the task logs.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, setup, task

from parallel_batch.airflow import ParallelTableJob
from parallel_batch.airflow.params import table_params

with DAG(
    dag_id="parallel_batch_table",
    # Airflow 3 turns a cron string into CronTriggerTimetable, whose runs have an empty data
    # interval; a run that processes "its day" needs the data interval timetable.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["parallel_batch", "postgres", "example"],
    default_args={"owner": "parallel_batch", "retries": 2, "retry_delay": dt.timedelta(seconds=10)},
    params=table_params(
        source_table="demo.events",
        target_table="demo.events_enriched",
        key_column="id",
        interval_column="created_at",
    ),
    render_template_as_native_obj=True,  # params keep their types in templates
    doc_md=__doc__,
):

    @setup
    @task
    def create_target(params: dict | None = None) -> None:
        """Create the target table (the demo's enriched events shape) unless it exists."""
        from parallel_batch.airflow.demo import create_demo_table

        create_demo_table("events_enriched", (params or {})["target_table"])

    create_target() >> ParallelTableJob(
        group_id="events",
        source_table="{{ params.source_table }}",
        target_table="{{ params.target_table }}",
        key_column="{{ params.key_column }}",
        transform="include.transforms.events:enrich_events",
        transform_kind="batch",
        interval_column="{{ params.interval_column }}",
        interval_start="{{ params.interval_start }}",
        interval_end="{{ params.interval_end }}",
        chunk_rows="{{ params.chunk_rows }}",
        chunks="{{ params.chunks }}",
        batch_rows="{{ params.batch_rows }}",
        workers="{{ params.workers }}",
        max_failed_ratio="{{ params.max_failed_ratio }}",
        job_key="{{ params.job_key }}",
        full_refresh="{{ params.full_refresh }}",
    )
