"""The embedded mode: a command that publishes on the in-process bus runs the stages itself, to completion.

On ``bus = "memory"`` a record published by ``cdp-hub sync`` (or ``ingest-file``, ``import``, ``dlq replay``)
lives in this process only: if the process ends before a stage has stored it, it is gone, and a checkpoint
saved after the publish would skip it for good. So such a command runs under :func:`downstream`:

    async with downstream(hub) as settle:          memory bus: every stage runs in this process
        publish ...                                 (Pipeline(hub).run() in a task)
        await settle()                              wait until every stage has committed everything
        save the checkpoint / mark replayed         only now: what it covers is in PostgreSQL
    (leaving the block settles once more and stops the stages)

On Kafka the records are durable when ``publish`` returns and the stages run elsewhere: ``settle`` returns at
once and no stage is started.

"Everything committed" is exact on the in-process bus: a stage publishes its output before it commits the
batch it came from, so when no consumer group has an uncommitted record there is no work in flight (receipts
that delivery publishes to ``cdp.events`` are caught by the same check). A stage that fails (a halted stage,
a database that stays down) fails ``settle``: the command stops without saving its checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from cdp_hub.bus.base import Bus, OutgoingMessage
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.errors import FatalError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline

__all__ = ["Settle", "downstream", "pipeline_settle", "settle_nothing", "settled_publish"]

log = logging.getLogger(__name__)

Settle = Callable[[], Awaitable[None]]
"""Wait until what was published so far is stored by every stage (a no-op where the bus is durable)."""

SETTLE_POLL_SECONDS = 0.02
SETTLE_TIMEOUT_SECONDS = 120.0
"""``settle`` gives up when the stages commit nothing for this long (a batch retrying against a database
that stays down): the command fails and saves nothing that would skip the records."""


async def settle_nothing() -> None:
    """The :data:`Settle` of a durable bus: what ``publish`` returned for is safe already."""


def settled_publish(hub: Hub, settle: Settle) -> Callable[[Sequence[OutgoingMessage]], Awaitable[None]]:
    """A ``publish`` that returns once the records are stored downstream, for code that records "done"
    right after publishing (the birthday scan marks what it emitted; ``StageContext.publish``)."""

    async def publish(messages: Sequence[OutgoingMessage]) -> None:
        await hub.bus.publish_many(messages)
        await settle()

    return publish


def pipeline_settle(bus: Bus, pipeline: Pipeline, running: asyncio.Task[None] | None = None) -> Settle:
    """The :data:`Settle` of ``pipeline``, running in this process on ``bus`` (``running``: its task, whose
    failure fails the wait). On a bus other than the in-process one, :func:`settle_nothing`."""
    if not isinstance(bus, MemoryBus):
        return settle_nothing
    memory_bus = bus
    groups = [(runner.stage.group, runner.stage.topics) for runner in pipeline.runners]

    async def settle() -> None:
        loop = asyncio.get_running_loop()
        best = None
        deadline = loop.time() + SETTLE_TIMEOUT_SECONDS
        while True:
            if running is not None and running.done():
                running.result()  # a stage failed: raise its error
                raise FatalError("the embedded stages stopped before the published records were stored")
            behind = {group: memory_bus.uncommitted(group, topics) for group, topics in groups}
            total = sum(behind.values())
            if total == 0:
                return
            if best is None or total < best:
                best, deadline = total, loop.time() + SETTLE_TIMEOUT_SECONDS
            elif loop.time() >= deadline:
                stuck = ", ".join(f"{group}: {n}" for group, n in behind.items() if n)
                raise FatalError(
                    f"records published by this command were not stored: the stages in this process made no "
                    f"progress for {SETTLE_TIMEOUT_SECONDS:g}s (uncommitted records per consumer group: {stuck}); "
                    "nothing was checkpointed or marked, so running the command again repeats the work. See "
                    "the errors logged above")
            await asyncio.sleep(SETTLE_POLL_SECONDS)

    return settle


@asynccontextmanager
async def downstream(hub: Hub) -> AsyncIterator[Settle]:
    """Run every stage in this process while the block runs, when ``hub`` is on the in-process bus."""
    bus = hub.bus
    if not isinstance(bus, MemoryBus):
        yield settle_nothing
        return
    pipeline = Pipeline(hub)
    running = asyncio.create_task(pipeline.run(), name="embedded-stages")
    settle = pipeline_settle(bus, pipeline, running)

    log.info("bus = 'memory': running the stages in this process until what it publishes is stored")
    try:
        yield settle
        await settle()
    finally:
        pipeline.stop()
        await asyncio.gather(running, return_exceptions=True)
