"""Tests of output rows the target refuses at the commit (a CHECK constraint): the source rows
they came from are isolated and dead-lettered with the database's reason; the rest commits."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from parallel_batch.core.runner import run_chunk
from parallel_batch.core.transforms import TransformKind
from parallel_batch.engine.pool import WorkerPool
from tests.helpers.events_job import BATCH, EXPECTED_SQL, check_job, events_spec, plan, seed
from tests.integration.core.transforms import SHAPED_EXPECTED_SQL, path

ROWS = 1_000
POISON_EVERY = 97
# The target refuses every output row of the source rows whose user_id this divides.
REFUSE = "user_id % 101 <> 0"

KINDS: dict[str, tuple[str, str]] = {
    "batch": (BATCH, EXPECTED_SQL),
    "rows": (path("enrich_shaped"), SHAPED_EXPECTED_SQL),
    "dataframe": (path("frame_shaped"), SHAPED_EXPECTED_SQL),
}


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """Two workers for the module."""
    with WorkerPool(2) as running:
        yield running


@pytest.mark.parametrize("in_pool", [False, True], ids=["in-process", "pool"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_that_rows_the_target_refuses_are_dead_lettered(
    pg_url: str, pool: WorkerPool, kind: TransformKind, in_pool: bool
) -> None:
    """Test that a row refused by a CHECK constraint is a dead letter (CheckViolation, the
    constraint named), a fanned-out row's other output leaves with it, and every other row of
    its batch commits."""
    url = seed(pg_url, ROWS, poison_every=POISON_EVERY)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE demo.events_enriched ADD CONSTRAINT refuse CHECK ({REFUSE})")
    transform, expected = KINDS[kind]
    spec = events_spec(url, transform=transform, kind=kind, batch_rows=250)
    job = plan(url, "job", spec, chunks=2)
    summaries = [
        run_chunk(spec, "job", e, conninfo=url, pool=pool if in_pool else None) for e in job.plan
    ]
    outputs = f"SELECT id FROM ({expected}) o"
    # the source rows with an output the target refuses (a filtered row has none)
    refused_sql = f"SELECT id::text FROM demo.events WHERE NOT ({REFUSE}) AND id IN ({outputs})"
    with psycopg.connect(url, autocommit=True) as conn:
        refused = {key for (key,) in conn.execute(refused_sql).fetchall()}
        check = check_job(
            conn,
            "job",
            expected_sql=f"SELECT * FROM ({expected}) e WHERE {REFUSE}",
            failing_sql=f"SELECT id::text FROM demo.events WHERE payload LIKE 'poison:%'"
            f" UNION {refused_sql}",
        )
        letters = conn.execute(
            "SELECT DISTINCT error_type, message FROM parallel_batch.dead_letters"
            " WHERE item_key = ANY(%s)",
            (list(refused),),
        ).fetchall()
    # The seed's rows with such a user_id; the shaped transforms filter 663 and 746 out (not
    # refused then: no output) and fan 879 out (both its outputs go).
    filtered = set() if kind == "batch" else {"663", "746"}
    assert (
        refused == {"15", "148", "231", "364", "447", "580", "663", "746", "879", "962"} - filtered
    )
    assert check.exact, check
    assert letters == [
        (
            "CheckViolation",
            'the target refused the row: new row for relation "events_enriched" violates check '
            'constraint "refuse"',
        )
    ]
    assert all(s.reconciles for s in summaries), summaries
    assert sum(s.rows_failed for s in summaries) == len(check.failing_keys)
