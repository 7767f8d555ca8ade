"""The delivery stage on real PostgreSQL and Redis: send log, consent, addresses, fallbacks, receipts, DLQ."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.channel.base import Channel, OutboundMessage, Receipt
from cdp_hub.delivery.stage import ChannelsUnavailable
from cdp_hub.errors import RetriableError
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, build_stage
from cdp_hub.plugins import PluginInfo
from cdp_hub.schema.consent import CONSENT_CHANNELS
from cdp_hub.schema.events import Event, deterministic_event_id
from cdp_hub.schema.messages import MessageIntent, message_id_for
from cdp_hub.store import ConsentRepository, ConsentStatement
from tests.conftest import hub_settings


class RecordingChannel(Channel):
    """A test channel: records what it sends; the address decides what the 'provider' answers."""

    name: ClassVar[str] = "rec_sms"
    kind = "sms"
    address_kind = "phone"
    sent: ClassVar[list[OutboundMessage]] = []
    flaky: ClassVar[dict[str, int]] = {}

    async def send(self, message: OutboundMessage) -> Receipt:
        if message.to.endswith("0000"):
            return Receipt(message_id=message.message_id, status="failed", permanent=True,
                           reason="invalid number", provider="rec")
        if message.to.endswith("9999"):
            raise RuntimeError("provider SDK bug")
        left = self.flaky.get(message.to, 0)
        if left:
            self.flaky[message.to] = left - 1
            raise RetriableError("503 from provider", retry_after=0.0)
        type(self).sent.append(message)
        return Receipt(message_id=message.message_id, status="sent", provider="rec",
                       provider_message_id=f"p-{len(self.sent)}")


class RecordingPush(RecordingChannel):
    name: ClassVar[str] = "rec_push"
    kind = "push"
    address_kind = "push_token"

    async def send(self, message: OutboundMessage) -> Receipt:
        if message.to.startswith("dead"):
            return Receipt(message_id=message.message_id, status="failed", permanent=True,
                           reason="UNREGISTERED", provider="rec")
        return await super().send(message)


class DownChannel(RecordingChannel):
    name: ClassVar[str] = "rec_down"
    kind = "email"
    address_kind = "email"

    async def send(self, message: OutboundMessage) -> Receipt:
        raise RetriableError("connection refused")


@pytest.fixture
async def dhub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, delivery_retry_backoff=0.001,
                            delivery_retry_max_wait=0.01, delivery_retry_attempts=3,
                            unsubscribe_url="https://shop.example/u/{message_id}")
    h = Hub(settings, bus=MemoryBus(), metrics=Metrics())
    for cls in (RecordingChannel, RecordingPush, DownChannel):
        h.registry.channels[cls.name] = PluginInfo(cls.name, cls, "tests", None, None)
    RecordingChannel.sent = []
    RecordingChannel.flaky = {}
    await h.start()
    yield h
    await h.stop()
    for cls in (RecordingChannel, RecordingPush, DownChannel):
        h.registry.channels.pop(cls.name, None)


async def make_profile(hub: Hub, *, golden: Mapping[str, Any] | None = None,
                       identities: list[tuple[str, str]] = (),  # type: ignore[assignment]
                       merged_into: uuid.UUID | None = None, consent: bool | None = None) -> uuid.UUID:
    """A profile row and its identities; later identities in the list are seen more recently. ``consent``
    (default: unless the golden record states consent) records a marketing opt-in on every channel."""
    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden, merged_into) VALUES ($1, $2, $3)",
                            pid, dict(golden or {}), merged_into)
    if consent if consent is not None else "consent" not in (golden or {}):
        await ConsentRepository(hub.store).record([
            ConsentStatement(pid, channel, "marketing", "opted_in", datetime(2025, 1, 1, tzinfo=UTC), "crm",
                             uuid.uuid4(), {"method": "form"}) for channel in CONSENT_CHANNELS])
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n, (kind, value) in enumerate(identities):
        await hub.store.execute(
            "INSERT INTO identities (kind, value, profile_id, last_seen) VALUES ($1, $2, $3, $4)",
            kind, value, pid, base + timedelta(days=n),
        )
    return pid


def intent(profile_id: uuid.UUID, *, channel: str = "outbox", fallbacks: list[str] | None = None,
           template: str = "welcome", category: str = "marketing", **extra: Any) -> MessageIntent:
    trigger = str(uuid.uuid4())
    return MessageIntent(
        message_id=message_id_for("welcome", trigger, str(profile_id)), profile_id=str(profile_id),
        scenario="welcome", channel=channel, fallbacks=fallbacks or [], template=template,
        trigger_event_id=trigger, category=category, **extra,  # type: ignore[arg-type]
    )


_offsets = iter(range(1_000_000))


def record(hub: Hub, item: MessageIntent | bytes) -> Record:
    value = item if isinstance(item, bytes) else item.model_dump_json().encode()
    return Record(hub.topics.messages, 0, next(_offsets), None, value)


def events_of(out: Any) -> list[Event]:
    return [Event.from_json(m.value) for m in out.messages]


async def row(hub: Hub, message_id: str) -> Mapping[str, Any]:
    r = await hub.store.fetchrow("SELECT * FROM messages WHERE message_id = $1", message_id)
    assert r is not None
    return dict(r)


async def test_welcome_email_through_outbox(dhub: Hub) -> None:
    pid = await make_profile(dhub, golden={"first_name": "Anna", "locale": "en"},
                             identities=[("email", "old@example.com"), ("email", "anna@example.com")])
    it = intent(pid)
    stage = build_stage(dhub, "delivery")
    out = await stage.handle([record(dhub, it)])

    assert out.dead == []
    [event] = events_of(out)
    assert event.type == "message.sent"
    assert event.source == "cdp-hub.delivery"
    assert event.source_record_id == f"{it.message_id}:sent"
    assert event.event_id == deterministic_event_id("cdp-hub.delivery", f"{it.message_id}:sent", "message.sent")
    assert event.profile_id == pid
    assert [(i.kind, i.value) for i in event.identities] == [("email", "anna@example.com")]  # most recent
    assert event.properties["message_id"] == it.message_id
    assert event.properties["channel"] == "outbox"
    assert event.properties["scenario"] == "welcome"
    assert event.properties["template"] == "welcome"
    assert event.properties["provider"] == "outbox"
    assert out.messages[0].topic == dhub.topics.events

    written = json.loads((dhub.settings.data_dir / "outbox" / f"{it.message_id}.json").read_text())
    assert written["to"] == "anna@example.com"
    assert written["subject"] == "Welcome, Anna!"
    assert "Hello, Anna!" in written["text"]
    assert "<p>Hello, Anna!</p>" in written["html"]
    assert written["headers"]["List-Unsubscribe"] == f"<https://shop.example/u/{it.message_id}>"
    log = await row(dhub, it.message_id)
    assert log["status"] == "sent" and log["attempts"] == 1 and log["address"] == "anna@example.com"
    assert log["sent_at"] is not None


async def test_redelivered_intent_is_not_sent_twice_and_its_receipt_is_reemitted(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79161234567")])
    it = intent(pid, channel="rec_sms")
    stage = build_stage(dhub, "delivery")
    first = await stage.handle([record(dhub, it)])
    second = await build_stage(dhub, "delivery").handle([record(dhub, it), record(dhub, it)])

    assert len(RecordingChannel.sent) == 1
    assert [e.event_id for e in events_of(first)] == [e.event_id for e in events_of(second)]
    assert events_of(second)[0].type == "message.sent"
    assert (await row(dhub, it.message_id))["attempts"] == 1


async def test_crash_mid_send_resends_a_non_final_message_with_the_same_id(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79161234567")])
    it = intent(pid, channel="rec_sms")
    stage = build_stage(dhub, "delivery")
    # The first process claimed the message and died before it recorded the outcome.
    await stage.sendlog.register([(it.message_id, pid, "welcome", "rec_sms", "welcome", "marketing", None, None)])
    assert await stage.sendlog.claim([it.message_id]) == {it.message_id}

    out = await stage.handle([record(dhub, it)])
    assert [m.message_id for m in RecordingChannel.sent] == [it.message_id]
    assert events_of(out)[0].type == "message.sent"
    log = await row(dhub, it.message_id)
    assert log["status"] == "sent" and log["attempts"] == 2


async def test_new_intents_are_logged_claimed_in_one_statement_and_logged_ones_are_left_alone(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79161234567")])
    new, logged = intent(pid, channel="rec_sms"), intent(pid, channel="rec_sms")
    sendlog = build_stage(dhub, "delivery").sendlog
    await sendlog.register([(logged.message_id, pid, "welcome", "rec_sms", "welcome", "marketing", None, None)])
    rows = [(it.message_id, pid, it.scenario, "rec_sms", "welcome", "marketing", None, None) for it in (new, logged)]
    assert await sendlog.register_claimed(rows) == {new.message_id}
    claimed, left = await row(dhub, new.message_id), await row(dhub, logged.message_id)
    assert (claimed["status"], claimed["attempts"]) == ("sending", 1)
    assert (left["status"], left["attempts"]) == ("queued", 0)
    assert await sendlog.register_claimed(rows) == set()  # nothing new the second time
    assert (await row(dhub, new.message_id))["attempts"] == 1


async def test_marketing_skips_opted_out_channel_and_falls_back(dhub: Hub) -> None:
    pid = await make_profile(dhub, golden={"consent": {"email": "opted_out", "sms": "opted_in"}},
                             identities=[("email", "a@example.com"), ("phone", "+79161234567")])
    it = intent(pid, channel="outbox", fallbacks=["rec_sms"])
    out = await build_stage(dhub, "delivery").handle([record(dhub, it)])
    [event] = events_of(out)
    assert event.type == "message.sent"
    assert event.properties["channel"] == "rec_sms"
    assert [(i.kind, i.value) for i in event.identities] == [("phone", "+79161234567")]
    assert RecordingChannel.sent[0].text.startswith("Добро пожаловать")  # default locale ru
    assert not (dhub.settings.data_dir / "outbox" / f"{it.message_id}.json").exists()


async def test_transactional_message_ignores_marketing_opt_out(dhub: Hub) -> None:
    pid = await make_profile(dhub, golden={"consent": {"all": "opted_out"}},
                             identities=[("email", "a@example.com")])
    it = intent(pid, category="transactional")
    out = await build_stage(dhub, "delivery").handle([record(dhub, it)])
    assert events_of(out)[0].type == "message.sent"


async def test_no_reachable_channel_is_skipped_in_the_send_log_with_the_reasons(dhub: Hub) -> None:
    # SMS consent given (opt-in is the default), but no phone to send to. Nothing was sent: no receipt goes
    # round the pipeline (the triggers' message.decided event records the message); the send log says why.
    pid = await make_profile(dhub, golden={"consent": {"email": "opted_out", "sms": "opted_in"}},
                             identities=[("email", "a@example.com"), ("crm_id", "C-1")])
    it = intent(pid, channel="outbox", fallbacks=["rec_sms"])
    stage = build_stage(dhub, "delivery")
    out = await stage.handle([record(dhub, it)])
    assert out.dead == [] and events_of(out) == []
    log = await row(dhub, it.message_id)
    assert log["status"] == "skipped"
    assert "outbox: email consent opted out" in log["error"] and "rec_sms: no usable phone" in log["error"]
    assert dhub.metrics.registry.get_sample_value(
        "cdp_messages_total", {"channel": "outbox", "status": "skipped"}) == 1
    again = await stage.handle([record(dhub, it)])  # a redelivery re-emits nothing either
    assert again.dead == [] and events_of(again) == []


async def test_suppressed_address_is_skipped_for_the_next_one(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79161112233"), ("phone", "+79164445566")])
    stage = build_stage(dhub, "delivery")
    await stage.sendlog.suppress([("phone", "+79164445566", "rec_sms", "invalid number", "m0")])
    await stage.handle([record(dhub, intent(pid, channel="rec_sms"))])
    assert [m.to for m in RecordingChannel.sent] == ["+79161112233"]


async def test_merged_profile_is_followed_to_the_survivor(dhub: Hub) -> None:
    survivor = await make_profile(dhub, golden={"first_name": "Boris", "locale": "en"},
                                  identities=[("phone", "+79161234567")])
    merged = await make_profile(dhub, merged_into=survivor)
    out = await build_stage(dhub, "delivery").handle([record(dhub, intent(merged, channel="rec_sms"))])
    assert RecordingChannel.sent[0].text == "Welcome, Boris! Your account is ready."
    assert RecordingChannel.sent[0].profile_id == str(survivor)
    assert events_of(out)[0].profile_id == merged


async def test_permanent_failure_is_a_failed_receipt_and_suppresses_the_address(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79160000000")])
    it = intent(pid, channel="rec_sms")
    out = await build_stage(dhub, "delivery").handle([record(dhub, it)])
    assert out.dead == []
    [event] = events_of(out)
    assert event.type == "message.failed"
    assert event.properties["permanent"] is True and event.properties["reason"] == "invalid number"
    sup = await dhub.store.fetchrow("SELECT * FROM suppressions WHERE kind = 'phone'")
    assert sup is not None and sup["value"] == "+79160000000" and sup["message_id"] == it.message_id
    assert (await row(dhub, it.message_id))["status"] == "failed"
    # The phone identity stays (a number may be re-assigned and re-confirmed); a dead push token does not.


async def test_unregistered_push_token_is_removed_from_the_profile(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("push_token", "live-token"), ("push_token", "dead-token")])
    out = await build_stage(dhub, "delivery").handle([record(dhub, intent(pid, channel="rec_push"))])
    assert events_of(out)[0].type == "message.failed"
    tokens = await dhub.store.fetch("SELECT value FROM identities WHERE profile_id = $1", pid)
    assert [r["value"] for r in tokens] == ["live-token"]
    # The next message goes to the token that is left.
    await build_stage(dhub, "delivery").handle([record(dhub, intent(pid, channel="rec_push"))])
    assert [m.to for m in RecordingChannel.sent] == ["live-token"]


async def test_template_error_goes_to_the_dlq_and_the_batch_goes_on(dhub: Hub, tmp_path: Path) -> None:
    tdir = tmp_path / "templates" / "broken"
    tdir.mkdir(parents=True)
    (tdir / "sms.j2").write_text("Hi {{ profile.first_name | money('NOT A CURRENCY') }}")
    dhub.settings.templates_dir = tmp_path / "templates"
    pid = await make_profile(dhub, golden={"first_name": "Anna"}, identities=[("phone", "+79161234567")])
    bad, good = intent(pid, channel="rec_sms", template="broken"), intent(pid, channel="rec_sms")
    rec = record(dhub, bad)
    out = await build_stage(dhub, "delivery").handle([rec, record(dhub, good)])

    [dead] = out.dead
    assert dead.failure_type == "template_error"
    assert dead.stage == "delivery"
    assert "broken/sms.j2" in dead.error
    assert dead.origin is not None and dead.origin.offset == rec.offset
    assert MessageIntent.model_validate_json(dead.payload_bytes()).message_id == bad.message_id
    assert [e.properties["message_id"] for e in events_of(out)] == [good.message_id]
    assert (await row(dhub, bad.message_id))["status"] == "dead"  # not final: a replay after the fix sends it


async def test_unexpected_exception_is_a_delivery_error_for_that_message_only(dhub: Hub) -> None:
    p1 = await make_profile(dhub, identities=[("phone", "+79169999999")])
    p2 = await make_profile(dhub, identities=[("phone", "+79161234567")])
    out = await build_stage(dhub, "delivery").handle([record(dhub, intent(p1, channel="rec_sms")),
                                            record(dhub, intent(p2, channel="rec_sms"))])
    [dead] = out.dead
    assert dead.failure_type == "delivery_error"
    assert "RuntimeError: provider SDK bug" in dead.error
    assert len(events_of(out)) == 1


async def test_transient_errors_are_retried(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79161234567")])
    RecordingChannel.flaky["+79161234567"] = 2
    out = await build_stage(dhub, "delivery").handle([record(dhub, intent(pid, channel="rec_sms"))])
    assert events_of(out)[0].type == "message.sent"
    assert len(RecordingChannel.sent) == 1


async def test_unreachable_channel_falls_back_then_the_batch_waits_when_all_are_down(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("email", "a@example.com"), ("phone", "+79161234567")])
    it = intent(pid, channel="rec_down", fallbacks=["rec_sms"])
    out = await build_stage(dhub, "delivery").handle([record(dhub, it)])
    assert events_of(out)[0].properties["channel"] == "rec_sms"

    # Every channel down (one transiently, one not configured): a provider outage is no reason to dead-letter
    # the message. What the batch did send is final; the batch fails as a whole so the runner retries it.
    it2 = intent(pid, channel="rec_down", fallbacks=["no_such_channel"])
    p2 = await make_profile(dhub, identities=[("phone", "+79161234568")])
    sent_alongside = intent(p2, channel="rec_sms")
    stage = build_stage(dhub, "delivery")
    with pytest.raises(ChannelsUnavailable, match="rec_down") as caught:
        await stage.handle([record(dhub, it2), record(dhub, sent_alongside)])
    assert caught.value.dependency == "channel:rec_down"
    waiting = await row(dhub, it2.message_id)
    assert waiting["status"] == "deferred"
    assert "rec_down: unreachable (connection refused)" in waiting["error"]
    assert "no_such_channel" in waiting["error"]
    assert (await row(dhub, sent_alongside.message_id))["status"] == "sent"
    assert [m.to for m in RecordingChannel.sent] == ["+79161234567", "+79161234568"]

    # The retry of the same batch, the provider back: the waiting message goes out, the other is not sent
    # again (its receipt is re-emitted).
    it3 = it2.model_copy(update={"channel": "rec_sms", "fallbacks": []})
    out3 = await stage.handle([record(dhub, it3), record(dhub, sent_alongside)])
    assert out3.dead == []
    assert sorted(e.properties["message_id"] for e in events_of(out3)) == sorted(
        [it2.message_id, sent_alongside.message_id])
    assert [m.to for m in RecordingChannel.sent] == ["+79161234567", "+79161234568", "+79161234567"]


async def test_only_misconfigured_channels_is_a_dead_letter(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("email", "a@example.com")])
    it = intent(pid, channel="no_such_channel")
    out = await build_stage(dhub, "delivery").handle([record(dhub, it)])
    [dead] = out.dead
    assert dead.failure_type == "delivery_error"
    assert "no_such_channel" in dead.error
    assert (await row(dhub, it.message_id))["status"] == "deferred"


async def test_bad_intent_and_unknown_profile(dhub: Hub) -> None:
    missing = uuid.uuid4()
    it = intent(missing)
    out = await build_stage(dhub, "delivery").handle([record(dhub, b'{"message_id": 1}'), record(dhub, it)])
    [dead] = out.dead
    assert dead.failure_type == "schema_violation"
    assert out.messages == []  # no identity to name the profile by
    log = await row(dhub, it.message_id)
    assert log["status"] == "failed" and log["error"] == "profile not found"


async def test_expired_intent_is_not_sent(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79161234567")])
    it = intent(pid, channel="rec_sms", expires_at=datetime.now(UTC) - timedelta(minutes=1))
    out = await build_stage(dhub, "delivery").handle([record(dhub, it)])
    assert RecordingChannel.sent == []
    assert events_of(out) == []  # never sent: the send log's row says why, no receipt
    log = await row(dhub, it.message_id)
    assert log["status"] == "skipped" and "expired" in log["error"]


async def test_rate_limit_paces_a_channel(dhub: Hub) -> None:
    pid = await make_profile(dhub, identities=[("phone", "+79161234567")])
    stage = build_stage(dhub, "delivery")
    channel = await dhub.channel("rec_sms")
    channel.limits = channel.limits.model_copy(update={"rate_per_second": 50.0, "burst": 1})
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stage.handle([record(dhub, intent(pid, channel="rec_sms")) for _ in range(6)])
    # 6 sends, 1 token at hand, 50/s: at least 5 refills of 20 ms each.
    assert loop.time() - started >= 0.09
    assert len(RecordingChannel.sent) == 6


async def test_stage_runs_on_the_bus_end_to_end(dhub: Hub) -> None:
    pid = await make_profile(dhub, golden={"first_name": "Anna"}, identities=[("email", "anna@example.com")])
    intents = [intent(pid) for _ in range(3)]
    for it in intents:
        await dhub.bus.publish(dhub.topics.messages, it.model_dump_json().encode(), key=str(pid).encode())
    pipeline = Pipeline(dhub, ["delivery"])
    task = asyncio.create_task(pipeline.run())
    try:
        await pipeline.drain(idle_polls=3, timeout=30)
    finally:
        pipeline.stop()
        await task
    receipts = [Event.from_json(r.value) for r in await dhub.bus.read_all(dhub.topics.events)]
    assert sorted(e.properties["message_id"] for e in receipts) == sorted(i.message_id for i in intents)
    assert {e.type for e in receipts} == {"message.sent"}
    files = sorted(p.name for p in (dhub.settings.data_dir / "outbox").glob("*.json"))
    assert files == sorted(f"{i.message_id}.json" for i in intents)
    assert await dhub.bus.read_all(dhub.topics.dlq) == []
    body = orjson.loads((dhub.settings.data_dir / "outbox" / files[0]).read_bytes())
    assert body["subject"] == "Добро пожаловать, Anna!"

