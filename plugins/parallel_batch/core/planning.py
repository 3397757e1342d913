"""Plan a job once: check it, split its source into chunks, store it; reuse it ever after.

::

    job exists (and no full_refresh)?  -> check it is the same job (source, target, transform);
        |  no                             its stored plan, never re-planned: a rerun resumes
    resolve the target's columns        from the catalog (what the chunks will write)
        |
    source.plan(chunks | chunk_size, max_chunks)   -> chunk entries (ranges, rows)
        |
    store.ensure_job(kind, plan, params={"spec": ..., **extra})

The same job_key always gets the same plan back; ``full_refresh`` starts it over from a new plan
and replaces its earlier output.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from parallel_batch.core.job import JobSpec
from parallel_batch.core.source import Sizing, Source
from parallel_batch.core.target import Target
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.records import Job

__all__ = ["TooManyChunksError", "plan_job", "resolve_columns", "stored_spec"]

log = logging.getLogger(__name__)


class TooManyChunksError(ConfigurationError):
    """Raised when a stored plan has more chunks than may be mapped (``max_map_length``)."""


def resolve_columns(
    conn: psycopg.Connection, spec: JobSpec, input_columns: tuple[str, ...]
) -> JobSpec:
    """Fix the columns the job writes, from the target's catalog.

    No transform: the target columns the source has (by name); the others keep their defaults.
    A transform: the given ``target_columns``, or every target column that can be written.

    :raises ConfigurationError: for a missing target, column or key.
    """
    columns = spec.target_columns
    if columns is None and spec.transform.path is None:
        everything = Target.resolve(conn, spec.target_table, write_mode="copy")
        missing = [c for c in input_columns if c not in everything.columns]
        if missing:  # with no transform every column read is written: none may be dropped
            raise ConfigurationError(
                f"Column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                f"{'do' if len(missing) > 1 else 'does'} not exist in table "
                f"{spec.target_table!r}: with no transform every column read is written (map "
                "them to target columns, read fewer, or give a transform)"
            )
        columns = tuple(c for c in everything.columns if c in input_columns)
    target = dataclasses.replace(spec, target_columns=columns).resolve_target(conn)
    return dataclasses.replace(spec, target_columns=target.columns, key_columns=target.key_columns)


def stored_spec(job: Job, make_source: Callable[[dict[str, Any]], Source]) -> JobSpec:
    """Return the spec stored with a job.

    :raises ConfigurationError: when the job holds no spec of this version.
    """
    data = job.params.get("spec")
    if not isinstance(data, dict) or "source" not in data:
        raise ConfigurationError(
            f"job {job.job_key!r} ({job.kind}) has no job spec of this version; run it again "
            "under another job_key, or with full_refresh=true"
        )
    try:
        return JobSpec.from_dict(data, make_source)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"job {job.job_key!r} has an unreadable spec: {exc}") from exc


def _check_reusable(
    job: Job, spec: JobSpec, make_source: Callable[[dict[str, Any]], Source]
) -> None:
    stored = stored_spec(job, make_source).identity()
    ours = spec.identity()
    ours_source, stored_source = dict(ours["source"]), dict(stored["source"])
    for volatile in ("identity", "record_bytes"):  # a file's stat and sample: checked apart
        ours_source.pop(volatile, None)
        stored_source.pop(volatile, None)
    ours["source"], stored["source"] = ours_source, stored_source
    different = sorted(name for name in ours if ours[name] != stored.get(name))
    if different:
        raise ConfigurationError(
            f"job {job.job_key!r} was created with another {', '.join(different)}; use another "
            "job_key, or full_refresh=true to start it over with this config"
        )


def plan_job(
    store: CheckpointStore,
    job_key: str,
    spec: JobSpec,
    *,
    source_conninfo: str | None,
    make_source: Callable[[dict[str, Any]], Source],
    chunks: int | None = None,
    chunk_size: int | None = None,
    max_chunks: int,
    full_refresh: bool = False,
    params: dict[str, Any] | None = None,
) -> Job:
    """Create the job with its plan, or return the existing one (see the module docstring).

    :param spec: the job, its source resolved (a table's columns, a file's identity).
    :param make_source: rebuilds a stored source (``parallel_batch.sources.source_from_dict``).
    :param chunks: about this many chunks; or
    :param chunk_size: chunks of this size (rows of a table, bytes of a file).
    :param max_chunks: the most chunks (Airflow's ``max_map_length``).
    :param params: more to store with the job (the DAG run).
    :raises ConfigurationError: for a bad config, another job under this job_key, or a stored
        plan with more than ``max_chunks`` chunks (:class:`TooManyChunksError`).
    """
    if (chunks is None) == (chunk_size is None):
        raise ConfigurationError("give exactly one of chunks and chunk_rows/chunk_bytes")
    job = store.get_job(job_key)
    if job is not None and not full_refresh:
        _check_reusable(job, spec, make_source)
        log.info(
            "Job %s exists (%s, %d chunks): reusing its plan; completed chunks are skipped, "
            "the others resume from their checkpoints",
            job.job_key,
            job.status,
            len(job.plan),
        )
    else:
        plan = spec.source.plan(source_conninfo, Sizing(chunks, chunk_size, max_chunks))
        job = store.ensure_job(
            job_key,
            kind=spec.source.kind,
            plan=plan,
            params={**(params or {}), "spec": spec.to_dict()},
            source=spec.source.name,
            target=spec.target_table,
            full_refresh=full_refresh,
        )
        if not full_refresh:  # another run may have created it first, differently
            _check_reusable(job, spec, make_source)
    if len(job.plan) > max_chunks:
        raise TooManyChunksError(
            f"job {job.job_key!r} has {len(job.plan)} chunks, more than [core] max_map_length "
            f"({max_chunks}); raise max_map_length or start the job over with full_refresh=true"
        )
    return job
