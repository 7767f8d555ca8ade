"""`cdp-hub new connector NAME` generates a plugin package whose own tests pass as generated."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cdp_hub.cli import main
from cdp_hub.errors import ConfigurationError
from cdp_hub.scaffold import scaffold


def test_generated_package_tests_pass(tmp_path: Path) -> None:
    assert main(["new", "connector", "acme_shop", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "cdp-hub-acme-shop"
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["entry-points"]["cdp_hub.connectors"] == {"acme_shop": "cdp_hub_acme_shop"}
    assert (root / "cdp_hub_acme_shop.py").is_file() and (root / "tests" / "test_acme_shop.py").is_file()

    # Run the package's tests as its author would, but without installing it: the module is on PYTHONPATH,
    # the kit's fixtures come from the installed cdp_hub pytest plugin, and no services are needed.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_HUB_", "PYTEST_"))}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "10 passed" in proc.stdout, proc.stdout[-1000:]


def test_generated_connector_loads_as_a_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = scaffold("connector", "crm_lite", tmp_path)
    monkeypatch.syspath_prepend(str(root))
    import importlib

    from cdp_hub.plugins import load_plugins

    module = importlib.import_module("cdp_hub_crm_lite")
    registry = load_plugins(extra=[module])
    cls = registry.connector("crm_lite")
    assert cls.stream_names() == ["members"]
    assert cls.config_model.model_json_schema()["additionalProperties"] is False


def test_scaffold_refuses_bad_names_and_overwrites(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="lower-case"):
        scaffold("connector", "Acme-Shop", tmp_path)
    scaffold("connector", "acme", tmp_path)
    with pytest.raises(ConfigurationError, match="exists"):
        scaffold("connector", "acme", tmp_path)
    assert scaffold("connector", "acme", tmp_path, force=True).is_dir()
