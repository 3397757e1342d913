"""Tests of parallel_batch.local.serve that start no Airflow (tests/e2e starts it)."""

from __future__ import annotations

from pathlib import Path

from parallel_batch.local.serve import banner

ENV = {
    "AIRFLOW_HOME": "/home/af",
    "AIRFLOW__API__HOST": "127.0.0.1",
    "AIRFLOW__CORE__DAGS_FOLDER": "/project/dags",
}


def test_banner_says_what_demo_data_was_created() -> None:
    """Test that the banner lists the demo data created, under one "Demo:" label."""
    text = banner(ENV, "http://localhost:8080", Path("/home/af/logs/services"), ["a", "b"])

    lines = text.splitlines()
    assert "Airflow is running: http://localhost:8080" in lines
    assert "  Demo:   a" in lines
    assert "          b" in lines
    assert lines.index("  Demo:   a") == lines.index("          b") - 1


def test_banner_without_demo_data_has_no_demo_line() -> None:
    """Test that nothing is said about demo data when none was created."""
    text = banner(ENV, "http://localhost:8080", Path("/home/af/logs/services"))

    assert "Demo:" not in text
    assert text.splitlines()[-1] == "Press Ctrl-C to stop."
