"""The Airflow provider in a real Airflow: the generated DAGs import, and one task runs with ``dag.test()``.

Airflow has an environment of its own (``make test`` builds it once with ``make airflow-env``, cached in
``~/.cache/cdp-hub``; ``CDP_HUB_AIRFLOW_PYTHON`` names its interpreter). The Airflow process runs the source
under test (PYTHONPATH) against this test's PostgreSQL database. Airflow's own metadata database is SQLite
in a temporary AIRFLOW_HOME.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdp_hub.hub import Hub
from cdp_hub.store import JobRepository, SegmentRepository

from .test_segments import add_event, add_profile

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_PYTHON = Path(os.environ.get("CDP_HUB_AIRFLOW_PYTHON",
                                     Path.home() / ".cache" / "cdp-hub" / "airflow-3.3.2" / "bin" / "python"))


async def _run(*argv: str, env: dict[str, str], timeout: float = 600) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{' '.join(argv[1:])} exited with {proc.returncode}:\n{text[-5000:]}"
    return text


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"no Airflow environment at {AIRFLOW_PYTHON}: run `make airflow-env` (or `make test`), or "
                    "set CDP_HUB_AIRFLOW_PYTHON", pytrace=False)
    return AIRFLOW_PYTHON


@pytest.mark.slow
async def test_generated_dags_import_and_a_recompute_task_runs_against_the_services(
        hub: Hub, tmp_path: Path, pg_dsn: str, airflow_python: Path) -> None:
    lapsed = await add_profile(hub)
    await add_event(hub, lapsed, "order.paid", datetime.now(UTC) - timedelta(days=120), order_id="1", total="10")

    config = tmp_path / "cdp-hub.toml"
    config.write_text(f'''
bus = "memory"
postgres_dsn = "{pg_dsn}"
redis_url = "fakeredis://"
data_dir = "{tmp_path / 'data'}"
poll_timeout_ms = 20

[connectors.shop]
type = "ecommerce"
config = {{ base_url = "https://shop.example.ru" }}

[jobs.shop-sync]
kind = "sync"
cron = "*/15 * * * *"
options = {{ instance = "shop" }}

[jobs.segments]
kind = "segment_recompute"
cron = "0 3 * * *"
timezone = "Europe/Moscow"
options = {{ segments = ["lapsed_customers"] }}
''', encoding="utf-8")
    home = tmp_path / "airflow"
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "airflow" / "cdp_hub_dags.py", dags)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_HUB_", "AIRFLOW_"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "CDP_HUB_CONFIG": str(config),
                "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    await _run(str(airflow_python), "-m", "airflow", "db", "migrate", env=env)
    out = await _run(str(airflow_python), str(REPO / "tests" / "airflow_dag_check.py"), str(dags),
                     "cdp_hub_segments", env=env)

    [line] = [x for x in out.splitlines() if x.startswith("DAGS ")]
    report = json.loads(line[5:])
    assert report["errors"] == {}
    assert set(report["dags"]) == {"cdp_hub_shop-sync", "cdp_hub_segments", "cdp_hub_refresh"}
    assert report["dags"]["cdp_hub_segments"]["tasks"] == {"run": []}
    assert report["dags"]["cdp_hub_segments"]["timezone"] == "Europe/Moscow"
    assert report["dags"]["cdp_hub_segments"]["schedule"] == "0 3 * * *"
    assert report["dags"]["cdp_hub_refresh"]["schedule"] is None
    assert report["dags"]["cdp_hub_segments"]["max_active_runs"] == 1
    # The refresh DAG syncs first, then recomputes.
    assert report["dags"]["cdp_hub_refresh"]["tasks"] == {"sync_shop-sync": [],
                                                          "recompute_segments": ["sync_shop-sync"]}
    assert "STATE success" in out, out[-5000:]

    [run] = await JobRepository(hub.store).job_history("segments")
    assert (run.status, run.trigger, run.kind) == ("succeeded", "airflow", "segment_recompute")
    assert run.result["segments"]["lapsed_customers"]["entered"] == 1
    assert await SegmentRepository(hub.store).count_members("lapsed_customers") == 1
