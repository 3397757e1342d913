"""airflow-parallel-batch: restartable, exactly-once parallel batch processing for Airflow 3.

The package is layered so that each layer only knows the ones below it::

    airflow/    operators, plugin, provider info   (the only place that imports airflow)
    postgres/   psycopg 3 data plane               (planner, reader, writer, checkpoints)
    files/      CSV chunk planner and reader
    engine/     pure Python: limiter, batching, worker pool, retries, pipeline, progress
"""

from __future__ import annotations

__version__ = "0.1.0"
