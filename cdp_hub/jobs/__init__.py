"""Scheduled jobs: connector syncs, segment recomputes and the birthday scan, on cron schedules.

    kinds.py       what each kind of job does (shared by the scheduler, `cdp-hub jobs run` and Airflow)
    scheduler.py   JobRunner (claim, run, record in job_runs) and Scheduler (cron slots in `cdp-hub run`)
    cli.py         cdp-hub jobs list | run | history
"""

from __future__ import annotations
