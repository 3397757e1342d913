"""Static checks of docker-compose.yaml, the Dockerfile and .dockerignore (no Docker engine here)."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def test_init_prepares_airflow_with_this_package(services: dict[str, dict[str, Any]]) -> None:
    """Test that airflow-init runs this package's prepare_airflow."""
    command = "\n".join(services["airflow-init"]["command"])
    assert "from parallel_batch.local.env import prepare_airflow" in command


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
