"""The REST SDK against misbehaving upstream APIs (respx): pages, 429/5xx, expiring tokens, bad records,
durable checkpoints in PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import respx

from cdp_hub.connector.pagination import CursorPaginator, PageNumberPaginator
from cdp_hub.connector.resilience import Action, RateLimiter, RetryPolicy, action_for, retry_after_seconds
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream
from cdp_hub.connector.state import PgStateStore
from cdp_hub.connector.sync import sync, sync_stream
from cdp_hub.errors import ConfigurationError, FatalError, RetriableError
from cdp_hub.hub import Hub
from cdp_hub.testing import MockApi
from connectors.crm import CrmConnector
from connectors.loyalty import LoyaltyConnector


def txn(n: int, **extra: Any) -> dict[str, Any]:
    return {"transaction_id": f"T{n:04d}", "card_number": "2775000000000043", "type": "accrual", "points": n,
            "created_at": (datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=n)).isoformat(), **extra}


def contact(n: int) -> dict[str, Any]:
    return {"id": str(n), "updatedAt": f"2026-11-01T{n:02d}:00:00Z", "archived": False,
            "properties": {"email": f"c{n}@example.ru"}}


class Sleeps:
    """Records the waits a retry policy asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def loyalty(hub: Hub, **config: Any) -> tuple[LoyaltyConnector, Sleeps]:
    connector = LoyaltyConnector({"base_url": "https://loyalty.test", "page_size": 2,
                                  "auth": {"type": "api_key", "key": "k-123"}, **config},
                                 instance="loyalty", http=hub.http)
    sleeps = Sleeps()
    connector.retry_policy.sleep = sleeps
    return connector, sleeps


async def event_ids(hub: Hub) -> list[str]:
    return [orjson.loads(r.value)["event_id"] for r in await hub.bus.read_all(hub.topics.events)]


async def test_multi_page_sync_checkpoints_in_postgres(hub: Hub) -> None:
    connector, _ = loyalty(hub)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 8)], page_size=2)
    with respx.mock() as router:
        api.install(router)
        [result] = await sync(hub, connector, stream="transactions")
    assert result.pages == 4 and result.ingest.events == 7 and result.checkpoints >= 4
    assert [c.url.params["page"] for c in api.calls] == ["1", "2", "3", "4"]
    assert all(c.headers["X-Api-Key"] == "k-123" for c in api.calls)
    row = await hub.store.fetchrow("SELECT state FROM connector_state WHERE connector = 'loyalty' "
                                   "AND stream = 'transactions'")
    assert row is not None and row["state"]["cursor"] == txn(7)["created_at"]
    assert len(set(await event_ids(hub))) == 7


async def test_429_with_retry_after_is_honoured(hub: Hub) -> None:
    connector, sleeps = loyalty(hub)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 4)], page_size=2)
    later = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    api.queued = [httpx.Response(429, headers={"Retry-After": "7"}),
                  httpx.Response(429, headers={"Retry-After": later})]
    with respx.mock() as router:
        api.install(router)
        [result] = await sync(hub, connector, stream="transactions")
    assert result.ingest.events == 3
    assert sleeps.waits[0] == 7.0 and 25 <= sleeps.waits[1] <= 31  # seconds, and an HTTP date


async def test_5xx_burst_backs_off_exponentially_then_succeeds(hub: Hub) -> None:
    connector, sleeps = loyalty(hub, retry_initial_wait=1.0, retry_max_wait=3.0, max_attempts=6)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 4)], page_size=2)
    api.queued = [httpx.Response(503), httpx.Response(502), httpx.Response(500), httpx.Response(504),
                  httpx.ConnectError("reset by peer")]
    with respx.mock() as router:
        api.install(router)
        [result] = await sync(hub, connector, stream="transactions")
    assert result.ingest.events == 3
    assert len(sleeps.waits) == 5
    floors = [1.0, 2.0, 3.0, 3.0, 3.0]  # doubling, capped at retry_max_wait, plus up to 1s of jitter
    assert all(f <= w <= f + 1.0 for f, w in zip(floors, sleeps.waits, strict=True)), sleeps.waits


async def test_endless_5xx_fails_the_sync_and_keeps_the_checkpoint(hub: Hub) -> None:
    connector, sleeps = loyalty(hub, max_attempts=3)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 6)], page_size=2)
    api.fail_from_page = 1
    with respx.mock() as router:
        api.install(router)
        with pytest.raises(RetriableError, match="ConnectError"):
            await sync(hub, connector, stream="transactions")
    assert len(sleeps.waits) == 2  # three attempts in all
    state = await PgStateStore(hub.store).get("loyalty", "transactions")
    assert state is not None and state["cursor"] == txn(2)["created_at"]  # page 1 was published


async def test_checkpoint_is_written_only_after_publishing(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    connector, _ = loyalty(hub)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 6)], page_size=2)
    real = hub.bus.publish_many
    calls = {"n": 0}

    async def flaky_publish(messages: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("broker unavailable")
        await real(messages)

    monkeypatch.setattr(hub.bus, "publish_many", flaky_publish)
    with respx.mock() as router:
        api.install(router)
        with pytest.raises(ConnectionError):
            await sync(hub, connector, stream="transactions")
    state = await PgStateStore(hub.store).get("loyalty", "transactions")
    assert state is not None and state["cursor"] == txn(2)["created_at"]
    assert len(await event_ids(hub)) == 2


async def test_token_expiring_mid_sync_is_renewed(hub: Hub) -> None:
    connector = CrmConnector({"base_url": "https://crm.test", "page_size": 2, "auth": {
        "type": "oauth2_client_credentials", "token_url": "https://crm.test/oauth/token", "client_id": "cdp",
        "client_secret": "s3cret", "scope": "crm.objects.contacts.read"}}, instance="crm", http=hub.http)
    api = MockApi(connector, "contacts", [contact(n) for n in range(1, 7)], page_size=2)
    issued: list[str] = []
    valid: set[str] = set()

    def token(request: httpx.Request) -> httpx.Response:
        form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
        assert form["grant_type"] == "client_credentials" and form["client_secret"] == "s3cret"
        issued.append(f"tok-{len(issued) + 1}")
        valid.add(issued[-1])
        return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 3600})

    served = {"n": 0}

    def contacts(request: httpx.Request) -> httpx.Response:
        bearer = request.headers["Authorization"].removeprefix("Bearer ")
        if bearer not in valid:
            return httpx.Response(401, json={"message": "token expired"})
        served["n"] += 1
        if served["n"] == 2:
            valid.discard(bearer)  # the server expires the token after the second page
        return api._answer(request)

    with respx.mock() as router:
        router.post("https://crm.test/oauth/token").mock(side_effect=token)
        router.get(url__startswith="https://crm.test/crm/v3/objects/contacts").mock(side_effect=contacts)
        [result] = await sync(hub, connector, stream="contacts")
    assert issued == ["tok-1", "tok-2"]
    assert result.ingest.events == 6 and result.pages == 3


async def test_bad_client_secret_is_a_configuration_error(hub: Hub) -> None:
    connector = CrmConnector({"base_url": "https://crm.test", "auth": {
        "type": "oauth2_client_credentials", "token_url": "https://crm.test/oauth/token", "client_id": "cdp",
        "client_secret": "wrong"}}, http=hub.http)
    with respx.mock() as router:
        router.post("https://crm.test/oauth/token").respond(401, json={"error": "invalid_client"})
        with pytest.raises(ConfigurationError, match="client_secret") as exc:
            await connector.check()
    assert "wrong" not in str(exc.value)  # secrets never appear in errors


async def test_malformed_records_go_to_the_dlq_and_the_sync_goes_on(hub: Hub) -> None:
    connector, _ = loyalty(hub)
    records = [txn(1), txn(2, card_number=None), txn(3, type="teleport"), txn(4), txn(5, points="lots")]
    api = MockApi(connector, "transactions", records, page_size=2)
    with respx.mock() as router:
        api.install(router)
        [result] = await sync(hub, connector, stream="transactions")
    assert result.ingest.events == 2 and result.ingest.dead == 3
    fields = sorted(d.field or "" for d in result.ingest.errors)
    assert fields == ["card_number", "points", "type"]
    state = await PgStateStore(hub.store).get("loyalty", "transactions")
    assert state is not None and state["cursor"] == txn(5)["created_at"]


async def test_full_refresh_ignores_the_checkpoint(hub: Hub) -> None:
    connector, _ = loyalty(hub)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 4)], page_size=2)
    with respx.mock() as router:
        api.install(router)
        await sync(hub, connector, stream="transactions")
        api.calls.clear()
        [again] = await sync(hub, connector, stream="transactions", full_refresh=True)
    assert "created_since" not in api.calls[0].url.params and again.ingest.records == 3


@pytest.mark.parametrize(("status", "error"), [(401, ConfigurationError), (403, ConfigurationError),
                                               (404, ConfigurationError), (400, FatalError),
                                               (422, FatalError)])
async def test_status_table(hub: Hub, status: int, error: type[Exception]) -> None:
    connector, sleeps = loyalty(hub)
    api = MockApi(connector, "transactions", [txn(1)], page_size=2)
    api.status = status
    with respx.mock() as router:
        api.install(router)
        with pytest.raises(error, match=str(status)) as exc:
            await sync(hub, connector, stream="transactions")
    assert sleeps.waits == [] and len(api.calls) == 1  # not retried
    assert "k-123" not in str(exc.value)


async def test_gone_endpoint_is_skipped(hub: Hub) -> None:
    connector, _ = loyalty(hub)
    api = MockApi(connector, "transactions", [txn(1)], page_size=2)
    api.status = 410
    with respx.mock() as router:
        api.install(router)
        [result] = await sync(hub, connector, stream="transactions")
    assert result.pages == 0 and result.ingest.records == 0


def test_action_table_and_retry_after() -> None:
    assert action_for(200) is Action.OK and action_for(429) is Action.RETRY and action_for(599) is Action.RETRY
    assert action_for(418) is Action.FATAL and action_for(401) is Action.REFRESH_AUTH
    assert action_for(404, {404: Action.SKIP}) is Action.SKIP
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "2.5"})) == 2.5
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Response(503)) is None


async def test_retry_policy_caps_a_huge_retry_after() -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=2, max_retry_after=60, sleep=sleeps)
    attempts = {"n": 0}

    async def flaky() -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RetriableError("busy", retry_after=86400)
        return "ok"

    assert await policy.call(flaky, what="test") == "ok" and sleeps.waits == [60]


async def test_rate_limiter_spaces_requests() -> None:
    now = {"t": 0.0}
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now["t"] += seconds

    limiter = RateLimiter(2.0, burst=1, clock=lambda: now["t"], sleep=sleep)
    for _ in range(5):
        await limiter.acquire()
    assert waits == [0.5, 0.5, 0.5, 0.5]  # 2 per second: one every half second after the first
    assert await RateLimiter(None).acquire() == 0.0


class _Items(RestStream):
    name = "items"
    path = "/items"
    records_path = "items"
    cursor_field = "seq"
    cursor_type = "integer"
    cursor_param = "since"
    paginator = PageNumberPaginator(page_param="p", size_param="n")


class _Events(RestStream):
    name = "events"
    path = "/events"
    records_path = "data.events"
    cursor_field = "seq"
    cursor_type = "integer"
    paginator = CursorPaginator(token_path=None, header="X-Next-Page", param="page_token", size_param=None)
    is_sorted = False


class _Toy(HttpConnector):
    """A toy API for SDK tests."""

    name = "toy"
    config_model = HttpConnectorConfig
    streams = (_Items, _Events)

    def normalize(self, record: Any, *, stream: str | None = None) -> list[dict[str, Any]]:
        return [{"type": "customer.updated", "occurred_at": "2026-11-01T00:00:00Z",
                 "identities": [{"kind": "crm_id", "value": str(record["seq"])}]}]


async def test_short_page_and_header_token_pagination_and_unsorted_checkpoints(hub: Hub) -> None:
    connector = _Toy({"base_url": "https://toy.test", "page_size": 3, "rate_limit_per_second": 1000},
                     instance="toy", http=hub.http)
    items = MockApi(connector, "items", [{"seq": n} for n in range(1, 8)], page_size=3)
    events = MockApi(connector, "events", [{"seq": n} for n in (5, 1, 9, 2)], page_size=3)
    with respx.mock() as router:
        items.install(router)
        events.install(router)
        results = await sync(hub, connector)
    assert [r.ingest.records for r in results] == [7, 4]
    assert [c.url.params["p"] for c in items.calls] == ["1", "2", "3"]  # stops at the short page
    assert [c.url.params.get("page_token") for c in events.calls] == [None, "p1"]
    assert results[1].checkpoints == 1  # unsorted: checkpointed once, at the end
    state = await PgStateStore(hub.store).get("toy", "events")
    assert state is not None and state["cursor"] == 9
    with respx.mock() as router:
        items.install(router)
        items.calls.clear()
        await sync_stream(hub, connector, connector.stream("items"))
    assert items.calls[0].url.params["since"] == "7"


@pytest.mark.kafka
async def test_sync_publishes_to_kafka_before_checkpointing(kafka_hub: Hub) -> None:
    connector, _ = loyalty(kafka_hub)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 6)], page_size=2)
    with respx.mock() as router:  # fakes the upstream HTTP API only; the broker (aiokafka) is real
        api.install(router)
        [result] = await sync(kafka_hub, connector, stream="transactions")
    ids = await event_ids(kafka_hub)
    assert result.ingest.events == 5 and len(ids) == 5 and len(set(ids)) == 5
    state = await PgStateStore(kafka_hub.store).get("loyalty", "transactions")
    assert state is not None and state["cursor"] == txn(5)["created_at"]
