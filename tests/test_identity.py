"""Identity rules: loading and validation, dynamic blocking, and the dry run of new rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cdp_hub.bus.memory import MemoryBus
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.resolver.dryrun import dry_run
from cdp_hub.resolver.rules import IdentityRules, load_rules

from .test_resolver import event, records


@pytest.fixture
async def hub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url, data_dir=tmp_path / "data")
    h = Hub(settings, bus=MemoryBus(), metrics=Metrics())
    await h.start()
    yield h
    await h.stop()


def test_rules_load_from_toml_yaml_json_and_name_bad_keys(tmp_path: Path) -> None:
    toml = tmp_path / "rules.toml"
    toml.write_text('max_merge_size = 5\n[kinds.email]\npriority = 70\nmax_per_profile = 3\n'
                    '[blocked]\nphone = ["8 (495) 111-22-33"]\n'
                    '[traits.city]\nstrategy = "source_priority"\nsources = ["crm"]\n')
    rules = load_rules(toml)
    # defaults kept: one account id per system's own customer key
    assert rules.max_merge_size == 5 and rules.limited_kinds() == {
        "crm_id": 1, "ecom_customer_id": 1, "erp_customer_id": 1, "loyalty_card": 1, "email": 3}
    assert ("phone", "+74951112233") in rules.blocked_set()  # normalized like events' identities
    assert rules.trait_rule("city").sources == ["crm"] and rules.trait_rule("zip").strategy == "most_recent"
    yml = tmp_path / "rules.yaml"
    yml.write_text("kinds:\n  device_id:\n    links: false\n")
    assert not load_rules(yml).kind_rule("device_id").links
    js = tmp_path / "rules.json"
    js.write_text(json.dumps({"max_merge_sise": 3}))
    with pytest.raises(ConfigurationError, match="max_merge_sise"):
        load_rules(js)
    with pytest.raises(ConfigurationError, match="not found"):
        load_rules(tmp_path / "missing.toml")


async def test_a_value_on_too_many_profiles_gets_blocked(hub: Hub) -> None:
    stage = build_stage(hub, "resolver", rules=IdentityRules(max_profiles_per_value=2))
    # Three customers with their own crm ids, all giving the store's phone at the till.
    for i in range(3):
        await stage.handle(records(event(("crm_id", f"K{i}"), ("email", f"k{i}@x.ru"), at=i)))
    for i in range(3):
        await stage.handle(records(event(("crm_id", f"K{i}"), ("phone", "+74950000001"), at=10 + i)))
    blocked = await hub.store.fetch("SELECT kind, value, reason FROM blocked_identities")
    assert [(r["kind"], r["value"]) for r in blocked] == [("phone", "+74950000001")]
    assert "3 profiles" in blocked[0]["reason"]
    assert await hub.store.fetchval("SELECT count(*) FROM identities WHERE kind = 'phone'") == 0
    # From now on the phone links nothing: a new customer with it gets a profile of their own.
    out = await stage.handle(records(event(("phone", "+74950000001"), ("email", "new@x.ru"), at=20)))
    assert [m for m in out.messages if m.headers[0] == ("cdp.type", b"profile.created")]
    assert await hub.store.fetchval("SELECT count(*) FROM profiles WHERE merged_into IS NULL") == 4


async def test_dry_run_reports_merges_and_splits_without_changing_anything(hub: Hub) -> None:
    today = IdentityRules(kinds={"device_id": {"links": False}})
    stage = build_stage(hub, "resolver", rules=today)
    await stage.handle(records(
        event(("email", "d1@x.ru"), ("device_id", "shared-tablet")),
        event(("email", "d2@x.ru"), ("device_id", "shared-tablet"), at=1),  # devices do not link today
        event(("email", "d3@x.ru"), at=2),
        event(("email", "d4@x.ru"), at=3),
        event(("phone", "+79160000300"), at=4),
        event(("email", "d4@x.ru"), ("phone", "+79160000300"), at=5),  # merges the phone's profile
    ))
    live = "SELECT count(*) FROM profiles WHERE merged_into IS NULL"
    assert await hub.store.fetchval(live) == 4

    same = await dry_run(hub.store, today)
    assert (same.events, same.merges, same.splits, same.profiles_now, same.profiles_after) == (6, 0, 0, 4, 4)

    linking = await dry_run(hub.store, IdentityRules())  # devices link: d1 and d2 become one
    assert (linking.merges, linking.profiles_merged, linking.splits, linking.profiles_after) == (1, 2, 0, 3)
    assert linking.merge_examples[0]["identities"] == ["device_id:shared-tablet", "email:d1@x.ru",
                                                       "email:d2@x.ru"]

    blocking = await dry_run(hub.store, today.model_copy(update={"blocked": {"phone": ["8 916 000-03-00"]}}))
    assert (blocking.unresolvable, blocking.merges, blocking.splits) == (1, 0, 1)  # the phone comes off d4
    text = blocking.render()
    assert "Splits: 1" in text and "split: profile" in text
    assert await hub.store.fetchval(live) == 4  # nothing was written


async def test_cli_dry_run_and_conflicts(hub: Hub, pg_dsn: str, redis_url: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    import orjson

    from cdp_hub.cli import main

    stage = build_stage(hub, "resolver")
    await stage.handle(records(event(("crm_id", "Q1"), ("email", "q1@x.ru"))))
    # refused: 2 crm ids; the record gets a profile of its own, the e-mail is shared
    await stage.handle(records(event(("crm_id", "Q2"), ("email", "q1@x.ru"), at=1)))
    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", pg_dsn)
    monkeypatch.setenv("CDP_HUB_REDIS_URL", redis_url)
    monkeypatch.setenv("CDP_HUB_DATA_DIR", str(tmp_path / "cli"))
    rules = tmp_path / "rules.toml"
    rules.write_text("[kinds.crm_id]\npriority = 100\n")  # no limit: the two would be one
    assert await asyncio.to_thread(main, ["identity", "dry-run", str(rules), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert (report["events"], report["profiles_now"], report["profiles_after"], report["merges"]) == (2, 2, 1, 1)
    assert await asyncio.to_thread(main, ["identity", "conflicts"]) == 0
    out = capsys.readouterr().out
    assert "shared_identity" in out and "email:q1@x.ru" in out
    assert await asyncio.to_thread(main, ["identity", "dry-run", str(tmp_path / "nope.toml")]) == 3  # configuration
    assert "not found" in capsys.readouterr().err


def test_the_rules_example_in_the_docs_loads(repo_root: Path, tmp_path: Path) -> None:
    text = (repo_root / "docs" / "identity.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "identity-rules.toml"
    path.write_text(block)
    rules = load_rules(path)
    assert rules.limited_kinds() == {"crm_id": 1, "ecom_customer_id": 1, "erp_customer_id": 1, "loyalty_card": 1}
    assert not rules.kind_rule("device_id").links
    assert ("phone", "+74951112233") in rules.blocked_set()
    assert rules.trait_rule("first_name").sources == ["crm", "loyalty", "shop"]
