"""Event-time semantics of delayed scenarios: whatever order events arrive in (within the allowed lateness),
the set of messages sent is the one an oracle finds reading the stream in event-time order.

    generated stream ─▶ arrival order (each event delayed by up to the allowed lateness, so they shuffle)
        ├─▶ model: the stage's rules (cdp_hub/triggers/timeline.py) applied in arrival order, in memory
        ├─▶ the real triggers stage (PostgreSQL, Redis), for a few streams
        └─▶ oracle: one pending timer per (profile, cart) in event-time order; a trigger resets it, a
            cancel during the wait drops it, its fire time sends it
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_hub.bus.base import OutgoingMessage, Record, TopicPartition
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage, trigger_options
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.store import ConsentRepository, ConsentStatement, EventRepository
from cdp_hub.triggers.scenario import Scenario
from cdp_hub.triggers.stage import TriggerStage
from cdp_hub.triggers.timeline import Watermarks, cancels, is_due, is_too_late, supersedes

BASE = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
DELAY = timedelta(minutes=10)
LATENESS = timedelta(minutes=5)


@dataclass(frozen=True)
class Ev:
    """A generated event: a cart update (trigger) or an order (cancel) of a profile, at an event time,
    arriving ``late`` after it happened."""

    n: int
    kind: str  # "cart" or "order"
    profile: int
    cart: str
    at: datetime
    late: timedelta

    @property
    def key(self) -> tuple[datetime, int]:
        return self.at, self.n


def arrival_order(events: list[Ev]) -> list[Ev]:
    return sorted(events, key=lambda e: (e.at + e.late, e.n))


def oracle(events: list[Ev]) -> set[int]:
    """The triggers that send, reading the stream in event-time order (ties: carts before orders)."""
    pending: dict[tuple[int, str], Ev] = {}
    sent: set[int] = set()

    def fire_until(t: datetime) -> None:
        for k, trigger in list(pending.items()):
            if trigger.at + DELAY <= t:
                sent.add(trigger.n)
                del pending[k]

    for e in sorted(events, key=lambda e: (e.at, e.kind != "cart", e.n)):
        fire_until(e.at)
        if e.kind == "cart":
            pending[(e.profile, e.cart)] = e  # a new wait, or the old one reset
        else:
            for k, trigger in list(pending.items()):
                if k[0] == e.profile and trigger.at <= e.at < trigger.at + DELAY:
                    del pending[k]
    sent.update(t.n for t in pending.values())
    return sent


def model(events: list[Ev], *, drained: bool = False) -> set[int]:
    """The stage's rules, in arrival order: a watermark, timers held until it passes their fire time plus
    the lateness, in-stream cancels, and at fire time the superseded and event-time cancel checks.
    ``drained``: after each event the consumer says the partition is read to its end (a steady trickle),
    so the partition's watermark is the clock (the event's arrival) rather than its newest event time."""
    clock = [BASE]
    marks = Watermarks(lambda: clock[0], idle_seconds=1e9, monotonic=lambda: 0.0)
    timers: dict[int, tuple[Ev, str]] = {}
    cancels_seen: list[Ev] = []
    sent: set[int] = set()

    def fire_due() -> None:
        mark = marks.watermark()
        for n, (trigger, status) in sorted(timers.items()):
            fire_at = trigger.at + DELAY
            if status != "pending" or not is_due(fire_at, mark, LATENESS):
                continue
            if any(other.profile == trigger.profile and other.cart == trigger.cart
                   and supersedes(trigger.key, fire_at, other.key) for other, _ in timers.values()):
                timers[n] = (trigger, "superseded")
            elif any(c.profile == trigger.profile and cancels(trigger.at, fire_at, c.at) for c in cancels_seen):
                timers[n] = (trigger, "cancelled")
            else:
                timers[n] = (trigger, "fired")
                sent.add(n)

    for e in arrival_order(events):
        clock[0] = max(clock[0], e.at + e.late)
        mark = marks.observe(0, e.at)  # an event is judged where it stands in the stream (event time)
        if e.kind == "cart":
            if not is_too_late(e.at + DELAY, mark, LATENESS):
                timers[e.n] = (e, "pending")
        else:
            cancels_seen.append(e)
            for n, (trigger, status) in timers.items():
                if status == "pending" and trigger.profile == e.profile and cancels(
                        trigger.at, trigger.at + DELAY, e.at):
                    timers[n] = (trigger, "cancelled")
        if drained:
            marks.drained(0, clock[0])
        fire_due()
    clock[0] = clock[0] + timedelta(days=1)
    marks.caught_up()
    fire_due()
    return sent


events_strategy = st.lists(
    st.tuples(st.sampled_from(["cart", "cart", "order"]), st.integers(0, 1), st.sampled_from(["a", "b"]),
              st.integers(0, 40), st.integers(0, int(LATENESS.total_seconds() // 60))),
    min_size=1, max_size=10,
).map(lambda rows: [Ev(n, kind, p, cart, BASE + timedelta(minutes=m), timedelta(minutes=late))
                    for n, (kind, p, cart, m, late) in enumerate(rows)])


@settings(max_examples=500, deadline=None)
@given(events_strategy)
def test_arrival_order_within_the_lateness_does_not_change_what_is_sent(events: list[Ev]) -> None:
    # Hypothesis shrinks a failure to its smallest stream; the sweep below covers thousands more. Both ways a
    # partition's watermark moves: by event time, and by the clock when the consumer has read it to its end.
    assert model(events) == oracle(events) == model(events, drained=True)


def test_thousands_of_shuffled_streams_send_what_the_oracle_sends() -> None:
    rng = random.Random(20260601)
    for _ in range(5000):
        stream = random_stream(rng)
        assert model(stream) == oracle(stream) == model(stream, drained=True), stream


def test_without_holding_timers_for_late_events_the_property_fails() -> None:
    # The property can fail: a stage that fired timers as soon as their time came (no allowed lateness)
    # would send carts whose order arrives late.
    cart = Ev(0, "cart", 0, "a", BASE, timedelta(0))
    order = Ev(1, "order", 0, "", BASE + timedelta(minutes=9), timedelta(minutes=4))
    bump = Ev(2, "cart", 1, "a", BASE + timedelta(minutes=11), timedelta(0))
    assert oracle([cart, order, bump]) == {2} == model([cart, order, bump])
    assert not is_due(BASE + DELAY, BASE + timedelta(minutes=11), LATENESS)  # held while the order may come
    # A drained partition is at the clock, and the clock is the arrival: still inside the lateness.
    assert model([cart, order, bump], drained=True) == {2}


def test_a_drained_partition_moves_the_watermark_not_the_marks_events_are_judged_by() -> None:
    clock = [BASE + timedelta(hours=1)]
    marks = Watermarks(lambda: clock[0], idle_seconds=1e9, monotonic=lambda: 0.0)
    assert marks.observe(0, BASE) == BASE and marks.observe(1, BASE + timedelta(minutes=30)) == BASE + timedelta(
        minutes=30)
    assert marks.watermark() == BASE  # the slowest partition holds every timer
    marks.drained(0, clock[0] - timedelta(seconds=1))
    assert marks.of(0) == clock[0]  # read to its end, nothing since: at the clock, as on an empty poll
    assert marks.watermark() == BASE + timedelta(minutes=30)
    # An event held up upstream arrives after the drain: it is judged by its own time (not too late) ...
    assert marks.observe(0, BASE + timedelta(minutes=5)) == BASE + timedelta(minutes=5)
    # ... while the partition's watermark stays where the broker's answer put it.
    assert marks.of(0) == clock[0] - timedelta(seconds=1)
    marks.drained(0, clock[0] - timedelta(seconds=5))  # an older answer never moves it back
    marks.observe(0, BASE)
    assert marks.of(0) == clock[0] - timedelta(seconds=1)


def test_the_oracle_knows_hold_until_and_cancels() -> None:
    carts = [Ev(n, "cart", 0, "a", BASE + timedelta(minutes=m), timedelta(0)) for n, m in enumerate((0, 4, 8))]
    assert oracle(carts) == {2}  # one message, a delay after the last change
    order = Ev(9, "order", 0, "", BASE + timedelta(minutes=12), timedelta(0))
    assert oracle([*carts, order]) == set()
    early_order = Ev(9, "order", 0, "", BASE - timedelta(minutes=1), timedelta(0))
    assert oracle([*carts, early_order]) == {2}  # an order before the cart does not cancel it


def random_stream(rng: random.Random) -> list[Ev]:
    return [Ev(n, rng.choice(["cart", "cart", "order"]), rng.randint(0, 1), rng.choice("ab"),
               BASE + timedelta(minutes=rng.randint(0, 40)), timedelta(minutes=rng.randint(0, 5)))
            for n in range(rng.randint(4, 9))]


CART = Scenario.model_validate({
    "id": "cart", "trigger": {"event": "cart.updated"}, "delay": "10m", "cancel_on": ["order.placed"],
    "hold_until": {"key": "event.properties.cart_id"}, "channel": "email", "template": "abandoned_cart"})


async def test_the_real_stage_sends_what_the_oracle_sends(hub: Hub) -> None:
    for seed in range(6):
        stream = random_stream(random.Random(seed))
        assert await through_the_stage(hub, stream, seed) == oracle(stream), (seed, stream)


async def test_the_real_stage_sends_what_the_oracle_sends_in_batches(hub: Hub) -> None:
    # Several events a batch, as a consumer catching up reads them: a batch can span more than the delay, and
    # its first cart is judged by the watermark where it stands in the stream, not by the batch's last event.
    for seed in range(6, 16):
        stream = random_stream(random.Random(seed))
        assert await through_the_stage(hub, stream, seed, per_batch=3) == oracle(stream), (seed, stream)


async def test_the_real_stage_reading_partitions_to_their_end_sends_what_the_oracle_sends(hub: Hub) -> None:
    # A steady trickle: each batch empties the partition, so its watermark is the clock, not its newest event.
    for seed in range(16, 26):
        stream = random_stream(random.Random(seed))
        assert await through_the_stage(hub, stream, seed, per_batch=2, drained=True) == oracle(stream), (
            seed, stream)


async def through_the_stage(hub: Hub, stream: list[Ev], seed: int, per_batch: int = 1,
                            drained: bool = False) -> set[int]:
    """The stream through the real triggers stage in arrival order, ``per_batch`` events a batch, the clock at
    the last arrival of each (``drained``: each batch reads the partition to its end, as a trickle does); the
    numbers of the triggers that were sent."""
    profiles = await _consenting_profiles(hub, 2)
    now = [BASE]
    hub.clock = lambda: now[0]
    stage = build_stage(hub, "triggers", scenarios=[CART],
                        trigger_options=trigger_options(hub, allowed_lateness=LATENESS))
    assert isinstance(stage, TriggerStage)
    numbers: dict[str, int] = {}
    sent: set[int] = set()

    async def fire(out: StageOutput | None = None) -> None:
        if out is None:
            out = StageOutput()
            await stage.fire_due_timers(out)
        for callback in out.on_durable:
            await callback()
        for m in out.messages:
            if m.topic == "cdp.messages":
                intent = MessageIntent.model_validate_json(m.value)
                sent.add(numbers[str(intent.trigger_event_id)])

    arrived = arrival_order(stream)
    for start in range(0, len(arrived), per_batch):
        batch = arrived[start:start + per_batch]
        now[0] = max(now[0], *(e.at + e.late for e in batch))
        events = [_event(e, profiles[e.profile], seed) for e in batch]
        numbers.update((str(event.event_id), e.n) for e, event in zip(batch, events, strict=True))
        await _stored(hub, events)
        if drained:
            stage.drained({TopicPartition("cdp.profile-events", 0): 0.0})
        await fire(await stage.handle([Record("cdp.profile-events", 0, e.n, b"", event.to_json())
                                       for e, event in zip(batch, events, strict=True)]))
        await fire()
    now[0] = now[0] + timedelta(days=1)
    stage.watermarks.caught_up()
    await fire()
    return sent


async def _consenting_profiles(hub: Hub, count: int) -> list[uuid.UUID]:
    """``count`` new profiles, each with e-mail marketing consent from the day before BASE."""
    profiles = [uuid.uuid4() for _ in range(count)]
    for pid in profiles:
        await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, '{}')", pid)
    await ConsentRepository(hub.store).record([
        ConsentStatement(pid, "email", "marketing", "opted_in", BASE - timedelta(days=1), "form", uuid.uuid4())
        for pid in profiles])
    return profiles


async def _stored(hub: Hub, events: list[Any]) -> None:
    """The batch's events stored as the resolver stores them before the triggers stage sees them."""
    async with hub.store.pool.acquire() as conn:
        await EventRepository(hub.store).insert_resolved(
            conn, [v.event_id for v in events], [v.occurred_at for v in events], [v.profile_id for v in events],
            [v.type for v in events], [v.source for v in events], [v.source_record_id for v in events],
            [v.received_at for v in events], [v.to_json().decode() for v in events])


async def _arrive(hub: Hub, stage: TriggerStage, e: Ev, pid: uuid.UUID, seed: int, *, drained: bool) -> StageOutput:
    """``e`` as a batch of its own through the stage, stored first (``drained``: the batch reads its partition to
    the end); its output, made durable."""
    event = _event(e, pid, seed)
    await _stored(hub, [event])
    if drained:
        stage.drained({TopicPartition(hub.topics.profile_events, 0): 0.0})
    out = await stage.handle([Record(hub.topics.profile_events, 0, e.n, b"", event.to_json())])
    for callback in out.on_durable:
        await callback()
    return out


def _event(e: Ev, pid: uuid.UUID, seed: int) -> Any:
    if e.kind == "cart":
        etype, props = "cart.updated", {"cart_id": e.cart, "total": "10"}
    else:
        etype, props = "order.placed", {"order_id": f"o{e.n}"}
    return parse_event({"type": etype, "source": "shop", "source_record_id": f"{seed}-{e.n}",
                        "occurred_at": e.at.isoformat(), "identities": [{"kind": "email", "value": f"{pid}@x.ru"}],
                        "properties": props, "profile_id": str(pid),
                        "received_at": (e.at + e.late).isoformat()})  # the edge took it when it arrived


async def test_a_timer_fires_in_the_batch_that_reads_its_partition_to_the_end(hub: Hub) -> None:
    # A trickle whose newest event time lags the clock (a device that sends its events late): by event time
    # alone the cart's timer would wait for an event of the partition newer than its fire time plus the
    # lateness (or for an empty poll); a batch that empties the partition moves it to the clock at once.
    now = [BASE]
    hub.clock = lambda: now[0]
    for drained in (False, True):
        (pid,) = await _consenting_profiles(hub, 1)
        stage = build_stage(hub, "triggers", scenarios=[CART],
                            trigger_options=trigger_options(hub, allowed_lateness=LATENESS))
        assert isinstance(stage, TriggerStage)
        seed = 900 + drained
        cart = Ev(0, "cart", 0, "a", BASE, timedelta(0))
        slow = Ev(1, "order", 0, "", BASE - timedelta(hours=1), DELAY + LATENESS + timedelta(hours=1, seconds=1))
        sent: list[str] = []
        for e in (cart, slow):
            now[0] = e.at + e.late
            out = await _arrive(hub, stage, e, pid, seed, drained=drained)
            sent += [m.topic for m in out.messages if m.topic == "cdp.messages"
                     and MessageIntent.model_validate_json(m.value).profile_id == str(pid)]
        # The order happened an hour before the cart: it does not cancel it (and it came past the fire time).
        assert sent == (["cdp.messages"] if drained else []), drained


async def test_due_timers_wait_while_the_resolver_has_a_backlog(hub: Hub) -> None:
    # After an outage the resolver works through a backlog on cdp.events while the triggers stage's own input is
    # drained (its watermark is the clock): the order that cancels a cart reminder may still be in that backlog.
    await _held_while_the_resolver_is_behind(hub)


@pytest.mark.kafka
async def test_due_timers_wait_while_the_resolver_has_a_backlog_on_kafka(kafka_hub: Hub) -> None:
    await _held_while_the_resolver_is_behind(kafka_hub)


async def _held_while_the_resolver_is_behind(hub: Hub) -> None:
    events_topic = hub.topics.events
    await hub.bus.ensure_topics([events_topic], partitions=1)
    await hub.bus.publish_many([OutgoingMessage(events_topic, b"{}") for _ in range(12)])
    resolver = hub.bus.consumer([events_topic], group=f"{hub.settings.topic_prefix}cdp-hub.resolver")
    await resolver.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        read = 0
        while read < 12 and loop.time() < deadline:
            read += len(await resolver.getmany(timeout_ms=200))
        await resolver.commit({TopicPartition(events_topic, 0): 2})  # ten records behind
        (pid,) = await _consenting_profiles(hub, 1)
        now = [BASE]
        hub.clock = lambda: now[0]
        stage = build_stage(hub, "triggers", scenarios=[CART], trigger_options=trigger_options(
            hub, allowed_lateness=LATENESS, backlog_holds_timers=5, backlog_check_seconds=0.0))
        assert isinstance(stage, TriggerStage)
        sent: list[str] = []

        async def batch(e: Ev) -> None:
            now[0] = e.at + e.late
            out = await _arrive(hub, stage, e, pid, 950, drained=True)
            sent.extend(m.topic for m in out.messages if m.topic == hub.topics.messages)

        await batch(Ev(0, "cart", 0, "a", BASE, timedelta(0)))
        # Past the fire time plus the lateness, the partition drained: due, but the resolver is 10 behind.
        await batch(Ev(1, "cart", 0, "b", BASE + DELAY + LATENESS + timedelta(minutes=1), timedelta(0)))
        assert sent == []
        assert hub.metrics.timers_held._value.get() == 1

        async def unreadable(group: str, topic: str) -> dict[int, int] | None:
            raise TimeoutError("the broker does not answer")

        reader = hub.bus.group_lag
        hub.bus.group_lag = unreadable  # type: ignore[method-assign]
        try:
            # A backlog that cannot be read leaves the hold as it was.
            await batch(Ev(3, "cart", 0, "d", BASE + DELAY + LATENESS + timedelta(minutes=1, seconds=30),
                           timedelta(0)))
            assert sent == []
        finally:
            hub.bus.group_lag = reader  # type: ignore[method-assign]
        await resolver.commit()  # caught up
        await batch(Ev(2, "cart", 0, "c", BASE + DELAY + LATENESS + timedelta(minutes=2), timedelta(0)))
        assert sent == [hub.topics.messages]  # the first cart's reminder, now
        assert hub.metrics.timers_held._value.get() == 0
    finally:
        await resolver.stop()
