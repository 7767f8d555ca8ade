"""Connector errors an operator can act on: each names the connector, the stream, the page and the endpoint
(credentials redacted), quotes what the source said, and says what to do; the final error after retries says
the tries are over; a page that is not JSON is retried; `connectors check` does not wait through backoff."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from cdp_hub.connector.sync import sync
from cdp_hub.errors import ConfigurationError, FatalError, RetriableError
from cdp_hub.hub import Hub
from cdp_hub.testing import MockApi
from tests.test_sdk_rest import loyalty, txn

API_KEY = "k-query-secret-123"


def _query_key(hub: Hub, **config: Any) -> tuple[Any, Any]:
    """The loyalty connector with its API key in the query string (apiKey=...), as some APIs want it."""
    return loyalty(hub, auth={"type": "api_key", "key": API_KEY, "location": "query", "query_param": "apiKey"},
                   **config)


@pytest.mark.parametrize(("status", "body", "error", "advice"), [
    (401, {"error": "invalid api key"}, ConfigurationError,
     "the credentials were rejected: check auth (key, token, client secret) in [connectors.loyalty.config]"),
    (403, {"error": "scope transactions:read required"}, ConfigurationError,
     "the credentials lack permission for this endpoint: grant the API scope"),
    (404, {"error": "no such account"}, ConfigurationError,
     "not found: check base_url and the API version in [connectors.loyalty.config]"),
    (400, {"error": "created_since: bad format"}, FatalError, "the source refused the request, so this sync stops"),
])
async def test_refusals_name_the_connector_stream_endpoint_and_what_to_do(
        hub: Hub, status: int, body: dict[str, str], error: type[Exception], advice: str) -> None:
    connector, sleeps = _query_key(hub)
    api = MockApi(connector, "transactions", [txn(1)], page_size=2)
    with respx.mock() as router:
        api.install(router).mock(return_value=httpx.Response(status, json=body))
        with pytest.raises(error) as caught:
            await sync(hub, connector, stream="transactions")
    text = str(caught.value)
    assert text.startswith("connector loyalty, stream transactions, page 1 (GET https://loyalty.test/")
    assert f"HTTP {status}; the source said: " in text and body["error"] in text
    assert advice in text
    assert API_KEY not in text  # the key was in the request's query string
    assert sleeps.waits == []  # refusals are final: not retried


async def test_the_final_error_after_retries_says_so(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    connector, sleeps = _query_key(hub, max_attempts=3)
    api = MockApi(connector, "transactions", [txn(1)], page_size=2)
    with respx.mock() as router:
        api.install(router).mock(return_value=httpx.Response(503, text="upstream maintenance"))
        with pytest.raises(RetriableError) as caught:
            await sync(hub, connector, stream="transactions")
    text = str(caught.value)
    assert "connector loyalty, stream transactions, page 1" in text and "HTTP 503" in text
    assert "'upstream maintenance'" in text and "the source API is failing: check its status page" in text
    assert text.endswith("(gave up after 3 attempts)") and "will retry" not in text
    assert len(sleeps.waits) == 2
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and retries[0].startswith("connector loyalty, stream transactions, page 1")


async def test_rate_limiting_advice_names_the_option(hub: Hub) -> None:
    connector, sleeps = _query_key(hub, max_attempts=2)
    api = MockApi(connector, "transactions", [txn(1)], page_size=2)
    with respx.mock() as router:
        api.install(router).mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
        with pytest.raises(RetriableError, match="lower rate_limit_per_second in "
                                                 r"\[connectors.loyalty.config\]") as caught:
            await sync(hub, connector, stream="transactions")
    assert sleeps.waits == [7.0] and caught.value.retry_after == 7.0


async def test_a_page_that_is_not_json_is_retried_and_named(hub: Hub) -> None:
    connector, sleeps = _query_key(hub)
    api = MockApi(connector, "transactions", [txn(n) for n in range(1, 4)], page_size=2)
    broken = httpx.Response(200, text="<html>502 Bad Gateway</html>", headers={"content-type": "text/html"})
    api.queued = [broken]  # the first answer is a proxy's error page, then the API answers
    with respx.mock() as router:
        api.install(router)
        [result] = await sync(hub, connector, stream="transactions")
    assert result.ingest.records == 3 and len(sleeps.waits) == 1

    connector, _ = _query_key(hub, max_attempts=2)
    api = MockApi(connector, "transactions", [txn(1)], page_size=2)
    with respx.mock() as router:
        api.install(router).mock(return_value=broken)
        with pytest.raises(RetriableError) as caught:
            await sync(hub, connector, stream="transactions", full_refresh=True)
    text = str(caught.value)
    assert text.startswith("connector loyalty, stream transactions, page 1 (GET https://loyalty.test/")
    assert "the answer is not JSON (HTTP 200, text/html, starts '<html>502 Bad Gateway</html>')" in text
    assert text.endswith("(gave up after 2 attempts)")


async def test_an_unreachable_source_names_base_url(hub: Hub) -> None:
    connector, _ = _query_key(hub, max_attempts=1)
    api = MockApi(connector, "transactions", [txn(1)], page_size=2)
    with respx.mock() as router:
        api.install(router).mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(RetriableError) as caught:
            await sync(hub, connector, stream="transactions")
    text = str(caught.value)
    assert "ConnectError: connection refused; check base_url in [connectors.loyalty.config]" in text
    assert API_KEY not in text


async def test_connectors_check_fails_fast(hub: Hub) -> None:
    connector, sleeps = _query_key(hub, max_attempts=6)
    with respx.mock() as router:
        route = router.get(url__startswith="https://loyalty.test/").mock(return_value=httpx.Response(503))
        with pytest.raises(RetriableError, match="HTTP 503"):
            await connector.check()
        assert route.call_count == 1 and sleeps.waits == []  # one try, no backoff
    with respx.mock() as router:
        MockApi(connector, "cards", [], page_size=2).install(router)
        await connector.check()
    assert connector.retry_policy.max_attempts == 6  # a sync afterwards retries as configured
