"""The complete example of docs/connectors.md works: its module and its test file pass as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

_EXAMPLE = re.compile(r"<!-- example: (?P<path>[\w./]+) -->\s*```python\n(?P<code>.*?)```", re.S)


def test_guide_example_passes_its_conformance_tests(repo_root: Path, tmp_path: Path) -> None:
    guide = (repo_root / "docs" / "connectors.md").read_text(encoding="utf-8")
    files = {m["path"]: m["code"] for m in _EXAMPLE.finditer(guide)}
    assert set(files) == {"cdp_hub_newsletter.py", "tests/test_newsletter.py"}
    for rel, code in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nasyncio_mode = "auto"\n'
                                             'asyncio_default_fixture_loop_scope = "function"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_HUB_", "PYTEST_"))}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "10 passed" in proc.stdout
