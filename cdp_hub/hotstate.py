"""Hot state in Redis (or fakeredis for the embedded default): caps, dedupe keys, cached memberships.

Nothing here is the system of record: PostgreSQL is. Losing Redis loses counters and caches, never data.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from cdp_hub.errors import ConfigurationError
from cdp_hub.lifecycle import AsyncLifecycle

__all__ = ["HotState"]


class HotState(AsyncLifecycle):
    """A small interface over redis.asyncio. ``url`` is ``redis://...`` or ``fakeredis://``."""

    def __init__(self, url: str = "fakeredis://", *, prefix: str = "cdp:") -> None:
        self.url = url
        self.prefix = prefix
        self._client: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("HotState is not started")
        return self._client  # type: ignore[no-any-return]

    @property
    def backend(self) -> str:
        return "fakeredis" if self.url.startswith("fakeredis") else "redis"

    async def start(self) -> None:
        if self._client is not None:
            return
        if self.url.startswith("fakeredis"):
            try:
                from fakeredis import FakeAsyncRedis
            except ImportError:  # pragma: no cover
                raise ConfigurationError("redis_url='fakeredis://' needs: pip install 'cdp-hub[embedded]'") from None
            self._client = FakeAsyncRedis(decode_responses=False)
        else:
            self._client = aioredis.Redis.from_url(self.url, decode_responses=False)
        try:
            await self._client.ping()
        except (OSError, aioredis.RedisError) as exc:
            await self.stop()
            raise ConfigurationError(
                f"cannot reach Redis at {self.url} ({exc}); for tests: scripts/services.sh up"
            ) from exc

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def claim(self, key: str, ttl_seconds: int) -> bool:
        """Set ``key`` if absent (with a TTL); True when this caller got it."""
        return bool(await self.redis.set(self.key(key), b"1", nx=True, ex=ttl_seconds))

    async def incr_window(self, key: str, ttl_seconds: int, amount: int = 1) -> int:
        """Increment a counter that expires ``ttl_seconds`` after its first increment."""
        full = self.key(key)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incrby(full, amount)
        pipe.expire(full, ttl_seconds, nx=True)
        value, _ = await pipe.execute()
        return int(value)

    async def get_int(self, key: str) -> int:
        value = await self.redis.get(self.key(key))
        return int(value) if value is not None else 0

    async def set_members(self, key: str, add: list[str] = (), remove: list[str] = ()) -> None:  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=False)
        if add:
            pipe.sadd(self.key(key), *add)
        if remove:
            pipe.srem(self.key(key), *remove)
        await pipe.execute()

    async def is_member(self, key: str, member: str) -> bool:
        return bool(await self.redis.sismember(self.key(key), member))
