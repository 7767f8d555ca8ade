"""Lawful, event-time triggers through the running pipeline on real Kafka, PostgreSQL and Redis: opt-in
consent, a 2019 backfill, hold-until, cancels that arrive out of order or late, decisions as events."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cdp_hub.connector.ingest import Ingestor
from cdp_hub.daemon import create_app
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline, build_stage, consent_links
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.schema.consent import ConsentLinkError
from cdp_hub.schema.events import Event
from cdp_hub.store import ConsentRepository
from cdp_hub.triggers.scenario import Scenario, load_scenarios
from tests.waiting import until

T = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

SCENARIOS = [
    Scenario.model_validate(s) for s in (
        {"id": "welcome", "trigger": {"event": "profile.created"}, "channel": "email", "template": "welcome"},
        {"id": "thanks", "trigger": {"event": "order.placed"}, "channel": "email", "template": "welcome"},
        {"id": "cart", "trigger": {"event": "cart.updated"}, "delay": "10m", "cancel_on": ["order.placed"],
         "hold_until": {"key": "event.properties.cart_id"}, "channel": "email", "template": "abandoned_cart"},
    )
]


def event(kind: str, who: str, at: datetime, rid: str, **props: Any) -> Event:
    return parse_event({"type": kind, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
                        "identities": [{"kind": "email", "value": f"{who}@example.ru"}], "properties": props})


def consent(who: str, at: datetime) -> Event:
    return event("consent.changed", who, at, f"consent-{who}", channel="email", status="opted_in",
                 evidence={"method": "double_opt_in", "reference": "signup"})


async def decided(hub: Hub) -> list[tuple[str, str, str, str]]:
    """``(customer, scenario, decision, trigger source record)`` of every stored ``message.decided`` event."""
    rows = await hub.store.fetch(
        """SELECT d.body->'identities'->0->>'value' AS who, d.body->'properties'->>'scenario' AS scenario,
                  d.body->'properties'->>'decision' AS decision, t.source_record_id AS trigger
             FROM events d LEFT JOIN events t ON t.event_id = (d.body->'properties'->>'trigger_event_id')::uuid
            WHERE d.type = 'message.decided'""")
    return sorted((r["who"].split("@")[0], r["scenario"], r["decision"], r["trigger"] or "") for r in rows)


async def test_consent_backfill_hold_until_and_late_cancels_through_kafka(kafka_hub: Hub) -> None:
    hub = kafka_hub
    now = [T]
    hub.clock = lambda: now[0]
    pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=SCENARIOS)])
    task = asyncio.create_task(pipeline.run())
    try:
        ingest = Ingestor(hub)
        m = timedelta(minutes=1)
        await ingest.publish_events([
            # ann: three changes of one cart; one reminder, ten minutes after the last.
            consent("ann", T - 10 * m), event("cart.updated", "ann", T - 9 * m, "a1", cart_id="a", total="10"),
            event("cart.updated", "ann", T - 8 * m, "a2", cart_id="a", total="20"),
            event("cart.updated", "ann", T - 7 * m, "a3", cart_id="a", total="30"),
            # bob: the order (placed during the wait) arrives before the cart update.
            consent("bob", T - 10 * m), event("order.placed", "bob", T - 8 * m, "b-order", order_id="b"),
            event("cart.updated", "bob", T - 9 * m, "b1", cart_id="b", total="10"),
            # cid: a cart; the order comes later (below).
            consent("cid", T - 10 * m), event("cart.updated", "cid", T - 9 * m, "c1", cart_id="c", total="10"),
            # dan: five orders from 2019, replayed from an old system; and eve never consented.
            consent("dan", datetime(2019, 1, 1, tzinfo=UTC)),
            *[event("order.placed", "dan", datetime(2019, 3, d, tzinfo=UTC), f"d{d}", order_id=f"d{d}")
              for d in range(1, 6)],
            event("customer.updated", "eve", T - 10 * m, "e1"),
        ])

        async def first_decisions() -> bool:
            return len(await decided(hub)) >= 12  # 4 welcomes + eve's + 5 thanks + bob's thanks + ...

        await until(first_decisions)
        # cid's order, placed 4 minutes into the wait, is processed after the fire time (inside the lateness).
        now[0] = T + m + 30 * timedelta(seconds=1)
        await ingest.publish_events([event("order.placed", "cid", T - 5 * m, "c-order", order_id="c")])

        async def settled() -> bool:
            return ("cid", "cart", "suppressed", "c1") in await decided(hub)

        await until(settled)
        now[0] = T + 10 * m  # every wait is over, and the allowed lateness too

        async def fired() -> bool:
            return not await hub.store.fetchval("SELECT count(*) FROM scheduled_triggers WHERE status = 'pending'")

        await until(fired)
        await until(lambda: _count(hub, "cart", 3))
        got = await decided(hub)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)

    carts = [d for d in got if d[1] == "cart"]
    assert carts == [("ann", "cart", "sent", "a3"), ("bob", "cart", "suppressed", "b1"),
                     ("cid", "cart", "suppressed", "c1")]
    # 2019 history: no welcome, no thanks; eve: no consent, no marketing.
    assert {(who, s, d) for who, s, d, _ in got if who == "dan"} == {("dan", "welcome", "too_late"),
                                                                    ("dan", "thanks", "too_late")}
    assert [d for who, s, d, _ in got if who == "eve"] == ["no_consent"]
    assert [d for who, s, d, _ in got if who == "ann" and s == "welcome"] == ["sent"]
    superseded = await hub.store.fetchval("SELECT count(*) FROM scheduled_triggers WHERE status = 'superseded'")
    assert superseded == 2
    assert hub.metrics.trigger_decisions.labels("thanks", "too_late")._value.get() == 5
    # The consent statements keep their evidence.
    row = await hub.store.fetchrow("SELECT source, evidence FROM consents LIMIT 1")
    assert row["source"] == "shop" and row["evidence"]["method"] == "double_opt_in"


async def _count(hub: Hub, scenario: str, n: int) -> bool:
    return len([d for d in await decided(hub) if d[1] == scenario]) >= n


async def test_double_opt_in_through_the_pipeline(hub: Hub) -> None:
    """consent.requested ─▶ a confirmation e-mail with a signed, expiring link ─▶ the customer confirms ─▶
    consent recorded with its evidence ─▶ marketing now goes. A forged or expired link records nothing."""
    hub.settings = hub.settings.model_copy(update={
        "consent_link_secret": SecretStr("s3cret"), "public_url": "https://hub.shop.example",
        "consent_link_ttl": "72h"})
    now = datetime.now(UTC)
    confirmation = next(s for s in load_scenarios() if s.id == "consent_confirmation")
    promo = Scenario.model_validate({"id": "promo", "trigger": {"event": "product.viewed"}, "channel": "email",
                                     "template": "welcome"})
    stages = [build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=[confirmation, promo])]
    pipeline = Pipeline(hub, stages=stages)
    task = asyncio.create_task(pipeline.run())
    try:
        ingest = Ingestor(hub)
        await ingest.publish_events([event("consent.requested", "zoe", now, "form-1", channel="email",
                                           evidence={"method": "form", "reference": "footer"})])
        await until(lambda: _has(hub, "consent_confirmation"))
        [ask] = await _intents(hub)
        url = ask.vars["confirm_url"]
        assert url.startswith("https://hub.shop.example/v1/consent/confirm/")
        token = url.rsplit("/", 1)[1]
        assert "zoe" not in base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()  # no address in it
        pid = uuid.UUID(ask.profile_id)

        # Before confirming, marketing is refused (opt-in is the default).
        await ingest.publish_events([event("product.viewed", "zoe", now, "v1", sku="1")])
        await until(lambda: _decided_count(hub, "promo", 1))

        app = create_app(hub)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            page = await client.get(f"/v1/consent/confirm/{token}")
            forged = await client.post(f"/v1/consent/confirm/{token[:-2]}xx")
            ok = await client.post(f"/v1/consent/confirm/{token}")
            twice = await client.post(f"/v1/consent/confirm/{token}")
        assert page.status_code == 200 and "<form method=post" in page.text
        assert forged.status_code == 400 and ok.status_code == 200 and twice.status_code == 200

        async def recorded() -> bool:
            return bool(await ConsentRepository(hub.store).current([pid]))

        await until(recorded)
        assert (await ConsentRepository(hub.store).current([pid]))[pid] == {("email", "marketing"): "opted_in"}
        [statement] = await ConsentRepository(hub.store).history(pid)
        assert statement["source"] == "cdp-hub.consent" and statement["evidence"]["method"] == "double_opt_in"
        assert statement["evidence"]["reference"] == ask.trigger_event_id

        await ingest.publish_events([event("product.viewed", "zoe", now, "v2", sku="2")])
        await until(lambda: _has(hub, "promo"))
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)
    decisions = sorted(d for who, s, d, _ in await decided(hub) if s == "promo")
    assert decisions == ["no_consent", "sent"]

    links = consent_links(hub.settings)
    assert links is not None
    expired = links.token(str(pid), "email", "marketing", "r", now - timedelta(hours=73))
    with pytest.raises(ConsentLinkError, match="expired"):
        links.verify(expired, now)


async def _intents(hub: Hub) -> list[MessageIntent]:
    return [MessageIntent.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.messages)]


async def _has(hub: Hub, scenario: str) -> bool:
    return any(i.scenario == scenario for i in await _intents(hub))


async def _decided_count(hub: Hub, scenario: str, n: int) -> bool:
    return len([d for d in await decided(hub) if d[1] == scenario]) >= n


async def test_a_muted_backfill_updates_profiles_and_sends_nothing(hub: Hub, tmp_path: Any) -> None:
    """``ingest-file --mute-triggers`` / ``sync --backfill`` / ``dlq replay``: events carry
    ``context.mute_triggers``; the resolver builds profiles, the triggers stage decides ``muted``."""
    from cdp_hub.connector.files import import_file
    from cdp_hub.dlq.replay import _muted
    from tests.test_pipeline import ShopStub

    now = datetime.now(UTC)
    hub.clock = lambda: now
    export = tmp_path / "customers.jsonl"
    export.write_text("\n".join(
        f'{{"id": "c{i}", "kind": "customer.updated", "email": "old{i}@example.ru", "at": "{now.isoformat()}", '
        f'"consent": true}}' for i in range(3)), encoding="utf-8")
    pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver"), build_stage(hub, "triggers", scenarios=SCENARIOS)])
    task = asyncio.create_task(pipeline.run())
    try:
        result = await import_file(hub, ShopStub(instance="legacy"), export, mute_triggers=True)
        assert result.events == 6  # a consent and an update per customer

        async def settled() -> bool:
            return len(await decided(hub)) == 3

        await until(settled)
        await pipeline.drain()
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)
    assert {(s, d) for _, s, d, _ in await decided(hub)} == {("welcome", "muted")}
    assert await hub.store.fetchval("SELECT count(*) FROM profiles") == 3
    assert await hub.store.fetchval("SELECT count(*) FROM consents") == 3  # history is kept, with evidence
    assert await _intents(hub) == []
    # A dead letter replayed to cdp.events is muted the same way (dlq replay does it by default).
    raw = event("order.placed", "x", now, "o1", order_id="1").to_json()
    assert Event.from_json(_muted(raw)).context.model_extra == {"mute_triggers": True}
