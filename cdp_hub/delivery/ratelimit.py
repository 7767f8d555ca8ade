"""Per-provider pacing: a token bucket (rate) and a semaphore (requests in flight) per channel instance.

In-process: each delivery process paces itself. With N processes, set each channel's ``rate_per_second`` to
the provider's limit divided by N (or run one delivery process per rate-limited provider).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from cdp_hub.channel.base import ChannelLimits

__all__ = ["ChannelPacer", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. ``acquire()`` waits for a token.

    Waiters are served in order (one lock), so a burst of sends is spread evenly instead of stampeding.
    """

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = float(burst if burst is not None else max(1, int(rate)))
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            while self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1


class ChannelPacer:
    """``async with pacer:`` around one provider request: waits for a token, holds a concurrency slot."""

    def __init__(self, limits: ChannelLimits) -> None:
        self.bucket = TokenBucket(limits.rate_per_second, limits.burst) if limits.rate_per_second else None
        self.slots = asyncio.Semaphore(max(1, limits.max_concurrency))

    async def __aenter__(self) -> None:
        if self.bucket is not None:
            await self.bucket.acquire()
        await self.slots.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.slots.release()
