"""Apache Airflow integration (``pip install 'cdp-hub[airflow]'``): a provider-style package.

    hooks.py      CdpHubHook: the hub of a cdp-hub config file, a job run on it (claimed and recorded)
    operators.py  CdpHubJobOperator (a configured [jobs.NAME]), CdpHubSyncOperator, CdpHubImportOperator,
                  CdpHubSegmentRecomputeOperator, CdpHubBirthdayScanOperator
    dags.py       build_dags(): one DAG per configured job, on the job's cron and time zone, and a
                  ``cdp_hub_refresh`` DAG: every sync job, then every segment recompute

The operators call the same job functions as the scheduler inside ``cdp-hub run``
(:mod:`cdp_hub.jobs.kinds`) through the same :class:`~cdp_hub.jobs.scheduler.JobRunner`. A run started by
Airflow is claimed in PostgreSQL like a scheduled one, so it never overlaps a run of the same job elsewhere.
It is recorded in ``job_runs`` with trigger ``airflow`` (``cdp-hub jobs history``). A run that finds the job
held by another run is skipped (``AirflowSkipException``); a failed run fails the task.

Nothing else in :mod:`cdp_hub` imports this package, so the hub runs without Airflow installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Provider metadata, the shape Airflow's providers manager reads (``apache_airflow_provider`` entry point)."""
    return {
        "package-name": "cdp-hub",
        "name": "cdp-hub",
        "description": "Connector syncs, file imports, segment recomputes and the birthday scan of a cdp-hub.",
        "hook-class-names": ["cdp_hub.airflow.hooks.CdpHubHook"],
        "connection-types": [],
        "versions": ["0.1.0"],
    }
