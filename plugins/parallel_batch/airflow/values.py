"""The values operators take (templated, so they may arrive as text), checked, and their defaults.

Two layers check a value. The Params' JSON schema rejects a bad conf when a run is created (the
trigger form, ``airflow dags trigger -c``, the REST API), before anything runs. The operators check
again when they run, because they are also used without these Params, with templated values: a
bad value fails its task at once with the message, without retries
(:class:`~airflow.sdk.exceptions.AirflowFailException`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from parallel_batch.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MAX_FAILED_RATIO",
    "DEFAULT_WORKERS",
    "MAX_WORKERS",
    "fail_fast",
    "null",
    "optional_positive_int",
    "positive_int",
    "ratio_value",
    "true_or_false",
]

# Rows per chunk (one mapped task each). Each task costs Airflow 1-3 s (start, XComs, state
# updates, its worker processes), so a chunk must hold enough rows to pay that back; at ~50-90k
# rows/s per task, 250k rows were 3-5 s of work, and the whole DAG on 5M rows ran at 59-70k
# rows/s against 88-89k with 1M rows per chunk (bench/bench_table_dag.py's setup, 2 cores).
# Smaller: finer progress, more tasks to spread over many machines; larger: less overhead (a
# retry resumes from the chunk's checkpoint, so a large chunk loses no work when it fails).
DEFAULT_CHUNK_ROWS = 1_000_000
# Worker processes per chunk task. Chunk tasks run side by side (the `parallel_batch` pool has a
# slot per core), so one worker each keeps the cores busy without oversubscribing them.
DEFAULT_WORKERS = 1
# A sanity bound for the form: more processes than this per task is a typo, not a plan.
MAX_WORKERS = 64
# The share of rows that may end in the dead letters before the run fails.
DEFAULT_MAX_FAILED_RATIO = 0.01


@contextmanager
def fail_fast(what: str) -> Iterator[None]:
    """Turn a configuration error raised in the block into a failure without retries.

    :param what: what was being checked, the start of the message (e.g. ``"Invalid config"``).
    """
    try:
        yield
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise AirflowFailException(f"{what}: {exc}") from exc


def positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int greater than 0 (templated values arrive as text too).

    :raises ConfigurationError: for anything else, with the param's name.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be an integer greater than 0, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"{name} must be an integer greater than 0, got {value!r}"
            ) from None
    if not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be an integer greater than 0, got {value!r}")
    return value


def optional_positive_int(value: Any, name: str) -> int | None:
    """Return None for None (or "" / "None" from a non-native template), else :func:`positive_int`."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    return positive_int(value, name)


def ratio_value(value: Any, name: str) -> float:
    """Return ``value`` as a number between 0 and 1.

    :raises ConfigurationError: for anything else.
    """
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ConfigurationError(f"{name} must be a number between 0 and 1, got {value!r}")
    return number


def true_or_false(value: Any, name: str) -> bool:
    """Return a bool param as a bool (``"true"``/``"false"`` text from templates too)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def null(value: Any) -> Any:
    """None for None, or for a null param rendered by a non-native template ("" or "None")."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    return value
