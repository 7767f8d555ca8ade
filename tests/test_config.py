"""Configuration precedence: code arguments > environment > config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdp_hub.config import Settings, load_settings
from cdp_hub.errors import ConfigurationError


def test_environment_overrides_the_file_and_code_overrides_both(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text('bus = "kafka"\nhttp_port = 9000\ntopic_partitions = 6\n'
                   '[channels.email]\ntype = "smtp"\nconfig = { host = "smtp.local" }\n', encoding="utf-8")
    monkeypatch.setenv("CDP_HUB_HTTP_PORT", "9100")
    monkeypatch.setenv("CDP_HUB_CHANNELS__SMS__TYPE", "sms_http")
    s = load_settings(cfg)
    assert (s.bus, s.http_port, s.topic_partitions) == ("kafka", 9100, 6)
    assert set(s.channels) == {"email", "sms"} and s.channels["email"].config == {"host": "smtp.local"}
    assert load_settings(cfg, http_port=9200).http_port == 9200
    # Code that builds Settings directly (tests, embedding) is not overridden by the environment.
    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", "postgresql://elsewhere/db")
    assert Settings(postgres_dsn="postgresql://here/db").postgres_dsn == "postgresql://here/db"
    assert Settings().postgres_dsn == "postgresql://elsewhere/db"


def test_the_file_does_not_leak_into_later_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("http_port = 9300\n", encoding="utf-8")
    assert load_settings(cfg).http_port == 9300
    assert Settings().http_port == 8080


def test_errors_name_the_file_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('bus = "pigeon"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"c\.toml: bus"):
        load_settings(cfg)
    with pytest.raises(ConfigurationError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_the_readme_configuration_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from cdp_hub.plugins import load_plugins

    for key in [k for k in __import__("os").environ if k.startswith("CDP_HUB_")]:
        monkeypatch.delenv(key)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```toml\n(bus = \"kafka\".*?)```", readme, re.S)
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text(example, encoding="utf-8")
    settings = load_settings(cfg)
    registry = load_plugins()
    for name, inst in settings.connectors.items():
        registry.connector(inst.type)(inst.config, instance=name)  # validates the connector's options
    for name, inst in settings.channels.items():
        registry.channel(inst.type)(inst.config, instance=name)


def test_kafka_compression_is_one_the_bus_knows() -> None:
    from typing import get_args

    from cdp_hub.bus.kafka import COMPRESSIONS, DEFAULT_COMPRESSION

    field = Settings.model_fields["kafka_compression"]
    assert set(get_args(field.annotation)) == set(COMPRESSIONS)
    assert Settings().kafka_compression == DEFAULT_COMPRESSION == "zstd"
    with pytest.raises(ValueError, match="kafka_compression"):
        Settings(kafka_compression="brotli")
