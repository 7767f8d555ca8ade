"""Plugin loading: built-ins through entry points, failures reported by name, hooks checked."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import BaseModel

from cdp_hub import Connector, hookimpl, hookspecs, plugins
from cdp_hub.schema import parse_event
from cdp_hub.schema.payloads import EVENT_TYPES

BUILTIN_CONNECTORS = {"ecommerce", "crm", "erp", "loyalty", "mobile"}
BUILTIN_CHANNEL_PLUGINS = {"outbox", "email", "sms", "push", "webhook"}


def test_builtins_load_through_the_entry_points() -> None:
    reg = plugins.load_plugins()
    assert set(reg.connectors) >= BUILTIN_CONNECTORS
    assert not reg.failures, reg.failures
    for name in BUILTIN_CONNECTORS:
        info = reg.connectors[name]
        assert info.distribution == "cdp-hub" and info.version
        assert info.plugin == name
    plugin_names = {info.plugin for info in reg.channels.values()}
    assert plugin_names >= BUILTIN_CHANNEL_PLUGINS


def test_cli_lists_plugins_with_distribution_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "cdp_hub.cli", "plugins", "--json"],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    names = {(p["kind"], p["name"]) for p in data["plugins"]}
    assert {("connector", n) for n in BUILTIN_CONNECTORS} <= names
    assert any(kind == "channel" for kind, _ in names)
    assert all(p["distribution"] == "cdp-hub" for p in data["plugins"])


class _Fake:
    def __init__(self, name: str, value: str, group: str) -> None:
        self.ep = EntryPoint(name=name, value=value, group=group)


def test_a_broken_plugin_is_reported_by_name_and_the_others_load(monkeypatch: pytest.MonkeyPatch) -> None:
    real = plugins.entry_points

    def fake_entry_points(group: str) -> list[Any]:
        eps = list(real(group=group))
        if group == plugins.CONNECTOR_GROUP:
            eps.append(EntryPoint(name="broken_shop", value="no_such_module_xyz", group=group))
        return eps

    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)
    reg = plugins.load_plugins()
    assert set(reg.connectors) >= BUILTIN_CONNECTORS
    [failure] = [f for f in reg.failures if f.name == "broken_shop"]
    assert "no_such_module_xyz" in failure.error
    with pytest.raises(Exception, match=r"broken_shop.*failed to load"):
        reg.connector("broken_shop")


def test_a_hook_that_raises_is_reported_and_the_others_register() -> None:
    class Exploding:
        __name__ = "exploding"

        @hookimpl
        def cdp_hub_register_connectors(self, register: Any) -> None:
            raise RuntimeError("boom")

    reg = plugins.load_plugins(extra=[Exploding()])
    assert set(reg.connectors) >= BUILTIN_CONNECTORS
    assert any("boom" in f.error for f in reg.failures)


def test_misspelled_hooks_are_caught() -> None:
    class Typo:
        __name__ = "typo"

        @hookimpl
        def cdp_hub_register_conectors(self, register: Any) -> None:  # sic
            pass

    reg = plugins.load_plugins(extra=[Typo()])
    assert any("cdp_hub_register_conectors" in f.error for f in reg.failures)


def test_third_party_plugin_registers_connector_and_event_type() -> None:
    class GiftCard(BaseModel):
        card: str

    class Kiosk(Connector):
        """In-store kiosk."""

        name = "acme_kiosk"

        def normalize(self, record: Any, *, stream: str | None = None) -> list[dict[str, Any]]:
            return [{"type": "acme.gift_card_issued", "occurred_at": record["at"],
                     "identities": [{"kind": "phone", "value": record["phone"]}],
                     "properties": {"card": record["card"]}}]

    class Plugin:
        __name__ = "acme"

        @hookimpl
        def cdp_hub_register_connectors(self, register: Any) -> None:
            register(Kiosk)

        @hookimpl
        def cdp_hub_register_event_types(self, register: Any) -> None:
            register("acme.gift_card_issued", GiftCard)

    try:
        reg = plugins.load_plugins(extra=[Plugin()])
        assert reg.connector("acme_kiosk") is Kiosk
        [event] = Kiosk(instance="kiosk").to_events({"id": "k1", "at": "2026-01-01T00:00:00Z",
                                                    "phone": "8 916 000 11 22", "card": "G-1"})
        assert event.type == "acme.gift_card_issued" and event.identities[0].value == "+79160001122"
        assert parse_event(json.loads(event.to_json())).properties == {"card": "G-1"}
    finally:
        EVENT_TYPES.pop("acme.gift_card_issued", None)


def test_every_hook_is_documented() -> None:
    hooks = [name for name in dir(hookspecs) if name.startswith("cdp_hub_")]
    assert hooks
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.strip()) > 40, f"hook {name} needs a docstring: it is the plugin contract"


def test_every_overridable_method_is_documented() -> None:
    from cdp_hub.channel.base import Channel

    for cls, names in ((Connector, ["normalize", "read", "check"]),
                       (Channel, ["send", "parse_callback", "start", "stop"])):
        for name in names:
            doc = getattr(cls, name).__doc__ or ""
            assert doc.strip(), f"{cls.__name__}.{name} is overridden by plugin authors and needs a docstring"


@pytest.mark.parametrize("name", ["ab", "acme_shop", "sms_http", "a1", "x" * 41, "a_"])
def test_plugin_names_that_pass(name: str) -> None:
    assert plugins.validate_plugin_name(name) == name


@pytest.mark.parametrize("name", ["", "a", "x" * 42, "Acme", "acme-shop", "1acme", "_acme", "acme shop",
                                  "acme\n", "ácme"])
def test_plugin_names_that_fail_say_the_rule(name: str) -> None:
    from cdp_hub.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"channel name .*: a lower-case letter, then .* 2 to 41"):
        plugins.validate_plugin_name(name, kind="channel")


def test_every_built_in_plugin_name_follows_the_rule() -> None:
    reg = plugins.load_plugins()
    for name in [*reg.connectors, *reg.channels]:
        assert plugins.PLUGIN_NAME_RE.fullmatch(name), name
