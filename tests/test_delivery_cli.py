"""Delivery CLI: template preview (from a file and from the database), template list, channel scaffold."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from cdp_hub.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./cdp-hub.toml
    monkeypatch.delenv("CDP_HUB_CONFIG", raising=False)


def test_render_from_a_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "anna.json").write_text(json.dumps({"first_name": "Анна", "locale": "ru"}), encoding="utf-8")
    assert main(["templates", "render", "welcome", "--profile", "anna.json", "--vars", '{"bonus": 1500}']) == 0
    out = capsys.readouterr().out
    assert out.startswith("# welcome/email.ru.j2 (ru)\nSubject: Добро пожаловать, Анна!\n--- text ---\n")
    assert "1\xa0500 приветственных баллов" in out and "--- html ---" in out


def test_render_json_with_event_and_own_templates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t" / "order").mkdir(parents=True)
    (tmp_path / "t" / "order" / "sms.j2").write_text("Заказ {{ event.properties.order_id }} на "
                                                     "{{ event.properties.total | money('RUB') }}")
    (tmp_path / "p.json").write_text("{}")
    (tmp_path / "e.json").write_text(json.dumps({"properties": {"order_id": "A-1", "total": "990.5"}}))
    assert main(["templates", "render", "order", "--profile", "p.json", "--kind", "sms", "--event", "e.json",
                 "--templates-dir", "t", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "template_file": "order/sms.j2", "locale": "ru", "text": "Заказ A-1 на 990,50\xa0₽"}


def test_render_a_profile_from_the_database(pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pid = uuid.uuid4()

    async def seed() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2::jsonb)", pid,
                               json.dumps({"first_name": "Boris", "locale": "en"}))
        finally:
            await conn.close()

    asyncio.run(seed())
    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", pg_dsn)
    assert main(["templates", "render", "welcome", "--profile", str(pid), "--kind", "sms"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "Welcome, Boris! Your account is ready."
    assert main(["templates", "render", "welcome", "--profile", str(uuid.uuid4())]) == 3  # configuration
    assert "no profile" in capsys.readouterr().err


def test_render_errors_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.json").write_text("{}")
    assert main(["templates", "render", "nope", "--profile", "p.json"]) == 1
    assert "no template 'nope' for email" in capsys.readouterr().err
    assert main(["templates", "render", "welcome", "--profile", "not-a-uuid"]) == 3
    assert "neither a profile id" in capsys.readouterr().err


def test_templates_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "list"]) == 0
    assert ("welcome: email, email.ru, messenger, messenger.ru, push, push.ru, sms, sms.ru"
            in capsys.readouterr().out.splitlines())


def test_new_channel_scaffold_passes_its_own_tests(tmp_path: Path) -> None:
    assert main(["new", "channel", "acme_sms", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "cdp-hub-acme-sms"
    assert (root / "cdp_hub_acme_sms" / "__init__.py").exists()
    assert 'acme_sms = "cdp_hub_acme_sms"' in (root / "pyproject.toml").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
                          cwd=root, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "9 passed" in summary and "failed" not in summary and "skipped" not in summary, summary

    assert main(["new", "channel", "acme_sms", "--dir", str(tmp_path)]) == 3  # never overwrites
    assert main(["new", "channel", "Bad-Name", "--dir", str(tmp_path)]) == 3
