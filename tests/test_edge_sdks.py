"""The official Segment and RudderStack Python libraries, unchanged and with their default settings (RudderStack
gzips its bodies), against the hub's HTTP edge served by uvicorn on a loopback port; then the resolver, running
as a pipeline stage on the same bus. Both on the embedded in-process bus and on the real Kafka broker.

Every message arrives once (once on the bus, one row in the store), identify traits reach the profile whether
the SDK puts them in ``traits`` or in ``context.traits``, e-mails and phones are normalized, nothing is
dead-lettered; and a batch sent twice, with and without timestamps, is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from cdp_hub.config import ConnectorInstance
from cdp_hub.daemon import create_app
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline, build_stage
from cdp_hub.resolver.profiles import find_profile

USERS = 25
SEGMENT_KEY, RUDDER_KEY = "wk-segment-web", "wk-rudder-app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["memory", "kafka"])
def edge_hub(request: pytest.FixtureRequest) -> Hub:
    """The hub on the in-process bus (conftest's ``hub``) or on the real Kafka broker (``kafka_hub``)."""
    hub: Hub = request.getfixturevalue("hub" if request.param == "memory" else "kafka_hub")
    return hub


@pytest.fixture
async def base_url(edge_hub: Hub) -> AsyncIterator[str]:
    hub = edge_hub
    hub.settings.connectors["web"] = ConnectorInstance(type="tracking", config={"write_keys": [SEGMENT_KEY]})
    hub.settings.connectors["app"] = ConnectorInstance(type="tracking", config={"write_keys": [RUDDER_KEY]})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(hub), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        assert not task.done(), "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def phone(i: int) -> tuple[str, str]:
    """A Russian mobile number as people type it, and as the hub stores it."""
    return f"8 (916) 555-{i // 100:02d}-{i % 100:02d}", f"+7916555{i // 100:02d}{i % 100:02d}"


OFFSET = {"seg": 0, "rud": 5000}  # each library's users have numbers of their own


def send_all(client: Any, prefix: str, errors: list[str]) -> None:
    """identify, track, page, screen, group and alias for every user, through one SDK client (in a thread)."""
    for i in range(USERS):
        user = f"{prefix}-{i}"
        client.identify(user, {"email": f"  {prefix.upper()}.User{i}@Example.RU ", "phone": phone(OFFSET[prefix] + i)[0],
                               "firstName": f"Имя{i}", "plan": "gold"})
        client.track(user, "Order Completed", {"order_id": f"{user}-o1", "total": 0 if i == 0 else 99.5,
                                               "currency": "RUB",
                                               "products": [{"product_id": "MLK", "quantity": 0 if i == 0 else 2,
                                                             "price": 89.9}]})
        client.page(user, "Catalog", "Milk", {"url": "https://shop.example.ru/milk"})
        client.screen(user, "App", "Cart")
        client.group(user, f"household-{i % 5}", {"name": f"Семья {i % 5}"})
        client.alias(f"anon-{user}", user)
    client.flush()
    client.join()
    errors.extend(getattr(client, "_cdp_errors", []))


async def stored_by_the_resolver(hub: Hub, expected: int) -> dict[tuple[str, str], int]:
    """Run the resolver stage on the bus (a consumer group, as in production) until ``expected`` events of the
    tracking sources are in the store; their rows per (source, messageId)."""
    pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver")])
    task = asyncio.create_task(pipeline.run())
    query = ("SELECT source, source_record_id, count(*) AS n FROM events WHERE source IN ('web', 'app') "
             "GROUP BY source, source_record_id")
    try:
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            rows = await hub.store.fetch(query)
            if sum(r["n"] for r in rows) >= expected or asyncio.get_running_loop().time() > deadline:
                break
            assert not task.done(), task.exception()
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # anything beyond the expected (a duplicate) would arrive now
        rows = await hub.store.fetch(query)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 60)
    return {(r["source"], r["source_record_id"]): r["n"] for r in rows}


def make(factory: Callable[..., Any], key: str, url: str) -> Any:
    errors: list[str] = []
    client = factory(write_key=key, host=url, on_error=lambda exc, batch: errors.append(f"{exc}"))
    client._cdp_errors = errors
    return client


async def test_segment_and_rudderstack_sdks_unchanged(edge_hub: Hub, base_url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    hub = edge_hub
    caplog.set_level(logging.WARNING)
    segment = make(SegmentClient, SEGMENT_KEY, base_url)
    rudder = make(RudderClient, RUDDER_KEY, base_url)
    assert rudder.gzip is True and segment.gzip is False  # their defaults, untouched
    errors: list[str] = []
    await asyncio.gather(asyncio.to_thread(send_all, segment, "seg", errors),
                         asyncio.to_thread(send_all, rudder, "rud", errors))
    assert errors == []

    records = await hub.bus.read_all(hub.topics.events)
    events = [orjson.loads(r.value) for r in records]
    assert await hub.bus.read_all(hub.topics.dlq) == []
    assert len(events) == 2 * USERS * 6  # every message once on the bus
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["source"] for e in events} == {"web", "app"}

    rows = await stored_by_the_resolver(hub, len(events))
    assert len(rows) == len(events) and set(rows.values()) == {1}  # and once in the store
    assert await hub.bus.read_all(hub.topics.dlq) == []
    for prefix in ("seg", "rud"):
        for i in range(USERS):
            view = await find_profile(hub.store, "email", f"{prefix}.user{i}@example.ru", events_limit=100)
            assert view is not None, (prefix, i)
            assert view.golden["first_name"] == f"Имя{i}" and view.golden["plan"] == "gold"
            assert view.golden["group_id"] == f"household-{i % 5}"
            kinds = {(ident.kind, ident.value) for ident in view.identities}
            assert ("phone", phone(OFFSET[prefix] + i)[1]) in kinds and ("anonymous_id", f"anon-{prefix}-{i}") in kinds
            assert len(view.recent_events) == 6, (prefix, i, [e.type for e in view.recent_events])
    zero = next(e for e in events if e["type"] == "order.placed" and e["properties"]["order_id"] == "seg-0-o1")
    assert zero["properties"]["total"] == "0" and zero["properties"]["items"][0]["quantity"] == "0"


async def test_the_same_batch_twice_with_and_without_timestamps_is_stored_once(edge_hub: Hub, base_url: str) -> None:
    hub = edge_hub

    def batch(stamped: bool) -> dict[str, Any]:
        messages = [{"type": "identify", "userId": "twice-1", "messageId": "tw-1",
                     "traits": {"email": "twice@example.ru"}},
                    {"type": "track", "userId": "twice-1", "event": "Application Opened", "messageId": "tw-2"},
                    {"type": "page", "userId": "twice-1", "name": "Home", "messageId": "tw-3"}]
        if stamped:
            for m in messages:
                m["timestamp"] = "2026-11-20T10:00:00Z"
        return {"batch": messages}

    async with httpx.AsyncClient(base_url=base_url, auth=(SEGMENT_KEY, "")) as client:
        for stamped in (False, True, False, True):  # the hub stamps the time, then the client does
            response = await client.post("/v1/batch", json=batch(stamped))
            assert response.status_code == 200, response.text
    records = await hub.bus.read_all(hub.topics.events)
    assert len(records) == 3
    assert await stored_by_the_resolver(hub, 3) == {("web", "tw-1"): 1, ("web", "tw-2"): 1, ("web", "tw-3"): 1}
    await build_stage(hub, "resolver").handle(records)  # a redelivered batch adds nothing
    view = await find_profile(hub.store, "email", "twice@example.ru", events_limit=100)
    assert view is not None and len(view.recent_events) == 3
