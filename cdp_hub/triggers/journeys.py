"""Journeys: multi-step scenarios on the triggers stage, every send through the same contact policy.

    trigger event (conditions, muted?, too old?) ─▶ re-entry policy (once / once_per / always; one active
        entry per profile and journey) ─▶ walk from the first step, in event time:
            send      ─▶ the contact policy (TriggerStage.gate_sends): consent, caps, quiet hours, ... and a
                         message.decided event, as for any scenario
            branch    ─▶ the first arm whose conditions hold (traits, profile.segments, event counts), else `else`
            split     ─▶ an arm by weight, by a hash of profile id + journey + step (a replay takes the same arm)
            wait      ─▶ rest until due_at (a duration, since the entry, or until a local time of day)
            wait_for  ─▶ on_event when the awaited event happened in [step start, timeout), else on_timeout
            exit_on / goals, checked before every step: the journey ends (journey.exited / journey.converted)
        an experiment (journey level) draws the arm once, at entry: the control group enters nothing (its entry
        is kept, status control, with a control decision); a variant starts at its ``goto`` step (its branch);
        the arm is stored with the position and every send's decision names it
        ─▶ journey_positions (store/journeys.py), written once the step's messages are durable
    an event the journey waits for, exits on or converts on ─▶ the profile's active positions walk on
    due positions (due_at passed by the watermark less the allowed lateness, polled with the stage's timers)
        ─▶ walk on from where they rest
    profile.merged ─▶ positions move to the survivor, which keeps its earlier-entered active entry

Exactly once per step: the walk is a function of the position, the stored events and the profile, so two
walks from the same position take the same path and produce the same message ids (journey, entry, step,
step sequence number); a position moves only by ``UPDATE ... WHERE step_seq = <the one read>``, so the second
of two walks (a redelivered event, the timer poll racing a live event, a restart) changes nothing, and its
messages are the first one's, which delivery's send log ignores. Waits are judged on the events table (the
resolver stores every event before the triggers stage sees it) plus the batch's own events: an awaited event
that arrives before the profile reached the wait_for step still counts, whatever order records arrive in.

docs/journeys.md explains journeys for marketers.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from cdp_hub.bus.events import event_message
from cdp_hub.durations import customer_zone, parse_time_of_day
from cdp_hub.durations import parse_duration as _parse_duration
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.schema.events import Context, Event, Traits, deterministic_event_id
from cdp_hub.store.events import EventRepository
from cdp_hub.store.journeys import ACTIVE, JourneyRepository, Position
from cdp_hub.store.segments import SegmentRepository
from cdp_hub.triggers.experiments import CONTROL, Allocation, assignment_event
from cdp_hub.triggers.scenario import END, EventCount, OncePer, Predicate, Scenario, Step, compile_conditions
from cdp_hub.triggers.stage import (
    DECISION_SOURCE,
    Decision,
    TriggerOptions,
    channels_refusal,
    experiment_step,
    is_muted,
    quiet_hours_end,
)

if TYPE_CHECKING:
    from cdp_hub.triggers.stage import TriggerStage

__all__ = ["CONVERTED", "EXITED", "JOURNEY_NAMESPACE", "JourneyEngine", "JourneyPlan", "StepRecord", "Timeline",
           "Walk", "entry_id_for", "simulate_journey", "split_arm", "walk"]

CONVERTED = "journey.converted"
EXITED = "journey.exited"
JOURNEY_NAMESPACE = uuid.UUID("0f5e1c2a-7b3d-5a9e-8c4f-2d6b1e9a7c30")
MAX_STEPS_PER_WALK = 64
"""A chain of steps without a wait that loops ends the entry here instead of spinning."""
DUE_LIMIT = 500
NO_ARM = "none"
"""The arm label of an entry into a journey without an experiment (metrics)."""
HOLDOUT = "holdout"
"""The arm stored for an entry in the global holdout: it walks the journey, and each send is decided holdout."""

_COMPARE = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
            "lte": operator.le}


@functools.lru_cache(maxsize=1024)
def parse_duration(text: str) -> timedelta:
    """A journey's durations, parsed once (a walk reads them at every step)."""
    return _parse_duration(text)


def entry_id_for(journey: str, trigger_event_id: uuid.UUID | str) -> uuid.UUID:
    """The id of the entry a trigger event makes: a redelivered trigger makes the same entry."""
    return uuid.uuid5(JOURNEY_NAMESPACE, f"{journey}:{trigger_event_id}")


def step_event_id(journey: str, entry_id: uuid.UUID, step: str, seq: int) -> uuid.UUID:
    """The trigger id a send step's message is made for: its message id is deterministic per (journey,
    profile, entry, step)."""
    return uuid.uuid5(JOURNEY_NAMESPACE, f"{journey}:{entry_id}:{step}:{seq}")


def split_arm(profile_id: str, journey: str, step: Step) -> str:
    """The arm of a split a profile takes: a hash of profile id, journey and step, so replays agree."""
    assert step.split is not None
    digest = hashlib.sha256(f"{profile_id}:{journey}:{step.id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(arm.weight for arm in step.split)
    edge = 0.0
    for arm in step.split:
        edge += arm.weight / total
        if u < edge:
            return arm.then
    return step.split[-1].then


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Seen:
    at: datetime
    type: str
    body: Mapping[str, Any]


class Timeline:
    """Events of some profiles (their JSON), in event-time order: what waits, exits, goals and event counts
    are judged on. The stage fills it from the events table and the batch; a simulation from a file."""

    def __init__(self) -> None:
        self._by_profile: dict[str, list[_Seen]] = {}
        self._ids: set[str] = set()

    def add(self, profile_id: str, body: Mapping[str, Any]) -> None:
        event_id = str(body.get("event_id", ""))
        if event_id and event_id in self._ids:
            return
        if event_id:
            self._ids.add(event_id)
        seen = self._by_profile.setdefault(profile_id, [])
        seen.append(_Seen(_parse_time(body["occurred_at"]), str(body.get("type")), body))
        seen.sort(key=lambda s: (s.at, str(s.body.get("event_id", ""))))

    def first(self, profile_id: str, types: Iterable[str], since: datetime, until: datetime | None,
              matches: Predicate | None = None, profile: Mapping[str, Any] | None = None, *,
              until_inclusive: bool = False, skip: str | None = None) -> _Seen | None:
        """The earliest event of ``types`` in ``[since, until)`` (``until_inclusive``: ``[since, until]``),
        other than the event ``skip`` (a journey's own trigger), whose ``matches`` holds for
        ``{"event": it, "profile": profile}``."""
        wanted = set(types)
        for seen in self._by_profile.get(profile_id, ()):
            if until is not None and (seen.at > until or (seen.at == until and not until_inclusive)):
                break
            if seen.at < since or seen.type not in wanted:
                continue
            if skip is not None and str(seen.body.get("event_id", "")) == skip:
                continue
            if matches is None or matches({"event": seen.body, "profile": profile or {}}):
                return seen
        return None

    def count(self, profile_id: str, event_type: str, since: datetime, until: datetime) -> int:
        return sum(1 for s in self._by_profile.get(profile_id, ()) if s.type == event_type and since <= s.at <= until)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One thing a walk did: for the simulation's output and the decisions' reasons."""

    at: datetime
    step: str
    kind: str
    outcome: str
    detail: str = ""


@dataclass
class Walk:
    """What one walk from a position did: its new state, the send steps it reached ``(step, event time,
    step seq)``, and what it recorded."""

    position: Position
    sends: list[tuple[Step, datetime, int]] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)
    finished_by: _Seen | None = None


class JourneyPlan:
    """A journey compiled once: its steps by id, where each leads, the predicates, and the event types it
    needs to see (awaited, exits, goals, counted)."""

    def __init__(self, scenario: Scenario) -> None:
        assert scenario.steps is not None
        self.scenario = scenario
        self.id = scenario.id
        self.steps = {s.id: s for s in scenario.steps}
        self.first = scenario.steps[0].id
        self._following = {s.id: (scenario.steps[i + 1].id if i + 1 < len(scenario.steps) else END)
                           for i, s in enumerate(scenario.steps)}
        self.trigger = compile_conditions(scenario.conditions)
        self.exit_predicates: dict[str, list[Predicate]] = {}
        for leave in scenario.exits:
            self.exit_predicates.setdefault(leave.event, []).append(compile_conditions(leave.conditions))
        self.exits = frozenset(self.exit_predicates)
        self.goal_predicates: dict[str, list[Predicate]] = {}
        for goal in scenario.goals:
            self.goal_predicates.setdefault(goal.event, []).append(compile_conditions(goal.conditions))
        self.awaited: dict[str, Predicate] = {}
        self.branches: dict[str, list[tuple[list[Predicate], list[EventCount], str]]] = {}
        counted: set[str] = set()
        lookback = timedelta(0)
        for s in scenario.steps:
            if s.wait_for is not None:
                self.awaited[s.id] = compile_conditions(s.wait_for.conditions)
            if s.branch is not None:
                arms = []
                for rule in s.branch:
                    counts = [c for c in rule.when if isinstance(c, EventCount)]
                    plain = [compile_conditions([c]) for c in rule.when if not isinstance(c, EventCount)]
                    for c in counts:
                        counted.add(c.count)
                        lookback = max(lookback, parse_duration(c.within))
                    arms.append((plain, counts, rule.then))
                self.branches[s.id] = arms
        self.lookback = lookback
        """How far before an entry the event counts of its branches look."""
        self.types = frozenset({s.wait_for.event for s in scenario.steps if s.wait_for is not None}
                               | self.exits | set(self.goal_predicates) | counted)
        """Every event type whose events can move a position of this journey."""
        self.step_scenarios = {
            s.id: scenario.model_copy(update={
                "channel": s.send.channel, "fallbacks": list(s.send.fallbacks), "template": s.send.template,
                "vars": {**scenario.vars, **s.send.vars, "journey": scenario.id, "journey_step": s.id},
                "steps": None})
            for s in scenario.steps if s.send is not None}
        """Each send step as the single-send scenario the contact policy judges (the journey's id, category,
        caps, priority and quiet hours; the step's channel, fallbacks and template)."""
        first_send = next(iter(self.step_scenarios.values()), None)
        self.as_sender = first_send or scenario
        """The journey as decisions about its entry name it (the channel of its first send)."""

    def assign(self, options: TriggerOptions, profile_id: str) -> Allocation | None:
        """The experiment arm of a profile entering now (None when the journey has no experiment): the global
        holdout (marketing), the control group, or a variant, whose ``goto`` is where it enters."""
        experiment = self.scenario.experiment
        if experiment is None:
            return None
        return experiment_step(options, experiment, profile_id, self.scenario.category)

    def start_of(self, allocation: Allocation | None) -> str:
        """The step an entry with this arm begins at: its variant's branch, else the first step."""
        variant = allocation.variant if allocation is not None else None
        return variant.goto if variant is not None and variant.goto else self.first

    def arm_of(self, position: Position) -> Allocation | None:
        """The arm a position was assigned at entry, for its sends' decisions (None: the contact policy's
        experiment step assigns one, as for an entry made before the journey had its experiment)."""
        experiment = self.scenario.experiment
        if experiment is None or position.variant is None:
            return None
        if position.variant == HOLDOUT:
            return Allocation("holdout", experiment)
        variant = experiment.variant(position.variant)
        return Allocation("variant", experiment, variant) if variant is not None else None

    def awaited_by(self, step: Step, position: Position) -> Predicate:
        """What a ``wait_for`` step of ``position`` accepts: its conditions, and the properties it must share
        with the entry's event (``match``: the delivery of *this* order)."""
        conditions = self.awaited[step.id]
        match = step.wait_for.match if step.wait_for is not None else []
        if not match:
            return conditions
        entry = position.entry_event.get("properties") or {}
        wanted = {name: entry.get(name) for name in match}

        def matches(scope: Mapping[str, Any]) -> bool:
            props = scope["event"].get("properties") or {}
            return all(v is not None and props.get(k) == v for k, v in wanted.items()) and conditions(scope)
        return matches

    def next_of(self, step: Step) -> str:
        return step.next or self._following[step.id]

    def reentry_allows(self, entries: Sequence[tuple[datetime, str]], at: datetime) -> tuple[bool, str]:
        """Whether a profile with these ``(entered at, status)`` entries may enter at ``at``; and why not."""
        if any(status == ACTIVE for _, status in entries):
            return False, "already in the journey"
        policy = self.scenario.reentry
        if policy == "once" and entries:
            return False, "entered before (reentry: once)"
        if isinstance(policy, OncePer):
            window = parse_duration(policy.once_per)
            if any(at - window < entered <= at for entered, _ in entries):
                return False, f"entered within {policy.once_per} (reentry: once_per)"
        return True, ""

    def finish(self, timeline: Timeline, profile_id: str, position: Position, until: datetime,
               profile: Mapping[str, Any]) -> tuple[str, _Seen] | None:
        """The earliest goal (``converted``) or exit (``exited``) event in ``[entered, until]``."""
        found: list[tuple[datetime, int, str, _Seen]] = []
        if self.goal_predicates:
            def is_goal(scope: Mapping[str, Any]) -> bool:
                event = scope["event"]
                return any(p(scope) for p in self.goal_predicates.get(str(event.get("type")), ()))
            goal = timeline.first(profile_id, self.goal_predicates, position.entered_at, until, is_goal, profile,
                                  until_inclusive=True, skip=_entry_event_id(position))
            if goal is not None:
                found.append((goal.at, 0, "converted", goal))
        if self.exits:
            def is_exit(scope: Mapping[str, Any]) -> bool:
                event = scope["event"]
                return any(p(scope) for p in self.exit_predicates.get(str(event.get("type")), ()))
            left = timeline.first(profile_id, self.exits, position.entered_at, until, is_exit, profile,
                                  until_inclusive=True, skip=_entry_event_id(position))
            if left is not None:
                found.append((left.at, 1, "exited", left))
        if not found:
            return None
        _, _, how, seen = min(found, key=lambda f: (f[0], f[1]))
        return how, seen

    def wait_until(self, step: Step, since: datetime, position: Position, profile: Mapping[str, Any]) -> datetime:
        """When a ``wait`` step that began at ``since`` ends: ``duration`` after it, or ``since_entry`` after
        the entry; with ``at``, at that local time on the day the wait ends (``{duration: 3d, at: "11:00"}``:
        the third day at 11:00; ``at`` alone: the next 11:00), never before ``since``."""
        spec = step.wait_spec
        assert spec is not None
        due = since
        if spec.duration is not None:
            due = since + parse_duration(spec.duration)
        if spec.since_entry is not None:
            due = max(since, position.entered_at + parse_duration(spec.since_entry))
        if spec.at is not None:
            zone = customer_zone(profile.get("timezone"), spec.timezone)
            at = parse_time_of_day(spec.at)
            target = due.astimezone(zone).replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
            if target < since:
                target += timedelta(days=1)
            due = target.astimezone(UTC)
        return due

    def branch_target(self, step: Step, timeline: Timeline, profile_id: str, at: datetime,
                      scope: Mapping[str, Any]) -> tuple[str, str]:
        """The arm a ``branch`` takes and why."""
        for i, (plain, counts, then) in enumerate(self.branches[step.id]):
            if not all(p(scope) for p in plain):
                continue
            if all(_COMPARE[c.op](timeline.count(profile_id, c.count, at - parse_duration(c.within), at), c.value)
                   for c in counts):
                return then, f"arm {i + 1} holds"
        return step.otherwise or self.next_of(step), "no arm holds"


def walk(plan: JourneyPlan, position: Position, *, at: datetime, timeline: Timeline,
         profile: Mapping[str, Any]) -> Walk:
    """Move ``position`` on as far as the events known by ``at`` (the stage's watermark less the lateness, or
    a simulation's clock) allow: through sends, branches and splits at once, through a wait or a wait_for once
    it ended. Pure: the same position, timeline, profile and ``at`` give the same walk."""
    pos = replace(position)
    result = Walk(pos)
    pid = str(pos.profile_id)
    scope = {"profile": profile, "event": pos.entry_event}
    t = pos.step_since
    for _ in range(MAX_STEPS_PER_WALK):
        if pos.step is None or pos.step == END:
            pos.status, pos.due_at, pos.step = "completed", None, pos.step if pos.step != END else None
            result.records.append(StepRecord(t, "", "end", "completed", "the last step is done"))
            return result
        step = plan.steps[pos.step]
        kind = step.kind
        horizon = t
        awaited: _Seen | None = None
        if kind in ("wait", "wait_for"):
            if pos.due_at is None:  # arriving at the step now
                if step.wait_for is not None:
                    pos.due_at = t + parse_duration(step.wait_for.within)
                else:
                    pos.due_at = plan.wait_until(step, t, pos, profile)
            if step.wait_for is not None:
                awaited = timeline.first(pid, [step.wait_for.event], pos.step_since, pos.due_at,
                                         plan.awaited_by(step, pos), profile, skip=_entry_event_id(pos))
            # Exits and goals are facts whenever they are stored: one that happened before the wait ends (or
            # before the awaited event) ends the journey now, not when the wait is over.
            horizon = awaited.at if awaited is not None else pos.due_at
        finished = plan.finish(timeline, pid, pos, horizon, profile)
        if finished is not None:
            how, seen = finished
            pos.status, pos.due_at, pos.reason = how, None, seen.type
            result.finished_by = seen
            result.records.append(StepRecord(seen.at, step.id, kind, how, f"{seen.type} happened"))
            return result
        target: str
        if kind == "send":
            result.sends.append((step, t, pos.step_seq))
            result.records.append(StepRecord(t, step.id, kind, "send", f"{step.send.channel if step.send else ''}"
                                              f" / {step.send.template if step.send else ''}"))
            target = plan.next_of(step)
        elif kind == "branch":
            target, why = plan.branch_target(step, timeline, pid, t, scope)
            result.records.append(StepRecord(t, step.id, kind, f"-> {target}", why))
        elif kind == "split":
            target = split_arm(pid, plan.id, step)
            result.records.append(StepRecord(t, step.id, kind, f"-> {target}", "by hash of profile and step"))
        else:
            assert pos.due_at is not None
            if awaited is not None:
                t = max(t, awaited.at)
                target = step.on_event or plan.next_of(step)
                result.records.append(StepRecord(t, step.id, kind, f"-> {target}", f"{awaited.type} came"))
            elif pos.due_at <= at:
                t = pos.due_at
                if step.wait_for is not None:
                    target = step.on_timeout or plan.next_of(step)
                    result.records.append(StepRecord(t, step.id, kind, f"-> {target}",
                                                     f"no {step.wait_for.event} within {step.wait_for.within}"))
                else:
                    target = plan.next_of(step)
                    result.records.append(StepRecord(t, step.id, kind, f"-> {target}", "the wait is over"))
            else:
                result.records.append(StepRecord(pos.step_since, step.id, kind, "waiting",
                                                 f"until {pos.due_at.isoformat()}"))
                return result
        pos.step, pos.step_seq, pos.step_since, pos.due_at = target, pos.step_seq + 1, t, None
    pos.status, pos.due_at, pos.reason = "exited", None, "loop"
    result.records.append(StepRecord(t, str(pos.step), "loop", "exited",
                                      f"more than {MAX_STEPS_PER_WALK} steps without a wait"))
    return result


def _entry_event_id(position: Position) -> str:
    return str(position.entry_event.get("event_id", ""))


def journey_event(kind: str, position: Position, identities: Any, step: str | None,
                  cause: _Seen | None, now: datetime) -> Event:
    """``journey.converted`` / ``journey.exited`` for an entry (a deterministic id: once per entry)."""
    record_id = f"{position.journey}:{position.entry_id}"
    properties: dict[str, Any] = {"journey": position.journey, "entry_id": str(position.entry_id),
                                  "step": step, "entered_at": position.entered_at.isoformat()}
    if cause is not None:
        properties["cause_type"] = cause.type
        properties["cause_event_id"] = str(cause.body.get("event_id", ""))
        properties["cause_at"] = cause.at.isoformat()
    return Event.model_construct(
        event_id=deterministic_event_id(DECISION_SOURCE, record_id, kind), type=kind, source=DECISION_SOURCE,
        source_record_id=record_id, occurred_at=cause.at if cause is not None else now, received_at=now,
        identities=list(identities or []), traits=Traits(), properties=properties, context=Context(),
        profile_id=position.profile_id)


class JourneyEngine:
    """The journeys of a triggers stage: entries, live moves, due positions, merges (see the module)."""

    def __init__(self, journeys: Sequence[Scenario], *, positions: JourneyRepository, events: EventRepository,
                 segments: SegmentRepository) -> None:
        self.plans = {s.id: JourneyPlan(s) for s in journeys if s.steps is not None}
        self.positions = positions
        self.events = events
        self.segments = segments
        self._triggers: dict[str, list[JourneyPlan]] = {}
        for plan in self.plans.values():
            self._triggers.setdefault(plan.scenario.trigger.event, []).append(plan)
        self._movers = frozenset(t for plan in self.plans.values() for t in plan.types)
        self._entry_events: dict[uuid.UUID, Event] = {}
        """The trigger events of this batch's new entries (their model, not parsed again from JSON)."""
        self._in_flight: dict[tuple[uuid.UUID, str, uuid.UUID], StageOutput] = {}
        """Positions a batch moved that are not durable yet, with the batch's output: the timer poll of the
        same batch leaves them (a failed batch's are tried again by its retry, and by later polls)."""

    def wants(self, event_type: str) -> bool:
        """Whether an event of this type can enter or move a journey."""
        return event_type in self._triggers or event_type in self._movers

    # -- live events ----------------------------------------------------------------------------------

    async def on_events(self, stage: TriggerStage, events: Sequence[Event], out: StageOutput,
                        profiles: Mapping[uuid.UUID, Mapping[str, Any]]) -> None:
        """Enter profiles whose events trigger a journey; move the active positions of profiles whose events
        a journey waits for, exits on or converts on. ``profiles``: the Golden Records with ``segments``."""
        relevant = [e for e in events if e.profile_id is not None and self.wants(e.type)]
        if not relevant:
            return
        now = stage.now()
        cutoff = stage.watermarks.watermark() - stage.options.allowed_lateness
        decisions: list[Decision] = []
        matched: list[tuple[JourneyPlan, Event]] = []
        # Each event's JSON form, made once: trigger conditions, new positions and the timeline read it.
        bodies = {e.event_id: orjson.loads(e.model_dump_json()) for e in relevant}
        for event in sorted(relevant, key=lambda e: (e.occurred_at, str(e.event_id))):
            for plan in self._triggers.get(event.type, ()):
                assert event.profile_id is not None
                if plan.trigger({"event": bodies[event.event_id], "profile": profiles.get(event.profile_id, {})}):
                    matched.append((plan, event))
        pids = list({e.profile_id for e in relevant if e.profile_id is not None})
        entries = await self.positions.entries_of(pids, list({p.id for p, _ in matched}))
        known: dict[tuple[uuid.UUID, str], list[tuple[datetime, str]]] = {}
        entry_ids = set()
        for profile_id, journey, entry_id, entered_at, status in entries:
            known.setdefault((profile_id, journey), []).append((entered_at, status))
            entry_ids.add(entry_id)
        entering: list[Position] = []
        controls: list[Position] = []
        for plan, event in matched:
            assert event.profile_id is not None
            entry_id = entry_id_for(plan.id, event.event_id)
            if entry_id in entry_ids:
                continue  # a redelivered trigger: its entry is there already, and decided nothing more
            pid = str(event.profile_id)
            scenario = plan.scenario
            refused = stage.refuse_trigger(plan.as_sender, scenario.max_age_td, event, pid, now,
                                           muted=stage.options.mute or is_muted(event))
            if refused is not None:
                decisions.append(refused)
                continue
            history = known.setdefault((event.profile_id, plan.id), [])
            allowed, _why = plan.reentry_allows(history, event.occurred_at)
            if not allowed:
                continue
            entry_ids.add(entry_id)
            allocation = plan.assign(stage.options, pid)
            arm = None if allocation is None else allocation.variant_name or HOLDOUT
            recorded = None if allocation is None else assignment_event(
                source=DECISION_SOURCE, scenario=plan.id, allocation=allocation, profile_id=pid,
                identities=event.identities, now=now)
            if recorded is not None:
                out.messages.append(event_message(stage.ctx.topics.events, recorded))
            if allocation is not None and allocation.outcome == "control":
                # The control group enters nothing and receives nothing; its entry is kept (status control)
                # for the re-entry policy, and its decision is what attribution compares the variants with.
                history.append((event.occurred_at, CONTROL))
                decisions.append(Decision(plan.as_sender, pid, CONTROL, f"control group of experiment "
                                          f"{allocation.experiment.id if allocation.experiment else ''}", event,
                                          allocation=allocation))
                controls.append(Position(event.profile_id, plan.id, entry_id, event.occurred_at, CONTROL, None, 0,
                                         event.occurred_at, None, bodies[event.event_id], "control group", CONTROL))
                continue
            history.append((event.occurred_at, ACTIVE))
            entering.append(Position(event.profile_id, plan.id, entry_id, event.occurred_at, ACTIVE,
                                     plan.start_of(allocation), 0, event.occurred_at, None, bodies[event.event_id],
                                     variant=arm))
            self._entry_events[entry_id] = event
        movers = [e for e in relevant if e.type in self._movers]
        active = [p for p in await self.positions.active_of(list({e.profile_id for e in movers if e.profile_id}))
                  if p.journey in self.plans and not self._busy(p, out)] if movers else []
        moving = [p for p in active
                  if any(e.profile_id == p.profile_id and e.type in self.plans[p.journey].types for e in movers)]
        timeline = await self._timeline([*entering, *moving], relevant, bodies)
        await self._walk_all(stage, out, entering, moving, timeline, profiles, cutoff)
        if decisions:
            stage.emit_decisions(decisions, out)
        if controls:
            async def record_controls() -> None:
                stored = await self.positions.enter(controls)
                metrics = stage.ctx.metrics
                for p in controls:
                    if (p.profile_id, p.journey, p.entry_id) in stored:
                        metrics.journey_entries.labels(p.journey, CONTROL).inc()
                        metrics.journey_finished.labels(p.journey, CONTROL).inc()
            out.on_durable.append(record_controls)

    # -- due positions --------------------------------------------------------------------------------

    async def advance_due(self, stage: TriggerStage, out: StageOutput, cutoff: datetime) -> int:
        """Move on the positions whose wait or timeout ended by ``cutoff`` (the watermark less the allowed
        lateness); returns how many."""
        due = [p for p in await self.positions.due(cutoff, DUE_LIMIT) if p.journey in self.plans and not self._busy(p, out)]
        if not due:
            return 0
        pids = list({p.profile_id for p in due})
        golden = await stage.profiles.golden_of(pids)
        memberships: dict[uuid.UUID, set[str]] = {}
        for pid, segment in await self.segments.memberships(pids):
            memberships.setdefault(pid, set()).add(segment)
        profiles = {pid: {**golden.get(pid, {}), "segments": sorted(memberships.get(pid, ()))} for pid in pids}
        timeline = await self._timeline(due, [], {})
        await self._walk_all(stage, out, [], due, timeline, profiles, cutoff)
        return len(due)

    def _busy(self, position: Position, out: StageOutput) -> bool:
        """Whether this batch (``out``) moved the position already; a failed batch's marks are forgotten."""
        holder = self._in_flight.get((position.profile_id, position.journey, position.entry_id))
        return holder is out

    # -- merges ---------------------------------------------------------------------------------------

    async def follow_merges(self, moves: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """Positions of merged-away profiles move to the survivor (one active entry per journey stays: the
        earlier entered)."""
        await self.positions.follow_merges(moves)

    # -- the walk -------------------------------------------------------------------------------------

    async def _timeline(self, positions: Sequence[Position], batch: Sequence[Event],
                        bodies: Mapping[uuid.UUID, dict[str, Any]]) -> Timeline:
        timeline = Timeline()
        if not positions:
            return timeline
        types = sorted({t for p in positions for t in self.plans[p.journey].types})
        since = min(p.entered_at - self.plans[p.journey].lookback for p in positions)
        pids = list({p.profile_id for p in positions})
        for pid, body in await self.events.of_types_since(pids, types, since):
            timeline.add(str(pid), body)
        for event in batch:  # the batch's own events (stored by the resolver already; a test may feed the stage)
            if event.profile_id is not None and event.type in types:
                timeline.add(str(event.profile_id), bodies[event.event_id])
        return timeline

    async def _walk_all(self, stage: TriggerStage, out: StageOutput, entering: Sequence[Position],
                        moving: Sequence[Position], timeline: Timeline,
                        profiles: Mapping[uuid.UUID, Mapping[str, Any]], cutoff: datetime) -> None:
        sends: list[tuple[Scenario, Event, dict[str, Any], Allocation | None]] = []
        new: list[Position] = []
        moves: list[tuple[int, Position]] = []
        taken: dict[tuple[uuid.UUID, str, uuid.UUID], list[tuple[str, str]]] = {}
        """The steps each walk took, ``(step, kind)``: counted once its position is stored."""
        now = stage.now()
        for position, is_new in [*((p, True) for p in entering), *((p, False) for p in moving)]:
            plan = self.plans[position.journey]
            profile = dict(profiles.get(position.profile_id, {}))
            result = walk(plan, position, at=cutoff, timeline=timeline, profile=profile)
            moved = result.position
            if not is_new and (moved.step_seq, moved.status, moved.due_at) == (
                    position.step_seq, position.status, position.due_at):
                continue  # nothing happened (an event it does not wait for, a wait not over)
            entry = self._entry_events.pop(moved.entry_id, None) if is_new else None
            if entry is None:
                entry = Event.model_validate(moved.entry_event)
            entry.profile_id = moved.profile_id  # the position may have moved to a surviving profile
            for step, at, seq in result.sends:
                event = entry.model_copy(update={
                    "event_id": step_event_id(plan.id, moved.entry_id, step.id, seq), "occurred_at": at})
                sends.append((plan.step_scenarios[step.id], event, profile, plan.arm_of(moved)))
            if moved.status in ("converted", "exited"):
                kind = CONVERTED if moved.status == "converted" else EXITED
                out.messages.append(event_message(stage.ctx.topics.events, journey_event(
                    kind, moved, entry.identities, moved.step, result.finished_by, now)))
            self._in_flight[(moved.profile_id, moved.journey, moved.entry_id)] = out
            taken[(moved.profile_id, moved.journey, moved.entry_id)] = [
                (r.step, r.kind) for r in result.records if r.outcome == "send" or r.outcome.startswith("-> ")]
            if is_new:
                new.append(moved)
            else:
                moves.append((position.step_seq, moved))
        if sends:
            await stage.gate_sends(sends, out)
        for moved in [*new, *(m for _, m in moves)]:
            if moved.status == ACTIVE and moved.due_at is not None:
                stage.remind_at(moved.due_at)
        if not new and not moves:
            return
        keys = {(p.profile_id, p.journey, p.entry_id) for p in [*new, *(m for _, m in moves)]}

        async def record() -> None:
            try:
                entered = await self.positions.enter(new)
                advanced = await self.positions.advance(moves)
            finally:
                for key in keys:
                    if self._in_flight.get(key) is out:
                        del self._in_flight[key]
            # Counted for what was stored: a second walk of the same position (a redelivery) stores nothing.
            metrics = stage.ctx.metrics
            for position in [*new, *(m for _, m in moves)]:
                key = (position.profile_id, position.journey, position.entry_id)
                if key not in entered and key not in advanced:
                    continue
                if key in entered:
                    metrics.journey_entries.labels(position.journey, position.variant or NO_ARM).inc()
                for step, kind in taken.get(key, ()):
                    metrics.journey_steps.labels(position.journey, step, kind).inc()
                if position.status != ACTIVE:
                    metrics.journey_finished.labels(position.journey, position.status).inc()

        out.on_durable.append(record)


# -- the simulation -------------------------------------------------------------------------------------------

SIMULATION_HORIZON = timedelta(days=400)
"""How far past the last event a simulation lets the waits run out."""


def simulate_journey(scenario: Scenario, events: Sequence[Mapping[str, Any]], profile: Mapping[str, Any], *,
                     options: TriggerOptions) -> list[dict[str, Any]]:
    """Walk ``scenario`` (a journey) for one profile over a timeline of events (their JSON), sending nothing:
    one row per step taken, with its event time, and for a send step the decision the consent and quiet-hours
    part of the contact policy makes (caps, priorities and the send log depend on other messages; the
    pipeline applies them). The same walk as the triggers stage's (:func:`walk`), with the whole timeline
    known: a trigger enters when the re-entry policy lets it, each entry runs until it ends."""
    plan = JourneyPlan(scenario)
    raw_id = profile.get("profile_id")
    try:
        profile_id = uuid.UUID(str(raw_id))
    except ValueError:
        profile_id = uuid.uuid5(JOURNEY_NAMESPACE, f"simulated:{raw_id}")
    pid = str(profile_id)
    timeline = Timeline()
    ordered = sorted(events, key=lambda e: _parse_time(e["occurred_at"]))
    for body in ordered:
        timeline.add(pid, body)
    horizon = (_parse_time(ordered[-1]["occurred_at"]) if ordered else datetime.now(UTC)) + SIMULATION_HORIZON
    rows: list[dict[str, Any]] = []
    ended: list[tuple[datetime, datetime, str]] = []  # (entered at, ended at, status) of earlier entries
    for body in ordered:
        if body.get("type") != scenario.trigger.event or not plan.trigger({"event": body, "profile": profile}):
            continue
        at = _parse_time(body["occurred_at"])
        history = [(entered, ACTIVE if until > at else status) for entered, until, status in ended]
        allowed, why = plan.reentry_allows(history, at)
        if not allowed:
            rows.append({"at": at.isoformat(), "entry": None, "step": "", "kind": "entry", "outcome": "not entered",
                         "detail": why})
            continue
        entry_id = entry_id_for(plan.id, str(body.get("event_id", len(ended))))
        policy = scenario.reentry if isinstance(scenario.reentry, str) else f"once per {scenario.reentry.once_per}"
        allocation = plan.assign(options, pid)
        start = plan.start_of(allocation)
        rows.append({"at": at.isoformat(), "entry": str(entry_id), "step": start, "kind": "entry",
                     "outcome": "entered", "detail": f"on {body.get('type')} (reentry: {policy})"})
        if allocation is not None and allocation.experiment is not None:
            arm = allocation.variant_name or HOLDOUT
            detail = (f"global holdout: no marketing (experiment {allocation.experiment.id})" if arm == HOLDOUT
                      else f"experiment {allocation.experiment.id}" + (f", its branch starts at {start}"
                                                                       if start != plan.first else ""))
            rows.append({"at": at.isoformat(), "entry": str(entry_id), "step": start, "kind": "experiment",
                         "outcome": arm, "detail": detail})
            if arm == CONTROL:
                rows.append({"at": at.isoformat(), "entry": str(entry_id), "step": "", "kind": "end",
                             "outcome": CONTROL, "detail": "the control group receives nothing"})
                ended.append((at, at, CONTROL))
                continue
        position = Position(profile_id, plan.id, entry_id, at, ACTIVE, start, 0, at, None, dict(body))
        result = walk(plan, position, at=horizon, timeline=timeline, profile=profile)
        for record in result.records:
            row: dict[str, Any] = {"at": record.at.isoformat(), "entry": str(entry_id), "step": record.step,
                                   "kind": record.kind, "outcome": record.outcome, "detail": record.detail}
            if record.kind == "send":
                step = plan.steps[record.step]
                assert step.send is not None
                if allocation is not None and allocation.outcome == "holdout":
                    row.update({"channel": step.send.channel, "template": step.send.template,
                                "decision": "holdout", "reason": "global holdout"})
                else:
                    row.update(_send_decision(plan.step_scenarios[step.id], record.at, profile, options))
            rows.append(row)
        last = result.records[-1].at if result.records else at
        ended.append((at, last, result.position.status))
    return rows


def _send_decision(sender: Scenario, at: datetime, profile: Mapping[str, Any],
                   options: TriggerOptions) -> dict[str, Any]:
    """The consent and quiet-hours decision for a simulated send step."""
    decision: dict[str, Any] = {"channel": sender.channel, "template": sender.template}
    refusal = channels_refusal(options, profile, {}, dict.fromkeys((sender.channel, *sender.fallbacks)),
                               sender.category)
    if refusal is not None:
        return {**decision, "decision": "no_consent", "reason": refusal}
    quiet = sender.quiet_hours
    if quiet is not None and sender.category == "marketing":
        timezone = profile.get("timezone")
        ends = quiet_hours_end(at, quiet, timezone if isinstance(timezone, str) else None)
        if ends is not None:
            return {**decision, "decision": "deferred", "reason": f"quiet hours {quiet.start}-{quiet.end}",
                    "until": ends.isoformat()}
    return {**decision, "decision": "sent", "reason": "consent and quiet hours allow it (caps are applied live)"}
