"""A Celery cluster on one machine: ``make cluster`` and the Celery end-to-end suite.

::

    LocalCluster(env, workers=("w1", "w2"))        a LocalAirflow with Celery workers added
      |-- airflow api-server / scheduler / dag-processor / triggerer     (LocalAirflow)
      |-- airflow celery worker --celery-hostname w1@%h --skip-serve-logs    PARALLEL_BATCH_WORKER_NAME=w1
      `-- airflow celery worker --celery-hostname w2@%h --skip-serve-logs    PARALLEL_BATCH_WORKER_NAME=w2

The environment is :func:`cluster_environment`: the local Airflow environment
(:func:`parallel_batch.local.env.airflow_environment`) made a Celery one by
:func:`parallel_batch.local.topology.celery_env`, the same variables ``docker-compose.yaml``
sets. The broker is Redis (``PARALLEL_BATCH_BROKER_URL``, default ``redis://127.0.0.1:6379/0``);
task results go to the metadata DB. Each worker's task instances record ``w1@<host>`` as their
hostname, so the UI shows which worker ran which chunk.

A worker is ready when its log says ``<name>@<host> ready.`` (Celery's own line, once it
consumes from the broker); :meth:`LocalCluster.kill_worker` SIGKILLs a worker's process group
and every process under it, as a machine that dies would lose them, and
:meth:`LocalCluster.start_worker` starts it again.

:func:`init_stack` is the compose stack's ``airflow-init``: migrate, pool, schemas, demo data.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

from parallel_batch.exceptions import AirflowServiceError, ConfigurationError
from parallel_batch.local import env as localenv
from parallel_batch.local.conninfo import CONN_ENV, METADATA_DATABASE, conninfo_from_connection
from parallel_batch.local.services import (
    ALL_SERVICES,
    POLL_INTERVAL,
    STARTUP_TIMEOUT,
    LocalAirflow,
)
from parallel_batch.local.topology import (
    HOSTNAME_CALLABLE,
    WORKER_NAME_ENV,
    celery_env,
    worker_argv,
)

__all__ = [
    "BROKER_URL_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_BROKER_URL",
    "LocalCluster",
    "broker_problem",
    "cluster_environment",
    "forget_queue",
    "init_stack",
    "run_cluster",
    "worker_names",
]

BROKER_URL_ENV = "PARALLEL_BATCH_BROKER_URL"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_WORKERS = 2
# Tasks a worker runs at once, per core of the machine shared by the workers: chunk tasks are
# bounded by the parallel_batch pool (one slot per core); the rest (plan, summarize, setup)
# mostly wait on Postgres. More: light tasks overlap; fewer: less memory (~150 MB per task).
TASKS_PER_CORE = 2
# Seconds to connect to the broker when checking that it is there.
BROKER_TIMEOUT = 2.0
# The shared data directory of the compose stack, and the demo CSV airflow-init writes there
# (trigger parallel_batch_csv with {"path": "/opt/airflow/data/customers.csv"}).
DATA_DIR_ENV = "PARALLEL_BATCH_DATA_DIR"
DEMO_CSV_NAME = "customers.csv"
DEMO_CSV_ROWS = 200_000
DEMO_CSV_BAD_EVERY = 97


def worker_names(count: int) -> tuple[str, ...]:
    """Return the names of ``count`` workers: ``w1``, ``w2``, ..."""
    if count < 1:
        raise ValueError("a cluster needs at least one worker")
    return tuple(f"w{i}" for i in range(1, count + 1))


def broker_problem(url: str, timeout: float = BROKER_TIMEOUT) -> str | None:
    """Return why the Redis broker at ``url`` cannot be used, or None when it answers a PING."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"redis", "rediss"}:
        return f"the broker {url!r} is not a redis:// URL"
    host, port = parsed.hostname or "localhost", parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"no Redis at {host}:{port} ({exc})"
    # -NOAUTH: a Redis that wants the password of the URL, which Celery sends.
    if answer.startswith((b"+PONG", b"-NOAUTH")):
        return None
    return f"{host}:{port} does not answer as Redis does ({answer[:40]!r})"


def forget_queue(broker_url: str, queue: str) -> None:
    """Delete a Celery queue of one's own and its bindings from Redis (best effort)."""
    import redis

    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(broker_url, socket_timeout=BROKER_TIMEOUT)
        try:
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        finally:
            client.close()


def cluster_environment(
    database_url: str | None = None,
    *,
    broker_url: str = DEFAULT_BROKER_URL,
    workers: int = DEFAULT_WORKERS,
    worker_concurrency: int | None = None,
    cpu_count: int | None = None,
    home: Path | None = None,
    metadata_database: str = METADATA_DATABASE,
    dags_folder: Path | None = None,
    api_port: int = localenv.DEFAULT_API_PORT,
) -> dict[str, str]:
    """Return the environment of a Celery cluster of ``workers`` workers on this machine.

    :param database_url: the data database (default: the configured one); its server holds the
        metadata DB too, as for ``make airflow``.
    :param broker_url: the Redis broker.
    :param workers: workers on this machine (sizes their concurrency).
    :param worker_concurrency: tasks per worker. Default: ``TASKS_PER_CORE`` per core,
        shared by the workers, at least 2.
    :param cpu_count: cores of this machine (default: ``os.cpu_count()``).
    :param home: ``metadata_database``, ``dags_folder``, ``api_port``: as for
        :func:`~parallel_batch.local.env.airflow_environment`.
    """
    if database_url is None:
        from parallel_batch.local.config import database_url as configured_url

        database_url = configured_url()
    cores = cpu_count or os.cpu_count() or 1
    concurrency = worker_concurrency or max(2, TASKS_PER_CORE * cores // max(1, workers))
    env = localenv.airflow_environment(
        database_url,
        home=home,
        metadata_database=metadata_database,
        dags_folder=dags_folder,
        api_port=api_port,
        cpu_count=cores,
    )
    env.update(
        celery_env(
            broker_url=broker_url,
            metadata_url=env[localenv.SQL_ALCHEMY_CONN_ENV],
            data_url=database_url,
            worker_concurrency=concurrency,
        )
    )
    env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = HOSTNAME_CALLABLE
    return env


class LocalCluster(LocalAirflow):
    """Airflow's services and named Celery workers, as child processes of this one.

    :param env: a :func:`cluster_environment`.
    :param workers: the workers' names (``--celery-hostname <name>@%h``).
    :param services: the other services (default: all four).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: Sequence[str] = worker_names(DEFAULT_WORKERS),
        services: Sequence[str] = ALL_SERVICES,
        log_dir: Path | None = None,
        subreaper: bool = False,
    ) -> None:
        if env.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
            raise ValueError("env must be a cluster_environment (CeleryExecutor)")
        if not workers or len(set(workers)) != len(workers):
            raise ValueError("workers must be distinct names, at least one")
        for name in workers:
            worker_argv(name)  # validates the name
        super().__init__(env, services=services, log_dir=log_dir, subreaper=subreaper)
        self.workers = tuple(workers)
        self._ready_from: dict[str, int] = {}

    def start(self) -> None:
        """Start every service and every worker; return at once (see :meth:`wait_until_healthy`)."""
        super().start()
        for name in self.workers:
            self.start_worker(name)

    def start_worker(self, name: str) -> None:
        """Start worker ``name`` (again, after :meth:`kill_worker`)."""
        if name in self.running_workers():
            raise AirflowServiceError(f"worker {name} is already running")
        log_path = self.log_dir / f"{_service(name)}.log"
        self._ready_from[name] = log_path.stat().st_size if log_path.exists() else 0
        argv = [sys.executable, "-m", "airflow", *worker_argv(name)]
        self._spawn(_service(name), argv, {WORKER_NAME_ENV: name})

    def running_workers(self) -> list[str]:
        """Return the names of the workers started and not killed."""
        started = {svc.name for svc in self._running}
        return [name for name in self.workers if _service(name) in started]

    def worker_process(self, name: str) -> psutil.Process:
        """Return the main process of a running worker."""
        for svc in self._running:
            if svc.name == _service(name):
                return psutil.Process(svc.process.pid)
        raise AirflowServiceError(f"worker {name} is not running")

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the services report healthy and every worker consumes from the broker."""
        deadline = time.monotonic() + timeout
        super().wait_until_healthy(timeout)
        self.wait_for_workers(max(1.0, deadline - time.monotonic()))

    def wait_for_workers(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until every running worker has logged that it is ready."""
        deadline = time.monotonic() + timeout
        waiting = self.running_workers()
        while waiting:
            self.check_alive()
            waiting = [name for name in waiting if not self._worker_ready(name)]
            if waiting and time.monotonic() > deadline:
                raise AirflowServiceError(
                    f"Celery workers {', '.join(waiting)} not ready within {timeout:.0f} s"
                    f"{self._log_tail(_service(waiting[0]))}"
                )
            if waiting:
                time.sleep(POLL_INTERVAL)

    def _worker_ready(self, name: str) -> bool:
        path = self.log_dir / f"{_service(name)}.log"
        try:
            with path.open("rb") as fh:
                fh.seek(self._ready_from.get(name, 0))
                text = fh.read()
        except OSError:
            return False
        # "w1@host ready." as Celery logs it, plain or inside a structured log line.
        return (
            re.search(rb"(?:^|\s)" + re.escape(name.encode()) + rb"@\S+ ready\.", text, re.M)
            is not None
        )

    def kill_worker(self, name: str) -> list[psutil.Process]:
        """SIGKILL worker ``name``'s process group and every process under it; return them.

        Task processes run in process groups of their own: each is killed by pid too, from a
        snapshot taken before the first signal. Returns once all of them are gone.
        """
        main = self.worker_process(name)
        tree = [main, *main.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(main.pid, signal.SIGKILL)  # its session (start_new_session): its group
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _, alive = psutil.wait_procs(tree, timeout=30)
        if alive:
            raise AirflowServiceError(f"worker {name}: processes survived SIGKILL: {alive}")
        for svc in list(self._running):
            if svc.name == _service(name):
                svc.process.wait(timeout=5)
                svc.log_file.close()
                self._running.remove(svc)
        return tree


def _service(worker: str) -> str:
    return f"worker-{worker}"


def init_stack(
    environ: Mapping[str, str] | None = None,
    *,
    pool_slots: int | None = None,
    csv_rows: int = DEMO_CSV_ROWS,
) -> list[str]:
    """``docker-compose.yaml``'s ``airflow-init``: everything a first run needs; idempotent.

    Migrates the metadata DB, creates the ``parallel_batch`` pool, the data database and its
    ``parallel_batch`` schema (:func:`~parallel_batch.local.env.prepare_airflow`), seeds
    ``demo.events`` where it is missing, and writes the demo customers CSV into the shared data
    directory (``PARALLEL_BATCH_DATA_DIR``) where it is missing. Returns what it did.

    :param environ: the container's environment (default: ``os.environ``).
    :param pool_slots: slots of a new pool (default: ``PARALLEL_BATCH_POOL_SLOTS``, else cores).
    :param csv_rows: records of the demo CSV.
    """
    from parallel_batch.demo.csv_file import write_customers_csv
    from parallel_batch.local.demo_data import seed_missing_demo_data

    environ = os.environ if environ is None else environ
    slots = pool_slots or int(environ.get("PARALLEL_BATCH_POOL_SLOTS") or 0) or None
    localenv.prepare_airflow(environ, pool_slots=slots)
    done = ["metadata DB migrated; pool, data database and schema in place"]
    done += seed_missing_demo_data(conninfo_from_connection(environ[CONN_ENV]))
    data_dir = environ.get(DATA_DIR_ENV)
    if data_dir:
        path = Path(data_dir) / DEMO_CSV_NAME
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            stats = write_customers_csv(tmp, csv_rows, bad_every=DEMO_CSV_BAD_EVERY)
            tmp.replace(path)  # whole or not at all: workers may read it at once
            done.append(f"wrote {stats.rows:,} customer records to {path}")
    for line in done:
        print(f"airflow-init: {line}", flush=True)
    return done


def run_cluster(
    *,
    port: int = localenv.DEFAULT_API_PORT,
    workers: int = DEFAULT_WORKERS,
    broker_url: str | None = None,
    demo_data: bool = True,
    out: IO[str] = sys.stdout,
) -> int:
    """``parallel-batch cluster``: the Celery cluster in the foreground until Ctrl-C.

    :raises ConfigurationError: when Redis does not answer at the broker URL.
    """
    from parallel_batch.local.demo_data import seed_missing_demo_data
    from parallel_batch.local.serve import serve

    broker = broker_url or os.environ.get(BROKER_URL_ENV) or DEFAULT_BROKER_URL
    problem = broker_problem(broker)
    if problem:
        raise ConfigurationError(
            f"The Celery cluster needs Redis: {problem}. Start one (`redis-server`, or "
            f"`docker run -p 6379:6379 redis:7`) or point {BROKER_URL_ENV} at yours."
        )
    names = worker_names(workers)
    env = cluster_environment(broker_url=broker, workers=workers, api_port=port)
    localenv.prepare_airflow(env)
    seeded = seed_missing_demo_data(conninfo_from_connection(env[CONN_ENV])) if demo_data else []
    cluster = LocalCluster(env, workers=names, subreaper=True)
    notes = [
        f"Celery: {len(names)} workers ({', '.join(names)}), "
        f"{env['AIRFLOW__CELERY__WORKER_CONCURRENCY']} tasks each, broker {broker}",
        "Chunks: per worker in the UI (a task instance's Hostname: w1@..., w2@...);",
        "        rows, rates and lease holders: parallel-batch status [JOB_KEY]",
    ]
    return serve(env, demo_data=seeded, airflow=cluster, notes=notes, out=out)
