"""Which database to use: the environment first, the embedded server otherwise."""

from __future__ import annotations

import os

from parallel_batch.local import embedded

DATABASE_URL_ENV = "PARALLEL_BATCH_DATABASE_URL"


def database_url(*, start_embedded: bool = True) -> str:
    """Return the configured database URL.

    ``PARALLEL_BATCH_DATABASE_URL`` wins; otherwise the embedded server is started (or reused).
    """
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    if not start_embedded:
        raise embedded.DatabaseUnavailableError(
            f"No database configured: set {DATABASE_URL_ENV} or run `parallel-batch db url`"
        )
    return embedded.start()
