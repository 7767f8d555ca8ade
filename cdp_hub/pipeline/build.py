"""The pipeline assembled: the stage names, what each stage is given, and running them together.

    Hub (clients) ─▶ build_stage(hub, name) ─▶ Stage(ctx, its repositories and hot-state, its options)
                  ─▶ Pipeline(hub, names).run() ─▶ one StageRunner per stage (a consumer group each)

    [cdp.events] ─▶ resolver ─▶ [cdp.profile-events] ─▶ triggers ─▶ [cdp.messages] ─▶ delivery
                                                                          └──── receipts ─▶ [cdp.events]
    [cdp.dlq]    ─▶ dlq (archive in PostgreSQL)

This is the one module that knows both the hub and the stages: a stage never sees the hub, only what is
wired here, so its reach is visible in its constructor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cdp_hub.delivery.sendlog import SendLog
from cdp_hub.delivery.stage import DeliveryOptions, DeliveryStage
from cdp_hub.dlq.stage import DeadLetterStage
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.runner import StageRunner
from cdp_hub.pipeline.stage import Stage, StageContext
from cdp_hub.resolver.stage import ResolverStage
from cdp_hub.segments.daily import BirthdayScheduler
from cdp_hub.segments.engine import SegmentEngine
from cdp_hub.segments.model import Segment, load_segments
from cdp_hub.store import (
    DeadLetterRepository,
    JobRepository,
    MessageRepository,
    ProfileRepository,
    SegmentRepository,
    TimerRepository,
)
from cdp_hub.triggers.scenario import load_scenarios
from cdp_hub.triggers.stage import TriggerStage

__all__ = ["STAGE_NAMES", "Pipeline", "birthday_scheduler", "build_stage", "segment_engine", "stage_context"]

STAGE_NAMES = ("resolver", "triggers", "delivery", "dlq")


def stage_context(hub: Hub) -> StageContext:
    """What every stage gets from ``hub``. The clock is read through the hub, so a pinned clock holds."""
    return StageContext(topics=hub.topics, metrics=hub.metrics, clock=lambda: hub.clock(),
                        publish=hub.bus.publish_many, group_prefix=hub.settings.topic_prefix,
                        outages=hub.outages)


def segment_engine(hub: Hub, segments: Sequence[Segment] | None = None) -> SegmentEngine:
    """The segment engine on ``hub``'s clients: the deployment's segments (built-ins and ``segments_dir``)
    unless ``segments`` are given."""
    if segments is None:
        segments = load_segments([hub.settings.segments_dir] if hub.settings.segments_dir else [])
    return SegmentEngine(stage_context(hub), repository=SegmentRepository(hub.store),
                         profiles=ProfileRepository(hub.store), hotstate=hub.hotstate, segments=segments)


def birthday_scheduler(hub: Hub) -> BirthdayScheduler:
    """The daily birthday scan on ``hub``'s clients."""
    return BirthdayScheduler(stage_context(hub), jobs=JobRepository(hub.store), profiles=ProfileRepository(hub.store))


def build_stage(hub: Hub, name: str, **options: Any) -> Stage[Any]:
    """The stage ``name`` wired to ``hub``'s clients. ``options`` replace defaults: ``rules`` (resolver);
    ``scenarios``, ``segments`` (triggers)."""
    ctx = stage_context(hub)
    settings = hub.settings
    if name == "resolver":
        return ResolverStage(ctx, profiles=ProfileRepository(hub.store), normalization=settings.normalization,
                             rules=options.get("rules"))
    if name == "triggers":
        scenarios = options.get("scenarios")
        if scenarios is None:
            scenarios = load_scenarios([settings.scenarios_dir] if settings.scenarios_dir else [])
        segments = options.get("segments")
        if segments is None:
            segments = segment_engine(hub)
        return TriggerStage(ctx, profiles=ProfileRepository(hub.store), timers=TimerRepository(hub.store),
                            sendlog=MessageRepository(hub.store), hotstate=hub.hotstate, scenarios=scenarios,
                            segments=segments, scheduler=birthday_scheduler(hub))
    if name == "delivery":
        return DeliveryStage(ctx, sendlog=SendLog(hub.store), profiles=ProfileRepository(hub.store), channels=hub.channel,
                             options=DeliveryOptions.from_settings(settings))
    if name == "dlq":
        return DeadLetterStage(ctx, letters=DeadLetterRepository(hub.store))
    raise ConfigurationError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


class Pipeline:
    """Runs stages of one hub, each under its own :class:`StageRunner`, until :meth:`stop`."""

    def __init__(self, hub: Hub, names: Sequence[str] | None = None, *,
                 stages: Sequence[Stage[Any]] | None = None) -> None:
        for name in names or ():
            if name not in STAGE_NAMES:
                raise ConfigurationError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
        self.hub = hub
        self.stages: list[Stage[Any]] = list(stages) if stages is not None else [
            build_stage(hub, n) for n in (names or STAGE_NAMES)]
        settings = hub.settings
        self.runners = [
            StageRunner(s, hub.bus, batch_size=settings.batch_size, poll_timeout_ms=settings.poll_timeout_ms,
                        client_id=settings.kafka_client_id, halt_dead_batches=settings.stage_halt_dead_batches,
                        halt_dead_records=settings.stage_halt_dead_records)
            for s in self.stages]

    async def run(self) -> None:
        """Run every stage until :meth:`stop` (or until one fails: the others are stopped, the error raised)."""
        tasks = [asyncio.create_task(r.run(), name=f"stage:{r.stage.name}") for r in self.runners]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self.stop()
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            # Cancelled (a shutdown past its grace period): the runners stop mid-batch, uncommitted.
            for task in tasks:
                task.cancel()
            raise
        finally:
            self.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Ask every runner to finish its current batch and stop."""
        for runner in self.runners:
            runner.stop()

    @property
    def processed(self) -> int:
        return sum(r.processed for r in self.runners)

    async def drain(self, *, idle_polls: int = 3, timeout: float = 120.0) -> None:
        """Wait until every stage has seen ``idle_polls`` empty polls in a row (demo, tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.runners and all(r.idle_polls >= idle_polls for r in self.runners):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the pipeline did not drain in time")
