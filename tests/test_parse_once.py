"""Parse once: what the hub wrote is decoded without validating it again, and gives what validating gives.

The trusted fast path (cdp_hub/schema/trusted.py) must build, from the JSON the hub writes, a model equal to
the one full validation builds: checked here on a generated set of events of every registered type (unicode,
nested and extra properties, every identity kind, traits and context with extras, with and without a profile),
on the HTTP edge's events and on intents in both of their producers' forms. The trust rule
(cdp_hub/bus/provenance.py) must send every record the hub cannot vouch for through full validation, with the
same dead letters as before.
"""

from __future__ import annotations

import copy
import random
import sys
import types
import typing
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, SecretStr

import cdp_hub
from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.bus.events import event_dict_message, event_message
from cdp_hub.bus.provenance import EVENT_SCHEMA, PRODUCER, RecordSeal, RecordTrust, hub_headers
from cdp_hub.config import Settings
from cdp_hub.connector.tracking import TrackingConnector
from cdp_hub.errors import RecordError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage
from cdp_hub.resolver.graph import event_json_with_profile
from cdp_hub.schema.events import DEFAULT_OPTIONS, Context, Event, Traits, parse_event
from cdp_hub.schema.fastpath import event_dict
from cdp_hub.schema.identities import CORE_IDENTITY_KINDS
from cdp_hub.schema.messages import MessageIntent
from cdp_hub.schema.payloads import CATALOGUE_EVENT_TYPES, EVENT_TYPES
from cdp_hub.schema.trusted import TrustedDecodeError, trusted_event
from cdp_hub.triggers.stage import PassingEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ingest_http import bodies  # bench/ is not a package

INTENT_SCHEMA = b"cdp.message/1"  # what an intent would claim: the stages never trust one (delivery validates)

WORDS = ["Анна", "Ёжик", "straße", "東京", "🛒 корзина", "O'Brien \"quoted\"", "tab\tand\nnewline", "x" * 40, "",
         "\\back\\slash", "null", "<b>html</b>"]


def _text(rng: random.Random) -> str:
    return rng.choice(WORDS) + str(rng.randrange(1000))


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, nested a few levels: what an extra property or trait may hold."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randrange(-10**12, 10**12)
    if kind == 3:
        return rng.choice([0.5, -1.25, 1e-7, 3.0, 123456.789])
    if kind in (4, 5):
        return _text(rng)
    if kind in (6, 7):
        return {_text(rng): _json_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _value_for(annotation: Any, rng: random.Random, name: str) -> Any:
    """A valid input value for a payload field of type ``annotation`` (as a source would send it)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return None if rng.random() < 0.25 else _value_for(rng.choice(options), rng, name)
    if origin is typing.Literal:
        return rng.choice(args)
    if origin is list:
        return [_value_for(args[0], rng, name) for _ in range(rng.randrange(3))]
    if origin is dict:
        return {_text(rng): _value_for(args[1], rng, name) for _ in range(rng.randrange(3))}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _payload(annotation, rng)
    if annotation is str:
        if name == "currency":
            return rng.choice(["RUB", "USD", "EUR"])
        return _text(rng) or "v"
    if annotation is Decimal:
        return rng.choice(["12.50", "0", "1e3", 7, 3.25, "19999.99"])
    if annotation is int:
        return rng.randrange(0, 10**6)
    if annotation is bool:
        return rng.choice([True, False])
    if annotation is datetime:
        return rng.choice(["2026-11-30T12:00:00Z", "2026-11-30T15:00:00.123456+03:00", "2026-01-01T00:00:00"])
    if annotation is date:
        return "1990-05-17"
    raise AssertionError(f"no generator for {annotation!r} ({name})")


def _payload(model: type[BaseModel], rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required() or rng.random() < 0.6:
            out[name] = _value_for(info.annotation, rng, name)
    for _ in range(rng.randrange(3)):  # a source's own fields are kept: any JSON, nested
        out[f"x_{_text(rng)}"] = _json_value(rng)
    return out


RAW_IDENTITIES = {
    "email": [" Anna.Petrova@Example.RU ", "user+tag@gmail.com", "пётр@почта.рф"],
    "phone": ["8 (916) 123-45-67", "+7 916 000 11 22", "+44 20 7946 0958", "+79161234567"],
    "loyalty_card": ["1234 5678-9012", "ab-12 cd"],
}


def _identities(rng: random.Random) -> list[dict[str, str]]:
    kinds = rng.sample(list(CORE_IDENTITY_KINDS), rng.randrange(1, 5))
    out = [{"kind": k, "value": rng.choice(RAW_IDENTITIES.get(k, [f" {k}-{_text(rng)} "]))} for k in kinds]
    if rng.random() < 0.2:
        out.append(dict(out[0]))  # a repeat: validation keeps the first
    return out


def generated_events(count: int, seed: int) -> list[Event]:
    """Events as they enter the hub (validated by parse_event): every type, random everything else."""
    rng = random.Random(seed)
    types_ = sorted(EVENT_TYPES)
    events: list[Event] = []
    attempts = 0
    while len(events) < count:
        attempts += 1
        assert attempts < count * 5, "the generator makes mostly invalid events"
        typ = types_[len(events) % len(types_)]
        draft: dict[str, Any] = {
            "type": typ, "source": rng.choice(["shop", "crm-1", "web.site", "cdp-hub.delivery"]),
            "occurred_at": (datetime(2026, 11, 30, 12, tzinfo=UTC) + timedelta(seconds=rng.randrange(-10**6, 10**6),
                                                                            microseconds=rng.randrange(2) * 1234))
            .astimezone(timezone(timedelta(hours=rng.choice([0, 3, -5])))).isoformat(),
            "identities": [] if typ in CATALOGUE_EVENT_TYPES else _identities(rng),
            "properties": _payload(EVENT_TYPES[typ], rng),
        }
        if rng.random() < 0.7:
            draft["source_record_id"] = _text(rng) or "r"
        if rng.random() < 0.6:
            draft["traits"] = {"first_name": _text(rng), "birth_date": "1985-02-28", "gender": "female",
                               "country": "RU", "city": rng.choice(WORDS), f"x_{_text(rng)}": _json_value(rng)}
        if rng.random() < 0.5:
            draft["context"] = {"ip": "203.0.113.7", "user_agent": rng.choice(WORDS), "store_id": None,
                                "utm": {"source": _text(rng), "n": [1, {"deep": _json_value(rng)}]}}
        if rng.random() < 0.3:
            draft["profile_id"] = str(uuid.uuid4())
        try:
            events.append(parse_event(draft))
        except RecordError:
            continue
    return events


EVENTS = generated_events(600, seed=13)


def _same(fast: BaseModel, full: BaseModel) -> None:
    assert fast == full
    assert fast.model_dump() == full.model_dump()
    assert fast.model_dump_json() == full.model_dump_json()
    assert fast.model_fields_set == full.model_fields_set


def test_the_generated_set_is_broad() -> None:
    assert {e.type for e in EVENTS} == set(EVENT_TYPES)
    kinds = {i.kind for e in EVENTS for i in e.identities}
    assert kinds == set(CORE_IDENTITY_KINDS)
    assert any(e.profile_id for e in EVENTS) and any(e.profile_id is None for e in EVENTS)
    assert any(e.traits.model_extra for e in EVENTS) and any(e.context.model_extra for e in EVENTS)
    assert any(any(not k.isascii() for k in e.properties) for e in EVENTS)


@pytest.mark.parametrize("start", range(0, len(EVENTS), 50))
def test_trusted_decoding_equals_full_validation(start: int) -> None:
    for index, event in enumerate(EVENTS[start:start + 50], start):
        raw = event_message("cdp.events", event).value
        fast = trusted_event(raw)
        _same(fast, Event.model_validate_json(raw))  # the triggers' full path
        _same(fast, parse_event(raw))  # the resolver's full path
        assert fast.to_json() == raw
        # The resolver's splice gives the JSON the model gives with the profile set.
        pid = uuid.UUID(int=index + 1)
        spliced = event_json_with_profile(fast, pid, raw if fast.profile_id is None else None)
        assert orjson.loads(spliced) == orjson.loads(event.model_copy(update={"profile_id": pid}).to_json())
        _same(trusted_event(spliced), Event.model_validate_json(spliced))


def test_the_edges_events_decode_the_same_both_ways() -> None:
    """The edge writes its fast path's dicts (orjson), not the model's JSON: the same values, the same times."""
    connector = TrackingConnector({}, instance="web")
    received = datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)
    checked = 0
    for message in [m for batch in bodies(3, 100, seed=11) for m in batch]:
        for draft in connector.drafts(copy.deepcopy(message)):
            fast_dict = event_dict(copy.deepcopy(draft), DEFAULT_OPTIONS, received)
            if fast_dict is None:
                continue
            raw = event_dict_message("cdp.events", fast_dict).value
            full = parse_event(raw)
            _same(trusted_event(raw), full)
            assert orjson.loads(raw) == orjson.loads(full.to_json())  # what the resolver stores, spliced
            checked += 1
    assert checked >= 300


def _intents(count: int, seed: int) -> list[MessageIntent]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        trigger = EVENTS[i % len(EVENTS)]
        out.append(MessageIntent(
            message_id=str(uuid.UUID(int=i)), profile_id=str(uuid.UUID(int=10**6 + i)), scenario=_text(rng) or "s",
            channel=rng.choice(["email", "sms", "outbox"]), fallbacks=rng.sample(["sms", "push", "tg"], rng.randrange(3)),
            template=_text(rng) or "t", locale=rng.choice([None, "ru", "en-GB"]),
            trigger_event_id=str(trigger.event_id) if rng.random() < 0.8 else None,
            trigger_event=orjson.loads(trigger.to_json()) if rng.random() < 0.8 else None,
            vars={_text(rng): _json_value(rng) for _ in range(rng.randrange(3))},
            category=rng.choice(["marketing", "transactional", "service"]),
            expires_at=datetime(2026, 12, 1, tzinfo=UTC) + timedelta(hours=i) if rng.random() < 0.3 else None))
    return out


def test_the_hubs_decisions_decode_the_same_both_ways() -> None:
    """The triggers stage and the campaign sender build message.decided events without validation (a reason
    cut, ``until`` as isoformat(), a channel that may be None): decoded, they are what validation makes of them."""
    until = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    for index, channel in enumerate(["email", None]):
        properties: dict[str, Any] = {"scenario": "welcome", "decision": "deferred", "reason": "quiet hours",
                                      "channel": channel, "category": "marketing", "trigger_event_id": "t",
                                      "trigger_type": "customer.updated", "until": until.isoformat(),
                                      "campaign": "c1"}
        event = Event.model_construct(
            event_id=uuid.UUID(int=index), type="message.decided", source="cdp-hub.triggers",
            source_record_id=f"r{index}", occurred_at=until, received_at=until,
            identities=list(EVENTS[0].identities), traits=Traits(), properties=properties, context=Context(),
            profile_id=uuid.UUID(int=7))
        raw = event_message("cdp.events", event).value
        _same(trusted_event(raw), Event.model_validate_json(raw))


def _intents(count: int, seed: int) -> list[MessageIntent]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        trigger = EVENTS[i % len(EVENTS)]
        out.append(MessageIntent(
            message_id=str(uuid.UUID(int=i)), profile_id=str(uuid.UUID(int=10**6 + i)), scenario=_text(rng) or "s",
            channel=rng.choice(["email", "sms"]), fallbacks=rng.sample(["sms", "push"], rng.randrange(2)),
            template=_text(rng) or "t", trigger_event_id=str(trigger.event_id),
            trigger_event=orjson.loads(trigger.to_json()), vars={_text(rng): _json_value(rng)}))
    return out


def test_the_trusted_validator_does_not_normalize() -> None:
    """Proof that the steps are skipped (pydantic-core could reuse Event's own validator): a value that is not
    normalized stays as it is, and Event itself still normalizes."""
    raw = event_message("cdp.events", EVENTS[0]).value
    data = orjson.loads(raw)
    data["identities"] = [{"kind": "email", "value": "Not.Normal@EXAMPLE.ru"}]
    bent = orjson.dumps(data)
    assert trusted_event(bent).identities[0].value == "Not.Normal@EXAMPLE.ru"
    assert Event.model_validate_json(bent).identities[0].value == "not.normal@example.ru"


@pytest.mark.parametrize("change", [
    {"extra": 1}, {"schema_version": "cdp.event/2"}, {"type": "no.such.type"}, {"event_id": "nope"},
    {"occurred_at": "yesterday"}, {"identities": [{"kind": "email"}]}, {"identities": "a@b.ru"},
    {"traits": {"first_name": 5}}, {"traits": {"gender": "robot"}}, {"traits": {"birth_date": "yesterday"}},
    {"context": {"ip": ["x"]}}, {"properties": []}, {"profile_id": "not-a-uuid"}, {"received_at": None},
    {"type": "message.decided", "properties": {"decision": "maybe"}},
])
def test_the_fast_path_steps_aside_for_anything_else(change: dict[str, Any]) -> None:
    data = {**orjson.loads(EVENTS[0].to_json()), **change}
    with pytest.raises(TrustedDecodeError):
        trusted_event(orjson.dumps(data))


def test_the_producer_version_is_the_packages() -> None:
    major, minor = cdp_hub.__version__.split(".")[:2]
    assert f"cdp-hub/{major}.{minor}".encode() == PRODUCER


# -- the trust rule --------------------------------------------------------------------------------------------

def _record(topic: str, message: OutgoingMessage) -> Record:
    return Record(topic, 0, 0, message.key, message.value, message.headers)


def test_who_is_trusted() -> None:
    seal = RecordSeal(b"k" * 32)
    trust = RecordTrust(frozenset({"cdp.profile-events", "cdp.messages"}), seal)
    message = event_message("cdp.events", EVENTS[1])
    [sealed] = seal.seal([message])
    assert trust.trusts(_record("cdp.events", sealed), EVENT_SCHEMA)
    # On the raw events topic the headers alone prove nothing: anyone who may write there can set them.
    assert not trust.trusts(_record("cdp.events", message), EVENT_SCHEMA)
    [other_key] = RecordSeal(b"o" * 32).seal([message])
    assert not trust.trusts(_record("cdp.events", other_key), EVENT_SCHEMA)
    tampered = Record("cdp.events", 0, 0, None, sealed.value.replace(b"cdp.event/1", b"cdp.event/1 "), sealed.headers)
    assert not trust.trusts(tampered, EVENT_SCHEMA)
    # Internal topics: only the hub writes them (Kafka ACLs); the headers are enough.
    assert trust.trusts(_record("cdp.profile-events", message), EVENT_SCHEMA)
    assert not trust.trusts(_record("cdp.profile-events", message), INTENT_SCHEMA)
    headless = OutgoingMessage("cdp.profile-events", message.value, message.key, (("cdp.type", b"x"),))
    assert not trust.trusts(_record("cdp.profile-events", headless), EVENT_SCHEMA)
    other_version = tuple((k, b"cdp-hub/9.9" if k == "cdp-producer" else v) for k, v in message.headers)
    assert not trust.trusts(Record("cdp.profile-events", 0, 0, None, message.value, other_version), EVENT_SCHEMA)
    # Records without the hub's headers are never sealed (a DLQ replay, a foreign producer through the hub's bus).
    plain = OutgoingMessage("cdp.events", b"{}", None, (("source", b"x"),))
    assert seal.seal([plain]) == [plain]


def _decoded(hub: Hub, stage: str, path: str) -> float:
    value = hub.metrics.registry.get_sample_value("cdp_stage_decoded_total", {"stage": stage, "path": path})
    return value or 0.0


async def test_stages_take_the_fast_path_for_the_hubs_records_only(hub: Hub) -> None:
    triggers = build_stage(hub, "triggers")
    event = EVENTS[2].model_copy(update={"profile_id": uuid.uuid4()})
    message = event_message(hub.topics.profile_events, event)
    before = _decoded(hub, "triggers", "trusted"), _decoded(hub, "triggers", "validated")
    out = await triggers.handle([_record(hub.topics.profile_events, message)])
    assert out.dead == []
    assert _decoded(hub, "triggers", "trusted") == before[0] + 1
    headless = OutgoingMessage(message.topic, message.value, message.key, ())
    await triggers.handle([_record(hub.topics.profile_events, headless)])
    assert _decoded(hub, "triggers", "validated") == before[1] + 1


async def test_the_triggers_stage_decodes_of_events_it_does_not_act_on_only_what_it_needs(hub: Hub) -> None:
    """A type no scenario, cancel rule or journey reads (and not a merge) needs only its profile and time;
    anything else, or a record not trusted or not in the hub's form, goes through the full decode as before."""
    triggers = build_stage(hub, "triggers")
    topic = hub.topics.profile_events
    ignored = next(e for e in EVENTS if not triggers.reads(e.type)).model_copy(update={"profile_id": uuid.uuid4()})
    acted = next(e for e in EVENTS if triggers.reads(e.type)).model_copy(update={"profile_id": uuid.uuid4()})
    passing = triggers.decode(_record(topic, event_message(topic, ignored)))
    assert passing == PassingEvent(ignored.type, ignored.profile_id, ignored.occurred_at)
    assert triggers.decode(_record(topic, event_message(topic, acted))) == acted
    untrusted = OutgoingMessage(topic, ignored.to_json(), None, (("cdp.type", ignored.type.encode()),))
    assert triggers.decode(_record(topic, untrusted)) == ignored
    # The time in another zone is the same instant, in UTC, as the model makes it.
    raw = orjson.loads(ignored.to_json())
    raw["occurred_at"] = ignored.occurred_at.astimezone(timezone(timedelta(hours=3))).isoformat()
    zoned = triggers.decode(Record(topic, 0, 0, None, orjson.dumps(raw), event_message(topic, ignored).headers))
    assert isinstance(zoned, PassingEvent) and zoned.occurred_at == ignored.occurred_at
    assert zoned.occurred_at.utcoffset() == timedelta(0)
    # Without a profile: the full decode's error, as before.
    del raw["profile_id"]
    with pytest.raises(RecordError):
        triggers.decode(Record(topic, 0, 0, None, orjson.dumps(raw), event_message(topic, ignored).headers))
    # The type header must be the record's type.
    lying = Record(topic, 0, 0, None, ignored.to_json(), hub_headers(EVENT_SCHEMA, ("cdp.type", b"page.viewed!")))
    assert triggers.decode(lying) == ignored
    # A batch of them moves the partition's watermark and dead-letters nothing.
    out = await triggers.handle([Record(topic, 3, 0, None, ignored.to_json(), event_message(topic, ignored).headers)])
    assert out.dead == [] and triggers.watermarks._seen[3][0] == ignored.occurred_at


async def test_a_forged_record_on_the_events_topic_is_validated_and_dead_lettered_as_before(hub: Hub) -> None:
    """An outside producer copies the hub's headers onto an event the model refuses: full validation, the
    dead letter the record always got."""
    resolver = build_stage(hub, "resolver")
    bad = orjson.loads(EVENTS[3].to_json())
    bad["identities"] = [{"kind": "email", "value": "NOT AN E-MAIL"}]
    value = orjson.dumps(bad)
    forged = Record(hub.topics.events, 0, 0, None, value, hub_headers(EVENT_SCHEMA, ("cdp.type", b"x")))
    unmarked = Record(hub.topics.events, 0, 1, None, value)
    out = await resolver.handle([forged, unmarked])
    assert [d.failure_type for d in out.dead] == ["normalization_error", "normalization_error"]
    assert out.dead[0].error == out.dead[1].error and out.dead[0].field == out.dead[1].field


async def test_a_hostile_record_on_an_internal_topic_gets_the_full_validations_dead_letter(hub: Hub) -> None:
    """Intents are validated fully whatever their headers say."""
    delivery = build_stage(hub, "delivery")
    intent = _intents(1, seed=1)[0]
    bad = orjson.loads(intent.model_dump_json())
    bad["category"] = "spam"
    headers = hub_headers(INTENT_SCHEMA)
    out = await delivery.handle([Record(hub.topics.messages, 0, 0, None, orjson.dumps(bad), headers)])
    [dead] = out.dead
    assert dead.failure_type == "schema_violation" and dead.field == "category"


async def test_the_resolver_stores_the_bytes_it_was_given_with_the_profile(hub: Hub) -> None:
    resolver = build_stage(hub, "resolver")
    event = next(e for e in EVENTS if e.type == "customer.updated" and e.profile_id is None)
    [sealed] = hub.bus.sealed([event_message(hub.topics.events, event)])
    out = await resolver.handle([_record(hub.topics.events, sealed)])
    [published] = [m for m in out.messages if dict(m.headers)["cdp.type"] == b"customer.updated"]
    assert published.value.startswith(sealed.value[:-1])  # spliced, not serialized again
    stored = await hub.store.fetchval("SELECT body::text FROM events WHERE event_id = $1", event.event_id)
    assert orjson.loads(stored) == orjson.loads(published.value)
    assert Event.model_validate_json(published.value).profile_id is not None


def test_parse_once_can_be_switched_off(tmp_path: Path) -> None:
    hub = Hub(Settings(data_dir=tmp_path, parse_once=False))
    assert build_stage(hub, "triggers").ctx.trust is None


def test_a_configured_seal_key_is_the_buss() -> None:
    first = Hub(Settings(record_seal_key=SecretStr("s" * 32)))
    second = Hub(Settings(record_seal_key=SecretStr("s" * 32)))
    [sealed] = first.bus.sealed([event_message("cdp.events", EVENTS[0])])
    assert second.bus.seal is not None and second.bus.seal.verify(_record("cdp.events", sealed), EVENT_SCHEMA)
    # Only the raw events topic needs the seal: the internal topics' records cost nothing more to publish.
    [internal] = first.bus.sealed([event_message("cdp.profile-events", EVENTS[0])])
    assert "cdp-seal" not in dict(internal.headers)


def test_the_supervisor_gives_its_workers_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdp_hub import supervisor

    seen: list[dict[str, str]] = []
    monkeypatch.delenv("CDP_HUB_RECORD_SEAL_KEY", raising=False)
    monkeypatch.setattr(supervisor.subprocess, "Popen", lambda args, env: seen.append(env))
    for name in ("resolver", "triggers"):
        supervisor._start(supervisor.Worker(name, ["--stage", name]), ["cdp-hub", "run"])
    keys = {env["CDP_HUB_RECORD_SEAL_KEY"] for env in seen}
    assert len(keys) == 1 and len(keys.pop()) == 64
