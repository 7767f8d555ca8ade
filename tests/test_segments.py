"""Segments on real PostgreSQL and Redis: YAML validation, SQL compilation, batch recompute with its
entered/exited diff, crash-safe re-runs, real-time trait segments and scenario conditions on membership."""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdp_hub.bus.base import Record
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage, segment_engine
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.schema.events import Event
from cdp_hub.segments import EventFact, Segment, SegmentEngine, compile_segment, load_segments, parse_segment
from cdp_hub.triggers.scenario import Scenario

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # noon in Moscow: outside every built-in quiet period


@pytest.fixture
async def hub(hub: Hub) -> AsyncIterator[Hub]:
    """The shared ``hub`` fixture, with a Redis prefix of this test's own: segment caches are keyed by segment
    id, and the deployment prefix would mix tests and sessions. The test's keys are removed afterwards."""
    hub.hotstate.prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield hub
    keys = [k async for k in hub.hotstate.redis.scan_iter(match=hub.hotstate.prefix + "*")]
    if keys:
        await hub.hotstate.redis.delete(*keys)


def seg(data: dict[str, Any]) -> Segment:
    return parse_segment(data, origin="test")


async def add_profile(hub: Hub, golden: dict[str, Any] | None = None, *, email: str | None = None) -> uuid.UUID:
    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid, golden or {})
    await hub.store.execute("INSERT INTO identities (kind, value, profile_id) VALUES ('email', $1, $2)",
                            email or f"{pid.hex[:12]}@example.ru", pid)
    return pid


async def add_event(hub: Hub, pid: uuid.UUID, event_type: str, at: datetime, **props: Any) -> None:
    event = parse_event({"type": event_type, "source": "shop", "source_record_id": uuid.uuid4().hex,
                         "occurred_at": at.isoformat(), "identities": [{"kind": "email", "value": "a@b.ru"}],
                         "properties": props, "profile_id": str(pid)})
    await hub.store.execute(
        """INSERT INTO events (event_id, occurred_at, profile_id, type, source, source_record_id, received_at, body)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb)""",
        event.event_id, event.occurred_at, pid, event.type, event.source, event.source_record_id,
        event.received_at, event.to_json().decode())


async def published(hub: Hub) -> list[Event]:
    assert isinstance(hub.bus, MemoryBus)
    return [Event.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.events)]


def changes(events: list[Event]) -> set[tuple[str, str, uuid.UUID | None]]:
    return {(e.type, e.properties["segment"], e.profile_id) for e in events if e.type.startswith("segment.")}


async def members(hub: Hub, segment_id: str) -> set[uuid.UUID]:
    rows = await hub.store.fetch("SELECT profile_id FROM segment_members WHERE segment_id = $1", segment_id)
    return {r["profile_id"] for r in rows}


async def cached(hub: Hub, engine: SegmentEngine, segment_id: str) -> set[uuid.UUID]:
    return {uuid.UUID(m.decode()) for m in await hub.hotstate.redis.smembers(engine.cache_key(segment_id))}


# -- definitions ---------------------------------------------------------------------------------------------


def test_builtin_segments_load() -> None:
    by_id = {s.id: s for s in load_segments()}
    assert {"vip", "lapsed_customers"} <= set(by_id)
    assert not by_id["vip"].trait_only and not by_id["lapsed_customers"].trait_only
    assert seg({"id": "moscow", "all": [{"trait": "city", "op": "eq", "value": "Москва"}]}).trait_only


def test_invalid_segments_name_the_file_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nall:\n  - {aggregate: sum, event: order.paid, within: 1y, op: gte, value: 1}\n",
                   encoding="utf-8")
    with pytest.raises(ConfigurationError) as exc:
        load_segments([bad], builtin=False)
    assert "bad.yaml" in str(exc.value) and "$.all[0].within" in str(exc.value)

    no_property = tmp_path / "sum.yaml"
    no_property.write_text("id: y\nall:\n  - {aggregate: sum, event: order.paid, op: gte, value: 1}\n",
                           encoding="utf-8")
    with pytest.raises(ConfigurationError, match="sum needs the property"):
        load_segments([no_property], builtin=False)
    with pytest.raises(ConfigurationError, match="exactly one of all, any, none"):
        seg({"id": "z", "all": [{"trait": "city", "op": "exists"}], "any": [{"trait": "city", "op": "exists"}]})


@pytest.mark.parametrize("trait", ["city'; DROP TABLE profiles; --", "a b", "golden->>x", "1city"])
def test_trait_names_must_be_identifiers(trait: str) -> None:
    with pytest.raises(ConfigurationError, match=r"\$\.all\[0\]"):
        seg({"id": "evil", "all": [{"trait": trait, "op": "exists"}]})


def test_values_and_names_are_bound_parameters_never_sql_text() -> None:
    hostile = "Москва'); DELETE FROM profiles; --"
    segment = seg({"id": "s", "any": [
        {"trait": "city", "op": "eq", "value": hostile},
        {"aggregate": "count", "event": "order.paid", "within": "30d", "op": "gte", "value": 2},
    ]})
    sql, params = compile_segment(segment, NOW).members_sql()
    assert hostile not in sql and "city" not in sql and "order.paid" not in sql
    assert hostile in params and ["city"] in params and "order.paid" in params
    assert not re.search(r"\bMERGE\b", sql, re.I)


# -- batch recompute -----------------------------------------------------------------------------------------


async def test_recompute_emits_entered_and_exited_and_updates_members_and_cache(hub: Hub) -> None:
    hub.clock = lambda: NOW
    engine = segment_engine(hub)
    big, small, old_big, nobody = [await add_profile(hub) for _ in range(4)]
    await add_event(hub, big, "order.paid", NOW - timedelta(days=10), order_id="1", total="30000.00")
    await add_event(hub, big, "order.paid", NOW - timedelta(days=200), order_id="2", total="25000.50")
    await add_event(hub, small, "order.paid", NOW - timedelta(days=5), order_id="3", total="1000")
    await add_event(hub, old_big, "order.paid", NOW - timedelta(days=400), order_id="4", total="90000")  # outside 365d
    await add_event(hub, old_big, "order.placed", NOW - timedelta(days=3), order_id="5", total="90000")  # other type

    first = await engine.recompute("vip")
    assert (first.entered, first.exited, first.members, first.resumed) == (1, 0, 1, False)
    assert await members(hub, "vip") == {big} == await cached(hub, engine, "vip")
    [entered] = [e for e in await published(hub) if e.type == "segment.entered"]
    assert entered.profile_id == big and entered.source == "cdp-hub.segments"
    assert entered.properties["segment"] == "vip" and entered.identities[0].kind == "email"
    assert entered.occurred_at == NOW

    # A month later the big spender's old order left the window; the small one spent a lot.
    later = NOW + timedelta(days=170)
    hub.clock = lambda: later
    await add_event(hub, small, "order.paid", later - timedelta(days=1), order_id="6", total="60000")
    second = await engine.recompute("vip")
    assert (second.entered, second.exited, second.members) == (1, 1, 1)
    assert await members(hub, "vip") == {small} == await cached(hub, engine, "vip")
    assert changes(await published(hub)) == {("segment.entered", "vip", big), ("segment.exited", "vip", big),
                                             ("segment.entered", "vip", small)}
    assert nobody not in await members(hub, "vip")


async def test_a_rerun_emits_nothing_and_a_crashed_run_resumes_with_the_same_event_ids(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.clock = lambda: NOW
    engine = segment_engine(hub)
    pids = [await add_profile(hub) for _ in range(3)]
    for i, pid in enumerate(pids):
        await add_event(hub, pid, "order.paid", NOW - timedelta(days=120 + i), order_id=str(i), total="10")

    # The process dies after the events are published, before the membership is committed.
    real_publish = hub.bus.publish_many

    async def publish_then_crash(messages: Any) -> None:
        await real_publish(messages)
        raise ConnectionError("killed")

    monkeypatch.setattr(hub.bus, "publish_many", publish_then_crash)
    with pytest.raises(ConnectionError):
        await engine.recompute("lapsed_customers")
    monkeypatch.setattr(hub.bus, "publish_many", real_publish)
    assert await members(hub, "lapsed_customers") == set()
    before = {e.event_id for e in await published(hub)}
    assert len(before) == 3

    resumed = await engine.recompute("lapsed_customers")
    assert resumed.resumed and (resumed.entered, resumed.members) == (3, 3)
    after = await published(hub)
    assert len(after) == 6 and {e.event_id for e in after} == before  # the same events again, none new

    again = await engine.recompute("lapsed_customers")
    assert (again.entered, again.exited, again.members, again.resumed) == (0, 0, 3, False)
    assert len(await published(hub)) == 6
    assert await hub.store.fetchval("SELECT count(*) FROM segment_runs WHERE status = 'done'") == 2


async def test_merged_profiles_leave_their_segments(hub: Hub) -> None:
    hub.clock = lambda: NOW
    engine = segment_engine(hub, [seg({"id": "moscow", "all": [{"trait": "city", "op": "eq", "value": "Москва"}]})])
    survivor, loser = await add_profile(hub, {"city": "Москва"}), await add_profile(hub, {"city": "Москва"})
    assert (await engine.recompute("moscow")).members == 2
    await hub.store.execute("UPDATE profiles SET merged_into = $1 WHERE profile_id = $2", survivor, loser)
    result = await engine.recompute("moscow")
    assert (result.exited, result.members) == (1, 1)
    assert await members(hub, "moscow") == {survivor}


# -- SQL and Python agree ------------------------------------------------------------------------------------

RULES: list[dict[str, Any]] = [
    {"trait": "city", "op": "eq", "value": "Москва"},
    {"trait": "city", "op": "ne", "value": "Москва"},
    {"trait": "city", "op": "in", "value": ["Казань", "Тверь"]},
    {"trait": "city", "op": "not_in", "value": ["Казань"]},
    {"trait": "city", "op": "contains", "value": "ква"},
    {"trait": "city", "op": "gt", "value": "М"},
    {"trait": "birth_date", "op": "lt", "value": "1990-01-01"},
    {"trait": "birth_date", "op": "exists"},
    {"trait": "loyalty_tier", "op": "not_exists"},
    {"trait": "consent.email", "op": "eq", "value": "opted_in"},
    {"trait": "points", "op": "gte", "value": 100},
    {"trait": "points", "op": "eq", "value": 5.5},
    {"trait": "vip", "op": "eq", "value": True},
    {"trait": "tags", "op": "contains", "value": "kids"},
    {"aggregate": "count", "event": "order.paid", "within": "30d", "op": "gte", "value": 2},
    {"aggregate": "count", "event": "order.paid", "op": "eq", "value": 0},
    {"aggregate": "count", "event": "order.paid", "within": "7d", "op": "lt", "value": 1},
    {"aggregate": "sum", "event": "order.paid", "property": "total", "within": "365d", "op": "gte", "value": 5000},
    {"aggregate": "sum", "event": "order.paid", "property": "total", "op": "gt", "value": 100.5},
    {"aggregate": "last", "event": "order.paid", "older_than": "90d"},
    {"aggregate": "last", "event": "order.paid", "within": "14d"},
    {"aggregate": "last", "event": "cart.updated", "within": "1d"},
]

GOLDENS: list[dict[str, Any]] = [
    {"city": "Москва", "birth_date": "1985-04-02", "consent": {"email": "opted_in"}, "points": "150",
     "tags": ["kids", "sport"]},
    {"city": "Казань", "birth_date": "1995-12-31", "loyalty_tier": "gold", "points": 99, "vip": True},
    {"city": "Тверь", "consent": {"email": "opted_out"}, "points": "5.50", "tags": "kids"},
    {"consent": "opted_in", "points": "много"},
    {},
]


async def test_sql_and_python_evaluation_agree_on_every_rule_and_window(hub: Hub) -> None:
    pids = [await add_profile(hub, g) for g in GOLDENS]
    history: dict[uuid.UUID, list[EventFact]] = {pid: [] for pid in pids}
    plan = [
        (0, "order.paid", 3, "3000.00"), (0, "order.paid", 20, "2500"), (0, "order.paid", 100, "abc"),
        (1, "order.paid", 200, "100.50"), (1, "order.paid", 400, "90000"), (1, "cart.updated", 0, "5"),
        (2, "order.paid", 10, "10"), (2, "order.paid", -5, "99999"),  # in the future: never counts
        (3, "cart.updated", 2, "1"),
    ]
    for i, (who, etype, days, total) in enumerate(plan):
        at = NOW - timedelta(days=days, hours=1)
        props = {"order_id": str(i), "total": total} if etype == "order.paid" else {"cart_id": str(i), "total": "1"}
        if total == "abc":
            props = {"order_id": str(i), "note": "no total"}
        await add_event(hub, pids[who], etype, at, **props)
        history[pids[who]].append(EventFact(etype, at, props))

    for n, rule in enumerate(RULES):
        segment = seg({"id": f"r{n}", "all": [rule]})
        sql, params = compile_segment(segment, NOW).members_sql()
        in_sql = {r["profile_id"] for r in await hub.store.fetch(sql, *params)}
        in_python = {pid for pid, golden in zip(pids, GOLDENS, strict=True)
                     if segment.evaluate(golden, history[pid], NOW)}
        assert in_sql == in_python, (rule, in_sql, in_python)

    expected = {  # spot checks that the shared semantics are the intended ones
        0: {pids[0]}, 2: {pids[1], pids[2]}, 4: {pids[0]}, 10: {pids[0]}, 11: {pids[2]}, 12: {pids[1]},
        13: {pids[0], pids[2]}, 14: {pids[0]}, 15: {pids[3], pids[4]}, 17: {pids[0]},
        19: {pids[1]}, 20: {pids[0], pids[2]}, 21: {pids[1]},
    }
    for n, want in expected.items():
        sql, params = compile_segment(seg({"id": f"r{n}", "all": [RULES[n]]}), NOW).members_sql()
        assert {r["profile_id"] for r in await hub.store.fetch(sql, *params)} == want, RULES[n]

    nested = seg({"id": "nested", "any": [
        {"all": [RULES[0], RULES[14]]},
        {"none": [{"trait": "city", "op": "exists"}, {"aggregate": "count", "event": "cart.updated",
                                                      "op": "gte", "value": 1}]},
    ]})
    sql, params = compile_segment(nested, NOW).members_sql()
    assert {r["profile_id"] for r in await hub.store.fetch(sql, *params)} == {pids[0], pids[4]}


# -- real time -----------------------------------------------------------------------------------------------

MOSCOW_SUBSCRIBERS = {"id": "moscow_subscribers", "all": [
    {"trait": "city", "op": "eq", "value": "Москва"},
    {"trait": "consent.email", "op": "eq", "value": "opted_in"},
]}


def _record(event_type: str, pid: uuid.UUID, at: datetime, rid: str, **props: Any) -> Record:
    event = parse_event({
        "type": event_type, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
        "identities": [{"kind": "email", "value": "anna@example.ru"}], "properties": props,
        "profile_id": str(pid)})
    return Record("cdp.profile-events", 0, 0, str(pid).encode(), event.to_json())


async def _durable(out: StageOutput) -> None:
    for callback in out.on_durable:
        await callback()


def _segment_events(out: StageOutput) -> list[Event]:
    return [Event.model_validate_json(m.value) for m in out.messages if m.topic.endswith("cdp.events")]


def _intents(out: StageOutput) -> list[MessageIntent]:
    return [MessageIntent.model_validate_json(m.value) for m in out.messages if m.topic.endswith("cdp.messages")]


async def test_trait_segments_are_checked_in_real_time_by_the_triggers_stage(hub: Hub) -> None:
    hub.clock = lambda: NOW
    engine = segment_engine(hub, [seg(MOSCOW_SUBSCRIBERS)])
    stage = build_stage(hub, "triggers", scenarios=[], segments=engine)
    anna = await add_profile(hub, {"city": "Москва", "consent": {"email": "opted_in"}})
    boris = await add_profile(hub, {"city": "Москва", "consent": {"email": "opted_out"}})
    batch = [_record("customer.updated", anna, NOW, "u1"), _record("customer.updated", boris, NOW, "u2")]

    out = await stage.handle(batch)
    [entered] = _segment_events(out)
    assert (entered.type, entered.profile_id, entered.properties["segment"]) == (
        "segment.entered", anna, "moscow_subscribers")
    assert await members(hub, "moscow_subscribers") == set()  # not before the event is durable
    replay = await stage.handle(batch)  # a crash before commit: the same decision, the same event id
    assert [e.event_id for e in _segment_events(replay)] == [entered.event_id]
    await _durable(out)
    assert await members(hub, "moscow_subscribers") == {anna} == await cached(hub, engine, "moscow_subscribers")
    assert await engine.is_member("moscow_subscribers", anna)
    assert _segment_events(await stage.handle(batch)) == []  # nothing changed since

    # The resolver updated Anna's golden record: she moved to Kazan.
    await hub.store.execute(
        "UPDATE profiles SET golden = $2, version = version + 1, updated_at = now() WHERE profile_id = $1",
        anna, {"city": "Казань", "consent": {"email": "opted_in"}})
    out = await stage.handle([_record("customer.updated", anna, NOW, "u3")])
    [exited] = _segment_events(out)
    assert (exited.type, exited.profile_id) == ("segment.exited", anna)
    await _durable(out)
    assert await members(hub, "moscow_subscribers") == set() == await cached(hub, engine, "moscow_subscribers")


async def test_batch_and_real_time_name_the_same_trait_change_with_the_same_event(hub: Hub) -> None:
    """A recompute racing the stream must not greet twice: both name the change by the record's version."""
    hub.clock = lambda: NOW
    engine = segment_engine(hub, [seg(MOSCOW_SUBSCRIBERS)])
    stage = build_stage(hub, "triggers", scenarios=[], segments=engine)
    anna = await add_profile(hub, {"city": "Москва", "consent": {"email": "opted_in"}})
    out = await stage.handle([_record("customer.updated", anna, NOW, "u1")])  # decided, not yet durable
    [realtime] = _segment_events(out)
    result = await engine.recompute("moscow_subscribers")  # a batch recompute in between
    [batch] = await published(hub)
    assert (batch.event_id, batch.occurred_at, batch.type) == (realtime.event_id, realtime.occurred_at,
                                                              "segment.entered")
    await _durable(out)
    assert result.members == 1 and await members(hub, "moscow_subscribers") == {anna}
    # A changed definition is a new decision: it gets a new event id.
    stricter = seg({**MOSCOW_SUBSCRIBERS, "all": [*MOSCOW_SUBSCRIBERS["all"], {"trait": "city", "op": "exists"}]})
    assert stricter.fingerprint != seg(MOSCOW_SUBSCRIBERS).fingerprint


async def test_scenarios_see_segment_membership(hub: Hub) -> None:
    hub.clock = lambda: NOW
    hub.settings.consent_policy = "opt_out"  # segment membership is under test here, not consent
    vip_offer = Scenario.model_validate({
        "id": "vip_offer", "trigger": {"event": "product.viewed"}, "channel": "email", "template": "t",
        "conditions": [{"field": "profile.segments", "op": "contains", "value": "vip"}]})
    engine = segment_engine(hub)
    stage = build_stage(hub, "triggers", scenarios=[vip_offer], segments=engine)
    rich, poor = await add_profile(hub), await add_profile(hub)
    await add_event(hub, rich, "order.paid", NOW - timedelta(days=3), order_id="r", total="75000")
    await engine.recompute("vip")
    out = await stage.handle([_record("product.viewed", rich, NOW, "v1", sku="a"),
                              _record("product.viewed", poor, NOW, "v2", sku="a")])
    assert [(i.scenario, i.profile_id) for i in _intents(out)] == [("vip_offer", str(rich))]


async def test_win_back_starts_when_a_customer_enters_lapsed_customers(hub: Hub) -> None:
    hub.clock = lambda: NOW
    hub.settings.consent_policy = "opt_out"  # segment membership is under test here, not consent
    stage = build_stage(hub, "triggers")
    pid = await add_profile(hub)
    lapsed = _record("segment.entered", pid, NOW, "s1", segment="lapsed_customers")
    vip = _record("segment.entered", pid, NOW, "s2", segment="vip")
    out = await stage.handle([lapsed, vip])
    [intent] = _intents(out)
    assert (intent.scenario, intent.template, intent.channel, intent.fallbacks) == (
        "win_back", "win_back", "email", ["sms"])


async def test_lapsed_customers_recompute_drives_the_win_back_scenario(hub: Hub) -> None:
    """From the warehouse to a message intent: recompute ─▶ segment.entered ─▶ triggers ─▶ win_back."""
    hub.clock = lambda: NOW
    hub.settings.consent_policy = "opt_out"  # segment membership is under test here, not consent
    engine = segment_engine(hub)
    stage = build_stage(hub, "triggers", segments=engine)
    gone, active = await add_profile(hub), await add_profile(hub)
    await add_event(hub, gone, "order.paid", NOW - timedelta(days=95), order_id="g", total="500")
    await add_event(hub, active, "order.paid", NOW - timedelta(days=95), order_id="a1", total="500")
    await add_event(hub, active, "order.paid", NOW - timedelta(days=2), order_id="a2", total="500")
    await engine.recompute("lapsed_customers")
    records = [Record("cdp.profile-events", 0, i, None, e.to_json())
               for i, e in enumerate(await published(hub))]
    out = await stage.handle(records)
    assert [(i.scenario, i.profile_id) for i in _intents(out)] == [("win_back", str(gone))]


# -- docs and command line -----------------------------------------------------------------------------------


def test_every_yaml_example_in_the_docs_is_valid() -> None:
    from cdp_hub.triggers.scenario import parse_scenario

    text = (Path(__file__).parent.parent / "docs" / "segments.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    checked = 0
    for block in blocks:
        lines = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
        if all(ln.startswith("{") for ln in lines):  # single rules, one per line
            for ln in lines:
                seg({"id": "doc", "all": [yaml.safe_load(ln)]})
                checked += 1
            continue
        data = yaml.safe_load(block)
        if "trigger" in data:
            parse_scenario(data, origin="docs/segments.md")
        else:
            parse_segment(data, origin="docs/segments.md")
        checked += 1
    assert checked >= 12


async def test_command_line(hub: Hub, capsys: pytest.CaptureFixture[str]) -> None:
    from cdp_hub.cli import parse
    # The commands build their own Hub; its Redis keys would carry no per-test prefix, so they get an
    # in-process Redis (the cache on real Redis is covered above). PostgreSQL is the test's own database.
    settings = hub.settings.model_copy(update={"redis_url": "fakeredis://"})

    async def run(*argv: str) -> int:
        call = parse(argv)
        assert not isinstance(call, int)
        result = call.handler(call.args, settings)
        return int(await result if inspect.isawaitable(result) else result)

    pid = await add_profile(hub)
    await add_event(hub, pid, "order.paid", datetime.now(UTC) - timedelta(days=120), order_id="x", total="10")
    assert await run("segments", "list") == 0
    assert "lapsed_customers" in capsys.readouterr().out
    with pytest.raises(ConfigurationError, match="--allow-memory-bus"):
        await run("segments", "recompute", "lapsed_customers")
    assert await run("segments", "recompute", "lapsed_customers", "--allow-memory-bus") == 0
    assert "lapsed_customers         +1 -0 = 1 members" in capsys.readouterr().out
    assert await run("segments", "members", "lapsed_customers") == 0
    assert capsys.readouterr().out.split() == [str(pid)]
    with pytest.raises(ConfigurationError, match="no segment 'nope'"):
        await run("segments", "recompute", "nope", "--allow-memory-bus")
    assert await run("segments", "sql", "vip") == 0
    assert "agg_1" in capsys.readouterr().out
    assert await run("triggers", "run-daily") == 0
    assert "0 birthdays" in capsys.readouterr().out
    assert await run("triggers", "run-daily", "--if-due") == 0
    assert "not due" in capsys.readouterr().out
