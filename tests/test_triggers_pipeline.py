"""Lawful, event-time triggers through the running pipeline on real Kafka, PostgreSQL and Redis: opt-in
consent, a 2019 backfill, hold-until, cancels that arrive out of order or late, decisions as events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from cdp_hub.connector.ingest import Ingestor
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline, build_stage
from cdp_hub.schema import parse_event
from cdp_hub.schema.events import Event
from cdp_hub.triggers.scenario import Scenario

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


async def until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


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
