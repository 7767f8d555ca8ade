"""Refusals at send time through the pipeline (resolver, triggers, delivery on PostgreSQL and Redis): consent
withdrawn between the intent and the send, a hard-bounced address, a customer's "no transactional" block are
``message.decided`` events (``no_consent`` / ``suppressed``) with a metric by scenario and decision, not
receipts; the send log marks them ``refused`` and a replay of the intents decides the same again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cdp_hub.config import ChannelInstance
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline, build_stage
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.schema.events import Event
from cdp_hub.store import MessageRepository
from cdp_hub.triggers.scenario import Scenario
from tests.waiting import until

SCENARIOS = [
    Scenario.model_validate({"id": "promo", "trigger": {"event": "product.viewed"}, "channel": "email",
                             "template": "welcome"}),
    Scenario.model_validate({"id": "order_status", "trigger": {"event": "order.placed"}, "channel": "email",
                             "template": "welcome", "category": "transactional"}),
]


def event(kind: str, who: str, at: datetime, rid: str, **props: Any) -> Event:
    return parse_event({"type": kind, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
                        "identities": [{"kind": "email", "value": f"{who}@example.ru"}], "properties": props})


def consent(who: str, at: datetime, status: str, rid: str, purpose: str = "marketing") -> Event:
    return event("consent.changed", who, at, rid, channel="email", status=status, purpose=purpose,
                 evidence={"method": "form", "reference": "account page"})


async def run_until(hub: Hub, stages: list[Any], predicate: Any) -> None:
    pipeline = Pipeline(hub, stages=stages)
    task = asyncio.create_task(pipeline.run())
    try:
        await until(predicate)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)


async def stored(hub: Hub, kind: str) -> list[dict[str, Any]]:
    rows = await hub.store.fetch("SELECT body FROM events WHERE type = $1", kind)
    return [r["body"] for r in rows]


async def test_refusals_at_send_time_are_decisions_through_the_pipeline(hub: Hub, tmp_path: Path) -> None:
    hub.settings = hub.settings.model_copy(update={
        "channels": {"email": ChannelInstance(type="outbox", config={"directory": str(tmp_path / "outbox")})}})
    now = datetime.now(UTC)
    m = timedelta(minutes=1)
    ingest = Ingestor(hub)
    # 1. Every customer may get its message when the triggers stage decides.
    await ingest.publish_events([
        consent("ann", now - 10 * m, "opted_in", "c-ann"), event("product.viewed", "ann", now - 5 * m, "v-ann", sku="1"),
        consent("bob", now - 10 * m, "opted_in", "c-bob"), event("product.viewed", "bob", now - 5 * m, "v-bob", sku="1"),
        event("order.placed", "cid", now - 5 * m, "o-cid", order_id="1"),
        consent("dan", now - 10 * m, "opted_in", "c-dan"), event("product.viewed", "dan", now - 5 * m, "v-dan", sku="1"),
    ])

    async def intents() -> list[MessageIntent]:
        return [MessageIntent.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.messages)]

    async def four_intents() -> bool:
        return len(await intents()) == 4

    await run_until(hub, [build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=SCENARIOS)],
                    four_intents)
    records = await hub.bus.read_all(hub.topics.messages)

    # 2. Before the send: ann withdraws marketing consent, cid blocks transactional e-mail, bob's address
    #    hard-bounced a message of another system (the suppression list); dan changes nothing.
    await ingest.publish_events([consent("ann", now - 2 * m, "opted_out", "c-ann-2"),
                                 consent("cid", now - 2 * m, "opted_out", "c-cid", purpose="transactional")])
    await MessageRepository(hub.store).suppress([("email", "bob@example.ru", "email", "550 mailbox unavailable",
                                                  "earlier-message")])

    async def withdrawn() -> bool:
        rows = await hub.store.fetchval("SELECT count(*) FROM consents WHERE status = 'opted_out'")
        return bool(rows == 2)

    await run_until(hub, [build_stage(hub, "resolver")], withdrawn)

    # 3. Delivery (and the resolver, which stores what delivery says about the messages).
    async def all_recorded() -> bool:
        return len(await stored(hub, "message.decided")) >= 4 + 3 and bool(await stored(hub, "message.sent"))

    await run_until(hub, [build_stage(hub, "resolver"), build_stage(hub, "delivery")], all_recorded)

    at_send = {(b["identities"][0]["value"].split("@")[0], b["properties"]["scenario"]): b["properties"]
               for b in await stored(hub, "message.decided") if b["properties"].get("stage") == "delivery"}
    assert {k: v["decision"] for k, v in at_send.items()} == {
        ("ann", "promo"): "no_consent", ("bob", "promo"): "suppressed", ("cid", "order_status"): "no_consent"}
    assert at_send[("ann", "promo")]["reason"] == "email: email consent opted out"
    assert at_send[("bob", "promo")]["reason"] == "email: every email is suppressed"
    assert at_send[("cid", "order_status")]["reason"] == "email: email transactional consent opted out"
    assert at_send[("cid", "order_status")]["category"] == "transactional"
    assert all(v["message_id"] and v["trigger_event_id"] for v in at_send.values())
    # No receipt for a refused message; dan's went.
    sent = [b["identities"][0]["value"] for b in await stored(hub, "message.sent")]
    assert sent == ["dan@example.ru"] and not await stored(hub, "message.failed")
    statuses = await hub.store.fetch("SELECT scenario, status FROM messages ORDER BY status, scenario")
    assert [(r["scenario"], r["status"]) for r in statuses] == [
        ("order_status", "refused"), ("promo", "refused"), ("promo", "refused"), ("promo", "sent")]
    metric = hub.metrics.delivery_decisions
    assert metric.labels("promo", "no_consent")._value.get() == 1
    assert metric.labels("promo", "suppressed")._value.get() == 1
    assert metric.labels("order_status", "no_consent")._value.get() == 1

    # A replay of the intents (a crash before the commit) sends nothing and decides the same, same event ids.
    before = {b["event_id"] for b in await stored(hub, "message.decided")}
    out = await build_stage(hub, "delivery").handle(records)
    again = [Event.from_json(msg.value) for msg in out.messages if msg.topic == hub.topics.events]
    refused = [e for e in again if e.type == "message.decided"]
    assert len(refused) == 3 and {str(e.event_id) for e in refused} <= before
    assert [e.type for e in again if e.type != "message.decided"] == ["message.sent"]
    assert metric.labels("promo", "no_consent")._value.get() == 1  # a replay is not a second decision


async def test_a_template_skips_a_message_when_its_recommendation_is_empty(hub: Hub, tmp_path: Path) -> None:
    # An offer that is only worth sending with products in it: no purchase history yet, so no "popular".
    templates = tmp_path / "templates" / "offer"
    templates.mkdir(parents=True)
    (templates / "email.j2").write_text(
        '{% block subject %}For you{% endblock %}{% block text %}{% set products = recommend("popular", limit=4) %}'
        '{% if not products %}{{ skip("nothing to offer") }}{% endif %}{{ products | product_list }}{% endblock %}',
        encoding="utf-8")
    hub.settings = hub.settings.model_copy(update={
        "templates_dir": tmp_path / "templates",
        "channels": {"email": ChannelInstance(type="outbox", config={"directory": str(tmp_path / "outbox")})}})
    now = datetime.now(UTC)
    m = timedelta(minutes=1)
    await Ingestor(hub).publish_events([consent("eve", now - 10 * m, "opted_in", "c-eve"),
                                        event("product.viewed", "eve", now - 5 * m, "v-eve", sku="1")])
    offer = [Scenario.model_validate({"id": "offer", "trigger": {"event": "product.viewed"}, "channel": "email",
                                      "template": "offer"})]

    async def decided() -> bool:
        return any(b["properties"].get("stage") == "delivery" for b in await stored(hub, "message.decided"))

    await run_until(hub, [build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=offer),
                          build_stage(hub, "delivery")], decided)
    (skipped,) = [b["properties"] for b in await stored(hub, "message.decided")
                  if b["properties"].get("stage") == "delivery"]
    assert (skipped["scenario"], skipped["decision"]) == ("offer", "suppressed")
    assert skipped["reason"] == "email: the template skipped it: nothing to offer"
    assert not await stored(hub, "message.sent") and not await stored(hub, "message.failed")
    assert not list((tmp_path / "outbox").glob("*")) if (tmp_path / "outbox").exists() else True
    assert hub.metrics.delivery_decisions.labels("offer", "suppressed")._value.get() == 1
