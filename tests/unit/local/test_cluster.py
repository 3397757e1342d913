"""Tests of parallel_batch.local.cluster and .topology that start no Airflow (the Celery e2e suite
in ``tests/e2e/celery`` starts it)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from parallel_batch.local import topology
from parallel_batch.local.cluster import (
    LocalCluster,
    broker_problem,
    cluster_environment,
    worker_names,
)
from parallel_batch.local.services import _argv

URL = "postgresql://pb:secret@db.example:5432/data"


def test_worker_names_count_from_one() -> None:
    """Test that workers are named w1..wN and that a cluster needs one."""
    assert worker_names(3) == ("w1", "w2", "w3")
    with pytest.raises(ValueError, match="at least one worker"):
        worker_names(0)


def test_worker_argv_names_the_node_and_serves_no_logs() -> None:
    """Test that a worker sharing its machine gets its own Celery node name and no log server."""
    assert topology.worker_argv("w2") == [
        "celery", "worker", "--celery-hostname", "w2@%h", "--skip-serve-logs",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="short identifier"):
        topology.worker_argv("w 1")


def test_worker_hostname_is_the_worker_at_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a named worker's tasks record ``name@host``, others the host's name."""
    monkeypatch.delenv(topology.WORKER_NAME_ENV, raising=False)
    assert topology.worker_hostname() == socket.getfqdn()
    monkeypatch.setenv(topology.WORKER_NAME_ENV, "w1")
    assert topology.worker_hostname() == f"w1@{socket.getfqdn()}"


def test_local_services_run_the_topology_commands() -> None:
    """Test that LocalAirflow starts exactly the commands that docker-compose.yaml runs."""
    for name, args in topology.BASE_COMMANDS.items():
        assert _argv(name)[1:] == ["-m", "airflow", *args]


def test_cluster_environment_is_celery_on_the_metadata_db(tmp_path: Path) -> None:
    """Test that the cluster's environment adds the Celery variables to the local one."""
    env = cluster_environment(
        URL, broker_url="redis://127.0.0.1:6379/3", workers=2, cpu_count=4, home=tmp_path
    )

    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/3"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == (
        "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    )
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"  # 2 per core, shared by 2 workers
    assert env["PARALLEL_BATCH_DATABASE_URL"] == URL
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == topology.HOSTNAME_CALLABLE


def test_celery_env_refuses_other_brokers() -> None:
    """Test that only Redis is accepted as the broker."""
    with pytest.raises(ValueError, match="redis://"):
        topology.celery_env(
            broker_url="amqp://x", metadata_url="m", data_url="d", worker_concurrency=1
        )


def test_local_cluster_checks_its_arguments(tmp_path: Path) -> None:
    """Test that a cluster needs the Celery environment and distinct worker names."""
    env = cluster_environment(URL, home=tmp_path)
    with pytest.raises(ValueError, match="CeleryExecutor"):
        LocalCluster({"AIRFLOW_HOME": str(tmp_path)})
    with pytest.raises(ValueError, match="distinct"):
        LocalCluster(env, workers=("w1", "w1"))
    assert LocalCluster(env).workers == ("w1", "w2")


def test_broker_problem_says_what_is_wrong() -> None:
    """Test that a closed port and a non-Redis server are reported, and a PONG accepted."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "no Redis at 127.0.0.1" in str(broker_problem(f"redis://127.0.0.1:{port}/0"))
    assert "not a redis:// URL" in str(broker_problem("amqp://127.0.0.1/"))

    for answer, ok in ((b"+PONG\r\n", True), (b"HTTP/1.1 400\r\n", False)):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()

            def reply(server: socket.socket = server, answer: bytes = answer) -> None:
                conn, _ = server.accept()
                with conn:
                    conn.recv(64)
                    conn.sendall(answer)

            thread = threading.Thread(target=reply)
            thread.start()
            problem = broker_problem(f"redis://127.0.0.1:{server.getsockname()[1]}/0")
            thread.join()
        assert (problem is None) == ok, problem


def test_worker_readiness_is_read_from_its_log(tmp_path: Path) -> None:
    """Test that a worker is ready once its log, since its start, has Celery's ready line."""
    env = cluster_environment(URL, home=tmp_path)
    cluster = LocalCluster(env, log_dir=tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "worker-w1.log"
    log.write_bytes(b"old run\n2026-01-01T00:00:00Z [info ] w1@host ready.   [celery]\n")
    cluster._ready_from["w1"] = log.stat().st_size  # as start_worker records it

    assert not cluster._worker_ready("w1")
    with log.open("ab") as fh:
        fh.write(b"2026-01-01T00:01:00Z [info ] w2@host ready.\n")
    assert not cluster._worker_ready("w1")
    with log.open("ab") as fh:
        fh.write(b"2026-01-01T00:01:00Z [info     ] w1@vm ready.   [celery.apps.worker]\n")
    assert cluster._worker_ready("w1")
