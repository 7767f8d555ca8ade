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
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cdp_hub.bus.base import Bus, OutgoingMessage
from cdp_hub.bus.provenance import RecordTrust
from cdp_hub.campaigns.runner import CampaignRunner
from cdp_hub.config import Settings
from cdp_hub.delivery.sendlog import SendLog
from cdp_hub.delivery.stage import DeliveryOptions, DeliveryStage
from cdp_hub.dlq.envelope import FailureType
from cdp_hub.dlq.stage import DeadLetterStage
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.runner import StageRunner
from cdp_hub.pipeline.stage import Stage, StageContext
from cdp_hub.plugins import PluginRegistry
from cdp_hub.resolver.catalogue import CatalogueStep
from cdp_hub.resolver.stage import ResolverStage
from cdp_hub.schema.consent import CONSENT_CHANNELS, ConsentLinks
from cdp_hub.segments.daily import BirthdayScheduler
from cdp_hub.segments.engine import SegmentEngine
from cdp_hub.segments.model import Segment, load_segments
from cdp_hub.store import (
    CampaignRepository,
    ConsentRepository,
    DeadLetterRepository,
    EventRepository,
    JobRepository,
    JourneyRepository,
    MessageRepository,
    ProductRepository,
    ProfileRepository,
    RecommendationRepository,
    SegmentRepository,
    TimerRepository,
)
from cdp_hub.triggers.journeys import JourneyEngine
from cdp_hub.triggers.scenario import load_scenarios, parse_duration
from cdp_hub.triggers.stage import TriggerOptions, TriggerStage

__all__ = ["STAGE_NAMES", "Pipeline", "birthday_scheduler", "build_stage", "campaign_runner", "channel_kind",
           "consent_links",
           "segment_engine", "stage_context", "stage_runner", "trigger_options"]

STAGE_NAMES = ("resolver", "triggers", "delivery", "dlq")


Publish = Callable[[Sequence[OutgoingMessage]], Awaitable[None]]


def stage_context(hub: Hub, *, publish: Publish | None = None) -> StageContext:
    """What every stage gets from ``hub``. The clock and the bus are read through the hub, so a pinned clock
    (or a bus a test replaces) holds. ``publish`` replaces the bus's ``publish_many`` for work outside a
    batch (the embedded mode waits there until the stages have stored it)."""

    async def publish_on_hub_bus(messages: Sequence[OutgoingMessage]) -> None:
        await hub.bus.publish_many(messages)

    async def group_lag(group: str, topic: str) -> dict[int, int] | None:
        return await hub.bus.group_lag(group, topic)

    trust = None
    if hub.settings.parse_once:  # the hub's own records decoded without validating again (bus/provenance.py)
        trust = RecordTrust(frozenset({hub.topics.profile_events, hub.topics.messages}), hub.bus.seal)
    return StageContext(topics=hub.topics, metrics=hub.metrics, clock=lambda: hub.clock(),
                        publish=publish or publish_on_hub_bus, group_prefix=hub.settings.topic_prefix,
                        outages=hub.outages, trust=trust, group_lag=group_lag)


def segment_engine(hub: Hub, segments: Sequence[Segment] | None = None, *,
                   publish: Publish | None = None) -> SegmentEngine:
    """The segment engine on ``hub``'s clients: the deployment's segments (built-ins and ``segments_dir``)
    unless ``segments`` are given (``publish``: see :func:`stage_context`)."""
    if segments is None:
        segments = load_segments([hub.settings.segments_dir] if hub.settings.segments_dir else [])
    return SegmentEngine(stage_context(hub, publish=publish), repository=SegmentRepository(hub.store),
                         profiles=ProfileRepository(hub.store), hotstate=hub.hotstate, segments=segments)


def birthday_scheduler(hub: Hub, *, publish: Publish | None = None) -> BirthdayScheduler:
    """The daily birthday scan on ``hub``'s clients (``publish``: see :func:`stage_context`)."""
    return BirthdayScheduler(stage_context(hub, publish=publish), jobs=JobRepository(hub.store), profiles=ProfileRepository(hub.store))


def channel_kind(settings: Settings, registry: PluginRegistry) -> Callable[[str], str | None]:
    """The kind of a channel instance (``email``, ``sms``, ...) without starting it: the configured type's,
    an outbox's configured kind, or the name itself when it names a consent channel; None when unknown."""

    def kind(name: str) -> str | None:
        inst = settings.channels.get(name)
        if inst is not None:
            configured = inst.config.get("kind")
            if isinstance(configured, str):
                return configured
            try:
                return str(registry.channel(inst.type).kind)
            except ConfigurationError:
                return None
        if name in CONSENT_CHANNELS:
            return name
        try:
            return str(registry.channel(name).kind)
        except ConfigurationError:
            return None

    return kind


def consent_links(settings: Settings) -> ConsentLinks | None:
    """The signer of double opt-in links, when ``consent_link_secret`` and ``public_url`` are configured."""
    if settings.consent_link_secret is None or not settings.public_url:
        return None
    try:
        ttl = parse_duration(settings.consent_link_ttl)
    except ValueError as exc:
        raise ConfigurationError(f"consent_link_ttl: {exc}") from None
    return ConsentLinks(settings.consent_link_secret.get_secret_value().encode(), settings.public_url, ttl)


def trigger_options(hub: Hub, **overrides: Any) -> TriggerOptions:
    """The triggers stage's contact policy from ``hub``'s settings (``overrides`` replace fields)."""
    overrides.setdefault("channel_kind", channel_kind(hub.settings, hub.registry))
    overrides.setdefault("consent_links", consent_links(hub.settings))
    return TriggerOptions.from_settings(hub.settings, **overrides)


def campaign_runner(hub: Hub, *, publish: Publish | None = None, **overrides: Any) -> CampaignRunner:
    """The campaign sender on ``hub``'s clients, with the triggers stage's contact policy (``publish``: see
    :func:`stage_context`; ``overrides``: the runner's options, e.g. ``lease_seconds``, ``max_chunk``)."""
    try:
        lease = parse_duration(hub.settings.campaign_lease).total_seconds()
    except ValueError as exc:
        raise ConfigurationError(f"campaign_lease: {exc}") from None
    overrides.setdefault("lease_seconds", lease)
    return CampaignRunner(stage_context(hub, publish=publish), campaigns=CampaignRepository(hub.store),
                          profiles=ProfileRepository(hub.store), consents=ConsentRepository(hub.store),
                          sendlog=MessageRepository(hub.store), hotstate=hub.hotstate,
                          policy=trigger_options(hub), **overrides)


def build_stage(hub: Hub, name: str, **options: Any) -> Stage[Any]:
    """The stage ``name`` wired to ``hub``'s clients. ``options`` replace defaults: ``rules`` (resolver);
    ``scenarios``, ``segments``, ``trigger_options`` (triggers)."""
    ctx = stage_context(hub)
    settings = hub.settings
    if name == "resolver":
        catalogue = CatalogueStep(ProductRepository(hub.store), interest_days=settings.catalogue_interest_days,
                                  audience_limit=settings.catalogue_audience_limit,
                                  low_stock=settings.catalogue_low_stock)
        return ResolverStage(ctx, profiles=ProfileRepository(hub.store), normalization=settings.normalization,
                             rules=options.get("rules"), consents=ConsentRepository(hub.store),
                             catalogue=catalogue, omit=frozenset(settings.profile_events_omit),
                             random_page_cost=settings.resolver_probe_cost)
    if name == "triggers":
        scenarios = options.get("scenarios")
        if scenarios is None:
            scenarios = load_scenarios([settings.scenarios_dir] if settings.scenarios_dir else [])
        segments = options.get("segments")
        if segments is None:
            segments = segment_engine(hub)
        journeys = [s for s in scenarios if s.steps is not None]
        engine = JourneyEngine(journeys, positions=JourneyRepository(hub.store), events=EventRepository(hub.store),
                               segments=SegmentRepository(hub.store)) if journeys else None
        return TriggerStage(ctx, profiles=ProfileRepository(hub.store), timers=TimerRepository(hub.store),
                            sendlog=MessageRepository(hub.store), hotstate=hub.hotstate, scenarios=scenarios,
                            segments=segments, scheduler=birthday_scheduler(hub),
                            consents=ConsentRepository(hub.store), events=EventRepository(hub.store),
                            options=options.get("trigger_options") or trigger_options(hub), journeys=engine)
    if name == "delivery":
        return DeliveryStage(ctx, sendlog=SendLog(hub.store), profiles=ProfileRepository(hub.store), channels=hub.channel,
                             options=DeliveryOptions.from_settings(settings), consents=ConsentRepository(hub.store),
                             recommendations=RecommendationRepository(hub.store))
    if name == "dlq":
        return DeadLetterStage(ctx, letters=DeadLetterRepository(hub.store))
    raise ConfigurationError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def stage_runner(settings: Settings, stage: Stage[Any], bus: Bus) -> StageRunner:
    """The runner of ``stage`` on ``bus`` with the deployment's batch, poll and halt settings (what
    :class:`Pipeline` runs each stage under; a bench's pass-through stage runs under the same)."""
    return StageRunner(stage, bus, batch_size=settings.batch_size, poll_timeout_ms=settings.poll_timeout_ms,
                       client_id=settings.kafka_client_id, halt_dead_batches=settings.stage_halt_dead_batches,
                       halt_dead_records=settings.stage_halt_dead_records)


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
        self.runners = [stage_runner(hub.settings, s, hub.bus) for s in self.stages]
        # Every stage's counters and histograms exist at zero from the start (dashboards show 0, not "no data").
        hub.metrics.known(stages=[s.name for s in self.stages], failure_types=typing.get_args(FailureType))

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
        """Wait until the pipeline has nothing left to do (demo, tests): every stage has seen ``idle_polls``
        empty polls in a row made after this call (empty polls from before it say nothing about records
        published just before it), and every stage's group has committed everything on its topics, read while
        no stage took a record. Idle polls alone are not enough: a record one stage publishes can reach the
        next stage's consumer after that consumer's empty polls (a fetch in flight), and a drain that trusted
        them would return with the record unread."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start = {id(r): r.polls for r in self.runners}

        def idle() -> tuple[int, ...] | None:
            if self.runners and all(r.idle_polls >= idle_polls and r.polls - start.get(id(r), 0) >= idle_polls
                                    for r in self.runners):
                return tuple(r.processed for r in self.runners)
            return None

        while loop.time() < deadline:
            before = idle()
            if before is not None:
                backlogs = await asyncio.gather(*(r.backlog() for r in self.runners))
                if all(b == 0 for b in backlogs) and idle() == before:
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("the pipeline did not drain in time")
