"""Secrets never reach a log line, an error, the DLQ or the CLI's output.

The main test configures real secrets (a PostgreSQL password, an API key that travels in a query string, a
Telegram bot token that travels in the URL path, an admin token, an event-source key, a Redis password), runs
the CLI at DEBUG through a sync, a failing connection, ``config show`` and a Telegram send (httpx and httpcore
log every request at INFO/DEBUG), dead-letters a record whose error quotes a URL, and greps everything that
was written for the secrets.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import respx

from cdp_hub.cli import main
from cdp_hub.config import ChannelInstance
from cdp_hub.daemon import create_app
from cdp_hub.dlq.envelope import dead_letter_from_error
from cdp_hub.errors import ConfigurationError, RetriableError
from cdp_hub.hub import Hub
from cdp_hub.redact import MASK, collect_secrets, public_view, redact, register_secrets
from cdp_hub.testing import MockApi
from channels.telegram import TelegramChannel
from connectors.loyalty import LoyaltyConnector
from tests.test_channel_telegram import TestTelegramConformance

PG_PASSWORD = "Pg-S3cret-pass"
API_KEY = "ApiK3y-very-secret"
BOT_TOKEN = "424242:TgB0t-S3cret-token"
ADMIN_TOKEN = "Admin-T0ken-S3cret"
EDGE_KEY = "Edge-K3y-S3cret"
REDIS_PASSWORD = "Redis-S3cret-pass"
WEBHOOK_SECRET = "Webhook-S3cret-hmac"
SECRETS = (PG_PASSWORD, API_KEY, BOT_TOKEN, BOT_TOKEN.split(":")[1], ADMIN_TOKEN, EDGE_KEY, REDIS_PASSWORD,
           WEBHOOK_SECRET)


@pytest.mark.parametrize(("text", "shown"), [
    ('HTTP Request: POST https://api.telegram.org/bot123456:AAH-x_y/sendMessage "HTTP/1.1 200 OK"',
     'HTTP Request: POST https://api.telegram.org/bot***/sendMessage "HTTP/1.1 200 OK"'),
    ("GET https://api.shop.test/v1/orders?page=2&apiKey=abc123&limit=5",
     "GET https://api.shop.test/v1/orders?page=2&apiKey=***&limit=5"),
    ("https://x.test/a?access_token=t0k&client_secret=s3c", "https://x.test/a?access_token=***&client_secret=***"),
    ("postgresql://cdp:pa55word@db.internal:5432/cdp", "postgresql://cdp:***@db.internal:5432/cdp"),
    ("cannot reach redis://:S3cretPass@10.0.0.7:6379/0", "cannot reach redis://:***@10.0.0.7:6379/0"),
    ("[(b'Host', b'x.test'), (b'Authorization', b'Bearer eyJhbGci')]",
     "[(b'Host', b'x.test'), (b'Authorization', b'Bearer ***')]"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ("X-Api-Key: k-123456", "X-Api-Key: ***"),
    # What carries no credential stays as it was.
    ("http://127.0.0.1:8080/v1/events?page=2", "http://127.0.0.1:8080/v1/events?page=2"),
    ("kafka at 127.0.0.1:19092", "kafka at 127.0.0.1:19092"),
])
def test_credentials_are_redacted_wherever_they_appear(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_registered_values_are_redacted_whatever_surrounds_them() -> None:
    register_secrets(["0nly-kn0wn-by-value"])
    assert redact("provider said: token 0nly-kn0wn-by-value rejected") == f"provider said: token {MASK} rejected"
    register_secrets(["short"])  # too short to replace everywhere without mangling ordinary text
    assert redact("a short line") == "a short line"


def test_errors_are_redacted_when_they_are_made() -> None:
    err = RetriableError("GET https://crm.test/api?api_key=abcdef failed")
    assert "abcdef" not in str(err) and "api_key=***" in str(err)
    assert "p4ss" not in str(ConfigurationError("postgresql://u:p4ss@h/db is unreachable"))


def test_secrets_are_collected_from_settings_and_options() -> None:
    from cdp_hub.config import Settings

    settings = Settings(postgres_dsn="postgresql://u:Pg-collected-pw@h/db", admin_token=ADMIN_TOKEN,
                        connectors={"shop": {"type": "ecommerce", "config": {
                            "auth": {"type": "api_key", "key": API_KEY}, "base_url": "https://x.test"}}},
                        channels={"tg": {"type": "telegram", "config": {"bot_token": BOT_TOKEN}}})
    found = collect_secrets(settings)
    assert {"Pg-collected-pw", ADMIN_TOKEN, API_KEY, BOT_TOKEN} <= found
    view = public_view(settings)
    assert view["postgres_dsn"] == "postgresql://u:***@h/db" and view["admin_token"] == MASK
    assert view["connectors"]["shop"]["config"]["auth"]["key"] == MASK
    assert view["connectors"]["shop"]["config"]["base_url"] == "https://x.test"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The CLI replaces the root handler; the test puts pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{password}@{host}"))


def test_no_secret_reaches_the_logs_the_dlq_or_the_cli(
        tmp_path: Path, pg_dsn: str, redis_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, root_logging: None) -> None:
    for key in list(os.environ):
        if key.startswith("CDP_HUB_"):
            monkeypatch.delenv(key)
    config = tmp_path / "cdp-hub.toml"
    config.write_text(f'''
bus = "memory"
postgres_dsn = "{_with_password(pg_dsn, PG_PASSWORD)}"
redis_url = "{redis_url}"
data_dir = "{tmp_path / 'data'}"
admin_token = "{ADMIN_TOKEN}"
log_level = "DEBUG"

[event_sources.pos]
keys = ["{EDGE_KEY}"]

[connectors.club]
type = "loyalty"

[connectors.club.config]
base_url = "https://loyalty.test"
page_size = 2
max_attempts = 1
webhook_secret = "{WEBHOOK_SECRET}"
auth = {{ type = "api_key", key = "{API_KEY}", location = "query", query_param = "apiKey" }}

[channels.tg]
type = "telegram"

[channels.tg.config]
bot_token = "{BOT_TOKEN}"
base_url = "https://api.telegram.test"
''', encoding="utf-8")
    written: list[str] = []

    def run(*argv: str) -> int:
        code = main(["-c", str(config), *argv])
        out = capsys.readouterr()
        written.extend((out.out, out.err))
        return code

    # A sync at DEBUG: httpx logs every request URL (the API key is in its query string).
    records = [{"transaction_id": f"T{n}", "card_number": "2775000000000043", "type": "accrual", "points": n,
                "created_at": f"2026-11-0{n}T10:00:00Z"} for n in range(1, 4)]
    with respx.mock(assert_all_called=False) as router:
        connector = LoyaltyConnector({"base_url": "https://loyalty.test", "page_size": 2})
        MockApi(connector, "transactions", records, page_size=2).install(router)
        assert run("sync", "club", "--stream", "transactions") == 0
    assert "HTTP Request: GET https://loyalty.test" in "".join(written), "httpx's request lines were not logged"
    assert "apiKey=***" in "".join(written)

    assert run("config", "show") == 0
    assert run("config", "show", "--json") == 0
    assert "club" in written[-2]

    # An unreachable database and Redis, each with its password in the URL.
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text(encoding="utf-8").replace(
        f"redis_url = \"{redis_url}\"", f"redis_url = \"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0\""),
        encoding="utf-8")
    code = main(["-c", str(bad), "dlq", "list"])
    out = capsys.readouterr()
    written.extend((out.out, out.err))
    assert code == 4 and "redis://:***@127.0.0.1:1/0" in out.err  # 4: a backend is unreachable
    unreachable_pg = config.read_text(encoding="utf-8").replace(
        _with_password(pg_dsn, PG_PASSWORD), f"postgresql://cdp:{PG_PASSWORD}@127.0.0.1:1/cdp")
    bad.write_text(unreachable_pg, encoding="utf-8")
    code = main(["-c", str(bad), "migrate"])
    out = capsys.readouterr()
    written.extend((out.out, out.err))
    assert code == 4 and "postgresql://cdp:***@127.0.0.1:1/cdp" in out.err

    # A Telegram send: the token is in the URL path of every request; a refusal is logged with its traceback.
    log = logging.getLogger("cdp_hub.test_secrets")

    async def telegram() -> None:
        with respx.mock() as router:
            router.post(f"https://api.telegram.test/bot{BOT_TOKEN}/sendMessage").mock(side_effect=[
                httpx.Response(200, json={"ok": True, "result": {"message_id": 1}}),
                httpx.Response(500, json={"ok": False, "description": "Internal"}),
            ])
            async with httpx.AsyncClient() as http:
                channel = TelegramChannel({"bot_token": BOT_TOKEN, "base_url": "https://api.telegram.test"},
                                          http=http)
                await channel.start()
                await channel.send(TestTelegramConformance().message(to="1"))
                try:
                    await channel.send(TestTelegramConformance().message(to="1"))
                except RetriableError:
                    log.exception("telegram send failed")
                request = httpx.Request("GET", f"https://api.telegram.test/bot{BOT_TOKEN}/getMe?token={API_KEY}")
                try:
                    httpx.Response(401, request=request).raise_for_status()
                except httpx.HTTPStatusError as exc:  # the exception's text quotes the URL
                    log.warning("provider refused: %s", exc, exc_info=True)
                    letter = dead_letter_from_error(exc, stage="delivery", payload=b"{}")
                    written.append(letter.model_dump_json())

    asyncio.run(telegram())
    log.debug("headers: %s", [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())])
    log.info("connecting to %s", _with_password(pg_dsn, PG_PASSWORD))
    written.append(capsys.readouterr().err)

    everything = "\n".join(written)
    assert "HTTP Request: POST https://api.telegram.test/bot***/sendMessage" in everything
    assert "Traceback" in everything and "provider refused" in everything
    leaked = [secret for secret in SECRETS if secret in everything]
    assert leaked == [], f"secrets in the output: {leaked}"


async def test_readyz_names_a_bad_instance_without_its_secrets(hub: Hub) -> None:
    hub.settings.channels["tg"] = ChannelInstance(type="telegram", config={
        "bot_token": BOT_TOKEN, "base_url": f"https://user:{PG_PASSWORD}@api.telegram.test", "chat": "typo"})
    register_secrets(collect_secrets(hub.settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hub") as c:
        answer = await c.get("/readyz")
    assert answer.status_code == 503 and "tg: chat: Extra inputs are not permitted" in answer.text
    assert [s for s in SECRETS if s in answer.text] == []
