"""A real local Airflow for end-to-end tests: scheduler, dag-processor and api-server.

``start_airflow(dags_folder)`` (session fixture) starts the services with the LocalExecutor on a
free port, with their own ``AIRFLOW_HOME`` and a fresh metadata database on the test server, and
returns an :class:`AirflowClient` for the REST API v2. One instance runs at a time: asking for
another DAGs folder stops the current one. ``airflow`` is the session's shared instance, whose
DAGs folder holds copies of ``tests/e2e/dags`` and of the project's ``dags/`` (so the tiny DAGs
and the real ones run on one Airflow, started once). The ``parallel_batch_default`` connection
points at ``e2e_db_url``, a database of the session. Teardown stops every process the services
started, tasks included. Tests that take ``start_airflow`` themselves (they may stop or switch
the instance) run after the others, so that the shared instance starts only once.

The test process itself never imports airflow: Airflow runs in subprocesses only.
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from parallel_batch.local import env as localenv
from parallel_batch.local.paths import project_root
from parallel_batch.local.services import LocalAirflow, free_port

E2E_DAGS = Path(__file__).parent / "dags"
PROJECT_DAGS = project_root() / "dags"
E2E_SERVICES = ("api-server", "scheduler", "dag-processor")
TERMINAL_RUN_STATES = {"success", "failed"}
# Seconds to wait for the dag-processor to parse a DAG, and for a run to finish (2 shared cores).
DAG_PARSE_TIMEOUT = 180.0
RUN_TIMEOUT = 300.0


@dataclass
class AirflowClient:
    """A small client of one running Airflow's REST API v2 (all users are admins: no token).

    :param url: the api-server's base URL.
    :param env: the Airflow environment of that instance (for :meth:`cli`).
    :param airflow: the running services.
    """

    url: str
    env: dict[str, str]
    airflow: LocalAirflow
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=f"{self.url}/api/v2", timeout=30)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON, raising on an HTTP error with its body."""
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise AssertionError(f"{method} {path}: HTTP {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = DAG_PARSE_TIMEOUT) -> dict[str, Any]:
        """Wait until the dag-processor has parsed ``dag_id``; return the DAG."""
        deadline = time.monotonic() + timeout
        while True:
            self.airflow.check_alive()
            response = self.http.get(f"/dags/{dag_id}")
            if response.status_code == 200:
                dag: dict[str, Any] = response.json()
                return dag
            if time.monotonic() > deadline:
                errors = self.request("GET", "/importErrors")
                raise AssertionError(f"DAG {dag_id} not parsed within {timeout:.0f} s: {errors}")
            time.sleep(1)

    def unpause(self, dag_id: str) -> None:
        """Unpause ``dag_id`` (the scheduler runs nothing of a paused DAG, backfills included)."""
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a manual run with ``conf``, as the UI trigger form does; return its run id."""
        body = {"logical_date": None, "conf": conf or {}}
        run: dict[str, Any] = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return run

    def dag_runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """Return the runs of ``dag_id`` (filters as query parameters, e.g. ``run_type``)."""
        body = self.request("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params})
        runs: list[dict[str, Any]] = body["dag_runs"]
        return runs

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT
    ) -> dict[str, Any]:
        """Wait until the run is finished (success or failed); return it."""
        deadline = time.monotonic() + timeout
        while True:
            self.airflow.check_alive()
            run = self.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                states = {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
                raise AssertionError(f"{dag_id} {run_id} still {run['state']}: {states}")
            time.sleep(1)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Return every task instance of the run, mapped ones one per map index."""
        body = self.request(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        )
        tis: list[dict[str, Any]] = body["task_instances"]
        return tis

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"
    ) -> Any:
        """Return the (deserialized) XCom value of one task instance."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        body = self.request("GET", path, params={"map_index": map_index, "deserialize": True})
        return body["value"]

    def cli(self, *args: str) -> str:
        """Run ``airflow ARGS`` against this instance; return its output."""
        return localenv.run_airflow_cli(self.env, list(args))

    def close(self) -> None:
        self.http.close()


@contextlib.contextmanager
def running_airflow(
    dags_folder: Path, data_url: str, server_url: str, home: Path
) -> Iterator[AirflowClient]:
    """Run scheduler, dag-processor and api-server for ``dags_folder`` until the block ends."""
    metadata_db = f"pbtest_airflow_{uuid.uuid4().hex[:12]}"
    env = localenv.airflow_environment(
        data_url,
        home=home,
        metadata_database=metadata_db,
        dags_folder=dags_folder,
        api_port=free_port(),
    )
    try:
        localenv.prepare_airflow(env, pool_slots=2)
        airflow = LocalAirflow(env, services=E2E_SERVICES)
        with airflow:
            airflow.wait_until_healthy()
            client = AirflowClient(airflow.url, env, airflow)
            try:
                yield client
            finally:
                client.close()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(metadata_db)
                )
            )


@pytest.fixture(scope="session")
def e2e_db_url(pg_server_url: str) -> Iterator[str]:
    """URL of a database of this session, behind the ``parallel_batch_default`` connection."""
    name = f"pbtest_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(pg_server_url, dbname=name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def shared_dags_folder(folder: Path) -> Path:
    """Fill ``folder`` with copies of the DAG files of ``tests/e2e/dags`` and ``dags/``; return it.

    Copies, not the folders themselves: one DAGs folder serves both, and a file edited while the
    session runs does not change the DAGs under test halfway.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for source in (E2E_DAGS, PROJECT_DAGS):
        for path in sorted(source.glob("*.py")):
            if (folder / path.name).exists():
                raise AssertionError(f"two DAG files named {path.name} ({source})")
            shutil.copy2(path, folder / path.name)
    return folder


class AirflowStarter:
    """Starts one local Airflow at a time (per DAGs folder) and stops it at the end.

    :param data_url: the database behind ``parallel_batch_default``.
    :param server_url: the test server (for the metadata databases).
    :param workdir: where each instance's ``AIRFLOW_HOME`` goes.
    :param default_dags_folder: the DAGs folder when none is asked for (default: ``tests/e2e/dags``).
    """

    def __init__(
        self,
        data_url: str,
        server_url: str,
        workdir: Path,
        default_dags_folder: Path = E2E_DAGS,
    ) -> None:
        self._args = (data_url, server_url)
        self._workdir = workdir
        self._default = default_dags_folder
        self._stack: contextlib.ExitStack | None = None
        self._current: tuple[Path, AirflowClient] | None = None

    def __call__(self, dags_folder: Path | None = None) -> AirflowClient:
        dags_folder = (dags_folder or self._default).resolve()
        if self._current and self._current[0] == dags_folder:
            return self._current[1]
        self.stop()
        stack = contextlib.ExitStack()
        home = self._workdir / f"airflow-{uuid.uuid4().hex[:8]}"
        client = stack.enter_context(running_airflow(dags_folder, *self._args, home))
        self._stack, self._current = stack, (dags_folder, client)
        return client

    def stop(self) -> None:
        """Stop the running instance, if any."""
        stack, self._stack, self._current = self._stack, None, None
        if stack is not None:
            stack.close()


@pytest.fixture(scope="session")
def start_airflow(
    e2e_db_url: str, pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowStarter]:
    """``start_airflow(dags_folder)`` -> a client of a running local Airflow for that folder.

    Without a folder: the shared one (the DAGs of ``tests/e2e/dags`` and of ``dags/``).
    """
    workdir = tmp_path_factory.mktemp("e2e-airflow")
    starter = AirflowStarter(
        e2e_db_url, pg_server_url, workdir, shared_dags_folder(workdir / "dags")
    )
    try:
        yield starter
    finally:
        starter.stop()


@pytest.fixture
def airflow(start_airflow: AirflowStarter) -> AirflowClient:
    """The session's shared local Airflow (the DAGs of ``tests/e2e/dags`` and ``dags/``)."""
    client: AirflowClient = start_airflow()
    return client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that take ``start_airflow`` themselves after those sharing ``airflow``.

    Such a test may stop the shared instance or start another; run earlier, it would make every
    later test start Airflow again (most of a minute each on two cores). The order is otherwise
    kept (a stable sort).
    """

    def manages_airflow(item: pytest.Item) -> bool:
        function = getattr(item, "function", None)
        if function is None or Path(str(item.path)).parent != Path(__file__).parent:
            return False
        return "start_airflow" in inspect.signature(function).parameters

    items.sort(key=manages_airflow)
