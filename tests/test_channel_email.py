"""E-mail: SMTP against a real local SMTP server (aiosmtpd: plain, STARTTLS + AUTH, implicit TLS) and the
HTTP e-mail API (respx)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cdp_hub.channel.base import OutboundMessage
from cdp_hub.channel.http import hmac_sha256_hex
from cdp_hub.errors import ConfigurationError, RetriableError
from cdp_hub.pipeline.build import build_stage
from cdp_hub.testing.channels import CallbackSample, ChannelTests
from channels.email import EmailApiChannel, SmtpChannel, build_email

# -- a real SMTP server ----------------------------------------------------------------------------------


@dataclass
class Received:
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    tls: bool


@dataclass
class Handler:
    """Accepts mail; ``mode`` makes RCPT fail like a real server would."""

    mode: str = "sent"
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.mode == "permanent" or address.startswith("nobody@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.mode == "transient":
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        # STARTTLS shows in session.ssl; implicit TLS in the transport.
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.received.append(Received(session.peer, str(envelope.mail_from), list(envelope.rcpt_tos), msg, tls))
        return "250 2.0.0 Ok: queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the client trusts it through ca_file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls_files[0]), str(tls_files[1]))
    return ctx


@dataclass
class Smtpd:
    handler: Handler
    port: int
    logins: list[tuple[bytes, bytes]]


def _authenticator(logins: list[tuple[bytes, bytes]]) -> Any:
    def check(server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
        if ok:
            logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=ok, handled=False)  # unhandled: the server answers 535 itself
    return check


@pytest.fixture
def smtpd() -> Iterator[Smtpd]:
    """Plain SMTP on 127.0.0.1 (no TLS, no AUTH)."""
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield Smtpd(handler, controller.port, [])
    controller.stop()


@pytest.fixture
def smtpd_starttls(tls_files: tuple[Path, Path]) -> Iterator[Smtpd]:
    """SMTP that requires STARTTLS, then AUTH."""
    handler, logins = Handler(), []
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=server_context(tls_files),
                            require_starttls=True, auth_required=True, authenticator=_authenticator(logins))
    controller.start()
    yield Smtpd(handler, controller.port, logins)
    controller.stop()


@pytest.fixture
def smtpd_tls(tls_files: tuple[Path, Path]) -> Iterator[Smtpd]:
    """SMTP over implicit TLS (the port 465 style)."""
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), ssl_context=server_context(tls_files),
                            server_hostname="127.0.0.1")
    controller.start()
    yield Smtpd(handler, controller.port, [])
    controller.stop()


def smtp_config(server: Smtpd, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "start_tls": False, "sender": "news@shop.example",
            "sender_name": "Магазин", "timeout": 5, **extra}


class TestSmtpConformance(ChannelTests):
    channel_class = SmtpChannel
    recipient = "anna@example.com"
    config = {"host": "127.0.0.1", "sender": "news@shop.example"}

    @pytest.fixture
    def channel_config(self, smtpd: Smtpd) -> dict[str, Any]:
        self.server = smtpd
        return smtp_config(smtpd)

    def simulate(self, provider: Any, outcome: str) -> None:
        self.server.handler.mode = outcome


def message(to: str = "anna@example.com", **extra: Any) -> OutboundMessage:
    return TestSmtpConformance().message(to=to, **extra)


async def test_smtp_html_and_text_parts_and_unsubscribe_headers(smtpd: Smtpd) -> None:
    ch = SmtpChannel(smtp_config(smtpd, reply_to="help@shop.example"))
    msg = message(subject="Скидка 10%", text="Привет, Анна!", html="<p>Привет, <b>Анна</b>!</p>",
                  headers={"List-Unsubscribe": "<https://shop.example/u/1>",
                           "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    async with ch:
        receipt = await ch.send(msg)
    assert receipt.status == "sent"
    assert receipt.provider_message_id == f"<{msg.message_id}@shop.example>"
    [got] = smtpd.handler.received
    assert got.mail_from == "news@shop.example" and got.rcpt_tos == ["anna@example.com"]
    m = got.message
    assert m["Subject"] == "Скидка 10%"
    assert m["From"].addresses[0].display_name == "Магазин"
    assert m["Message-ID"] == f"<{msg.message_id}@shop.example>"
    assert m["List-Unsubscribe"] == "<https://shop.example/u/1>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert m["Reply-To"] == "help@shop.example"
    assert m.get_content_type() == "multipart/alternative"
    assert m.get_body(("plain",)).get_content().strip() == "Привет, Анна!"  # type: ignore[union-attr]
    assert "<b>Анна</b>" in m.get_body(("html",)).get_content()  # type: ignore[union-attr]


async def test_smtp_reuses_connections(smtpd: Smtpd) -> None:
    ch = SmtpChannel(smtp_config(smtpd, pool_size=2, messages_per_connection=3))
    async with ch:
        for _ in range(7):
            await ch.send(message())
    assert len(smtpd.handler.received) == 7
    peers = {r.peer for r in smtpd.handler.received}
    # One connection at a time here (sequential sends): reconnects only after every 3 messages.
    assert ch.connections_opened == 3 and len(peers) == 3


async def test_smtp_reconnects_when_the_server_closed_an_idle_connection(smtpd: Smtpd) -> None:
    ch = SmtpChannel(smtp_config(smtpd, pool_size=1))
    async with ch:
        await ch.send(message())
        conn = ch._conns[0]
        await conn.client.quit()  # as if the server had timed the idle session out
        await ch.send(message())
    assert len(smtpd.handler.received) == 2 and ch.connections_opened == 2


async def test_smtp_hard_bounce_is_permanent_and_greylisting_is_retried(smtpd: Smtpd) -> None:
    ch = SmtpChannel(smtp_config(smtpd))
    async with ch:
        receipt = await ch.send(message(to="nobody@example.com"))
        assert receipt.status == "failed" and receipt.permanent
        assert receipt.reason is not None and receipt.reason.startswith("550")
        smtpd.handler.mode = "transient"
        with pytest.raises(RetriableError, match="451"):
            await ch.send(message())
        smtpd.handler.mode = "sent"
        assert (await ch.send(message())).status == "sent"  # the session survived the refusals


async def test_smtp_starttls_and_auth(smtpd_starttls: Smtpd, tls_files: tuple[Path, Path]) -> None:
    cfg = smtp_config(smtpd_starttls, start_tls=True, ca_file=str(tls_files[0]), username="hub", password="s3cret")
    async with SmtpChannel(cfg) as ch:
        assert (await ch.send(message())).status == "sent"
    assert smtpd_starttls.handler.received[0].tls
    assert smtpd_starttls.logins == [(b"hub", b"s3cret")]

    async with SmtpChannel({**cfg, "password": "wrong"}) as ch:
        with pytest.raises(ConfigurationError, match="login refused"):
            await ch.send(message())
    # A server that demands STARTTLS refuses a client that will not use it.
    async with SmtpChannel({**cfg, "start_tls": False}) as ch:
        with pytest.raises((ConfigurationError, RetriableError)):
            await ch.send(message())
    assert len(smtpd_starttls.handler.received) == 1


async def test_smtp_implicit_tls(smtpd_tls: Smtpd, tls_files: tuple[Path, Path]) -> None:
    cfg = smtp_config(smtpd_tls, use_tls=True, start_tls=None, ca_file=str(tls_files[0]))
    async with SmtpChannel(cfg) as ch:
        assert (await ch.send(message())).status == "sent"
    assert smtpd_tls.handler.received[0].tls
    # Without the CA the certificate is refused: transient from the channel's view, never silently plain.
    async with SmtpChannel({**cfg, "ca_file": None}) as ch:
        with pytest.raises(RetriableError):
            await ch.send(message())


async def test_smtp_server_down_is_retriable() -> None:
    async with SmtpChannel({"host": "127.0.0.1", "port": free_port(), "sender": "a@b.example", "timeout": 2}) as ch:
        with pytest.raises(RetriableError, match="cannot connect"):
            await ch.send(message())


def test_smtp_config_checks() -> None:
    with pytest.raises(ConfigurationError, match="exclude"):
        SmtpChannel({"host": "h", "sender": "a@b.c", "use_tls": True, "start_tls": True})
    with pytest.raises(ConfigurationError, match="both username and password"):
        SmtpChannel({"host": "h", "sender": "a@b.c", "username": "u"})


def test_text_only_message_is_not_multipart() -> None:
    m = build_email(message(html=None), sender="a@shop.example")
    assert m.get_content_type() == "text/plain"


# -- HTTP e-mail API -------------------------------------------------------------------------------------

API = "https://api.mail.test/v1/messages"
API_CONFIG = {"base_url": "https://api.mail.test", "api_key": "mail-key", "sender": "news@shop.example",
              "sender_name": "Shop", "callback_secret": "ev-secret"}
_EVENTS = orjson.dumps([
    {"event": "delivered", "custom_id": "m-1", "id": "e-1"},
    {"event": "open", "custom_id": "m-1", "id": "e-1"},
    {"event": "click", "custom_id": "m-1", "id": "e-1", "url": "https://shop.example/sale"},
    {"event": "bounced", "custom_id": "m-2", "id": "e-2", "bounce_type": "hard", "reason": "550 5.1.1 unknown"},
    {"event": "bounced", "custom_id": "m-3", "id": "e-3", "bounce_type": "soft"},
    {"event": "processed", "custom_id": "m-4"},
    {"event": "complained", "custom_id": "m-5"},
])


class TestEmailApiConformance(ChannelTests):
    channel_class = EmailApiChannel
    config = {**API_CONFIG, "callback_signing": "body"}  # the samples are signed once, at import: no timestamp
    recipient = "anna@example.com"
    callback_samples = [CallbackSample(
        _EVENTS, ("delivered", "opened", "clicked", "failed", "failed"),
        headers={"X-Signature": hmac_sha256_hex("ev-secret", _EVENTS)},
        message_ids=("m-1", "m-1", "m-1", "m-2", "m-5"), permanent=(False, False, False, True, True),
    )]

    def simulate(self, provider: Any, outcome: str) -> None:
        if outcome == "sent":
            provider.post(API).respond(202, json={"id": "e-100"})
        elif outcome == "transient":
            provider.post(API).respond(429, headers={"Retry-After": "2"})
        else:
            provider.post(API).respond(422, json={"error": {"code": "invalid_recipient", "message": "no MX"}})


@respx.mock
async def test_email_api_request() -> None:
    route = respx.post(API).respond(202, json={"id": "e-1"})
    async with httpx.AsyncClient() as http:
        ch = EmailApiChannel(API_CONFIG, http=http)
        msg = message(headers={"List-Unsubscribe": "<https://shop.example/u/1>"})
        receipt = await ch.send(msg)
    assert receipt.provider_message_id == "e-1"
    req = route.calls.last.request
    assert req.headers["authorization"] == "Bearer mail-key" and req.headers["idempotency-key"] == msg.message_id
    body = orjson.loads(req.content)
    assert body["from"] == {"email": "news@shop.example", "name": "Shop"}
    assert body["to"] == [{"email": "anna@example.com"}]
    assert body["html"] == msg.html and body["text"] == msg.text and body["custom_id"] == msg.message_id
    assert body["headers"]["List-Unsubscribe"] == "<https://shop.example/u/1>"
    assert body["headers"]["Message-ID"] == f"<{msg.message_id}@shop.example>"


async def test_email_api_events_need_the_signature() -> None:
    with pytest.raises(PermissionError):
        await EmailApiChannel(API_CONFIG).parse_callback({"X-Signature": "bad"}, _EVENTS)


async def test_stage_sends_marketing_mail_through_a_real_smtp_server(smtpd: Smtpd, tmp_path: Path, pg_dsn: str,
                                                                      redis_url: str) -> None:
    """Delivery stage -> smtp channel -> aiosmtpd: rendered parts, List-Unsubscribe, hard bounce suppressed."""
    from cdp_hub.bus.memory import MemoryBus
    from cdp_hub.hub import Hub
    from cdp_hub.metrics import Metrics
    from cdp_hub.schema.events import Event
    from tests.conftest import hub_settings
    from tests.test_delivery_stage import intent, make_profile, record

    settings = hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, delivery_retry_backoff=0.001,
                            unsubscribe_url="https://hub.shop.example/v1/unsubscribe/{message_id}",
                            channels={"email": {"type": "smtp", "config": smtp_config(smtpd)}})
    async with Hub(settings, bus=MemoryBus(), metrics=Metrics()) as hub:
        anna = await make_profile(hub, golden={"first_name": "Анна", "locale": "ru"},
                                  identities=[("email", "anna@example.com")])
        nobody = await make_profile(hub, identities=[("email", "nobody@example.com")])
        first, second = intent(anna, channel="email"), intent(nobody, channel="email")
        out = await build_stage(hub, "delivery").handle([record(hub, first), record(hub, second)])
        suppressed = await hub.store.fetchval("SELECT value FROM suppressions")
    events = {Event.from_json(m.value).properties["message_id"]: Event.from_json(m.value) for m in out.messages}
    assert events[first.message_id].type == "message.sent"
    assert events[second.message_id].type == "message.failed" and events[second.message_id].properties["permanent"]
    assert suppressed == "nobody@example.com"
    [got] = smtpd.handler.received
    m = got.message
    assert m["Subject"] == "Добро пожаловать, Анна!" and got.rcpt_tos == ["anna@example.com"]
    assert m["List-Unsubscribe"] == f"<https://hub.shop.example/v1/unsubscribe/{first.message_id}>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Здравствуйте, Анна!" in m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "<p>Здравствуйте, Анна!</p>" in m.get_body(("html",)).get_content()  # type: ignore[union-attr]
