"""``cdp-hub scenarios validate|simulate`` and the daemon's refusal to start with an invalid scenario."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdp_hub.config import ChannelInstance, Settings
from cdp_hub.hub import Hub
from cdp_hub.schema import parse_event
from cdp_hub.store import ConsentRepository, ConsentStatement
from cdp_hub.triggers.cli import simulate
from cdp_hub.triggers.scenario import Scenario
from tests.test_cli import cdp_hub

BAD = """\
id: cart_promo
trigger: {event: cart.updatedd}
conditions:
  - {field: profile.citty, op: eq, value: Москва}
channel: telegram
template: welcome
"""


def _config(tmp_path: Path, scenarios: dict[str, str], extra: str = "") -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for name, text in scenarios.items():
        (folder / name).write_text(text, encoding="utf-8")
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text(f'scenarios_dir = "{folder}"\n{extra}\n[channels.email]\ntype = "outbox"\n'
                   f'config = {{ directory = "{tmp_path / "outbox"}" }}\n', encoding="utf-8")
    return cfg


def test_validate_checks_references_and_names_file_line_and_path(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {
        "promo.yaml": BAD,
        "reminder.yaml": "id: reminder\ntrigger: {event: cart.updated}\n"
                         "conditions: [{field: event.properties.totall, op: gt, value: 0}]\n"
                         "channel: email\ntemplate: no_such_template\n",
        "lapsed.yaml": "id: lapsed\ntrigger: {event: segment.entered}\n"
                       "conditions:\n  - {field: event.properties.segment, op: eq, value: lapsed_customerz}\n"
                       "channel: email\ntemplate: win_back\n",
    })
    res = cdp_hub("--config", str(cfg), "scenarios", "validate")
    assert res.returncode == 1
    err = res.stderr
    promo, reminder, lapsed = (str(tmp_path / "scenarios" / f) for f in ("promo.yaml", "reminder.yaml", "lapsed.yaml"))
    assert f"{promo}:2: $.trigger.event: unknown event type 'cart.updatedd' (did you mean 'cart.updated'?)" in err
    assert f"{promo}:4: $.conditions[0].field: unknown profile trait 'citty' (did you mean 'city'?)" in err
    assert f"{promo}:5: $.channel: channel 'telegram' is not configured" in err
    assert f"{reminder}:3: $.conditions[0].field: cart.updated events have no property 'totall' " \
           "(did you mean 'total'?)" in err
    assert f"{reminder}:5: $.template: no template 'no_such_template' for email in locale 'ru'" in err
    assert f"{lapsed}:4: $.conditions[0].value: unknown segment 'lapsed_customerz'" in err
    # Built-ins whose fallbacks (sms, push) this deployment has not configured: warnings, not errors.
    assert "builtin:welcome.yaml:6: $.fallbacks[0]: warning: channel 'sms' is not configured" in err
    assert "6 error(s) in 3 file(s)" in err


def test_the_daemon_refuses_to_start_with_an_invalid_scenario(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"promo.yaml": BAD})
    res = cdp_hub("--config", str(cfg), "run", "--no-http")
    assert res.returncode == 3  # a configuration error
    assert "invalid scenarios" in res.stderr and "cart.updatedd" in res.stderr


async def test_simulate_prints_each_decision_and_the_rendered_message(hub: Hub, tmp_path: Path) -> None:
    settings: Settings = hub.settings.model_copy(update={
        "channels": {"email": ChannelInstance(type="outbox", config={"directory": str(tmp_path)})}})
    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid,
                            {"first_name": "Анна", "locale": "ru"})
    await ConsentRepository(hub.store).record([ConsentStatement(
        pid, "email", "marketing", "opted_in", datetime(2026, 1, 1, tzinfo=UTC), "form", uuid.uuid4())])
    cart = Scenario.model_validate({
        "id": "abandoned_cart", "trigger": {"event": "cart.updated"}, "delay": "1h", "cancel_on": ["order.placed"],
        "hold_until": {"key": "event.properties.cart_id"}, "channel": "email", "template": "abandoned_cart"})
    t0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

    def line(kind: str, at: datetime, rid: str, **props: object) -> str:
        return parse_event({"type": kind, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
                            "identities": [{"kind": "email", "value": "anna@example.ru"}],
                            "properties": props}).to_json().decode()

    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([
        line("cart.updated", t0, "c1", cart_id="A", total="990"),
        line("cart.updated", t0 + timedelta(minutes=20), "c2", cart_id="A", total="1990"),
        line("cart.updated", t0 + timedelta(days=1), "c3", cart_id="B", total="500"),
        line("order.placed", t0 + timedelta(days=1, minutes=30), "o1", order_id="B"),
    ]), encoding="utf-8")
    rows = await simulate(settings, cart, events_file=events, for_profile=str(pid))
    # Cart A: one reminder for the last change (1 990 ₽); cart B: the order came during the wait.
    assert [r["decision"] for r in rows] == ["sent", "suppressed"]
    sent = rows[0]
    assert sent["message"]["channel"] == "email" and "Анна" in (sent["message"]["subject"] or "") + sent["message"]["text"]
    assert "1\xa0990" in sent["message"]["text"]
    # Nothing the simulation did is left behind.
    assert await hub.store.fetchval("SELECT count(*) FROM scheduled_triggers") == 0

    # Judged as arriving now (a replay), the same events are history: too late.
    late = await simulate(settings, cart, events_file=events, for_profile=str(pid), now=True)
    assert {r["decision"] for r in late} == {"too_late"}


def test_simulate_from_the_command_line(tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    env = {"CDP_HUB_POSTGRES_DSN": pg_dsn, "CDP_HUB_REDIS_URL": redis_url, "CDP_HUB_DATA_DIR": str(tmp_path)}
    events = tmp_path / "e.jsonl"
    at = datetime.now(UTC) - timedelta(hours=3)
    events.write_text(parse_event({
        "type": "order.paid", "source": "shop", "source_record_id": "o1", "occurred_at": at.isoformat(),
        "identities": [{"kind": "email", "value": "a@example.ru"}],
        "properties": {"order_id": "o1", "total": "100", "currency": "RUB"}}).to_json().decode(), encoding="utf-8")
    res = cdp_hub("scenarios", "simulate", "order_confirmation", "--events", str(events), "--for",
                  str(uuid.uuid4()), "--json", env=env)
    assert res.returncode == 0, res.stderr
    [row] = json.loads(res.stdout)
    assert row["decision"] == "sent" and row["scenario"] == "order_confirmation"
    assert "render_error" in row or row["message"]["channel"] == "email"
    res = cdp_hub("scenarios", "simulate", "order_confirmation", "--events", str(events), "--for",
                  str(uuid.uuid4()), "--live-state", env=env)
    assert res.returncode == 3 and "--live-state needs --now" in res.stderr


DECISION_ALERT = """\
id: decision_alert
trigger: {event: message.decided}
conditions:
  - {field: event.properties.decision, op: eq, value: no_consent}
channel: email
template: welcome
category: service
"""


def test_validate_refuses_a_scenario_on_a_type_the_resolver_does_not_pass_on(tmp_path: Path) -> None:
    # message.decided is stored, not passed on to the triggers stage, unless profile_events_omit says otherwise
    cfg = _config(tmp_path, {"alert.yaml": DECISION_ALERT})
    res = cdp_hub("--config", str(cfg), "scenarios", "validate")
    assert res.returncode == 1
    assert (f"{tmp_path / 'scenarios' / 'alert.yaml'}:2: $.trigger.event: the resolver does not pass "
            "message.decided events on to the triggers stage (profile_events_omit)") in res.stderr
    (tmp_path / "scenarios").rename(tmp_path / "old")
    cfg = _config(tmp_path, {"alert.yaml": DECISION_ALERT}, extra="profile_events_omit = []")
    res = cdp_hub("--config", str(cfg), "scenarios", "validate")
    assert res.returncode == 0, res.stderr


async def test_simulate_with_the_live_state_and_the_other_scenarios(hub: Hub, tmp_path: Path, redis_url: str) -> None:
    from cdp_hub.hotstate import HotState

    settings: Settings = hub.settings.model_copy(update={
        "channels": {"email": ChannelInstance(type="outbox", config={"directory": str(tmp_path)})}})
    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid, {"first_name": "Анна"})
    await ConsentRepository(hub.store).record([ConsentStatement(
        pid, "email", "marketing", "opted_in", datetime(2026, 1, 1, tzinfo=UTC), "form", uuid.uuid4())])
    promo = Scenario.model_validate({
        "id": "promo", "trigger": {"event": "product.viewed"}, "channel": "email", "template": "welcome",
        "frequency_cap": {"max": 1, "per": "1d", "scope": "scenario"}})
    louder = Scenario.model_validate({
        "id": "louder", "trigger": {"event": "product.viewed"}, "channel": "email", "template": "welcome",
        "priority": 10})
    events = tmp_path / "events.jsonl"
    events.write_text(parse_event({
        "type": "product.viewed", "source": "shop", "source_record_id": "v1",
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "identities": [{"kind": "email", "value": "anna@example.ru"}],
        "properties": {"sku": "SKU1"}}).to_json().decode(), encoding="utf-8")

    async def decisions(**kw: object) -> list[tuple[str, str]]:
        rows = await simulate(settings, promo, events_file=events, for_profile=str(pid), now=True, **kw)  # type: ignore[arg-type]
        return [(r["scenario"], r["decision"]) for r in rows]

    assert await decisions() == [("promo", "sent")]
    # Another scenario of higher priority fires on the same view: promo loses to it.
    assert sorted(await decisions(others=[louder])) == [("louder", "sent"), ("promo", "lost_priority")]

    # The deployment really sent promo to this profile an hour ago: its cap counter says so.
    live = HotState(redis_url)
    async with live:
        key = live.cap_key("promo", str(pid))
        await live.redis.zadd(key, {"earlier-message": datetime.now(UTC).timestamp() - 3600})
        await live.redis.expire(key, 86400)
        try:
            assert await decisions(live_state=True) == [("promo", "capped")]
            assert await decisions() == [("promo", "sent")]  # the empty state again, and the counter untouched
            assert await live.redis.zcard(key) == 1
        finally:
            await live.redis.delete(key)

    # One message per viewed product and day: the deployment already sent one for SKU1. The claim is keyed by
    # a value of the replayed event, found from the events simulated (no keyspace scan).
    per_sku = Scenario.model_validate({
        "id": "per_sku", "trigger": {"event": "product.viewed"}, "channel": "email", "template": "welcome",
        "hold_until": {"key": "event.properties.sku", "window": "1d"}})

    async def sku_decisions(**kw: object) -> list[tuple[str, str]]:
        rows = await simulate(settings, per_sku, events_file=events, for_profile=str(pid), now=True, **kw)  # type: ignore[arg-type]
        return [(r["scenario"], r["decision"]) for r in rows]

    async with live:
        claim = live.dedupe_key("per_sku", str(pid), "SKU1")
        await live.redis.set(claim, b"earlier-message", ex=3600)
        try:
            assert await sku_decisions() == [("per_sku", "sent")]
            assert await sku_decisions(live_state=True) == [("per_sku", "duplicate")]
            assert await live.redis.get(claim) == b"earlier-message"  # read, never written
        finally:
            await live.redis.delete(claim)
