"""REST pull connectors: streams declared by class attributes, one resilient request path.

    class Orders(RestStream):
        name = "orders"
        path = "/admin/api/2024-10/orders.json"
        records_path = "orders"                 # where the list is in the JSON body
        cursor_field = "updated_at"             # incremental by this field ...
        cursor_param = "updated_at_min"         # ... sent to the API as this parameter
        paginator = LinkHeaderPaginator()

    class Shop(HttpConnector):
        name = "shop"; config_model = ShopConfig; streams = (Orders,)

Every request goes through :meth:`HttpConnector.send`:

    rate limit (token bucket) ─▶ authenticator stamps the request ─▶ httpx ─▶ status-to-action table
        ▲                                                                        │ RETRY: RetriableError
        └──────────── tenacity: exponential backoff + jitter, or Retry-After ◀───┘ 401: renew token once
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr

from cdp_hub.connector.auth import (
    ApiKeyAuth,
    Authenticator,
    BasicAuth,
    BearerAuth,
    OAuth2ClientCredentials,
    build_authenticator,
)
from cdp_hub.connector.base import Connector, ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import dig
from cdp_hub.connector.pagination import PageRequest, Paginator, SinglePage
from cdp_hub.connector.resilience import Action, RateLimiter, RetryPolicy, action_for, raise_for_status_action
from cdp_hub.connector.streams import Stream
from cdp_hub.durations import Duration
from cdp_hub.errors import FatalError, RetriableError
from cdp_hub.redact import redact_url

__all__ = ["HttpConnector", "HttpConnectorConfig", "RestStream", "WebhookOptions"]


class WebhookOptions(ConnectorConfig):
    """Options of connectors that receive webhooks."""

    webhook_secret: SecretStr | None = Field(None, description="shared secret of the webhook signatures; "
                                             "webhooks are refused while it is unset")
    webhook_tolerance_seconds: float = Field(300.0, gt=0, description="largest accepted clock difference "
                                             "between the sender's timestamp and now (replay window)")


class HttpConnectorConfig(WebhookOptions):
    """Options shared by REST pull connectors. Subclasses add their own (and may change defaults)."""

    base_url: str = Field(description="the API's base URL, e.g. https://shop.example.ru")
    auth: ApiKeyAuth | BearerAuth | BasicAuth | OAuth2ClientCredentials | None = Field(
        None, discriminator="type", description="how to authenticate (api_key, bearer, basic, "
        "oauth2_client_credentials)")
    start_date: datetime | None = Field(None, description="the first sync reads records from this time on")
    lookback: Duration = Field(timedelta(minutes=10), description="re-read this far before the checkpoint, "
                               "for updates the source wrote late ('10m', '1h30m', ISO 8601 'PT10M', or seconds)")
    page_size: int = Field(100, ge=1, le=10_000)
    rate_limit_per_second: float | None = Field(None, gt=0, description="at most this many requests per "
                                                "second to this API (all streams together)")
    max_attempts: int = Field(6, ge=1, le=50, description="tries per request for retriable failures")
    retry_initial_wait: float = Field(1.0, ge=0, description="first backoff in seconds (doubles each time)")
    retry_max_wait: float = Field(60.0, ge=0)
    timeout_seconds: float = Field(30.0, gt=0)


class RestStream(Stream):
    """A stream read from a REST endpoint, declared mostly by class attributes."""

    path: ClassVar[str] = ""
    """Path under the connector's ``base_url`` (may contain ``{config_field}`` placeholders)."""
    records_path: ClassVar[str | None] = None
    """Dotted path of the record list in the JSON body; ``None``: the body is the list."""
    paginator: ClassVar[Paginator] = SinglePage()
    method: ClassVar[str] = "GET"
    params: ClassVar[Mapping[str, Any]] = {}
    """Fixed query parameters."""
    cursor_param: ClassVar[str | None] = None
    """Query parameter that asks for records with ``cursor_field`` at or after a value."""
    status_actions: ClassVar[Mapping[int, Action]] = {}
    """Overrides of :data:`~cdp_hub.connector.resilience.DEFAULT_STATUS_ACTIONS` for this endpoint."""

    connector: HttpConnector

    def url(self) -> str:
        base = str(self.config.base_url).rstrip("/")
        return base + self.path.format(**self.config.model_dump())

    def format_cursor(self, start: Any) -> str:
        """The cursor as the API expects it in ``cursor_param`` (ISO 8601 UTC by default)."""
        if isinstance(start, datetime):
            return start.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return str(start)

    def request_params(self, start: Any | None) -> dict[str, Any]:
        """Query parameters of the first page: ``params`` plus the cursor filter."""
        params = dict(self.params)
        if start is not None and self.cursor_param:
            params[self.cursor_param] = self.format_cursor(start)
        return params

    def request_body(self, start: Any | None) -> Any:
        """JSON body of the request (POST search endpoints); ``None`` for GET."""
        return None

    def parse_records(self, response: httpx.Response, *, what: str | None = None) -> list[SourceRecord]:
        """The records of one response. A body that is not JSON is retriable (a proxy's error page, a body
        cut short): the request is sent again. ``what`` names the page in errors."""
        what = what or f"connector {self.connector.instance}, stream {self.name}"
        try:
            body = response.json()
        except ValueError:
            excerpt = " ".join(response.text[:80].split())
            raise RetriableError(
                f"{what}: the answer is not JSON (HTTP {response.status_code}, "
                f"{response.headers.get('content-type') or 'no content type'}, starts {excerpt!r}); a proxy or "
                "the API failing: if it persists, check base_url and the source API") from None
        records = dig(body, self.records_path) if self.records_path else body
        if records is None:
            return []
        if not isinstance(records, list):
            raise FatalError(f"{what}: expected a list at {self.records_path or 'the top level'} of the "
                             f"answer, got {type(records).__name__}; the API version in "
                             f"[connectors.{self.connector.instance}.config] may not be the one this connector "
                             "reads, or the connector's records_path is wrong")
        return records

    def describe(self, request: PageRequest, method: str = "GET") -> str:
        """Names a request in errors and logs: connector, stream, page and endpoint (credentials redacted)."""
        url = httpx.URL(request.url, params=request.params or None)
        return (f"connector {self.connector.instance}, stream {self.name}, page {request.number} "
                f"({method} {redact_url(url)})")

    def post_process(self, record: SourceRecord) -> SourceRecord | None:
        """Adjust one record before normalization, or drop it by returning ``None``."""
        return record

    async def pages(self, start: Any | None) -> AsyncIterator[list[SourceRecord]]:
        size = self.config.page_size
        request: PageRequest | None = self.paginator.first(
            PageRequest(self.url(), self.request_params(start), self.request_body(start)), size)
        while request is not None:
            what = self.describe(request, self.method)
            parsed: list[list[SourceRecord]] = []

            def parse(response: httpx.Response, what: str = what, parsed: list[list[SourceRecord]] = parsed
                      ) -> None:
                parsed[:] = [self.parse_records(response, what=what)]

            response = await self.connector.send(request, method=self.method, actions=self.status_actions,
                                                 what=what, on_response=parse)
            if response is None:  # SKIP: nothing to read here
                return
            records = parsed[0]
            page = [r for r in (self.post_process(rec) for rec in records) if r is not None]
            yield page
            request = self.paginator.next(request, response, records, size)


class HttpConnector(Connector):
    """A connector that pulls from an HTTP API: authentication, rate limit and retries for every stream."""

    config_model: ClassVar[type[ConnectorConfig]] = HttpConnectorConfig
    config: HttpConnectorConfig
    check_stream: ClassVar[str | None] = None
    """Stream whose first page :meth:`check` reads (default: the first stream)."""

    def __init__(self, config: ConnectorConfig | Mapping[str, Any] | None = None, *,
                 instance: str | None = None, http: httpx.AsyncClient | None = None, **kw: Any) -> None:
        super().__init__(config, instance=instance, http=http, **kw)
        cfg = self.config
        self._own_http = http is None
        self._authenticator: Authenticator | None = None
        self.rate_limiter = RateLimiter(cfg.rate_limit_per_second)
        self.retry_policy = RetryPolicy(max_attempts=cfg.max_attempts, initial_wait=cfg.retry_initial_wait,
                                        max_wait=cfg.retry_max_wait)
        self.requests_sent = 0

    @property
    def client(self) -> httpx.AsyncClient:
        """The injected HTTP client, or one of its own made on first use (closed by :meth:`aclose`)."""
        if self.http is None:
            self.http = httpx.AsyncClient(timeout=self.config.timeout_seconds)
        return self.http

    @property
    def authenticator(self) -> Authenticator:
        """Built on first use and kept, so an OAuth2 token is shared by all streams of this instance."""
        if self._authenticator is None:
            self._authenticator = build_authenticator(self.config.auth, self.client)
        return self._authenticator

    async def aclose(self) -> None:
        if self._own_http and self.http is not None:
            await self.http.aclose()
            self.http = None

    async def send(self, request: PageRequest, *, method: str = "GET",
                   actions: Mapping[int, Action] | None = None, what: str = "request",
                   on_response: Callable[[httpx.Response], None] | None = None) -> httpx.Response | None:
        """Send one request through rate limit, auth and retries; ``None`` when the table says SKIP.

        ``on_response`` runs inside the retries on a 2xx answer: a :class:`RetriableError` it raises (a page
        that is not JSON) sends the request again, like a 5xx.
        """
        client = self.client
        config = f"[connectors.{self.instance}.config]"

        async def attempt() -> httpx.Response | None:
            refreshed = False
            while True:
                await self.rate_limiter.acquire()
                req = client.build_request(method, request.url, params=request.params or None, json=request.json)
                await self.authenticator.apply(req)
                self.requests_sent += 1
                try:
                    response = await client.send(req)
                except httpx.TransportError as exc:
                    raise RetriableError(f"{what}: {type(exc).__name__}: {str(exc) or 'network error'}; check "
                                         f"base_url in {config} and that the source is reachable from here"
                                         ) from exc
                action = action_for(response.status_code, actions)
                if action is Action.REFRESH_AUTH and not refreshed and await self.authenticator.refresh():
                    refreshed = True  # a token that expired mid-sync: renew it and resend once
                    continue
                if action is Action.OK:
                    if on_response is not None:
                        on_response(response)
                    return response
                if action is Action.SKIP:
                    return None
                raise_for_status_action(response, action, what=what, config=config)

        return await self.retry_policy.call(attempt, what=what)

    async def check(self) -> None:
        """Read the first page of the check stream: proves the URL, the credentials and the records path.

        One try, no backoff: an operator waiting on ``connectors check`` wants the answer now."""
        names = self.stream_names()
        if not names:
            return
        stream = self.stream(self.check_stream or names[0])
        policy, self.retry_policy = self.retry_policy, replace(self.retry_policy, max_attempts=1)
        try:
            async for _page in stream.pages(None):
                return
        finally:
            self.retry_policy = policy
