"""The edge's messageId dedupe window in PostgreSQL (``edge.dedupe_store = "postgres"``), on the real server: the
repository's answers match HotState's, concurrent claims of one id give one winner, expired rows are taken over
and purged by the job, and the edge keeps deduplicating when Redis is flushed."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from cdp_hub.config import ConnectorInstance, EdgeSettings
from cdp_hub.daemon import create_app
from cdp_hub.hub import Hub
from cdp_hub.jobs.kinds import run_job_kind
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.embedded import settle_nothing
from cdp_hub.store import Store
from cdp_hub.store.sightings import SightingRepository

from .conftest import _drop_keys, _test_hotstate, hub_settings

KEY = "wk-pg-dedupe"


async def test_first_sightings_within_a_window(store: Store) -> None:
    window = SightingRepository(store)
    assert await window.first_sightings("web", ["m1", "m2", "m1"], 60) == [True, True, False]
    assert await window.first_sightings("web", ["m2", "m3"], 60) == [False, True]
    assert await window.first_sightings("app", ["m1"], 60) == [True]  # another source: another message
    assert await window.first_sightings("web", [], 60) == []
    await window.forget_sightings("web", ["m3"])  # its publication failed: the retry must get through
    assert await window.first_sightings("web", ["m3"], 60) == [True]
    assert await window.count("web") == 3


async def test_an_expired_sighting_is_taken_over_and_purged(store: Store) -> None:
    window = SightingRepository(store)
    assert await window.first_sightings("web", ["old", "older"], 1) == [True, True]
    assert await window.first_sightings("web", ["live"], 3600) == [True]
    await asyncio.sleep(1.2)
    assert await window.first_sightings("web", ["old"], 60) == [True]  # outside the window: a new message
    assert await window.first_sightings("web", ["old"], 60) == [False]
    assert await window.purge_expired(chunk=1) == 1  # "older"; chunks of one still delete them all
    assert await window.count("web") == 2
    assert await window.first_sightings("web", ["live", "old"], 60) == [False, False]


async def test_claims_purge_a_chunk_now_and_then_without_the_job(store: Store) -> None:
    window = SightingRepository(store, purge_every=0.5, purge_chunk=2)
    assert await window.first_sightings("web", ["e1", "e2", "e3"], 1) == [True, True, True]
    await asyncio.sleep(1.2)
    await window.first_sightings("web", ["new"], 60)  # due: one chunk of two expired rows goes
    assert await SightingRepository(store).purge_expired() == 1  # the third was left for the next time


async def test_concurrent_claims_of_one_id_have_one_winner(store: Store) -> None:
    window = SightingRepository(store)
    ids = [f"c-{i}" for i in range(200)]
    answers = await asyncio.gather(*(window.first_sightings("web", ids, 60) for _ in range(4)))
    for column in zip(*answers, strict=True):
        assert sum(column) == 1


@pytest.fixture
async def pg_hub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url,
                            edge=EdgeSettings(dedupe_store="postgres"),
                            connectors={"web": ConnectorInstance(type="tracking", config={"write_keys": [KEY]})})
    h = Hub(settings, metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await h.start()
    yield h
    await _drop_keys(h.hotstate)
    await h.stop()


def _batch(*ids: str, timestamp: bool = True) -> dict[str, Any]:
    return {"batch": [{"type": "track", "event": "Application Opened", "userId": "u-1", "messageId": i,
                       **({"timestamp": "2026-11-20T10:00:00Z"} if timestamp else {})} for i in ids]}


async def test_the_edge_dedupes_in_postgres_across_a_redis_flush(pg_hub: Hub) -> None:
    assert isinstance(pg_hub.sightings, SightingRepository)
    headers = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
    transport = httpx.ASGITransport(app=create_app(pg_hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test", headers=headers) as client:
        first = (await client.post("/v1/batch", json=_batch("p-1", "p-2", "p-1"))).json()
        assert [r["status"] for r in first["results"]] == ["accepted", "accepted", "duplicate"]
        await _drop_keys(pg_hub.hotstate)  # Redis flushed: the window is not in it
        again = (await client.post("/v1/batch", json=_batch("p-1", "p-2", timestamp=False))).json()
        assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    stored = [orjson.loads(r.value)["source_record_id"] for r in await pg_hub.bus.read_all(pg_hub.topics.events)]
    assert sorted(stored) == ["p-1", "p-2"]
    assert [k async for k in pg_hub.hotstate.redis.scan_iter(match=pg_hub.hotstate.prefix + "seen:*")] == []
    assert await SightingRepository(pg_hub.store).count("web") == 2


async def test_the_purge_job_deletes_expired_sightings(pg_hub: Hub) -> None:
    window = SightingRepository(pg_hub.store)
    await window.first_sightings("web", ["gone-1", "gone-2"], 1)
    await window.first_sightings("web", ["kept"], 3600)
    await asyncio.sleep(1.2)
    assert await run_job_kind(pg_hub, "edge_sightings_purge", {}, settle_nothing) == {"deleted": 2}
    assert await window.first_sightings("web", ["kept", "gone-1"], 60) == [False, True]


async def test_the_window_down_is_no_5xx_the_batch_goes_on_without_it(pg_hub: Hub,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The window only spares the pipeline a repeat the events table drops anyway: with its store down the
    # edge accepts without it (counted, one outage on the board) rather than refuse ingestion.
    async def down(scope: str, items: Any, ttl: int) -> list[bool]:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    monkeypatch.setattr(pg_hub.sightings, "first_sightings", down)
    headers = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
    transport = httpx.ASGITransport(app=create_app(pg_hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test", headers=headers) as client:
        response = await client.post("/v1/batch", json=_batch("down-1"))
    assert response.status_code == 200, response.text
    assert len(await pg_hub.bus.read_all(pg_hub.topics.events)) >= 1
    skipped = pg_hub.metrics.registry.get_sample_value("cdp_http_dedupe_skipped_total", {"dependency": "postgres"})
    assert skipped is not None and skipped >= 1
