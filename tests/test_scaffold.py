"""One scaffold for both plugin kinds: the same layout, the same name rule, the same overwrite rule.

That the generated packages' own tests pass is checked by running them: test_scaffold_connector.py for a
connector, test_delivery_cli.py for a channel.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import cast

import pytest

from cdp_hub.cli import main
from cdp_hub.errors import ConfigurationError
from cdp_hub.plugins import PLUGIN_NAME_RULE, load_plugins
from cdp_hub.scaffold import KINDS, PluginKind, scaffold

MODULE_FILE = {"connector": "cdp_hub_acme_x.py", "channel": "cdp_hub_acme_x/__init__.py"}
GROUP = {"connector": "cdp_hub.connectors", "channel": "cdp_hub.channels"}
KIT = {"connector": "ConnectorTests", "channel": "ChannelTests"}


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CDP_HUB_CONFIG", raising=False)


@pytest.mark.parametrize("kind", KINDS)
def test_both_kinds_have_the_same_layout(kind: PluginKind, tmp_path: Path) -> None:
    root = scaffold(kind, "acme_x", tmp_path)
    assert root == tmp_path / "cdp-hub-acme-x"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted(["README.md", "pyproject.toml", MODULE_FILE[kind], "tests/test_acme_x.py"])
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["name"] == "cdp-hub-acme-x" and meta["project"]["dependencies"] == ["cdp-hub"]
    assert meta["project"]["entry-points"] == {GROUP[kind]: {"acme_x": "cdp_hub_acme_x"}}
    assert meta["tool"]["pytest"]["ini_options"]["pythonpath"] == ["."]
    test = (root / "tests" / "test_acme_x.py").read_text(encoding="utf-8")
    assert re.search(rf"^from cdp_hub\.testing(\.channels)? import .*\b{KIT[kind]}\b", test, re.MULTILINE)
    assert f"class TestAcmeX{kind.capitalize()}({KIT[kind]}):" in test
    assert "acme_x" in (root / "README.md").read_text(encoding="utf-8")
    for path in root.rglob("*"):
        if path.is_file():
            assert not re.search(r"\$\{?[a-z_]+|\{(name|module|dist)\}", path.read_text(encoding="utf-8")), path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["Acme-X", "a", "acme x", "9acme", "x" * 42])
def test_both_kinds_refuse_a_name_outside_the_rule(kind: str, name: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", kind, name, "--dir", str(tmp_path)]) == 3  # configuration (documented exit codes)
    assert f"{kind} name {name!r}: {PLUGIN_NAME_RULE}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kind", KINDS)
def test_both_kinds_write_over_an_existing_package_only_when_told(kind: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cdp-hub-acme-x").mkdir()  # an empty folder is fine
    assert main(["new", kind, "acme_x", "--dir", str(tmp_path)]) == 0
    readme = tmp_path / "cdp-hub-acme-x" / "README.md"
    readme.write_text("edited", encoding="utf-8")
    assert main(["new", kind, "acme_x", "--dir", str(tmp_path)]) == 3
    assert "exists and is not empty" in capsys.readouterr().err
    assert readme.read_text(encoding="utf-8") == "edited"
    assert main(["new", kind, "acme_x", "--dir", str(tmp_path), "--force"]) == 0
    assert readme.read_text(encoding="utf-8") != "edited"


def test_generated_channel_loads_as_a_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = scaffold("channel", "mail_lite", tmp_path, channel_kind="email")
    monkeypatch.syspath_prepend(str(root))
    module = importlib.import_module("cdp_hub_mail_lite")
    cls = load_plugins(extra=[module]).channel("mail_lite")
    assert (cls.kind, cls.address_kind) == ("email", "email")
    assert cls.config_model.model_json_schema()["additionalProperties"] is False
    assert 'recipient = "anna@example.com"' in (root / "tests" / "test_mail_lite.py").read_text(encoding="utf-8")


def test_channel_options_and_unknown_kinds(tmp_path: Path) -> None:
    root = scaffold("channel", "acme_push", tmp_path, channel_kind="push", address_kind="device_id")
    source = (root / "cdp_hub_acme_push" / "__init__.py").read_text(encoding="utf-8")
    assert 'kind = "push"' in source and 'address_kind = "device_id"' in source
    with pytest.raises(ConfigurationError, match="kind 'fax'"):
        scaffold("channel", "acme_fax", tmp_path, channel_kind="fax")
    with pytest.raises(ConfigurationError, match="cannot scaffold a 'segment'"):
        scaffold(cast(PluginKind, "segment"), "acme", tmp_path)
