"""ParallelCsvJob through real Airflow (dag.test()) on files that are not the demo's: a Latin-1,
semicolon-separated file with its own NULL spelling on a real S3-compatible server, read with
the credentials of an Airflow ``aws`` connection (ObjectStoragePath), in chunk tasks whose
worker processes read their byte ranges."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.airflow.csv_transforms import FAIL_ENV
from tests.airflow.dagrun import DAGS_FOLDER, dead_letters, run_dag
from tests.helpers.s3 import S3

RECORDS = 6_000
BAD_LINE = 2 + 4_321  # the record of id 4321 (line 1 is the header)

# A DAG file with one ParallelCsvJob into t.sales; the test's options are written with repr().
_DAG = """
import datetime as dt

from airflow.sdk import DAG

from parallel_batch.airflow import ParallelCsvJob

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)):
    ParallelCsvJob(
        group_id="sales", target_table="t.sales", job_key={job_key!r}, asset=False, {options}
    )
"""
S3_OPTIONS = {
    "delimiter": ";",
    "encoding": "latin-1",
    "null_values": ["", "NULL"],
    "columns": {"article": "item"},
    "key_column": "id",
    "chunks": 3,
    "batch_rows": 500,
    "workers": 2,
}


@pytest.fixture
def sales(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """The target table t.sales, empty."""
    pg_conn.execute("CREATE SCHEMA t")
    pg_conn.execute("CREATE TABLE t.sales (id integer PRIMARY KEY, item text, amount numeric)")
    return pg_conn


def _file() -> bytes:
    lines = ["id;article;amount"]
    for i in range(RECORDS):
        amount = "NULL" if i % 10 == 0 else "oops" if i == 4_321 else f"{i}.5"
        lines.append(f'{i};"café; n° {i}";{amount}')
    return ("\n".join(lines) + "\n").encode("latin-1")


def _write_dag(folder: Path, dag_id: str, **options: object) -> None:
    rendered = ", ".join(f"{name}={value!r}" for name, value in options.items())
    source = _DAG.format(dag_id=dag_id, job_key=f"{dag_id}-job", options=rendered)
    (folder / f"{dag_id}.py").write_text(source)


def _dag(folder: Path, dag_id: str, **options: object) -> object:
    from airflow.dag_processing.dagbag import DagBag

    _write_dag(folder, dag_id, **options)
    dag = DagBag(str(folder)).get_dag(dag_id)
    assert dag is not None
    return dag


def test_latin1_semicolon_file_on_s3_through_an_airflow_connection(
    parallel_batch_conn: str,
    sales: psycopg.Connection,
    tmp_dags_folder: Path,
    s3: S3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test that the job loads every record once, typed, with NULLs and the bad one dead-lettered
    at its line, from an s3:// URL read with the connection's credentials only."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)  # the connection is the only way in
    monkeypatch.setenv("AIRFLOW_CONN_PB_S3", s3.connection_json)
    path = s3.put("sales-latin1.csv", _file())

    dag = _dag(tmp_dags_folder, "csv_s3", path=path, storage_conn_id="pb_s3", **S3_OPTIONS)
    result = run_dag(dag, {})

    assert result.state == "success", result.tis
    assert result.states("sales.process") == ["success"] * 3
    rows = sales.execute("SELECT id, item, amount FROM t.sales ORDER BY id").fetchall()
    expected = [
        (i, f"café; n° {i}", None if i % 10 == 0 else Decimal(f"{i}.5"))
        for i in range(RECORDS)
        if i != 4_321
    ]
    assert rows == expected
    letters = sales.execute(
        "SELECT line_number, error_type, message FROM parallel_batch.dead_letters"
    ).fetchall()
    assert letters == [(BAD_LINE, "CsvValueError", "amount: not a decimal number")]


def test_an_undefined_storage_connection_fails_the_plan_naming_it(
    parallel_batch_conn: str,
    sales: psycopg.Connection,
    tmp_dags_folder: Path,
    s3: S3,
) -> None:
    """Test that a storage_conn_id that is not defined fails the plan task with its name."""
    path = s3.put("sales-nocreds.csv", _file())

    dag = _dag(
        tmp_dags_folder, "csv_s3_noconn", path=path, storage_conn_id="pb_no_such_conn", **S3_OPTIONS
    )
    result = run_dag(dag, {})

    assert result.state == "failed"
    assert result.states("sales.plan") == ["failed"]
    assert sales.execute("SELECT count(*) FROM t.sales").fetchone() == (0,)


def test_storage_options_name_the_missing_connection() -> None:
    """Test that the error of an undefined storage connection names it and says what to do."""
    from parallel_batch.airflow.storage import storage_options
    from parallel_batch.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"'pb_no_such_conn'.*define the connection"):
        storage_options("s3://pb-data/x.csv", "pb_no_such_conn")
    with pytest.raises(ConfigurationError, match="for a URL path"):
        storage_options("/data/x.csv", "aws_default")


@pytest.mark.parametrize(
    ("transform", "kind", "amount"),
    [
        ("check", "rows", "numeric"),
        # as columns (the columnar path: a numeric of a declared scale), replayed as rows
        ("check_table", "arrow", "numeric(12,2)"),
    ],
    ids=["rows", "arrow"],
)
def test_csv_dead_letters_replay_after_the_transform_is_fixed(
    parallel_batch_conn: str,
    sales: psycopg.Connection,
    tmp_dags_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    transform: str,
    kind: str,
    amount: str,
) -> None:
    """Test that records a CSV job's transform refused are dead letters at their lines, and that
    parallel_batch_replay loads them once the transform accepts them."""
    from airflow.dag_processing.dagbag import DagBag

    sales.execute(f"ALTER TABLE t.sales ALTER amount TYPE {amount}")

    path = tmp_path / "sales.tsv"
    path.write_text("id\titem\tamount\n" + "".join(f'{i}\t"{i}"\t{i}.5\n' for i in range(1, 1001)))
    refused = [17, 500, 999]
    monkeypatch.setenv(FAIL_ENV, ",".join(map(str, refused)))
    _write_dag(
        tmp_dags_folder,
        "csv_replay",
        path=str(path),
        delimiter="\t",  # a real tab: whitespace, which must not read as an unset option
        quotechar=None,
        key_column="id",
        transform=f"tests.airflow.csv_transforms:{transform}",
        transform_kind=kind,
        chunks=2,
        batch_rows=100,
        workers=1,
    )
    shutil.copy(DAGS_FOLDER / "parallel_batch_replay.py", tmp_dags_folder)
    bag = DagBag(str(tmp_dags_folder))

    first = run_dag(bag.get_dag("csv_replay"), {})

    assert first.state == "success", first.tis
    letters = dead_letters(sales, "csv_replay-job")
    assert letters == {f"line:{i + 1}": "ValueError" for i in refused}
    ids = [i for (i,) in sales.execute("SELECT id FROM t.sales ORDER BY id")]
    assert ids == [i for i in range(1, 1001) if i not in refused]

    monkeypatch.delenv(FAIL_ENV)  # the fix
    replay = run_dag(bag.get_dag("parallel_batch_replay"), {"job_key": "csv_replay-job"})

    assert replay.state == "success", replay.tis
    assert dead_letters(sales, "csv_replay-job") == {}
    rows = sales.execute("SELECT id, item, amount FROM t.sales ORDER BY id").fetchall()
    assert rows == [(i, f'"{i}"', Decimal(f"{i}.5")) for i in range(1, 1001)]


def test_a_chunk_task_freezes_its_start_up_objects_only_while_the_chunk_runs(
    parallel_batch_conn: str,
    sales: psycopg.Connection,
    tmp_dags_folder: Path,
    tmp_path: Path,
) -> None:
    """Test that the chunk task's process holds its start-up objects out of the garbage
    collector's sight while the chunk runs (what an async transform, run in that process, sees)
    and gives them back after it."""
    import gc

    path = tmp_path / "sales.csv"
    path.write_text("id,item,amount\n" + "".join(f"{i},x,{i}\n" for i in range(1, 301)))
    dag = _dag(
        tmp_dags_folder,
        "csv_frozen",
        path=str(path),
        transform="tests.airflow.csv_transforms:freeze_seen",
        transform_kind="async",
        chunks=2,
        batch_rows=100,
    )
    assert gc.get_freeze_count() == 0

    run = run_dag(dag, {})

    assert run.state == "success", run.tis
    items = sales.execute("SELECT item, count(*) FROM t.sales GROUP BY item").fetchall()
    assert items == [("True", 300)]
    assert gc.get_freeze_count() == 0
