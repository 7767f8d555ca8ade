"""The walking skeleton end to end: connector -> cdp.events -> resolver -> triggers -> delivery -> receipt.

The same test runs on the in-process bus and on the real Kafka broker, with real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cdp_hub import Connector
from cdp_hub.config import ChannelInstance
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline
from tests.waiting import until as _until

from .conftest import hub_settings

NOON_MSK = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

PIPELINES: dict[int, Pipeline] = {}
"""The pipeline running for each hub the fixture yields (tests drain it)."""


class ShopStub(Connector):
    """A minimal source: {id, email, phone, kind, order_id?}."""

    name = "shop_stub"

    def normalize(self, record: Any, *, stream: str | None = None) -> list[dict[str, Any]]:
        ids = [{"kind": "email", "value": record["email"]}]
        if record.get("phone"):
            ids.append({"kind": "phone", "value": record["phone"]})
        event: dict[str, Any] = {"type": record["kind"], "occurred_at": record["at"], "identities": ids}
        if record["kind"].startswith("order."):
            event["properties"] = {"order_id": record["order_id"], "total": "1500.00", "currency": "RUB"}
        else:
            event["traits"] = {"first_name": record.get("name")}
        if record.get("consent"):  # the sign-up form's e-mail marketing checkbox
            consent = {"type": "consent.changed", "occurred_at": record["at"], "identities": ids,
                       "source_record_id": f"{record['id']}/consent",
                       "properties": {"channel": "email", "status": "opted_in", "purpose": "marketing",
                                      "evidence": {"method": "form", "reference": "signup"}}}
            return [consent, event]
        return [event]


def records() -> list[dict[str, Any]]:
    at = (NOON_MSK - timedelta(minutes=30)).isoformat()
    out: list[dict[str, Any]] = []
    for i in range(6):
        # Client 5 never ticked the marketing box: no welcome for them (opt-in is the default policy).
        out.append({"id": f"c{i}", "kind": "customer.updated", "email": f"Client{i}@Example.ru",
                    "phone": f"8 (916) 000-00-0{i}", "name": f"Клиент {i}", "at": at, "consent": i != 5})
        if i == 2:  # malformed: the events after it must still be processed
            out.append({"id": "broken-1", "kind": "customer.updated", "email": "x@example.ru",
                        "phone": "not a phone", "at": at})
    # The same person seen again with only the e-mail: attaches to the existing profile. The order
    # confirmation is transactional: client 5 gets theirs without marketing consent.
    out.append({"id": "o1", "kind": "order.paid", "email": "client1@example.ru", "order_id": "o1", "at": at})
    out.append({"id": "o2", "kind": "order.paid", "email": "client5@example.ru", "order_id": "o2", "at": at})
    return out


@pytest.fixture
async def running_hub(bus_backend: str, tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    kafka = None
    if bus_backend == "kafka":
        from .conftest import KAFKA_BOOTSTRAP, require

        require("Kafka", KAFKA_BOOTSTRAP)
        kafka = KAFKA_BOOTSTRAP
    settings = hub_settings(tmp_path, bus=bus_backend, pg_dsn=pg_dsn, redis_url=redis_url,
                            kafka_bootstrap=kafka,
                            channels={"email": ChannelInstance(type="outbox",
                                                               config={"directory": str(tmp_path / "outbox")})})
    hub = Hub(settings, metrics=Metrics())
    hub.clock = lambda: NOON_MSK
    await hub.start()
    pipeline = PIPELINES[id(hub)] = Pipeline(hub)
    task = asyncio.create_task(pipeline.run())
    yield hub
    pipeline.stop()
    del PIPELINES[id(hub)]
    await asyncio.wait_for(task, 30)
    await hub.stop()


async def test_walking_skeleton_end_to_end(running_hub: Hub, tmp_path: Path) -> None:
    hub = running_hub
    result = await Ingestor(hub).ingest(ShopStub(instance="shop"), records())
    assert (result.records, result.events, result.dead) == (9, 13, 1)  # 8 events + 5 consents

    # 5 welcome e-mails + 2 order confirmations, each with its message.sent receipt back in the events.
    async def delivered() -> bool:
        n = await hub.store.fetchval("SELECT count(*) FROM events WHERE type = 'message.sent'")
        return bool(n == 7)

    await _until(delivered)
    store = hub.store
    assert await store.fetchval("SELECT count(*) FROM profiles WHERE merged_into IS NULL") == 6
    assert await store.fetchval("SELECT count(*) FROM events WHERE source = 'shop'") == 13
    by_scenario = dict(await store.fetch("SELECT scenario, count(*) FROM messages GROUP BY scenario"))
    assert by_scenario == {"welcome": 5, "order_confirmation": 2}
    files = sorted((tmp_path / "outbox").glob("*.json"))
    assert len(files) == 7
    sent = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    assert {m["to"] for m in sent} >= {"client1@example.ru", "client5@example.ru"}
    to_client5 = [m for m in sent if m["to"] == "client5@example.ru"]
    assert [m["template"] for m in to_client5] == ["order_confirmation"]

    # Every decision is an event in the profile's history: client 5's welcome was decided no_consent.
    async def decided() -> bool:
        return bool(await store.fetchval("SELECT count(*) FROM events WHERE type = 'message.decided'") == 8)

    await _until(decided)
    decisions = await store.fetch(
        """SELECT body->'properties'->>'scenario' AS scenario, body->'properties'->>'decision' AS decision,
                  body->'properties'->>'reason' AS reason FROM events WHERE type = 'message.decided'""")
    by_decision = sorted((r["scenario"], r["decision"]) for r in decisions)
    assert by_decision == [("order_confirmation", "sent")] * 2 + [("welcome", "no_consent")] + [("welcome", "sent")] * 5
    assert "no email marketing consent recorded" in next(r["reason"] for r in decisions if r["decision"] == "no_consent")
    assert hub.metrics.trigger_decisions.labels("welcome", "no_consent")._value.get() == 1
    assert hub.metrics.trigger_decisions.labels("welcome", "sent")._value.get() == 5

    # The receipts are attached to the profile the message went to.
    orphan = await store.fetchval(
        "SELECT count(*) FROM events WHERE type = 'message.sent' AND profile_id IS NULL")
    assert orphan == 0

    # The malformed record is in the DLQ, naming the field and the source, with the raw record.
    async def archived() -> bool:
        return bool(await store.fetchval("SELECT count(*) FROM dead_letters") == 1)

    await _until(archived)
    row = await store.fetchrow("SELECT source, record_id, field, failure_type, envelope FROM dead_letters")
    assert row["source"] == "shop" and row["record_id"] == "broken-1"
    assert row["field"] == "identities.1.value" and row["failure_type"] == "normalization_error"
    assert json.loads(row["envelope"]["payload"])["phone"] == "not a phone"


async def test_replaying_the_same_records_changes_nothing(running_hub: Hub) -> None:
    hub = running_hub
    ingestor = Ingestor(hub)
    await ingestor.ingest(ShopStub(instance="shop"), records())

    async def settled() -> bool:
        return bool(await hub.store.fetchval("SELECT count(*) FROM events WHERE type = 'message.sent'") == 7)

    await _until(settled)
    await ingestor.ingest(ShopStub(instance="shop"), records())  # re-ingest: same deterministic event ids
    await asyncio.sleep(1.0)
    await PIPELINES[id(hub)].drain(idle_polls=5)
    assert await hub.store.fetchval("SELECT count(*) FROM events WHERE source = 'shop'") == 13
    assert await hub.store.fetchval("SELECT count(*) FROM messages") == 7
    assert await hub.store.fetchval("SELECT count(*) FROM events WHERE type = 'message.sent'") == 7
    assert await hub.store.fetchval("SELECT count(*) FROM events WHERE type = 'message.decided'") == 8
    assert await hub.store.fetchval("SELECT count(*) FROM consents") == 5
