"""Commit one prepared batch: its rows, dead letters, claims and checkpoint in ONE transaction.

::

    store.commit_batch(lease, position, counts, write=...)     fenced checkpoint first, then
        write: [full refresh: delete the chunk's earlier output]
               [claims: take the batch's keys; a displaced later record leaves the target and
                becomes a dead letter of its chunk]
               COPY / upsert the encoded rows
        dead letters
    ClaimsChanged       the job's claims moved under the batch: prepare it again with them
    KeysNeeded          the batch cannot claim its keys as one range: the job claims key by
                        key from now on (store/claim_ranges.py); commit it again
    the target refuses  a row it refuses (a constraint, a foreign key): prepare the batch again
                        keeping its output rows, isolate the refused ones with writes that roll
                        back, dead-letter their source rows, commit the rest

Every round is a transaction of its own; a lease taken over raises LeaseLostError and writes
nothing. Isolating refused rows is the same mechanism as everywhere (engine.isolation).
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from parallel_batch.core.prepare import DUPLICATE_ERROR, PreparedBatch
from parallel_batch.core.refresh import delete_chunk_output
from parallel_batch.core.refused import REFUSED, without_refused
from parallel_batch.core.source import BatchRef, KeyRange
from parallel_batch.core.target import Target
from parallel_batch.store import claim_ranges, claims
from parallel_batch.store.checkpoints import CheckpointStore
from parallel_batch.store.copy_data import CopyData
from parallel_batch.store.deadletters import DeadLetter, record_dead_letters
from parallel_batch.store.identifiers import column_sql, table_sql
from parallel_batch.store.records import Lease
from parallel_batch.store.writer import write_rows

__all__ = ["Committer", "Reprepare"]

log = logging.getLogger(__name__)

# Rounds of one batch's commit: claims that changed under it, rows the target refused. Each round
# settles what it found; more than a few means something else is wrong.
MAX_COMMIT_ROUNDS = 8

# Prepare a batch again: (ref, the job's claims of its keys, keep its output rows) -> prepared.
Reprepare = Callable[[BatchRef, dict[str, claims.Claim] | None, bool], PreparedBatch]


class _Refused(Exception):
    """The target refused some row of the batch (raised out of a commit to roll it back)."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


class Committer:
    """Commits a chunk's prepared batches, in order, on the store's connection.

    :param store: the checkpoint store (the target's database).
    :param lease: the chunk's lease.
    :param target: the target.
    :param owned: the source keys the chunk owns, for a full refresh (None: upsert over).
    :param same_db: whether the source is in the target's database.
    :param dedup_key: the column whose later occurrences are dead letters (None: none).
    :param reprepare: prepares a batch again (claims changed, or to diagnose a refusal).
    """

    def __init__(
        self,
        store: CheckpointStore,
        lease: Lease,
        target: Target,
        *,
        owned: KeyRange | None,
        same_db: bool,
        dedup_key: str | None,
        reprepare: Reprepare,
    ) -> None:
        self.store = store
        self.lease = lease
        self.target = target
        self.owned = owned
        self.same_db = same_db
        self.dedup_key = dedup_key
        self.reprepare = reprepare

    def commit(self, ref: BatchRef | None, prepared: PreparedBatch) -> PreparedBatch:
        """Commit ``prepared`` (None ref: an empty batch that only carries a full refresh's
        reset); return what was committed."""
        claimed: dict[str, claims.Claim] | None = None
        for _ in range(MAX_COMMIT_ROUNDS):
            try:
                self.store.commit_batch(
                    self.lease,
                    last_key=prepared.position,
                    rows_read=prepared.read,
                    write=functools.partial(self._write, prepared),
                    dead_letters=prepared.letters,
                    rows_written=len(prepared.data),
                    rows_filtered=prepared.filtered,
                    rows_fanout=prepared.fanout,
                )
                return prepared
            except claim_ranges.KeysNeeded as exc:
                moved = claim_ranges.to_keys(self.store.conn, self.lease.job_key)
                log.info(
                    "Job %s claims its keys one by one from now on (%s; %d claims moved)",
                    self.lease.job_key,
                    exc,
                    moved,
                )
            except claims.ClaimsChanged:
                assert prepared.claims is not None and ref is not None
                claimed = claims.find_claims(
                    self.store.conn, self.lease.job_key, _keys(prepared.claims)
                )
                prepared = self.reprepare(ref, claimed, False)
            except _Refused as refused:
                assert ref is not None
                prepared = self._without_refused(ref, claimed, refused.error)
        raise RuntimeError(
            f"could not commit a batch of chunk {self.lease.chunk_id} in {MAX_COMMIT_ROUNDS} "
            "rounds (its claims kept changing, or the target kept refusing its rows)"
        )

    def _reset(self, conn: psycopg.Connection) -> None:
        if not self.lease.needs_reset or self.owned is None:
            return
        key = self.target.key_columns[0] if self.target.key_columns else self.owned.key_column
        deleted = delete_chunk_output(
            conn, self.target.table, key, self.owned, same_db=self.same_db
        )
        log.info(
            "Full refresh: deleted %d earlier output rows of chunk %s from %s",
            deleted,
            self.lease.chunk_id,
            self.target.table,
        )

    def _write(self, prepared: PreparedBatch, conn: psycopg.Connection) -> int:
        self._reset(conn)
        if prepared.claims is not None:
            displaced = claims.apply_claims(
                conn,
                self.lease.job_key,
                self.lease.chunk_id,
                prepared.claims.plan,
                prepared.claims.outputs,
            )
            if displaced:
                self._displace(conn, displaced)
        if not prepared.data:
            return 0
        try:
            return self._write_rows(conn, prepared.data)
        except REFUSED as exc:
            raise _Refused(exc) from exc

    def _write_rows(self, conn: psycopg.Connection, data: CopyData | list[Any]) -> int:
        target = self.target
        return write_rows(
            conn,
            target.table,
            target.columns,
            data,
            mode=target.write_mode,
            key_columns=target.key_columns or target.columns[:1],
        )

    def _displace(
        self, conn: psycopg.Connection, displaced: list[tuple[str, claims.Claim, int]]
    ) -> None:
        """The later occurrences this batch takes the keys over from: out of the target, dead
        letters of their chunks, their counters moved."""
        keys = [key for key, _, _ in displaced]
        key = self.dedup_key
        if key is not None and key in self.target.columns:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {}::text = ANY(%s)").format(
                    table_sql(self.target.table), column_sql(key)
                ),
                (keys,),
            )
        by_chunk: dict[str, list[tuple[DeadLetter, claims.Claim]]] = defaultdict(list)
        for item, claim, line in displaced:
            letter = DeadLetter(
                item_key=f"line:{claim.line_number}",
                line_number=claim.line_number,
                payload={str(key): item},
                error_type=DUPLICATE_ERROR,
                message=(
                    f"duplicate {key} {item}: the record on line {line} has it too, and the first "
                    "occurrence in the file is the one loaded"
                ),
            )
            by_chunk[claim.chunk_id].append((letter, claim))
        for chunk_id, pairs in by_chunk.items():
            record_dead_letters(conn, self.lease.job_key, chunk_id, [p[0] for p in pairs])
            claims.displace(conn, self.lease.job_key, chunk_id, [p[1] for p in pairs])
        log.info(
            "Chunk %s holds the first occurrence of %d keys a later chunk loaded first: those "
            "later records are dead letters now",
            self.lease.chunk_id,
            len(displaced),
        )

    def _without_refused(
        self, ref: BatchRef, claimed: dict[str, claims.Claim] | None, error: psycopg.Error
    ) -> PreparedBatch:
        """Find the output rows the target refuses; return the batch without their sources."""

        def write(conn: psycopg.Connection, rows: list[Any]) -> None:
            self._reset(conn)
            self._write_rows(conn, rows)

        prepared, refused = without_refused(
            self.store.conn,
            self.reprepare(ref, claimed, True),
            write,
            self.target,
            error,
            dedup_key=self.dedup_key,
        )
        log.warning(
            "The target refused the output of %d records of a batch of chunk %s: they go to "
            "the dead letters",
            refused,
            self.lease.chunk_id,
        )
        return prepared


def _keys(batch_claims: Any) -> list[str]:
    plan = batch_claims.plan
    return [
        *(key for key, _ in plan.new),
        *plan.expected,
        *(key for key, _ in plan.duplicates.values()),
    ]
