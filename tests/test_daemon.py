"""The daemon's HTTP side: ingestion with per-record errors, admin auth, health and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from cdp_hub.config import EventSource
from cdp_hub.daemon import create_app
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage


def event(i: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "product.viewed", "source": "site", "source_record_id": f"v{i}",
                            "occurred_at": "2026-06-01T09:00:00Z",
                            "identities": [{"kind": "anonymous_id", "value": f"anon-{i}"}],
                            "properties": {"sku": f"SKU-{i}"}}
    base.update(over)
    return base


ADMIN = {"Authorization": "Bearer adm-token"}


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    hub.settings.event_sources["site"] = EventSource(keys=[SecretStr("site-key")])
    hub.settings.admin_token = SecretStr("adm-token")
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub",
                                 headers={"Authorization": "Bearer site-key"}) as c:
        yield c


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"bus": "ok", "postgres": "ok", "redis": "ok"}


async def test_batch_with_a_bad_record_accepts_the_rest_and_names_the_field(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    consumer = hub.bus.consumer([hub.topics.events, hub.topics.dlq], group="http-test")
    await consumer.start()
    batch = [event(1), event(2, properties={"name": "no sku"}), event(3)]
    resp = await client.post("/v1/events", json={"batch": batch})
    assert resp.status_code == 207
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    bad = body["results"][1]
    assert bad["status"] == "rejected" and bad["field"] == "$.properties" and "sku" in bad["error"]
    got: list[Any] = []
    for _ in range(20):
        got += await consumer.getmany(timeout_ms=100)
        if len(got) >= 3:
            break
    await consumer.stop()
    assert sorted(r.topic for r in got) == sorted([hub.topics.events] * 2 + [hub.topics.dlq])


async def test_single_event_and_garbage(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/events", json=event(9))).status_code == 200
    assert (await client.post("/v1/events", content=b"{nope")).status_code == 400
    assert (await client.post("/v1/events", json=[event(1, type="no.such_type")])).status_code == 400


async def test_metrics_are_exposed(hub: Hub, client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json=event(5))
    text = (await client.get("/metrics")).text
    assert 'cdp_events_ingested_total{source="site",type="product.viewed"} 1.0' in text
    assert "cdp_http_requests_total" in text


async def test_admin_routes_need_the_token(hub: Hub) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hub") as c:
        closed = await c.get("/v1/dlq", headers={"Authorization": "Bearer anything"})
        assert closed.status_code == 401 and "admin_token" in closed.json()["message"]  # no token: closed
    hub.settings.admin_token = SecretStr("s3cret")
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
        assert (await c.get("/v1/dlq")).status_code == 401
        assert (await c.get("/v1/dlq", headers={"Authorization": "Bearer wrong"})).status_code == 401
        ok = await c.get("/v1/dlq", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json() == {"items": []}
        assert (await c.get("/v1/dlq", headers={"Authorization": "bearer s3cret"})).status_code == 200
        assert (await c.get("/healthz")).status_code == 200  # not an admin route


async def test_dlq_browse_and_replay_with_a_fix(hub: Hub, client: httpx.AsyncClient) -> None:
    from cdp_hub.pipeline.runner import StageRunner

    resp = await client.post("/v1/events", json=[event(7, properties={"name": "no sku"})])
    dlq_id = resp.json()["results"][0]["dlq_id"]
    runner = StageRunner(build_stage(hub, "dlq"), hub.bus, poll_timeout_ms=50)
    task = asyncio.create_task(runner.run())
    for _ in range(100):
        items = (await client.get("/v1/dlq", headers=ADMIN)).json()["items"]
        if items:
            break
        await asyncio.sleep(0.05)
    assert items[0]["dlq_id"] == dlq_id and items[0]["stage"] == "http"

    consumer = hub.bus.consumer([hub.topics.events], group="replay-check")
    await consumer.start()
    fixed = event(7, properties={"sku": "SKU-7"})
    res = (await client.post("/v1/dlq/replay", json={"ids": [dlq_id], "fixes": {dlq_id: fixed}},
                             headers=ADMIN)).json()
    assert res["replayed"] == 1
    records = await consumer.getmany(timeout_ms=500)
    assert [r.value for r in records if b"SKU-7" in r.value]
    await consumer.stop()
    assert (await client.get("/v1/dlq", headers=ADMIN)).json()["items"] == []  # replayed ones are hidden
    runner.stop()
    await task


def test_settle_heap_freezes_the_start_up_heap_and_sets_the_first_threshold() -> None:
    import gc

    from cdp_hub.config import Settings
    from cdp_hub.daemon import settle_heap

    before = gc.get_threshold()
    try:
        settle_heap(Settings(gc_gen0_threshold=12_345))
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
        gc.set_threshold(*before)
        settle_heap(Settings(gc_gen0_threshold=0))  # 0: Python's own threshold is kept
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
