"""Mobile push through Firebase Cloud Messaging, HTTP v1 API.

    service account (JSON) ─▶ JWT {iss, scope, aud, iat, exp} signed RS256 ─▶ POST token_uri (jwt-bearer grant)
                           ◀─ access_token, expires_in     (cached; refreshed a minute before it expires,
                                                             or at once when FCM answers 401)
    POST https://fcm.googleapis.com/v1/projects/<project>/messages:send
         {"message": {"token", "notification": {"title", "body"}, "data": {...}}}
      200 {"name": "projects/p/messages/123"}   ─▶ sent
      404 UNREGISTERED, 400 invalid token,
      403 SENDER_ID_MISMATCH                    ─▶ failed, permanent: the token is removed from the profile
      429 QUOTA_EXCEEDED, 500, 503              ─▶ retried (Retry-After)

The JWT is signed with ``cryptography`` (RSA PKCS#1 v1.5, SHA-256), so no Google SDK is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

import cdp_hub
from cdp_hub.channel.base import OutboundMessage, Receipt
from cdp_hub.channel.http import HttpChannel, HttpChannelConfig, request
from cdp_hub.errors import ConfigurationError

__all__ = ["FcmChannel", "FcmConfig", "ServiceAccount", "ServiceAccountTokens", "sign_jwt"]

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_PERMANENT_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jwt(claims: dict[str, Any], private_key_pem: str, key_id: str | None = None) -> str:
    """An RS256 JWT of ``claims`` signed with a PEM RSA private key."""
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"the service account's private_key is not a PEM RSA key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("the service account's private_key must be an RSA key (RS256)")
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if key_id:
        header["kid"] = key_id
    signing_input = f"{_b64url(orjson.dumps(header))}.{_b64url(orjson.dumps(claims))}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{_b64url(signature)}"


class ServiceAccount(BaseModel):
    """The fields of a Google service-account key file that the token exchange needs."""

    model_config = ConfigDict(extra="ignore")

    client_email: str
    private_key: SecretStr
    private_key_id: str | None = None
    project_id: str | None = None
    token_uri: str = "https://oauth2.googleapis.com/token"


class ServiceAccountTokens:
    """OAuth2 access tokens for a service account (JWT bearer grant), cached until shortly before expiry.

    Concurrent callers share one refresh (a lock), so a burst of sends asks the token endpoint once.
    """

    def __init__(self, account: ServiceAccount, http: httpx.AsyncClient, *, scope: str = FCM_SCOPE,
                 margin: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self.http = http
        self.scope = scope
        self.margin = margin
        self.clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still ``token``, when given: another task may have renewed)."""
        if token is None or token == self._token:
            self._token = None
            self._expires_at = 0.0

    async def get(self) -> str:
        if self._token is not None and self.clock() < self._expires_at - self.margin:
            return self._token
        async with self._lock:
            if self._token is not None and self.clock() < self._expires_at - self.margin:
                return self._token
            now = int(self.clock())
            assertion = sign_jwt(
                {"iss": self.account.client_email, "scope": self.scope, "aud": self.account.token_uri,
                 "iat": now, "exp": now + 3600},
                self.account.private_key.get_secret_value(), self.account.private_key_id,
            )
            response = await request(self.http, "POST", self.account.token_uri, provider="oauth2 token",
                                     data={"grant_type": GRANT_TYPE, "assertion": assertion})
            if not response.is_success:
                raise ConfigurationError(
                    f"the token endpoint refused the service account {self.account.client_email} "
                    f"(HTTP {response.status_code}: {response.text[:200]}); check the key file"
                )
            data = response.json()
            self._token = str(data["access_token"])
            self._expires_at = now + float(data.get("expires_in", 3600))
            self.refreshes += 1
            return self._token


class FcmConfig(HttpChannelConfig):
    service_account_file: Path | None = Field(None, description="path of the service-account JSON key")
    service_account_json: SecretStr | None = Field(None, description="the key itself (e.g. from a secret store)")
    project_id: str | None = Field(None, description="Firebase project; default: the key's project_id")
    endpoint: str = Field("https://fcm.googleapis.com", description="FCM API root")
    validate_only: bool = Field(False, description="FCM checks the message but does not deliver it")
    android_priority: str = Field("high", pattern="^(high|normal)$")
    ttl_seconds: int | None = Field(None, ge=0, description="how long FCM keeps an undelivered message")

    @model_validator(mode="after")
    def _one_key(self) -> FcmConfig:
        if (self.service_account_file is None) == (self.service_account_json is None):
            raise ValueError("set exactly one of service_account_file and service_account_json")
        return self

    def account(self) -> ServiceAccount:
        if self.service_account_json is not None:
            raw = self.service_account_json.get_secret_value()
        else:
            assert self.service_account_file is not None
            try:
                raw = self.service_account_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(f"cannot read service_account_file: {exc}") from None
        try:
            return ServiceAccount.model_validate(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "the service account key is not a Google service-account JSON "
                f"(needs client_email and private_key): {str(exc).splitlines()[0]}"
            ) from None


class FcmChannel(HttpChannel[FcmConfig]):
    """Mobile push via Firebase Cloud Messaging HTTP v1 (service-account OAuth2)."""

    name: ClassVar[str] = "fcm"
    kind = "push"
    address_kind = "push_token"
    config_model = FcmConfig
    max_body_bytes = 4096  # FCM's limit for a message's payload

    def __init__(self, config: Any = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.tokens: ServiceAccountTokens | None = None
        self.url = ""

    async def start(self) -> None:
        await super().start()
        assert self.http is not None
        if self.tokens is not None:
            return
        account = self.cfg.account()
        project = self.cfg.project_id or account.project_id
        if not project:
            raise ConfigurationError(f"channel {self.instance}: set project_id (the key file has none)")
        self.tokens = ServiceAccountTokens(account, self.http)
        self.url = f"{self.cfg.endpoint.rstrip('/')}/v1/projects/{project}/messages:send"

    def payload(self, message: OutboundMessage) -> dict[str, Any]:
        data = {k: v if isinstance(v, str) else orjson.dumps(v).decode()
                for k, v in message.data.items() if v is not None and k != "title"}
        data["message_id"] = message.message_id
        android: dict[str, Any] = {"priority": self.cfg.android_priority}
        if self.cfg.ttl_seconds is not None:
            android["ttl"] = f"{self.cfg.ttl_seconds}s"
        body: dict[str, Any] = {"message": {
            "token": message.to,
            "notification": {"title": message.data.get("title") or message.subject or "", "body": message.text},
            "data": data,
            "android": android,
        }}
        if self.cfg.validate_only:
            body["validate_only"] = True
        return body

    async def send(self, message: OutboundMessage) -> Receipt:
        assert self.http is not None and self.tokens is not None, "start() the channel first"
        content = orjson.dumps(self.payload(message))
        token = await self.tokens.get()
        response = await self._post(content, token)
        if response.status_code == 401:  # an expired or revoked token: renew once, then believe the answer
            self.tokens.invalidate(token)
            response = await self._post(content, await self.tokens.get())
        if response.status_code == 401:
            raise ConfigurationError(f"{self.instance}: FCM refused a fresh access token (HTTP 401); check that "
                                     "the service account may send messages for this project")
        return self._receipt(message, response)

    async def _post(self, content: bytes, token: str) -> httpx.Response:
        assert self.http is not None
        return await request(self.http, "POST", self.url, provider=self.instance, auth_errors=False,
                             content=content, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"})

    def _receipt(self, message: OutboundMessage, response: httpx.Response) -> Receipt:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.is_success:
            return Receipt(message_id=message.message_id, status="sent", provider=self.name,
                           provider_message_id=str(data.get("name")) if data.get("name") else None)
        raw_error = data.get("error") if isinstance(data, dict) else None
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        status, text = str(error.get("status", "")), str(error.get("message", ""))
        code = status
        for detail in error.get("details") or []:
            if isinstance(detail, dict) and detail.get("errorCode"):
                code = str(detail["errorCode"])
        bad_token = code in _PERMANENT_CODES or (
            code == "INVALID_ARGUMENT" and "registration token" in text.lower()
        )
        if response.status_code == 403 and not bad_token:
            raise ConfigurationError(f"{self.instance}: FCM denied the request ({code}: {text[:200]}); check the "
                                     "service account's permissions")
        return Receipt(message_id=message.message_id, status="failed", provider=self.name, permanent=bad_token,
                       reason=f"{code or response.status_code}: {text}".rstrip(": "))


@cdp_hub.hookimpl
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    register(FcmChannel)
