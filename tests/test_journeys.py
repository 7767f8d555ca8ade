"""Journeys (multi-step scenarios) through the resolver and triggers stages on real PostgreSQL and Redis, and
through Kafka: the path each profile takes (wait_for, branch), exactly once per step under shuffled
redelivery, exits, goals, merges, restarts mid-wait and the re-entry policy."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from cdp_hub.bus.base import Record
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline, build_stage
from cdp_hub.pipeline.stage import Stage, StageOutput
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.schema.events import Event
from cdp_hub.store import SegmentRepository
from cdp_hub.triggers.scenario import Scenario
from cdp_hub.triggers.stage import TriggerStage
from tests.test_cli import cdp_hub
from tests.waiting import until as _until

T = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # 12:00 in Moscow: no quiet hours
H = timedelta(hours=1)
D = timedelta(days=1)

ONBOARDING = Scenario.model_validate(yaml.safe_load("""
id: onboarding
description: A hello; then, when the app is installed within two days, an offer by loyalty tier and orders.
trigger: {event: profile.created}
category: marketing
exit_on: [customer.deleted]
goals: [{event: order.paid}]
steps:
  - id: hello
    send: {channel: email, template: welcome}
  - id: await_app
    wait_for: {event: app.installed, within: 2d}
    on_event: tier
    on_timeout: nudge
  - id: nudge
    send: {channel: email, template: app_install_nudge}
    next: end
  - id: tier
    branch:
      - if: [{field: profile.loyalty_tier, op: eq, value: gold}]
        then: gold_offer
      - if: [{count: order.placed, within: 30d, op: gte, value: 1}]
        then: buyer_offer
    else: first_offer
  - id: gold_offer
    send: {channel: email, template: tier_upgrade}
    next: end
  - id: buyer_offer
    send: {channel: email, template: cross_sell}
    next: end
  - id: first_offer
    send: {channel: email, template: welcome_day3}
"""))


def event(kind: str, who: str, at: datetime, rid: str, traits: dict[str, Any] | None = None,
          **props: Any) -> Event:
    return parse_event({"type": kind, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
                        "identities": [{"kind": "email", "value": f"{who}@example.ru"}], "properties": props,
                        "traits": traits or {}})


def consent(who: str, at: datetime) -> Event:
    return event("consent.changed", who, at, f"consent-{who}", channel="email", status="opted_in",
                 evidence={"method": "double_opt_in", "reference": "signup"})


class Driver:
    """The resolver and triggers stages driven by hand: each record batch through both, callbacks run as the
    runner would once the output is durable, a clock the test moves."""

    def __init__(self, hub: Hub, scenarios: list[Scenario], now: datetime) -> None:
        self.hub = hub
        self.now = [now]
        hub.clock = lambda: self.now[0]
        self.resolver: Stage[Any] = build_stage(hub, "resolver")
        self.triggers = self.new_triggers(scenarios)
        self.offset = 0
        self.profile_records: list[Record] = []
        """Every profile-events record the resolver produced: what the triggers stage read."""
        self.intents: list[MessageIntent] = []
        self.published: list[Event] = []

    def new_triggers(self, scenarios: list[Scenario]) -> TriggerStage:
        stage = build_stage(self.hub, "triggers", scenarios=scenarios)
        assert isinstance(stage, TriggerStage)
        self.triggers = stage
        return stage

    async def _durable(self, out: StageOutput) -> None:
        for message in out.messages:
            if message.topic == self.hub.topics.messages:
                self.intents.append(MessageIntent.model_validate_json(message.value))
            elif message.topic == self.hub.topics.events:
                self.published.append(Event.from_json(message.value))
        for callback in out.on_durable:
            await callback()

    async def feed(self, events: list[Event]) -> None:
        records = []
        for e in events:
            self.offset += 1
            records.append(Record(self.hub.topics.events, 0, self.offset, None, e.to_json()))
        out = await self.resolver.handle(records)
        for callback in out.on_durable:
            await callback()
        produced = [m for m in out.messages if m.topic == self.hub.topics.profile_events]
        mine = []
        for m in produced:
            self.offset += 1
            mine.append(Record(m.topic, 0, self.offset, m.key, m.value))
        self.profile_records.extend(mine)
        await self.deliver(mine)

    async def deliver(self, records: list[Record]) -> None:
        """Records straight to the triggers stage (a redelivery, in any order)."""
        await self._durable(await self.triggers.handle(records))

    async def at(self, when: datetime) -> None:
        """The clock moves to ``when``; every partition is caught up; due timers and positions fire."""
        self.now[0] = when
        self.triggers.watermarks.caught_up()
        out = StageOutput()
        await self.triggers.fire_due_timers(out)
        await self._durable(out)

    def sent(self, who_of: dict[str, str]) -> list[tuple[str, str]]:
        """``(customer, template)`` of every distinct message id sent, sorted."""
        seen = {i.message_id: (who_of.get(i.profile_id, i.profile_id), i.template) for i in self.intents}
        return sorted(seen.values())

    async def who(self) -> dict[str, str]:
        rows = await self.hub.store.fetch(
            "SELECT profile_id, value FROM identities WHERE kind = 'email'")
        return {str(r["profile_id"]): r["value"].split("@")[0] for r in rows}


async def positions(hub: Hub) -> list[tuple[str, str, str | None, int]]:
    rows = await hub.store.fetch(
        "SELECT i.value, j.status, j.step, j.step_seq FROM journey_positions j"
        " JOIN identities i ON i.profile_id = j.profile_id AND i.kind = 'email' ORDER BY i.value, j.entered_at")
    return [(r["value"].split("@")[0], r["status"], r["step"], r["step_seq"]) for r in rows]


async def decided(hub: Hub, driver: Driver) -> list[tuple[str, str, str]]:
    """``(customer, decision, template of the step)`` of the journey's message.decided events (distinct ids)."""
    who = await driver.who()
    seen = {}
    for e in driver.published:
        if e.type == "message.decided" and e.properties["scenario"] == ONBOARDING.id:
            seen[e.event_id] = (who.get(str(e.profile_id), ""), e.properties["decision"])
    return sorted(seen.values())


async def test_wait_for_and_branch_take_each_profile_its_path_under_shuffled_redelivery(hub: Hub) -> None:
    drive = Driver(hub, [ONBOARDING], T)
    # ann installs the app on day 1 and is gold; bob installs it and has ordered; cid installs it (no order);
    # dan never installs it; eve installs it after the two days; fay gave no consent.
    people = ["ann", "bob", "cid", "dan", "eve", "fay"]
    await drive.feed([consent(p, T - H) for p in people if p != "fay"])
    await drive.feed([event("customer.updated", "ann", T, "ann-tier", traits={"loyalty_tier": "gold"}),
                      event("order.placed", "bob", T - 3 * D, "bob-old-order", order_id="b0", total="100"),
                      event("customer.updated", "cid", T, "cid-1"),
                      event("customer.updated", "dan", T, "dan-1"),
                      event("customer.updated", "eve", T, "eve-1"),
                      event("customer.updated", "fay", T, "fay-1")])
    await drive.at(T + H)
    # The installs (eve's after her two days).
    await drive.feed([event("app.installed", "ann", T + D, "ann-app"),
                      event("app.installed", "bob", T + 2 * H, "bob-app"),
                      event("app.installed", "cid", T + 5 * H, "cid-app"),
                      event("app.installed", "eve", T + 3 * D, "eve-app")])
    # Everything the triggers stage read so far, again, twice, shuffled: nothing moves twice.
    again = drive.profile_records * 2
    random.Random(7).shuffle(again)
    for chunk in range(0, len(again), 5):
        await drive.deliver(again[chunk:chunk + 5])
    await drive.at(T + D + H)
    await drive.at(T + 2 * D + H)  # dan's and eve's waits time out
    await drive.at(T + 4 * D)
    for chunk in range(0, len(again), 7):
        await drive.deliver(again[chunk:chunk + 7])
    await drive.at(T + 5 * D)

    who = await drive.who()
    sent = drive.sent(who)
    assert sent == [("ann", "tier_upgrade"), ("ann", "welcome"),
                    ("bob", "cross_sell"), ("bob", "welcome"),
                    ("cid", "welcome"), ("cid", "welcome_day3"),
                    ("dan", "app_install_nudge"), ("dan", "welcome"),
                    ("eve", "app_install_nudge"), ("eve", "welcome")]
    # One decision per step: fay's steps were decided no_consent, once each.
    decisions = await decided(hub, drive)
    assert [d for who_, d in decisions if who_ == "fay"] == ["no_consent", "no_consent"]
    assert len([d for who_, d in decisions if d == "sent"]) == len(sent)
    final = {p[0]: p[1:] for p in await positions(hub)}
    assert {p: s[0] for p, s in final.items()} == dict.fromkeys(people, "completed")
    assert final["ann"][2] == final["cid"][2] == 4  # hello -> await_app -> tier -> offer -> end


async def test_exit_goal_restart_and_reentry(hub: Hub) -> None:
    journey = Scenario.model_validate(yaml.safe_load("""
id: series
trigger: {event: customer.updated}
conditions: [{field: event.properties.form, op: eq, value: signup}]
category: marketing
reentry: {once_per: 7d}
exit_on: [order.cancelled]
goals: [{event: order.placed, conditions: [{field: event.properties.total, op: gte, value: 100}]}]
steps:
  - {id: one, send: {channel: email, template: welcome}}
  - {id: pause, wait: 3d}
  - {id: two, send: {channel: email, template: welcome_day3}}
  - {id: later, wait: {duration: 2d, at: "10:00"}}
  - {id: three, send: {channel: email, template: cross_sell}}
"""))
    drive = Driver(hub, [journey], T)
    people = ["ann", "bob", "cid", "dan"]
    await drive.feed([consent(p, T - H) for p in people])
    await drive.feed([event("customer.updated", p, T, f"{p}-signup", form="signup") for p in people])
    # ann orders 50 (no goal), then 150 (the goal) on day 1; bob cancels an order on day 4 (exit after two);
    # cid signs up again on day 2 (inside 7 days: no second entry); dan goes through.
    await drive.feed([event("order.placed", "ann", T + D, "ann-o1", order_id="a1", total="50"),
                      event("order.placed", "ann", T + D + H, "ann-o2", order_id="a2", total="150"),
                      event("customer.updated", "cid", T + 2 * D, "cid-signup-2", form="signup")])
    await drive.at(T + 3 * D + H)
    await drive.feed([event("order.cancelled", "bob", T + 4 * D, "bob-c", order_id="b1")])
    # A restart mid-wait: a new stage object finds the positions in PostgreSQL and goes on.
    drive.new_triggers([journey])
    await drive.at(T + 6 * D)
    await drive.at(T + 7 * D)
    # dan signs up again after the 7 days: a second entry.
    await drive.feed([event("customer.updated", "dan", T + 8 * D, "dan-signup-2", form="signup")])
    await drive.at(T + 8 * D + H)

    sent = drive.sent(await drive.who())
    assert sent == [("ann", "welcome"),
                    ("bob", "welcome"), ("bob", "welcome_day3"),
                    ("cid", "cross_sell"), ("cid", "welcome"), ("cid", "welcome_day3"),
                    ("dan", "cross_sell"), ("dan", "welcome"), ("dan", "welcome"), ("dan", "welcome_day3")]
    # The third message goes on the second day after the second one (day 3, 12:00 in Moscow) at 10:00 Moscow
    # time: 07:00 UTC on day 5.
    third = next(i for i in drive.intents if i.template == "cross_sell")
    assert third.trigger_event is not None
    assert third.trigger_event["occurred_at"].startswith((T + 5 * D).date().isoformat() + "T07:00")
    assert await positions(hub) == [
        ("ann", "converted", "pause", 1), ("bob", "exited", "later", 3), ("cid", "completed", None, 5),
        ("dan", "completed", None, 5), ("dan", "active", "pause", 1)]
    ends = {(e.type, e.properties["cause_type"]) for e in drive.published if e.type.startswith("journey.")}
    assert ends == {("journey.converted", "order.placed"), ("journey.exited", "order.cancelled")}
    # The conversion is an event in the store too (the triggers stage published it to cdp.events).
    converted = next(e for e in drive.published if e.type == "journey.converted")
    assert converted.properties["cause_event_id"] == str(event("order.placed", "ann", T + D + H, "ann-o2", order_id="a2", total="150").event_id)


async def test_an_exit_with_conditions_ends_only_on_an_event_they_hold_for(hub: Hub) -> None:
    journey = Scenario.model_validate(yaml.safe_load("""
id: winback
trigger: {event: customer.updated}
category: marketing
exit_on:
  - customer.deleted
  - {event: order.placed, conditions: [{field: event.properties.total, op: gte, value: 1000}]}
steps:
  - {id: one, send: {channel: email, template: welcome}}
  - {id: pause, wait: 3d}
  - {id: two, send: {channel: email, template: welcome_day3}}
"""))
    assert journey.stream_types >= {"customer.deleted", "order.placed"}
    drive = Driver(hub, [journey], T)
    people = ["ann", "bob", "cid"]
    await drive.feed([consent(p, T - H) for p in people])
    await drive.feed([event("customer.updated", p, T, f"{p}-in") for p in people])
    # ann's small order does not end the journey, bob's large one does; cid is deleted.
    await drive.feed([event("order.placed", "ann", T + D, "ann-o", order_id="a", total="300"),
                      event("order.placed", "bob", T + D, "bob-o", order_id="b", total="1500"),
                      event("customer.deleted", "cid", T + D, "cid-del")])
    await drive.at(T + 4 * D)
    assert drive.sent(await drive.who()) == [("ann", "welcome"), ("ann", "welcome_day3"),
                                             ("bob", "welcome"), ("cid", "welcome")]
    assert await positions(hub) == [("ann", "completed", None, 3), ("bob", "exited", "pause", 1),
                                    ("cid", "exited", "pause", 1)]


async def test_reentry_once_and_always(hub: Hub) -> None:
    base = {"trigger": {"event": "order.placed"}, "category": "transactional",
            "steps": [{"id": "thanks", "send": {"channel": "email", "template": "order_confirmation"}},
                      {"id": "pause", "wait": "1d"}]}
    once = Scenario.model_validate({**base, "id": "once_only"})
    always = Scenario.model_validate({**base, "id": "every_time", "reentry": "always"})
    drive = Driver(hub, [once, always], T)
    await drive.feed([event("order.placed", "ann", T, "o1", order_id="1")])
    await drive.feed([event("order.placed", "ann", T + H, "o2", order_id="2")])  # in the journey: no entry
    await drive.at(T + 2 * D)
    await drive.feed([event("order.placed", "ann", T + 2 * D, "o3", order_id="3")])
    by_journey: dict[str, int] = {}
    for i in {i.message_id: i for i in drive.intents}.values():
        by_journey[i.scenario] = by_journey.get(i.scenario, 0) + 1
    assert by_journey == {"once_only": 1, "every_time": 2}
    # Where everybody is, as an operator sees it.
    res = await asyncio.to_thread(cdp_hub, "scenarios", "positions", "--json",
                                  env={"CDP_HUB_POSTGRES_DSN": hub.settings.postgres_dsn})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        {"journey": "every_time", "status": "active", "step": "pause", "n": 1},
        {"journey": "every_time", "status": "completed", "step": None, "n": 1},
        {"journey": "once_only", "status": "completed", "step": None, "n": 1}]


async def test_the_position_follows_a_merge(hub: Hub) -> None:
    drive = Driver(hub, [ONBOARDING], T)
    # Two profiles (an e-mail, a phone) each enter; then one event names both and the resolver merges them.
    await drive.feed([consent("ann", T - H)])
    phone = parse_event({"type": "customer.updated", "source": "shop", "source_record_id": "p1",
                         "occurred_at": (T + H).isoformat(), "identities": [{"kind": "phone", "value": "+79161234567"}]})
    await drive.feed([phone])
    both = parse_event({"type": "customer.updated", "source": "shop", "source_record_id": "both",
                        "occurred_at": (T + 2 * H).isoformat(),
                        "identities": [{"kind": "email", "value": "ann@example.ru"},
                                       {"kind": "phone", "value": "+79161234567"}]})
    await drive.feed([both])
    rows = await hub.store.fetch("SELECT profile_id, status, entered_at FROM journey_positions ORDER BY entered_at")
    survivor = await hub.store.fetchval("SELECT profile_id FROM profiles WHERE merged_into IS NULL")
    assert {r["profile_id"] for r in rows} == {survivor}
    # The earlier-entered entry stays active; the other is closed as merged.
    assert [r["status"] for r in rows] == ["active", "merged"]
    # The app comes: the surviving position goes on (one tier offer, to the survivor).
    await drive.feed([event("app.installed", "ann", T + 3 * H, "app")])
    offers = {i.message_id: i for i in drive.intents if i.template in ("first_offer", "welcome_day3")}
    assert [i.profile_id for i in offers.values()] == [str(survivor)]


async def test_a_journey_through_kafka_with_redelivered_records(kafka_hub: Hub) -> None:
    hub = kafka_hub
    now = [T]
    hub.clock = lambda: now[0]
    pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver"), build_stage(hub, "triggers",
                                                                              scenarios=[ONBOARDING])])
    task = asyncio.create_task(pipeline.run())
    try:
        ingest = Ingestor(hub)
        batch = [consent("ann", T - H), consent("bob", T - H),
                 event("customer.updated", "ann", T - H, "ann-1", traits={"loyalty_tier": "gold"}),
                 event("customer.updated", "bob", T, "bob-1"),
                 event("app.installed", "ann", T + 2 * H, "ann-app")]
        shuffled = batch[3:] * 2
        random.Random(3).shuffle(shuffled)
        await ingest.publish_events(batch[:3])
        await ingest.publish_events(shuffled)  # duplicates, out of order

        async def settled() -> bool:
            return await hub.store.fetchval(
                "SELECT count(*) FROM journey_positions WHERE status = 'completed'") == 1
        await _until(settled)
        now[0] = T + 3 * D  # bob's wait times out: the stage's timer check moves him on

        async def done() -> bool:
            return await hub.store.fetchval(
                "SELECT count(*) FROM journey_positions WHERE status = 'completed'") == 2
        await _until(done)
        await pipeline.drain(idle_polls=2, timeout=30)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)
    intents = [MessageIntent.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.messages)]
    templates = sorted({(i.message_id, i.template) for i in intents}, key=lambda x: x[1])
    assert [t for _, t in templates] == ["app_install_nudge", "tier_upgrade", "welcome", "welcome"]



async def test_a_branch_reads_segment_membership_from_the_segments_store(hub: Hub) -> None:
    journey = Scenario.model_validate(yaml.safe_load("""
id: by_segment
trigger: {event: order.placed}
category: transactional
steps:
  - {id: pause, wait: 1d}
  - id: which
    branch:
      - if: [{field: profile.segments, op: contains, value: big_spenders}]
        then: big
    else: small
  - {id: big, send: {channel: email, template: cross_sell}, next: end}
  - {id: small, send: {channel: email, template: welcome}}
"""))
    drive = Driver(hub, [journey], T)
    await drive.feed([event("order.placed", p, T, f"{p}-o", order_id=p) for p in ("ann", "bob")])
    ann = next(pid for pid, who in (await drive.who()).items() if who == "ann")
    # ann joins the segment during the wait (a batch recomputation wrote segment_members).
    await SegmentRepository(hub.store).apply_changes([(uuid.UUID(ann), "big_spenders")], [], T + H)
    await drive.at(T + 2 * D)
    assert drive.sent(await drive.who()) == [("ann", "cross_sell"), ("bob", "welcome")]


async def test_journey_sends_go_through_caps_and_quiet_hours(hub: Hub) -> None:
    journey = Scenario.model_validate(yaml.safe_load("""
id: nudges
trigger: {event: cart.updated}
category: marketing
frequency_cap: {max: 2, per: 7d, scope: scenario}
quiet_hours: {start: "21:00", end: "09:00"}
steps:
  - {id: first, send: {channel: email, template: abandoned_cart}}
  - {id: evening, wait: {at: "22:00"}}
  - {id: second, send: {channel: email, template: abandoned_cart}}
  - {id: next_day, wait: 1d}
  - {id: third, send: {channel: email, template: abandoned_cart}}
"""))
    drive = Driver(hub, [journey], T)
    await drive.feed([consent("ann", T - H)])
    await drive.feed([event("cart.updated", "ann", T, "cart", cart_id="c", total="10")])
    # 22:00 in Moscow (19:00 UTC): the second message falls in quiet hours and waits for 09:00 (06:00 UTC).
    await drive.at(T + 11 * H)
    decisions = [e.properties for e in drive.published if e.type == "message.decided"]
    assert [d["decision"] for d in decisions] == ["sent", "deferred"]
    assert decisions[1]["until"] == "2026-06-02T06:00:00Z"
    await drive.at(T + D)  # the quiet hours are over: the held message goes
    # The third step a day later: the journey's cap (2 per 7 days) is full.
    await drive.at(T + 2 * D)
    assert [e.properties["decision"] for e in drive.published if e.type == "message.decided"] == [
        "sent", "deferred", "sent", "capped"]
    assert [i.template for i in {i.message_id: i for i in drive.intents}.values()] == ["abandoned_cart"] * 2
