"""The demo's CSV transforms: check each customer record, and optionally enrich it over HTTP.

    check     transform_kind="rows"   a record whose email has no ``@`` is refused
    check_batch  transform_kind="batch"  the same check a batch at a time (no dict per record)
    check_arrow  transform_kind="arrow"  the same check over a batch's columns (what the DAG runs
                                      without enrichment: a CSV batch is never made into
                                      Python objects)
    enrich    transform_kind="async"  check, then ``GET {url}?email=<email>`` -> ``{"segment": ...}``
                                      into ``segment``; at most ``concurrency`` requests in flight
                                      per task (the job's), retried with backoff on 5xx, 429,
                                      timeouts and connection errors (the job's ``retry``:
                                      :data:`RETRY_ON`)

Error messages name the status or the error, never the email (it is personal data; the dead
letter's payload holds the record).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from include.transforms.http import ClientPool, pool_for_loop

if TYPE_CHECKING:
    import httpx
    import pyarrow as pa

__all__ = [
    "RETRY_ON",  # noqa: F822  (built by the module's __getattr__ on first use)
    "EnrichmentError",
    "EnrichmentServerError",
    "InvalidEmailError",
    "check",
    "check_arrow",
    "check_batch",
    "enrich",
]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
# Seconds one request may take (connect, write, each read) before it is a timeout, and retried.
DEFAULT_TIMEOUT = 10.0
# Connections each event loop keeps (in clients of a few each) unless the job says (``connections``):
# at least the requests it has in flight.
MAX_CONNECTIONS = 64


class InvalidEmailError(ValueError):
    """Raised for a record whose email is not an email address."""


class EnrichmentError(Exception):
    """Raised when the enrichment service refuses a request or answers something unusable."""


class EnrichmentServerError(EnrichmentError):
    """Raised when the enrichment service answers 5xx or 429: worth retrying after a wait."""


def __getattr__(name: str) -> Any:
    """``RETRY_ON``: what the job retries (the service's "try again later", timeouts and
    connection errors). Built on first use, so that a job that only ``check``s never imports
    httpx (about 85 ms in each worker process, which loads this module to find ``check``)."""
    if name == "RETRY_ON":
        import httpx

        return (
            EnrichmentServerError,
            httpx.TimeoutException,
            httpx.NetworkError,
            httpx.RemoteProtocolError,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _refusal(email: str) -> InvalidEmailError:
    return InvalidEmailError(
        "email: not an email address" if "@" in email else "email: email address without @"
    )


def check(row: dict[str, Any]) -> dict[str, Any]:
    """Return the record as it is, or refuse one whose email is not an address."""
    email = row.get("email")
    if email is not None and _EMAIL.fullmatch(email) is None:
        raise _refusal(email)
    return row


def check_batch(
    rows: list[tuple[Any, ...]], *, columns: Sequence[str], target_columns: Sequence[str]
) -> list[tuple[Any, ...] | InvalidEmailError]:
    """:func:`check` for a batch: each record in the target's column order (a target column
    the file lacks is NULL), or in its place the refusal of one whose email is not an address.
    """
    columns, target_columns = tuple(columns), tuple(target_columns)
    if "email" not in columns:
        return list(map(_reorder(columns, target_columns), rows))
    email, fullmatch = columns.index("email"), _EMAIL.fullmatch
    if target_columns[: len(columns)] == columns:
        # the file's columns first (the demo's): the others (none of them: the target's columns
        # are distinct) NULL, added in line
        pad = (None,) * (len(target_columns) - len(columns))
        return [
            tuple(row) + pad  # a tuple's tuple() is itself: no copy
            if (value := row[email]) is None or fullmatch(value)
            else _refusal(value)
            for row in rows
        ]
    to_target = _reorder(columns, target_columns)
    return [
        to_target(row) if (value := row[email]) is None or fullmatch(value) else _refusal(value)
        for row in rows
    ]


def check_arrow(table: pa.Table) -> tuple[pa.Table, dict[int, InvalidEmailError]]:
    """:func:`check` for a batch as an Arrow table: the records whose email is an address, and
    the refusals of the others by index (Python's ``\\s`` spelled out for RE2, whose own is
    ASCII and shorter)."""
    import pyarrow.compute as pc

    from parallel_batch.sources.csv.columns_convert import PYTHON_SPACE

    if "email" not in table.column_names:
        return table, {}
    emails = table.column("email")
    pattern = f"^[^@{PYTHON_SPACE}]+@[^@{PYTHON_SPACE}]+$"
    accepted = pc.fill_null(pc.match_substring_regex(emails, pattern), True)
    if pc.all(accepted).as_py():
        return table, {}
    refused = {
        i: _refusal(emails[i].as_py()) for i in pc.indices_nonzero(pc.invert(accepted)).to_pylist()
    }
    return table.filter(accepted), refused


def _reorder(
    columns: tuple[str, ...], target_columns: tuple[str, ...]
) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A row's values in ``columns`` order -> in ``target_columns`` order (NULL where missing)."""
    missing = len(columns)  # the index of the NULL appended to each row
    index = [columns.index(c) if c in columns else missing for c in target_columns]
    if index == list(range(len(columns))):
        return tuple
    return lambda row: tuple(map((*row, None).__getitem__, index))


def _client(timeout: float, connections: int) -> ClientPool:
    """This event loop's clients (several small ones: see ``http.py``)."""
    import httpx

    return pool_for_loop(
        ("enrich", timeout, connections),
        lambda: ClientPool(
            connections,
            timeout=httpx.Timeout(timeout),
            headers={"accept": "application/json", "user-agent": "airflow-parallel-batch"},
        ),
    )


async def enrich(
    row: dict[str, Any],
    *,
    url: str,
    timeout: float = DEFAULT_TIMEOUT,
    connections: int = MAX_CONNECTIONS,
) -> dict[str, Any]:
    """Check the record, then fill in its ``segment`` from the service (None without an email).

    :param connections: connections to the service per task: at least the job's
        ``concurrency`` (the DAG passes its ``enrich_concurrency``), or requests wait for one.

    :raises EnrichmentServerError: for a 5xx or 429 answer (retried by the job).
    :raises EnrichmentError: for another refusal or an answer without a usable segment.
    """
    record = check(row)
    email = record.get("email")
    if email is None:
        return {**record, "segment": None}
    response = await _client(timeout, connections).get(url, params={"email": email})
    return {**record, "segment": _segment_of(response)}


def _segment_of(response: httpx.Response) -> str | None:
    status = response.status_code
    if status >= 500 or status == 429:
        raise EnrichmentServerError(f"the enrichment service answered HTTP {status}")
    if not 200 <= status < 300:
        raise EnrichmentError(f"the enrichment service refused the request: HTTP {status}")
    try:
        data: Any = response.json()
    except ValueError as exc:
        raise EnrichmentError("the enrichment service's answer is not JSON") from exc
    if not isinstance(data, dict) or "segment" not in data:
        raise EnrichmentError(
            "the enrichment service's answer is not a JSON object with a 'segment'"
        )
    segment = data["segment"]
    if segment is not None and not isinstance(segment, str):
        raise EnrichmentError(
            f"the enrichment service's 'segment' is a {type(segment).__name__}, not a string or null"
        )
    return segment
