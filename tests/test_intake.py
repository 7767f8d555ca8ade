"""Bounded HTTP intake: past ``edge.max_in_flight`` requests (or ``edge.max_backlog`` unprocessed events on the
in-process bus) the edge answers 503 with Retry-After at once instead of queueing; measured here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.config import EdgeSettings, EventSource
from cdp_hub.daemon import create_app
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import Pipeline
from tests.test_daemon import event


def _client(hub: Hub, **edge: Any) -> httpx.AsyncClient:
    hub.settings.event_sources["site"] = EventSource(keys=[SecretStr("site-key")])
    hub.settings.edge = EdgeSettings(**edge)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hub",
                             headers={"Authorization": "Bearer site-key"})


async def test_past_the_in_flight_limit_requests_are_refused_at_once(hub: Hub) -> None:
    release = asyncio.Event()
    publish_many = hub.bus.publish_many

    async def slow_bus(messages: Sequence[OutgoingMessage]) -> None:  # a bus that takes its time
        await release.wait()
        await publish_many(messages)

    hub.bus.publish_many = slow_bus  # type: ignore[method-assign]
    gauge = hub.metrics.http_in_flight
    async with _client(hub, max_in_flight=4, overload_retry_after=3) as client:
        held = [asyncio.create_task(client.post("/v1/events", json=event(i))) for i in range(4)]
        for _ in range(200):  # until the four are inside the handler, waiting for the bus
            if gauge._value.get() == 4:
                break
            await asyncio.sleep(0.01)
        assert gauge._value.get() == 4

        started = time.perf_counter()
        refused = await asyncio.gather(*(client.post("/v1/events", json=event(10 + i)) for i in range(20)))
        refusal_seconds = time.perf_counter() - started
        assert {r.status_code for r in refused} == {503}
        assert {r.headers["Retry-After"] for r in refused} == {"3"}
        body = refused[0].json()
        assert body["code"] == "overloaded" and "edge.max_in_flight = 4" in body["message"]
        # The refusals do not wait for the work in flight: 20 of them take well under the time one
        # request waits here (it waits until released).
        assert refusal_seconds < 1.0, refusal_seconds
        assert all(not task.done() for task in held)
        # Other routes are not intake: health and metrics still answer while intake is full.
        assert (await client.get("/healthz")).status_code == 200

        release.set()
        answers = await asyncio.gather(*held)
        assert [a.status_code for a in answers] == [200] * 4
        assert gauge._value.get() == 0
        assert (await client.post("/v1/events", json=event(99))).status_code == 200
    shed = hub.metrics.http_shed.labels("/v1/events", "overloaded")._value.get()
    assert shed == 20
    print(f"\n20 refusals in {refusal_seconds * 1000:.1f} ms with 4 requests in flight")


async def test_on_the_in_process_bus_a_backlog_past_the_limit_is_refused(hub: Hub) -> None:
    async with _client(hub, max_backlog=5) as client:
        for i in range(5):  # no stage runs: the accepted events wait on the bus
            assert (await client.post("/v1/events", json=event(i))).status_code == 200
        assert hub.bus.backlog(hub.topics.events) == 5
        refused = await client.post("/v1/events", json=event(5))
        assert refused.status_code == 503 and refused.json()["code"] == "backlogged"
        assert refused.headers["Retry-After"] == "1"

        # Once the stages have processed them, intake opens again.
        pipeline = Pipeline(hub, ["resolver", "triggers", "delivery", "dlq"])
        running = asyncio.create_task(pipeline.run())
        try:
            for _ in range(300):
                if (hub.bus.backlog(hub.topics.events) or 0) < 5:
                    break
                await asyncio.sleep(0.05)
            assert (await client.post("/v1/events", json=event(6))).status_code == 200
        finally:
            pipeline.stop()
            await running
