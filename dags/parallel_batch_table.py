"""
# parallel_batch_table

Processes a Postgres table in parallel, restartably and exactly once: `demo.events` into
`demo.events_enriched` (SHA-256 of the payload, amount in cents) by default.

```
create_target (setup) -> plan -> process [one mapped task per chunk] -> summarize
```

- **plan** checks the config (tables, key, columns, numbers) before any work and fails at once,
  without retries, on a bad one; it creates the job (or reuses it: the same `job_key` always
  gets the same plan back) and splits the rows into key-range chunks.
- **process** runs once per chunk (named by its key range in the UI), in the `parallel_batch`
  pool, transforming in worker processes. Each batch's output rows, dead letters and checkpoint
  commit in one transaction: a retried or killed task resumes after its last batch, and a
  completed chunk is skipped. A `poison:` row fails every attempt and goes to the dead letters;
  a `crash:` row kills its worker process, which is replaced, and goes to the dead letters too.
- **summarize** checks that every row is in the target or the dead letters and fails the run
  when more than `max_failed_ratio` of the rows failed, telling how to replay them
  (`parallel_batch_replay`).

## Which rows, which job
| run | rows | default `job_key` |
|---|---|---|
| scheduled (`@daily`) or backfill | `interval_column` in the run's data interval | `parallel_batch_table:<start>/<end>` |
| manual trigger | the whole table, or `interval_start`..`interval_end` | `parallel_batch_table:<run_id>` |

`interval_column: null` always processes the whole table. Re-running a scheduled interval (a
retry, a cleared task, a backfill re-run) resumes its job and skips completed chunks. A manual
run is its own job: clearing one of its tasks resumes it, a new trigger starts a new job. Writes
are upserts by key, so a new job over rows an earlier one wrote replaces them, never duplicates
them. Give the same `job_key` to resume a job from another run; `full_refresh: true`
reprocesses it from scratch (its earlier output is replaced, not duplicated).

## How to trigger
- **UI**: *Trigger* on this DAG opens a form with every param below, validated before the run.
- **CLI**:
  `airflow dags trigger parallel_batch_table -c '{"chunk_rows": 100000, "workers": 2}'`
  (or `airflow dags test parallel_batch_table -c '...'` after `eval "$(parallel-batch env)"`).
- **Backfill** (each run processes its own day):
  `airflow backfill create --dag-id parallel_batch_table --from-date 2024-01-01 --to-date 2024-01-03`
- Demo data: `parallel-batch seed events --rows 1000000 --poison-every 997 --crash-every 4999`.
- Progress: `parallel-batch status [JOB_KEY]`, the task logs (%, rows/s, ETA) and each chunk
  task's task state (`progress`).

Concurrency: chunk tasks take slots of the Airflow pool `parallel_batch` (created by
`parallel-batch env`; elsewhere: `airflow pools set parallel_batch <slots> "chunk tasks"`;
the scheduler does not run tasks of a missing pool) and at most `MAX_ACTIVE_CHUNKS` per run;
each runs `workers` worker processes.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, setup

from parallel_batch.airflow.operators import (
    PlanTableChunksOperator,
    ProcessTableChunkOperator,
    SummarizeTableJobOperator,
)
from parallel_batch.airflow.params import table_params
from parallel_batch.airflow.process import MAP_INDEX_TEMPLATE
from parallel_batch.demo.events import (
    ENRICHED_COLUMNS,
    ENRICHED_TABLE,
    EVENTS_COLUMNS,
    EVENTS_TABLE,
)
from parallel_batch.local.env import POOL_NAME

DAG_ID = "parallel_batch_table"
TRANSFORM = "parallel_batch.demo.events:enrich_events"
# Chunk tasks of one run at once, at most (the pool bounds them across runs). Larger only helps
# when the pool has more slots; smaller leaves slots to other runs (backfills run several).
MAX_ACTIVE_CHUNKS = 16

with DAG(
    dag_id=DAG_ID,
    # Airflow 3 turns a cron string into CronTriggerTimetable, whose runs have an empty data
    # interval; a run that processes "its day" needs the data interval timetable.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["parallel_batch", "postgres", "example"],
    default_args={
        "owner": "parallel_batch",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=10),
    },
    params=table_params(
        source_table=EVENTS_TABLE,
        target_table=ENRICHED_TABLE,
        key_column="id",
        interval_column="created_at",
    ),
    # Params keep their types in templates (an int stays an int, null stays None).
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:

    @setup
    def create_target() -> None:
        """Create the target table (the demo's enriched events shape) unless it exists."""
        import psycopg

        from parallel_batch.airflow.connection import resolve_conninfo
        from parallel_batch.airflow.params import fail_fast
        from parallel_batch.demo.events import create_events_enriched

        target = get_current_context()["params"]["target_table"]
        with fail_fast("Invalid configuration"):
            from parallel_batch.store.identifiers import parse_table

            parse_table(target)
        with psycopg.connect(resolve_conninfo(), autocommit=True) as conn:
            create_events_enriched(conn, target)

    plan = PlanTableChunksOperator(
        task_id="plan",
        source_table="{{ params.source_table }}",
        target_table="{{ params.target_table }}",
        key_column="{{ params.key_column }}",
        source_columns=EVENTS_COLUMNS,
        target_columns=ENRICHED_COLUMNS,
        transform=TRANSFORM,
        chunk_rows="{{ params.chunk_rows }}",
        chunks="{{ params.chunks }}",
        batch_rows="{{ params.batch_rows }}",
        job_key="{{ params.job_key }}",
        full_refresh="{{ params.full_refresh }}",
        interval_column="{{ params.interval_column }}",
        interval_start="{{ params.interval_start }}",
        interval_end="{{ params.interval_end }}",
    )

    process = ProcessTableChunkOperator.partial(
        task_id="process",
        workers="{{ params.workers }}",
        batch_rows="{{ params.batch_rows }}",
        pool=POOL_NAME,
        max_active_tis_per_dagrun=MAX_ACTIVE_CHUNKS,
        map_index_template=MAP_INDEX_TEMPLATE,
    ).expand_kwargs(plan.output)

    summarize = SummarizeTableJobOperator(
        task_id="summarize",
        job_key="{{ ti.xcom_pull(task_ids='plan', key='job_key') }}",
        summaries=process.output,
        max_failed_ratio="{{ params.max_failed_ratio }}",
        # An empty plan (no rows in the interval) skips `process`; the summary still runs.
        trigger_rule="none_failed",
    )

    create_target() >> plan
