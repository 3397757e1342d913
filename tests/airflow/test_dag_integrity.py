"""DAG integrity: every file in dags/ parses cleanly, with no I/O, and follows the house rules."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.airflow.dagrun import DAGS_FOLDER

DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))
# The params the demo contract promises for the table DAG (DESIGN.md).
TABLE_PARAMS = {
    "source_table",
    "target_table",
    "key_column",
    "chunk_rows",
    "chunks",
    "batch_rows",
    "workers",
    "max_failed_ratio",
    "job_key",
    "full_refresh",
    "interval_column",
    "interval_start",
    "interval_end",
}


class _NoIOError(AssertionError):
    """Raised when a DAG file opens a network or database connection while it is parsed."""


@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make every socket connection and every psycopg connection fail during the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _NoIOError("I/O at parse time: a connection was opened")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(refuse))
    monkeypatch.setattr(psycopg, "connect", refuse)  # an alias bound when psycopg is imported
    yield


def _parse(path: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(path))


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_without_io(path: Path, no_io: None) -> None:
    """Test that a DAG file imports cleanly with every connection refused (no top-level I/O)."""
    bag = _parse(path)

    assert bag.import_errors == {}
    assert bag.dags, f"{path.name} defines no DAG"


def test_the_guard_catches_a_connection_at_parse_time(tmp_path: Path, no_io: None) -> None:
    """Test that a DAG file connecting to Postgres at import shows up as an import error."""
    (tmp_path / "bad_dag.py").write_text(
        "import psycopg\n"
        "from airflow.sdk import DAG\n"
        "psycopg.connect('dbname=postgres')\n"
        "DAG('bad_dag', schedule=None)\n"
    )

    bag = _parse(tmp_path / "bad_dag.py")

    assert "I/O at parse time" in "".join(bag.import_errors.values())


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_follows_the_house_rules(path: Path) -> None:
    """Test that each DAG has tags, docs, and every task at least 2 retries."""
    for dag in _parse(path).dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert dag.doc_md and "How to trigger" in dag.doc_md, f"{dag.dag_id}: doc_md"
        assert dag.render_template_as_native_obj, f"{dag.dag_id} renders params as text"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag.dag_id}.{task.task_id} has {task.retries} retries"


def test_dag_files_cover_the_demo_contract() -> None:
    """Test that the table and replay DAGs of the contract are there."""
    names = {p.stem for p in DAG_FILES}

    assert {"parallel_batch_table", "parallel_batch_replay"} <= names


def test_table_dag_shape() -> None:
    """Test that the table DAG maps one pooled task per chunk and takes the contract's params."""
    from airflow.sdk import CronDataIntervalTimetable

    dag = _parse(DAGS_FOLDER / "parallel_batch_table.py").dags["parallel_batch_table"]

    assert set(dag.params.keys()) >= TABLE_PARAMS
    defaults = dag.params.validate()
    assert defaults["source_table"] == "demo.events"
    assert defaults["target_table"] == "demo.events_enriched"
    assert defaults["interval_column"] == "created_at"
    assert defaults["job_key"] is None and defaults["full_refresh"] is False
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert not dag.catchup
    process = dag.task_dict["events.process"]
    assert process.partial_kwargs["pool"] == "parallel_batch"
    assert process.partial_kwargs["max_active_tis_per_dagrun"] >= 1
    assert "chunk_id" in process.partial_kwargs["map_index_template"]
    assert dag.task_dict["create_target"].is_setup
    assert [t.task_id for t in dag.topological_sort()] == [
        "create_target",
        "events.plan",
        "events.process",
        "events.summarize",
    ]


def test_replay_dag_requires_a_job_key() -> None:
    """Test that the replay DAG cannot be triggered without a job_key."""
    from airflow.sdk.exceptions import ParamValidationError

    dag = _parse(DAGS_FOLDER / "parallel_batch_replay.py").dags["parallel_batch_replay"]

    with pytest.raises(ParamValidationError, match="job_key"):
        dag.params.validate()
    dag.params["job_key"] = "some-job"
    assert dag.params.validate()["replay_from"] == "source"
