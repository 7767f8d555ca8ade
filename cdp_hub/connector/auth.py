"""Authenticators for upstream APIs: API key, bearer token, basic auth, OAuth2 client credentials.

A connector config names one with a ``type`` (a pydantic discriminated union, secrets as ``SecretStr``)::

    auth = {type = "oauth2_client_credentials", token_url = "https://crm.example/oauth/token",
            client_id = "cdp", client_secret = "..."}

At run time :func:`build_authenticator` turns it into an :class:`Authenticator` that stamps each request and,
for OAuth2, fetches a token, renews it shortly before it expires and once more when the API answers 401
(a token revoked or expired early, mid-sync).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Annotated, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cdp_hub.errors import ConfigurationError, RetriableError

__all__ = [
    "ApiKeyAuth",
    "AuthConfig",
    "Authenticator",
    "BasicAuth",
    "BearerAuth",
    "OAuth2Authenticator",
    "OAuth2ClientCredentials",
    "build_authenticator",
]


class _AuthModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ApiKeyAuth(_AuthModel):
    """A static API key in a header (default ``X-Api-Key``) or a query parameter."""

    type: Literal["api_key"] = "api_key"
    key: SecretStr
    header: str = "X-Api-Key"
    location: Literal["header", "query"] = "header"
    query_param: str = "api_key"
    prefix: str = Field("", description="e.g. 'Token ' for 'Authorization: Token <key>'")


class BearerAuth(_AuthModel):
    """``Authorization: Bearer <token>`` with a long-lived token (private app token)."""

    type: Literal["bearer"] = "bearer"
    token: SecretStr


class BasicAuth(_AuthModel):
    """HTTP basic auth (1C's HTTP and OData services use it)."""

    type: Literal["basic"] = "basic"
    username: str
    password: SecretStr


class OAuth2ClientCredentials(_AuthModel):
    """OAuth2 client-credentials grant; the token is renewed before it expires and on a 401."""

    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    client_auth: Literal["body", "basic"] = Field("body", description="send the client credentials in the "
                                                  "form body or as HTTP basic auth")
    refresh_margin_seconds: float = Field(60.0, ge=0, description="renew this long before expiry")


AuthConfig = Annotated[ApiKeyAuth | BearerAuth | BasicAuth | OAuth2ClientCredentials, Field(discriminator="type")]


class Authenticator:
    """Stamps requests with credentials. The base class is 'no authentication'."""

    async def apply(self, request: httpx.Request) -> None:
        """Add the credentials to ``request`` (headers or query)."""

    async def refresh(self) -> bool:
        """Renew the credentials after a 401; return ``True`` when a retry may succeed."""
        return False


class _StaticAuth(Authenticator):
    def __init__(self, config: ApiKeyAuth | BearerAuth | BasicAuth) -> None:
        self.config = config

    async def apply(self, request: httpx.Request) -> None:
        cfg = self.config
        if isinstance(cfg, BearerAuth):
            request.headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        elif isinstance(cfg, BasicAuth):
            raw = f"{cfg.username}:{cfg.password.get_secret_value()}".encode()
            request.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        elif cfg.location == "header":
            request.headers[cfg.header] = cfg.prefix + cfg.key.get_secret_value()
        else:
            request.url = request.url.copy_merge_params({cfg.query_param: cfg.key.get_secret_value()})


class OAuth2Authenticator(Authenticator):
    """Client-credentials tokens, shared by all streams of a connector instance."""

    def __init__(self, config: OAuth2ClientCredentials, http: httpx.AsyncClient,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.http = http
        self.clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.tokens_fetched = 0

    async def apply(self, request: httpx.Request) -> None:
        token = await self._valid_token()
        request.headers["Authorization"] = f"Bearer {token}"

    async def refresh(self) -> bool:
        stale = self._token
        async with self._lock:
            if self._token == stale:  # nobody renewed it meanwhile
                self._token = None
        await self._valid_token()
        return True

    async def _valid_token(self) -> str:
        async with self._lock:
            if self._token is None or self.clock() >= self._expires_at - self.config.refresh_margin_seconds:
                await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> None:
        cfg = self.config
        data = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if cfg.scope:
            data["scope"] = cfg.scope
        if cfg.client_auth == "basic":
            raw = f"{cfg.client_id}:{cfg.client_secret.get_secret_value()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        else:
            data["client_id"] = cfg.client_id
            data["client_secret"] = cfg.client_secret.get_secret_value()
        try:
            response = await self.http.post(cfg.token_url, data=data, headers=headers)
        except httpx.TransportError as exc:
            raise RetriableError(f"token endpoint {cfg.token_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RetriableError(f"token endpoint {cfg.token_url}: HTTP {response.status_code}")
        if response.status_code != 200:
            raise ConfigurationError(
                f"token endpoint {cfg.token_url} refused client {cfg.client_id!r} (HTTP {response.status_code}): "
                "check client_id, client_secret and scope in the connector config")
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(f"token endpoint {cfg.token_url} returned no access_token") from None
        self._token = token
        self._expires_at = self.clock() + float(body.get("expires_in") or 3600)
        self.tokens_fetched += 1


def build_authenticator(config: ApiKeyAuth | BearerAuth | BasicAuth | OAuth2ClientCredentials | None,
                        http: httpx.AsyncClient) -> Authenticator:
    """The run-time authenticator for an auth config (``None``: no authentication)."""
    if config is None:
        return Authenticator()
    if isinstance(config, OAuth2ClientCredentials):
        return OAuth2Authenticator(config, http)
    return _StaticAuth(config)
