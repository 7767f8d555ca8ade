"""Airflow operators for cdp-hub jobs; each returns the run's summary (pushed to XCom).

    CdpHubJobOperator(job="segments-nightly")                 a configured [jobs.NAME]
    CdpHubSyncOperator(instance="shop", stream=None)          a connector sync (checkpointed)
    CdpHubSegmentRecomputeOperator(segments=None)             segment membership, segment.entered/exited
    CdpHubBirthdayScanOperator()                              today's birthdays (idempotent)
    CdpHubImportOperator(files=[...], source="legacy_crm")    the set-wise bulk import

The ad-hoc operators (sync, recompute, scan) are claimed and recorded under ``job_name``, by default
``airflow.<dag_id>.<task_id>``. Give a configured job's name to share its one-run-at-a-time claim with the
scheduler, or use :class:`CdpHubJobOperator`. A run skipped because another one holds the job raises
``AirflowSkipException``; a failed run raises ``AirflowException`` with the recorded error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from cdp_hub.airflow.hooks import CdpHubHook
from cdp_hub.jobs.scheduler import JobOutcome

__all__ = ["CdpHubBirthdayScanOperator", "CdpHubImportOperator", "CdpHubJobOperator",
           "CdpHubSegmentRecomputeOperator", "CdpHubSyncOperator"]


def _result(outcome: JobOutcome) -> dict[str, Any]:
    if outcome.status == "skipped":
        raise AirflowSkipException(f"cdp-hub job {outcome.job}: another run of it is in progress")
    if outcome.status == "failed":
        raise AirflowException(f"cdp-hub job {outcome.job} failed (run {outcome.run_id}): {outcome.error}")
    return {"job": outcome.job, "run_id": outcome.run_id, "seconds": round(outcome.seconds, 3),
            **outcome.result}


class _CdpHubOperator(BaseOperator):
    template_fields: Sequence[str] = ("config",)

    def __init__(self, *, config: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    def hook(self) -> CdpHubHook:
        return CdpHubHook(self.config)


class CdpHubJobOperator(_CdpHubOperator):
    """Runs the configured job ``[jobs.<job>]`` of the cdp-hub config."""

    template_fields: Sequence[str] = ("config", "job")

    def __init__(self, *, job: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job

    def execute(self, context: Any) -> dict[str, Any]:
        return _result(self.hook().run_job(self.job))


class _KindOperator(_CdpHubOperator):
    kind = ""

    def __init__(self, *, job_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name

    def options(self) -> dict[str, Any]:
        return {}

    def execute(self, context: Any) -> dict[str, Any]:
        name = self.job_name or f"airflow.{self.dag_id}.{self.task_id}"
        return _result(self.hook().run_kind(self.kind, self.options(), name=name))


class CdpHubSyncOperator(_KindOperator):
    """Pull sync of a configured connector instance (checkpointed in PostgreSQL)."""

    kind = "sync"
    template_fields: Sequence[str] = ("config", "instance", "stream")

    def __init__(self, *, instance: str, stream: str | None = None, full_refresh: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.instance = instance
        self.stream = stream
        self.full_refresh = full_refresh

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"instance": self.instance, "full_refresh": self.full_refresh}
        if self.stream:
            options["stream"] = self.stream
        return options


class CdpHubSegmentRecomputeOperator(_KindOperator):
    """Recompute segments (default: every segment) and emit segment.entered/exited."""

    kind = "segment_recompute"

    def __init__(self, *, segments: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.segments = list(segments or [])

    def options(self) -> dict[str, Any]:
        return {"segments": self.segments} if self.segments else {}


class CdpHubBirthdayScanOperator(_KindOperator):
    """Publish today's birthdays (a second run the same day publishes nothing)."""

    kind = "birthday_scan"


class CdpHubImportOperator(_CdpHubOperator):
    """The set-wise bulk import of CSV / JSON Lines files (``cdp-hub import``)."""

    template_fields: Sequence[str] = ("config", "files", "source")

    def __init__(self, *, files: Sequence[str], source: str, event_type: str = "customer.updated",
                 fmt: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = list(files)
        self.source = source
        self.event_type = event_type
        self.fmt = fmt

    def execute(self, context: Any) -> dict[str, Any]:
        summary = self.hook().import_files(self.files, source=self.source, event_type=self.event_type,
                                           fmt=self.fmt)
        if not summary.get("records"):
            raise AirflowException(f"cdp-hub import of {self.files}: no records read")
        return summary
