"""An HTTP client for async transforms that call a service per row, many requests in flight.

One ``httpx.AsyncClient`` holding many connections is slow here: each time its pool hands a
request a connection, it checks every connection it holds (httpcore 1.0 polls each socket), so
the CPU a request costs grows with the pool. Measured on 2 cores against the tests' segment
service (50 requests in flight, 50 ms answers): one client of 50 connections 129 requests/s at
7.7 ms of CPU each; seven clients of 8 connections 868 requests/s at 0.9 ms each.

:class:`ClientPool` is those small clients behind one ``get``: each request goes to the client
with the fewest requests in flight. One pool per event loop (:func:`pool_for_loop`): a client
belongs to the loop it was made in, and the engine runs each task's async transform on a loop
of its own.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["CONNECTIONS_PER_CLIENT", "ClientPool", "pool_for_loop"]

# Connections of one client: few enough that its pool's checks stay cheap.
CONNECTIONS_PER_CLIENT = 8


class ClientPool:
    """Small ``httpx.AsyncClient``\\ s with ``connections`` connections between them.

    :param connections: connections in all (at least the requests a task has in flight).
    :param client_options: passed to each ``httpx.AsyncClient`` (timeout, headers...).
    """

    def __init__(self, connections: int, **client_options: Any) -> None:
        import httpx

        if connections < 1:
            raise ValueError("connections must be at least 1")
        count = math.ceil(connections / CONNECTIONS_PER_CLIENT)
        each = math.ceil(connections / count)
        limits = httpx.Limits(max_connections=each, max_keepalive_connections=each)
        self.clients = [httpx.AsyncClient(limits=limits, **client_options) for _ in range(count)]
        self.in_flight = [0] * count

    async def get(self, url: str, **options: Any) -> httpx.Response:
        """``GET url`` on the client with the fewest requests in flight."""
        index = self.in_flight.index(min(self.in_flight))
        self.in_flight[index] += 1
        try:
            return await self.clients[index].get(url, **options)
        finally:
            self.in_flight[index] -= 1

    async def aclose(self) -> None:
        """Close every client."""
        for client in self.clients:
            await client.aclose()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, ClientPool]] = (
    weakref.WeakKeyDictionary()
)


def pool_for_loop(key: Any, make: Callable[[], ClientPool]) -> ClientPool:
    """The running loop's pool for ``key``, made by ``make()`` on first use in that loop."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    pool = pools.get(key)
    if pool is None:
        pool = pools[key] = make()
    return pool
