"""Scenarios and the triggers stage on real PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.schema.events import Event
from cdp_hub.store import ConsentRepository, ConsentStatement
from cdp_hub.triggers.scenario import Condition, QuietHours, Scenario, load_scenarios, parse_duration
from cdp_hub.triggers.stage import TriggerStage, quiet_hours_end

NOON_MSK = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def test_builtin_scenarios_load() -> None:
    ids = {s.id for s in load_scenarios()}
    assert {"welcome", "abandoned_cart", "order_confirmation"} <= ids


def test_invalid_scenario_names_the_file_and_json_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntrigger: {event: cart.updated}\nchannel: email\ntemplate: t\n"
                   "frequency_cap: {max: 0, per: 7d}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as exc:
        load_scenarios([bad], builtin=False)
    assert "bad.yaml" in str(exc.value) and "$.frequency_cap.max" in str(exc.value)

    worse = tmp_path / "worse.yaml"
    worse.write_text("id: y\ntrigger: {event: cart.updated}\nchannel: email\ntemplate: t\ndelay: soon\n",
                     encoding="utf-8")
    with pytest.raises(ConfigurationError, match="bad duration 'soon'"):
        load_scenarios([worse], builtin=False)


def test_a_deployment_scenario_overrides_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "welcome.yaml").write_text(
        "id: welcome\ntrigger: {event: profile.created}\nchannel: sms\ntemplate: welcome\n", encoding="utf-8")
    [welcome] = [s for s in load_scenarios([tmp_path]) if s.id == "welcome"]
    assert welcome.channel == "sms"


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"field": "event.properties.total", "op": "gte", "value": 1000}, True),
        ({"field": "event.properties.total", "op": "gt", "value": 1990}, False),
        ({"field": "profile.city", "op": "eq", "value": "Москва"}, True),
        ({"field": "profile.city", "op": "in", "value": ["Казань", "Москва"]}, True),
        ({"field": "profile.birth_date", "op": "exists"}, False),
        ({"field": "profile.birth_date", "op": "not_exists"}, True),
        ({"field": "event.properties.missing", "op": "eq", "value": 1}, False),
        ({"field": "profile.tier", "op": "eq", "value": "gold"}, True),
        ({"field": "profile.tier", "op": "ne", "value": "gold"}, False),
        ({"field": "profile.tier", "op": "eq", "value": "silver"}, False),
        ({"field": "profile.points", "op": "eq", "value": "150"}, True),  # numbers as numbers, text or not
        ({"field": "profile.points", "op": "eq", "value": 150.0}, True),
        ({"field": "profile.points", "op": "ne", "value": "one hundred fifty"}, True),
    ],
)
def test_conditions(cond: dict[str, Any], expected: bool) -> None:
    scope = {"event": {"properties": {"total": "1990.00"}}, "profile": {"city": "Москва", "tier": "gold", "points": 150}}
    assert Condition.model_validate(cond).matches(scope) is expected


def test_quiet_hours_in_the_customers_time_zone() -> None:
    quiet = QuietHours(start="21:00", end="09:00")
    late_msk = datetime(2026, 6, 1, 19, 30, tzinfo=UTC)  # 22:30 in Moscow
    assert quiet_hours_end(late_msk, quiet, "Europe/Moscow") == datetime(2026, 6, 2, 6, 0, tzinfo=UTC)
    assert quiet_hours_end(late_msk, quiet, "Asia/Vladivostok") == datetime(2026, 6, 1, 23, 0, tzinfo=UTC)
    assert quiet_hours_end(NOON_MSK, quiet, "Europe/Moscow") is None
    assert quiet_hours_end(NOON_MSK, quiet, "Not/AZone") is None  # falls back to the default zone
    assert parse_duration("7d") == timedelta(days=7)


# -- the stage on real services -------------------------------------------------------------------------


async def _profile(hub: Hub, golden: dict[str, Any] | None = None, *, consent: bool = True) -> uuid.UUID:
    """A profile; with ``consent``, one that gave e-mail marketing consent (opt-in is the default policy)."""
    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid, golden or {})
    if consent:
        await ConsentRepository(hub.store).record([ConsentStatement(
            pid, "email", "marketing", "opted_in", NOON_MSK - timedelta(days=30), "crm", uuid.uuid4(),
            {"method": "double_opt_in"})])
    return pid


def _record(event_type: str, pid: uuid.UUID, at: datetime, rid: str, **props: Any) -> Record:
    event = parse_event({
        "type": event_type, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
        "identities": [{"kind": "email", "value": "anna@example.ru"}], "properties": props,
        "profile_id": str(pid)})
    return Record("cdp.profile-events", 0, 0, str(pid).encode(), event.to_json())


def _intents(out: StageOutput) -> list[MessageIntent]:
    return [MessageIntent.model_validate_json(m.value) for m in out.messages if m.topic == "cdp.messages"]


def _decisions(out: StageOutput) -> list[dict[str, Any]]:
    """The ``message.decided`` events of a batch, as their properties."""
    return [Event.from_json(m.value).properties for m in out.messages
            if m.topic == "cdp.events" and dict(m.headers).get("cdp.type") == b"message.decided"]


def _stage(hub: Hub, now: datetime, scenarios: list[Scenario] | None = None) -> TriggerStage:
    hub.clock = lambda: now
    return build_stage(hub, "triggers", scenarios=scenarios)


async def test_welcome_fires_once_per_profile_even_on_replay(hub: Hub) -> None:
    stage = _stage(hub, NOON_MSK)
    pid = await _profile(hub)
    rec = _record("profile.created", pid, NOON_MSK, f"created-{pid}", profile_id=str(pid))
    first = _intents(await stage.handle([rec]))
    replay = _intents(await stage.handle([rec]))
    assert [i.scenario for i in first] == ["welcome"]
    assert [i.message_id for i in replay] == [first[0].message_id]  # same intent: delivery dedupes
    other = _record("profile.created", pid, NOON_MSK, f"created-again-{pid}", profile_id=str(pid))
    assert _intents(await stage.handle([other])) == []  # once per profile


async def test_abandoned_cart_waits_is_cancelled_by_an_order_and_fires_otherwise(hub: Hub) -> None:
    stage = _stage(hub, NOON_MSK)
    buyer, leaver = await _profile(hub), await _profile(hub)
    t0 = NOON_MSK - timedelta(minutes=5)
    out = await stage.handle([
        _record("cart.updated", buyer, t0, "cart-b", cart_id="b", total="500"),
        _record("cart.updated", leaver, t0, "cart-l", cart_id="l", total="700"),
        _record("cart.updated", leaver, t0, "cart-empty", cart_id="e", total="0"),  # condition fails
    ])
    assert _intents(out) == []
    assert await hub.store.fetchval("SELECT count(*) FROM scheduled_triggers WHERE status = 'pending'") == 2
    await stage.handle([_record("order.placed", buyer, t0 + timedelta(minutes=10), "order-b", order_id="b")])

    # An hour later the timer of the customer who did not buy fires, once.
    stage = _stage(hub, NOON_MSK + timedelta(hours=1))
    fired = StageOutput()
    assert await stage.fire_due_timers(fired) == 1
    [intent] = _intents(fired)
    assert intent.scenario == "abandoned_cart" and intent.profile_id == str(leaver)
    for callback in fired.on_durable:
        await callback()
    statuses = dict(await hub.store.fetch("SELECT profile_id, status FROM scheduled_triggers"))
    assert statuses == {buyer: "cancelled", leaver: "fired"}
    assert await stage.fire_due_timers(StageOutput()) == 0


async def test_timers_survive_a_restart_of_the_stage(hub: Hub) -> None:
    pid = await _profile(hub)
    await _stage(hub, NOON_MSK).handle([_record("cart.updated", pid, NOON_MSK, "c1", cart_id="1", total="9")])
    # A new stage object (a restarted daemon) finds the timer in PostgreSQL.
    out = StageOutput()
    assert await _stage(hub, NOON_MSK + timedelta(hours=2)).fire_due_timers(out) == 1


async def test_frequency_cap_counts_distinct_messages(hub: Hub) -> None:
    cap = Scenario.model_validate({"id": "promo", "trigger": {"event": "product.viewed"}, "channel": "email",
                                   "template": "t", "frequency_cap": {"max": 2, "per": "1d"}})
    stage = _stage(hub, NOON_MSK, [cap])
    pid = await _profile(hub)
    recs = [_record("product.viewed", pid, NOON_MSK, f"v{i}", sku=f"s{i}") for i in range(4)]
    out = await stage.handle(recs)
    assert len(_intents(out)) == 2
    again = await stage.handle(recs[:1])  # a replay of an allowed message is allowed again
    assert len(_intents(again)) == 1


async def test_quiet_hours_postpone_to_a_durable_timer(hub: Hub) -> None:
    late = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)  # 23:00 in Moscow
    stage = _stage(hub, late)
    pid = await _profile(hub, {"timezone": "Europe/Moscow"})
    out = await stage.handle([_record("profile.created", pid, late, "p1", profile_id=str(pid))])
    assert _intents(out) == []
    fire_at = await hub.store.fetchval("SELECT fire_at FROM scheduled_triggers WHERE profile_id = $1", pid)
    assert fire_at == datetime(2026, 6, 2, 5, 0, tzinfo=UTC)  # 08:00 in Moscow
    morning = StageOutput()
    await _stage(hub, fire_at).fire_due_timers(morning)
    assert [i.scenario for i in _intents(morning)] == ["welcome"]


async def test_old_events_start_no_conversation(hub: Hub) -> None:
    stage = _stage(hub, NOON_MSK)
    pid = await _profile(hub)
    out = await stage.handle([_record("order.paid", pid, NOON_MSK - timedelta(days=30), "old", order_id="o")])
    assert _intents(out) == []


async def test_merge_moves_pending_timers_to_the_survivor(hub: Hub) -> None:
    stage = _stage(hub, NOON_MSK)
    survivor, loser = await _profile(hub), await _profile(hub)
    await stage.handle([_record("cart.updated", loser, NOON_MSK, "c9", cart_id="9", total="5")])
    await stage.handle([_record("profile.merged", survivor, NOON_MSK, "m1", surviving_profile_id=str(survivor),
                                merged_profile_ids=[str(loser)])])
    owner = await hub.store.fetchval("SELECT profile_id FROM scheduled_triggers")
    assert owner == survivor


async def test_bad_profile_event_goes_to_the_dlq_and_the_batch_goes_on(hub: Hub) -> None:
    stage = _stage(hub, NOON_MSK)
    pid = await _profile(hub)
    junk = Record("cdp.profile-events", 1, 7, None, orjson.dumps({"type": "cart.updated"}))
    out = await stage.handle([junk, _record("profile.created", pid, NOON_MSK, "p2", profile_id=str(pid))])
    assert len(out.dead) == 1 and out.dead[0].origin is not None and out.dead[0].origin.offset == 7
    assert len(_intents(out)) == 1


async def test_once_per_profile_holds_when_redis_lost_its_keys(hub: Hub) -> None:
    stage = _stage(hub, NOON_MSK)
    pid = await _profile(hub)
    [first] = _intents(await stage.handle([_record("profile.created", pid, NOON_MSK, "a", profile_id=str(pid))]))
    # Delivery logged the message; then Redis is flushed (a restart without persistence).
    await hub.store.execute(
        "INSERT INTO messages (message_id, profile_id, scenario, channel, status) VALUES ($1, $2, $3, 'email', 'sent')",
        first.message_id, pid, "welcome")
    keys = [k async for k in hub.hotstate.redis.scan_iter(match=hub.hotstate.prefix + "*")]
    await hub.hotstate.redis.delete(*keys)
    again = await stage.handle([_record("profile.created", pid, NOON_MSK, "b", profile_id=str(pid))])
    assert _intents(again) == []
    replay = await stage.handle([_record("profile.created", pid, NOON_MSK, "a", profile_id=str(pid))])
    assert [i.message_id for i in _intents(replay)] == [first.message_id]  # the same intent may pass again


def test_the_readme_scenario_example_is_valid() -> None:
    import re

    import yaml

    from cdp_hub.triggers.scenario import parse_scenario

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        parse_scenario(yaml.safe_load(block), origin="README.md")
