"""Credentials at the edge: who may write, and the admin token.

    Authorization: Basic base64("<write key>:")   tracking SDKs (server, mobile, most browser ones)
    Authorization: Bearer <key>                   /v1/events source keys, the admin token
    {"writeKey": "<write key>", ...}              browser SDKs that cannot set headers (analytics.js)

The scheme is matched case-insensitively. A header that is not ASCII, base64 that does not decode, or a key
that is not UTF-8 is simply no credential: a 401, never an error of the hub. Keys are compared as bytes in
constant time, and every configured key is compared, so timing tells nothing about which one came close.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from .limits import EdgeError, error_response

__all__ = ["ADMIN_PREFIXES", "AdminAuth", "authorization", "key_matches", "presented_key"]

ADMIN_PREFIXES = ("/v1/profiles", "/v1/dlq")


def authorization(header: str | bytes | None) -> tuple[str, str] | None:
    """``(scheme in lower case, credentials)`` of an Authorization header; None when absent or not ASCII."""
    if header is None:
        return None
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            return None
    elif not header.isascii():
        return None
    scheme, _, value = header.strip().partition(" ")
    return (scheme.lower(), value.strip()) if value.strip() else None


def _basic_user(credentials: str) -> str | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[0] or None


def presented_key(header: str | bytes | None, body: Any = None, *, schemes: tuple[str, ...] = ("basic", "bearer"),
                  body_field: str | None = "writeKey") -> str | None:
    """The key a request presents: the basic-auth user name, a bearer token, or ``body_field`` of a JSON body."""
    parsed = authorization(header)
    if parsed is not None:
        scheme, credentials = parsed
        if scheme == "basic" and "basic" in schemes:
            return _basic_user(credentials)
        if scheme == "bearer" and "bearer" in schemes:
            return credentials
        return None
    if body_field and isinstance(body, dict) and isinstance(body.get(body_field), str):
        key = body[body_field]
        return key or None
    return None


def key_matches(given: str, keys: Iterable[SecretStr]) -> bool:
    """Whether ``given`` is one of ``keys`` (bytes, constant time, every key compared)."""
    given_bytes = given.encode("utf-8", "surrogatepass")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(key.get_secret_value().encode("utf-8"), given_bytes)
    return matched


class AdminAuth:
    """``Authorization: Bearer <admin_token>`` on the admin routes. Without a configured token the admin API is
    closed (401 naming the setting), so an installation is never open by default."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ADMIN_PREFIXES):
            error = self._refusal(dict(scope.get("headers") or []).get(b"authorization"))
            if error is not None:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, header: bytes | None) -> EdgeError | None:
        challenge = {"WWW-Authenticate": 'Bearer realm="cdp-hub admin"'}
        if self.token is None:
            return EdgeError(401, "admin_disabled", "the admin API is closed: set admin_token "
                             "(CDP_HUB_ADMIN_TOKEN) and send it as a bearer token", headers=challenge)
        given = presented_key(header, schemes=("bearer",), body_field=None)
        if given is None or not key_matches(given, [self.token]):
            return EdgeError(401, "unauthorized", "admin token required: Authorization: Bearer <admin_token>",
                             headers=challenge)
        return None
