"""A real Celery cluster for the end-to-end tests: api-server, scheduler, dag-processor and two
``airflow celery worker`` processes (``w1``, ``w2``), on Redis and the test PostgreSQL.

``celery`` (module fixture) starts :class:`~parallel_batch.local.cluster.LocalCluster` with the
environment of :func:`~parallel_batch.local.cluster.cluster_environment`, the one ``make cluster``
runs and ``docker-compose.yaml`` mirrors (``tests/unit/test_compose.py``). It has:

- a metadata database and a data database of its own on the test server (dropped after), the
  data one behind ``parallel_batch_default`` and ``PARALLEL_BATCH_DATABASE_URL``;
- the broker ``PARALLEL_BATCH_TEST_BROKER_URL`` (default ``redis://127.0.0.1:6379/14``) and a
  Celery queue of its own, so that nothing else on that Redis takes its tasks;
- the project's DAGs, the ``parallel_batch`` pool with 4 slots, 2 tasks per worker;
- a task instance heartbeat timeout of 20 s (Airflow's default: 5 minutes), so that the tasks
  of a killed worker are failed, and retried, within the test.

Without Redis, the tests skip (fail under ``CI=true``). The test process never imports airflow.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from parallel_batch.local import env as localenv
from parallel_batch.local.cluster import (
    LocalCluster,
    broker_problem,
    cluster_environment,
    forget_queue,
)
from parallel_batch.local.services import free_port
from tests.conftest import require_service
from tests.e2e.conftest import PROJECT_DAGS, AirflowClient, AirflowStarter

BROKER_URL_ENV = "PARALLEL_BATCH_TEST_BROKER_URL"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"
SERVICES = ("api-server", "scheduler", "dag-processor")
WORKERS = ("w1", "w2")
POOL_SLOTS = 4
WORKER_CONCURRENCY = 2
# Seconds without a heartbeat after which the scheduler fails a task instance (its worker died),
# and how often it looks. Shorter: a killed worker's task is retried sooner; too short: a busy
# task on two loaded cores may miss its 5-second heartbeats and be failed while alive.
HEARTBEAT_TIMEOUT = 20
HEARTBEAT_DETECTION_INTERVAL = 5


@dataclass
class Cluster:
    """The running cluster: its REST client, services and databases.

    :param client: the REST client (``client.airflow`` is the :class:`LocalCluster`).
    :param data_url: the database behind ``parallel_batch_default``.
    :param env: the environment every service got.
    """

    client: AirflowClient
    data_url: str
    env: dict[str, str]

    @property
    def services(self) -> LocalCluster:
        cluster = self.client.airflow
        assert isinstance(cluster, LocalCluster)
        return cluster


@pytest.fixture(scope="module")
def broker_url() -> str:
    """The Redis URL of the suite; skips (fails under CI=true) when Redis does not answer."""
    url = os.environ.get(BROKER_URL_ENV, DEFAULT_BROKER_URL)
    problem = broker_problem(url)
    if problem:
        require_service(f"the Celery suite needs Redis ({BROKER_URL_ENV}={url}): {problem}")
    return url


def _create_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server_url, dbname=name)


def _drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def celery(
    broker_url: str,
    pg_server_url: str,
    start_airflow: AirflowStarter,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """A running Celery cluster with two workers, for this module's tests."""
    start_airflow.stop()  # no LocalExecutor instance beside it on the same cores
    workdir = tmp_path_factory.mktemp("celery-cluster")
    dags = workdir / "dags"
    dags.mkdir()
    for path in sorted(PROJECT_DAGS.glob("*.py")):
        shutil.copy2(path, dags / path.name)
    suffix = uuid.uuid4().hex[:12]
    metadata_db, data_db = f"pbtest_celery_airflow_{suffix}", f"pbtest_celery_{suffix}"
    queue = f"pbtest-{suffix}"
    data_url = _create_database(pg_server_url, data_db)
    try:
        env = cluster_environment(
            data_url,
            broker_url=broker_url,
            workers=len(WORKERS),
            worker_concurrency=WORKER_CONCURRENCY,
            home=workdir / "airflow",
            metadata_database=metadata_db,
            dags_folder=dags,
            api_port=free_port(),
        )
        env.update(
            {
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(
                    HEARTBEAT_DETECTION_INTERVAL
                ),
            }
        )
        localenv.prepare_airflow(env, pool_slots=POOL_SLOTS)
        cluster = LocalCluster(env, workers=WORKERS, services=SERVICES)
        with cluster:
            cluster.wait_until_healthy()
            client = AirflowClient(cluster.url, env, cluster)
            try:
                yield Cluster(client, data_url, env)
            finally:
                client.close()
    finally:
        forget_queue(broker_url, queue)
        _drop_database(pg_server_url, metadata_db)
        _drop_database(pg_server_url, data_db)


@pytest.fixture
def db(celery: Cluster) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the cluster's data database."""
    with psycopg.connect(celery.data_url, autocommit=True) as conn:
        yield conn


def worker_of(hostname: str | None) -> str:
    """Return the worker name of a task instance's ``hostname`` (``w1@host`` -> ``w1``)."""
    assert hostname and "@" in hostname, f"not a named worker's hostname: {hostname!r}"
    return hostname.split("@", 1)[0]
