"""What the resolver passes on to ``cdp.profile-events`` (``profile_events_omit``), and that leaving the contact
policy's own decisions out changes no decision: the resolver and the triggers stage driven by hand, the
triggers' output fed back to the resolver as the bus would, once with the default setting and once with
``profile_events_omit = []`` (every event passed on, as before the setting existed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.schema import MessageIntent
from cdp_hub.triggers.checks import Installed, check_scenario_files
from cdp_hub.triggers.scenario import Scenario, parse_scenario

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # noon in Moscow: no quiet hours in the way

SCENARIOS = [
    # profile.created: a welcome, once per profile
    {"id": "hello", "trigger": {"event": "profile.created"}, "channel": "email", "template": "welcome",
     "category": "transactional"},
    # a trait change: each customer.updated that moves the customer to Kazan, whatever came before in the batch
    {"id": "moved_to_kazan", "trigger": {"event": "customer.updated"}, "channel": "email", "template": "welcome",
     "category": "transactional", "conditions": [{"field": "event.traits.city", "op": "eq", "value": "Kazan"}]},
    # every update, marketing, one a day: the first goes, the rest of the batch is capped
    {"id": "any_update", "trigger": {"event": "customer.updated"}, "channel": "email", "template": "welcome",
     "frequency_cap": {"max": 1, "per": "1d"}},
]


def _event(etype: str, at: int, rid: str, *, traits: dict[str, Any] | None = None,
           properties: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": etype, "source": "crm", "source_record_id": rid,
            "occurred_at": (T0 + timedelta(minutes=at)).isoformat(),
            "identities": [{"kind": "email", "value": "anna@example.ru"}],
            "traits": traits or {}, "properties": properties or {}}


class Loop:
    """resolver ─▶ triggers ─▶ (decisions on cdp.events) ─▶ resolver ─▶ triggers, by hand."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.resolver = build_stage(hub, "resolver")
        self.triggers = build_stage(hub, "triggers", scenarios=[parse_scenario(s, origin="test") for s in SCENARIOS])
        self.offset = 0
        self.rounds: list[list[dict[str, Any]]] = []
        """What the triggers stage read, round by round (the resolver's profile-events records)."""
        self.decisions: list[dict[str, Any]] = []
        self.intents: list[MessageIntent] = []

    def _records(self, topic: str, values: list[bytes]) -> list[Record]:
        records = []
        for value in values:
            self.offset += 1
            records.append(Record(topic, 0, self.offset, None, value))
        return records

    async def _durable(self, out: StageOutput) -> None:
        for callback in out.on_durable:
            await callback()

    async def run(self, events: list[dict[str, Any]]) -> None:
        """The batch through the resolver and the triggers, then what the triggers published back, until
        nothing comes back."""
        pending = [orjson.dumps(e) for e in events]
        while pending:
            out = await self.resolver.handle(self._records(self.hub.topics.events, pending))
            assert not out.dead
            await self._durable(out)
            passed = [m.value for m in out.messages if m.topic == self.hub.topics.profile_events]
            self.rounds.append([orjson.loads(v) for v in passed])
            decided = await self.triggers.handle(self._records(self.hub.topics.profile_events, passed))
            assert not decided.dead
            await self._durable(decided)
            pending = []
            for m in decided.messages:
                if m.topic == self.hub.topics.messages:
                    self.intents.append(MessageIntent.model_validate_json(m.value))
                elif m.topic == self.hub.topics.events:
                    pending.append(m.value)
                    body = orjson.loads(m.value)
                    if body["type"] == "message.decided":
                        self.decisions.append(body)


@pytest.mark.parametrize("omit", [None, []], ids=["default", "pass-all"])
async def test_decisions_are_stored_not_passed_on_and_every_scenario_fires_as_before(
        hub: Hub, omit: list[str] | None) -> None:
    if omit is not None:
        hub.settings = hub.settings.model_copy(update={"profile_events_omit": omit})
    hub.clock = lambda: T0 + timedelta(minutes=10)
    loop = Loop(hub)
    # One resolver batch: a new customer, her marketing consent, and four trait changes of the one profile.
    await loop.run([
        _event("customer.updated", 0, "u0", traits={"city": "Moscow"}),
        _event("consent.changed", 1, "c1", properties={"channel": "email", "status": "opted_in"}),
        _event("customer.updated", 2, "u1", traits={"city": "Kazan"}),
        _event("customer.updated", 3, "u2", traits={"city": "Sochi"}),
        _event("customer.updated", 4, "u3", traits={"city": "Kazan"}),
    ])

    # What the triggers stage decided is the same both ways (the triggers' own decisions are read by nothing).
    decided = [(d["properties"]["scenario"], d["properties"]["decision"], d["properties"]["trigger_type"])
               for d in loop.decisions]
    assert sorted(decided) == sorted([
        ("hello", "sent", "profile.created"),
        ("moved_to_kazan", "sent", "customer.updated"),
        ("moved_to_kazan", "sent", "customer.updated"),
        ("any_update", "sent", "customer.updated"),
        ("any_update", "capped", "customer.updated"),
        ("any_update", "capped", "customer.updated"),
        ("any_update", "capped", "customer.updated"),
    ])
    by_id = {d["event_id"]: d for d in loop.rounds[0]}
    kazan = sorted(by_id[i.trigger_event_id].get("source_record_id") for i in loop.intents if i.scenario == "moved_to_kazan")
    assert kazan == ["u1", "u3"]
    assert len(loop.intents) == 4 and len({i.message_id for i in loop.intents}) == 4

    # The first round: every event of the batch, each trait change on its own (each carries its own traits,
    # which the conditions read), after the profile.created of the new customer.
    [first, second, *rest] = loop.rounds
    assert [(e["type"], e.get("source_record_id")) for e in first] == [
        ("profile.created", None), ("customer.updated", "u0"), ("consent.changed", "c1"),
        ("customer.updated", "u1"), ("customer.updated", "u2"), ("customer.updated", "u3")]
    assert [e["traits"].get("city") for e in first[3:]] == ["Kazan", "Sochi", "Kazan"]
    # The second round: the decisions came back to the resolver, which stored them either way ...
    assert not rest
    stored = await hub.store.fetchval("SELECT count(*) FROM events WHERE type = 'message.decided'")
    assert stored == len(loop.decisions) == 7
    # ... and passed them on only when told to pass everything on.
    assert [e["type"] for e in second] == ([] if omit is None else ["message.decided"] * 7)
    omitted = hub.metrics.registry.get_sample_value("cdp_profile_events_omitted_total", {"type": "message.decided"})
    assert omitted == (7 if omit is None else None)


def test_merges_cannot_be_omitted() -> None:
    assert Settings().profile_events_omit == ["message.decided"]
    with pytest.raises(ValueError, match=r"profile\.merged cannot be omitted"):
        Settings(profile_events_omit=["message.decided", "profile.merged"])


@pytest.mark.parametrize("scenario", [
    {"id": "echo", "trigger": {"event": "message.decided"}, "channel": "email", "template": "welcome"},
    {"id": "echo", "trigger": {"event": "cart.updated"}, "delay": "1h", "cancel_on": ["message.decided"],
     "channel": "email", "template": "welcome"},
    {"id": "echo", "trigger": {"event": "profile.created"}, "steps": [
        {"id": "wait", "wait_for": {"event": "message.decided", "within": "1d"}},
        {"id": "hello", "send": {"channel": "email", "template": "welcome"}}]},
], ids=["trigger", "cancel_on", "journey wait_for"])
async def test_the_triggers_stage_refuses_scenarios_that_read_an_omitted_type(
        hub: Hub, scenario: dict[str, Any], tmp_path: Path) -> None:
    parsed: Scenario = parse_scenario(scenario, origin="test")
    assert "message.decided" in parsed.stream_types
    with pytest.raises(ConfigurationError, match=r"echo \(message.decided\).*profile_events_omit"):
        build_stage(hub, "triggers", scenarios=[parsed])
    # scenarios validate says so at the line of the file
    path = tmp_path / "echo.yaml"
    path.write_text(orjson.dumps(scenario).decode(), encoding="utf-8")
    installed = Installed(channel_kind=lambda name: name, template_exists=lambda *_: True, segments=frozenset(),
                          omitted=frozenset({"message.decided"}))
    _, problems = check_scenario_files([path], installed, builtin=False)
    assert [p.message for p in problems if "profile_events_omit" in p.message]
    # passing every event on, the same scenario runs
    hub.settings = hub.settings.model_copy(update={"profile_events_omit": []})
    build_stage(hub, "triggers", scenarios=[parsed])
    _, problems = check_scenario_files([path], installed.__class__(
        channel_kind=lambda name: name, template_exists=lambda *_: True, segments=frozenset()), builtin=False)
    assert not [p for p in problems if "profile_events_omit" in p.message]


def test_the_built_in_scenarios_read_no_omitted_type() -> None:
    from cdp_hub.triggers.scenario import load_scenarios

    omitted = frozenset(Settings().profile_events_omit)
    assert not [s.id for s in load_scenarios() if s.stream_types & omitted]
