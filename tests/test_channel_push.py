"""Push: FCM HTTP v1 with service-account OAuth2 (respx-simulated Google endpoints) and the signed webhook."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import orjson
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cdp_hub.errors import ConfigurationError, RetriableError
from cdp_hub.testing.channels import CallbackSample, ChannelTests
from channels.push import FcmChannel, ServiceAccount, ServiceAccountTokens
from channels.webhook import WebhookChannel, sign, verify

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode()
TOKEN_URI = "https://oauth2.googleapis.com/token"
SEND_URL = "https://fcm.googleapis.com/v1/projects/shop-app/messages:send"
ACCOUNT = {"type": "service_account", "project_id": "shop-app", "private_key_id": "kid-1", "private_key": PEM,
           "client_email": "push@shop-app.iam.gserviceaccount.com", "token_uri": TOKEN_URI}
FCM_CONFIG = {"service_account_json": json.dumps(ACCOUNT)}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def token_endpoint(request: httpx.Request) -> httpx.Response:
    """A strict fake of Google's token endpoint: checks the grant, the claims and the RS256 signature."""
    form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
    assert form["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    header_b64, claims_b64, sig_b64 = form["assertion"].split(".")
    KEY.public_key().verify(_b64(sig_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(),
                            hashes.SHA256())
    header, claims = json.loads(_b64(header_b64)), json.loads(_b64(claims_b64))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    assert claims["iss"] == ACCOUNT["client_email"] and claims["aud"] == TOKEN_URI
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["exp"] - claims["iat"] == 3600
    return httpx.Response(200, json={"access_token": f"ya29.{claims['iat']}", "expires_in": 3599,
                                     "token_type": "Bearer"})


def fcm_error(status: int, code: str, detail: str | None = None, message: str = "") -> httpx.Response:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": detail}] if detail else []
    return httpx.Response(status, json={"error": {"code": status, "message": message, "status": code,
                                                  "details": details}})


class TestFcmConformance(ChannelTests):
    channel_class = FcmChannel
    config = FCM_CONFIG
    recipient = "fcm-token-abc"

    def simulate(self, provider: Any, outcome: str) -> None:
        provider.post(TOKEN_URI).mock(side_effect=token_endpoint)
        if outcome == "sent":
            provider.post(SEND_URL).respond(200, json={"name": "projects/shop-app/messages/0:123"})
        elif outcome == "transient":
            provider.post(SEND_URL).mock(return_value=fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"))
        else:
            provider.post(SEND_URL).mock(return_value=fcm_error(404, "NOT_FOUND", "UNREGISTERED",
                                                                "Requested entity was not found."))


@respx.mock
async def test_fcm_message_shape_and_token_caching() -> None:
    token_route = respx.post(TOKEN_URI).mock(side_effect=token_endpoint)
    send_route = respx.post(SEND_URL).respond(200, json={"name": "projects/shop-app/messages/1"})
    async with httpx.AsyncClient() as http:
        ch = FcmChannel(FCM_CONFIG, http=http)
        await ch.start()
        kit = TestFcmConformance()
        for _ in range(3):
            receipt = await ch.send(kit.message(text="Your order has shipped",
                                                data={"title": "Order 42", "url": "app://orders/42", "n": 5}))
    assert receipt.provider_message_id == "projects/shop-app/messages/1"
    assert token_route.call_count == 1  # cached across sends
    request = send_route.calls.last.request
    assert request.headers["authorization"].startswith("Bearer ya29.")
    body = orjson.loads(request.content)["message"]
    assert body["token"] == "fcm-token-abc"
    assert body["notification"] == {"title": "Order 42", "body": "Your order has shipped"}
    assert body["data"]["url"] == "app://orders/42" and body["data"]["n"] == "5"  # FCM data values are strings
    assert "message_id" in body["data"]


@respx.mock
async def test_fcm_token_is_refreshed_before_expiry_and_after_a_401() -> None:
    respx.post(TOKEN_URI).mock(side_effect=token_endpoint)
    now = [time.time()]
    async with httpx.AsyncClient() as http:
        tokens = ServiceAccountTokens(ServiceAccount.model_validate(ACCOUNT), http, clock=lambda: now[0])
        first = await tokens.get()
        now[0] += 3000
        assert await tokens.get() == first
        now[0] += 600  # within a minute of expiry: renewed
        second = await tokens.get()
        assert second != first and tokens.refreshes == 2

        send = respx.post(SEND_URL).mock(side_effect=[
            fcm_error(401, "UNAUTHENTICATED", message="Request had invalid authentication credentials."),
            httpx.Response(200, json={"name": "projects/shop-app/messages/2"}),
        ])
        ch = FcmChannel(FCM_CONFIG, http=http)
        await ch.start()
        assert ch.tokens is not None
        ch.tokens.clock = lambda: now[0]
        receipt = await ch.send(TestFcmConformance().message())
    assert receipt.status == "sent" and send.call_count == 2
    assert ch.tokens.refreshes == 2


@respx.mock
@pytest.mark.parametrize(
    ("response", "permanent", "error"),
    [
        (fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                   "The registration token is not a valid FCM registration token"), True, None),
        (fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"), True, None),
        (fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid JSON payload"), False, None),
        (fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), None, RetriableError),
        (fcm_error(403, "PERMISSION_DENIED", "THIRD_PARTY_AUTH_ERROR"), None, ConfigurationError),
    ],
)
async def test_fcm_error_mapping(response: httpx.Response, permanent: bool | None,
                                 error: type[Exception] | None) -> None:
    respx.post(TOKEN_URI).mock(side_effect=token_endpoint)
    respx.post(SEND_URL).mock(return_value=response)
    async with httpx.AsyncClient() as http:
        ch = FcmChannel(FCM_CONFIG, http=http)
        await ch.start()
        if error is not None:
            with pytest.raises(error):
                await ch.send(TestFcmConformance().message())
            return
        receipt = await ch.send(TestFcmConformance().message())
    assert receipt.status == "failed" and receipt.permanent is permanent


@respx.mock
async def test_fcm_retry_after_and_refused_service_account() -> None:
    respx.post(TOKEN_URI).mock(side_effect=[token_endpoint, httpx.Response(400, json={"error": "invalid_grant"})])
    respx.post(SEND_URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "30"}))
    async with httpx.AsyncClient() as http:
        ch = FcmChannel(FCM_CONFIG, http=http)
        await ch.start()
        with pytest.raises(RetriableError) as info:
            await ch.send(TestFcmConformance().message())
        assert info.value.retry_after == 30.0
        assert ch.tokens is not None
        ch.tokens.invalidate()
        with pytest.raises(ConfigurationError, match="invalid_grant"):
            await ch.send(TestFcmConformance().message())


def test_fcm_config_errors_do_not_leak_the_key() -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        FcmChannel({})
    broken = json.dumps({**ACCOUNT, "private_key": "not a key"})
    with pytest.raises(ConfigurationError) as info:
        from channels.push import sign_jwt
        sign_jwt({}, json.loads(broken)["private_key"])
    assert "PRIVATE KEY" not in str(info.value)


# -- webhook -------------------------------------------------------------------------------------------

HOOK_URL = "https://push.internal.test/deliver"
HOOK_CONFIG = {"url": HOOK_URL, "secret": "hook-secret"}


def signed(body: bytes) -> dict[str, str]:
    return {"X-CDP-Signature": sign("hook-secret", body)}


_RECEIPTS = orjson.dumps([{"message_id": "m-1", "status": "delivered"},
                          {"message_id": "m-2", "status": "clicked", "url": "https://shop.test/x"},
                          {"message_id": "m-3", "status": "failed", "permanent": True, "reason": "token gone"}])


class TestWebhookConformance(ChannelTests):
    channel_class = WebhookChannel
    config = HOOK_CONFIG
    recipient = "device-token-1"

    @property
    def callback_samples(self) -> list[CallbackSample]:
        # Signed when the test runs, not when the module is collected: the webhook refuses a signature older
        # than five minutes, and a full suite under load reaches this test later than that.
        return [CallbackSample(_RECEIPTS, ("delivered", "clicked", "failed"), headers=signed(_RECEIPTS),
                               message_ids=("m-1", "m-2", "m-3"), permanent=(False, False, True))]

    def simulate(self, provider: Any, outcome: str) -> None:
        status = {"sent": 202, "transient": 502, "permanent": 410}[outcome]
        provider.post(HOOK_URL).respond(status, json={"id": "w-1"} if status == 202 else None)


@respx.mock
async def test_webhook_request_is_signed_and_verifiable() -> None:
    route = respx.post(HOOK_URL).respond(200, json={"id": "w-7"})
    async with httpx.AsyncClient() as http:
        ch = WebhookChannel({**HOOK_CONFIG, "address_kind": "crm_id", "headers": {"X-Tenant": "shop"}}, http=http)
        assert ch.address_kind == "crm_id"
        message = TestWebhookConformance().message(to="C-42")
        receipt = await ch.send(message)
    assert receipt.provider_message_id == "w-7"
    request = route.calls.last.request
    assert verify("hook-secret", request.content, request.headers["x-cdp-signature"])
    assert not verify("other-secret", request.content, request.headers["x-cdp-signature"])
    assert request.headers["idempotency-key"] == message.message_id
    assert request.headers["x-tenant"] == "shop"
    body = orjson.loads(request.content)
    assert body["to"] == "C-42" and body["title"] == "Hello" and body["address_kind"] == "crm_id"


async def test_webhook_callbacks_need_a_fresh_valid_signature() -> None:
    ch = WebhookChannel(HOOK_CONFIG)
    body = orjson.dumps({"message_id": "m-1", "status": "opened"})
    assert [r.status for r in await ch.parse_callback(signed(body), body)] == ["opened"]
    stale = {"X-CDP-Signature": sign("hook-secret", body, timestamp=int(time.time()) - 3600)}
    with pytest.raises(PermissionError):
        await ch.parse_callback(stale, body)
    with pytest.raises(PermissionError):
        await ch.parse_callback({"X-CDP-Signature": sign("wrong", body)}, body)
