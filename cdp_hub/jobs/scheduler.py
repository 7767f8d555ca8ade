"""The ``[jobs]`` schedule: cron expressions in a time zone, run inside ``cdp-hub run``, once per slot.

    Scheduler.serve()                                  (a task of `cdp-hub run`, every process)
      every job: next slot = croniter(cron, now in its zone)
      slot due ─▶ JobRunner.run(job, slot) ─▶ JobRepository.start_job_run   one process wins the slot and
                                              │                              runs the job; the others skip it
                                              ├─ heartbeat every lease/3
                                              ├─ run_job_kind(...)            (cdp_hub/jobs/kinds.py)
                                              └─ finish_job_run(status, seconds, result | error)

Every process of a deployment may run the scheduler: the claim in PostgreSQL (an advisory lock on the
job's name, a unique cron slot, no live run of the job) lets one of them run each slot and keeps a job from
running twice at once, whether it was started by the schedule, by ``cdp-hub jobs run`` or by Airflow. A run
whose process died stops sending heartbeats. After the lease its row becomes ``abandoned``, and the job runs
again at its next slot.

Slots are computed from the time the scheduler starts: a slot that passed while no process ran is not run
late (as a Kubernetes CronJob without ``startingDeadlineSeconds``). ``cdp-hub jobs run NAME`` runs a job by
hand. Wall-clock times follow the job's time zone, daylight-saving changes included (croniter).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from cdp_hub.config import JobConfig
from cdp_hub.hub import Hub
from cdp_hub.jobs.kinds import check_options, run_job_kind
from cdp_hub.logs import log_context
from cdp_hub.pipeline.build import Pipeline
from cdp_hub.pipeline.embedded import Settle, pipeline_settle, settle_nothing
from cdp_hub.store.jobs import JobRepository

__all__ = ["DEFAULT_LEASE", "JobOutcome", "JobRunner", "Scheduler", "next_slot", "scheduler_for"]

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(minutes=5)
MAX_SLEEP_SECONDS = 1.0


def next_slot(job: JobConfig, after: datetime) -> datetime:
    """The first slot of ``job`` strictly after ``after`` (an aware datetime), in UTC.

    The cron expression is matched against the wall clock of the job's zone, as cron does. When clocks go
    back, a repeated wall-clock time runs once (its first occurrence), so a daily 02:30 job does not run
    twice on that night. A wall-clock time skipped when clocks go forward runs at the same offset it would
    have had before the change (02:30 becomes 03:30 that day).
    """
    zone = ZoneInfo(job.timezone)
    wall = after.astimezone(zone).replace(tzinfo=None)
    slots = croniter(job.cron, wall)
    while True:
        candidate: datetime = slots.get_next(datetime)
        slot = candidate.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first of a repeated time
        if slot > after:
            return slot


@dataclass
class JobOutcome:
    """What one attempt to run a job did: ``skipped`` when another run held the job or the slot."""

    job: str
    status: str  # succeeded | failed | skipped
    run_id: str | None = None
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class JobRunner:
    """Claims, runs and records runs of the configured jobs (the scheduler, ``cdp-hub jobs run``, Airflow)."""

    def __init__(self, hub: Hub, jobs: Mapping[str, JobConfig] | None = None, *, settle: Settle = settle_nothing,
                 lease: timedelta = DEFAULT_LEASE) -> None:
        self.hub = hub
        self.jobs = dict(hub.settings.jobs if jobs is None else jobs)
        self.settle = settle
        self.lease = lease
        self.repository = JobRepository(hub.store)
        self.host = socket.gethostname()
        for name, job in self.jobs.items():
            check_options(name, job.kind, job.options, connectors=hub.settings.connectors)

    def job(self, name: str) -> JobConfig:
        from cdp_hub.errors import ConfigurationError

        if name not in self.jobs:
            raise ConfigurationError(f"no job {name!r} (configured: {', '.join(sorted(self.jobs)) or 'none'}; "
                                     "jobs are [jobs.NAME] tables in the config)")
        return self.jobs[name]

    async def run(self, name: str, *, trigger: str = "manual", slot: datetime | None = None) -> JobOutcome:
        """Run ``name`` now unless another run of it is live (or ``slot`` was claimed): record the run."""
        with log_context(job=name):
            return await self._run(name, trigger=trigger, slot=slot)

    async def _run(self, name: str, *, trigger: str, slot: datetime | None) -> JobOutcome:
        job = self.job(name)
        now = self.hub.clock()
        run_id = await self.repository.start_job_run(name, job.kind, trigger=trigger, now=now, lease=self.lease,
                                                     scheduled_for=slot, host=self.host)
        if run_id is None:
            log.info("job %s: skipped, another run holds it%s", name, f" (slot {slot.isoformat()})" if slot else "")
            return JobOutcome(name, "skipped")
        log.info("job %s: run %s started (%s)", name, run_id, trigger)
        started = time.perf_counter()
        heartbeat = asyncio.create_task(self._heartbeat(name, run_id), name=f"job-heartbeat:{name}")
        try:
            result = await run_job_kind(self.hub, job.kind, job.options, self.settle)
        except asyncio.CancelledError:
            await self._finish(name, run_id, "failed", error="cancelled: the process is stopping")
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("job %s: run %s failed: %s", name, run_id, error)
            await self._finish(name, run_id, "failed", error=error)
            return JobOutcome(name, "failed", str(run_id), time.perf_counter() - started, error=error)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        await self._finish(name, run_id, "succeeded", result=result)
        seconds = time.perf_counter() - started
        log.info("job %s: run %s succeeded in %.1fs", name, run_id, seconds)
        return JobOutcome(name, "succeeded", str(run_id), seconds, result=result)

    async def _finish(self, name: str, run_id: Any, status: str, *, result: dict[str, Any] | None = None,
                      error: str | None = None) -> None:
        await asyncio.shield(self.repository.finish_job_run(name, run_id, status=status, now=self.hub.clock(),
                                                            result=result, error=error))

    async def _heartbeat(self, name: str, run_id: Any) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                await self.repository.heartbeat_job_run(name, run_id, self.hub.clock())
            except Exception:  # a missed beat is not fatal; a lease of missed beats is (another process runs it)
                log.warning("job %s: heartbeat failed", name, exc_info=True)


class Scheduler:
    """Runs every enabled job at its cron slots until :meth:`stop`; a job's runs never overlap."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self._stopping = asyncio.Event()
        self._running: dict[str, asyncio.Task[JobOutcome]] = {}
        self.next_due: dict[str, datetime] = {}

    @property
    def jobs(self) -> dict[str, JobConfig]:
        return {name: job for name, job in self.runner.jobs.items() if job.enabled}

    def stop(self) -> None:
        self._stopping.set()

    def plan(self, now: datetime) -> None:
        """Set every job's next slot to the first one after ``now``."""
        self.next_due = {name: next_slot(job, now) for name, job in self.jobs.items()}

    async def tick(self, now: datetime) -> list[asyncio.Task[JobOutcome]]:
        """Start the jobs whose slot is due at ``now`` (each in a task of its own) and plan their next slot.
        A job still running from an earlier slot in this process skips the new one."""
        started = []
        for name, due in sorted(self.next_due.items()):
            if due > now:
                continue
            self.next_due[name] = next_slot(self.jobs[name], now)
            if name in self._running and not self._running[name].done():
                log.warning("job %s: slot %s skipped, the run of an earlier slot is still going", name,
                            due.isoformat())
                continue
            task = asyncio.create_task(self.runner.run(name, trigger="schedule", slot=due), name=f"job:{name}")
            self._running[name] = task
            started.append(task)
        return started

    async def serve(self) -> None:
        """Tick until :meth:`stop`; then cancel the runs in progress. A cancelled run is recorded as failed and
        has saved nothing it had not finished (a sync checkpoints only what is stored), so the next slot or
        another process picks up where it stopped: a stopping process does not hold its grace period."""
        if not self.jobs:
            await self._stopping.wait()
            return
        self.plan(self.runner.hub.clock())
        log.info("scheduler: %s", ", ".join(f"{n} next at {d.isoformat()}" for n, d in self.next_due.items()))
        try:
            while not self._stopping.is_set():
                await self.tick(self.runner.hub.clock())
                wait = min((d - self.runner.hub.clock()).total_seconds() for d in self.next_due.values())
                try:
                    async with asyncio.timeout(min(max(wait, 0.0), MAX_SLEEP_SECONDS)):
                        await self._stopping.wait()
                except TimeoutError:
                    pass
        finally:
            running = [t for t in self._running.values() if not t.done()]
            if running:
                log.warning("scheduler: stopping %d job run(s) in progress", len(running))
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)


def scheduler_for(hub: Hub, pipeline: Pipeline | None) -> Scheduler | None:
    """The scheduler of ``cdp-hub run``: None when no job is configured or ``scheduler_enabled`` is off.

    On the in-process bus the jobs publish into this process's bus, so they need its stages: each job waits
    (settle) until ``pipeline`` has stored what it published. A process without stages on that bus has no
    scheduler, and says so.
    """
    settings = hub.settings
    if not settings.scheduler_enabled or not any(job.enabled for job in settings.jobs.values()):
        return None
    if pipeline is None:
        if hub.bus.backend == "memory":
            log.warning("scheduler: not started: bus = 'memory' and this process runs no stage to store what "
                        "the jobs publish")
            return None
        return Scheduler(JobRunner(hub))
    return Scheduler(JobRunner(hub, settle=pipeline_settle(hub.bus, pipeline)))
