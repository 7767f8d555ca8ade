"""The DAG factory: Airflow DAGs built from a cdp-hub config's ``[jobs]``.

    # dags/cdp_hub.py in the Airflow DAG folder
    from cdp_hub.airflow.dags import build_dags
    globals().update(build_dags("/etc/cdp-hub/cdp-hub.toml"))

    cdp_hub_<job>      one DAG per enabled job: its cron in its time zone (CronTriggerTimetable), one task
                       ``run`` (CdpHubJobOperator), no catch-up, one active run
    cdp_hub_refresh    no schedule (trigger it, or make it a dependency of your ETL): every sync job in
                       parallel, then every segment recompute, so segments see the fresh data

Jobs run by Airflow should not also run in ``cdp-hub run``: set ``scheduler_enabled = false`` there (a slot
would still run once per claim, but twice per schedule: once for each scheduler).
"""

from __future__ import annotations

import re
from datetime import datetime

from airflow.sdk import DAG, CronTriggerTimetable

from cdp_hub.airflow.operators import CdpHubJobOperator
from cdp_hub.config import Settings, load_settings

__all__ = ["REFRESH_DAG_ID", "build_dags", "dag_id_for"]

REFRESH_DAG_ID = "cdp_hub_refresh"
START = datetime(2026, 1, 1)  # no catch-up: only the first slot after a DAG is switched on runs


def dag_id_for(job: str) -> str:
    """``cdp_hub_<job>``, with characters Airflow does not take in an id replaced by ``_``."""
    return "cdp_hub_" + re.sub(r"[^A-Za-z0-9_.-]", "_", job)


def build_dags(config: str | None = None, *, settings: Settings | None = None) -> dict[str, DAG]:
    """The DAGs of the config at ``config`` (else ``$CDP_HUB_CONFIG``), by dag id."""
    settings = settings or load_settings(config)
    dags: dict[str, DAG] = {}
    enabled = {name: job for name, job in sorted(settings.jobs.items()) if job.enabled}
    for name, job in enabled.items():
        dag_id = dag_id_for(name)
        with DAG(dag_id, schedule=CronTriggerTimetable(job.cron, timezone=job.timezone), start_date=START,
                 catchup=False, max_active_runs=1, tags=["cdp-hub", job.kind],
                 description=f"cdp-hub job {name} ({job.kind}, {job.cron} {job.timezone})") as dag:
            CdpHubJobOperator(task_id="run", job=name, config=config)
        dags[dag_id] = dag
    with DAG(REFRESH_DAG_ID, schedule=None, start_date=START, catchup=False, max_active_runs=1,
             tags=["cdp-hub"], description="every cdp-hub sync job, then every segment recompute") as refresh:
        syncs = [CdpHubJobOperator(task_id=f"sync_{name}", job=name, config=config)
                 for name, job in enabled.items() if job.kind == "sync"]
        recomputes = [CdpHubJobOperator(task_id=f"recompute_{name}", job=name, config=config)
                      for name, job in enabled.items() if job.kind == "segment_recompute"]
        for recompute in recomputes:
            for sync in syncs:
                sync >> recompute
    dags[REFRESH_DAG_ID] = refresh
    return dags
