"""``CdpHubHook``: a cdp-hub config file, and job runs on the hub it describes.

    CdpHubHook(config="/etc/cdp-hub/cdp-hub.toml")
      .run_job("segments-nightly")                    a configured [jobs.NAME], claimed and recorded
      .run_kind("sync", {"instance": "shop"}, name=)  an ad-hoc job of a kind, claimed and recorded as ``name``
      .import_files([...], source="legacy_crm")       the bulk import (``cdp-hub import``)

Each call opens the hub (bus, PostgreSQL, Redis, HTTP), runs and closes it: an Airflow task is a short
process. On the in-process bus the stages run inside the task until what it published is stored
(:mod:`cdp_hub.pipeline.embedded`), as for the CLI. The config file comes from the ``config`` argument, else
``$CDP_HUB_CONFIG``; ``CDP_HUB_*`` variables of the worker (secrets) override it, as everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from cdp_hub.config import JobConfig, Settings, load_settings
from cdp_hub.hub import Hub
from cdp_hub.jobs.scheduler import JobOutcome, JobRunner
from cdp_hub.pipeline.embedded import downstream

__all__ = ["CdpHubHook"]

TRIGGER = "airflow"


class CdpHubHook(BaseHook):
    """Runs cdp-hub jobs from Airflow tasks."""

    hook_name = "cdp-hub"

    def __init__(self, config: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    def settings(self) -> Settings:
        return load_settings(self.config)

    def run_job(self, job: str) -> JobOutcome:
        """Run the configured job ``[jobs.<job>]`` now."""
        return asyncio.run(self._run(self.settings(), job, None))

    def run_kind(self, kind: str, options: Mapping[str, Any], *, name: str) -> JobOutcome:
        """Run a job of ``kind`` with ``options``, claimed and recorded under ``name``."""
        # Not scheduled by cdp-hub (Airflow is the scheduler): the cron is only there to make a valid JobConfig.
        job = JobConfig.model_validate({"kind": kind, "cron": "@daily", "options": dict(options)})
        return asyncio.run(self._run(self.settings(), name, job))

    def import_files(self, files: Sequence[str | Path], *, source: str, event_type: str = "customer.updated",
                     fmt: str = "auto") -> dict[str, Any]:
        """The set-wise bulk import of ``files`` (``cdp-hub import``); its summary."""
        return asyncio.run(self._import(self.settings(), [Path(f) for f in files], source, event_type, fmt))

    @staticmethod
    async def _run(settings: Settings, name: str, job: JobConfig | None) -> JobOutcome:
        async with Hub(settings) as hub, downstream(hub) as settle:
            jobs = None if job is None else {**settings.jobs, name: job}
            return await JobRunner(hub, jobs, settle=settle).run(name, trigger=TRIGGER)

    @staticmethod
    async def _import(settings: Settings, files: list[Path], source: str, event_type: str,
                      fmt: str) -> dict[str, Any]:
        from cdp_hub.resolver.bulk import BulkImporter

        async with Hub(settings) as hub, downstream(hub):
            summary = await BulkImporter(hub, source=source, event_type=event_type).run(files, fmt=fmt)
        result: dict[str, Any] = summary.as_dict()
        return result
