"""Provider metadata for Airflow's providers manager (the ``apache_airflow_provider`` entry point).

``airflow providers list`` shows this package from it. The ``parallel_batch_default`` connection
is an ordinary ``postgres`` connection, so no connection type of our own is registered; the
plugin (progress view) registers through the ``airflow.plugins`` entry point, not here, so that
Airflow does not load it twice.
"""

from __future__ import annotations

from typing import Any

from parallel_batch import __version__

PACKAGE_NAME = "airflow-parallel-batch"


def get_provider_info() -> dict[str, Any]:
    """Return the provider info dict (``airflow/provider_info.schema.json``)."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "Parallel Batch",
        "description": (
            "Restartable, exactly-once parallel batch processing of large Postgres tables and "
            "CSV files with dynamic task mapping, checkpoints and dead letters."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Parallel Batch",
                "external-doc-url": "https://airflow.apache.org/docs/apache-airflow/stable/",
                "tags": ["software"],
            }
        ],
    }
