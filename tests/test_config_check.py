"""`cdp-hub config check`, `/readyz` on a misconfigured instance, and the one duration syntax."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from cdp_hub.checks import instance_problems
from cdp_hub.cli import main
from cdp_hub.config import ChannelInstance, ConnectorInstance, Settings, load_settings
from cdp_hub.daemon import create_app
from cdp_hub.durations import parse_duration, parse_seconds
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.plugins import get_registry
from cdp_hub.segments.model import Segment

# -- durations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("2w", 1209600), ("1h30m", 5400),
    ("1d12h", 129600), ("2m30s", 150), (" 10 m ", 600), ("0.5s", 0.5), ("PT15M", 900), ("P1D", 86400),
    ("P1DT2H30M", 95400), ("pt0.5s", 0.5), ("P2W", 1209600), (90, 90), (2.5, 2.5), ("90", 90),
    (timedelta(minutes=3), 180),
])
def test_one_duration_syntax(text: str | float | timedelta, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["", "10 minutes", "m", "1h2", "P", "PT", "P1M", "P1Y", "-5m", -5, True, "1m1h"])
def test_a_bad_duration_names_the_field(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^max_age: bad duration") as caught:
        parse_duration(bad, field="max_age")  # type: ignore[arg-type]  # the bad types are the point
    assert "'15m'" in str(caught.value) or "negative" in str(caught.value)


def test_settings_segments_and_connectors_take_the_same_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(max_trigger_age="1h30m", consent_link_ttl="P3D", shutdown_grace_seconds="2m",
                        edge_retry_after="PT10S", delivery_send_timeout=15, marketing_caps={"1d12h": 2})
    assert settings.shutdown_grace_seconds == 120.0 and settings.edge_retry_after == 10.0
    assert settings.delivery_send_timeout == 15.0
    assert parse_duration(settings.max_trigger_age) == timedelta(minutes=90)
    with pytest.raises(ConfigurationError, match=r"priority_window: .*bad duration '1 hour'"):
        load_settings(priority_window="1 hour")
    with pytest.raises(ConfigurationError, match=r"marketing_caps: .*window '1 day'"):
        load_settings(marketing_caps={"1 day": 2})
    with pytest.raises(ConfigurationError, match=r"shutdown_grace_seconds: .*bad duration"):
        load_settings(shutdown_grace_seconds="soon")
    segment = Segment.model_validate({"id": "recent_buyers", "all": [
        {"aggregate": "count", "event": "order.paid", "within": "P30D", "op": "gte", "value": 1},
        {"aggregate": "last", "event": "order.paid", "older_than": "1w3d"}]})
    assert segment.model_dump_json().count("P30D") == 1
    with pytest.raises(ValueError, match=r"AggregateRule\]\.within\n  String should match pattern"):
        Segment.model_validate({"id": "x", "all": [
            {"aggregate": "count", "event": "order.paid", "within": "30 days", "op": "gte", "value": 1}]})
    from connectors.ecommerce import EcommerceConnector

    shop = EcommerceConnector({"base_url": "https://shop.test", "lookback": "1h30m"})
    assert shop.config.lookback == timedelta(minutes=90)  # type: ignore[attr-defined]
    assert EcommerceConnector({"base_url": "https://shop.test", "lookback": "PT5M"}).config.lookback == \
        timedelta(minutes=5)  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"lookback: .*bad duration"):
        EcommerceConnector({"base_url": "https://shop.test", "lookback": "a while"})


# -- instance checks -------------------------------------------------------------------------------------


def test_instance_problems_name_the_instance_and_the_option_never_the_value() -> None:
    settings = Settings(
        channels={"email": ChannelInstance(type="smtp", config={"host": "smtp.test", "sender": "a@shop.test",
                                                                "pasword": "hunter2-secret"}),
                  "sms": ChannelInstance(type="sms_htp", config={}),
                  "off": ChannelInstance(type="nope", enabled=False)},
        connectors={"shop": ConnectorInstance(type="ecommerce", config={"base_url": "https://shop.test",
                                                                         "batch_size": 100})})
    problems = {(p.kind, p.name): p.reason for p in instance_problems(settings, get_registry())}
    assert set(problems) == {("channel", "email"), ("channel", "sms"), ("connector", "shop")}
    assert "pasword: Extra inputs are not permitted" in problems["channel", "email"]
    assert "hunter2" not in problems["channel", "email"]
    assert "unknown channel type 'sms_htp'" in problems["channel", "sms"]
    assert "sms_http" in problems["channel", "sms"]  # the installed types, to spot the typo
    assert "hint: batch_size is a top-level setting" in problems["connector", "shop"]
    assert "[connectors.shop.config]" in problems["connector", "shop"]


async def test_readyz_fails_on_a_misconfigured_channel(hub: Hub) -> None:
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        assert (await client.get("/readyz")).status_code == 200
    hub.settings.channels["sms"] = ChannelInstance(type="sms_http", config={"base_url": "https://sms.test",
                                                                             "sendr": "SHOP"})
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["checks"]["bus"] == body["checks"]["postgres"] == body["checks"]["redis"] == "ok"
    assert body["checks"]["channels"].startswith("misconfigured: sms: ")
    [problem] = body["problems"]
    assert problem["kind"] == "channel" and problem["name"] == "sms"
    assert "api_key: Field required" in problem["reason"] and "sendr: Extra inputs" in problem["reason"]


# -- cdp-hub config check --------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CDP_HUB_"):
            monkeypatch.delenv(key)


def _config(tmp_path: Path, pg_dsn: str, redis_url: str, extra: str = "") -> Path:
    path = tmp_path / "cdp-hub.toml"
    path.write_text(f'''
bus = "memory"
postgres_dsn = "{pg_dsn}"
redis_url = "{redis_url}"
data_dir = "{tmp_path / 'data'}"
consent_policy = "opt_out"

[channels.email]
type = "outbox"
config = {{ directory = "{tmp_path / 'outbox'}" }}

[channels.sms]
type = "outbox"
config = {{ directory = "{tmp_path / 'outbox'}", kind = "sms" }}

[connectors.club]
type = "loyalty"

[connectors.club.config]
base_url = "https://loyalty.test"
{extra}''', encoding="utf-8")
    return path


def test_config_check_passes_a_good_configuration(tmp_path: Path, pg_dsn: str, redis_url: str, clean_env: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, pg_dsn, redis_url)
    assert main(["-c", str(config), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert "channel email: ok (outbox)" in out and "connector club: ok (loyalty)" in out
    assert "backend postgres (postgresql://" in out and out.strip().endswith("configuration ok")
    assert main(["-c", str(config), "config", "check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert {(c["kind"], c["status"]) for c in report["checks"]} >= {("backend", "ok"), ("scenarios", "ok")}


def test_config_check_names_a_bad_instance_and_exits_3(tmp_path: Path, pg_dsn: str, redis_url: str,
                                                      clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    # A top-level setting written after [connectors.club.config] lands in the connector's options.
    config = _config(tmp_path, pg_dsn, redis_url, extra='page_size = 50\nbatch_size = 100\n')
    assert main(["-c", str(config), "config", "check", "--offline"]) == 3
    out = capsys.readouterr().out
    assert "connector club: invalid: batch_size: Extra inputs are not permitted" in out
    assert "hint: batch_size is a top-level setting" in out
    assert "backend" not in out  # --offline


def test_config_check_exits_4_when_a_backend_is_unreachable(tmp_path: Path, pg_dsn: str, clean_env: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, pg_dsn, "redis://:R3dis-pass-word@127.0.0.1:1/0")
    assert main(["-c", str(config), "config", "check", "--timeout", "3"]) == 4
    out = capsys.readouterr().out
    assert "backend redis (redis://:***@127.0.0.1:1/0): unreachable: cannot reach Redis" in out
    assert "backend postgres" in out and "R3dis-pass-word" not in out
    assert out.strip().endswith("a backend is unreachable")
