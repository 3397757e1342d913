"""The ``parallel_batch`` schema: jobs, chunks, dead letters and key claims, created and migrated.

``ensure_schema(conn)`` is idempotent and safe when many processes call it at once (every mapped
task does): it takes a transaction-level advisory lock, reads the version recorded in
``parallel_batch.schema_version`` and applies the migrations above it, in order, in one
transaction. A database already at the latest version costs one cheap query and no lock.

Migrations are append-only: never edit one that has shipped, add the next version instead.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import psycopg

from parallel_batch.exceptions import ConfigurationError

log = logging.getLogger(__name__)

SCHEMA = "parallel_batch"

# Key of the transaction-level advisory lock that serialises migrations ("pb_schema" in ASCII
# bytes, truncated to 63 bits); any constant works as long as nothing else uses it.
SCHEMA_LOCK_KEY = 0x70625F736368656D


class Migration(NamedTuple):
    """One schema version: the statements that move the schema from ``version - 1`` to it."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs, chunks, dead letters and the lease token sequence",
        (
            # Lease tokens come from one sequence, so a token is never reused: not after a chunk
            # is reset by a full refresh, nor after a job is deleted and created again. A zombie
            # holding an old token can therefore never match a newer lease.
            "CREATE SEQUENCE parallel_batch.lease_token_seq AS bigint",
            """
            CREATE TABLE parallel_batch.jobs (
                job_key      text PRIMARY KEY,
                status       text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'running', 'completed', 'failed')),
                kind         text NOT NULL,
                source       text,
                target       text,
                plan         jsonb NOT NULL DEFAULT '[]',
                params       jsonb NOT NULL DEFAULT '{}',
                rows_total   bigint NOT NULL DEFAULT 0,
                rows_read    bigint NOT NULL DEFAULT 0,
                rows_written bigint NOT NULL DEFAULT 0,
                rows_failed  bigint NOT NULL DEFAULT 0,
                created_at   timestamptz NOT NULL DEFAULT now(),
                started_at   timestamptz,
                finished_at  timestamptz,
                error        text
            )
            """,
            "CREATE INDEX jobs_status_created_idx ON parallel_batch.jobs (status, created_at DESC)",
            "CREATE INDEX jobs_created_idx ON parallel_batch.jobs (created_at DESC)",
            """
            CREATE TABLE parallel_batch.chunks (
                job_key      text NOT NULL
                             REFERENCES parallel_batch.jobs (job_key) ON DELETE CASCADE,
                chunk_id     text NOT NULL,
                position     integer NOT NULL,
                range        jsonb NOT NULL,
                status       text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'running', 'completed', 'failed')),
                last_key     jsonb,
                needs_reset  boolean NOT NULL DEFAULT false,
                rows_total   bigint,
                rows_read    bigint NOT NULL DEFAULT 0,
                rows_written bigint NOT NULL DEFAULT 0,
                rows_failed  bigint NOT NULL DEFAULT 0,
                attempts     integer NOT NULL DEFAULT 0,
                lease_token  bigint NOT NULL DEFAULT 0,
                holder       text,
                heartbeat_at timestamptz,
                started_at   timestamptz,
                finished_at  timestamptz,
                error        text,
                PRIMARY KEY (job_key, chunk_id)
            )
            """,
            "CREATE INDEX chunks_job_status_idx ON parallel_batch.chunks (job_key, status)",
            "CREATE INDEX chunks_running_idx ON parallel_batch.chunks (heartbeat_at)"
            " WHERE status = 'running'",
            """
            CREATE TABLE parallel_batch.dead_letters (
                id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job_key         text NOT NULL
                                REFERENCES parallel_batch.jobs (job_key) ON DELETE CASCADE,
                chunk_id        text NOT NULL,
                item_key        text NOT NULL,
                line_number     bigint,
                payload         jsonb,
                error_type      text NOT NULL,
                message         text NOT NULL,
                attempts        integer NOT NULL DEFAULT 1,
                first_failed_at timestamptz NOT NULL DEFAULT now(),
                last_failed_at  timestamptz NOT NULL DEFAULT now(),
                replayed_at     timestamptz,
                UNIQUE (job_key, item_key)
            )
            """,
            "CREATE INDEX dead_letters_pending_idx ON parallel_batch.dead_letters (job_key, id)"
            " WHERE replayed_at IS NULL",
            "CREATE INDEX dead_letters_chunk_idx ON parallel_batch.dead_letters (job_key, chunk_id)",
        ),
    ),
    Migration(
        2,
        "filtered and fan-out counters; key claims (first occurrence wins) as a versioned table",
        (
            # rows read = written - fanout + filtered + failed: a transform may drop a row
            # (filtered, not a failure) or turn one row into several (fan-out).
            *(
                f"ALTER TABLE parallel_batch.{table} ADD COLUMN {column} bigint NOT NULL DEFAULT 0"
                for table in ("jobs", "chunks")
                for column in ("rows_filtered", "rows_fanout")
            ),
            # Version 1 created the claims table outside the migrations (as file_keys) when a CSV
            # job first ran: keep its claims (a job may be half way), under its versioned name.
            "ALTER TABLE IF EXISTS parallel_batch.file_keys RENAME TO key_claims",
            # No foreign key to jobs: it would cost a lookup and a row lock on the job per
            # inserted claim (thousands per batch); a job's claims are deleted explicitly.
            # COLLATE "C": byte-wise comparisons in the primary key (only equality matters).
            """
            CREATE TABLE IF NOT EXISTS parallel_batch.key_claims (
                job_key     text COLLATE "C" NOT NULL,
                item_key    text COLLATE "C" NOT NULL,
                line_number bigint NOT NULL,
                chunk_id    text NOT NULL,
                PRIMARY KEY (job_key, item_key)
            )
            """,
            # How many output rows the claiming record produced: moved from written to failed
            # (with the fan-out) if a record earlier in the file takes the key over.
            "ALTER TABLE parallel_batch.key_claims ADD COLUMN outputs integer NOT NULL DEFAULT 1",
        ),
    ),
    Migration(
        3,
        "key claims by a job's number, not its key: smaller claims",
        (
            # One claim per record is the CSV job's largest cost on the server: keyed by a
            # bigint in place of the job_key text (tens of bytes in every row and index entry),
            # 1M claims take 124 MB instead of 272 MB and less of PostgreSQL's CPU.
            "ALTER TABLE parallel_batch.jobs ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY",
            "ALTER TABLE parallel_batch.jobs ADD CONSTRAINT jobs_id_key UNIQUE (id)",
            """
            CREATE TABLE parallel_batch.job_key_claims (
                job_id      bigint NOT NULL,
                item_key    text COLLATE "C" NOT NULL,
                line_number bigint NOT NULL,
                chunk_id    text NOT NULL,
                outputs     integer NOT NULL DEFAULT 1,
                PRIMARY KEY (job_id, item_key)
            )
            """,
            "INSERT INTO parallel_batch.job_key_claims"
            " SELECT j.id, c.item_key, c.line_number, c.chunk_id, c.outputs"
            " FROM parallel_batch.key_claims c JOIN parallel_batch.jobs j USING (job_key)",
            "DROP TABLE parallel_batch.key_claims",
            "ALTER TABLE parallel_batch.job_key_claims RENAME TO key_claims",
            "ALTER INDEX parallel_batch.job_key_claims_pkey RENAME TO key_claims_pkey",
        ),
    ),
    Migration(
        4,
        "integer keys claimed by ranges: one row per batch, not one per record",
        (
            # A job claims integer keys a batch at a time (the batch's keys in one row, its
            # span [smallest, largest] kept apart from every other batch's by the exclusion
            # constraint) until two spans overlap; then its claims move to key_claims, one per
            # key, for good (claims_by_key). See store/claim_ranges.py.
            "ALTER TABLE parallel_batch.jobs ADD COLUMN claims_by_key boolean NOT NULL"
            " DEFAULT false",
            # a job half way through at the upgrade goes on claiming by key
            "UPDATE parallel_batch.jobs SET claims_by_key = true"
            " WHERE id IN (SELECT DISTINCT job_id FROM parallel_batch.key_claims)",
            """
            CREATE TABLE parallel_batch.range_claims (
                job_id   bigint NOT NULL,
                chunk_id text NOT NULL,
                span     numrange NOT NULL,
                keys     bigint[] NOT NULL,
                lines    bigint[] NOT NULL,
                outputs  integer[],
                EXCLUDE USING gist (span WITH &&)
            )
            """,
            "CREATE INDEX range_claims_job_idx ON parallel_batch.range_claims (job_id)",
            # Not compressed: pglz took ~10 of the ~12 ms an insert of 5,000 keys and lines
            # took (40 KB each); stored as they are, 2.6 ms.
            "ALTER TABLE parallel_batch.range_claims ALTER COLUMN keys SET STORAGE EXTERNAL,"
            " ALTER COLUMN lines SET STORAGE EXTERNAL, ALTER COLUMN outputs SET STORAGE EXTERNAL",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def _current_version(conn: psycopg.Connection) -> int:
    # A query on pg_class, not to_regclass(): in a transaction that began before another one
    # created the table, the relation cache may not know it yet, while this statement's own
    # snapshot (READ COMMITTED, taken after our lock) does.
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'parallel_batch' AND c.relname = 'schema_version')"
    ).fetchone()
    if not row or not row[0]:
        return 0
    version = conn.execute("SELECT max(version) FROM parallel_batch.schema_version").fetchone()
    return int(version[0]) if version and version[0] is not None else 0


def _check_not_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise ConfigurationError(
            f"schema {SCHEMA} is at version {version}, newer than this package supports "
            f"({LATEST_VERSION}); upgrade airflow-parallel-batch"
        )


def schema_version(conn: psycopg.Connection) -> int:
    """Return the schema version recorded in the database (0 when the schema does not exist)."""
    with conn.transaction():
        return _current_version(conn)


def ensure_schema(conn: psycopg.Connection) -> int:
    """Create or migrate the ``parallel_batch`` schema to the latest version; return that version.

    The migration is one transaction of its own (on an autocommit connection, or a
    non-autocommit one with no transaction open); inside a transaction the caller already
    opened, it is a savepoint and the caller's commit makes it visible.

    :param conn: a connection whose role may create schemas and tables in the database.
    :raises ConfigurationError: when the database holds a newer schema than this package knows.
    """
    with conn.transaction():
        current = _current_version(conn)
    _check_not_newer(current)
    if current == LATEST_VERSION:
        return current
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            # Read again under the lock: another process may have migrated while we waited.
            current = _current_version(conn)
            _check_not_newer(current)
            if current == LATEST_VERSION:
                return current
            if current == 0:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")  # a constant
                conn.execute(
                    """
                    CREATE TABLE parallel_batch.schema_version (
                        version     integer PRIMARY KEY,
                        description text NOT NULL,
                        applied_at  timestamptz NOT NULL DEFAULT now()
                    )
                    """
                )
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                log.info(
                    "Migrating schema %s to version %s (%s)",
                    SCHEMA,
                    migration.version,
                    migration.description,
                )
                for statement in migration.statements:
                    conn.execute(statement)  # constants above, not user input
                conn.execute(
                    "INSERT INTO parallel_batch.schema_version (version, description)"
                    " VALUES (%s, %s)",
                    (migration.version, migration.description),
                )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigurationError(
            f"cannot create schema {SCHEMA}: the database role lacks the privilege ({exc}); "
            f"grant CREATE on the database or create the schema once as its owner"
        ) from exc
    return LATEST_VERSION
