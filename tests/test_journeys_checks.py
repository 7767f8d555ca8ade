"""Journeys as data: the schema, the step-reference checks with file and line, docs/journeys.md's examples,
the built-in journeys, the pure walk (split, branch, wait_for, exits) and `cdp-hub scenarios simulate`."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdp_hub.config import Settings
from cdp_hub.datafiles import located_documents
from cdp_hub.errors import ConfigurationError
from cdp_hub.store.journeys import Position
from cdp_hub.triggers.checks import Installed, check_scenario, check_scenario_files
from cdp_hub.triggers.cli import installed
from cdp_hub.triggers.journeys import JourneyPlan, Timeline, simulate_journey, split_arm, walk
from cdp_hub.triggers.scenario import SCENARIO_FILES, Scenario, parse_scenario
from cdp_hub.triggers.stage import TriggerOptions
from tests.test_cli import cdp_hub

ROOT = Path(__file__).resolve().parent.parent
T = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
PID = "0b6f0c6e-8d6f-4a53-9a0e-2f1d3c4b5a69"

INSTALLED = Installed(channel_kind=lambda name: {"email": "email", "push": "push", "sms": "sms"}.get(name),
                      template_exists=lambda name, kind, locale: name != "no_such",
                      segments=frozenset({"vip"}))


def _check(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    _, problems = check_scenario_files([tmp_path], INSTALLED, builtin=False)
    return [str(p) for p in problems]


def test_step_references_are_checked_with_file_line_and_path(tmp_path: Path) -> None:
    problems = _check(tmp_path, {
        "refs.yaml": "id: refs\ntrigger: {event: profile.created}\nsteps:\n"
                     "  - id: hello\n    send: {channel: email, template: welcome}\n"
                     "  - id: await_app\n    wait_for: {event: app.installed, within: 2d}\n"
                     "    on_event: hello\n    on_timeout: nudgee\n"
                     "  - id: hello\n    wait: 1d\n",
        "orphan.yaml": "id: orphan\ntrigger: {event: profile.created}\nsteps:\n"
                       "  - id: hello\n    send: {channel: email, template: welcome}\n    next: end\n"
                       "  - id: lost\n    send: {channel: email, template: welcome}\n",
        "exits.yaml": "id: exits\ntrigger: {event: profile.created}\nexit_on:\n"
                      "  - {event: order.placed, conditions: [{field: event.properties.totl, op: gte, value: 1}]}\n"
                      "steps:\n  - id: hello\n    send: {channel: email, template: welcome}\n",
        "names.yaml": "id: names\ntrigger: {event: profile.created}\nexit_on: [order.placd]\nsteps:\n"
                      "  - id: hello\n    send: {channel: telegram, template: welcome}\n"
                      "  - id: app\n    wait_for: {event: app.instaled, within: 2d}\n"
                      "  - id: tier\n    branch:\n"
                      "      - if: [{field: profile.segments, op: contains, value: vipp}]\n        then: offer\n"
                      "      - if: [{count: order.placedd, within: 30d, value: 1}]\n        then: offer\n"
                      "  - id: offer\n    send: {channel: email, fallbacks: [push], template: no_such}\n",
    })
    refs, orphan, names = (str(tmp_path / f) for f in ("refs.yaml", "orphan.yaml", "names.yaml"))
    assert f"{refs}:10: $.steps[2].id: duplicate step id 'hello'" in problems
    assert f"{refs}:9: $.steps[1].on_timeout: unknown step 'nudgee' (steps: hello, await_app)" in problems
    assert f"{orphan}:7: $.steps[1]: step 'lost' is unreachable (no step leads to it)" in problems
    assert f"{names}:3: $.exit_on[0]: unknown event type 'order.placd' (did you mean 'order.placed'?)" in problems
    exits = str(tmp_path / "exits.yaml")
    assert any(p.startswith(f"{exits}:4: $.exit_on[0].conditions[0].field: order.placed events have no property "
                            "'totl' (did you mean 'total'?)") for p in problems)
    assert any(p.startswith(f"{names}:6: $.steps[0].send.channel: channel 'telegram' is not configured")
               for p in problems)
    assert f"{names}:8: $.steps[1].wait_for.event: unknown event type 'app.instaled' " \
           "(did you mean 'app.installed'?)" in problems
    assert f"{names}:11: $.steps[2].branch[0].if[0].value: unknown segment 'vipp' (did you mean 'vip'?)" in problems
    assert f"{names}:13: $.steps[2].branch[1].if[0].count: unknown event type 'order.placedd' " \
           "(did you mean 'order.placed'?)" in problems
    assert any(p.startswith(f"{names}:16: $.steps[3].send.template: no template 'no_such' for email")
               for p in problems)
    assert any(p.startswith(f"{names}:16: $.steps[3].send.template: no template 'no_such' for push")
               for p in problems)
    assert len(problems) == 11


@pytest.mark.parametrize("document, message", [
    ({"steps": [{"id": "a", "send": {"channel": "email", "template": "t"}, "wait": "1d"}]},
     "exactly one of send, wait, wait_for, branch, split"),
    ({"steps": [{"id": "a", "wait": "soon"}]}, "bad duration 'soon'"),
    ({"steps": [{"id": "a", "wait": {"at": "25:00"}}]}, "does not match"),
    ({"steps": [{"id": "a", "send": {"channel": "email", "template": "t"}}], "channel": "email"},
     "a journey's sends name their channel and template"),
    ({}, "'channel' is a required property"),
    ({"steps": [{"id": "a", "send": {"channel": "email", "template": "t"}}], "delay": "1h"},
     "a journey waits with its steps"),
    ({"steps": [{"id": "a", "send": {"channel": "email", "template": "t"}, "next": "b"}]}, "unknown step 'b'"),
    ({"channel": "email", "template": "t", "exit_on": ["order.placed"]}, "are for journeys"),
])
def test_the_schema_and_model_refuse_a_malformed_journey(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        parse_scenario({"id": "j", "trigger": {"event": "profile.created"}, **document}, origin="j.yaml")


def test_every_yaml_example_of_the_journeys_doc_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "journeys.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) == 4
    for n, block in enumerate(blocks):
        (tmp_path / f"example{n}.yaml").write_text(block, encoding="utf-8")
        parse_scenario(yaml.safe_load(block), origin=f"example{n}")
    journeys, problems = check_scenario_files([tmp_path], INSTALLED, builtin=False)
    assert problems == []
    [onboarding] = journeys  # the second switches the single welcome off, the last two are off as shipped
    # The built-in journeys as the page shows them, to copy: the same as the shipped files.
    shipped = {s.id: s for s in SCENARIO_FILES.load()}
    for block in blocks[2:]:
        shown = parse_scenario(yaml.safe_load(block), origin="docs")
        assert shown == shipped[shown.id]
    assert onboarding.id == "onboarding" and onboarding.steps is not None and len(onboarding.steps) == 9
    # The README and docs/scenarios.md point at the page.
    assert "docs/journeys.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "journeys.md" in (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")


def test_the_builtin_journeys_are_valid_with_the_builtin_templates() -> None:
    docs = located_documents([], what="scenarios", texts=SCENARIO_FILES.builtin_files())
    checked = installed(Settings())
    journeys = {}
    for doc in docs:
        scenario = SCENARIO_FILES.parse(doc.data, origin=doc.origin)
        if scenario.steps is not None:
            journeys[scenario.id] = scenario
            assert [str(p) for p in check_scenario(scenario, doc, checked) if p.severity == "error"] == []
    assert set(journeys) == {"welcome_series", "post_purchase"}
    assert [s.send.template for s in journeys["welcome_series"].steps or () if s.send] == [
        "welcome", "welcome_bestsellers", "welcome_first_order"]
    assert not journeys["post_purchase"].enabled and not journeys["welcome_series"].enabled  # switched on by hand


def _event(kind: str, at: datetime, rid: str, **props: Any) -> dict[str, Any]:
    return {"event_id": rid, "type": kind, "occurred_at": at.isoformat(), "properties": props}


def test_split_is_stable_and_follows_the_weights() -> None:
    journey = Scenario.model_validate(yaml.safe_load("""
id: ab
trigger: {event: profile.created}
steps:
  - {id: pick, split: [{weight: 3, then: a}, {weight: 1, then: b}]}
  - {id: a, send: {channel: email, template: welcome}, next: end}
  - {id: b, send: {channel: email, template: welcome}}
"""))
    assert journey.steps is not None
    step = journey.steps[0]
    arms = [split_arm(f"p{i}", "ab", step) for i in range(4000)]
    assert arms == [split_arm(f"p{i}", "ab", step) for i in range(4000)]  # a replay takes the same arm
    assert 0.72 < arms.count("a") / len(arms) < 0.78


def test_the_post_purchase_walk_takes_delivery_of_this_order_only() -> None:
    plan = JourneyPlan(next(s for s in SCENARIO_FILES.load() if s.id == "post_purchase"))
    entry = _event("order.placed", T, "o1", order_id="A-1")
    position = Position(uuid.UUID(PID), plan.id, uuid.uuid4(), T, "active", plan.first,
                        0, T, None, entry)
    timeline = Timeline()
    timeline.add(PID, entry)
    timeline.add(PID, _event("order.delivered", T + timedelta(days=2), "d0", order_id="OTHER"))
    # Only the other order's delivery so far: the chain thanks, then waits for this one.
    first = walk(plan, position, at=T + timedelta(days=3), timeline=timeline, profile={})
    assert [s.id for s, _, _ in first.sends] == ["thank_you"]
    assert first.position.step == "delivered" and first.position.due_at == T + timedelta(days=14)
    timeline.add(PID, _event("order.delivered", T + timedelta(days=4), "d1", order_id="A-1"))
    later = walk(plan, first.position, at=T + timedelta(days=30), timeline=timeline, profile={})
    assert [(s.id, at.isoformat()) for s, at, _ in later.sends] == [
        ("review", "2026-06-08T09:00:00+00:00"),  # the third day after delivery, 12:00 in Moscow
        ("cross_sell", "2026-06-15T09:00:00+00:00")]  # 14 days after the order, 12:00 in Moscow
    assert later.position.status == "completed"
    # A return ends it wherever it is.
    timeline.add(PID, _event("order.returned", T + timedelta(days=6), "r1", order_id="A-1"))
    returned = walk(plan, first.position, at=T + timedelta(days=30), timeline=timeline, profile={})
    assert [s.id for s, _, _ in returned.sends] == [] and returned.position.status == "exited"
    assert returned.finished_by is not None and returned.finished_by.type == "order.returned"


def test_simulate_walks_a_journey_for_a_profile_and_timeline(tmp_path: Path) -> None:
    events = tmp_path / "anna.jsonl"
    ident = [{"kind": "email", "value": "anna@example.ru"}]
    lines = [
        {"type": "profile.created", "source": "shop", "source_record_id": "c1", "occurred_at": "2026-06-01T09:00:00Z",
         "identities": ident, "properties": {"profile_id": PID}},
        {"type": "order.placed", "source": "shop", "source_record_id": "o1", "occurred_at": "2026-06-05T10:00:00Z",
         "identities": ident, "properties": {"order_id": "A-1"}},
    ]
    events.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    profile = tmp_path / "anna.json"
    profile.write_text(json.dumps({"profile_id": PID, "timezone": "Europe/Moscow", "consent": {"email": "opted_in"}}),
                       encoding="utf-8")
    res = cdp_hub("scenarios", "simulate", "welcome_series", "--events", str(events), "--profile-file", str(profile))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "2026-06-01T09:00:00  hello            entry     entered            on profile.created (reentry: once)",
        "2026-06-01T09:00:00  hello            send      send               email / welcome  => sent: consent and "
        "quiet hours allow it (caps are applied live)",
        "2026-06-04T08:00:00  three_days       wait      -> bestsellers     the wait is over",
        "2026-06-04T08:00:00  bestsellers      send      send               email / welcome_bestsellers  => sent: "
        "consent and quiet hours allow it (caps are applied live)",
        "2026-06-05T10:00:00  a_week           wait      converted          order.placed happened",
        "1 entries; 2 sent; ended: converted"]
    # --json, and without consent: each send is refused, the walk goes on.
    profile.write_text(json.dumps({"profile_id": PID}), encoding="utf-8")
    res = cdp_hub("scenarios", "simulate", "post_purchase", "--events", str(events), "--profile-file", str(profile),
                  "--json")
    rows = json.loads(res.stdout)
    assert [(r["step"], r["outcome"], r.get("decision")) for r in rows] == [
        ("thank_you", "entered", None), ("thank_you", "send", "no_consent"),
        ("delivered", "-> two_weeks", None), ("two_weeks", "-> cross_sell", None),
        ("cross_sell", "send", "no_consent"), ("", "completed", None)]


def test_simulate_agrees_with_the_walk_of_the_stage() -> None:
    """The simulation is the stage's walk: the same journey, profile and timeline send the same steps."""
    plan_source = next(s for s in SCENARIO_FILES.load() if s.id == "welcome_series")
    rows = simulate_journey(plan_source, [_event("profile.created", T, "c1")], {"profile_id": PID},
                            options=TriggerOptions())
    assert [r["template"] for r in rows if "template" in r] == ["welcome", "welcome_bestsellers",
                                                               "welcome_first_order"]
    assert rows[-1]["outcome"] == "completed"
