"""The demo's CSV transforms (include/transforms/customers.py) as a worker process loads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import sys
from parallel_batch.core.transforms import TransformSpec
check = TransformSpec("include.transforms.customers:check").load()
print("httpx" in sys.modules)
check({"email": "a@b.example"})
import include.transforms.customers as module
print([f"{c.__module__}:{c.__qualname__}" for c in module.RETRY_ON])
print("httpx" in sys.modules)
"""


def test_check_alone_never_imports_httpx_and_retry_on_still_names_the_retried_errors() -> None:
    """A worker that loads ``check`` (every plain CSV chunk) does not pay httpx's import; the
    enrichment's RETRY_ON, asked for, imports it and names the same classes as before."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "False",
        "['include.transforms.customers:EnrichmentServerError', 'httpx:TimeoutException', "
        "'httpx:NetworkError', 'httpx:RemoteProtocolError']",
        "True",
    ]


def test_client_pool_splits_its_connections_into_small_clients_and_picks_the_least_busy() -> None:
    import asyncio

    import pytest

    from include.transforms.http import ClientPool

    async def split(connections: int) -> list[int]:
        pool = ClientPool(connections, timeout=1.0)
        try:
            return [client._transport._pool._max_connections for client in pool.clients]  # type: ignore[attr-defined]
        finally:
            await pool.aclose()

    assert asyncio.run(split(64)) == [8] * 8
    assert asyncio.run(split(50)) == [8] * 7  # 56 >= 50: never fewer than asked for
    assert asyncio.run(split(3)) == [3]
    with pytest.raises(ValueError, match="at least 1"):
        ClientPool(0)

    async def picks() -> list[int]:
        pool = ClientPool(24)
        chosen: list[int] = []

        async def fake_get(index: int, url: str, **options: object) -> None:
            chosen.append(index)
            await asyncio.sleep(0.01 if index else 0.05)  # the first client answers slowly

        for index, client in enumerate(pool.clients):
            client.get = lambda url, i=index, **o: fake_get(i, url, **o)  # type: ignore[method-assign]
        first = [asyncio.ensure_future(pool.get("http://x")) for _ in range(3)]
        await asyncio.sleep(0.03)  # clients 1 and 2 have answered, client 0 has not
        second = [asyncio.ensure_future(pool.get("http://x")) for _ in range(2)]
        await asyncio.gather(*first, *second)
        await pool.aclose()
        return chosen

    assert asyncio.run(picks()) == [0, 1, 2, 1, 2]  # not 0 again: it is the busy one


def test_check_batch_refuses_what_check_refuses_and_orders_rows_for_the_target() -> None:
    """``check_batch`` (the DAG's check without enrichment) refuses, in place, the records
    ``check`` raises for, with the same error and message, and puts each row's values in the
    target's column order (NULL for a target column the file lacks)."""
    import pytest

    from include.transforms.customers import InvalidEmailError, check, check_batch

    columns = ("id", "email", "name")
    rows = [(1, "a@b.example", "A"), (2, "no-at-sign", "B"), (3, None, "C"), (4, "a@b@c", "D")]
    expected: list[object] = []
    for row in rows:
        try:
            check(dict(zip(columns, row, strict=True)))
            expected.append(row)
        except InvalidEmailError as exc:
            expected.append(("refused", str(exc)))

    def seen(out: list[object]) -> list[object]:
        return [("refused", str(x)) if isinstance(x, InvalidEmailError) else x for x in out]

    assert seen(check_batch(rows, columns=columns, target_columns=columns)) == expected
    assert [x[1] for x in expected if x[0] == "refused"] == [
        "email: email address without @",
        "email: not an email address",
    ]
    padded = check_batch(rows[:1], columns=columns, target_columns=(*columns, "segment"))
    assert padded == [(1, "a@b.example", "A", None)]
    moved = check_batch(rows[:1], columns=columns, target_columns=("name", "segment", "id"))
    assert moved == [("A", None, 1)]
    no_email = check_batch([(1, "A")], columns=("id", "name"), target_columns=("id", "name"))
    assert no_email == [(1, "A")]
    with pytest.raises(TypeError):  # the names are not optional: the kind gives them
        check_batch(rows)  # type: ignore[call-arg]


def test_check_arrow_refuses_what_check_refuses_by_index() -> None:
    """``check_arrow`` (the DAG's check without enrichment, over columns) keeps the records
    ``check`` keeps, in order, and refuses the others by index with ``check``'s error; a
    space RE2's ``\\s`` misses (non-ASCII, or \\v and \\x1c-\\x1f) is refused as Python's
    ``\\s`` refuses it."""
    import pyarrow as pa

    from include.transforms.customers import InvalidEmailError, check, check_arrow

    emails = [
        "a@b.example",
        "no-at-sign",
        None,
        "a@b@c",
        "é@ü.example",
        "a\u00a0b@c.example",
        "a@b\u3000c",
        "a b@c",
        "a\x0bb@c.example",  # ASCII spaces of Python's \\s that RE2's \\s lacks
        "a@b\x1fc",
    ]
    table = pa.table({"id": list(range(len(emails))), "email": emails})
    kept, refused = check_arrow(table)
    expected_kept, expected_refused = [], {}
    for i, email in enumerate(emails):
        try:
            check({"id": i, "email": email})
            expected_kept.append(i)
        except InvalidEmailError as exc:
            expected_refused[i] = str(exc)
    assert kept.column("id").to_pylist() == expected_kept == [0, 2, 4]
    assert {i: str(e) for i, e in refused.items()} == expected_refused
    assert all(isinstance(e, InvalidEmailError) for e in refused.values())
    no_email = pa.table({"id": [1]})
    assert check_arrow(no_email) == (no_email, {})
