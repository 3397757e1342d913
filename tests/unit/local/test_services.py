"""Tests of parallel_batch.local.services that start no Airflow (the e2e tests start it)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from parallel_batch.exceptions import ConfigurationError
from parallel_batch.local.services import LocalAirflow, free_port, port_is_free


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"services": ("scheduler", "webserver")}, "unknown Airflow services: webserver"),
        ({"services": ()}, "services must not be empty"),
    ],
)
def test_local_airflow_checks_arguments(
    tmp_path: Path, kwargs: dict[str, tuple[str, ...]], message: str
) -> None:
    """Test that unknown or no services are refused with their message."""
    with pytest.raises(ValueError, match=message):
        LocalAirflow({"AIRFLOW_HOME": str(tmp_path)}, **kwargs)


def test_local_airflow_needs_a_home() -> None:
    """Test that an environment without AIRFLOW_HOME is refused."""
    with pytest.raises(ValueError, match="env must set AIRFLOW_HOME"):
        LocalAirflow({})


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    """Test that start fails with a clear message, starting nothing, when the port is taken."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        airflow = LocalAirflow(
            {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__API__HOST": "127.0.0.1",
             "AIRFLOW__API__PORT": str(port)}
        )  # fmt: skip

        assert not port_is_free("127.0.0.1", port)
        with pytest.raises(ConfigurationError, match=f"Port {port} on 127.0.0.1 is in use"):
            airflow.start()
    assert airflow.processes() == []
    assert airflow.url == f"http://127.0.0.1:{port}"


def test_free_port_is_free() -> None:
    """Test that free_port returns a port nothing listens on."""
    assert port_is_free("127.0.0.1", free_port())
