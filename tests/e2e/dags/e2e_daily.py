"""A tiny daily DAG for the end-to-end backfill test: each run records its data interval.

Rows go into ``e2e_intervals(run_id, interval_start, interval_end)`` of the database behind
``parallel_batch_default`` (the test creates the table). ``end_date`` lies in the past, so
unpausing the DAG schedules nothing by itself: only backfills create runs. The task takes a slot
of the ``parallel_batch`` pool, which ``prepare_airflow`` creates.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task


@dag(
    # Airflow 3 maps a cron string to CronTriggerTimetable (a zero-length data interval); a run
    # that processes "its day" needs the interval timetable.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    end_date=dt.datetime(2024, 1, 31, tzinfo=dt.UTC),
    catchup=False,
    tags=["e2e"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=1)},
    doc_md=__doc__,
)
def e2e_daily() -> None:
    @task(pool="parallel_batch")
    def record() -> None:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        context = get_current_context()
        PostgresHook(postgres_conn_id="parallel_batch_default").run(
            "INSERT INTO e2e_intervals VALUES (%s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
            parameters=(
                context["run_id"],
                context["data_interval_start"],
                context["data_interval_end"],
            ),
        )

    record()


e2e_daily()
