"""The DAG params (validated JSON schema, the UI trigger form) and the checks of their values.

Two layers check a value. The Params' JSON schema rejects a bad conf when the run is created
(the trigger form, ``airflow dags trigger -c``, the REST API), before anything runs. The
operators check again when they run (:func:`fail_fast` and the ``*_value`` helpers), because an
operator is also used without these Params, with templated values: a bad value fails its task at
once with the message, without retries (:class:`~airflow.sdk.exceptions.AirflowFailException`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from parallel_batch.airflow.jobkeys import MAX_JOB_KEY_CHARS
from parallel_batch.core.table_job import DEFAULT_BATCH_ROWS
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.store.identifiers import IDENTIFIER_PATTERN

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MAX_FAILED_RATIO",
    "DEFAULT_WORKERS",
    "MAX_WORKERS",
    "fail_fast",
    "load_transform",
    "optional_positive_int",
    "positive_int",
    "ratio_value",
    "replay_params",
    "table_params",
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
# Dead letters replayed per transaction by the replay DAG: few rows, each maybe slow.
DEFAULT_REPLAY_BATCH_ROWS = 1_000

_PART = IDENTIFIER_PATTERN.removeprefix("^").removesuffix("$")
TABLE_PATTERN = f"^{_PART}(\\.{_PART})?$"
COLUMN_PATTERN = IDENTIFIER_PATTERN


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


def load_transform(path: str) -> Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]]:
    """Import a batch transform given as ``"package.module:function"``.

    It must be a module-level function (worker processes import it by name).

    :raises ConfigurationError: when it cannot be imported or is not a module-level callable.
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise ConfigurationError(f"transform must be 'package.module:function', got {path!r}")
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"transform {path!r}: cannot import {module_name}: {exc}") from exc
    fn = getattr(module, attribute, None)
    if not callable(fn) or "." in attribute or getattr(fn, "__module__", None) != module_name:
        raise ConfigurationError(
            f"transform {path!r} is not a function defined in module {module_name}"
        )
    result: Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]] = fn
    return result


def table_params(
    *,
    source_table: str,
    target_table: str,
    key_column: str = "id",
    interval_column: str | None = None,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> dict[str, Param]:
    """Return the Params of a table DAG, with the given defaults.

    :param source_table: default source table.
    :param target_table: default target table.
    :param key_column: default key column.
    :param interval_column: default interval column (None: whole table by default).
    :param chunk_rows: default rows per chunk.
    """
    return {
        "source_table": Param(
            source_table,
            type="string",
            pattern=TABLE_PATTERN,
            title="Source table",
            description="The table to read, 'schema.table' or 'table'.",
        ),
        "target_table": Param(
            target_table,
            type="string",
            pattern=TABLE_PATTERN,
            title="Target table",
            description="The table to write (created if missing); rows are upserted by key.",
        ),
        "key_column": Param(
            key_column,
            type="string",
            pattern=COLUMN_PATTERN,
            title="Key column",
            description="A unique, NOT NULL, indexed column of the source: chunks are its ranges.",
        ),
        "chunk_rows": Param(
            chunk_rows,
            type=["null", "integer"],
            minimum=1,
            title="Rows per chunk",
            description="Rows per mapped task (grown to stay within [core] max_map_length). "
            "Ignored when 'chunks' is set.",
        ),
        "chunks": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Number of chunks",
            description="Split into this many chunks instead of by 'chunk_rows'.",
        ),
        "batch_rows": Param(
            DEFAULT_BATCH_ROWS,
            type="integer",
            minimum=1,
            title="Rows per batch",
            description="Rows read, transformed and committed (with their checkpoint) at once.",
        ),
        "workers": Param(
            DEFAULT_WORKERS,
            type="integer",
            minimum=1,
            maximum=MAX_WORKERS,
            title="Worker processes per chunk task",
        ),
        "max_failed_ratio": Param(
            DEFAULT_MAX_FAILED_RATIO,
            type="number",
            minimum=0,
            maximum=1,
            title="Max failed ratio",
            description="Fail the run when more than this share of rows ended in dead letters.",
        ),
        "job_key": Param(
            None,
            type=["null", "string"],
            maxLength=MAX_JOB_KEY_CHARS,
            title="Job key",
            description="Default: '<dag_id>:<interval>' for scheduled and backfill runs, "
            "'<dag_id>:<run_id>' for manual runs. The same job_key resumes, never re-plans.",
        ),
        "full_refresh": Param(
            False,
            type="boolean",
            title="Full refresh",
            description="Reprocess the job from scratch (its earlier output is replaced).",
        ),
        "interval_column": Param(
            interval_column,
            type=["null", "string"],
            pattern=COLUMN_PATTERN,
            title="Interval column",
            description="Timestamp column a data interval applies to; null: the whole table.",
        ),
        "interval_start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Interval start",
            description="Only rows with interval_column >= this (ISO-8601); "
            "default: the run's data interval (scheduled and backfill runs).",
        ),
        "interval_end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Interval end",
            description="Only rows with interval_column < this (ISO-8601).",
        ),
    }


def replay_params() -> dict[str, Param]:
    """Return the Params of the replay DAG (``job_key`` is required)."""
    return {
        "job_key": Param(
            type="string",
            minLength=1,
            maxLength=MAX_JOB_KEY_CHARS,
            title="Job key",
            description="The job whose dead letters to replay (see `parallel-batch status`).",
        ),
        "replay_from": Param(
            "source",
            type="string",
            enum=["source", "payload"],
            title="Replay from",
            description="'source': the row as it is in the source table now (after a data "
            "fix); 'payload': the row as it was stored in the dead letter.",
        ),
        "max_failed_ratio": Param(
            0.0,
            type="number",
            minimum=0,
            maximum=1,
            title="Max failed ratio",
            description="Fail the run when more than this share of the replayed items fail again.",
        ),
        "batch_rows": Param(
            DEFAULT_REPLAY_BATCH_ROWS,
            type="integer",
            minimum=1,
            title="Dead letters per transaction",
        ),
        "workers": Param(
            DEFAULT_WORKERS,
            type="integer",
            minimum=1,
            maximum=MAX_WORKERS,
            title="Worker processes",
        ),
    }
