"""A CSV load job: check the file, plan its chunks, store the job; read a stored job back.

::

    FileIdentity.of(path)        missing / unreadable file -> ConfigurationError
    read_csv_header + schema     wrong or missing header   -> ConfigurationError
    plan_csv_chunks              byte ranges on record boundaries (<= max_chunks)
    estimate_records             records per chunk, estimated (progress and ETA only)
    CheckpointStore.ensure_job   kind "csv"; params: the spec and the file's identity
    full refresh                 + the job's key claims deleted (files/claims.py)

An existing job keeps its stored plan (the same job_key always resumes the same chunks); see
:func:`check_reusable` for what must still match.
"""

from __future__ import annotations

import logging
import os
from itertools import pairwise
from typing import Any

from parallel_batch.core.csv_spec import CsvLoadSpec, FileIdentity
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.planner import DEFAULT_MAX_CHUNKS, FileChunk, plan_csv_chunks
from parallel_batch.sources.csv.reader import read_csv_chunk, read_csv_header
from parallel_batch.sources.csv.scan import iter_blocks
from parallel_batch.store.checkpoints import CheckpointStore, Job
from parallel_batch.store.claims import delete_job_claims, ensure_claims_table

__all__ = [
    "JOB_KIND",
    "check_file",
    "check_reusable",
    "estimate_records",
    "plan_csv_job",
    "stored_csv_spec",
]

log = logging.getLogger(__name__)

JOB_KIND = "csv"
# Records read from the first chunk to estimate records per line. Larger: a closer estimate of
# how many records the chunks hold; smaller: a faster plan. It only feeds progress and ETAs.
SAMPLE_RECORDS = 2_000
_COUNT_BLOCK_BYTES = 4 << 20


def check_file(spec: CsvLoadSpec) -> FileIdentity:
    """Check that the file exists, is readable and has the spec's header; return its identity.

    :raises ConfigurationError: saying what is wrong (CsvHeaderError for the header).
    """
    identity = FileIdentity.of(spec.path)
    spec.schema.check_header(read_csv_header(spec.path))
    return identity


def estimate_records(
    path: str | os.PathLike[str], chunks: list[FileChunk], spec: CsvLoadSpec
) -> list[int]:
    """Estimate the records of each chunk: its lines times the records per line of a sample.

    The lines of every chunk but the last are known from the plan (the next chunk's first line);
    the last chunk's are counted.
    """
    if not chunks:
        return []
    lines = [b.first_line - a.first_line for a, b in pairwise(chunks)]
    last = chunks[-1]
    with open(path, "rb") as stream:
        newlines = 0
        ends_with_newline = True
        for _, block in iter_blocks(stream, last.start, last.end, _COUNT_BLOCK_BYTES):
            newlines += block.count(b"\n")
            ends_with_newline = block.endswith(b"\n")
    lines.append(newlines + (0 if ends_with_newline else 1))
    sample = next(
        iter(read_csv_chunk(path, chunks[0], spec.schema, batch_rows=SAMPLE_RECORDS)), None
    )
    ratio = 1.0
    if sample is not None and sample.end_line >= chunks[0].first_line:
        ratio = len(sample) / (sample.end_line - chunks[0].first_line + 1)
    return [max(1, round(n * ratio)) for n in lines]


def plan_csv_job(
    store: CheckpointStore,
    job_key: str,
    spec: CsvLoadSpec,
    *,
    chunks: int | None = None,
    chunk_bytes: int | None = None,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
    full_refresh: bool = False,
    params: dict[str, Any] | None = None,
) -> Job:
    """Plan the file's chunks and create the job (an existing job keeps its stored plan).

    :param store: the checkpoint store.
    :param job_key: the job.
    :param spec: what to load where.
    :param chunks: about this many chunks; or
    :param chunk_bytes: chunks of about this many bytes (exactly one of the two).
    :param max_chunks: the most chunks (Airflow's ``max_map_length``).
    :param full_refresh: start an existing job over (its claims are deleted too).
    :param params: more to store with the job (e.g. the DAG run).
    :raises ConfigurationError: for a missing or unreadable file or a wrong header.
    """
    identity = check_file(spec)
    planned = plan_csv_chunks(
        spec.path, chunks=chunks, chunk_bytes=chunk_bytes, max_chunks=max_chunks
    )
    estimates = estimate_records(spec.path, planned, spec)
    plan = [
        {**chunk.to_dict(), "rows": rows} for chunk, rows in zip(planned, estimates, strict=True)
    ]
    job = store.ensure_job(
        job_key,
        kind=JOB_KIND,
        plan=plan,
        params={**(params or {}), "spec": spec.to_dict(), "file": identity.to_dict()},
        source=spec.path,
        target=spec.target_table,
        full_refresh=full_refresh,
    )
    ensure_claims_table(store.conn)
    if full_refresh:
        deleted = delete_job_claims(store.conn, job_key)
        log.info("Full refresh of job %s: %d key claims deleted", job_key, deleted)
    return job


def stored_csv_spec(job: Job) -> tuple[CsvLoadSpec, FileIdentity]:
    """Return the spec and file identity stored with a CSV job.

    :raises ConfigurationError: when the job is not a CSV job of this package.
    """
    if job.kind != JOB_KIND or "spec" not in job.params or "file" not in job.params:
        raise ConfigurationError(
            f"job {job.job_key!r} is a {job.kind!r} job without a CSV spec; "
            "it was not created by plan_csv_job"
        )
    try:
        return (
            CsvLoadSpec.from_dict(job.params["spec"]),
            FileIdentity.from_dict(job.params["file"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"job {job.job_key!r} has an unreadable CSV spec: {exc}") from exc


def check_reusable(job: Job, spec: CsvLoadSpec) -> None:
    """Check that a run with ``spec`` may resume ``job``: same file, unchanged, same target.

    :raises ConfigurationError: saying what differs and what to do.
    """
    stored, identity = stored_csv_spec(job)
    ours, theirs = spec.to_dict(), stored.to_dict()
    different = [
        name
        for name in ("path", "target_table", "schema", "key_column", "segment_column")
        if ours[name] != theirs[name]
    ]
    if different:
        raise ConfigurationError(
            f"it was created with another {', '.join(different)} ({stored.path} -> "
            f"{stored.target_table}); use another job_key, or full_refresh=true to start it "
            "over with this config"
        )
    identity.check(spec.path)
