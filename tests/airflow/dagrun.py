"""Helpers of the DAG tests: load a DAG of ``dags/``, run it with ``dag.test()``, read the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"

# Every row of demo.events is in demo.events_enriched with the expected values, except the
# poison and crash rows, which are not; counts the rows where that is not so.
MISMATCHES_SQL = """
SELECT count(*)
FROM {source} e FULL JOIN {target} t USING (id)
WHERE CASE
    WHEN e.payload LIKE 'poison:%' OR e.payload LIKE 'crash:%' THEN t.id IS NOT NULL
    ELSE t.id IS NULL OR e.id IS NULL
      OR t.user_id IS DISTINCT FROM e.user_id
      OR t.payload_sha256 IS DISTINCT FROM encode(sha256(convert_to(e.payload, 'UTF8')), 'hex')
      OR t.amount_cents IS DISTINCT FROM (e.amount * 100)::bigint
      OR t.created_at IS DISTINCT FROM e.created_at
    END
"""


@dataclass
class RunResult:
    """A finished ``dag.test()`` run.

    :param run_id: the run's id.
    :param state: the run's state (``"success"``, ``"failed"``).
    :param tis: task instances by ``(task_id, map_index)``: ``(state, try_number)``.
    :param xcoms: return values by ``(task_id, map_index)``.
    :param rendered_map_indexes: the UI names of the task instances by ``(task_id, map_index)``.
    """

    run_id: str
    state: str
    tis: dict[tuple[str, int], tuple[str, int]]
    xcoms: dict[tuple[str, int], Any]
    rendered_map_indexes: dict[tuple[str, int], str | None]

    def states(self, task_id: str) -> list[str]:
        """Return the states of a task's instances (one per map index), in map index order."""
        return [state for (tid, _), (state, _) in sorted(self.tis.items()) if tid == task_id]

    def tries(self, task_id: str) -> list[int]:
        """Return the try numbers of a task's instances, in map index order."""
        return [tries for (tid, _), (_, tries) in sorted(self.tis.items()) if tid == task_id]

    def xcom(self, task_id: str, map_index: int = -1) -> Any:
        """Return a task instance's return value."""
        return self.xcoms.get((task_id, map_index))

    def mapped_xcoms(self, task_id: str) -> list[Any]:
        """Return a mapped task's return values, in map index order."""
        return [v for (tid, idx), v in sorted(self.xcoms.items()) if tid == task_id and idx >= 0]


def load_dag(dag_id: str) -> Any:
    """Return a DAG of the project's ``dags/`` folder, parsed as the dag-processor does."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"no DAG {dag_id} in {DAGS_FOLDER}"
    return dag


def run_dag(dag: Any, conf: dict[str, Any]) -> RunResult:
    """Run ``dag`` once with ``dag.test(run_conf=conf)`` and collect its task instances."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    run = dag.test(run_conf=conf)
    with create_session() as session:
        tis = run.get_task_instances(session=session)
        states = {(ti.task_id, ti.map_index): (str(ti.state), ti.try_number) for ti in tis}
        rendered = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in tis}
        rows = session.execute(
            XComModel.get_many(
                key="return_value", run_id=run.run_id, dag_ids=dag.dag_id
            ).with_only_columns(XComModel.task_id, XComModel.map_index, XComModel.value)
        ).all()
        xcoms = {(r.task_id, r.map_index): XComModel.deserialize_value(r) for r in rows}
    return RunResult(run.run_id, str(run.state), states, xcoms, rendered)


def mismatches(
    conn: psycopg.Connection,
    source: str = "demo.events",
    target: str = "demo.events_enriched",
) -> int:
    """Return the rows of ``target`` that differ from what ``source`` says they must be."""
    from psycopg import sql

    from parallel_batch.store.identifiers import table_sql

    query = sql.SQL(MISMATCHES_SQL).format(source=table_sql(source), target=table_sql(target))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def bad_rows(conn: psycopg.Connection, source: str = "demo.events") -> dict[str, str]:
    """Return the poison and crash rows of the source as ``{id as text: expected error_type}``."""
    from psycopg import sql

    from parallel_batch.store.identifiers import table_sql

    rows = conn.execute(
        sql.SQL(
            "SELECT id::text, CASE WHEN payload LIKE 'crash:%' THEN 'WorkerCrashedError'"
            " ELSE 'PoisonRowError' END FROM {} WHERE payload LIKE 'poison:%'"
            " OR payload LIKE 'crash:%'"
        ).format(table_sql(source))
    ).fetchall()
    return dict(rows)


def dead_letters(conn: psycopg.Connection, job_key: str) -> dict[str, str]:
    """Return a job's pending dead letters as ``{item_key: error_type}``."""
    rows = conn.execute(
        "SELECT item_key, error_type FROM parallel_batch.dead_letters"
        " WHERE job_key = %s AND replayed_at IS NULL",
        (job_key,),
    ).fetchall()
    return dict(rows)


def state_store_values(run_id: str, task_id: str, key: str) -> dict[int, Any]:
    """Return what a task's instances of a run wrote to the task state store under ``key``."""
    import json

    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        rows = session.execute(
            text(
                "SELECT map_index, value FROM task_state_store"
                " WHERE run_id = :run_id AND task_id = :task_id AND key = :key"
            ),
            {"run_id": run_id, "task_id": task_id, "key": key},
        ).all()
    return {map_index: json.loads(value) for map_index, value in rows}
