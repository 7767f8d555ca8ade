"""docs/channels.md stays true: its configuration parses into working channels, its plugin example passes
the conformance kit, and every channel type it names is installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from cdp_hub.config import Settings
from cdp_hub.plugins import load_plugins

DOC = Path(__file__).resolve().parent.parent / "docs" / "channels.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_configuration_example_builds_every_channel(tmp_path: Path) -> None:
    [config] = [b for b in blocks("toml") if "[channels.email]" in b]
    settings = Settings(**tomllib.loads(config))
    registry = load_plugins()
    assert len(settings.channels) == 7
    for name, instance in settings.channels.items():
        channel = registry.channel(instance.type)(instance.config, instance=name)
        assert channel.instance == name
    assert registry.channel("sms_http")(settings.channels["sms"].config).limits.max_batch == 100


def test_every_documented_type_is_installed() -> None:
    table = re.findall(r"^\| `([a-z_]+)` +\| (?:email|sms|push|messenger|webhook|any) ", DOC.read_text(encoding="utf-8"), re.M)
    assert set(table) == {"outbox", "smtp", "email_api", "sms_http", "fcm", "webhook", "telegram"}
    assert set(table) <= set(load_plugins().channels)


def test_plugin_example_passes_the_conformance_kit(tmp_path: Path) -> None:
    files = {}
    for block in blocks("python"):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = rest
    assert set(files) == {"acme_push.py", "test_acme_push.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "-o", "asyncio_mode=auto",
         "-o", "asyncio_default_fixture_loop_scope=function", "-o", "pythonpath=.", "--rootdir", str(tmp_path),
         "test_acme_push.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "9 passed" in proc.stdout.strip().splitlines()[-1], proc.stdout
