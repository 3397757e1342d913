"""Which database the command line uses: the environment first, the embedded server otherwise.

For the ``parallel-batch`` commands and the ``make`` targets only. Airflow tasks and the
api-server never come here: they use their Airflow connection
(:mod:`parallel_batch.airflow.connection`) and fail when it is missing.
"""

from __future__ import annotations

import os

from parallel_batch.local import embedded

DATABASE_URL_ENV = "PARALLEL_BATCH_DATABASE_URL"


def database_url() -> str:
    """Return the configured database URL.

    ``PARALLEL_BATCH_DATABASE_URL`` wins; otherwise the embedded server is started (or reused).
    """
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return embedded.start()
