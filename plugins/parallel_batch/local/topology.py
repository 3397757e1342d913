"""One Celery topology, spelled once: the services' commands and the Celery environment.

``make cluster`` and the Celery end-to-end suite (:mod:`parallel_batch.local.cluster`) start
these commands with this environment on one machine; ``docker-compose.yaml`` runs the same
commands with the same variables in containers. ``tests/unit/test_compose.py`` reads the compose
file and compares it with this module, so the suite that runs here is evidence for the file::

    service         airflow ...                       compose service
    api-server      api-server                        airflow-apiserver
    scheduler       scheduler --skip-serve-logs       airflow-scheduler
    dag-processor   dag-processor                     airflow-dag-processor
    triggerer       triggerer --skip-serve-logs       airflow-triggerer
    worker          celery worker                     airflow-worker (replicas)
    flower          celery flower                     flower (profile "flower")

What differs on one machine, and only there (:data:`MACHINE_ONLY_ENV`, :func:`worker_argv`):
several workers share a host, so each gets its own Celery node name (``--celery-hostname
w1@%h``) and task instances their own ``hostname`` (:func:`worker_hostname`); they would share the
log-serving port too, so they do not serve logs: the api-server reads the log files, as in the
compose stack where every container mounts the same logs volume.

Standard library only: Airflow imports :func:`worker_hostname` through ``[core]
hostname_callable`` in every task process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = [
    "BASE_COMMANDS",
    "FLOWER_COMMAND",
    "HOSTNAME_CALLABLE",
    "MACHINE_ONLY_ENV",
    "WORKER_COMMAND",
    "WORKER_NAME_ENV",
    "celery_env",
    "worker_argv",
    "worker_hostname",
]

# `airflow <args>` of each service, as compose's `command:` spells them. The scheduler and the
# triggerer run no tasks here (the Celery workers do): nothing for them to serve logs of.
BASE_COMMANDS: Mapping[str, tuple[str, ...]] = {
    "api-server": ("api-server",),
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}
WORKER_COMMAND = ("celery", "worker")
FLOWER_COMMAND = ("celery", "flower")
EXECUTOR = "CeleryExecutor"
WORKER_NAME_ENV = "PARALLEL_BATCH_WORKER_NAME"
HOSTNAME_CALLABLE = "parallel_batch.local.topology.worker_hostname"
DATABASE_URL_ENV = "PARALLEL_BATCH_DATABASE_URL"
# Variables the machine's cluster sets and the compose stack does not need: paths of this
# checkout, the api-server's local address, and per-worker identities (containers have their own
# hostnames; their image sets PYTHONPATH).
MACHINE_ONLY_ENV = frozenset(
    {
        "AIRFLOW_HOME",
        "PYTHONPATH",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
        "AIRFLOW__API__HOST",
        "AIRFLOW__API__PORT",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__CORE__PARALLELISM",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
    }
)


def celery_env(
    *, broker_url: str, metadata_url: str, data_url: str, worker_concurrency: int
) -> dict[str, str]:
    """Return the variables that make an Airflow environment a Celery one.

    :param broker_url: the Redis broker, ``redis://host:port/db``.
    :param metadata_url: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``: task results go to the
        metadata DB too (``db+`` of the same URL), so nothing but Redis is added.
    :param data_url: the data database as a libpq URL, for the ``parallel-batch`` CLI run in
        any container or shell of the cluster (``parallel-batch status``).
    :param worker_concurrency: tasks each worker runs at once (chunk tasks are also bounded by
        the ``parallel_batch`` pool).
    """
    if not broker_url.startswith(("redis://", "rediss://")):
        raise ValueError(f"the broker must be a redis:// URL, not {broker_url!r}")
    if worker_concurrency < 1:
        raise ValueError("worker_concurrency must be greater than 0")
    return {
        "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
        DATABASE_URL_ENV: data_url,
    }


def worker_argv(name: str) -> list[str]:
    """Return ``airflow <args>`` of worker ``name`` when it shares its machine with others."""
    if not name or not name.isidentifier():
        raise ValueError(f"a worker name is a short identifier, not {name!r}")
    return [*WORKER_COMMAND, "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable``: ``<worker>@<host>`` in a named worker's tasks.

    Task instances record it as their ``hostname`` (the UI, the REST API, the lease holder
    shown by ``parallel-batch status``); elsewhere it is the host's name, Airflow's default.
    """
    host = socket.getfqdn()
    name = os.environ.get(WORKER_NAME_ENV)
    return f"{name}@{host}" if name else host
