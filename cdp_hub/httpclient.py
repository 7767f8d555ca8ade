"""The hub's shared HTTP client: httpx over several small connection pools instead of one big one.

httpcore 1.0's pool does bookkeeping proportional to its size on every request, so one pool of 128
connections spends more CPU per request than the request itself costs; past a few dozen connections
throughput falls (bench/delivery.py: one pool carried 563 requests/s over 32 connections and 151 over 48,
at 50 ms per request). Many pools of 8 keep that cost flat: the same 128 requests in flight carry about
1,500 requests/s. The transport hands each request to the next pool in turn; connections stay alive and
are reused within each pool.
"""

from __future__ import annotations

import itertools
import ssl
from functools import cache

import httpx

__all__ = ["ShardedTransport", "default_tls_context", "shared_client"]


class ShardedTransport(httpx.AsyncBaseTransport):
    """Round-robin over ``shards`` independent connection pools of ``per_shard`` connections each."""

    def __init__(self, shards: int = 16, per_shard: int = 8, **transport_options: object) -> None:
        if shards < 1 or per_shard < 1:
            raise ValueError("shards and per_shard must be at least 1")
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        # One TLS context for every pool: each transport would otherwise build its own and load the CA bundle
        # (~25 ms apiece, 0.4 s for the 16 pools of every hub a process starts).
        transport_options.setdefault("verify", default_tls_context())
        self._pools = [httpx.AsyncHTTPTransport(limits=limits, **transport_options)  # type: ignore[arg-type]
                       for _ in range(shards)]
        self._turn = itertools.cycle(self._pools)

    @property
    def max_connections(self) -> int:
        return sum(p._pool._max_connections for p in self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


@cache
def default_tls_context() -> ssl.SSLContext:
    """httpx's default client context (certificate verification with its CA bundle), built once per process
    and shared by every pool: an ``SSLContext`` serves any number of connections."""
    return httpx.create_ssl_context()


def shared_client(*, max_connections: int = 128, per_shard: int = 8,
                  timeout: httpx.Timeout | None = None) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for connectors and channels, with ``max_connections`` spread over pools."""
    shards = max(1, -(-max_connections // per_shard))
    return httpx.AsyncClient(transport=ShardedTransport(shards, per_shard),
                             timeout=timeout or httpx.Timeout(30.0, connect=10.0))
