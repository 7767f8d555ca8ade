"""cdp-hub's DAGs for Apache Airflow: copy this file into the DAG folder of an Airflow installation that has
``cdp-hub[airflow]`` installed, and point ``CDP_HUB_CONFIG`` at the hub's config file (its ``[jobs]`` become
DAGs: one per job on its cron and time zone, and ``cdp_hub_refresh``). Secrets come from the workers'
``CDP_HUB_*`` environment, as for the hub itself. See "Apache Airflow" in docs/operations.md.
"""

from __future__ import annotations

import os

from cdp_hub.airflow.dags import build_dags

globals().update(build_dags(os.environ.get("CDP_HUB_CONFIG")))
