"""The Params of the CSV DAG: a validated JSON schema, shown as the UI trigger form.

The operators check the values again when they run (``airflow.params``' helpers), because they
are also used without these Params, with templated values.
"""

from __future__ import annotations

from airflow.sdk import Param

from parallel_batch.airflow.jobkeys import MAX_JOB_KEY_CHARS
from parallel_batch.airflow.params import TABLE_PATTERN
from parallel_batch.core.csv_spec import DEFAULT_CSV_BATCH_ROWS
from parallel_batch.core.enrich import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_CSV_MAX_FAILED_RATIO",
    "MAX_ENRICH_CONCURRENCY",
    "csv_params",
]

# Bytes per chunk (one mapped task each), about 80,000 demo records. A task costs Airflow a few
# seconds (start, XComs, state); a chunk of this size is several seconds of work per task, and a
# 1 GiB file makes 128 tasks (well within max_map_length). Smaller: more parallelism for small
# files and cheaper retries; larger: less overhead.
DEFAULT_CHUNK_BYTES = 8 << 20
# The share of records that may end in the dead letters before the run fails. Files from
# outside hold more bad records than tables do: 5% by default.
DEFAULT_CSV_MAX_FAILED_RATIO = 0.05
# A sanity bound for the form: more requests in flight per task than this is a typo.
MAX_ENRICH_CONCURRENCY = 1_000


def csv_params(*, path: str, target_table: str) -> dict[str, Param]:
    """Return the Params of a CSV load DAG, with the given defaults.

    :param path: default CSV file.
    :param target_table: default target table.
    """
    return {
        "path": Param(
            path,
            type="string",
            minLength=1,
            title="CSV file",
            description="Path of the CSV file, as every worker sees it (shared storage). "
            "UTF-8, RFC 4180 quoting, a header line; a BOM and CRLF line endings are fine.",
        ),
        "target_table": Param(
            target_table,
            type="string",
            pattern=TABLE_PATTERN,
            title="Target table",
            description="'schema.table' to upsert into by id (created in the customers shape "
            "if missing).",
        ),
        "chunk_bytes": Param(
            DEFAULT_CHUNK_BYTES,
            type=["null", "integer"],
            minimum=1,
            title="Bytes per chunk",
            description="Bytes per mapped task; chunks end on record boundaries. "
            "Ignored when 'chunks' is set.",
        ),
        "chunks": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Number of chunks",
            description="Split the file into about this many chunks instead of by "
            "'chunk_bytes' (at most [core] max_map_length).",
        ),
        "batch_rows": Param(
            DEFAULT_CSV_BATCH_ROWS,
            type="integer",
            minimum=1,
            title="Records per batch",
            description="Records validated, enriched and committed (with their checkpoint) "
            "at once.",
        ),
        "enrich_url": Param(
            None,
            type=["null", "string"],
            pattern="^https?://",
            title="Enrichment URL",
            description="If set, each record's segment comes from GET <url>?email=<email> "
            '(JSON {"segment": ...}); null: no enrichment, segment stays NULL.',
        ),
        "enrich_concurrency": Param(
            DEFAULT_CONCURRENCY,
            type="integer",
            minimum=1,
            maximum=MAX_ENRICH_CONCURRENCY,
            title="Enrichment requests in flight",
            description="At most this many requests in flight per chunk task.",
        ),
        "enrich_timeout": Param(
            DEFAULT_TIMEOUT,
            type="number",
            exclusiveMinimum=0,
            title="Enrichment timeout (s)",
            description="Seconds per request before it counts as a timeout (and is retried).",
        ),
        "max_failed_ratio": Param(
            DEFAULT_CSV_MAX_FAILED_RATIO,
            type="number",
            minimum=0,
            maximum=1,
            title="Max failed ratio",
            description="Fail the run when more than this share of the records ended in the "
            "dead letters.",
        ),
        "job_key": Param(
            None,
            type=["null", "string"],
            maxLength=MAX_JOB_KEY_CHARS,
            title="Job key",
            description="Default: '<dag_id>:<run_id>'. The same job_key resumes the same "
            "chunks, never re-plans; a new one loads the file again (rows are upserted).",
        ),
        "full_refresh": Param(
            False,
            type="boolean",
            title="Full refresh",
            description="Load the file again from scratch under the same job_key "
            "(re-planned; its dead letters are replaced, rows upserted).",
        ),
    }
