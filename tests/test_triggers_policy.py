"""The contact policy of the triggers stage on real PostgreSQL and Redis: consent, replays, hold-until,
priorities, caps, quiet hours, and every decision as a ``message.decided`` event and a metric."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cdp_hub.bus.base import Record
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage, trigger_options
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.schema.consent import consent_refusal
from cdp_hub.schema.events import Event
from cdp_hub.store import ConsentRepository, ConsentStatement
from cdp_hub.triggers.scenario import Scenario
from cdp_hub.triggers.stage import TriggerStage

NOON_MSK = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def scenario(sid: str, event: str, **extra: Any) -> Scenario:
    return Scenario.model_validate({"id": sid, "trigger": {"event": event}, "channel": "email",
                                    "template": "welcome", **extra})


async def profile(hub: Hub, golden: dict[str, Any] | None = None, *, consent: str | None = "opted_in",
                  purpose: str = "marketing") -> uuid.UUID:
    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid, golden or {})
    if consent is not None:
        await ConsentRepository(hub.store).record([ConsentStatement(
            pid, "email", purpose, consent, NOON_MSK - timedelta(days=10), "crm", uuid.uuid4(),
            {"method": "double_opt_in", "reference": "confirm-link"})])
    return pid


def record(event_type: str, pid: uuid.UUID, at: datetime, rid: str, *, partition: int = 0,
           context: dict[str, Any] | None = None, **props: Any) -> Record:
    event = parse_event({
        "type": event_type, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
        "identities": [{"kind": "email", "value": f"{pid.hex[:8]}@example.ru"}], "properties": props,
        "profile_id": str(pid), "context": context or {}})
    return Record("cdp.profile-events", partition, 0, str(pid).encode(), event.to_json())


def intents(out: StageOutput) -> list[MessageIntent]:
    return [MessageIntent.model_validate_json(m.value) for m in out.messages if m.topic == "cdp.messages"]


def decisions(out: StageOutput) -> list[tuple[str, str, str]]:
    """``(scenario, decision, reason)`` of each ``message.decided`` event of a batch."""
    found = []
    for m in out.messages:
        if m.topic == "cdp.events" and dict(m.headers).get("cdp.type") == b"message.decided":
            p = Event.from_json(m.value).properties
            found.append((p["scenario"], p["decision"], p["reason"]))
    return sorted(found)


async def fire(s: TriggerStage) -> StageOutput:
    """Due timers of ``s``, marked fired as the runner does once their output is published."""
    out = StageOutput()
    await s.fire_due_timers(out)
    for callback in out.on_durable:
        await callback()
    return out


def stage(hub: Hub, now: datetime, scenarios: list[Scenario], **options: Any) -> TriggerStage:
    hub.clock = lambda: now
    built = build_stage(hub, "triggers", scenarios=scenarios, trigger_options=trigger_options(hub, **options))
    assert isinstance(built, TriggerStage)
    return built


def test_consent_rules() -> None:
    given = {("email", "marketing"): "opted_in", ("sms", "transactional"): "opted_out"}
    assert consent_refusal(given, "email", "marketing", "opt_in") is None
    assert consent_refusal(given, "sms", "marketing", "opt_in") == "no sms marketing consent recorded"
    assert consent_refusal(given, "sms", "marketing", "opt_out") is None  # where the law allows opt-out
    assert consent_refusal(given, "push", "transactional", "opt_in") is None  # no marketing consent needed
    assert consent_refusal(given, "sms", "transactional", "opt_in") == "sms transactional consent opted out"
    assert consent_refusal({("messenger", "marketing"): "opted_in"}, "webhook", "marketing", "opt_in") is None


async def test_no_consent_no_marketing_but_the_transactional_message_goes(hub: Hub) -> None:
    welcome = scenario("welcome", "profile.created")
    receipt = scenario("order_confirmation", "order.paid", category="transactional")
    s = stage(hub, NOON_MSK, [welcome, receipt])
    silent = await profile(hub, consent=None)
    out = await s.handle([record("profile.created", silent, NOON_MSK, "p1", profile_id=str(silent)),
                          record("order.paid", silent, NOON_MSK, "o1", order_id="o1")])
    assert [i.scenario for i in intents(out)] == ["order_confirmation"]
    assert decisions(out) == [("order_confirmation", "sent", "all checks passed"),
                              ("welcome", "no_consent", "no email marketing consent recorded")]

    # Where the law allows opt-out, the deployment says so; an explicit opt-out still stops marketing.
    s = stage(hub, NOON_MSK, [welcome], consent_policy="opt_out")
    assert [i.scenario for i in intents(await s.handle(
        [record("profile.created", silent, NOON_MSK, "p2", profile_id=str(silent))]))] == ["welcome"]
    refused = await profile(hub, consent="opted_out")
    assert decisions(await s.handle([record("profile.created", refused, NOON_MSK, "p3", profile_id=str(refused))])) \
        == [("welcome", "no_consent", "email consent opted out")]

    # "No transactional messages" is respected too.
    blocked = await profile(hub, consent="opted_out", purpose="transactional")
    s = stage(hub, NOON_MSK, [receipt])
    assert decisions(await s.handle([record("order.paid", blocked, NOON_MSK, "o2", order_id="o2")])) == [
        ("order_confirmation", "no_consent", "email transactional consent opted out")]


async def test_history_and_replays_start_no_conversation(hub: Hub) -> None:
    welcome = scenario("welcome", "order.placed")
    receipt = scenario("order_confirmation", "order.placed", category="transactional", max_age="1d")
    s = stage(hub, NOON_MSK, [welcome, receipt])
    pid = await profile(hub)
    in_2019 = [record("order.placed", pid, datetime(2019, 3, d, 12, tzinfo=UTC), f"o{d}", order_id=f"o{d}")
               for d in range(1, 6)]
    out = await s.handle(in_2019)
    assert intents(out) == []
    assert {(sid, d) for sid, d, _ in decisions(out)} == {("welcome", "too_late"), ("order_confirmation", "too_late")}
    assert hub.metrics.trigger_decisions.labels("welcome", "too_late")._value.get() == 5

    # A scenario may look further back than the deployment's max_trigger_age.
    patient = scenario("patient", "order.placed", max_age="30d")
    week_old = record("order.placed", pid, NOON_MSK - timedelta(days=7), "recent", order_id="recent")
    assert [i.scenario for i in intents(await stage(hub, NOON_MSK, [welcome, patient]).handle([week_old]))] == [
        "patient"]

    # A replay marks its events (or the stage runs muted): profiles update, nothing fires.
    fresh = record("order.placed", pid, NOON_MSK, "now", context={"mute_triggers": True}, order_id="now")
    out = await s.handle([fresh])
    assert intents(out) == [] and {d for _, d, _ in decisions(out)} == {"muted"}
    muted = stage(hub, NOON_MSK, [welcome], mute=True)
    assert [d for _, d, _ in decisions(await muted.handle([record("order.placed", pid, NOON_MSK, "n2",
                                                                   order_id="n2")]))] == ["muted"]


async def test_three_cart_updates_one_message_a_delay_after_the_last(hub: Hub) -> None:
    cart = scenario("abandoned_cart", "cart.updated", delay="1h", cancel_on=["order.placed"],
                    hold_until={"key": "event.properties.cart_id", "window": "1d"})
    t0 = NOON_MSK
    pid = await profile(hub)
    s = stage(hub, t0 + timedelta(minutes=41), [cart])
    out = await s.handle([record("cart.updated", pid, t0 + timedelta(minutes=m), f"c{m}", cart_id="A", total="9")
                          for m in (0, 20, 40)])
    assert intents(out) == []
    # An hour after the first change: the later changes reset the wait.
    early = await fire(stage(hub, t0 + timedelta(hours=1, minutes=30), [cart]))
    assert intents(early) == []
    statuses = sorted(r["status"] for r in await hub.store.fetch("SELECT status FROM scheduled_triggers"))
    assert statuses == ["pending", "superseded", "superseded"]
    # An hour after the last change (plus the allowed lateness): one message, for the last change.
    due = await fire(stage(hub, t0 + timedelta(hours=1, minutes=41), [cart]))
    [intent] = intents(due)
    assert intent.trigger_event is not None and intent.trigger_event["source_record_id"] == "c40"
    # The same cart again within the day: the window allows no second message.
    s = stage(hub, t0 + timedelta(hours=2), [cart])
    await s.handle([record("cart.updated", pid, t0 + timedelta(hours=2), "c120", cart_id="A", total="9")])
    later = await fire(stage(hub, t0 + timedelta(hours=3, minutes=2), [cart]))
    assert intents(later) == [] and [d for _, d, _ in decisions(later)] == ["duplicate"]


async def test_cancels_win_in_event_time_whatever_the_order_of_arrival(hub: Hub) -> None:
    cart = scenario("abandoned_cart", "cart.updated", delay="1h", cancel_on=["order.placed"])
    t0 = NOON_MSK
    late_order = await profile(hub)
    s = stage(hub, t0 + timedelta(minutes=1), [cart])
    await s.handle([record("cart.updated", late_order, t0, "c1", cart_id="1", total="5")])
    # The order (placed 30 minutes into the wait) is processed after the fire time, inside the lateness.
    s = stage(hub, t0 + timedelta(hours=1, seconds=30), [cart])
    out = await s.handle([record("order.placed", late_order, t0 + timedelta(minutes=30), "o1", order_id="1")])
    assert decisions(out) == [("abandoned_cart", "suppressed", "cancelled by order.placed")]
    fired = await fire(stage(hub, t0 + timedelta(hours=2), [cart]))
    assert intents(fired) == []

    # An order placed before the cart update does not cancel it (a new cart).
    again = await profile(hub)
    s = stage(hub, t0 + timedelta(minutes=1), [cart])
    await s.handle([record("order.placed", again, t0 - timedelta(minutes=5), "o2", order_id="2"),
                    record("cart.updated", again, t0, "c2", cart_id="2", total="5")])
    fired = await fire(stage(hub, t0 + timedelta(hours=2), [cart]))
    assert [i.profile_id for i in intents(fired)] == [str(again)]

    # A cart event three hours late is not sent now: it is too late (the hub received it after its send time).
    s = stage(hub, t0 + timedelta(hours=3), [cart])
    out = await s.handle([record("cart.updated", again, t0, "c3", partition=1, cart_id="3", total="5")])
    assert [(d, r.startswith("arrived after its send time")) for _, d, r in decisions(out)] == [("too_late", True)]
    # Behind a backlog (received in time, processed late after an outage) it is not late: its timer waits.
    backlog = record("cart.updated", again, t0, "c4", partition=2, cart_id="4", total="5")
    event = Event.from_json(backlog.value)
    event.received_at = t0 + timedelta(seconds=2)
    out = await s.handle([Record("cdp.profile-events", 2, 1, None, event.to_json())])
    assert decisions(out) == []


async def test_every_decision_is_an_event_and_a_metric(hub: Hub) -> None:
    scenarios = [
        scenario("promo_high", "product.viewed", priority=10),
        scenario("promo_low", "product.viewed", priority=1),
        scenario("capped", "search.performed", frequency_cap={"max": 1, "per": "1d", "scope": "scenario"}),
        scenario("once", "customer.updated", once_per_profile=True),
        scenario("night", "loyalty.tier_changed", quiet_hours={"start": "21:00", "end": "09:00"}),
        scenario("cart", "cart.updated", delay="1h", cancel_on=["order.placed"]),
        scenario("old", "app.opened"),
    ]
    s = stage(hub, NOON_MSK, scenarios)
    pid = await profile(hub, {"timezone": "America/Los_Angeles"})  # 02:00 there
    shopper = await profile(hub)  # the promos compete for this one: priority is per profile, all marketing
    none = await profile(hub, consent=None)
    t = NOON_MSK - timedelta(minutes=10)
    out = await s.handle([
        record("product.viewed", shopper, t, "v1", sku="1"),
        record("search.performed", pid, t, "s1", query="a"),
        record("search.performed", pid, t, "s2", query="b"),
        record("customer.updated", pid, t, "u1"),
        record("customer.updated", pid, t, "u2"),
        record("loyalty.tier_changed", pid, t, "l1", to_tier="gold"),
        record("cart.updated", pid, t, "c1", cart_id="1", total="5"),
        record("order.placed", pid, t + timedelta(minutes=1), "o1", order_id="1"),
        record("app.opened", pid, NOON_MSK - timedelta(days=2), "a1"),
        record("app.opened", pid, t, "a2", context={"mute_triggers": True}),
        record("app.opened", none, t, "a3"),
    ])
    got = {(sid, d) for sid, d, _ in decisions(out)}
    assert got == {("promo_high", "sent"), ("promo_low", "lost_priority"), ("capped", "sent"),
                   ("capped", "capped"), ("once", "sent"), ("once", "duplicate"), ("night", "deferred"),
                   ("cart", "suppressed"), ("old", "too_late"), ("old", "muted"), ("old", "no_consent")}
    for sid, d in got:
        assert hub.metrics.trigger_decisions.labels(sid, d)._value.get() >= 1
    # Each decision event names the profile, the scenario, the reason and the trigger; ids are deterministic.
    events = [Event.from_json(m.value) for m in out.messages if m.topic == "cdp.events"
              and dict(m.headers).get("cdp.type") == b"message.decided"]
    deferred = next(e for e in events if e.properties["decision"] == "deferred")
    assert deferred.profile_id == pid and deferred.properties["until"].startswith("2026-06-01T16:00")
    assert all(e.properties["trigger_event_id"] and e.properties["reason"] for e in events)
    again = await stage(hub, NOON_MSK, scenarios).handle([record("customer.updated", pid, t, "u1")])
    [replayed] = [Event.from_json(m.value) for m in again.messages if m.topic == "cdp.events"]
    first = next(e for e in events if e.properties["scenario"] == "once" and e.properties["decision"] == "sent")
    assert replayed.event_id == first.event_id


@pytest.mark.parametrize("caps", [{"marketing_caps": {"1d": 2}}, {"channel_caps": {"email": {"7d": 2}}}])
async def test_deployment_caps_count_every_marketing_scenario(hub: Hub, caps: dict[str, Any]) -> None:
    hub.settings = hub.settings.model_copy(update=caps)
    scenarios = [scenario(f"s{i}", "product.viewed") for i in range(3)]
    s = stage(hub, NOON_MSK, scenarios)
    pid = await profile(hub)
    out = await s.handle([record("product.viewed", pid, NOON_MSK, "v", sku="1")])
    assert sorted(d for _, d, _ in decisions(out)) == ["capped", "sent", "sent"]


async def test_merges_carry_consent_caps_and_timers_to_the_survivor(hub: Hub) -> None:
    consents = ConsentRepository(hub.store)
    survivor, loser = await profile(hub, consent="opted_in"), await profile(hub, consent=None)
    await consents.record([ConsentStatement(loser, "email", "marketing", "opted_out", NOON_MSK - timedelta(days=20),
                                            "shop", uuid.uuid4(), {"method": "unsubscribe"})])
    await consents.follow_merges([(survivor, [loser], NOON_MSK)])
    # The loser had opted out (earlier than the survivor's opt-in): the most restrictive wins.
    assert (await consents.current([survivor]))[survivor] == {("email", "marketing"): "opted_out"}
    assert await consents.current([loser]) == {}
    history = await consents.history(survivor)
    assert [h["source"] for h in history][:1] == ["merge"] and len(history) == 3

    capped = scenario("promo", "product.viewed", frequency_cap={"max": 1, "per": "1d"})
    s = stage(hub, NOON_MSK, [capped])
    a, b = await profile(hub), await profile(hub)
    assert len(intents(await s.handle([record("product.viewed", b, NOON_MSK, "v1", sku="1")]))) == 1
    await s.handle([record("profile.merged", a, NOON_MSK, "m1", surviving_profile_id=str(a),
                           merged_profile_ids=[str(b)])])
    out = await s.handle([record("product.viewed", a, NOON_MSK, "v2", sku="2")])
    assert [d for _, d, _ in decisions(out)] == ["capped"]  # the loser's message counts for the survivor


@pytest.mark.parametrize(("quiet", "field"), [
    ({"start": "25:99", "end": "08:00"}, "start"),
    ({"start": "21:00", "end": "24:00"}, "end"),
    ({"start": "21:00", "end": "9:00"}, "end"),
    ({"start": "21:00", "end": "09:00", "default_timezone": "Mars/Olympus"}, "default_timezone"),
])
def test_quiet_hours_refuse_a_time_of_day_or_zone_that_does_not_exist(quiet: dict[str, str], field: str) -> None:
    # Accepted, 25:99 had failed only when the first message fell due (local.replace(hour=25)) in the stage.
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        scenario("welcome", "customer.created", quiet_hours=quiet)
    assert refused.value.errors()[0]["loc"] == ("quiet_hours", field)
