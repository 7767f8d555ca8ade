"""Experiments on journeys: a variant is a whole branch of steps (``goto``), the control group enters nothing,
the arm is kept with the position (weights edited mid-flight move nobody), every send and decision names the
arm, attribution reads them like a single send's; the checks, `scenarios simulate` and the campaign side."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from cdp_hub.bus.base import Record
from cdp_hub.campaigns.model import Campaign
from cdp_hub.hub import Hub
from cdp_hub.schema.events import Event
from cdp_hub.store.attribution import AttributionRepository
from cdp_hub.triggers.experiments import assign
from cdp_hub.triggers.journeys import simulate_journey
from cdp_hub.triggers.scenario import Scenario
from cdp_hub.triggers.stage import TriggerOptions
from tests.test_cli import cdp_hub
from tests.test_journeys import Driver, consent, event
from tests.test_journeys_checks import _check

T = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # 12:00 in Moscow: no quiet hours
H = timedelta(hours=1)
D = timedelta(days=1)

CHAIN = """
id: welcome_test
trigger: {event: profile.created}
category: marketing
experiment:
  id: welcome_chain_2026
  control: 0.2
  variants:
    - {name: two_step, weight: 1, vars: {discount: 5}}
    - {name: one_step, weight: 1, goto: single}
steps:
  - id: hello
    send: {channel: email, template: welcome}
  - id: pause
    wait: 2d
  - id: reminder
    send: {channel: email, template: welcome_bestsellers}
    next: end
  - id: single
    send: {channel: email, template: welcome_first_order}
"""
WELCOME = Scenario.model_validate(yaml.safe_load(CHAIN))
PEOPLE = [f"p{i:02d}" for i in range(48)]


def _edited(weights: tuple[float, float], control: float) -> Scenario:
    data = yaml.safe_load(CHAIN)
    data["experiment"]["control"] = control
    for variant, weight in zip(data["experiment"]["variants"], weights, strict=True):
        variant["weight"] = weight
    return Scenario.model_validate(data)


async def _arms(drive: Driver) -> dict[str, str]:
    """Each customer's recorded arm (the experiment.assigned events the stage published)."""
    who = await drive.who()
    return {who[str(e.profile_id)]: e.properties["variant"] for e in drive.published
            if e.type == "experiment.assigned" and e.properties["scenario"] == WELCOME.id}


async def test_each_arm_walks_its_own_branch_and_the_control_group_gets_nothing(hub: Hub) -> None:
    drive = Driver(hub, [WELCOME], T)
    await drive.feed([consent(p, T + i * timedelta(seconds=1)) for i, p in enumerate(PEOPLE)])
    who = await drive.who()
    arms = await _arms(drive)
    assert set(arms) == set(PEOPLE)
    # The recorded arm is the pure assignment of the profile id the decision was made for.
    pid_of = {name: pid for pid, name in who.items()}
    assert all(arms[p] == assign(WELCOME.experiment, pid_of[p]) for p in PEOPLE)  # type: ignore[arg-type]
    counts = Counter(arms.values())
    assert set(counts) == {"control", "one_step", "two_step"}, counts

    await drive.at(T + 3 * D)
    sent: dict[str, list[str]] = {p: [] for p in PEOPLE}
    for intent in {i.message_id: i for i in drive.intents}.values():
        name = who[intent.profile_id]
        sent[name].append(intent.template)
        assert intent.vars["variant"] == arms[name] and intent.vars["experiment"] == "welcome_chain_2026"
        assert intent.vars.get("discount") == (5 if arms[name] == "two_step" else None)
    expected = {"control": [], "one_step": ["welcome_first_order"], "two_step": ["welcome", "welcome_bestsellers"]}
    assert {p: sorted(t) for p, t in sent.items()} == {p: expected[arms[p]] for p in PEOPLE}

    # Decisions name the arm; the control group's one decision each is what attribution compares with.
    decisions = Counter((who[str(e.profile_id)], e.properties["decision"], e.properties.get("variant"))
                        for e in {e.event_id: e for e in drive.published if e.type == "message.decided"}.values())
    for p in PEOPLE:
        if arms[p] == "control":
            assert decisions[(p, "control", "control")] == 1
        else:
            assert decisions[(p, "sent", arms[p])] == len(expected[arms[p]])
    rows = await hub.store.fetch("SELECT status, variant, count(*) AS n FROM journey_positions GROUP BY 1, 2")
    assert {(r["status"], r["variant"]): r["n"] for r in rows} == {
        ("control", "control"): counts["control"], ("completed", "one_step"): counts["one_step"],
        ("completed", "two_step"): counts["two_step"]}

    # The operator's metrics count what was stored: a redelivery of every record changes none of them.
    await drive.deliver(drive.profile_records)
    await drive.at(T + 4 * D)

    def sample(name: str, **labels: str) -> float:
        return hub.metrics.registry.get_sample_value(name, {"scenario": WELCOME.id, **labels}) or 0.0

    for arm in ("control", "one_step", "two_step"):
        assert sample("cdp_journey_entries_total", arm=arm) == counts[arm]
    assert sample("cdp_journey_finished_total", status="control") == counts["control"]
    assert sample("cdp_journey_finished_total", status="completed") == counts["one_step"] + counts["two_step"]
    assert sample("cdp_journey_steps_total", step="single", kind="send") == counts["one_step"]
    assert sample("cdp_journey_steps_total", step="hello", kind="send") == counts["two_step"]
    assert sample("cdp_journey_steps_total", step="pause", kind="wait") == counts["two_step"]
    assert sample("cdp_journey_steps_total", step="reminder", kind="send") == counts["two_step"]


async def test_the_arm_stays_with_the_position_when_weights_change_mid_flight(hub: Hub) -> None:
    drive = Driver(hub, [WELCOME], T)
    await drive.feed([consent(p, T) for p in PEOPLE])
    arms = await _arms(drive)
    # The marketer edits the experiment while people wait in the journey: nearly everybody would now be
    # assigned one_step and nobody control. The people already in keep their branch and their arm.
    edited = _edited((0.001, 1000.0), 0.0)
    drive.new_triggers([edited])
    await drive.at(T + 3 * D)
    who = await drive.who()
    reminders = {who[i.profile_id]: i.vars["variant"] for i in drive.intents if i.template == "welcome_bestsellers"}
    assert reminders == {p: "two_step" for p in PEOPLE if arms[p] == "two_step"}
    assert all(i.vars["variant"] == arms[who[i.profile_id]] for i in drive.intents)
    # The re-entry policy (once) holds for the control group as for everybody else: the control entry is kept.
    created = [Event.from_json(r.value) for r in drive.profile_records]
    again = [e.model_copy(update={"event_id": uuid.uuid4(), "occurred_at": T + 4 * D})
             for e in created if e.type == "profile.created"]
    await drive.deliver([Record(hub.topics.profile_events, 0, 10_000 + i, None, e.to_json())
                         for i, e in enumerate(again)])
    assert len({i.message_id for i in drive.intents}) == sum(
        {"control": 0, "one_step": 1, "two_step": 2}[arms[p]] for p in PEOPLE)


async def test_attribution_compares_the_journeys_variants_with_its_control_group(hub: Hub) -> None:
    drive = Driver(hub, [WELCOME], T)
    await drive.feed([consent(p, T) for p in PEOPLE])
    await drive.at(T + 3 * D)
    who = await drive.who()
    arms = await _arms(drive)
    # The hub's own events (assignments, decisions) reach the warehouse through the resolver, as in the
    # pipeline; the channel reports each first message delivered; half of every arm orders within the window.
    receipts = []
    for intent in {i.message_id: i for i in drive.intents}.values():
        for kind in ("message.sent", "message.delivered"):
            receipts.append(event(kind, who[intent.profile_id], T + 3 * D + H, f"{kind}-{intent.message_id}",
                                  message_id=intent.message_id, scenario=intent.scenario, channel="email",
                                  template=intent.template))
    orders = [event("order.placed", p, T + 4 * D, f"order-{p}", order_id=f"o-{p}", total=1000.0 + i,
                    currency="RUB") for i, p in enumerate(PEOPLE) if i % 2 == 0]
    await drive.feed([*drive.published, *receipts, *orders])
    figures = await AttributionRepository(hub.store).figures(T - D, T + 10 * D, window=timedelta(days=7),
                                                             conversion_events=["order.placed"])
    mine = {(f.variant, f.channel): f for f in figures if f.scenario == WELCOME.id}
    counts = Counter(arms.values())
    ordered = Counter(arms[p] for i, p in enumerate(PEOPLE) if i % 2 == 0)
    assert mine[("control", "")].recipients == counts["control"]
    assert mine[("control", "")].converted == ordered["control"]
    for arm in ("one_step", "two_step"):
        assert mine[(arm, "*")].recipients == counts[arm]
        assert mine[(arm, "*")].converted == ordered[arm]
    assert mine[("two_step", "email")].sent == 2 * counts["two_step"]


def test_journey_experiments_are_checked_with_their_lines(tmp_path: Path) -> None:
    unknown = CHAIN.replace("goto: single}", "goto: singel}")
    problems = _check(tmp_path, {"a.yaml": unknown})
    assert any("a.yaml:" in p and "unknown step 'singel'" in p for p in problems), problems
    (tmp_path / "a.yaml").unlink()
    # A step reached only through a variant's goto is an entry, not an unreachable step.
    assert _check(tmp_path, {"b.yaml": CHAIN}) == []
    with pytest.raises(ValidationError, match=r"takes its own branch.*drop template"):
        Scenario.model_validate(yaml.safe_load(CHAIN.replace("vars: {discount: 5}", "template: welcome_b")))
    single = {"id": "s", "trigger": {"event": "cart.updated"}, "channel": "email", "template": "welcome",
              "experiment": {"id": "x", "variants": [{"name": "a", "weight": 1, "goto": "hello"}]}}
    with pytest.raises(ValidationError, match="goto, which only a journey"):
        Scenario.model_validate(single)
    campaign = {"id": "c", "audience": {"segment": "vip"}, "channel": "email", "template": "welcome",
                "rate_limit": 10, "experiment": single["experiment"]}
    with pytest.raises(ValidationError, match="goto, which only a journey"):
        Campaign.model_validate(campaign)


def test_simulate_shows_the_arm_and_its_branch(tmp_path: Path) -> None:
    options = TriggerOptions()
    seen: dict[str, list[dict[str, Any]]] = {}
    for i in range(40):
        pid = f"00000000-0000-4000-8000-{i:012d}"
        created = {"event_id": f"e{i}", "type": "profile.created", "occurred_at": T.isoformat(),
                   "properties": {}}
        rows = simulate_journey(WELCOME, [created], {"profile_id": pid, "consents": {"email": "opted_in"}},
                                options=options)
        arm = next(r["outcome"] for r in rows if r["kind"] == "experiment")
        assert arm == assign(WELCOME.experiment, pid)  # type: ignore[arg-type]
        seen.setdefault(arm, rows)
    assert [r["template"] for r in seen["one_step"] if r["kind"] == "send"] == ["welcome_first_order"]
    assert [r["template"] for r in seen["two_step"] if r["kind"] == "send"] == ["welcome", "welcome_bestsellers"]
    assert [r["kind"] for r in seen["control"]] == ["entry", "experiment", "end"]
    # The command prints the same walk.
    journey = tmp_path / "welcome_test.yaml"
    journey.write_text(CHAIN, encoding="utf-8")
    events = tmp_path / "events.jsonl"
    pid = "00000000-0000-4000-8000-000000000001"
    events.write_text(json.dumps({
        "type": "profile.created", "source": "shop", "source_record_id": "c1", "occurred_at": T.isoformat(),
        "identities": [{"kind": "email", "value": "anna@example.ru"}], "properties": {"profile_id": pid}}) + "\n",
        encoding="utf-8")
    profile = tmp_path / "anna.json"
    profile.write_text(json.dumps({"profile_id": pid}), encoding="utf-8")
    res = cdp_hub("scenarios", "simulate", "welcome_test", "--events", str(events), "--profile-file", str(profile),
                  "--json", env={"CDP_HUB_SCENARIOS_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["outcome"] for r in rows if r["kind"] == "experiment"] == [assign(WELCOME.experiment, pid)]  # type: ignore[arg-type]


def test_assign_is_what_the_guide_says() -> None:
    # 20% control, the rest split evenly: over many ids the shares come close to the weights.
    counts = Counter(assign(WELCOME.experiment, f"id-{i}") for i in range(20_000))  # type: ignore[arg-type]
    assert abs(counts["control"] / 20_000 - 0.2) < 0.02
    assert abs(counts["one_step"] / 20_000 - 0.4) < 0.02

