"""The triggers stage: profile events -> scenario decisions -> message intents on ``cdp.messages``.

    [cdp.profile-events] ─▶ watermark per partition (latest event time) ─▶ match scenarios (trigger, conditions)
        (triggers/index.py: by event type, then equality lookups; other conditions compiled once)
        muted (setting, or an event marked by a replay/backfill) ──────────────────────────▶ decided muted
        older than max_age / max_trigger_age, or later than its send time + lateness ───────▶ decided too_late
        delay?   ─▶ scheduled_triggers (durable timer at occurred_at + delay, or at send_at, hold-until key)
        a send-time variant ─▶ a timer too: its delay later, then its next ``at`` in the customer's zone
        cancel_on ─▶ pending timers whose wait the event falls in, in event time ──────────▶ decided suppressed
        otherwise ─▶ the contact policy (below)
    due timers (fire_at + allowed lateness passed by the watermark; checked every second, busy or idle)
        ─▶ superseded by a later trigger with the same key? cancelled by a stored event in event time?
        ─▶ the contact policy
    the contact policy, per batch:  consent ─▶ once per profile / hold-until window ─▶ priority
        ─▶ caps (scenario, channel, all marketing) ─▶ quiet hours (deferred: a durable timer) ─▶ sent
        every outcome is a ``message.decided`` event on [cdp.events] and cdp_trigger_decisions{scenario,decision}
    segments: trait-only segments re-checked for the batch's profiles (SegmentEngine.on_profiles) ─▶
              segment.entered/exited on [cdp.events]; conditions see ``profile.segments``
    daily jobs (checked every minute, run at most once per SCAN_INTERVAL) ─▶ profile.birthday on [cdp.events]
    journeys (scenarios with steps): entries, moves and due positions go to the JourneyHook
              (cdp_hub/triggers/journeys.py), whose send steps come back through gate_sends: the same policy

Most of the stream is of types no scenario, cancel rule or journey reads (views, profile updates, receipts):
of such a record the hub wrote, the stage reads only the profile and the time (``PassingEvent``: segments, the
watermark) instead of building the whole event; any other record is decoded in full.

What the stage reads is what the resolver passes on: not the types of ``profile_events_omit`` (the contact
policy's own ``message.decided`` by default, stored by the resolver, read by nothing here). A scenario or
journey that reads an omitted type stops the stage from being built (``_refuse_omitted``).

Idempotency: intents have deterministic ids (scenario + trigger event + profile), timers deterministic ids
(scenario + event), decisions deterministic event ids (+ the decision), cap counters are sets of message ids;
a replayed batch yields the same intents, which the delivery stage's send log turns into no-ops. Consent is
checked here (so a message without consent uses no cap, wins no priority) and again at delivery, with the
profile as it is at send time.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import orjson

from cdp_hub.bus.base import OutgoingMessage, Record, TopicPartition
from cdp_hub.bus.events import event_message
from cdp_hub.bus.provenance import EVENT_SCHEMA
from cdp_hub.config import Settings
from cdp_hub.durations import DEFAULT_TIMEZONE, customer_zone, next_local_time, parse_time_of_day
from cdp_hub.errors import ConfigurationError, SchemaViolation
from cdp_hub.hotstate import HotState
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput
from cdp_hub.schema.consent import ConsentLinks, ConsentPolicy, consent_refusal
from cdp_hub.schema.events import Context, Event, Traits, deterministic_event_id
from cdp_hub.schema.messages import MessageIntent, message_id_for
from cdp_hub.schema.trusted import trusted_event
from cdp_hub.segments.daily import BirthdayScheduler
from cdp_hub.segments.engine import SegmentEngine
from cdp_hub.store import (
    ConsentRepository,
    EventRepository,
    MessageRepository,
    ProfileRepository,
    TimerRepository,
)
from cdp_hub.store.timers import CancelledTimer, Timer
from cdp_hub.triggers.experiments import (
    CONTROL,
    GLOBAL_HOLDOUT,
    NO_EXPERIMENT,
    NO_VARIANT,
    Allocation,
    Experiment,
    Variant,
    allocate,
    assignment_event,
)
from cdp_hub.triggers.index import ScenarioIndex
from cdp_hub.triggers.scenario import FrequencyCap, QuietHours, Scenario, parse_duration
from cdp_hub.triggers.timeline import Watermarks, is_too_late

__all__ = ["DECISION_SOURCE", "Decision", "JourneyHook", "TriggerOptions", "TriggerStage", "experiment_step",
           "is_muted", "quiet_hours_end", "variant_send_time"]

DECISION_SOURCE = "cdp-hub.triggers"
CONSENT_REQUESTED = "consent.requested"
DECIDED = "message.decided"
MUTE_FLAG = "mute_triggers"
"""``context.mute_triggers: true`` on an event: a replay or backfill; it updates profiles, fires nothing."""

TIMER_NAMESPACE = uuid.UUID("5c0b7f3e-1d2a-5e4f-8a6b-7c8d9e0f1a2b")
TIMER_CHECK_SECONDS = 1.0
BACKLOG_READ_SECONDS = 2.0  # a read of the resolver's backlog that takes longer leaves the hold as it was
MAX_UPCOMING = 100_000
"""Fire times kept in memory; beyond them (a burst of delayed triggers) the periodic check finds the rest."""
DAILY_CHECK_SECONDS = 60.0

log = logging.getLogger(__name__)


def quiet_hours_end(now: datetime, quiet: QuietHours, timezone: str | None) -> datetime | None:
    """When ``now`` falls in the quiet period of the customer's zone, the UTC time it ends; else None."""
    local = now.astimezone(customer_zone(timezone, quiet.default_timezone))
    sh, sm = map(int, quiet.start.split(":"))
    eh, em = map(int, quiet.end.split(":"))
    start = local.replace(hour=sh, minute=sm, second=0, microsecond=0)
    end = local.replace(hour=eh, minute=em, second=0, microsecond=0)
    if start <= end:  # e.g. 13:00-15:00
        inside = start <= local < end
        ends = end
    else:  # crosses midnight, e.g. 21:00-09:00
        if local >= start:
            inside, ends = True, end + timedelta(days=1)
        elif local < end:
            inside, ends = True, end
        else:
            inside, ends = False, end
    return ends.astimezone(UTC) if inside else None




def is_muted(event: Event) -> bool:
    """Whether the event was marked by a replay or backfill (``--mute-triggers``)."""
    extra = event.context.model_extra or {}
    return extra.get(MUTE_FLAG) is True


def _refuse_omitted(scenarios: Sequence[Scenario], omitted: frozenset[str]) -> None:
    """A scenario that reads an event type the resolver does not pass on would never see it: refuse to start
    rather than drop its triggers without a word (``cdp-hub scenarios validate`` says the same per file)."""
    needing = sorted(f"{s.id} ({', '.join(sorted(s.stream_types & omitted))})"
                     for s in scenarios if s.stream_types & omitted)
    if needing:
        raise ConfigurationError(
            "scenarios read event types the resolver does not pass on to cdp.profile-events (profile_events_omit): "
            + "; ".join(needing) + ". Remove those types from profile_events_omit in every process of the "
            "deployment, or change the scenarios")


def _durations(caps: Mapping[str, int], where: str) -> tuple[tuple[timedelta, int], ...]:
    try:
        return tuple((parse_duration(window), int(limit)) for window, limit in caps.items())
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class TriggerOptions:
    """The deployment's contact policy and event-time settings (see :class:`~cdp_hub.config.Settings`)."""

    consent_policy: ConsentPolicy = "opt_in"
    max_trigger_age: timedelta = timedelta(hours=24)
    allowed_lateness: timedelta = timedelta(minutes=1)
    mute: bool = False
    priority_window: timedelta = timedelta(hours=1)
    marketing_caps: tuple[tuple[timedelta, int], ...] = ()
    channel_caps: Mapping[str, tuple[tuple[timedelta, int], ...]] = field(default_factory=dict)
    idle_seconds: float = 5.0
    backlog_holds_timers: int = 5000
    """Due timers wait while the resolver has more records of ``cdp.events`` than this not committed (0: never)."""
    backlog_check_seconds: float = 1.0
    """How often the resolver's backlog is read again while timers are checked."""
    channel_kind: Callable[[str], str | None] | None = None
    """The kind (email, sms, push, ...) of a channel instance, for consent; None: judged at delivery only."""
    daily_jobs: bool = True
    """Run the daily birthday scan (a simulation does not)."""
    consent_links: ConsentLinks | None = None
    """Signs double opt-in links: a ``consent.requested`` trigger's intent carries ``vars.confirm_url``."""
    holdout_share: float = 0.0
    """The global holdout: this share of profiles gets no marketing (triggers/experiments.py)."""
    holdout_salt: str = "cdp-hub-holdout"
    omitted_types: frozenset[str] = frozenset()
    """Event types the resolver does not pass on to ``cdp.profile-events`` (settings.profile_events_omit): no
    scenario or journey of the stage may read one (checked when the stage is built)."""

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TriggerOptions:
        try:
            values: dict[str, Any] = {
                "consent_policy": settings.consent_policy,
                "max_trigger_age": parse_duration(settings.max_trigger_age),
                "allowed_lateness": parse_duration(settings.allowed_lateness),
                "mute": settings.mute_triggers,
                "backlog_holds_timers": settings.resolver_backlog_holds_timers,
                "priority_window": parse_duration(settings.priority_window),
                "marketing_caps": _durations(settings.marketing_caps, "marketing_caps"),
                "channel_caps": {ch: _durations(c, f"channel_caps.{ch}") for ch, c in settings.channel_caps.items()},
                "holdout_share": settings.holdout_share,
                "holdout_salt": settings.holdout_salt,
                "omitted_types": frozenset(settings.profile_events_omit),
            }
        except ValueError as exc:
            raise ConfigurationError(f"triggers settings: {exc}") from None
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Decision:
    """One contact-policy outcome for a scenario, a profile and a trigger event."""

    scenario: Scenario
    profile_id: str
    decision: str
    reason: str
    event: Event
    intent: MessageIntent | None = None
    """The message, for ``sent`` and ``deferred``."""
    until: datetime | None = None
    message_id: str | None = None
    allocation: Allocation = NO_EXPERIMENT
    """The experiment step's outcome: the variant (or control) the decision and its metrics name."""


class _EventView(Mapping[str, Any]):
    """An event as conditions see it (its JSON form), built lazily: most conditions read only
    ``event.properties``, which is JSON already, and the full dump costs more than matching a scenario."""

    _CHEAP = ("properties", "type", "source")

    def __init__(self, event: Event) -> None:
        self.event = event
        self._full: dict[str, Any] | None = None

    def full(self) -> dict[str, Any]:
        """The event's JSON form without empty fields (what an intent carries for its template)."""
        if self._full is None:
            self._full = self.event.model_dump(mode="json", exclude_none=True)
        return self._full

    def __getitem__(self, key: str) -> Any:
        if key in self._CHEAP:
            return getattr(self.event, key)
        return self.full()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._CHEAP or key in self.full()

    def __iter__(self) -> Iterator[str]:
        return iter(self.full())

    def __len__(self) -> int:
        return len(self.full())


@dataclass
class _Gate:
    """A scenario that fired for an event, on its way through the contact policy. The intent is built only
    for the messages that go (most gates of a busy stage end as no_consent, lost_priority or capped)."""

    scenario: Scenario
    profile: dict[str, Any]
    event: Event
    trigger: _EventView
    make: Callable[[Allocation], MessageIntent]
    profile_id: str = ""
    message_id: str = ""
    allocation: Allocation = NO_EXPERIMENT
    """Set by the experiment step: a variant may change the template, the channel and the variables."""
    assigned: Allocation | None = None
    """An arm assigned before the policy (a journey entry's, kept with its position): the experiment step
    takes it instead of assigning again."""

    def __post_init__(self) -> None:
        self.profile_id = str(self.event.profile_id)
        self.message_id = message_id_for(self.scenario.id, str(self.event.event_id), self.profile_id)

    @functools.cached_property
    def intent(self) -> MessageIntent:
        return self.make(self.allocation)

    @property
    def channel(self) -> str:
        """The channel the message goes to first: the variant's, else the scenario's."""
        variant = self.allocation.variant
        return variant.channel if variant is not None and variant.channel else self.scenario.channel


@dataclass(frozen=True, slots=True)
class PassingEvent:
    """A profile event of a type the stage does not act on (most of the stream: views, profile updates,
    receipts), decoded from the hub's own record without building the :class:`Event`: the stage needs only
    its profile (segments are re-checked for it) and its time (the partition's watermark)."""

    type: str
    profile_id: uuid.UUID
    occurred_at: datetime


def _event_type_header(record: Record) -> str | None:
    """The ``cdp.type`` header every producer of hub events adds (cdp_hub/bus/events.py)."""
    value = record.header("cdp.type")
    try:
        return value.decode() if value is not None else None
    except (UnicodeDecodeError, AttributeError):
        return None


class JourneyHook(Protocol):
    """What the stage asks of its journeys (cdp_hub/triggers/journeys.py, wired by pipeline/build.py)."""

    def wants(self, event_type: str) -> bool: ...

    async def on_events(self, stage: TriggerStage, events: Sequence[Event], out: StageOutput,
                        profiles: Mapping[uuid.UUID, Mapping[str, Any]]) -> None: ...

    async def advance_due(self, stage: TriggerStage, out: StageOutput, cutoff: datetime) -> int: ...

    async def follow_merges(self, moves: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None: ...


class TriggerStage(Stage[Event | PassingEvent]):
    """Matches profile events against the scenarios and turns what fires into message intents."""

    name = "triggers"

    def __init__(self, ctx: StageContext, *, profiles: ProfileRepository, timers: TimerRepository,
                 sendlog: MessageRepository, hotstate: HotState, scenarios: Sequence[Scenario],
                 segments: SegmentEngine, scheduler: BirthdayScheduler, consents: ConsentRepository,
                 events: EventRepository, options: TriggerOptions | None = None,
                 journeys: JourneyHook | None = None) -> None:
        super().__init__(ctx)
        self.journeys = journeys
        """The journeys (scenarios with steps); None when the deployment has none."""
        self.profiles = profiles
        self.timers = timers
        self.sendlog = sendlog
        self.hotstate = hotstate
        self.segments = segments
        self.scheduler = scheduler
        self.consents = consents
        self.events = events
        self.options = options or TriggerOptions()
        self.watermarks = Watermarks(ctx.clock, idle_seconds=self.options.idle_seconds)
        self._last_daily_check = -DAILY_CHECK_SECONDS
        self.scenarios = list(scenarios)
        _refuse_omitted(self.scenarios, self.options.omitted_types)
        self._by_id = {s.id: s for s in self.scenarios}
        self._index = ScenarioIndex([s for s in self.scenarios if s.steps is None])
        """By trigger type and equality condition, conditions compiled once (triggers/index.py)."""
        self._reads: dict[str, bool] = {}
        """Event types the stage acts on (``reads``), by type, filled as types are seen."""
        self._cancellers: dict[str, list[str]] = {}
        for s in self.scenarios:
            for etype in s.cancel_on:
                self._cancellers.setdefault(etype, []).append(s.id)
        self._last_timer_check = 0.0
        self._upcoming: list[datetime] = []
        """Fire times of the timers this process scheduled, a heap: the next one fires without waiting for
        the periodic check."""
        self._draining: dict[int, datetime] = {}
        """The partitions the batch being handled empties, each with when the broker said so (drained())."""
        self._backlog_read_at = -1e18  # monotonic; the resolver's backlog is read at most every check interval
        self._held_behind: int | None = None
        """Records the resolver had not committed when timers were last held for it; ``None``: not held."""
        self.decisions: list[Decision] = []
        """Every decision this stage made, when ``record_decisions`` is on (the scenario simulation)."""
        self.record_decisions = False

    def now(self) -> datetime:
        return self.ctx.clock()

    @property
    def topics(self) -> Sequence[str]:
        return [self.ctx.topics.profile_events]

    @property
    def cap_scopes(self) -> list[str]:
        """Every cap counter scope the policy uses (a merge moves each of them to the survivor)."""
        scopes = {"*"} | {s.id for s in self.scenarios if s.frequency_cap is not None}
        scopes |= {_marketing_scope(w) for w, _ in self.options.marketing_caps}
        scopes |= {_channel_scope(ch, w) for ch, caps in self.options.channel_caps.items() for w, _ in caps}
        return sorted(scopes)

    # -- batch -----------------------------------------------------------------------------------

    def decode(self, record: Record) -> Event | PassingEvent:
        passing = self._passing(record)
        if passing is not None:
            return passing
        # The resolver's records are the hub's own: built without validating them again (parse once).
        event = self.decode_trusted(record, EVENT_SCHEMA, trusted_event) or Event.model_validate_json(record.value)
        if event.profile_id is None:
            raise SchemaViolation("profile event without profile_id", field="profile_id",
                                  record_id=str(event.event_id), source=event.source)
        return event

    def hold_until_claims(self, events: Iterable[Event]) -> list[tuple[str, str, str]]:
        """The hold-until window claims (:func:`hold_until_claim`) the stage's scenarios would make for these
        events as triggers (``scenarios simulate --live-state`` copies them from the deployment's Redis)."""
        return [claim[:3] for e in events for s in self.scenarios if s.trigger.event == e.type
                and (claim := hold_until_claim(s, str(e.profile_id), _EventView(e))) is not None]

    def reads(self, event_type: str) -> bool:
        """Whether the stage acts on events of this type (a scenario's trigger or cancel rule, a journey, a
        merge); of the others it needs only the profile and the time (:class:`PassingEvent`)."""
        known = self._reads.get(event_type)
        if known is None:
            journeys = self.journeys
            known = self._reads[event_type] = (
                event_type == "profile.merged" or self._index.triggered_by(event_type)
                or event_type in self._cancellers or (journeys is not None and journeys.wants(event_type)))
        return known

    def _passing(self, record: Record) -> PassingEvent | None:
        """The record as a :class:`PassingEvent` when it is the hub's own (trusted) and of a type the stage
        does not read; ``None`` sends it through the full decode (which also judges anything malformed)."""
        event_type = _event_type_header(record)
        if event_type is None or self.reads(event_type):
            return None
        trust = self.ctx.trust
        if trust is None or not trust.trusts(record, EVENT_SCHEMA):
            return None
        try:
            raw = orjson.loads(record.value)
            occurred = datetime.fromisoformat(raw["occurred_at"])
            passing = PassingEvent(raw["type"], uuid.UUID(raw["profile_id"]),
                                   occurred.replace(tzinfo=UTC) if occurred.tzinfo is None
                                   else occurred.astimezone(UTC))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
        if passing.type != event_type:
            return None
        self._decoded["trusted"] += 1
        return passing

    async def process(self, batch: Sequence[Decoded[Event | PassingEvent]]) -> StageOutput:
        out = StageOutput()
        events = [item.value for item in batch]
        # Each event the stage acts on is judged against its partition's watermark where it stands in the
        # stream (the events before it, and itself), not against the batch's end: a batch of a backlog can span
        # more than a scenario's delay, and its first trigger is no later than it would be one batch a record.
        marks: dict[uuid.UUID, datetime] = {}
        for item in batch:
            latest = self.watermarks.observe(item.record.partition, item.value.occurred_at)
            if isinstance(item.value, Event):
                marks[item.value.event_id] = latest
        await self._decide(events, out, marks)
        return out

    def drained(self, partitions: Mapping[TopicPartition, float]) -> None:
        now = self.now()
        self._draining = {tp.partition: now - timedelta(seconds=age) for tp, age in partitions.items()}

    async def handle(self, records: Sequence[Record]) -> StageOutput:
        # Due timers and the daily scan ride on every batch, busy or not (and on idle polls).
        out = await super().handle(records)
        # The batch's events were each judged where they stand in their partition; the partitions it emptied
        # are now as far as the broker's answer: a timer fires within a batch of its time under a steady
        # trickle too, not only once the slowest partition's newest event time has passed it.
        for partition, at in self._draining.items():
            self.watermarks.drained(partition, at)
        self._draining = {}
        await self._maybe_fire_timers(out)
        await self._maybe_run_daily()
        return out

    async def idle(self) -> None:
        self.watermarks.caught_up()  # an empty poll: nothing is waiting in any partition
        out = StageOutput()
        await self._maybe_fire_timers(out)
        await self._maybe_run_daily()
        if out.messages:
            await self.ctx.publish(out.messages)
        for callback in out.on_durable:
            await callback()

    async def _decide(self, events: Sequence[Event | PassingEvent], out: StageOutput,
                      marks: Mapping[uuid.UUID, datetime]) -> None:
        merged = [e for e in events if isinstance(e, Event) and e.type == "profile.merged"]
        if merged:
            await self._follow_merges(merged)
        journeys = self.journeys
        relevant = [e for e in events if isinstance(e, Event) and (
            self._index.triggered_by(e.type) or e.type in self._cancellers
            or (journeys is not None and journeys.wants(e.type)))]
        profile_ids = list({e.profile_id for e in relevant if e.profile_id is not None})
        # Three independent reads at once (each is a round trip; a batch's latency is mostly round trips):
        # segment memberships, Golden Records and consent of the profiles that may get a message.
        memberships, golden, consent_states = await asyncio.gather(
            self.segments.on_profiles([e.profile_id for e in events if e.profile_id is not None], out),
            self.profiles.golden_of(profile_ids) if profile_ids else _nothing(),
            self.consents.current(profile_ids) if profile_ids else _nothing())
        if not relevant:
            return

        cancels: list[tuple[uuid.UUID, str, datetime]] = []
        timers: list[Timer] = []
        gates: list[_Gate] = []
        decisions: list[Decision] = []
        now = self.now()
        for event in relevant:
            assert event.profile_id is not None
            pid = str(event.profile_id)
            for sid in self._cancellers.get(event.type, ()):
                cancels.append((event.profile_id, sid, event.occurred_at))
            if not self._index.triggered_by(event.type):
                continue
            profile = {**golden.get(event.profile_id, {}),
                       "segments": sorted((memberships or {}).get(event.profile_id, ()))}
            trigger = _EventView(event)
            scope = {"event": trigger, "profile": profile}
            matched = self._index.matching(event.type, scope)
            if not matched:
                continue
            muted = self.options.mute or is_muted(event)
            # How late the event is: the later of its partition's watermark where the event stands (``marks``)
            # and when the hub received it, never after now; so a lone late event on a quiet partition is late
            # too, while a backlog being worked off after an outage is not.
            arrived = min(max(marks[event.event_id], event.received_at), now)
            for compiled in matched:
                scenario = compiled.scenario
                refused = self.refuse_trigger(scenario, compiled.max_age, event, pid, now, muted=muted)
                if refused is not None:
                    decisions.append(refused)
                    continue
                lateness = compiled.lateness or self.options.allowed_lateness
                # A send-time variant waits longer than the scenario, or until a time of day in the customer's
                # zone (the experiment step is pure: the same variant is found again when the timer fires).
                timed = _send_time_variant(self.options, scenario, pid)
                if scenario.send_at is None:
                    fire_at = event.occurred_at + (compiled.delay or timedelta(0))
                else:  # relative to a time on the event (a delivery slot, points expiring)
                    anchored = scenario.fire_time(event.occurred_at, trigger)
                    if anchored is None:
                        decisions.append(Decision(scenario, pid, "suppressed",
                                                  f"the event has no date-time {scenario.send_at.field}", event))
                        continue
                    fire_at = anchored
                fire_at = variant_send_time(timed, fire_at, profile)
                waits = scenario.delayed or timed is not None
                if (waits or compiled.lateness) and is_too_late(fire_at, arrived, lateness):
                    decisions.append(Decision(
                        scenario, pid, "too_late",
                        f"arrived after its send time {fire_at.isoformat()} plus the lateness of {_human(lateness)}",
                        event))
                    continue
                if waits:
                    key = scenario.hold_until.key_of(trigger) if scenario.hold_until else None
                    trigger_id = uuid.uuid5(TIMER_NAMESPACE, f"{scenario.id}:{event.event_id}")
                    timers.append(Timer(event.profile_id, trigger_id, scenario.id, fire_at, event.event_id,
                                        orjson.loads(event.model_dump_json()), event.occurred_at, key))
                    continue
                if event.type == CONSENT_REQUESTED and self.options.consent_links is None:
                    decisions.append(Decision(scenario, pid, "suppressed", "double opt-in links are not configured "
                                              "(consent_link_secret and public_url)", event))
                    continue
                gates.append(_Gate(scenario, profile, event, trigger,
                                   functools.partial(self._intent, scenario, event, profile, trigger)))

        # A cancelling event cancels the timers whose wait it falls in (event time; a cart updated after the
        # order starts anew), this batch's included; a cancel that arrives before its trigger is found in the
        # events table at fire time.
        async def schedule_and_cancel() -> list[CancelledTimer]:
            await self.timers.schedule(timers)
            return await self.timers.cancel_pending(cancels)

        # The timers (PostgreSQL) and the contact policy of the immediate messages (Redis) share nothing: they
        # go at once, so the batch waits for the longer of the two chains instead of their sum.
        stopped_timers, gated = await _together(schedule_and_cancel(), self._gate_all(gates, out, consent_states))
        for timer in timers:
            if len(self._upcoming) < MAX_UPCOMING:
                heapq.heappush(self._upcoming, timer.fire_at)
        for cancelled in stopped_timers:
            stopped = self._by_id.get(cancelled["scenario"])
            payload = cancelled["payload"] or {}
            if stopped is not None and "type" in payload:
                causes = sorted({e.type for e in relevant if e.type in stopped.cancel_on})
                decisions.append(Decision(stopped, str(cancelled["profile_id"]), "suppressed",
                                          "cancelled by " + ", ".join(causes), Event.model_validate(payload)))
        decisions.extend(gated)
        self._emit(decisions, out)
        if journeys is not None:
            await journeys.on_events(self, relevant, out, {
                pid: {**golden.get(pid, {}), "segments": sorted((memberships or {}).get(pid, ()))}
                for pid in profile_ids})

    async def gate_sends(self, sends: Sequence[tuple[Scenario, Event, dict[str, Any], Allocation | None]],
                         out: StageOutput) -> list[Decision]:
        """The contact policy for messages decided outside a trigger match (a journey's send steps):
        ``(scenario, trigger event, profile, arm)`` each, the arm assigned earlier (None: the experiment step
        assigns it); decisions emitted, sent intents appended to ``out``."""
        gates = []
        for scenario, event, profile, assigned in sends:
            view = _EventView(event)
            gates.append(_Gate(scenario, profile, event, view,
                               functools.partial(self._intent, scenario, event, profile, view), assigned=assigned))
        decisions = await self._gate_all(gates, out)
        self._emit(decisions, out)
        return decisions

    def emit_decisions(self, decisions: Sequence[Decision], out: StageOutput) -> None:
        """Decisions made outside the contact policy (a journey's muted or too-old trigger) as events."""
        self._emit(decisions, out)

    def remind_at(self, at: datetime) -> None:
        """Check timers again at ``at`` without waiting for the periodic check (a journey's wait)."""
        if len(self._upcoming) < MAX_UPCOMING:
            heapq.heappush(self._upcoming, at)

    def refuse_trigger(self, scenario: Scenario, max_age: timedelta | None, event: Event, pid: str,
                       now: datetime, *, muted: bool) -> Decision | None:
        """The decision that stops a trigger before any matching or policy: ``muted`` (a replay, a backfill, the
        setting), or ``too_late`` (older than the scenario's ``max_age``, or ``max_trigger_age`` for marketing);
        ``None`` when it may go on. Single-send scenarios and journey entries both ask here."""
        if muted:
            return Decision(scenario, pid, "muted", "triggers are muted (a replay or backfill)", event)
        if max_age is None and scenario.category == "marketing":
            max_age = self.options.max_trigger_age
        if max_age is not None and event.occurred_at < now - max_age:
            return Decision(scenario, pid, "too_late", f"the event is older than {_human(max_age)}", event)
        return None

    def _intent(self, scenario: Scenario, event: Event, profile: dict[str, Any],
                trigger: _EventView | None = None, allocation: Allocation = NO_EXPERIMENT) -> MessageIntent:
        """The intent of ``scenario`` for ``event`` (``trigger``: the event's JSON form, when the caller has
        it; ``allocation``: the profile's variant, which may change template, channel and variables). Built
        from validated parts without validating again: a busy stage builds several per event."""
        pid = str(event.profile_id)
        variables = scenario.vars
        variant = allocation.variant
        template, channel = scenario.template, scenario.channel
        if variant is not None:
            template, channel = variant.template or template, variant.channel or channel
            variables = {**variables, **variant.vars, "experiment": allocation.experiment.id
                         if allocation.experiment else None, "variant": variant.name}
        links = self.options.consent_links
        if event.type == CONSENT_REQUESTED and links is not None:
            props = event.properties
            variables = {**variables, "confirm_url": links.url(
                pid, str(props.get("channel", "email")), str(props.get("purpose", "marketing")), str(event.event_id),
                event.occurred_at)}
        locale = profile.get("locale")
        return MessageIntent.model_construct(
            message_id=message_id_for(scenario.id, str(event.event_id), pid),
            profile_id=pid,
            scenario=scenario.id,
            channel=channel,
            fallbacks=[f for f in scenario.fallbacks if f != channel],
            template=template,
            locale=locale if isinstance(locale, str) else None,
            trigger_event_id=str(event.event_id),
            trigger_event=trigger.full() if trigger is not None else event.model_dump(mode="json", exclude_none=True),
            vars=variables,
            category=scenario.category,
            created_at=datetime.now(UTC),
            expires_at=None,
        )

    # -- the contact policy -----------------------------------------------------------------------

    async def _gate_all(self, gates: list[_Gate], out: StageOutput,
                        consent_states: Mapping[uuid.UUID, Mapping[tuple[str, str], str]] | None = None,
                        ) -> list[Decision]:
        """The contact policy for a batch of intents, in order: consent, once per profile and hold-until
        windows, priority, caps, quiet hours. Once-per-profile is checked against the send log in PostgreSQL as
        well as in Redis: Redis closes the window before delivery has logged a message, PostgreSQL keeps the
        promise when Redis has lost its keys."""
        decisions: list[Decision] = []
        if not gates:
            return decisions

        def decide(gate: _Gate, decision: str, reason: str, until: datetime | None = None) -> None:
            goes = decision in ("sent", "deferred")
            decisions.append(Decision(gate.scenario, gate.profile_id, decision, reason, gate.event,
                                      gate.intent if goes else None, until, gate.message_id, gate.allocation))

        # The experiment step: the global holdout first (it receives no marketing whatever its consent), the
        # variant before consent (a channel variant needs consent on its own channel).
        passed: list[_Gate] = []
        for gate in gates:
            gate.allocation = gate.assigned or experiment_step(self.options, gate.scenario.experiment,
                                                               gate.profile_id, gate.scenario.category)
            if gate.allocation.outcome == "holdout":
                decide(gate, "holdout", GLOBAL_HOLDOUT)
            else:
                passed.append(gate)
        gates = passed

        # Consent: the consents table, with the Golden Record's consent map for profiles recorded before it
        # (read with the batch's other lookups when the caller has it).
        states = consent_states if consent_states is not None else await self.consents.current(
            list({uuid.UUID(g.profile_id) for g in gates}))
        passed = []
        for gate in gates:
            refusal = self._consent_refusal(gate, states.get(uuid.UUID(gate.profile_id), {}))
            if refusal is not None:
                decide(gate, "no_consent", refusal)
            else:
                passed.append(gate)
        gates = passed
        # Who may receive is in the experiment: the assignment is recorded (once per scenario, experiment and
        # profile: a deterministic event id), and the control group stops here, before it claims any counter.
        passed = []
        for gate in gates:
            # An arm assigned earlier was recorded then (a journey records it at entry).
            recorded = None if gate.assigned is not None else assignment_event(
                source=DECISION_SOURCE, scenario=gate.scenario.id, allocation=gate.allocation,
                profile_id=gate.profile_id, identities=gate.event.identities, now=self.now())
            if recorded is not None:
                out.messages.append(event_message(self.ctx.topics.events, recorded))
            if gate.allocation.outcome == "control":
                decide(gate, CONTROL, f"control group of experiment {_experiment_id(gate.allocation)}")
            else:
                passed.append(gate)
        gates = passed

        once = [(uuid.UUID(g.profile_id), g.scenario.id) for g in gates if g.scenario.once_per_profile]
        logged = {(str(pid), sid): ids for (pid, sid), ids in (await self.sendlog.logged_intents(once)).items()}
        passed = []
        for gate in gates:
            # The send log first: an intent it already rules out must not claim the Redis key either.
            if gate.scenario.once_per_profile and logged.get((gate.profile_id, gate.scenario.id),
                                                             set()) - {gate.message_id}:
                decide(gate, "duplicate", "once per profile: already sent")
            else:
                passed.append(gate)
        gates = passed
        # One round trip for the batch: a replay of the same intent passes, another intent does not.
        taken = await self.hotstate.claim_once(
            [(g.scenario.id, g.profile_id, g.message_id) for g in gates if g.scenario.once_per_profile])
        windows = []
        for g in gates:
            if g.message_id not in taken and (claim := hold_until_claim(g.scenario, g.profile_id, g.trigger)):
                sid, pid, key, window = claim
                windows.append((sid, pid, key, g.message_id, window))
        in_window = await self.hotstate.claim_dedupe(
            [(sid, pid, key, mid, window) for sid, pid, key, mid, window in windows])
        passed = []
        for gate in gates:
            if gate.message_id in taken:
                decide(gate, "duplicate", "once per profile: another message took it")
            elif gate.message_id in in_window:
                decide(gate, "duplicate", "hold-until window: the key already had its message")
            else:
                passed.append(gate)
        gates = passed

        marketing = [g for g in gates if g.scenario.category == "marketing"]
        best: dict[str, int] = {}
        for g in marketing:
            best[g.profile_id] = max(best.get(g.profile_id, g.scenario.priority), g.scenario.priority)
        lost = await self.hotstate.claim_priority(
            [(g.profile_id, g.message_id, g.scenario.priority) for g in marketing
             if g.scenario.priority >= best[g.profile_id]],
            int(self.options.priority_window.total_seconds()))
        lost |= {g.message_id for g in marketing if g.scenario.priority < best[g.profile_id]}

        postponed: list[tuple[MessageIntent, datetime]] = []
        contenders = [g for g in gates if g.message_id not in lost]
        caps = [self._caps(g.scenario, g.channel) for g in contenders]
        verdicts = await self.hotstate.within_caps_batch(
            [(c, g.profile_id, g.message_id) for (c, _), g in zip(caps, contenders, strict=True)],
            now=self.now().timestamp())
        full_caps = {g.message_id: f"cap reached: {labels[full]}" for (_, labels), g, full
                     in zip(caps, contenders, verdicts, strict=True) if full is not None}
        for gate in gates:
            scenario = gate.scenario
            if gate.message_id in lost:
                decide(gate, "lost_priority", "a higher-priority scenario fired for the profile within "
                       + _human(self.options.priority_window))
                continue
            full = full_caps.get(gate.message_id)
            if full is not None:
                self.ctx.metrics.messages.labels(gate.channel, "capped").inc()
                decide(gate, "capped", full)
                continue
            ends = None
            quiet = scenario.quiet_hours
            if quiet is not None and scenario.category == "marketing":
                ends = quiet_hours_end(self.now(), quiet, gate.profile.get("timezone"))
            intent = gate.intent
            if ends is not None and quiet is not None:
                postponed.append((intent, ends))
                decide(gate, "deferred", f"quiet hours {quiet.start}-{quiet.end} in the customer's time zone",
                       until=ends)
            else:
                out.messages.append(self._message(intent))
                decide(gate, "sent", "all checks passed")
        # Quiet hours: a durable timer per message, fired with the intent as it was gated.
        await self.timers.postpone([
            Timer(uuid.UUID(i.profile_id), uuid.uuid5(TIMER_NAMESPACE, f"quiet:{i.message_id}"), i.scenario, ends,
                  uuid.UUID(i.trigger_event_id) if i.trigger_event_id else None,
                  {"intent": i.model_dump(mode="json")})
            for i, ends in postponed])
        return decisions

    def _consent_refusal(self, gate: _Gate, states: Mapping[tuple[str, str], str]) -> str | None:
        """Why none of the intent's channels may take it; None when one may."""
        scenario = gate.scenario
        return channels_refusal(self.options, gate.profile, states,
                                dict.fromkeys((gate.channel, *scenario.fallbacks)), scenario.category)

    def _caps(self, scenario: Scenario, channel: str) -> tuple[list[tuple[str, int, float]], dict[str, str]]:
        """The frequency caps of a scenario's message on ``channel`` (see :func:`message_caps`)."""
        return message_caps(self.options, own=scenario.frequency_cap, own_scope=scenario.id,
                            own_name="this scenario", category=scenario.category, channel=channel)

    def _emit(self, decisions: Sequence[Decision], out: StageOutput) -> None:
        """Each decision as a ``message.decided`` event (deterministic id) and a metric."""
        if self.record_decisions:
            self.decisions.extend(decisions)
        topic = self.ctx.topics.events
        now = self.now()
        for d in decisions:
            self.ctx.metrics.trigger_decisions.labels(d.scenario.id, d.decision).inc()
            channel = d.intent.channel if d.intent is not None else d.scenario.channel
            variant = d.allocation.variant_name
            if variant is None and d.intent is not None and isinstance(d.intent.vars.get("variant"), str):
                variant = d.intent.vars["variant"]  # a message postponed by quiet hours names its variant
            if d.decision == "sent":
                self.ctx.metrics.scenario_sends.labels(d.scenario.id, variant or NO_VARIANT, channel).inc()
            elif d.decision == CONTROL:
                self.ctx.metrics.experiment_controls.labels(d.scenario.id).inc()
            trigger_id = str(d.event.event_id)
            properties: dict[str, Any] = {
                "scenario": d.scenario.id, "decision": d.decision, "reason": d.reason[:500],
                "channel": channel, "category": d.scenario.category,
                "trigger_event_id": trigger_id, "trigger_type": d.event.type,
            }
            if variant is not None and d.scenario.experiment is not None:
                properties["experiment"] = d.scenario.experiment.id
                properties["variant"] = variant
            message_id = d.message_id or (d.intent.message_id if d.intent is not None else None)
            if message_id is not None:
                properties["message_id"] = message_id
            if d.until is not None:
                properties["until"] = d.until.isoformat()
            # Built from validated parts (the trigger's identities, a fixed set of properties) without
            # validating again: a busy stage decides several times per event.
            record_id = f"{d.scenario.id}:{trigger_id}:{d.profile_id}:{d.decision}"
            event = Event.model_construct(
                event_id=deterministic_event_id(DECISION_SOURCE, record_id, DECIDED), type=DECIDED,
                source=DECISION_SOURCE, source_record_id=record_id, occurred_at=now, received_at=now,
                identities=list(d.event.identities), traits=Traits(), properties=properties, context=Context(),
                profile_id=uuid.UUID(d.profile_id))
            out.messages.append(event_message(topic, event))

    def _message(self, intent: MessageIntent) -> OutgoingMessage:
        return OutgoingMessage(self.ctx.topics.messages, intent.model_dump_json().encode(),
                               intent.profile_id.encode(), (("cdp.scenario", intent.scenario.encode()),))

    async def _follow_merges(self, merged: list[Event]) -> None:
        """Pending timers, cap counters and profile-keyed hold-until windows of merged profiles move to the
        surviving profile (consent follows in the resolver, which records it). A window keyed by an event
        value (a cart id) stays with the merged-away profile: the survivor may get one more such message."""
        pairs = [(uuid.UUID(p), uuid.UUID(e.properties["surviving_profile_id"]))
                 for e in merged for p in e.properties.get("merged_profile_ids", [])]
        await self.timers.move_pending(pairs)
        await self.hotstate.move_caps([(str(a), str(b)) for a, b in pairs], self.cap_scopes)
        profile_keyed = [s.id for s in self.scenarios if s.hold_until is not None and s.hold_until.key == "profile"]
        await self.hotstate.move_dedupe([(str(a), str(b)) for a, b in pairs], profile_keyed)
        if self.journeys is not None:
            await self.journeys.follow_merges(pairs)

    # -- daily jobs ----------------------------------------------------------------------------------

    async def _maybe_run_daily(self) -> None:
        """The birthday scan, when due (PostgreSQL remembers the last run); a failure waits for the next check
        rather than holding up the stream: the scan is idempotent and runs again at the next interval."""
        mono = time.monotonic()
        if not self.options.daily_jobs or mono - self._last_daily_check < DAILY_CHECK_SECONDS:
            return
        self._last_daily_check = mono
        try:
            await self.scheduler.run_if_due()
        except Exception:
            self.ctx.metrics.stage_errors.labels(self.name).inc()
            log.exception("daily birthday scan failed; it runs again at the next check")

    # -- durable timers ----------------------------------------------------------------------------

    async def _maybe_fire_timers(self, out: StageOutput) -> None:
        """Fire due timers: at once when one this process scheduled has come due (an in-memory heap of fire
        times, so a timer goes within a batch of its time), else at most every TIMER_CHECK_SECONDS (timers of
        other processes, of a previous run, quiet-hours postponements)."""
        mono = time.monotonic()
        cutoff = self.watermarks.watermark() - self.options.allowed_lateness
        due_here = bool(self._upcoming) and self._upcoming[0] <= cutoff
        if not due_here and mono - self._last_timer_check < TIMER_CHECK_SECONDS:
            return
        if await self._resolver_behind(mono):
            return
        await self.fire_due_timers(out)
        # Only a check that worked counts: one that failed (PostgreSQL down) is tried again by the runner's
        # retry at once, so the stage stays paused until the timers can be read, not "resumed" in between.
        self._last_timer_check = mono
        while self._upcoming and self._upcoming[0] <= cutoff:
            heapq.heappop(self._upcoming)

    async def _resolver_behind(self, mono: float) -> bool:
        """Whether due timers wait for the resolver: more than ``backlog_holds_timers`` records of ``cdp.events``
        are not committed by this deployment's resolver group (read again at most every
        ``backlog_check_seconds``). The stage's own partitions are drained then (their watermark is the clock),
        yet the events that may cancel a timer, an order placed during an outage, are still in that backlog.
        A resolver that has committed nothing holds nothing; a read that fails or takes longer than
        ``BACKLOG_READ_SECONDS`` leaves the hold as it was."""
        limit, read = self.options.backlog_holds_timers, self.ctx.group_lag
        if limit <= 0 or read is None:
            return False
        if mono - self._backlog_read_at < self.options.backlog_check_seconds:
            return self._held_behind is not None
        self._backlog_read_at = mono
        try:
            async with asyncio.timeout(BACKLOG_READ_SECONDS):
                lag = await read(self.ctx.group_of("resolver"), self.ctx.topics.events)
        except Exception:  # a guard, not a dependency (the timers' own reads report an outage): as it was
            log.debug("reading the resolver's backlog failed", exc_info=True)
            return self._held_behind is not None
        behind = sum(lag.values()) if lag else 0
        if behind > limit:
            if self._held_behind is None:
                log.warning("due timers are held: the resolver has %d records of %s not committed (more than "
                            "resolver_backlog_holds_timers = %d); they fire once it has caught up", behind,
                            self.ctx.topics.events, limit)
            self._held_behind = behind
        elif self._held_behind is not None:
            log.info("the resolver has caught up (%d records behind): due timers fire again", behind)
            self._held_behind = None
        self.ctx.metrics.timers_held.set(0 if self._held_behind is None else 1)
        return self._held_behind is not None

    async def fire_due_timers(self, out: StageOutput, *, limit: int = 500) -> int:
        """Turn due timers into intents (appended to ``out``); they are marked fired once published.

        A delayed trigger is due when the watermark has passed its fire time plus the allowed lateness; it
        is then superseded (a later trigger with its hold-until key came before its fire time), cancelled (a
        stored cancelling event happened during its wait, whatever order they arrived in) or gated. A
        quiet-hours postponement is due at its time on the clock."""
        cutoff = self.watermarks.watermark() - self.options.allowed_lateness
        if self.journeys is not None:
            await self.journeys.advance_due(self, out, cutoff)
        rows = await self.timers.due(self.now(), cutoff, limit)
        if not rows:
            return 0
        fired: list[tuple[uuid.UUID, uuid.UUID]] = []
        superseded: list[tuple[uuid.UUID, uuid.UUID]] = []
        checks: list[tuple[uuid.UUID, Sequence[str], datetime, datetime]] = []
        candidates: list[tuple[Scenario, Event, tuple[uuid.UUID, uuid.UUID]]] = []
        for row in rows:
            ident = (row["profile_id"], row["trigger_id"])
            scenario = self._by_id.get(row["scenario"])
            payload = row["payload"] or {}
            if scenario is None:
                fired.append(ident)
                continue
            if "intent" in payload:  # postponed by quiet hours: already gated
                intent = MessageIntent.model_validate(payload["intent"])
                out.messages.append(self._message(intent))
                fired.append(ident)
                if intent.trigger_event:
                    self._emit([Decision(scenario, intent.profile_id, "sent", "quiet hours ended",
                                         Event.model_validate(intent.trigger_event), intent)], out)
                continue
            if row["superseded"]:
                superseded.append(ident)
                continue
            event = Event.model_validate(payload)
            event.profile_id = row["profile_id"]  # the timer may have moved to a surviving profile
            if scenario.cancel_on:
                checks.append((row["profile_id"], scenario.cancel_on, row["occurred_at"] or event.occurred_at,
                               row["fire_at"]))
            candidates.append((scenario, event, ident))
        # Two independent reads at once (each is a round trip).
        cancelled_at, golden = await asyncio.gather(
            self.events.any_in_window(checks),
            self.profiles.golden_of(list({ident[0] for _, _, ident in candidates})) if candidates else _nothing())
        gates: list[_Gate] = []
        cancelled: list[tuple[uuid.UUID, uuid.UUID]] = []
        decisions: list[Decision] = []
        check_index = 0
        for scenario, event, ident in candidates:
            if scenario.cancel_on:
                hit = check_index in cancelled_at
                check_index += 1
                if hit:
                    cancelled.append(ident)
                    decisions.append(Decision(scenario, str(ident[0]), "suppressed",
                                              "cancelled by " + ", ".join(scenario.cancel_on) + " during the wait",
                                              event))
                    continue
            fired.append(ident)
            profile = golden.get(ident[0], {})
            view = _EventView(event)
            gates.append(_Gate(scenario, profile, event, view,
                               functools.partial(self._intent, scenario, event, profile, view)))
        decisions.extend(await self._gate_all(gates, out))
        self._emit(decisions, out)
        await self.timers.settle(superseded, "superseded")
        await self.timers.settle(cancelled, "cancelled")

        async def mark_fired() -> None:
            await self.timers.mark_fired(fired)

        out.on_durable.append(mark_fired)
        return len(fired)


async def _nothing() -> dict[uuid.UUID, Any]:
    return {}


A = TypeVar("A")
B = TypeVar("B")


async def _together(first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Run two independent chains of round trips at once. When one fails the other is cancelled (so a retried
    batch never races a leftover of its previous try), and the failure is raised as itself, not inside an
    ExceptionGroup: the runner tells an outage (PostgreSQL, Redis down) from a bug by the exception's type."""
    try:
        async with asyncio.TaskGroup() as group:
            a = group.create_task(first)
            b = group.create_task(second)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0]  # noqa: B904 - not "from": its own __cause__ names the dependency
    return a.result(), b.result()


def experiment_step(options: TriggerOptions, experiment: Experiment | None, profile_id: str,
                    purpose: str) -> Allocation:
    """The experiment step of the contact policy, shared by scenarios and campaigns: the global holdout
    (marketing only) and the profile's variant or control group (triggers/experiments.py). ``profile_id`` is
    the surviving profile's id, which keeps its assignment through merges."""
    return allocate(experiment, profile_id, purpose=purpose, holdout_share=options.holdout_share,
                    holdout_salt=options.holdout_salt)


def _send_time_variant(options: TriggerOptions, scenario: Scenario, profile_id: str) -> Variant | None:
    """The profile's variant when it is a send-time variant (``delay`` or ``at``); None for the others, the
    control group and the held out (they are decided at the scenario's own time)."""
    if scenario.experiment is None:
        return None
    variant = experiment_step(options, scenario.experiment, profile_id, scenario.category).variant
    return variant if variant is not None and (variant.delay or variant.at is not None) else None


def variant_send_time(variant: Variant | None, earliest: datetime, profile: Mapping[str, Any]) -> datetime:
    """When a variant's message goes, ``earliest`` being when the others' go (a scenario's send time, a
    campaign's launch): its ``delay`` later, then the next ``at`` at or after that on the clock of the customer's
    zone (the profile's ``timezone`` when it is a known zone, else the variant's ``timezone``, else the default
    zone, as for quiet hours). Shared by scenarios and campaigns."""
    if variant is None:
        return earliest
    due = earliest + parse_duration(variant.delay) if variant.delay else earliest
    if variant.at is not None:
        zone = customer_zone(profile.get("timezone"), variant.timezone or DEFAULT_TIMEZONE)
        due = next_local_time(due, parse_time_of_day(variant.at), zone)
    return due


def _experiment_id(allocation: Allocation) -> str:
    return allocation.experiment.id if allocation.experiment is not None else ""


def channels_refusal(options: TriggerOptions, profile: Mapping[str, Any], states: Mapping[tuple[str, str], str],
                     channels: Iterable[str], purpose: str) -> str | None:
    """Why none of ``channels`` may take a message of ``purpose`` to the profile (its golden record's consent
    map plus its recorded ``states``); None when one may, or when a channel's kind is unknown here (delivery
    decides for it). The one judgement scenarios and campaigns share."""
    kind_of = options.channel_kind
    if kind_of is None:
        return None
    merged: dict[tuple[str, str], str] = {}
    golden = profile.get("consent")
    if isinstance(golden, dict):
        merged.update({(str(ch), "marketing"): str(v) for ch, v in golden.items() if isinstance(v, str)})
    merged.update(states)
    reasons = []
    for name in channels:
        kind = kind_of(name)
        if kind is None:
            return None
        refusal = consent_refusal(merged, kind, purpose, options.consent_policy)
        if refusal is None:
            return None
        reasons.append(refusal)
    return "; ".join(reasons)


def message_caps(options: TriggerOptions, *, own: FrequencyCap | None, own_scope: str, own_name: str,
                 category: str, channel: str) -> tuple[list[tuple[str, int, float]], dict[str, str]]:
    """The frequency caps of one message, ``(scope, limit, window seconds)``, and a label of each: its own cap
    (``own_scope`` for a per-scenario or per-campaign cap, ``*`` for the profile), the deployment's per channel
    and across all marketing. Marketing only; scenarios and campaigns count on the same counters."""
    caps: list[tuple[str, int, float]] = []
    labels: dict[str, str] = {}
    if category != "marketing":
        return caps, labels
    if own is not None:
        scope = own_scope if own.scope == "scenario" else "*"
        caps.append((scope, own.max, own.window.total_seconds()))
        labels[scope] = f"{own.max} per {own.per} ({own_name if own.scope == 'scenario' else 'profile'})"
    for window, limit in options.marketing_caps:
        scope = _marketing_scope(window)
        caps.append((scope, limit, window.total_seconds()))
        labels[scope] = f"{limit} marketing messages per {_human(window)}"
    for window, limit in options.channel_caps.get(channel, ()):
        scope = _channel_scope(channel, window)
        caps.append((scope, limit, window.total_seconds()))
        labels[scope] = f"{limit} {channel} messages per {_human(window)}"
    return caps, labels


def _marketing_scope(window: timedelta) -> str:
    return f"marketing:{int(window.total_seconds())}"


def _channel_scope(channel: str, window: timedelta) -> str:
    return f"channel:{channel}:{int(window.total_seconds())}"


def hold_until_claim(scenario: Scenario, profile_id: str,
                     trigger: Mapping[str, Any]) -> tuple[str, str, str, int] | None:
    """``(scenario, profile, key, window seconds)`` of the hold-until window claim a message of ``scenario``
    triggered by ``trigger`` (the event as conditions see it) makes; None without a window or a key. The key is
    always the profile's own (two customers' carts may share an id in different shops)."""
    hold = scenario.hold_until
    window = hold.window_td if hold is not None else None
    if hold is None or window is None:
        return None
    key = hold.key_of(trigger)
    return None if key is None else (scenario.id, profile_id, key, int(window.total_seconds()))


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
