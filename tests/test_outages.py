"""Dependency outages in the small: which dependency an error names, one ERROR line per outage, a stage that
pauses and resumes without dead-lettering, the edge's 503 + Retry-After, /readyz, the circuit breaker, the
send timeout. (tests/test_faults.py restarts the real services.)"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import httpx
import pytest
import redis.exceptions
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from cdp_hub.bus.base import OutgoingMessage, Record, Topics
from cdp_hub.bus.kafka import kafka_error
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.channel.base import Channel, OutboundMessage, Receipt
from cdp_hub.config import ConnectorInstance, EventSource
from cdp_hub.daemon import create_app
from cdp_hub.delivery.circuit import CircuitBreaker, CircuitOpen
from cdp_hub.delivery.stage import ChannelsUnavailable
from cdp_hub.errors import RetriableError
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.outages import Outages, unavailable_dependency
from cdp_hub.pipeline.build import build_stage
from cdp_hub.pipeline.runner import StageRunner
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput
from cdp_hub.plugins import PluginInfo
from tests.conftest import _drop_keys, _test_hotstate, hub_settings
from tests.test_delivery_stage import RecordingChannel, intent, make_profile, record, row

# -- which dependency -------------------------------------------------------------------------------------


def _raised_in(module: str, exc: BaseException) -> BaseException:
    """``exc`` raised from a function whose module is ``module`` (as a client library would)."""
    scope: dict[str, Any] = {"__name__": module}
    exec("def boom(exc):\n    raise exc\n", scope)
    try:
        scope["boom"](exc)
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


def test_unavailable_dependency_names_the_service() -> None:
    assert unavailable_dependency(kafka_error(KafkaConnectionError("closed"), "fetching")) == "kafka"
    assert unavailable_dependency(_raised_in("asyncpg.connect_utils", ConnectionRefusedError(111, "refused"))) \
        == "postgres"
    assert unavailable_dependency(_raised_in("redis.asyncio.connection", ConnectionResetError())) == "redis"
    assert unavailable_dependency(asyncpg.InvalidAuthorizationSpecificationError("pg_hba.conf rejects")) \
        == "postgres"
    assert unavailable_dependency(asyncpg.UniqueViolationError("duplicate key")) is None
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except OSError as inner:
            raise RuntimeError("wrapped") from _raised_in("cdp_hub.store.db", inner)
    except RuntimeError as outer:
        assert unavailable_dependency(outer) == "postgres"  # found through the cause
    # A bug is not an outage, nor is a bad statement, nor a bare network error of unknown origin.
    assert unavailable_dependency(KeyError("x")) is None
    assert unavailable_dependency(ConnectionRefusedError(111, "refused")) is None
    assert unavailable_dependency(RetriableError("429")) is None
    assert unavailable_dependency(RetriableError("down", dependency="channel:sms")) == "channel:sms"


def test_one_error_line_per_outage_whoever_reports_it(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    board = Outages(metrics)
    with caplog.at_level(logging.INFO, logger="cdp_hub.outages"):
        assert board.down("stage:resolver", "kafka", RetriableError("x")) is True
        assert board.down("stage:triggers", "kafka", RetriableError("x")) is False
        assert board.down("http", "kafka", RetriableError("x")) is False
        board.up("stage:resolver")
        board.up("http")
        assert board.open() and board.paused("stage:") == {"stage:triggers": "kafka"}
        board.up("stage:triggers")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    backs = [r for r in caplog.records if r.levelno == logging.WARNING and "is back" in r.getMessage()]
    assert len(errors) == 1 and "kafka unavailable" in errors[0].getMessage()
    assert len(backs) == 1 and board.open() == {}
    assert metrics.outages.labels("kafka")._value.get() == 1
    assert metrics.outage.labels("kafka")._value.get() == 0

    # Down again right after: the same outage (a stage looked recovered between two failures), no new line.
    with caplog.at_level(logging.INFO, logger="cdp_hub.outages"):
        assert board.down("stage:triggers", "kafka", RetriableError("x")) is False
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert metrics.outages.labels("kafka")._value.get() == 1 and board.open()


# -- a stage paused by an outage --------------------------------------------------------------------------


class FlakyDatabase(Stage[bytes]):
    """Fails its first ``down`` batches the way asyncpg does when PostgreSQL refuses connections."""

    name: ClassVar[str] = "flaky"

    def __init__(self, ctx: StageContext, down: int) -> None:
        super().__init__(ctx)
        self.down = down
        self.seen: list[bytes] = []

    @property
    def topics(self) -> Sequence[str]:
        return ["in"]

    def decode(self, record: Record) -> bytes:
        return record.value

    async def process(self, batch: Sequence[Decoded[bytes]]) -> StageOutput:
        if self.down:
            self.down -= 1
            raise _raised_in("asyncpg.connect_utils", ConnectionRefusedError(111, "Connect call failed"))
        self.seen.extend(d.value for d in batch)
        return StageOutput()


async def test_a_stage_pauses_on_an_outage_and_resumes_with_nothing_dead(
        caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryBus()
    await bus.start()
    metrics = Metrics()
    board = Outages(metrics)
    ctx = StageContext(topics=Topics(), metrics=metrics, clock=lambda: datetime.now(UTC),
                       publish=bus.publish_many, outages=board)
    stage = FlakyDatabase(ctx, down=4)
    await bus.publish_many([OutgoingMessage("in", f"r{i}".encode()) for i in range(5)])
    runner = StageRunner(stage, bus, poll_timeout_ms=20)
    paused: list[dict[str, str]] = []
    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(runner.run())
        for _ in range(400):
            if board.paused():
                paused.append(board.paused())
            if len(stage.seen) == 5:
                break
            await asyncio.sleep(0.01)
        runner.stop()
        await task
    await bus.stop()
    assert sorted(stage.seen) == [f"r{i}".encode() for i in range(5)]  # once each, none dead-lettered
    assert {"stage:flaky": "postgres"} in paused
    assert board.paused() == {} and board.open() == {}
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("postgres unavailable"), errors
    assert metrics.stage_errors.labels("flaky")._value.get() == 4
    assert metrics.dlq.labels("flaky", "processing_error")._value.get() == 0


async def test_a_stop_during_an_outage_leaves_the_batch_uncommitted() -> None:
    bus = MemoryBus()
    await bus.start()
    metrics = Metrics()
    ctx = StageContext(topics=Topics(), metrics=metrics, clock=lambda: datetime.now(UTC),
                       publish=bus.publish_many)
    stage = FlakyDatabase(ctx, down=10_000)
    await bus.publish_many([OutgoingMessage("in", b"r")])
    runner = StageRunner(stage, bus, poll_timeout_ms=20)
    task = asyncio.create_task(runner.run())
    for _ in range(500):
        if metrics.stage_errors.labels("flaky")._value.get():
            break
        await asyncio.sleep(0.01)
    runner.stop()
    await asyncio.wait_for(task, 5)  # returns at once, no exception: the backoff wait ends on stop
    again = FlakyDatabase(ctx, down=0)
    runner = StageRunner(again, bus, poll_timeout_ms=20)
    task = asyncio.create_task(runner.run())
    for _ in range(500):
        if again.seen:
            break
        await asyncio.sleep(0.01)
    runner.stop()
    await task
    await bus.stop()
    assert again.seen == [b"r"]  # the next owner replays it


# -- the edge ---------------------------------------------------------------------------------------------


class BrokenBus(MemoryBus):
    """A bus whose broker is gone: publishing fails like aiokafka's, or hangs."""

    mode = "fail"

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail":
            raise kafka_error(KafkaConnectionError("Connection at 127.0.0.1:9092 closed"), "publishing")
        await super().publish_many(messages)


@pytest.fixture
async def edge(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[tuple[Hub, httpx.AsyncClient]]:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, edge_publish_timeout=0.3,
                            edge_retry_after=7,
                            event_sources={"shop": EventSource(keys=[SecretStr(SHOP_KEY)])},
                            connectors={"web": ConnectorInstance(type="tracking",
                                                                 config={"write_keys": [WEB_KEY]})})
    # A Redis prefix of the test's own: the edge remembers message ids for days, and under the shared default
    # prefix a previous run's (or another session's) "m-1" made this run's request a duplicate.
    hub = Hub(settings, bus=BrokenBus(), metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await hub.start()
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        yield hub, client
    await _drop_keys(hub.hotstate)
    await hub.stop()


SHOP_KEY = "shop-events-key"
WEB_KEY = "web-write-key"


def _credentials(path: str) -> dict[str, str]:
    """The shop's event-source key for /v1/events, the web write key (HTTP Basic) for the tracking API."""
    if path == "/v1/events":
        return {"Authorization": f"Bearer {SHOP_KEY}"}
    return {"Authorization": "Basic " + base64.b64encode(f"{WEB_KEY}:".encode()).decode()}


EVENT = {"type": "product.viewed", "source": "shop", "source_record_id": "e-1",
         "occurred_at": "2026-11-12T11:03:05Z", "identities": [{"kind": "email", "value": "a@example.ru"}],
         "properties": {"sku": "x"}}
TRACK = {"type": "track", "messageId": "m-1", "userId": "7100000042", "event": "Product Viewed",
         "timestamp": "2026-11-12T11:03:05Z", "properties": {"sku": "x"}}


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_the_edge_answers_503_with_retry_after_until_the_bus_takes_events(
        edge: tuple[Hub, httpx.AsyncClient], mode: str, caplog: pytest.LogCaptureFixture) -> None:
    hub, client = edge
    bus = hub.bus
    assert isinstance(bus, BrokenBus)
    bus.mode = mode
    with caplog.at_level(logging.ERROR):
        for path, body in (("/v1/events", EVENT), ("/v1/track", TRACK), ("/v1/events", EVENT)):
            r = await client.post(path, json=body, headers=_credentials(path))
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "7"
            assert r.json()["retry_after"] == 7
    assert [r.getMessage()[:17] for r in caplog.records] == ["kafka unavailable"]  # once, not per request
    assert hub.metrics.http_unavailable.labels("/v1/events", "kafka")._value.get() == 2
    assert await bus.end_offsets(hub.topics.events) in ({}, {0: 0, 1: 0, 2: 0, 3: 0})

    bus.mode = "ok"
    r = await client.post("/v1/events", json=EVENT, headers=_credentials("/v1/events"))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert hub.outages.open() == {}


async def test_tracking_goes_on_without_its_dedupe_window_while_redis_is_down(
        edge: tuple[Hub, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The window only spares the pipeline a repeat the events table drops by event id: without Redis the
    edge accepts (never a 5xx for a durable event), reports the outage once and counts what it let through."""
    hub, client = edge
    bus = hub.bus
    assert isinstance(bus, BrokenBus)
    bus.mode = "ok"
    window = hub.hotstate.first_sightings

    async def redis_gone(*args: object, **kwargs: object) -> list[bool]:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(hub.hotstate, "first_sightings", redis_gone)
    with caplog.at_level(logging.ERROR):
        for _ in range(2):
            r = await client.post("/v1/track", json=TRACK, headers=_credentials("/v1/track"))
            assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert [r.getMessage()[:17] for r in caplog.records] == ["redis unavailable"]
    assert hub.outages.open().keys() == {"redis"}
    assert hub.metrics.http_dedupe_skipped.labels("redis")._value.get() == 2
    published = sum((await bus.end_offsets(hub.topics.events)).values())
    assert published == 2  # the same event id twice: stored once downstream

    monkeypatch.setattr(hub.hotstate, "first_sightings", window)
    r = await client.post("/v1/track", json=TRACK, headers=_credentials("/v1/track"))
    assert r.status_code == 200 and r.json()["accepted"] == 1  # the window starts again
    assert hub.outages.open() == {}
    r = await client.post("/v1/track", json=TRACK, headers=_credentials("/v1/track"))
    assert r.json()["duplicates"] == 1
    assert sum((await bus.end_offsets(hub.topics.events)).values()) == published + 1


async def test_readyz_fails_while_a_stage_is_paused(edge: tuple[Hub, httpx.AsyncClient]) -> None:
    hub, client = edge
    assert (await client.get("/readyz")).status_code == 200
    hub.outages.down("stage:resolver", "postgres", RetriableError("refused"))
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["stages"] == "paused: resolver waits for postgres"
    hub.outages.up("stage:resolver")
    assert (await client.get("/readyz")).status_code == 200
    hub.outages.down("stage:delivery", "channel:sms", RetriableError("provider down"))
    assert (await client.get("/readyz")).status_code == 200  # a provider outage does not stop ingestion
    hub.outages.up("stage:delivery")


# -- delivery: the circuit breaker and the send timeout ---------------------------------------------------


def test_the_circuit_opens_fails_fast_then_lets_one_trial_through() -> None:
    now = [0.0]
    changes: list[bool] = []
    breaker = CircuitBreaker("sms", failures=3, reset=10, clock=lambda: now[0], on_change=changes.append)
    for _ in range(2):
        breaker.before_send()
        breaker.failed(RetriableError("500"))
    assert breaker.state == "closed"
    breaker.before_send()
    breaker.failed(RetriableError("500"))
    assert breaker.state == "open" and changes == [True]
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_send()
    assert refused.value.retry_after == 10
    now[0] = 10.0
    breaker.before_send()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.before_send()  # only one at a time
    breaker.failed(RetriableError("500"))  # the trial failed: open for another period
    now[0] = 15.0
    with pytest.raises(CircuitOpen):
        breaker.before_send()
    now[0] = 20.0
    breaker.before_send()
    breaker.succeeded()
    assert breaker.state == "closed" and changes == [True, False]
    breaker.before_send()


class HangingChannel(Channel):
    """A provider that never answers."""

    name: ClassVar[str] = "hang_sms"
    kind = "sms"
    address_kind = "phone"
    calls: ClassVar[int] = 0

    async def send(self, message: OutboundMessage) -> Receipt:
        type(self).calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_a_hanging_provider_times_out_opens_the_circuit_and_the_batch_waits(
        tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, delivery_send_timeout=0.2,
                            delivery_retry_attempts=2, delivery_retry_backoff=0.01, delivery_retry_max_wait=0.01,
                            delivery_circuit_failures=2, delivery_circuit_reset=60)
    hub = Hub(settings, bus=MemoryBus(), metrics=Metrics())
    hub.registry.channels[HangingChannel.name] = PluginInfo(HangingChannel.name, HangingChannel, "tests", None, None)
    HangingChannel.calls = 0
    await hub.start()
    try:
        stage = build_stage(hub, "delivery")
        profiles = [await make_profile(hub, identities=[("phone", f"+7916123456{i}")]) for i in range(4)]
        intents = [intent(p, channel="hang_sms") for p in profiles]
        started = asyncio.get_running_loop().time()
        with pytest.raises(ChannelsUnavailable) as caught:
            await stage.handle([record(hub, i) for i in intents])
        took = asyncio.get_running_loop().time() - started
        assert took < 2.0  # timeouts and an open circuit, not an hour per message
        assert caught.value.dependency == "channel:hang_sms"
        assert HangingChannel.calls <= 4 + 2  # the circuit stopped the retries once it opened
        assert hub.metrics.channel_circuit.labels("hang_sms")._value.get() == 1
        for i in intents:
            assert (await row(hub, i.message_id))["status"] == "deferred"
        with pytest.raises(ChannelsUnavailable, match="hang_sms"):  # open: fails at once, sends nothing
            calls = HangingChannel.calls
            await stage.handle([record(hub, intents[0])])
        assert HangingChannel.calls == calls
    finally:
        hub.registry.channels.pop(HangingChannel.name, None)
        await hub.stop()


async def test_sent_before_postgres_went_away_is_recorded_on_the_retry_not_sent_again(
        tmp_path: Path, pg_dsn: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url)
    hub = Hub(settings, bus=MemoryBus(), metrics=Metrics())
    hub.registry.channels[RecordingChannel.name] = PluginInfo(RecordingChannel.name, RecordingChannel, "tests",
                                                               None, None)
    RecordingChannel.sent = []
    await hub.start()
    try:
        stage = build_stage(hub, "delivery")
        pid = await make_profile(hub, identities=[("phone", "+79161234567")])
        it = intent(pid, channel="rec_sms")
        real_record = stage.sendlog.record  # type: ignore[attr-defined]
        failures = [_raised_in("asyncpg.connect_utils", ConnectionRefusedError(111, "refused"))]

        async def record_once_down(outcomes: Any) -> None:
            if failures:
                raise failures.pop()
            await real_record(outcomes)

        monkeypatch.setattr(stage.sendlog, "record", record_once_down)  # type: ignore[attr-defined]
        with pytest.raises(ConnectionRefusedError):
            await stage.handle([record(hub, it)])
        assert len(RecordingChannel.sent) == 1 and (await row(hub, it.message_id))["status"] == "sending"
        out = await stage.handle([record(hub, it)])  # the runner's retry, PostgreSQL back
        assert len(RecordingChannel.sent) == 1  # recorded, not sent again
        assert (await row(hub, it.message_id))["status"] == "sent"
        assert [m.key for m in out.messages]  # its receipt
    finally:
        hub.registry.channels.pop(RecordingChannel.name, None)
        await hub.stop()
