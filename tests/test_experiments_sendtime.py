"""Absolute send-time variants (``at: "10:00"`` in the customer's zone): the local-time rules, the file checks,
and the send times through the real triggers stage (PostgreSQL timers, Redis) and campaign runner.

Two arms, morning at 10:00 (fallback zone Asia/Vladivostok) and evening at 19:00 (no fallback: the default,
Europe/Moscow), for customers in Moscow (UTC+3 all year), Vladivostok (UTC+10), Berlin (CET/CEST: the triggers
straddle the spring and autumn changes), without a zone and with a zone nobody knows. Every expected instant
below is worked out by hand from the zones' offsets, not by the code under test.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.campaigns.checks import check_campaign_files
from cdp_hub.campaigns.model import CAMPAIGN_FILES
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.durations import customer_zone, next_local_time, parse_time_of_day
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline, build_stage, campaign_runner
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.store import ConsentRepository, ConsentStatement
from cdp_hub.triggers.checks import Installed, check_scenario_files
from cdp_hub.triggers.experiments import Experiment, Variant, assign
from cdp_hub.triggers.scenario import Scenario
from cdp_hub.triggers.stage import variant_send_time
from tests.campaign_data import EXCLUDED, SEGMENT, eligible, profile_id, seed
from tests.waiting import until


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


EXPERIMENT: dict[str, Any] = {"id": "send_hour_2026", "variants": [
    {"name": "morning", "weight": 1, "at": "10:00", "timezone": "Asia/Vladivostok"},
    {"name": "evening", "weight": 1, "at": "19:00", "template": "abandoned_cart"}]}
ARMS = ("morning", "evening")
ZONES: tuple[str | None, ...] = ("Europe/Moscow", "Asia/Vladivostok", "Europe/Berlin", None, "Mars/Olympus_Mons")
"""The profiles' ``timezone`` traits: None has none, the last is no zone at all (both use the arm's fallback)."""

SPRING = utc(2026, 3, 28, 20, 0)
"""Saturday 28 March, 20:00 UTC: 23:00 in Moscow, 06:00 on Sunday in Vladivostok, 21:00 CET in Berlin; Berlin
moves to CEST (UTC+2) at 01:00 UTC that night."""
SUMMER = utc(2026, 6, 1, 7, 0, 30)
"""10:00:30 in Moscow (just after its morning send: the next is tomorrow's), 17:00:30 in Vladivostok, 09:00:30
CEST in Berlin."""
AUTUMN = utc(2026, 10, 24, 20, 0)
"""22:00 CEST in Berlin on Saturday 24 October; Berlin goes back to CET (UTC+1) at 01:00 UTC that night."""

EXPECTED: dict[tuple[datetime, str | None, str], datetime] = {}
for _trigger, _table in {
    SPRING: {"Europe/Moscow": (utc(2026, 3, 29, 7), utc(2026, 3, 29, 16)),
             "Asia/Vladivostok": (utc(2026, 3, 29, 0), utc(2026, 3, 29, 9)),
             "Europe/Berlin": (utc(2026, 3, 29, 8), utc(2026, 3, 29, 17)),   # 10:00 and 19:00 CEST
             None: (utc(2026, 3, 29, 0), utc(2026, 3, 29, 16))},            # Vladivostok's 10:00, Moscow's 19:00
    SUMMER: {"Europe/Moscow": (utc(2026, 6, 2, 7), utc(2026, 6, 1, 16)),
             "Asia/Vladivostok": (utc(2026, 6, 2, 0), utc(2026, 6, 1, 9)),
             "Europe/Berlin": (utc(2026, 6, 1, 8), utc(2026, 6, 1, 17)),
             None: (utc(2026, 6, 2, 0), utc(2026, 6, 1, 16))},
    AUTUMN: {"Europe/Moscow": (utc(2026, 10, 25, 7), utc(2026, 10, 25, 16)),
             "Asia/Vladivostok": (utc(2026, 10, 25, 0), utc(2026, 10, 25, 9)),
             "Europe/Berlin": (utc(2026, 10, 25, 9), utc(2026, 10, 25, 18)),  # 10:00 and 19:00 CET
             None: (utc(2026, 10, 25, 0), utc(2026, 10, 25, 16))},
}.items():
    for _zone, (_morning, _evening) in _table.items():
        for _name in ([_zone] if _zone is not None else [None, "Mars/Olympus_Mons"]):
            EXPECTED[(_trigger, _name, "morning")] = _morning
            EXPECTED[(_trigger, _name, "evening")] = _evening


def _variant(name: str) -> Variant:
    found = Experiment.model_validate(EXPERIMENT).variant(name)
    assert found is not None
    return found


# -- the rules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("trigger", "zone", "arm"), sorted(EXPECTED, key=str))
def test_the_send_time_is_the_next_local_at(trigger: datetime, zone: str | None, arm: str) -> None:
    profile = {"timezone": zone} if zone is not None else {}
    assert variant_send_time(_variant(arm), trigger, profile) == EXPECTED[(trigger, zone, arm)]


def test_at_itself_delay_then_at_and_the_clock_changes() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    ten = time(10, 0)
    assert next_local_time(utc(2026, 6, 1, 7, 0), ten, moscow) == utc(2026, 6, 1, 7, 0)  # at 10:00 sharp: now
    assert next_local_time(utc(2026, 6, 1, 7, 0, 0, 1), ten, moscow) == utc(2026, 6, 2, 7, 0)
    # A zone given with an offset still compares as an instant.
    assert next_local_time(datetime(2026, 6, 1, 9, 59, tzinfo=ZoneInfo("Europe/Moscow")), ten, moscow) == \
        utc(2026, 6, 1, 7, 0)
    # The delay first, then the next at: 09:00 Moscow + 2h = 11:00, past 10:00, so tomorrow's.
    later = Variant.model_validate({"name": "later", "weight": 1, "delay": "2h", "at": "10:00"})
    assert variant_send_time(later, utc(2026, 6, 1, 6, 0), {"timezone": "Europe/Moscow"}) == utc(2026, 6, 2, 7, 0)
    assert variant_send_time(later, utc(2026, 6, 1, 4, 0), {"timezone": "Europe/Moscow"}) == utc(2026, 6, 1, 7, 0)
    # A delay alone is what it was.
    delayed = Variant.model_validate({"name": "d", "weight": 1, "delay": "90m"})
    assert variant_send_time(delayed, utc(2026, 6, 1, 6, 0), {}) == utc(2026, 6, 1, 7, 30)
    assert variant_send_time(None, utc(2026, 6, 1, 6, 0), {}) == utc(2026, 6, 1, 6, 0)
    berlin = ZoneInfo("Europe/Berlin")
    # 02:30 does not exist in Berlin on 29 March (02:00 CET -> 03:00 CEST): the instant 02:30 CET would have
    # been, i.e. 03:30 CEST (01:30 UTC); after it, the next day's 02:30 CEST.
    assert next_local_time(utc(2026, 3, 29, 0, 0), time(2, 30), berlin) == utc(2026, 3, 29, 1, 30)
    assert next_local_time(utc(2026, 3, 29, 1, 45), time(2, 30), berlin) == utc(2026, 3, 30, 0, 30)
    # 02:30 happens twice on 25 October: the first (CEST, 00:30 UTC); after it, not the second but tomorrow's.
    assert next_local_time(utc(2026, 10, 25, 0, 0), time(2, 30), berlin) == utc(2026, 10, 25, 0, 30)
    assert next_local_time(utc(2026, 10, 25, 0, 45), time(2, 30), berlin) == utc(2026, 10, 26, 1, 30)
    # A profile's zone is customer data: anything but a known zone falls back, never fails.
    for bad in ("", "Mars/Olympus_Mons", "../../etc/passwd", "Europe", "zone.tab", 7, None, "Europe/Moscow\x00",
                "Europe/" * 100_000):
        assert customer_zone(bad, "Asia/Vladivostok") == ZoneInfo("Asia/Vladivostok")
    assert customer_zone("Europe/Berlin") == berlin
    assert customer_zone(None) == moscow  # the default, as for quiet hours


def test_bad_at_and_timezone_are_refused_naming_the_field() -> None:
    def error(**fields: Any) -> str:
        with pytest.raises(ValueError) as caught:
            Variant.model_validate({"name": "a", "weight": 1, **fields})
        return str(caught.value)

    assert "at: bad time of day '25:00': use 24-hour HH:MM" in error(at="25:00")
    assert "at: bad time of day '7:00'" in error(at="7:00")
    assert "at: bad time of day '10:00:00'" in error(at="10:00:00")
    assert 'quote it, "10:00"' in error(at=600)  # YAML's reading of an unquoted 10:00
    assert "timezone: unknown time zone 'Europe/Moskow'" in error(at="10:00", timezone="Europe/Moskow")
    assert "timezone is the zone of at" in error(timezone="Europe/Berlin")
    with pytest.raises(ValueError, match="at: bad time of day"):
        parse_time_of_day("24:00", field="at")


def test_bad_send_times_are_reported_with_file_and_line(tmp_path: Path) -> None:
    installed = Installed(channel_kind=lambda name: "email" if name == "email" else None,
                          template_exists=lambda *_: True, segments=frozenset({SEGMENT}))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "hour.yaml").write_text(
        "id: hour_test\n"
        "trigger: {event: order.placed}\n"
        "channel: email\n"
        "template: welcome\n"
        "experiment:\n"
        "  id: hour\n"
        "  variants:\n"
        "    - {name: a, weight: 1, at: \"10:00\", timezone: Asia/Vladivostok}\n"
        "    - name: b\n"
        "      weight: 1\n"
        "      at: 19:00\n"
        "    - name: c\n"
        "      weight: 1\n"
        "      at: \"9:00\"\n"
        "      timezone: Europe/Moskow\n"
        "    - {name: d, weight: 1, timezone: UTC}\n", encoding="utf-8")
    _, problems = check_scenario_files([tmp_path / "s"], installed, builtin=False)
    got = {(p.line, p.path): p.message for p in problems}
    assert set(got) == {(11, "$.experiment.variants[1].at"), (14, "$.experiment.variants[2].at"),
                        (15, "$.experiment.variants[2].timezone"), (16, "$.experiment.variants[3].timezone")}
    assert 'quote it, "19:00"' in got[(11, "$.experiment.variants[1].at")]
    assert "Europe/Moskow" in got[(15, "$.experiment.variants[2].timezone")]
    assert all(str(p).startswith(str(tmp_path / "s" / "hour.yaml") + ":") for p in problems)

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "sale.yaml").write_text(
        f"id: sale\naudience: {{segment: {SEGMENT}}}\nchannel: email\ntemplate: welcome\nrate_limit: 100\n"
        "experiment:\n  id: sale_hour\n  variants:\n"
        "    - {name: a, weight: 1, at: \"10:00\"}\n"
        "    - {name: b, weight: 1, at: \"19:60\"}\n", encoding="utf-8")
    campaigns, problems = check_campaign_files([tmp_path / "c"], installed)
    assert [(p.line, p.path) for p in problems] == [(10, "$.experiment.variants[1].at")]
    (tmp_path / "c" / "sale.yaml").write_text(
        (tmp_path / "c" / "sale.yaml").read_text().replace("19:60", "19:00"), encoding="utf-8")
    campaigns, problems = check_campaign_files([tmp_path / "c"], installed)
    assert problems == [] and campaigns[0].experiment is not None
    assert [v.at for v in campaigns[0].experiment.variants] == ["10:00", "19:00"]


# -- scenarios: the triggers stage's timers ---------------------------------------------------------------


SCENARIO = Scenario.model_validate({"id": "send_hour", "trigger": {"event": "order.placed"}, "channel": "email",
                                    "template": "welcome", "experiment": EXPERIMENT})
LATENESS = timedelta(minutes=1)  # the allowed lateness (the default): a timer fires once it has passed


def _customers() -> dict[tuple[str | None, str], uuid.UUID]:
    """A profile per zone and arm (the arm is a hash of the profile id: try names until each is found)."""
    experiment = Experiment.model_validate(EXPERIMENT)
    found: dict[tuple[str | None, str], uuid.UUID] = {}
    for zone in ZONES:
        i = 0
        while any((zone, arm) not in found for arm in ARMS):
            pid = uuid.uuid5(uuid.NAMESPACE_URL, f"sendtime/{zone}/{i}")
            found.setdefault((zone, assign(experiment, str(pid))), pid)
            i += 1
    return found


async def _seed_customers(hub: Hub) -> dict[tuple[str | None, str], uuid.UUID]:
    customers = _customers()
    for (zone, _), pid in customers.items():
        golden = {"email": f"{pid.hex[:8]}@example.ru", **({"timezone": zone} if zone is not None else {})}
        await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid, golden)
    await ConsentRepository(hub.store).record([
        ConsentStatement(pid, "email", "marketing", "opted_in", utc(2026, 1, 1), "crm", uuid.uuid4(),
                         {"method": "double_opt_in"}) for pid in customers.values()])
    return customers


def _order(pid: uuid.UUID, at: datetime) -> Record:
    event = parse_event({"type": "order.placed", "source": "shop", "source_record_id": f"o-{pid}-{at.isoformat()}",
                         "occurred_at": at.isoformat(), "properties": {"order_id": f"{pid}-{at:%Y%m%d%H%M%S}"},
                         "identities": [{"kind": "email", "value": f"{pid.hex[:8]}@example.ru"}],
                         "profile_id": str(pid)})
    return Record("cdp.profile-events", 0, 0, str(pid).encode(), event.to_json())


def _intents(out: StageOutput) -> list[MessageIntent]:
    return [MessageIntent.model_validate_json(m.value) for m in out.messages if m.topic.endswith("cdp.messages")]


def _decided(out: StageOutput) -> dict[str, tuple[str, str]]:
    """profile id -> (decision, reason) of the ``message.decided`` events in ``out``."""
    found = {}
    for m in out.messages:
        body = orjson.loads(m.value)
        if isinstance(body, dict) and body.get("type") == "message.decided":
            found[body["profile_id"]] = (body["properties"]["decision"], body["properties"]["reason"])
    return found


async def _fire(hub: Hub, at: datetime) -> list[MessageIntent]:
    """Fire the due timers at ``at`` on a stage built afresh (a restart: nothing in memory), as the stage does:
    marked fired once published."""
    hub.clock = lambda: at
    out = StageOutput()
    await build_stage(hub, "triggers", scenarios=[SCENARIO]).fire_due_timers(out)
    for callback in out.on_durable:
        await callback()
    return _intents(out)


async def test_scenario_timers_fire_at_the_arms_local_times_and_keep_the_arm(hub: Hub) -> None:
    customers = await _seed_customers(hub)
    for trigger in (SPRING, SUMMER, AUTUMN):
        hub.clock = lambda trigger=trigger: trigger + timedelta(seconds=5)
        out = await build_stage(hub, "triggers", scenarios=[SCENARIO]).handle(
            [_order(pid, trigger) for pid in customers.values()])
        assert _intents(out) == [], "every arm of this experiment waits for its time of day"
        rows = await hub.store.fetch(
            "SELECT profile_id, fire_at FROM scheduled_triggers WHERE scenario = $1 AND status = 'pending'",
            SCENARIO.id)
        by_profile = {r["profile_id"]: r["fire_at"] for r in rows}
        assert by_profile == {pid: EXPECTED[(trigger, zone, arm)] for (zone, arm), pid in customers.items()}

        # Step through the send times, each on a stage built afresh: nothing goes a second before its time
        # (plus the allowed lateness), everything due goes then, with its arm's template, and only once.
        sent: dict[uuid.UUID, MessageIntent] = {}
        for due in sorted(set(by_profile.values())):
            assert await _fire(hub, due + LATENESS - timedelta(seconds=1)) == []
            fired = await _fire(hub, due + LATENESS)
            assert {uuid.UUID(i.profile_id) for i in fired} == {p for p, t in by_profile.items() if t == due}
            for intent in fired:
                assert uuid.UUID(intent.profile_id) not in sent
                sent[uuid.UUID(intent.profile_id)] = intent
        assert set(sent) == set(customers.values())
        for (_, arm), pid in customers.items():
            intent = sent[pid]
            assert intent.vars["variant"] == arm
            assert intent.template == ("abandoned_cart" if arm == "evening" else "welcome")
        assert await _fire(hub, max(by_profile.values()) + timedelta(days=1)) == []


async def test_a_trigger_arriving_after_its_arms_time_is_too_late(hub: Hub) -> None:
    """09:59:30 in Moscow, arriving at 10:05: the morning arm's 10:00 has passed (plus the allowed lateness), so
    it is dropped as too late rather than sent hours off its moment; the evening arm still waits for 19:00."""
    customers = await _seed_customers(hub)
    occurred = utc(2026, 6, 1, 6, 59, 30)
    hub.clock = lambda: utc(2026, 6, 1, 7, 5)
    morning, evening = customers[("Europe/Moscow", "morning")], customers[("Europe/Moscow", "evening")]
    out = await build_stage(hub, "triggers", scenarios=[SCENARIO]).handle(
        [_order(morning, occurred), _order(evening, occurred)])
    decided = _decided(out)
    assert decided[str(morning)][0] == "too_late"
    assert "2026-06-01T07:00:00+00:00" in decided[str(morning)][1]
    assert str(evening) not in decided
    assert await hub.store.fetchval(
        "SELECT fire_at FROM scheduled_triggers WHERE scenario = $1 AND profile_id = $2 AND status = 'pending'",
        SCENARIO.id, evening) == utc(2026, 6, 1, 16, 0)
    assert [i.profile_id for i in await _fire(hub, utc(2026, 6, 1, 16, 1))] == [str(evening)]


# -- campaigns: deferred rows ------------------------------------------------------------------------------

CAMPAIGN_ZONES: tuple[str | None, ...] = ("Europe/Moscow", "Asia/Vladivostok", "Europe/Berlin", None,
                                          "Mars/Olympus_Mons")


async def _sent(hub: Hub, run_id: uuid.UUID) -> set[uuid.UUID]:
    return {r["profile_id"] for r in await hub.store.fetch(
        "SELECT profile_id FROM campaign_audience WHERE run_id = $1 AND status = 'sent'", run_id)}


async def _send_at(hub: Hub, run_id: uuid.UUID, now: datetime) -> str:
    """Run a new sender (a restart) at ``now`` until every row that is due has been decided, then stop it."""
    hub.clock = lambda: now
    stop = asyncio.Event()
    task = asyncio.create_task(campaign_runner(hub).execute(run_id, stop=stop))

    async def settled() -> bool:
        """Nothing due is left (and something waits: else the sender is let finish the run itself)."""
        due, waiting = await hub.store.fetchrow(
            """SELECT count(*) FILTER (WHERE not_before IS NULL OR not_before <= $2), count(*)
                 FROM campaign_audience WHERE run_id = $1 AND status = 'pending'""", run_id, now)
        return task.done() or (due == 0 and waiting > 0)

    await until(settled, timeout=30)
    stop.set()
    return (await task).status


async def test_campaign_rows_wait_for_their_arms_local_time_through_pause_and_restarts(hub: Hub) -> None:
    n = 80
    await seed(hub.store, n, tag="st")
    # g // 5, not g: consent (tests/campaign_data.py) depends on g % 5, so every zone gets customers with it.
    zone_of = {profile_id("st", g): CAMPAIGN_ZONES[g // 5 % len(CAMPAIGN_ZONES)] for g in range(1, n + 1)}
    for pid, zone in zone_of.items():
        await hub.store.execute(
            "UPDATE profiles SET golden = CASE WHEN $2::text IS NULL THEN golden - 'timezone' "
            "ELSE jsonb_set(golden, '{timezone}', to_jsonb($2::text)) END WHERE profile_id = $1", pid, zone)
    sale = CAMPAIGN_FILES.parse({"id": "hour_sale", "audience": {"segment": SEGMENT, "exclude": [EXCLUDED]}, "channel": "email",
                                 "template": "welcome", "rate_limit": 1000, "experiment": EXPERIMENT},
                                origin="test")
    assert sale.experiment is not None
    experiment = sale.experiment
    audience = {profile_id("st", g) for g in range(1, n + 1) if eligible(g)}
    due = {pid: EXPECTED[(SPRING, zone_of[pid], assign(experiment, str(pid)))] for pid in audience}
    covered = {(zone_of[pid], assign(experiment, str(pid))) for pid in audience}
    assert covered == {(z, a) for z in CAMPAIGN_ZONES for a in ARMS}, "every zone and arm is in the audience"

    runner = campaign_runner(hub)
    hub.clock = lambda: SPRING
    launched = await runner.launch(sale)
    assert launched is not None
    run_id = launched.run_id
    # The run was launched on Saturday 28 March at 20:00 UTC (the test's clock; the row says when).
    await hub.store.execute("UPDATE campaign_runs SET launched_at = $2 WHERE run_id = $1", run_id, SPRING)

    assert await _send_at(hub, run_id, SPRING + timedelta(seconds=5)) == "stopped"
    rows = await hub.store.fetch(
        "SELECT profile_id, status, reason, not_before FROM campaign_audience WHERE run_id = $1", run_id)
    waiting = {r["profile_id"]: r["not_before"] for r in rows if r["status"] == "pending"}
    assert waiting == due, "every eligible row waits for its arm's next local time after launch"
    assert {r["reason"] for r in rows if r["status"] == "pending"} == {"deferred"}
    reasons = {orjson.loads(r.value)["properties"]["reason"] for r in await hub.bus.read_all(hub.topics.events)
               if orjson.loads(r.value)["type"] == "message.decided"}
    assert reasons == {"variant morning sends at 10:00 in the customer's time zone",
                       "variant evening sends at 19:00 in the customer's time zone", "no email marketing consent "
                       "recorded", "email consent opted out"}

    # Paused before the first is due; resumed later by a new sender at each send time.
    assert await runner.pause(run_id)
    assert await _send_at(hub, run_id, min(due.values())) == "paused"
    assert await _sent(hub, run_id) == set()
    assert await runner.resume(run_id)
    for moment in sorted(set(due.values())):
        assert await _send_at(hub, run_id, moment - timedelta(seconds=1)) == "stopped"
        assert await _sent(hub, run_id) == {p for p, t in due.items() if t < moment}
        status = await _send_at(hub, run_id, moment)
        assert await _sent(hub, run_id) == {p for p, t in due.items() if t <= moment}
    assert status == "done"

    intents = [MessageIntent.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.messages)]
    assert sorted(uuid.UUID(i.profile_id) for i in intents) == sorted(audience), "each one message, once"
    for intent in intents:
        arm = assign(experiment, intent.profile_id)
        assert intent.vars["variant"] == arm
        assert intent.template == ("abandoned_cart" if arm == "evening" else "welcome")


# -- scenarios through the running pipeline on Kafka ------------------------------------------------------


def _customer_event(kind: str, who: str, at: datetime, rid: str, traits: dict[str, Any] | None = None,
                    **props: Any) -> Any:
    return parse_event({"type": kind, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
                        "identities": [{"kind": "email", "value": f"{who}@example.ru"}], "traits": traits or {},
                        "properties": props})


async def test_send_time_arms_through_the_pipeline_on_kafka_survive_a_restart(kafka_hub: Hub) -> None:
    """Customers whose zone comes in as a trait of their events: the resolver makes the profiles (so their
    arms are known only then), the triggers stage schedules each at its arm's time, and a pipeline started
    afresh fires them then, each with its arm."""
    hub = kafka_hub
    now = [SUMMER + timedelta(seconds=5)]
    hub.clock = lambda: now[0]
    zones = {"anna": "Europe/Moscow", "boris": "Asia/Vladivostok", "vera": None, "gleb": "Europe/Berlin"}
    ten = timedelta(minutes=10)
    events = []
    for who, zone in zones.items():
        events += [_customer_event("consent.changed", who, SUMMER - ten, f"consent-{who}",
                                   {"timezone": zone} if zone else None, channel="email", status="opted_in",
                                   evidence={"method": "double_opt_in", "reference": "signup"}),
                   _customer_event("order.placed", who, SUMMER, f"order-{who}", order_id=f"o-{who}")]

    def pipeline() -> Pipeline:
        return Pipeline(hub, stages=[build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=[SCENARIO])])

    first = pipeline()
    task = asyncio.create_task(first.run())
    try:
        await Ingestor(hub).publish_events(events)

        async def scheduled() -> bool:
            return await hub.store.fetchval("SELECT count(*) FROM scheduled_triggers WHERE scenario = $1",
                                            SCENARIO.id) == len(zones)

        await until(scheduled)
    finally:
        first.stop()
        await asyncio.wait_for(task, 30)

    rows = await hub.store.fetch(
        """SELECT i.value AS email, t.profile_id, t.fire_at FROM scheduled_triggers t
             JOIN identities i ON i.profile_id = t.profile_id AND i.kind = 'email' WHERE t.scenario = $1""",
        SCENARIO.id)
    experiment = Experiment.model_validate(EXPERIMENT)
    arm_of = {r["profile_id"]: assign(experiment, str(r["profile_id"])) for r in rows}
    expected = {r["profile_id"]: EXPECTED[(SUMMER, zones[r["email"].split("@")[0]], arm_of[r["profile_id"]])]
                for r in rows}
    assert {r["profile_id"]: r["fire_at"] for r in rows} == expected

    now[0] = max(expected.values()) + LATENESS  # the next morning in Vladivostok: every arm's time has come
    second = pipeline()
    task = asyncio.create_task(second.run())
    try:
        async def fired() -> bool:
            return not await hub.store.fetchval(
                "SELECT count(*) FROM scheduled_triggers WHERE scenario = $1 AND status = 'pending'", SCENARIO.id)

        await until(fired)
    finally:
        second.stop()
        await asyncio.wait_for(task, 30)
    intents = [MessageIntent.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.messages)]
    assert sorted(uuid.UUID(i.profile_id) for i in intents) == sorted(expected)
    assert {uuid.UUID(i.profile_id): i.vars["variant"] for i in intents} == arm_of


async def test_simulate_lets_a_send_time_variant_come_due(hub: Hub, tmp_path: Path) -> None:
    """``cdp-hub scenarios simulate`` runs the clock on past the longest arm: two days, then the next 10:00."""
    from cdp_hub.triggers.cli import simulate

    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid,
                            {"first_name": "Анна", "timezone": "Asia/Vladivostok"})
    await ConsentRepository(hub.store).record([ConsentStatement(
        pid, "email", "marketing", "opted_in", utc(2026, 1, 1), "form", uuid.uuid4())])
    scenario = Scenario.model_validate({
        "id": "thanks_later", "trigger": {"event": "order.placed"}, "channel": "email", "template": "welcome",
        "experiment": {"id": "thanks_later", "variants": [{"name": "later", "weight": 1, "delay": "2d",
                                                          "at": "10:00"}]}})
    events = tmp_path / "events.jsonl"
    events.write_text(parse_event({
        "type": "order.placed", "source": "shop", "source_record_id": "o1", "occurred_at": SUMMER.isoformat(),
        "identities": [{"kind": "email", "value": "anna@example.ru"}],
        "properties": {"order_id": "o1"}}).to_json().decode(), encoding="utf-8")
    rows = await simulate(hub.settings, scenario, events_file=events, for_profile=str(pid))
    assert [(r["decision"], r["scenario"]) for r in rows] == [("sent", "thanks_later")]


def test_a_journey_variant_takes_its_time_of_day_from_its_wait_steps() -> None:
    """In a journey a variant is a branch: an ``at`` there would be ignored, so it is refused, naming it."""
    journey = {"id": "welcome_hour", "trigger": {"event": "profile.created"},
               "experiment": {"id": "welcome_hour", "variants": [
                   {"name": "a", "weight": 1}, {"name": "b", "weight": 1, "goto": "later", "at": "19:00"}]},
               "steps": [{"id": "now", "send": {"channel": "email", "template": "welcome"}, "next": "end"},
                         {"id": "later", "wait": {"at": "19:00"}},
                         {"id": "evening", "send": {"channel": "email", "template": "welcome"}}]}
    with pytest.raises(ValueError, match=r"variant 'b' takes its own branch .* drop at"):
        Scenario.model_validate(journey)
    del journey["experiment"]["variants"][1]["at"]
    assert Scenario.model_validate(journey).is_journey
