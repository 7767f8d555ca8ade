"""Segments and birthdays through the running pipeline (in-process bus, real PostgreSQL and Redis):
recompute ─▶ segment.entered ─▶ resolver ─▶ triggers (win_back) ─▶ delivery, and the same for a birthday."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cdp_hub.config import ChannelInstance
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, birthday_scheduler, segment_engine
from cdp_hub.schema import parse_event

from .conftest import hub_settings

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # noon in Moscow

PIPELINES: dict[int, Pipeline] = {}
"""The pipeline running for each hub the fixture yields (tests drain it)."""


@pytest.fixture
async def running_hub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, channels={
        "email": ChannelInstance(type="outbox", config={"directory": str(tmp_path / "outbox")})})
    hub = Hub(settings, metrics=Metrics())
    hub.hotstate.prefix = f"t{uuid.uuid4().hex[:10]}:"  # segment caches are keyed by segment id: keep tests apart
    hub.clock = lambda: NOW
    await hub.start()
    pipeline = PIPELINES[id(hub)] = Pipeline(hub, ["resolver", "triggers", "delivery"])
    task = asyncio.create_task(pipeline.run())
    yield hub
    pipeline.stop()
    del PIPELINES[id(hub)]
    await asyncio.wait_for(task, 30)
    keys = [k async for k in hub.hotstate.redis.scan_iter(match=hub.hotstate.prefix + "*")]
    if keys:
        await hub.hotstate.redis.delete(*keys)
    await hub.stop()


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def _sent(hub: Hub) -> dict[str, int]:
    rows = await hub.store.fetch("SELECT scenario, count(*) AS n FROM messages WHERE status = 'sent' GROUP BY scenario")
    return {r["scenario"]: r["n"] for r in rows}


async def test_win_back_and_birthday_through_the_pipeline(running_hub: Hub, tmp_path: Path) -> None:
    hub = running_hub
    long_ago = NOW - timedelta(days=100)
    customer = [{"kind": "email", "value": "Anna@Example.ru"}]
    await Ingestor(hub).publish_events([
        parse_event({"type": "customer.updated", "source": "shop", "source_record_id": "c1",
                     "occurred_at": long_ago.isoformat(), "identities": customer,
                     "traits": {"first_name": "Анна", "birth_date": "1990-06-01"}}),
        parse_event({"type": "order.paid", "source": "shop", "source_record_id": "o1",
                     "occurred_at": long_ago.isoformat(), "identities": customer,
                     "properties": {"order_id": "o1", "total": "2500.00", "currency": "RUB"}}),
        parse_event({"type": "consent.changed", "source": "shop", "source_record_id": "consent-c1",
                     "occurred_at": long_ago.isoformat(), "identities": customer,
                     "properties": {"channel": "email", "status": "opted_in", "evidence": {"method": "form"}}}),
    ])

    async def stored() -> bool:
        return bool(await hub.store.fetchval("SELECT count(*) FROM events WHERE source = 'shop'") == 3)

    await _until(stored)

    engine = segment_engine(hub)
    result = await engine.recompute("lapsed_customers")
    assert (result.entered, result.members) == (1, 1)
    await birthday_scheduler(hub).run()

    # The customer's history is 100 days old: no welcome (older than max_trigger_age, decided too_late).
    async def delivered() -> bool:
        return await _sent(hub) == {"win_back": 1, "birthday": 1}

    await _until(delivered)
    assert await hub.store.fetchval(
        "SELECT count(*) FROM events WHERE type IN ('segment.entered', 'profile.birthday')") == 2
    texts = "\n".join(p.read_text(encoding="utf-8") for p in (tmp_path / "outbox").rglob("*") if p.is_file())
    assert "С днём рождения, Анна!" in texts and "Мы скучаем, Анна" in texts

    # Running both again changes nothing: no new members, the same birthday event, no new messages.
    again = await engine.recompute("lapsed_customers")
    assert (again.entered, again.exited) == (0, 0)
    await birthday_scheduler(hub).run()
    await PIPELINES[id(hub)].drain()
    assert await _sent(hub) == {"win_back": 1, "birthday": 1}
    assert await hub.store.fetchval("SELECT count(*) FROM events WHERE type = 'profile.birthday'") == 1
