"""docs/scenarios.md: every YAML scenario in it is valid and passes the reference checks, every JSON event
example is a valid canonical event, and the TOML settings block is accepted."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from cdp_hub.config import Settings
from cdp_hub.schema import parse_event
from cdp_hub.triggers.checks import Installed, check_scenario_files

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"
TEXT = DOC.read_text(encoding="utf-8")


def test_every_yaml_example_is_a_valid_scenario_with_valid_references(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", TEXT, re.S)
    assert len(blocks) >= 3
    for n, block in enumerate(blocks):
        (tmp_path / f"example{n}.yaml").write_text(block, encoding="utf-8")
        assert yaml.safe_load(block)["id"]
    installed = Installed(channel_kind=lambda name: {"email": "email", "sms": "sms", "push": "push"}.get(name),
                          template_exists=lambda name, kind, locale: True, segments=frozenset({"vip"}))
    scenarios, problems = check_scenario_files([tmp_path], installed, builtin=False)
    assert problems == []
    assert {s.id for s in scenarios} == {"abandoned_cart", "browse_reminder", "vip_preview"}


def test_every_json_event_example_is_a_valid_event() -> None:
    blocks = re.findall(r"```json\n(.*?)```", TEXT, re.S)
    events = [json.loads(b.replace("…", "00000000-0000-0000-0000-000000000000")) for b in blocks]
    for data in events:
        data.setdefault("identities", [{"kind": "email", "value": "anna@example.ru"}])
        data.setdefault("occurred_at", "2026-06-01T09:00:00Z")
        assert parse_event(json.dumps(data).encode()).type == data["type"]
    assert {e["type"] for e in events} == {"consent.changed", "consent.requested", "message.decided"}


def test_the_settings_example_is_accepted() -> None:
    [block] = re.findall(r"```toml\n(.*?)```", TEXT, re.S)
    settings = Settings(**tomllib.loads(block))
    assert settings.consent_policy == "opt_in" and settings.marketing_caps == {"1d": 2, "7d": 5}
