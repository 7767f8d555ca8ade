"""The triggers stage: profile events -> scenario decisions -> message intents on ``cdp.messages``.

    [cdp.profile-events] ─▶ match scenarios (trigger event, conditions)
                              ├─ delay?        ─▶ scheduled_triggers (durable timer, PostgreSQL)
                              ├─ cancel_on     ─▶ pending timers of the profile cancelled
                              ├─ once / caps   ─▶ Redis sorted sets of message ids (idempotent)
                              ├─ quiet hours   ─▶ postponed to the end of the quiet period (durable timer)
                              └─ otherwise     ─▶ MessageIntent ─▶ [cdp.messages]
    due timers (checked every second, busy or idle) ─▶ MessageIntent ─▶ [cdp.messages] ─▶ marked fired
    segments: trait-only segments re-checked for the batch's profiles (SegmentEngine.on_profiles) ─▶
              segment.entered/exited on [cdp.events]; conditions see ``profile.segments``
    daily jobs (checked every minute, run at most once per SCAN_INTERVAL) ─▶ profile.birthday on [cdp.events]

Idempotency: intents have deterministic ids (scenario + trigger event + profile), timers deterministic ids
(scenario + event), cap counters are sets of message ids; a replayed batch yields the same intents, which
the delivery stage's send log turns into no-ops. Consent is enforced at delivery, with the profile as it is
at send time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.errors import SchemaViolation
from cdp_hub.hotstate import HotState
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput
from cdp_hub.schema.events import Event
from cdp_hub.schema.messages import MessageIntent, message_id_for
from cdp_hub.segments.daily import BirthdayScheduler
from cdp_hub.segments.engine import SegmentEngine
from cdp_hub.store import MessageRepository, ProfileRepository, TimerRepository
from cdp_hub.store.timers import Timer
from cdp_hub.triggers.scenario import QuietHours, Scenario

__all__ = ["TriggerStage", "quiet_hours_end"]

TIMER_NAMESPACE = uuid.UUID("5c0b7f3e-1d2a-5e4f-8a6b-7c8d9e0f1a2b")
TIMER_CHECK_SECONDS = 1.0
DAILY_CHECK_SECONDS = 60.0

log = logging.getLogger(__name__)


def quiet_hours_end(now: datetime, quiet: QuietHours, timezone: str | None) -> datetime | None:
    """When ``now`` falls in the quiet period of the customer's zone, the UTC time it ends; else None."""
    try:
        tz = ZoneInfo(timezone or quiet.default_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo(quiet.default_timezone)
    local = now.astimezone(tz)
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


class TriggerStage(Stage[Event]):
    """Matches profile events against the scenarios and turns what fires into message intents."""

    name = "triggers"

    def __init__(self, ctx: StageContext, *, profiles: ProfileRepository, timers: TimerRepository,
                 sendlog: MessageRepository, hotstate: HotState, scenarios: Sequence[Scenario],
                 segments: SegmentEngine, scheduler: BirthdayScheduler) -> None:
        super().__init__(ctx)
        self.profiles = profiles
        self.timers = timers
        self.sendlog = sendlog
        self.hotstate = hotstate
        self.segments = segments
        self.scheduler = scheduler
        self._last_daily_check = -DAILY_CHECK_SECONDS
        self.scenarios = list(scenarios)
        self._by_trigger: dict[str, list[Scenario]] = {}
        self._cancellers: dict[str, list[str]] = {}
        for s in self.scenarios:
            self._by_trigger.setdefault(s.trigger.event, []).append(s)
            for etype in s.cancel_on:
                self._cancellers.setdefault(etype, []).append(s.id)
        self._last_timer_check = 0.0

    def now(self) -> datetime:
        return self.ctx.clock()

    @property
    def topics(self) -> Sequence[str]:
        return [self.ctx.topics.profile_events]

    # -- batch -----------------------------------------------------------------------------------

    def decode(self, record: Record) -> Event:
        event = Event.model_validate_json(record.value)
        if event.profile_id is None:
            raise SchemaViolation("profile event without profile_id", field="profile_id",
                                  record_id=str(event.event_id), source=event.source)
        return event

    async def process(self, batch: Sequence[Decoded[Event]]) -> StageOutput:
        out = StageOutput()
        events = [item.value for item in batch]
        memberships = await self.segments.on_profiles(
            [e.profile_id for e in events if e.profile_id is not None], out)
        await self._decide(events, out, memberships)
        return out

    async def handle(self, records: Sequence[Record]) -> StageOutput:
        # Due timers and the daily scan ride on every batch, busy or not (and on idle polls).
        out = await super().handle(records)
        await self._maybe_fire_timers(out)
        await self._maybe_run_daily()
        return out

    async def idle(self) -> None:
        out = StageOutput()
        await self._maybe_fire_timers(out)
        await self._maybe_run_daily()
        if out.messages:
            await self.ctx.publish(out.messages)
        for callback in out.on_durable:
            await callback()

    async def _decide(self, events: list[Event], out: StageOutput,
                      memberships: dict[uuid.UUID, set[str]] | None = None) -> None:
        merged = [e for e in events if e.type == "profile.merged"]
        if merged:
            await self._follow_merges(merged)
        relevant = [e for e in events if e.type in self._by_trigger or e.type in self._cancellers]
        if not relevant:
            return
        profile_ids = list({e.profile_id for e in relevant if e.profile_id is not None})
        golden = await self.profiles.golden_of(profile_ids)

        cancels: list[tuple[uuid.UUID, str, datetime]] = []
        timers: list[Timer] = []
        gates: list[tuple[Scenario, MessageIntent, dict[str, Any]]] = []
        now = self.now()
        for event in relevant:
            assert event.profile_id is not None
            for sid in self._cancellers.get(event.type, ()):
                cancels.append((event.profile_id, sid, event.occurred_at))
            profile = {**golden.get(event.profile_id, {}),
                       "segments": sorted((memberships or {}).get(event.profile_id, ()))}
            scope = {"event": event.model_dump(mode="json"), "profile": profile}
            for scenario in self._by_trigger.get(event.type, ()):
                if not scenario.matches(scope):
                    continue
                if scenario.max_age_td is not None and event.occurred_at < now - scenario.max_age_td:
                    continue  # history (a backfill, a replay of old data) starts no conversations
                fire_at = event.occurred_at + scenario.delay_td if scenario.delay_td else None
                if fire_at is not None and fire_at > now:
                    trigger_id = uuid.uuid5(TIMER_NAMESPACE, f"{scenario.id}:{event.event_id}")
                    timers.append(Timer(event.profile_id, trigger_id, scenario.id, fire_at, event.event_id,
                                        orjson.loads(event.model_dump_json())))
                    continue
                gates.append((scenario, self._intent(scenario, event, profile), profile))
        await self._gate_all(gates, out)

        # A cancelling event cancels timers started before it (a cart updated after the order starts anew).
        await self.timers.cancel_pending(cancels)
        await self.timers.schedule(timers)

    def _intent(self, scenario: Scenario, event: Event, profile: dict[str, Any]) -> MessageIntent:
        pid = str(event.profile_id)
        return MessageIntent(
            message_id=message_id_for(scenario.id, str(event.event_id), pid),
            profile_id=pid,
            scenario=scenario.id,
            channel=scenario.channel,
            fallbacks=scenario.fallbacks,
            template=scenario.template,
            locale=profile.get("locale"),
            trigger_event_id=str(event.event_id),
            trigger_event=event.model_dump(mode="json", exclude_none=True),
            vars=scenario.vars,
            category=scenario.category,
        )

    async def _gate_all(self, gates: list[tuple[Scenario, MessageIntent, dict[str, Any]]],
                        out: StageOutput) -> None:
        """Gate a batch of intents. Once-per-profile is checked against the send log in PostgreSQL as well
        as in Redis: Redis closes the window before delivery has logged a message, PostgreSQL keeps the
        promise when Redis has lost its keys."""
        once = [(uuid.UUID(i.profile_id), s.id) for s, i, _ in gates if s.once_per_profile]
        logged = {(str(pid), sid): ids for (pid, sid), ids in (await self.sendlog.logged_intents(once)).items()}
        # The send log first: an intent it already rules out must not claim the Redis key either.
        gates = [(s, i, p) for s, i, p in gates
                 if not (s.once_per_profile and logged.get((i.profile_id, s.id), set()) - {i.message_id})]
        # One round trip for the batch: a replay of the same intent passes, another intent does not.
        taken = await self.hotstate.claim_once(
            [(s.id, i.profile_id, i.message_id) for s, i, _ in gates if s.once_per_profile])
        postponed: list[tuple[MessageIntent, datetime]] = []
        for scenario, intent, profile in gates:
            if intent.message_id in taken:
                continue
            if not await self._within_cap(scenario, intent):
                continue
            ends = None
            if scenario.quiet_hours is not None and scenario.category == "marketing":
                ends = quiet_hours_end(self.now(), scenario.quiet_hours, profile.get("timezone"))
            if ends is not None:
                postponed.append((intent, ends))
            else:
                out.messages.append(self._message(intent))
        # Quiet hours: a durable timer per message, fired with the intent as it was gated.
        await self.timers.postpone([
            Timer(uuid.UUID(i.profile_id), uuid.uuid5(TIMER_NAMESPACE, f"quiet:{i.message_id}"), i.scenario, ends,
                  uuid.UUID(i.trigger_event_id) if i.trigger_event_id else None,
                  {"intent": i.model_dump(mode="json")})
            for i, ends in postponed])

    async def _within_cap(self, scenario: Scenario, intent: MessageIntent) -> bool:
        """Frequency cap: a sorted set of message ids per profile (a replayed message counts once)."""
        if scenario.frequency_cap is None or scenario.category != "marketing":
            return True
        cap = scenario.frequency_cap
        if await self.hotstate.within_cap(scenario.id if cap.scope == "scenario" else "*", intent.profile_id,
                                              intent.message_id, limit=cap.max, window=cap.window.total_seconds(),
                                              now=self.now().timestamp()):
            return True
        self.ctx.metrics.messages.labels(scenario.channel, "capped").inc()
        return False

    def _message(self, intent: MessageIntent) -> OutgoingMessage:
        return OutgoingMessage(self.ctx.topics.messages, intent.model_dump_json().encode(),
                               intent.profile_id.encode(), (("cdp.scenario", intent.scenario.encode()),))

    async def _follow_merges(self, merged: list[Event]) -> None:
        """Pending timers of merged profiles move to the surviving profile."""
        pairs = [(uuid.UUID(p), uuid.UUID(e.properties["surviving_profile_id"]))
                 for e in merged for p in e.properties.get("merged_profile_ids", [])]
        await self.timers.move_pending(pairs)

    # -- daily jobs ----------------------------------------------------------------------------------

    async def _maybe_run_daily(self) -> None:
        """The birthday scan, when due (PostgreSQL remembers the last run); a failure waits for the next check
        rather than holding up the stream: the scan is idempotent and runs again at the next interval."""
        mono = time.monotonic()
        if mono - self._last_daily_check < DAILY_CHECK_SECONDS:
            return
        self._last_daily_check = mono
        try:
            await self.scheduler.run_if_due()
        except Exception:
            self.ctx.metrics.stage_errors.labels(self.name).inc()
            log.exception("daily birthday scan failed; it runs again at the next check")

    # -- durable timers ----------------------------------------------------------------------------

    async def _maybe_fire_timers(self, out: StageOutput) -> None:
        mono = time.monotonic()
        if mono - self._last_timer_check < TIMER_CHECK_SECONDS:
            return
        self._last_timer_check = mono
        await self.fire_due_timers(out)

    async def fire_due_timers(self, out: StageOutput, *, limit: int = 500) -> int:
        """Turn due timers into intents (appended to ``out``); they are marked fired once published."""
        rows = await self.timers.due(self.now(), limit)
        if not rows:
            return 0
        by_id = {s.id: s for s in self.scenarios}
        fired: list[tuple[uuid.UUID, uuid.UUID]] = []
        profile_ids = list({r["profile_id"] for r in rows})
        golden = await self.profiles.golden_of(profile_ids)
        gates: list[tuple[Scenario, MessageIntent, dict[str, Any]]] = []
        for row in rows:
            fired.append((row["profile_id"], row["trigger_id"]))
            scenario = by_id.get(row["scenario"])
            payload = row["payload"] or {}
            if scenario is None:
                continue
            if "intent" in payload:  # postponed by quiet hours: already gated
                out.messages.append(self._message(MessageIntent.model_validate(payload["intent"])))
                continue
            event = Event.model_validate(payload)
            event.profile_id = row["profile_id"]  # the timer may have moved to a surviving profile
            profile = golden.get(row["profile_id"], {})
            gates.append((scenario, self._intent(scenario, event, profile), profile))
        await self._gate_all(gates, out)

        async def mark_fired() -> None:
            await self.timers.mark_fired(fired)

        out.on_durable.append(mark_fired)
        return len(fired)
