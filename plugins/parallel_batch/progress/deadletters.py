"""A job's dead letters as the progress page shows them, and how to replay them.

::

    dead letter columns  -> DeadLetterRow  error type, message (cut), line or key; never the
                                           payload
    job_key, kind        -> ReplayHint     the DAG, conf and command that replay dead letters
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parallel_batch.progress.formats import cut

__all__ = ["REPLAY_DAG_ID", "DeadLetterRow", "ReplayHint", "dead_letter_row", "replay_hint"]

# The DAG that replays a job's dead letters, and the job kinds it replays.
REPLAY_DAG_ID = "parallel_batch_replay"
REPLAYABLE_KINDS = frozenset({"table"})


@dataclass(frozen=True)
class DeadLetterRow:
    """One dead letter as the view shows it: what failed and why, never the item itself.

    :param line_number: the 1-based line of a file record; None for a table row.
    :param item_key: the row's key as text, or ``"line:N"`` for a file record.
    :param message: the error message, cut to
        :data:`~parallel_batch.progress.formats.MESSAGE_CHARS`.
    """

    id: int
    chunk_id: str
    item_key: str
    line_number: int | None
    error_type: str
    message: str
    attempts: int
    last_failed_at: dt.datetime

    @property
    def where(self) -> str:
        """``line 12`` for a file record, ``key 42`` for a table row."""
        if self.line_number is not None:
            return f"line {self.line_number:,}"
        return f"key {self.item_key}"


@dataclass(frozen=True)
class ReplayHint:
    """How to replay a job's dead letters once their cause is fixed.

    :param available: the replay DAG handles this kind of job.
    :param dag_id: the DAG to trigger.
    :param conf: its run conf.
    :param command: the same trigger on the command line.
    :param note: one sentence for people.
    """

    available: bool
    dag_id: str
    conf: dict[str, Any]
    command: str
    note: str


def dead_letter_row(row: Mapping[str, Any]) -> DeadLetterRow:
    """Return the display row of a dead letter from its table columns (a payload is ignored)."""
    return DeadLetterRow(
        id=int(row["id"]),
        chunk_id=str(row["chunk_id"]),
        item_key=str(row["item_key"]),
        line_number=row["line_number"],
        error_type=str(row["error_type"]),
        message=cut(str(row["message"])),
        attempts=int(row["attempts"]),
        last_failed_at=row["last_failed_at"],
    )


def replay_hint(job_key: str, kind: str) -> ReplayHint:
    """Return how to replay the dead letters of the job ``job_key`` of kind ``kind``."""
    if not job_key:
        raise ValueError("job_key must not be empty")
    conf = {"job_key": job_key}
    command = f"airflow dags trigger {REPLAY_DAG_ID} -c {shlex.quote(json.dumps(conf))}"
    if kind in REPLAYABLE_KINDS:
        note = (
            f"Fix the cause, then trigger {REPLAY_DAG_ID} with this job_key: each pending dead "
            "letter goes through the job's transform again; the ones that succeed are written "
            "to the target and marked replayed."
        )
        return ReplayHint(True, REPLAY_DAG_ID, conf, command, note)
    note = (
        f"{REPLAY_DAG_ID} replays table jobs; the dead letters of this {kind} job give each "
        "failed record's line: fix those records and load the file again."
    )
    return ReplayHint(False, REPLAY_DAG_ID, conf, command, note)
