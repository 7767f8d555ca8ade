"""The core command line, run as a user would (a subprocess with a config file)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cdp_hub(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "cdp_hub.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_the_commands() -> None:
    out = cdp_hub("--help").stdout
    for command in ("run", "migrate", "plugins", "schema", "dlq", "scenarios", "demo"):
        assert command in out


def test_schema_check_passes_on_the_committed_schemas_and_flags_a_stale_copy(tmp_path: Path) -> None:
    ok = cdp_hub("schema", "check", "--dir", str(ROOT / "schemas"))
    assert ok.returncode == 0, ok.stdout
    stale = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", stale)
    doc = json.loads((stale / "cdp.event.v1.json").read_text(encoding="utf-8"))
    del doc["$defs"]["Traits"]["properties"]["city"]  # the committed copy lacks a field: models add it
    (stale / "cdp.event.v1.json").write_text(json.dumps(doc), encoding="utf-8")
    res = cdp_hub("schema", "check", "--dir", str(stale))
    assert res.returncode == 1 and "additive" in res.stdout and "city" in res.stdout

    doc["$defs"]["Traits"]["properties"]["favourite_store"] = {"type": "string"}  # models lack a field
    (stale / "cdp.event.v1.json").write_text(json.dumps(doc), encoding="utf-8")
    res = cdp_hub("schema", "check", "--dir", str(stale))
    assert res.returncode == 2 and "BREAKING" in res.stdout and "favourite_store" in res.stdout


def test_scenarios_validate_reports_the_path(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("id: vip\ntrigger: {event: order.paid}\nchannel: email\ntemplate: welcome\n", encoding="utf-8")
    assert cdp_hub("scenarios", "validate", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: vip\ntrigger: {event: order.paid}\nchannel: email\n", encoding="utf-8")
    res = cdp_hub("scenarios", "validate", str(bad))
    assert res.returncode == 1 and "bad.yaml" in res.stderr and "'template' is a required property" in res.stderr


def test_bad_config_names_the_field_not_the_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text('bus = "carrier-pigeon"\nadmin_token = "hunter2"\n', encoding="utf-8")
    res = cdp_hub("--config", str(cfg), "migrate")
    assert res.returncode == 3  # a configuration error (documented exit codes)
    assert "bus" in res.stderr and "hunter2" not in res.stderr


def test_migrate_and_dlq_commands_against_postgres(tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    env = {"CDP_HUB_POSTGRES_DSN": pg_dsn, "CDP_HUB_REDIS_URL": redis_url, "CDP_HUB_DATA_DIR": str(tmp_path)}
    res = cdp_hub("migrate", env=env)
    assert res.returncode == 0 and "up to date" in res.stdout
    res = cdp_hub("dlq", "list", "--json", env=env)
    assert res.returncode == 0 and json.loads(res.stdout) == []


@pytest.mark.parametrize("args", [["run", "--stage", "nope"], ["dlq", "replay", "--fixes", "/no/such/file"]])
def test_usage_errors_are_clear(args: list[str], tmp_path: Path) -> None:
    res = cdp_hub(*args, env={"CDP_HUB_DATA_DIR": str(tmp_path)})
    assert res.returncode != 0
    assert "Traceback" not in res.stderr


def test_the_log_holds_no_request_urls_a_provider_credential_could_be_in() -> None:
    """httpx logs each request's URL at INFO (one line per message); only at DEBUG do they pass, redacted."""
    import logging

    from cdp_hub.logs import configure_logging

    root, httpx_logger = logging.getLogger(), logging.getLogger("httpx")
    saved = root.handlers[:], root.level, httpx_logger.level
    try:
        configure_logging("INFO", "json")
        assert not httpx_logger.isEnabledFor(logging.INFO)
        assert httpx_logger.isEnabledFor(logging.WARNING)
        # At DEBUG an operator asked for everything: the lines pass, scrubbed (tests/test_secrets.py).
        configure_logging("DEBUG", "json")
        assert httpx_logger.isEnabledFor(logging.DEBUG)
        assert logging.getLogger("cdp_hub.delivery").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        httpx_logger.setLevel(saved[2])


def test_client_library_lines_pass_once_a_minute_and_never_at_error() -> None:
    """A broker or database away for minutes: the outage's own ERROR line, not thousands of the clients'."""
    import logging

    from cdp_hub.logs import ClientLibraryNoise

    noise = ClientLibraryNoise(window=60.0)

    def line(logger: str, level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord(logger, level, __file__, 1, msg, None, None)

    for logger in ("aiokafka.conn", "asyncpg.pool"):
        first = line(logger, logging.ERROR, "Failed to restore the pool connection floor; retrying")
        assert noise.filter(first) and first.levelname == "WARNING"
        assert not noise.filter(line(logger, logging.WARNING, "Failed to restore the pool connection floor; "
                                                               "retrying"))
    assert noise.filter(line("cdp_hub.outages", logging.ERROR, "postgres unavailable"))
    assert noise.filter(line("cdp_hub.outages", logging.ERROR, "postgres unavailable"))  # the hub's own: all
