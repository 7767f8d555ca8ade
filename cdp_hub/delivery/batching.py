"""Micro-batching for channels with a batch API (``limits.max_batch > 1``).

    message coroutines ─ send(m) ─▶ pending ──(max_batch reached, or linger elapsed)──▶ channel.send_batch()
            ▲                                                                            │ one request,
            └──────────────── each gets its own receipt (or its own RetriableError) ◀────┘ paced like one send

Each message keeps its own retry loop in the stage: a message the provider throttled is retried alone and
joins a later batch. The linger (a few milliseconds) only matters at low volume; under load batches fill up.
"""

from __future__ import annotations

import asyncio
import contextlib

from cdp_hub.channel.base import Channel, OutboundMessage, Receipt

from .ratelimit import ChannelPacer

__all__ = ["SendBatcher"]


class SendBatcher:
    """Collects messages for one channel instance and sends them ``max_batch`` at a time."""

    def __init__(self, channel: Channel, pacer: ChannelPacer, *, max_batch: int, linger: float = 0.005) -> None:
        self.channel = channel
        self.pacer = pacer
        self.max_batch = max(1, max_batch)
        self.linger = linger
        self._pending: list[tuple[OutboundMessage, asyncio.Future[Receipt]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0

    async def send(self, message: OutboundMessage) -> Receipt:
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[OutboundMessage, asyncio.Future[Receipt]]]) -> None:
        try:
            async with self.pacer:
                self.requests += 1
                results = await self.channel.send_batch([m for m, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{type(self.channel).__name__}.send_batch returned {len(results)} results "
                                   f"for {len(batch)} messages")
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Receipt):
                future.set_result(result)
            else:
                future.set_exception(result)

    async def close(self) -> None:
        """Send what is pending and wait for requests in flight."""
        self._flush()
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks)
