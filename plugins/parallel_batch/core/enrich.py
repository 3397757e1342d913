"""HTTP enrichment of records: ``GET {url}?email=<email>`` answers ``{"segment": ...}``.

I/O-bound work on asyncio, one :class:`Enricher` per task (one limiter, a few small connection
pools)::

    emails of a batch ──► one coroutine per email (None: no request, segment None)
                            │ each attempt takes a slot of the ConcurrencyLimiter:
                            │ at most `concurrency` requests in flight for the whole task
                            ▼
                          GET url?email=...  ──► 200 {"segment": str | null} ──► ItemResult(segment)
                            │ 5xx / 429, timeout, connection error: retried with exponential
                            │ backoff and full jitter (RetryPolicy), the slot given back while
                            │ waiting; another status or an unusable answer fails at once
                            ▼
                          ItemResult(failure=FailedItem)  ──► the caller's dead letters

Emails go out URL-encoded as the query parameter ``email`` (added to any query the URL already
has). Error messages name the status or the error, never the email (it is personal data; the
dead letter's payload holds the record).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

import httpx

from parallel_batch.engine.limiter import ConcurrencyLimiter
from parallel_batch.engine.retry import ItemResult, RetryPolicy, acall_with_retries
from parallel_batch.exceptions import EnrichmentError, EnrichmentServerError

__all__ = [
    "CONNECTIONS_PER_CLIENT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT",
    "EnrichConfig",
    "EnrichStatistics",
    "Enricher",
]

# Requests in flight per task. Larger: more throughput against a fast service (each request is
# mostly waiting); smaller: gentler on the service. Chunk tasks run side by side, so the service
# sees up to (concurrent chunk tasks) x this.
DEFAULT_CONCURRENCY = 16
# Seconds one request may take (connect, write, each read) before it is a timeout and retried.
# Shorter: a hung request costs less; too short: a slow but healthy service fails records.
DEFAULT_TIMEOUT = 10.0
# Tries per record in all. With DEFAULT_BASE_DELAY the waits are at most 0.25, 0.5, 1 s: a
# service that blips for about a second still answers every record; an outage fails them fast.
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BASE_DELAY = 0.25
DEFAULT_MAX_DELAY = 4.0
# Connections per httpx client. httpcore's pool does work proportional to its connections times
# its waiting requests on every request (measured: 2 ms of CPU per request at 10 connections,
# 6.5 ms at 50); the requests are spread over ceil(concurrency / this) small clients instead.
# Smaller: less pool work per request; larger: fewer clients to pick from.
CONNECTIONS_PER_CLIENT = 8
# Statuses that say "try again later".
_RETRY_STATUSES = frozenset({429})
_QUERY_PARAMETER = "email"
_ANSWER_FIELD = "segment"
# Transport errors that no retry can fix: a wrong URL or a request httpx cannot send.
_NOT_RETRIED: tuple[type[BaseException], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


@dataclass(frozen=True)
class EnrichConfig:
    """Where and how hard to ask for each record's segment.

    :param url: the service, ``http(s)://host[:port]/path``; ``?email=<email>`` is added.
    :param concurrency: requests in flight at most (per :class:`Enricher`, i.e. per task).
    :param timeout: seconds for connecting, sending and each read of one request.
    :param max_attempts: tries per record in all (1: no retry).
    :param base_delay: seconds; the ceiling of the first backoff wait (full jitter).
    :param max_delay: seconds; the longest backoff wait.
    """

    url: str
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.strip():
            raise ValueError("enrich_url must not be empty")
        try:
            parsed = httpx.URL(self.url.strip())
        except httpx.InvalidURL as exc:
            raise ValueError(f"enrich_url is not a valid URL: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"enrich_url must be an http:// or https:// URL, got {self.url!r}")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise ValueError("enrich_concurrency must be an integer")
        if self.concurrency < 1:
            raise ValueError("enrich_concurrency must be greater than 0")
        if not isinstance(self.timeout, int | float) or not (
            math.isfinite(self.timeout) and self.timeout > 0
        ):
            raise ValueError("enrich_timeout must be a number of seconds greater than 0")
        self.policy()  # checks the retry settings

    def policy(self) -> RetryPolicy:
        """The retry policy of one record: transient failures only."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            retry_on=(httpx.TransportError, EnrichmentServerError),
            give_up_on=_NOT_RETRIED,
        )


class EnrichStatistics(NamedTuple):
    """What an :class:`Enricher` did so far.

    :param records: records looked up (with an email).
    :param requests: requests sent, retries included.
    :param failed: records whose lookup failed for good.
    :param max_in_flight: the most requests in flight at once.
    """

    records: int
    requests: int
    failed: int
    max_in_flight: int


class Enricher:
    """Looks up each record's segment over HTTP; use ``async with`` (it owns httpx clients).

    :param config: the service and the limits.
    :param transport: an httpx transport to use instead of the network one (e.g. for a proxy).
    """

    def __init__(
        self, config: EnrichConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._url = config.url.strip()
        self._policy = config.policy()
        self._transport = transport
        self._clients: list[httpx.AsyncClient] = []
        self._busy: list[int] = []  # requests in flight per client
        self._limiter = ConcurrencyLimiter(config.concurrency)
        self._records = 0
        self._requests = 0
        self._failed = 0
        self._in_flight = 0
        self._max_in_flight = 0

    async def __aenter__(self) -> Enricher:
        clients = -(-self.config.concurrency // CONNECTIONS_PER_CLIENT)
        per_client = -(-self.config.concurrency // clients)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        # One TLS context for all the clients: each would load the CA certificates (~0.1 s).
        tls = httpx.create_ssl_context()
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.timeout),
                limits=limits,
                verify=tls,
                headers={"accept": "application/json", "user-agent": "airflow-parallel-batch"},
                transport=self._transport,
            )
            for _ in range(clients)
        ]
        self._busy = [0] * clients
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    def statistics(self) -> EnrichStatistics:
        """Return the counters so far."""
        return EnrichStatistics(self._records, self._requests, self._failed, self._max_in_flight)

    async def segment(self, email: str) -> str | None:
        """Ask for one email's segment: one request, no retry.

        :raises EnrichmentServerError: for a 5xx or 429 answer (worth retrying).
        :raises EnrichmentError: for any other refusal or an answer without a usable segment.
        :raises httpx.TransportError: for a timeout or a connection error (worth retrying).
        """
        if not self._clients:
            raise RuntimeError("use the Enricher in 'async with' before looking anything up")
        async with self._limiter:
            # The least busy client has a free connection: the limiter admits at most
            # `concurrency` requests and the clients have that many connections together.
            busy = self._busy
            index = busy.index(min(busy))
            busy[index] += 1
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            try:
                response = await self._clients[index].get(
                    self._url, params={_QUERY_PARAMETER: email}
                )
            finally:
                busy[index] -= 1
                self._in_flight -= 1
        return _segment_of(response)

    async def lookup(self, email: str | None) -> ItemResult[str | None]:
        """Return one email's segment with retries; a record without email gets None, no request."""
        if email is None:
            return ItemResult(None)
        self._records += 1
        result = await acall_with_retries(self.segment, email, self._policy)
        if result.failure is not None:
            self._failed += 1
        return result

    async def lookup_many(self, emails: Sequence[str | None]) -> list[ItemResult[str | None]]:
        """Return the segments of many emails, aligned with them, at most ``concurrency`` at once."""
        return list(await asyncio.gather(*(self.lookup(email) for email in emails)))


def _segment_of(response: httpx.Response) -> str | None:
    status = response.status_code
    if status >= 500 or status in _RETRY_STATUSES:
        raise EnrichmentServerError(f"the enrichment service answered HTTP {status}")
    if not 200 <= status < 300:
        raise EnrichmentError(f"the enrichment service refused the request: HTTP {status}")
    try:
        data: Any = response.json()
    except ValueError as exc:
        raise EnrichmentError("the enrichment service's answer is not JSON") from exc
    if not isinstance(data, dict) or _ANSWER_FIELD not in data:
        raise EnrichmentError(
            f"the enrichment service's answer is not a JSON object with a {_ANSWER_FIELD!r} field"
        )
    segment = data[_ANSWER_FIELD]
    if segment is not None and not isinstance(segment, str):
        raise EnrichmentError(
            f"the enrichment service's {_ANSWER_FIELD!r} is a {type(segment).__name__}, "
            "not a string or null"
        )
    return segment
