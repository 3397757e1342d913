"""Static checks of docker-compose.yaml, the Dockerfile and .dockerignore (no Docker engine here).

No Docker engine runs here, so the evidence that the stack works is the Celery end-to-end suite
(``tests/e2e/celery``), which runs ``parallel_batch.local.topology``'s commands and environment
on this machine; the ``compose`` tests below check that the compose file says the same.
"""

from __future__ import annotations

import json
import re
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from parallel_batch.local import topology
from parallel_batch.local.cluster import DATA_DIR_ENV, LocalCluster, cluster_environment
from parallel_batch.local.conninfo import CONN_ENV, conninfo_from_connection
from tests.e2e.celery import conftest as celery_suite

ROOT = Path(__file__).resolve().parents[2]
ANCHOR = "x-airflow-common"
_DEFAULTED = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _airflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if "build" in svc}


def _default(value: object) -> str:
    """Resolve ``${NAME:-default}`` to its default, as compose does with NAME unset."""
    return _DEFAULTED.sub(lambda m: m.group(1), str(value))


def _dockerfile_instructions() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_compose_says_it_is_for_local_development() -> None:
    """Test that the compose file states plainly that it is for local development."""
    assert "for local development" in (ROOT / "docker-compose.yaml").read_text()


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    """Test that every service defines a healthcheck command."""
    assert services
    missing = [name for name, svc in services.items() if not svc.get("healthcheck", {}).get("test")]
    assert missing == []


def test_airflow_services_share_the_anchor_and_build_the_image(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Test that the Airflow services come from one anchor that builds this directory's image."""
    common = compose[ANCHOR]
    assert common["build"] == "."
    airflow = _airflow_services(services)
    expected = {
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "flower",
    }
    assert set(airflow) == expected
    assert all(svc["image"] == common["image"] for svc in airflow.values())


def test_executor_is_celery_with_redis_and_postgres(services: dict[str, dict[str, Any]]) -> None:
    """Test that every Airflow service runs the CeleryExecutor on Redis and PostgreSQL."""
    assert services["redis"]["image"].startswith("redis:")
    assert services["postgres"]["image"].startswith("postgres:")
    for name, svc in _airflow_services(services).items():
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        ), name


def test_there_are_at_least_two_celery_workers(services: dict[str, dict[str, Any]]) -> None:
    """Test that the Celery workers add up to two or more containers."""
    workers = [
        svc for svc in services.values() if str(svc.get("command", "")).startswith("celery worker")
    ]
    replicas = sum(int(_default(svc.get("deploy", {}).get("replicas", 1))) for svc in workers)
    assert replicas >= 2


def test_services_wait_for_init_and_their_dependencies(services: dict[str, dict[str, Any]]) -> None:
    """Test that the long-running Airflow services start after a successful airflow-init."""
    for name, svc in _airflow_services(services).items():
        depends = svc["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert depends["airflow-init"]["condition"] == "service_completed_successfully", name


def test_the_connection_is_valid_json(services: dict[str, dict[str, Any]]) -> None:
    """Test that parallel_batch_default is a JSON postgres connection to the postgres service."""
    conn = json.loads(
        services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_PARALLEL_BATCH_DEFAULT"]
    )

    assert (conn["conn_type"], conn["host"], conn["schema"]) == (
        "postgres",
        "postgres",
        "parallel_batch",
    )


def test_jwt_secret_is_shared_by_every_container(services: dict[str, dict[str, Any]]) -> None:
    """Test that all Airflow containers get the same JWT secret (tasks' tokens must verify)."""
    secrets = {
        _default(svc["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"])
        for svc in _airflow_services(services).values()
    }
    assert len(secrets) == 1 and secrets != {""}


def test_compose_init_migrates_and_seeds_with_this_package(
    services: dict[str, dict[str, Any]],
) -> None:
    """Test that airflow-init runs init_stack (migrate, pool, schemas, demo data)."""
    command = "\n".join(services["airflow-init"]["command"])
    assert "from parallel_batch.local.cluster import init_stack" in command
    assert "init_stack()" in command


def test_dockerfile_extends_the_pinned_official_image() -> None:
    """Test that the Dockerfile starts from apache/airflow at the Airflow version installed here."""
    froms = [line for line in _dockerfile_instructions() if line.upper().startswith("FROM ")]

    assert froms == [f"FROM apache/airflow:{metadata.version('apache-airflow')}"]


def test_dockerfile_installs_the_package_and_the_celery_provider() -> None:
    """Test that the image installs this package with the celery provider, Airflow pinned."""
    instructions = _dockerfile_instructions()
    copies = " ".join(line for line in instructions if line.startswith("COPY "))
    installs = [line for line in instructions if line.startswith("RUN ") and "pip install" in line]

    assert "pyproject.toml" in copies and "plugins/parallel_batch" in copies
    assert len(installs) == 1
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in installs[0]
    assert "apache-airflow-providers-celery" in installs[0]
    assert "/opt/parallel-batch" in installs[0]


def test_dockerignore_keeps_local_state_out() -> None:
    """Test that the build context leaves out the virtualenv, local state and git."""
    ignored = set((ROOT / ".dockerignore").read_text().split())

    assert {".venv", ".parallel_batch", ".git"} <= ignored


# compose service -> the topology's service (the one parallel_batch.local.services runs)
COMPOSE_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
DATA_URL = "postgresql://pb:secret@db.example:5432/data"


@pytest.fixture(scope="module")
def machine_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment ``make cluster`` and the Celery suite give every service."""
    home = tmp_path_factory.mktemp("cluster-home")
    return cluster_environment(DATA_URL, broker_url="redis://127.0.0.1:6379/0", home=home)


def _command(svc: dict[str, Any]) -> list[str]:
    command = svc["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_runs_the_commands_of_the_topology(services: dict[str, dict[str, Any]]) -> None:
    """Test that each compose service runs the command its topology service runs here."""
    for name, service in COMPOSE_SERVICES.items():
        assert _command(services[name]) == list(topology.BASE_COMMANDS[service]), name
    assert _command(services["airflow-worker"]) == list(topology.WORKER_COMMAND)
    assert _command(services["flower"]) == list(topology.FLOWER_COMMAND)
    # On one machine a worker only adds its node name and leaves the shared log port alone.
    assert topology.worker_argv("w1")[:2] == list(topology.WORKER_COMMAND)


def test_compose_has_the_services_of_the_celery_suite(services: dict[str, dict[str, Any]]) -> None:
    """Test that every service the Celery e2e suite runs is a compose service, workers as many."""
    by_topology = {service: name for name, service in COMPOSE_SERVICES.items()}
    assert set(celery_suite.SERVICES) <= set(by_topology)
    replicas = int(_default(services["airflow-worker"]["deploy"]["replicas"]))
    assert replicas == len(celery_suite.WORKERS) == 2
    concurrency = int(_default(services["airflow-worker"]["environment"][
        "AIRFLOW__CELERY__WORKER_CONCURRENCY"
    ]))  # fmt: skip
    assert concurrency >= celery_suite.WORKER_CONCURRENCY


def test_compose_sets_every_variable_of_the_machine_cluster(
    services: dict[str, dict[str, Any]], machine_env: dict[str, str]
) -> None:
    """Test that each Airflow container sets every variable the machine's cluster sets, but the
    machine-only ones (paths, the local address, per-worker names)."""
    shared = set(machine_env) - topology.MACHINE_ONLY_ENV
    assert {"AIRFLOW__CELERY__BROKER_URL", "PARALLEL_BATCH_DATABASE_URL", CONN_ENV} <= shared
    for name, svc in _airflow_services(services).items():
        assert sorted(shared - set(svc["environment"])) == [], name


def _same_server(url: str, connection: str) -> None:
    """Assert that a libpq URL and an Airflow connection name the same database and user."""
    left, right = conninfo_to_dict(url), conninfo_to_dict(conninfo_from_connection(connection))
    keys = ("host", "port", "dbname", "user", "password")
    assert {k: str(left.get(k)) for k in keys} == {k: str(right.get(k)) for k in keys}


def test_compose_env_values_follow_the_machine_cluster(
    services: dict[str, dict[str, Any]], machine_env: dict[str, str]
) -> None:
    """Test that the values follow the same patterns: executor, broker, results in the metadata
    DB, the CLI's database = the connection's, the execution API, auth."""
    for name, svc in _airflow_services(services).items():
        for env in (machine_env, {k: _default(v) for k, v in svc["environment"].items()}):
            assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
            assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
            assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == (
                "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
            ), name
            assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
            assert int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) >= 1, name
            _same_server(env["PARALLEL_BATCH_DATABASE_URL"], env[CONN_ENV])
            assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith(":8080/execution/")
            for key in ("AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__LOAD_EXAMPLES"):
                assert env[key].lower() == machine_env[key].lower(), (name, key)


def test_compose_airflow_containers_share_a_data_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Test that every Airflow container mounts the same named volume at the data directory."""
    for name, svc in _airflow_services(services).items():
        data_dir = svc["environment"][DATA_DIR_ENV]
        mounts = [v for v in svc["volumes"] if v.endswith(f":{data_dir}")]
        assert len(mounts) == 1, name
        volume = mounts[0].split(":")[0]
        assert volume in compose["volumes"], name


def test_compose_mounts_dags_include_and_plugins_where_the_image_expects(
    services: dict[str, dict[str, Any]],
) -> None:
    """Test that dags/, include/ and plugins/ are mounted at /opt/airflow/* and importable."""
    expected = {
        "./dags:/opt/airflow/dags",
        "./include:/opt/airflow/include",
        "./plugins:/opt/airflow/plugins",
    }
    for name, svc in _airflow_services(services).items():
        assert expected <= set(svc["volumes"]), name
    env = [line for line in _dockerfile_instructions() if line.startswith("ENV PYTHONPATH=")]
    assert len(env) == 1
    assert env[0].removeprefix("ENV PYTHONPATH=").split(":") == [
        "/opt/airflow",
        "/opt/airflow/plugins",
    ]
    assert (ROOT / "plugins" / ".airflowignore").is_file()


def test_compose_flower_runs_under_a_profile(services: dict[str, dict[str, Any]]) -> None:
    """Test that Flower only starts with its profile."""
    assert services["flower"]["profiles"] == ["flower"]
    assert all("profiles" not in svc for name, svc in services.items() if name != "flower")


def test_compose_suite_cluster_is_a_local_cluster() -> None:
    """Test that the Celery suite's cluster is the LocalCluster on cluster_environment."""
    source = Path(celery_suite.__file__).read_text()
    assert "cluster_environment(" in source and "LocalCluster(" in source
    assert celery_suite.LocalCluster is LocalCluster
