"""Experiments and the global holdout through the pipeline on real Kafka, PostgreSQL and Redis: control group
members never receive (scenarios and campaigns), a variant is stable across replays and across a merge of two
profiles (the survivor keeps its own), the global holdout blocks marketing but not transactional messages, and
experiment files with a bad weight, a repeated name or a control share out of bounds are refused with the
file line."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cdp_hub.campaigns.model import CAMPAIGN_FILES
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, build_stage, campaign_runner
from cdp_hub.schema import parse_event
from cdp_hub.schema.events import Event
from cdp_hub.triggers.checks import Installed, check_scenario_files
from cdp_hub.triggers.experiments import CONTROL, Experiment, assign, in_holdout
from cdp_hub.triggers.scenario import Scenario
from tests.campaign_data import EXCLUDED, SEGMENT, eligible, profile_id, seed
from tests.conftest import _drop_keys, _test_hotstate, hub_settings

T = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
EXPERIMENT = {"id": "thanks_2026", "control": 0.3,
              "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "vars": {"tone": "warm"}}]}
THANKS = Scenario.model_validate({"id": "thanks", "trigger": {"event": "order.placed"}, "channel": "email",
                                  "template": "welcome", "experiment": EXPERIMENT})


def event(kind: str, at: datetime, rid: str, *identities: tuple[str, str], **props: Any) -> Event:
    return parse_event({"type": kind, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
                        "identities": [{"kind": k, "value": v} for k, v in identities], "properties": props})


def consent(email: str, at: datetime) -> Event:
    return event("consent.changed", at, f"consent-{email}", ("email", email), channel="email", status="opted_in",
                 evidence={"method": "double_opt_in", "reference": "signup"})


async def until(predicate: Any, timeout: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def decisions(hub: Hub, scenario: str) -> list[dict[str, Any]]:
    rows = await hub.store.fetch(
        """SELECT profile_id, body->'properties'->>'decision' AS decision, body->'properties'->>'variant' AS variant,
                  body->'properties'->>'reason' AS reason, body->'properties'->>'trigger_event_id' AS trigger
             FROM events WHERE type = 'message.decided' AND body->'properties'->>'scenario' = $1""", scenario)
    return [dict(r) for r in rows]


async def assignments(hub: Hub, scenario: str) -> list[dict[str, Any]]:
    rows = await hub.store.fetch(
        """SELECT profile_id, body->'properties'->>'variant' AS variant, body->'properties'->>'profile_key' AS key
             FROM events WHERE type = 'experiment.assigned' AND body->'properties'->>'scenario' = $1""", scenario)
    return [dict(r) for r in rows]


@pytest.fixture
async def outbox_hub(tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str,
                     request: pytest.FixtureRequest) -> Any:
    """A hub on real Kafka whose e-mail channel writes files (delivery really runs); ``holdout`` marker:
    the global holdout share."""
    marker = request.node.get_closest_marker("holdout")
    settings = hub_settings(tmp_path, bus="kafka", pg_dsn=pg_dsn, redis_url=redis_url,
                            kafka_bootstrap=kafka_bootstrap, holdout_share=marker.args[0] if marker else 0.0,
                            holdout_salt="test-salt",
                            channels={"email": {"type": "outbox", "config": {"directory": str(tmp_path / "outbox")}}})
    h = Hub(settings, metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await h.start()
    yield h
    await _drop_keys(h.hotstate)
    await h.stop()


async def test_control_never_receives_and_variants_are_stable_across_replays(outbox_hub: Hub) -> None:
    hub = outbox_hub
    n = 30
    emails = [f"exp{i}@example.ru" for i in range(n)]
    first = [consent(e, T - timedelta(minutes=5)) for e in emails] + \
        [event("order.placed", T, f"order-{i}", ("email", e), order_id=f"o{i}", total="100") for i, e in enumerate(emails)]

    async def run(batch: list[Event], wanted: int) -> None:
        pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=[THANKS]),
                                         build_stage(hub, "delivery")])
        task = asyncio.create_task(pipeline.run())
        try:
            await Ingestor(hub).publish_events(batch)

            async def decided() -> bool:
                return len(await decisions(hub, "thanks")) >= wanted

            await until(decided)
            await pipeline.drain(timeout=90)
        finally:
            pipeline.stop()
            await asyncio.wait_for(task, 30)

    await run(first, n)
    got = await decisions(hub, "thanks")
    experiment = Experiment.model_validate(EXPERIMENT)
    arm = {r["profile_id"]: assign(experiment, str(r["profile_id"])) for r in got}
    assert len(arm) == n
    assert {r["profile_id"]: r["decision"] for r in got} == {
        p: CONTROL if a == CONTROL else "sent" for p, a in arm.items()}
    assert all(r["variant"] == arm[r["profile_id"]] for r in got)
    counts = Counter(arm.values())
    assert counts[CONTROL] and counts["a"] and counts["b"], counts  # every arm has people: the test can fail
    sent = await hub.store.fetch("SELECT profile_id, status FROM messages WHERE scenario = 'thanks'")
    assert {r["profile_id"] for r in sent} == {p for p, a in arm.items() if a != CONTROL}
    assert all(r["status"] == "sent" for r in sent)
    recorded = await assignments(hub, "thanks")
    assert sorted((r["profile_id"], r["variant"]) for r in recorded) == sorted(arm.items())  # once each

    # A replay of the same events and a second order each, with a stage that starts afresh: the same arms,
    # still one assignment per profile, and still nothing for the control group.
    second = [event("order.placed", T + timedelta(minutes=1), f"order2-{i}", ("email", e), order_id=f"p{i}")
              for i, e in enumerate(emails)]
    await run(first + second, 2 * n)
    again = await decisions(hub, "thanks")
    assert len(again) == 2 * n
    assert all(r["variant"] == arm[r["profile_id"]] for r in again)
    assert Counter(r["profile_id"] for r in again if r["decision"] == CONTROL) == \
        Counter({p: 2 for p, a in arm.items() if a == CONTROL})
    assert len(await assignments(hub, "thanks")) == n
    sent = await hub.store.fetch("SELECT profile_id FROM messages WHERE scenario = 'thanks'")
    assert not {r["profile_id"] for r in sent} & {p for p, a in arm.items() if a == CONTROL}
    assert len(sent) == 2 * sum(1 for a in arm.values() if a != CONTROL)
    # The metrics count decisions as they are made (a replayed trigger is decided again, its event stored once).
    assert hub.metrics.experiment_controls.labels("thanks")._value.get() >= 2 * counts[CONTROL]
    assert hub.metrics.scenario_sends.labels("thanks", "b", "email")._value.get() >= 2 * counts["b"]
    assert hub.metrics.scenario_sends.labels("thanks", CONTROL, "email")._value.get() == 0


async def test_a_merge_keeps_the_survivors_assignment(kafka_hub: Hub) -> None:
    """Pairs of profiles, each assigned on its own; then each pair is merged (the older survives). A later
    trigger for the younger one's identity is decided for the survivor with the survivor's arm."""
    hub = kafka_hub
    pairs = 12

    def phone(i: int) -> tuple[str, str]:
        return ("phone", f"+7916{3141592 + i * 7919:07d}")  # real-looking: a run of zeros is a junk phone

    receipt = THANKS.model_copy(update={"category": "transactional"})  # no consent needed: the arms matter here
    pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=[receipt])])
    task = asyncio.create_task(pipeline.run())
    ingest = Ingestor(hub)

    async def decided(n: int) -> None:
        async def enough() -> bool:
            return len(await decisions(hub, "thanks")) >= n
        await until(enough)

    try:
        await ingest.publish_events([event("order.placed", T, f"a{i}", ("email", f"old{i}@example.ru"),
                                           order_id=f"a{i}") for i in range(pairs)])
        await decided(pairs)  # the older profiles exist before the younger ones
        await ingest.publish_events([event("order.placed", T, f"b{i}", phone(i),
                                           order_id=f"b{i}") for i in range(pairs)])
        await decided(2 * pairs)
        before = {r["profile_id"]: r["variant"] for r in await decisions(hub, "thanks")}
        await ingest.publish_events([event("customer.updated", T + timedelta(minutes=1), f"link{i}",
                                           ("email", f"old{i}@example.ru"), phone(i))
                                     for i in range(pairs)])

        async def merged() -> bool:
            return int(await hub.store.fetchval("SELECT count(*) FROM merges")) >= pairs
        await until(merged)
        await ingest.publish_events([event("order.placed", T + timedelta(minutes=2), f"c{i}",
                                           phone(i), order_id=f"c{i}") for i in range(pairs)])
        await decided(3 * pairs)
        await pipeline.drain(timeout=60)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)

    survivors = {r["merged_profile_id"]: r["surviving_profile_id"] for r in await hub.store.fetch(
        "SELECT merged_profile_id, surviving_profile_id FROM merges")}
    assert len(survivors) == pairs
    differed = sum(1 for young, old in survivors.items() if before[young] != before[old])
    assert differed, "every pair had the same arm: the test would prove nothing"
    later = [r for r in await decisions(hub, "thanks") if r["profile_id"] not in before]
    assert not later, "every decision after the merge is for a profile that existed"
    after_merge = await hub.store.fetch(
        """SELECT d.profile_id, d.body->'properties'->>'variant' AS variant FROM events d
            JOIN events t ON t.event_id = (d.body->'properties'->>'trigger_event_id')::uuid
           WHERE d.type = 'message.decided' AND t.source_record_id LIKE 'c%'""")
    assert len(after_merge) == pairs
    experiment = Experiment.model_validate(EXPERIMENT)
    for row in after_merge:
        assert row["profile_id"] in survivors.values()
        assert row["variant"] == before[row["profile_id"]] == assign(experiment, str(row["profile_id"]))
    # The survivor now holds both assignments (the merged-away one's moved with its events); its own is the one
    # hashed from its id, which attribution prefers.
    for old in survivors.values():
        rows = [r for r in await assignments(hub, "thanks") if r["profile_id"] == old]
        assert {r["key"] for r in rows} == {str(old), *(str(y) for y, o in survivors.items() if o == old)}


@pytest.mark.holdout(0.5)
async def test_the_global_holdout_blocks_marketing_but_not_transactional(outbox_hub: Hub) -> None:
    hub = outbox_hub
    promo = Scenario.model_validate({"id": "promo", "trigger": {"event": "order.placed"}, "channel": "email",
                                     "template": "welcome"})
    receipt = Scenario.model_validate({"id": "receipt", "trigger": {"event": "order.placed"}, "channel": "email",
                                       "template": "welcome", "category": "transactional"})
    emails = [f"h{i}@example.ru" for i in range(24)]
    pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver"),
                                     build_stage(hub, "triggers", scenarios=[promo, receipt]),
                                     build_stage(hub, "delivery")])
    task = asyncio.create_task(pipeline.run())
    try:
        await Ingestor(hub).publish_events(
            [consent(e, T - timedelta(minutes=5)) for e in emails]
            + [event("order.placed", T, f"h{i}", ("email", e), order_id=f"h{i}") for i, e in enumerate(emails)])

        async def all_decided() -> bool:
            return len(await decisions(hub, "promo")) + len(await decisions(hub, "receipt")) >= 2 * len(emails)

        await until(all_decided)
        await pipeline.drain(timeout=90)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)

    held = {r["profile_id"] for r in await decisions(hub, "promo") if r["decision"] == "holdout"}
    everyone = {r["profile_id"] for r in await decisions(hub, "receipt")}
    assert len(everyone) == len(emails)
    assert held == {p for p in everyone if in_holdout("test-salt", 0.5, str(p))}
    assert held and held != everyone, "both groups have people: the test can fail"
    assert {r["reason"] for r in await decisions(hub, "promo") if r["decision"] == "holdout"} == {"global_holdout"}
    assert {r["decision"] for r in await decisions(hub, "receipt")} == {"sent"}
    sent = await hub.store.fetch("SELECT profile_id, scenario FROM messages")
    assert {r["profile_id"] for r in sent if r["scenario"] == "promo"} == everyone - held
    assert {r["profile_id"] for r in sent if r["scenario"] == "receipt"} == everyone


@pytest.mark.holdout(0.2)
async def test_a_campaign_control_group_and_the_holdout_get_nothing(outbox_hub: Hub, tmp_path: Path) -> None:
    hub = outbox_hub
    n = 120
    await seed(hub.store, n, tag="xc")
    spring = CAMPAIGN_FILES.parse({"id": "spring_ab", "audience": {"segment": SEGMENT, "exclude": [EXCLUDED]},
                                   "channel": "email", "template": "welcome", "rate_limit": 1000,
                                   "experiment": {"id": "spring_ab", "control": 0.25,
                                                  "variants": [{"name": "short", "weight": 1},
                                                               {"name": "long", "weight": 1}]}}, origin="test")
    assert spring.experiment is not None
    runner = campaign_runner(hub)
    launched = await runner.launch(spring)
    assert launched is not None
    result = await runner.execute(launched.run_id)
    assert result.status == "done"
    pipeline = Pipeline(hub, ["resolver", "delivery"])
    task = asyncio.create_task(pipeline.run())
    try:
        await pipeline.drain(timeout=90)
    finally:
        pipeline.stop()
        await task
    audience = {profile_id("xc", g) for g in range(1, n + 1) if g % 10 != 0}
    held = {p for p in audience if in_holdout("test-salt", 0.2, str(p))}
    eligible_ids = {profile_id("xc", g) for g in range(1, n + 1) if eligible(g)} - held
    arm = {p: assign(spring.experiment, str(p)) for p in eligible_ids}
    control = {p for p, a in arm.items() if a == CONTROL}
    assert control and control != eligible_ids and held
    rows = await hub.store.fetch("SELECT profile_id, status, reason FROM campaign_audience WHERE run_id = $1",
                                 launched.run_id)
    assert {r["profile_id"] for r in rows if r["reason"] == CONTROL} == control
    assert {r["profile_id"] for r in rows if r["reason"] == "holdout"} == held
    sent = {r["profile_id"] for r in await hub.store.fetch(
        "SELECT profile_id FROM messages WHERE scenario = $1", spring.scenario)}
    assert sent == eligible_ids - control, "the control group and the holdout get nothing, the others one message"
    status = await runner.status(launched.run_id)
    assert status is not None and status.skipped.get(CONTROL) == len(control)
    assert status.skipped.get("holdout") == len(held)
    recorded = await assignments(hub, spring.scenario)
    assert {(r["profile_id"], r["variant"]) for r in recorded} == set(arm.items())


def test_experiment_files_are_checked_with_their_lines(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "bad.yaml").write_text(
        "id: bad_exp\n"
        "trigger: {event: order.placed}\n"
        "channel: email\n"
        "template: welcome\n"
        "experiment:\n"
        "  id: bad\n"
        "  control: 0.7\n"
        "  variants:\n"
        "    - {name: a, weight: 1}\n"
        "    - name: a\n"
        "      weight: 0\n"
        "    - {name: control, weight: 2}\n")
    installed = Installed(channel_kind=lambda name: "email" if name == "email" else None,
                          template_exists=lambda *_: True, segments=frozenset())
    _, problems = check_scenario_files([scenarios], installed, builtin=False)
    got = {(p.line, p.path) for p in problems}
    assert got == {(7, "$.experiment.control"), (10, "$.experiment.variants[1].name"),
                   (11, "$.experiment.variants[1].weight"), (12, "$.experiment.variants[2].name")}
    assert all(str(p).startswith(str(scenarios / "bad.yaml")) for p in problems)
    assert any("0.5" in p.message for p in problems if p.path == "$.experiment.control")

    (scenarios / "bad.yaml").write_text(
        "id: channel_exp\ntrigger: {event: order.placed}\nchannel: email\ntemplate: welcome\n"
        "experiment:\n  id: ch\n  variants:\n    - {name: a, weight: 1}\n    - {name: b, weight: 1, channel: sms}\n")
    _, problems = check_scenario_files([scenarios], installed, builtin=False)
    assert [(p.line, p.path) for p in problems] == [(9, "$.experiment.variants[1].channel")]
    with pytest.raises(ValueError, match="unique"):
        Experiment.model_validate({"id": "x", "variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]})


def test_assignment_is_deterministic_and_follows_the_weights() -> None:
    experiment = Experiment.model_validate({"id": "w", "control": 0.2, "variants": [
        {"name": "a", "weight": 3}, {"name": "b", "weight": 1}]})
    ids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(20000)]
    arms = Counter(assign(experiment, p) for p in ids)
    assert arms[CONTROL] / len(ids) == pytest.approx(0.2, abs=0.015)
    assert arms["a"] / len(ids) == pytest.approx(0.6, abs=0.015)
    assert arms["b"] / len(ids) == pytest.approx(0.2, abs=0.015)
    assert [assign(experiment, p) for p in ids[:100]] == [assign(experiment, p) for p in ids[:100]]
    renamed = experiment.model_copy(update={"id": "w2"})
    assert sum(assign(experiment, p) != assign(renamed, p) for p in ids[:1000]) > 300  # a new id reshuffles
    # The holdout is independent of the experiments: its members spread over the arms like everybody.
    held = [p for p in ids if in_holdout("salt", 0.1, p)]
    assert len(held) / len(ids) == pytest.approx(0.1, abs=0.01)
    assert Counter(assign(experiment, p) for p in held)[CONTROL] / len(held) == pytest.approx(0.2, abs=0.04)


def test_the_examples_of_the_experiments_guide_are_valid(tmp_path: Path) -> None:
    """docs/experiments.md: its scenario and campaign examples pass the checks, its settings are accepted."""
    import re
    import tomllib

    from cdp_hub.campaigns.checks import check_campaign_files
    from cdp_hub.config import Settings

    text = (Path(__file__).resolve().parent.parent / "docs" / "experiments.md").read_text(encoding="utf-8")
    scenario_yaml, campaign_yaml, *journeys, send_time_yaml = re.findall(r"```yaml\n(.*?)```", text, re.S)
    installed = Installed(channel_kind=lambda name: {"email": "email", "sms": "sms", "push": "push"}.get(name),
                          template_exists=lambda *_: True, segments=frozenset({"active_buyers"}))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "cart.yaml").write_text(scenario_yaml, encoding="utf-8")
    scenarios, problems = check_scenario_files([tmp_path / "s"], installed, builtin=False)
    assert problems == []
    [cart] = scenarios
    assert cart.experiment is not None and [v.name for v in cart.experiment.variants] == ["a", "b", "c"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "spring.yaml").write_text(campaign_yaml, encoding="utf-8")
    campaigns, problems = check_campaign_files([tmp_path / "c"], installed)
    assert problems == []
    assert campaigns[0].experiment is not None and campaigns[0].experiment.variants[1].channel == "push"
    (tmp_path / "j").mkdir()
    for i, block in enumerate(journeys):  # a journey's variants as branches
        (tmp_path / "j" / f"journey{i}.yaml").write_text(block, encoding="utf-8")
    loaded, problems = check_scenario_files([tmp_path / "j"], installed, builtin=False)
    assert problems == []
    assert [s.id for s in loaded if s.is_journey and s.experiment is not None] == ["welcome_test"]
    (tmp_path / "s" / "cart.yaml").write_text(send_time_yaml, encoding="utf-8")
    scenarios, problems = check_scenario_files([tmp_path / "s"], installed, builtin=False)
    assert problems == []
    [hour] = scenarios
    assert hour.experiment is not None
    assert [(v.name, v.delay, v.at, v.timezone) for v in hour.experiment.variants] == [
        ("morning", None, "10:00", None), ("evening", None, "19:00", "Asia/Vladivostok"),
        ("next_morning", "1d", "10:00", None)]
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        settings = Settings(**tomllib.loads(block))
        assert settings.holdout_share == 0.05


async def test_variants_change_template_channel_and_send_time(hub: Hub) -> None:
    """On the triggers stage (PostgreSQL, Redis): a variant's template, channel and variables reach the intent,
    and a send-time variant waits its extra delay as a durable timer, keeping its arm when it fires."""
    from cdp_hub.bus.base import Record
    from cdp_hub.pipeline.stage import StageOutput
    from cdp_hub.schema import MessageIntent
    from cdp_hub.store import ConsentRepository, ConsentStatement

    experiment = {"id": "send_time", "variants": [
        {"name": "now", "weight": 1},
        {"name": "later", "weight": 1, "delay": "2h", "template": "abandoned_cart", "channel": "sms",
         "vars": {"tone": "warm"}}]}
    scenario = Scenario.model_validate({"id": "nudge", "trigger": {"event": "order.placed"}, "channel": "email",
                                        "fallbacks": ["sms"], "template": "welcome", "experiment": experiment})
    t0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    pids = [uuid.uuid4() for _ in range(16)]
    for pid in pids:
        await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, '{}')", pid)
    await ConsentRepository(hub.store).record([
        ConsentStatement(pid, channel, "marketing", "opted_in", t0 - timedelta(days=1), "crm", uuid.uuid4(),
                         {"method": "double_opt_in"}) for pid in pids for channel in ("email", "sms")])

    def record(pid: uuid.UUID) -> Record:
        ev = parse_event({"type": "order.placed", "source": "shop", "source_record_id": f"o-{pid}",
                          "occurred_at": t0.isoformat(), "properties": {"order_id": str(pid)},
                          "identities": [{"kind": "email", "value": f"{pid.hex[:8]}@example.ru"}],
                          "profile_id": str(pid)})
        return Record("cdp.profile-events", 0, 0, str(pid).encode(), ev.to_json())

    def intents(out: StageOutput) -> dict[str, MessageIntent]:
        found = [MessageIntent.model_validate_json(m.value) for m in out.messages if m.topic.endswith("cdp.messages")]
        return {i.profile_id: i for i in found}

    hub.clock = lambda: t0 + timedelta(seconds=5)
    stage = build_stage(hub, "triggers", scenarios=[scenario])
    out = await stage.handle([record(pid) for pid in pids])
    arms = {str(pid): assign(Experiment.model_validate(experiment), str(pid)) for pid in pids}
    assert set(arms.values()) == {"now", "later"}
    first = intents(out)
    assert set(first) == {p for p, a in arms.items() if a == "now"}
    assert all(i.template == "welcome" and i.channel == "email" and i.vars["variant"] == "now"
               for i in first.values())
    assert await hub.store.fetchval("SELECT count(*) FROM scheduled_triggers WHERE status = 'pending'") == \
        sum(1 for a in arms.values() if a == "later")

    hub.clock = lambda: t0 + timedelta(hours=1)  # not yet
    assert await build_stage(hub, "triggers", scenarios=[scenario]).fire_due_timers(StageOutput()) == 0
    hub.clock = lambda: t0 + timedelta(hours=2, minutes=2)  # two hours and the allowed lateness later
    fired = StageOutput()
    await build_stage(hub, "triggers", scenarios=[scenario]).fire_due_timers(fired)
    later = intents(fired)
    assert set(later) == {p for p, a in arms.items() if a == "later"}
    for intent in later.values():
        assert (intent.template, intent.channel, intent.fallbacks) == ("abandoned_cart", "sms", [])
        assert intent.vars == {"tone": "warm", "experiment": "send_time", "variant": "later"}
