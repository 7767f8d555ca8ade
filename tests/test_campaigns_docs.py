"""docs/campaigns.md: its campaign examples are valid with valid references, its settings are accepted; and
the `cdp-hub campaigns` commands as an operator uses them (validate with file:line errors, preview, launch
--wait, status, pause, resume and cancel on a run)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from cdp_hub.campaigns.checks import check_campaign_files
from cdp_hub.cli import main
from cdp_hub.config import Settings
from cdp_hub.store import Store
from cdp_hub.triggers.checks import Installed
from tests.campaign_data import EXCLUDED, SEGMENT, eligible, in_audience, seed

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "docs" / "campaigns.md").read_text(encoding="utf-8")


def test_every_yaml_example_is_a_valid_campaign_with_valid_references(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", TEXT, re.S)
    assert len(blocks) == 2
    for n, block in enumerate(blocks):
        (tmp_path / f"example{n}.yaml").write_text(block, encoding="utf-8")
    installed = Installed(channel_kind=lambda name: {"email": "email", "push": "push"}.get(name),
                          template_exists=lambda name, kind, locale: True,
                          segments=frozenset({"active_buyers", "complained_recently", "newsletter"}))
    campaigns, problems = check_campaign_files([tmp_path], installed)
    assert problems == []
    by_id = {c.id: c for c in campaigns}
    assert set(by_id) == {"spring_sale", "weekly_digest"}
    assert by_id["spring_sale"].consent_channels == ["email"]
    assert by_id["weekly_digest"].schedule is not None and by_id["weekly_digest"].schedule.cron == "0 10 * * MON"


def test_the_settings_example_is_accepted() -> None:
    [block] = re.findall(r"```toml\n(.*?)```", TEXT, re.S)
    settings = Settings(**tomllib.loads(block))
    assert settings.jobs["campaigns"].kind == "campaigns" and settings.campaign_lease == "30s"


def test_the_readme_links_the_guide() -> None:
    assert "docs/campaigns.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def _config(tmp_path: Path, pg_dsn: str, redis_url: str, campaign: str) -> Path:
    segments = tmp_path / "segments"
    segments.mkdir()
    for sid in (SEGMENT, EXCLUDED):
        (segments / f"{sid}.yaml").write_text(f"id: {sid}\nall:\n  - {{trait: city, op: eq, value: x}}\n")
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "spring.yaml").write_text(campaign)
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text(f'postgres_dsn = "{pg_dsn}"\nredis_url = "{redis_url}"\ndata_dir = "{tmp_path / "data"}"\n'
                   f'segments_dir = "{segments}"\ncampaigns_dir = "{campaigns}"\n')
    return cfg


def test_validate_names_file_line_and_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("CDP_HUB_")]:
        monkeypatch.delenv(name)
    # No database is needed to check files, nor reached by a launch that the checks refuse.
    cfg = _config(tmp_path, "postgresql://nobody@127.0.0.1:9/none", "redis://127.0.0.1:9/0", f"id: spring\naudience:\n  segment: {SEGMENT}x\n"
                  "channel: email\ntemplate: no_such_template\nrate_limit: 10\n")
    assert main(["--config", str(cfg), "campaigns", "validate"]) == 1
    out = capsys.readouterr().out
    path = tmp_path / "campaigns" / "spring.yaml"
    assert f"{path}:3: $.audience.segment: unknown segment '{SEGMENT}x' (did you mean '{SEGMENT}'?)" in out
    assert f"{path}:5: $.template: no template 'no_such_template' for email" in out
    assert "2 error(s) in 1 file(s)" in out
    assert main(["--config", str(cfg), "campaigns", "launch", "spring"]) == 3  # no launch with an error


async def test_launch_wait_status_and_control_from_the_command_line(
        tmp_path: Path, pg_dsn: str, redis_url: str, store: Store, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import os

    for name in [n for n in os.environ if n.startswith("CDP_HUB_")]:  # the config file says everything
        monkeypatch.delenv(name)
    await seed(store, 200, tag="cli")
    cfg = _config(tmp_path, pg_dsn, redis_url, f"id: spring\naudience: {{segment: {SEGMENT}, exclude: [{EXCLUDED}]}}\n"
                  "channel: email\ntemplate: welcome\nrate_limit: 1000\n")

    def cli(*args: str) -> tuple[int, str]:
        code = main(["--config", str(cfg), "campaigns", *args])
        return code, capsys.readouterr().out

    assert (await asyncio.to_thread(cli, "validate"))[0] == 0
    code, out = await asyncio.to_thread(cli, "preview", "spring", "--json")
    assert code == 0
    preview = json.loads(out)
    planned = sum(1 for g in range(1, 201) if in_audience(g))
    assert preview["audience"] == planned and preview["sample_eligible"] == sum(
        1 for g in range(1, 201) if eligible(g))

    code, out = await asyncio.to_thread(cli, "launch", "spring", "--wait")
    assert code == 0, out
    run_id = re.search(r"run ([0-9a-f-]{36}): ", out).group(1)  # type: ignore[union-attr]
    assert f"{planned} profiles planned" in out and ": done after" in out
    code, out = await asyncio.to_thread(cli, "status", run_id, "--json")
    status = json.loads(out)
    assert status["status"] == "done" and status["planned"] == planned
    assert status["sent"] == sum(1 for g in range(1, 201) if eligible(g))
    assert status["skipped"] == {"no_consent": planned - status["sent"]} and status["pending"] == 0
    code, out = await asyncio.to_thread(cli, "list", "--json")
    assert json.loads(out)[0]["latest_status"] == "done"
    code, out = await asyncio.to_thread(cli, "pause", run_id)
    assert code == 1 and "is done: cannot pause it" in out

    code, out = await asyncio.to_thread(cli, "launch", "spring")  # the daemon's job would send it
    second = re.search(r"run ([0-9a-f-]{36}): ", out).group(1)  # type: ignore[union-attr]
    assert (await asyncio.to_thread(cli, "pause", second)) == (0, f"run {second}: paused\n")
    assert (await asyncio.to_thread(cli, "resume", second)) == (0, f"run {second}: sending\n")
    assert (await asyncio.to_thread(cli, "cancel", second)) == (0, f"run {second}: cancelled\n")
    code, out = await asyncio.to_thread(cli, "status", "--campaign", "spring")
    assert f"campaign spring run {second}: cancelled" in out and f"campaign spring run {run_id}: done" in out
