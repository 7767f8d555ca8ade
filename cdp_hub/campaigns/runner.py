"""Campaign runs: launch (audience snapshot), send in chunks at the rate limit, pause/resume/cancel, status.

    launch ─▶ CampaignRepository.launch: the run row + INSERT ... SELECT the audience (one transaction)
    execute(run) ─▶ claim the run's lease ─▶ loop:
        heartbeat (answers the run's status: paused or cancelled ─▶ stop here, within one chunk), at the same
        time as the read of this chunk finishes: pending profiles (profile-id order) with their golden
        records' locale, time zone and consent map, then consent statements (read ahead: the next chunk's
        read starts as soon as this one is in hand)
        the contact policy, per chunk (the triggers stage's rules and counters):
            profile gone (merged since launch) ─▶ skipped: suppressed
            the global holdout (marketing; holdout_share) ─▶ skipped: holdout (reason global_holdout)
            consent on one of the audience channels (consent_policy; schema/consent.py) ─▶ skipped: no_consent
            the experiment: experiment.assigned recorded; control group ─▶ skipped: control
            a send-time variant before its time (launch + delay, then the next ``at`` in the customer's zone)
                ─▶ deferred: the row waits (not_before)
            caps: the campaign's frequency_cap, marketing_caps, channel_caps (hot state: one Lua script per
            500 profiles, while the intents are built) ─▶ skipped: capped
            quiet hours in the customer's zone ─▶ deferred: the row waits (not_before) and is sent after
            otherwise ─▶ a message intent on [cdp.messages]
        every skip and deferral ─▶ a message.decided event on [cdp.events] with its reason (a sent one is its
        intent, and the delivery stage's receipts); every outcome ─▶ cdp_trigger_decisions{scenario,decision};
        the records are built as dicts (campaigns/records.py: byte for byte the models' JSON)
        wait for the rate limit ─▶ publish (durable), then record the chunk's rows, while the next is planned
    no pending row left ─▶ done

Exactly once: a message id is deterministic per (campaign run, profile[, variant]): ``message_id_for(
"campaign:<id>", run_id, profile_id, variant)``. A sender that dies after publishing a chunk and before
deciding its rows publishes that chunk again when the run resumes; the intents are the same messages and the
delivery stage's send log sends each once. Cap counters are sets of message ids, so a repeat counts once.

Experiments: the variant is a pure function of the experiment id and the profile id (the triggers stage's
:func:`~cdp_hub.triggers.stage.experiment_step`), so a resumed run assigns everybody the same and the message
id needs no variant in it; the assignment itself is the ``experiment.assigned`` event (once per campaign,
experiment and profile), and a control group's rows are decided ``control`` without an intent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_message
from cdp_hub.campaigns.model import Campaign
from cdp_hub.campaigns.records import SOURCE, ChunkRecords, Outcome
from cdp_hub.errors import ConfigurationError
from cdp_hub.hotstate import HotState
from cdp_hub.pipeline.stage import StageContext
from cdp_hub.schema.events import Identity
from cdp_hub.segments.engine import IDENTITY_PRIORITY
from cdp_hub.store import ConsentRepository, ProfileRepository
from cdp_hub.store.campaigns import CampaignRepository, CampaignRun, Launched
from cdp_hub.store.messages import MessageRepository
from cdp_hub.triggers.experiments import (
    CONTROL,
    GLOBAL_HOLDOUT,
    NO_VARIANT,
    Allocation,
    Variant,
    assignment_event,
)
from cdp_hub.triggers.stage import (
    TriggerOptions,
    channels_refusal,
    experiment_step,
    message_caps,
    quiet_hours_end,
    variant_send_time,
)

__all__ = ["SOURCE", "CampaignRunner", "RunResult", "RunStatus", "run_id_for_slot"]

log = logging.getLogger(__name__)

RUN_NAMESPACE = uuid.UUID("3f1d2c4b-6a5e-5f70-8b9c-0d1e2f3a4b5c")
CHUNK_SECONDS = 0.5
"""A chunk holds about this much sending at the rate limit: pause and cancel take effect within it."""
MAX_CHUNK = 2000
IN_FLIGHT = 1
"""Chunks being published and recorded while the next is planned (each durable on the bus before it is
recorded). One: a crash sends at most one chunk again (tests/test_campaigns_crash.py holds the sender to that).
More would overlap the broker's acks and the UPDATE of several chunks, and repeat as many after a crash."""
FIRST = uuid.UUID(int=0)


def run_id_for_slot(campaign_id: str, slot: datetime) -> uuid.UUID:
    """The run of a schedule slot: the same in every process, so a slot is launched once."""
    return uuid.uuid5(RUN_NAMESPACE, f"{campaign_id}\x1f{slot.astimezone(UTC).isoformat()}")


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A chunk of pending profiles as read: their ids (profile-id order), the golden record of each live one
    (a profile merged away since launch is absent) and their consent states."""

    ids: list[uuid.UUID]
    golden: dict[uuid.UUID, dict[str, Any]]
    states: dict[uuid.UUID, dict[tuple[str, str], str]]


@dataclass
class RunResult:
    """What one ``execute`` did: how the run stands when it returned, and what this process decided."""

    run_id: uuid.UUID
    status: str
    decisions: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return self.decisions["sent"]


@dataclass
class RunStatus:
    """``campaigns status``: the run, its audience by outcome, the send log's view, and the ETA."""

    run: CampaignRun
    pending: int
    deferred: int
    sent: int
    skipped: dict[str, int]
    delivery: dict[str, int]

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.delivery.items() if s in ("failed", "dead"))

    @property
    def eta_seconds(self) -> float | None:
        """How long the pending profiles take at the rate limit (None unless the run is sending)."""
        if self.run.status != "sending":
            return None
        return (self.pending + self.deferred) / self.run.rate_limit

    def as_dict(self) -> dict[str, Any]:
        eta = self.eta_seconds
        return {"campaign": self.run.campaign_id, "run_id": str(self.run.run_id), "status": self.run.status,
                "launched_at": self.run.launched_at, "finished_at": self.run.finished_at,
                "planned": self.run.planned, "sent": self.sent, "pending": self.pending, "deferred": self.deferred,
                "skipped": self.skipped, "failed": self.failed, "delivery": self.delivery,
                "rate_limit": self.run.rate_limit, "snapshot_seconds": self.run.snapshot_seconds,
                "eta_seconds": round(eta, 1) if eta is not None else None}


class CampaignRunner:
    """Launches campaign runs and sends them. Built by :func:`cdp_hub.pipeline.build.campaign_runner`."""

    def __init__(self, ctx: StageContext, *, campaigns: CampaignRepository, profiles: ProfileRepository,
                 consents: ConsentRepository, sendlog: MessageRepository, hotstate: HotState,
                 policy: TriggerOptions, lease_seconds: float = 30.0, owner: str | None = None,
                 max_chunk: int = MAX_CHUNK) -> None:
        self.ctx = ctx
        self.campaigns = campaigns
        self.profiles = profiles
        self.consents = consents
        self.sendlog = sendlog
        self.hotstate = hotstate
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.max_chunk = max_chunk

    # -- launching -------------------------------------------------------------------------------

    async def launch(self, campaign: Campaign, *, slot: datetime | None = None) -> Launched | None:
        """Snapshot the audience and create a sending run (None: the slot's run exists already)."""
        run_id = run_id_for_slot(campaign.id, slot) if slot is not None else uuid.uuid4()
        launched = await self.campaigns.launch(
            campaign.id, run_id, slot=slot, rate_limit=campaign.rate_limit,
            definition=campaign.model_dump(mode="json"), segment=campaign.audience.segment,
            exclude=campaign.audience.exclude)
        if launched is not None:
            log.info("campaign %s: run %s launched, %d profiles planned (snapshot %.2fs)", campaign.id,
                     launched.run_id, launched.planned, launched.snapshot_seconds)
        return launched

    async def launch_due(self, campaigns: Sequence[Campaign], now: datetime, *,
                         within: timedelta = timedelta(hours=1)) -> list[Launched]:
        """Launch every scheduled campaign whose latest slot in ``(now - within, now]`` has no run yet."""
        out = []
        for campaign in campaigns:
            if not campaign.enabled or campaign.schedule is None:
                continue
            slot = campaign.schedule.last_slot(now, within=within)
            if slot is not None and (launched := await self.launch(campaign, slot=slot)) is not None:
                out.append(launched)
        return out

    # -- operator actions ------------------------------------------------------------------------

    async def pause(self, run_id: uuid.UUID) -> bool:
        return await self.campaigns.set_status(run_id, "paused", allowed_from=("sending",))

    async def resume(self, run_id: uuid.UUID) -> bool:
        return await self.campaigns.set_status(run_id, "sending", allowed_from=("paused",))

    async def cancel(self, run_id: uuid.UUID) -> bool:
        return await self.campaigns.set_status(run_id, "cancelled", allowed_from=("sending", "paused"))

    async def status(self, run_id: uuid.UUID) -> RunStatus | None:
        run = await self.campaigns.run(run_id)
        if run is None:
            return None
        pending = deferred = sent = 0
        skipped: Counter[str] = Counter()
        for status, reason, is_deferred, n in await self.campaigns.counts(run_id):
            if status == "pending":
                if is_deferred:
                    deferred += n
                else:
                    pending += n
            elif status == "sent":
                sent += n
            else:
                skipped[reason or status] += n
        delivery = await self.sendlog.outcome_counts("campaign:" + run.campaign_id, run_id)
        return RunStatus(run, pending, deferred, sent, dict(skipped), delivery)

    # -- sending ---------------------------------------------------------------------------------

    async def execute_runnable(self) -> list[RunResult]:
        """Send every sending run that has no live sender (the scheduler's job), concurrently."""
        runs = await self.campaigns.runnable(self.lease_seconds)
        return list(await asyncio.gather(*(self.execute(r, wait_for_lease=False) for r in runs)))

    async def execute(self, run_id: uuid.UUID, *, wait_for_lease: bool = True,
                      stop: asyncio.Event | None = None,
                      progress: Callable[[int, int | None], None] | None = None) -> RunResult:
        """Send the run until it is done, paused or cancelled (or ``stop`` is set, or another sender holds it).

        ``wait_for_lease``: when a sender that is gone (killed) still holds the run, wait for its lease to
        run out and take over, instead of returning at once. ``progress(profiles decided by this call, None)``
        after every chunk."""
        started = time.monotonic()
        result = RunResult(run_id, "unknown")
        run = await self.campaigns.claim(run_id, self.owner, self.lease_seconds)
        while run is None:
            current = await self.campaigns.run(run_id)
            if current is None:
                raise ConfigurationError(f"no campaign run {run_id}")
            result.status = current.status
            if current.status != "sending" or not wait_for_lease or (stop is not None and stop.is_set()):
                return result
            await asyncio.sleep(min(1.0, self.lease_seconds / 3))
            run = await self.campaigns.claim(run_id, self.owner, self.lease_seconds)
        campaign = Campaign.model_validate(run.definition)
        try:
            result.status = await self._send(campaign, run, result.decisions, stop, progress)
        finally:
            if result.status != "done":
                await self.campaigns.release(run_id, self.owner)
            result.seconds = time.monotonic() - started
        log.info("campaign %s run %s: %s after %.1fs (%s)", campaign.id, run_id, result.status, result.seconds,
                 dict(result.decisions))
        return result

    async def _read(self, run_id: uuid.UUID, after: uuid.UUID, size: int) -> _Chunk:
        """The next chunk of pending profiles after ``after`` with what the sender needs of their golden records,
        then their consent states. Read ahead while the chunk before is planned: only reads, and only rows after
        that chunk's, so no row is read while it is in flight."""
        pending = await self.campaigns.pending_chunk(run_id, after, size, self.ctx.clock())
        ids = [p.profile_id for p in pending]
        states = await self.consents.current(ids) if ids else {}
        # Merged-away profiles are left out: the survivor is the person (and its own row when it was a member).
        return _Chunk(ids, {p.profile_id: p.golden for p in pending if p.golden is not None}, states)

    async def _send(self, campaign: Campaign, run: CampaignRun, decisions: Counter[str],
                    stop: asyncio.Event | None, progress: Callable[[int, int | None], None] | None = None) -> str:
        """The send loop, several chunks at a time: the next one is read (PostgreSQL) while this one is planned
        (its caps judged in Redis meanwhile), and up to ``IN_FLIGHT`` before it are published and recorded (the
        broker's acks, one UPDATE each). No chunk is recorded before it is durable on the bus, and the run's row
        is read (heartbeat: paused? cancelled?) before every chunk goes. A crash leaves at most ``IN_FLIGHT``
        chunks published and not recorded: the resumed run publishes them again, with the same message ids."""
        rate = campaign.rate_limit
        size = max(1, min(self.max_chunk, int(rate * CHUNK_SECONDS)))
        paced_from = time.monotonic()
        produced = 0
        inflight: deque[asyncio.Task[None]] = deque()
        reading: asyncio.Task[_Chunk] | None = asyncio.create_task(self._read(run.run_id, FIRST, size))

        async def settle(keep: int = 0) -> None:
            """Wait until at most ``keep`` chunks are still being published and recorded (oldest first)."""
            while len(inflight) > keep:
                await inflight[0]
                inflight.popleft()

        try:
            while True:
                assert reading is not None
                status, chunk = await asyncio.gather(self.campaigns.heartbeat(run.run_id, self.owner), reading)
                reading = None
                if status is None:
                    return "lost"  # another sender took the run over (this one stalled past its lease)
                if status != "sending":
                    return status
                if stop is not None and stop.is_set():
                    return "stopped"
                if not chunk.ids:
                    await settle()
                    if await self.campaigns.finish_if_decided(run.run_id):
                        return "done"
                    # What is left is deferred by quiet hours: come back when the first is due (checking in).
                    due = await self.campaigns.next_deferred(run.run_id)
                    wait = 1.0 if due is None else min(1.0, max(0.0, (due - self.ctx.clock()).total_seconds()))
                    await asyncio.sleep(wait)
                    reading = asyncio.create_task(self._read(run.run_id, FIRST, size))
                    continue
                reading = asyncio.create_task(self._read(run.run_id, chunk.ids[-1], size))
                messages, rows, counted = await self._plan_chunk(campaign, run.run_id, chunk, self.ctx.clock(),
                                                                 launched_at=run.launched_at)
                # The rate limit: a chunk goes once the messages before it have had their time at the rate, so
                # t seconds after sending began at most rate * t messages and one chunk have gone.
                ahead = paced_from + produced / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                await settle(keep=IN_FLIGHT - 1)
                inflight.append(asyncio.create_task(self._publish_chunk(run.run_id, messages, rows)))
                produced += counted["sent"]
                for decision, n in counted.items():
                    if decision.startswith("sent:"):  # sent:<variant>:<channel>, for the marketers' metric
                        _, variant, channel = decision.split(":", 2)
                        self.ctx.metrics.scenario_sends.labels(campaign.scenario, variant, channel).inc(n)
                        continue
                    self.ctx.metrics.trigger_decisions.labels(campaign.scenario, decision).inc(n)
                    if decision == CONTROL:
                        self.ctx.metrics.experiment_controls.labels(campaign.scenario).inc(n)
                counted = Counter({d: n for d, n in counted.items() if not d.startswith("sent:")})
                decisions.update(counted)
                if progress is not None:
                    progress(sum(decisions.values()), None)
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
            try:
                await settle()
            finally:
                for task in inflight:  # one failed: the others still end before the run is let go
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _publish_chunk(self, run_id: uuid.UUID, messages: list[OutgoingMessage],
                             rows: list[tuple[uuid.UUID, str, str | None, datetime | None]]) -> None:
        # Durable on the bus first, then recorded: a crash between the two sends the same ids again.
        await self.ctx.publish(messages)
        await self.campaigns.decide(run_id, rows)

    async def _plan_chunk(self, campaign: Campaign, run_id: uuid.UUID, chunk: _Chunk, now: datetime,
                          *, launched_at: datetime | None = None,
                          ) -> tuple[list[OutgoingMessage], list[tuple[uuid.UUID, str, str | None, datetime | None]],
                                     Counter[str]]:
        """The contact policy for a chunk: its intents and decision events, its rows, and what was decided
        (``sent:<variant>:<channel>`` counts the sent messages by variant and channel as well)."""
        golden, states = chunk.golden, chunk.states
        records = ChunkRecords(campaign, run_id, now, messages_topic=self.ctx.topics.messages,
                               events_topic=self.ctx.topics.events)
        rows: list[tuple[uuid.UUID, str, str | None, datetime | None]] = []
        skips: list[Outcome] = []
        candidates: list[tuple[uuid.UUID, str]] = []
        allocations: dict[uuid.UUID, Allocation] = {}
        assigned: list[uuid.UUID] = []
        no_states: dict[tuple[str, str], str] = {}
        for pid, mid in zip(chunk.ids, records.message_ids(chunk.ids), strict=True):
            profile = golden.get(pid)
            if profile is None:
                rows.append((pid, "skipped", "suppressed", None))
                skips.append((pid, "suppressed", "the profile was merged into another or deleted after launch",
                              mid, None))
                continue
            allocation = allocations[pid] = experiment_step(self.policy, campaign.experiment, str(pid),
                                                            campaign.purpose)
            if allocation.outcome == "holdout":
                rows.append((pid, "skipped", "holdout", None))
                skips.append((pid, "holdout", GLOBAL_HOLDOUT, mid, None))
                continue
            refusal = self.consent_refusal(campaign, profile, states.get(pid, no_states), allocation)
            if refusal is not None:
                rows.append((pid, "skipped", "no_consent", None))
                skips.append((pid, "no_consent", refusal, mid, None))
                continue
            if allocation.experiment is not None:
                assigned.append(pid)
            if allocation.outcome == "control":
                rows.append((pid, "skipped", CONTROL, None))
                skips.append((pid, CONTROL, f"control group of experiment {allocation.experiment.id}"
                              if allocation.experiment else CONTROL, mid, None))
                continue
            variant = allocation.variant
            if variant is not None and (variant.delay or variant.at is not None) and launched_at is not None:
                # Its time is a pure function of the launch and the profile: a resumed or restarted run, and
                # the row coming back when it is due, find the same one (unless the profile changed zone).
                due = variant_send_time(variant, launched_at, profile)
                if now < due:  # a send-time variant: its row waits like a quiet-hours deferral
                    rows.append((pid, "pending", "deferred", due))
                    skips.append((pid, "deferred", _send_time_reason(variant), mid, due))
                    continue
            candidates.append((pid, mid))
        caps_of: dict[str, tuple[list[tuple[str, int, float]], dict[str, str]]] = {}  # by channel: the same
        for pid, _ in candidates:
            channel = self._channel(campaign, allocations[pid])
            if channel not in caps_of:
                caps_of[channel] = self._caps(campaign, channel)
        caps = [caps_of[self._channel(campaign, allocations[pid])] for pid, _ in candidates]
        # Redis judges the caps (one script) while this process does the rest: the identities of the profiles
        # skipped so far, and the intents of the candidates (dropped again if a cap is full).
        judging = asyncio.create_task(self.hotstate.within_caps_chunk(
            [(c, str(pid), mid) for (c, _), (pid, mid) in zip(caps, candidates, strict=True)],
            now=now.timestamp())) if any(c for c, _ in caps) else None
        finding = asyncio.create_task(self.profiles.best_identities(
            list({pid for pid, *_ in skips} | set(assigned)), IDENTITY_PRIORITY)) if skips or assigned else None
        try:
            quiet = campaign.quiet_hours if campaign.purpose == "marketing" else None
            prepared: list[tuple[datetime | None, OutgoingMessage | None]] = []
            for pid, mid in candidates:
                profile = golden[pid]
                ends = None
                if quiet is not None:
                    zone = profile.get("timezone")
                    ends = quiet_hours_end(now, quiet, zone if isinstance(zone, str) else None)
                prepared.append((ends, records.intent(pid, mid, profile, allocations[pid]) if ends is None else None))
            verdicts = await judging if judging is not None else []
            identities = await finding if finding is not None else {}
        finally:
            for task in (judging, finding):
                if task is not None and not task.done():
                    task.cancel()
        messages: list[OutgoingMessage] = []
        sent = 0
        by_arm: Counter[str] = Counter()
        judged = len(skips)
        for i, ((pid, mid), (ends, intent)) in enumerate(zip(candidates, prepared, strict=True)):
            full = verdicts[i] if verdicts else None
            if full is not None:
                rows.append((pid, "skipped", "capped", None))
                skips.append((pid, "capped", f"cap reached: {caps[i][1][full]}", mid, None))
                continue
            if ends is not None and quiet is not None:
                rows.append((pid, "pending", "deferred", ends))
                skips.append((pid, "deferred", f"quiet hours {quiet.start}-{quiet.end} in the customer's "
                                               "time zone", mid, ends))
                continue
            assert intent is not None
            allocation = allocations[pid]
            messages.append(intent)
            rows.append((pid, "sent", None, None))
            sent += 1
            by_arm[f"sent:{allocation.variant_name or NO_VARIANT}:{self._channel(campaign, allocation)}"] += 1
        unknown = list({pid for pid, *_ in skips[judged:]} - set(identities))  # capped or deferred
        if unknown:
            identities = {**identities, **await self.profiles.best_identities(unknown, IDENTITY_PRIORITY)}
        # A profile without any identity gets no event (an event about a person needs one); its row still says
        # what happened.
        messages.extend(records.decision(outcome, identities[outcome[0]], allocations.get(outcome[0]))
                        for outcome in skips if outcome[0] in identities)
        messages.extend(self._assignments(campaign, assigned, allocations, identities, now))
        counted = Counter(d for _, d, _, _, _ in skips)
        if sent:
            counted["sent"] = sent
        counted.update(by_arm)
        return messages, rows, counted

    def consent_refusal(self, campaign: Campaign, profile: Mapping[str, Any],
                        states: Mapping[tuple[str, str], str], allocation: Allocation | None = None) -> str | None:
        """Why none of the audience channels may take the campaign's purpose; None when one may (or when a
        channel's kind is unknown here: delivery decides for it), as the triggers stage judges scenarios. A
        channel variant needs consent on its own channel (or a fallback)."""
        channels = campaign.consent_channels
        variant = allocation.variant if allocation is not None else None
        if variant is not None and variant.channel:
            channels = list(dict.fromkeys([variant.channel, *campaign.fallbacks]))
        return channels_refusal(self.policy, profile, states, channels, campaign.purpose)

    @staticmethod
    def _channel(campaign: Campaign, allocation: Allocation) -> str:
        """The channel a message goes to first: the variant's, else the campaign's."""
        variant = allocation.variant
        return variant.channel if variant is not None and variant.channel else campaign.channel

    def _caps(self, campaign: Campaign, channel: str) -> tuple[list[tuple[str, int, float]], dict[str, str]]:
        """The caps of a marketing campaign's message on ``channel``, on the triggers stage's counters."""
        return message_caps(self.policy, own=campaign.frequency_cap, own_scope=campaign.scenario,
                            own_name="this campaign", category=campaign.purpose, channel=channel)

    def _assignments(self, campaign: Campaign, assigned: Sequence[uuid.UUID],
                     allocations: Mapping[uuid.UUID, Allocation],
                     identities: Mapping[uuid.UUID, Mapping[str, str]], now: datetime) -> list[OutgoingMessage]:
        """The ``experiment.assigned`` event of each profile that reached the experiment step (deterministic
        id per campaign, experiment and profile: a later run or a resumed chunk records nothing new)."""
        out = []
        for pid in assigned:
            identity = identities.get(pid)
            if identity is None:
                continue
            event = assignment_event(
                source=SOURCE, scenario=campaign.scenario, allocation=allocations[pid], profile_id=str(pid),
                identities=[Identity.model_construct(kind=identity["kind"], value=identity["value"])], now=now)
            if event is not None:
                out.append(event_message(self.ctx.topics.events, event))
        return out


def _send_time_reason(variant: Variant) -> str:
    """Why a send-time variant's row waits (the ``message.decided`` event's reason)."""
    if variant.at is None:
        return f"variant {variant.name} sends {variant.delay} after launch"
    after = f"{variant.delay} after launch, then " if variant.delay else ""
    return f"variant {variant.name} sends {after}at {variant.at} in the customer's time zone"
