"""
# parallel_batch_replay

Replays the dead letters of a job (of `parallel_batch_table`, `parallel_batch_csv` or your own)
after a fix: each pending dead letter goes through the job's transform again (the one its jobs
row stored); the ones that now pass are written to the job's target and marked replayed in the
same transaction, the ones that fail again stay dead letters with their attempts counted.

## Params
- `job_key` (required): the job, as the failed run's message or `parallel-batch status` shows it.
- `replay_from`: `source` (default) reads each row as the source table holds it now, so a fix of
  the data applies; `payload` replays the row as the dead letter stored it (after a fix of the
  transform; the only way for a CSV job's records).
- `max_failed_ratio` (default 0): the run fails when more than this share fails again.

## How to trigger
- **UI**: *Trigger* on this DAG and fill in `job_key`.
- **CLI**: `airflow dags trigger parallel_batch_replay -c '{"job_key": "parallel_batch_table:..."}'`

Replaying twice is safe: only pending dead letters are taken (a replay running at the same time
skips the ones the other holds), and writes are upserts by key.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from parallel_batch.airflow import POOL_NAME
from parallel_batch.airflow.params import replay_params
from parallel_batch.airflow.replay import ReplayDeadLettersOperator

with DAG(
    dag_id="parallel_batch_replay",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["parallel_batch", "postgres", "example"],
    default_args={"owner": "parallel_batch", "retries": 2, "retry_delay": dt.timedelta(seconds=10)},
    params=replay_params(),
    render_template_as_native_obj=True,
    doc_md=__doc__,
):
    ReplayDeadLettersOperator(
        task_id="replay",
        job_key="{{ params.job_key }}",
        replay_from="{{ params.replay_from }}",
        max_failed_ratio="{{ params.max_failed_ratio }}",
        batch_rows="{{ params.batch_rows }}",
        workers="{{ params.workers }}",
        pool=POOL_NAME,
    )
