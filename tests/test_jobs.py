"""The ``[jobs]`` schedule: cron in a time zone, one run per slot across processes, runs recorded, the CLI.

The two-process test starts two real ``cdp-hub run`` processes on one database with jobs due every two
seconds, and requires every slot to have run exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import respx

from cdp_hub.cli import main
from cdp_hub.config import JobConfig, Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.jobs.scheduler import JobRunner, Scheduler, next_slot
from cdp_hub.metrics import Metrics
from cdp_hub.store import EventRepository, JobRepository, Store
from cdp_hub.testing import MockApi
from connectors.loyalty import LoyaltyConnector

CLUB = {"type": "loyalty", "config": {"base_url": "https://loyalty.test", "page_size": 2, "max_attempts": 1,
                                      "auth": {"type": "api_key", "key": "k"}}}


def txn(n: int) -> dict[str, object]:
    return {"transaction_id": f"T{n}", "card_number": "2775000000000043", "type": "accrual", "points": n,
            "created_at": f"2026-11-0{n}T10:00:00Z"}


def settings_for(tmp_path: Path, pg_dsn: str, **extra: Any) -> Settings:
    return Settings(bus="memory", postgres_dsn=pg_dsn, redis_url="fakeredis://", data_dir=tmp_path / "data",
                    poll_timeout_ms=20, **extra)


# -- configuration and cron ----------------------------------------------------------------------------


def test_a_job_needs_a_valid_cron_zone_and_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a cron expression"):
        JobConfig(kind="birthday_scan", cron="every day")
    with pytest.raises(ValueError, match="unknown time zone"):
        JobConfig(kind="birthday_scan", cron="0 3 * * *", timezone="Mars/Olympus")
    settings = settings_for(tmp_path, "embedded", connectors={"club": CLUB}, jobs={
        "pull": {"kind": "sync", "cron": "*/15 * * * *", "options": {"instance": "shop"}}})
    hub = Hub(settings)
    try:
        with pytest.raises(ConfigurationError, match=r"job pull: options\.instance 'shop' is not a configured"):
            JobRunner(hub)
        with pytest.raises(ConfigurationError, match=r"unknown option.*segmnts.*options: segments"):
            JobRunner(hub, {"seg": JobConfig(kind="segment_recompute", cron="0 * * * *",
                                             options={"segmnts": ["vip"]})})
    finally:
        asyncio.run(hub.http.aclose())


def test_slots_follow_the_jobs_time_zone_across_daylight_saving() -> None:
    def slots(job: JobConfig, after: datetime, n: int) -> list[datetime]:
        out = []
        for _ in range(n):
            after = next_slot(job, after)
            out.append(after)
        return out

    daily = JobConfig(kind="birthday_scan", cron="30 2 * * *", timezone="Europe/Berlin")
    # Clocks go forward on 29 March (02:00 -> 03:00): 02:30 does not exist and runs at 03:30 CEST.
    assert slots(daily, datetime(2026, 3, 27, 12, 0, tzinfo=UTC), 3) == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]
    # Clocks go back on 25 October (03:00 -> 02:00): 02:30 happens twice and runs once.
    assert slots(daily, datetime(2026, 10, 24, 12, 0, tzinfo=UTC), 2) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]
    every_ten = JobConfig(kind="birthday_scan", cron="*/10 * * * *", timezone="Europe/Berlin")
    inside_repeat = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET, the second 02:45 of the night
    assert next_slot(every_ten, inside_repeat) > inside_repeat
    monday_9 = JobConfig(kind="birthday_scan", cron="0 9 * * 1", timezone="Europe/Moscow")
    assert next_slot(monday_9, datetime(2026, 11, 30, 5, 59, tzinfo=UTC)) == datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    assert next_slot(monday_9, datetime(2026, 11, 30, 6, 0, tzinfo=UTC)) == datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


# -- one run per slot, one run at a time -------------------------------------------------------------


async def test_two_schedulers_run_a_due_sync_once_and_record_it(tmp_path: Path, pg_dsn: str, store: Store) -> None:
    settings = settings_for(tmp_path, pg_dsn, connectors={"club": CLUB}, jobs={
        "club-sync": {"kind": "sync", "cron": "*/10 * * * *", "timezone": "Europe/Moscow",
                      "options": {"instance": "club", "stream": "transactions"}}})
    now = datetime(2026, 11, 30, 9, 55, tzinfo=UTC)
    hubs = [Hub(settings, metrics=Metrics()) for _ in range(2)]
    with respx.mock(assert_all_called=False) as router:
        connector = LoyaltyConnector({"base_url": "https://loyalty.test", "page_size": 2})
        MockApi(connector, "transactions", [txn(n) for n in range(1, 6)], page_size=2).install(router)
        async with hubs[0], hubs[1]:
            from cdp_hub.pipeline.embedded import downstream

            async with downstream(hubs[0]) as settle0, downstream(hubs[1]) as settle1:
                schedulers = [Scheduler(JobRunner(h, settle=s)) for h, s in zip(hubs, (settle0, settle1), strict=True)]
                for h, sch in zip(hubs, schedulers, strict=True):
                    h.clock = lambda: now
                    sch.plan(now)
                    assert sch.next_due["club-sync"] == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
                    assert await sch.tick(now) == []  # not due yet
                due = now + timedelta(minutes=5)
                for h in hubs:
                    h.clock = lambda: due
                tasks = [task for sch in schedulers for task in await sch.tick(due)]
                outcomes = sorted(o.status for o in await asyncio.gather(*tasks))
                assert outcomes == ["skipped", "succeeded"]
                assert all(sch.next_due["club-sync"] == datetime(2026, 11, 30, 10, 10, tzinfo=UTC)
                           for sch in schedulers)
    [run] = await JobRepository(store).job_history("club-sync")
    assert (run.status, run.trigger, run.kind) == ("succeeded", "schedule", "sync")
    assert run.scheduled_for == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert run.seconds is not None and run.seconds >= 0 and run.error is None
    assert run.result["events"] == 5 and run.result["instance"] == "club"
    counts = {r["source"]: r["n"] for r in await EventRepository(store).count_by_source_and_type()}
    assert counts.get("club") == 5  # stored once, by the one run


async def test_a_live_run_holds_the_job_and_a_dead_ones_lease_expires(store: Store) -> None:
    jobs = JobRepository(store)
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    lease = timedelta(minutes=5)
    first = await jobs.start_job_run("scan", "birthday_scan", trigger="manual", now=t0, lease=lease)
    assert first is not None
    assert await jobs.start_job_run("scan", "birthday_scan", trigger="schedule", now=t0 + timedelta(minutes=1),
                                    lease=lease, scheduled_for=t0 + timedelta(minutes=1)) is None
    await jobs.heartbeat_job_run("scan", first, t0 + timedelta(minutes=4))
    assert await jobs.start_job_run("scan", "birthday_scan", trigger="manual", now=t0 + timedelta(minutes=8),
                                    lease=lease) is None  # the heartbeat kept it alive
    # The process died: no heartbeat for longer than the lease.
    second = await jobs.start_job_run("scan", "birthday_scan", trigger="manual", now=t0 + timedelta(minutes=10),
                                      lease=lease)
    assert second is not None
    await jobs.finish_job_run("scan", second, status="failed", now=t0 + timedelta(minutes=11), error="boom")
    history = await jobs.job_history("scan")
    assert [(r.status, r.error) for r in history] == [
        ("failed", "boom"), ("abandoned", "the process running it stopped sending heartbeats")]
    assert history[0].seconds == 60.0
    assert (await jobs.last_job_runs())["scan"].run_id == second


async def test_a_failing_job_is_recorded_with_its_error(tmp_path: Path, pg_dsn: str, store: Store) -> None:
    settings = settings_for(tmp_path, pg_dsn, jobs={
        "recompute": {"kind": "segment_recompute", "cron": "0 * * * *", "options": {"segments": ["nope"]}}})
    async with Hub(settings, metrics=Metrics()) as hub:
        outcome = await JobRunner(hub).run("recompute")
    assert outcome.status == "failed" and "nope" in (outcome.error or "")
    [run] = await JobRepository(store).job_history("recompute")
    assert run.status == "failed" and run.error == outcome.error and run.trigger == "manual"


# -- the command line ----------------------------------------------------------------------------------


def test_jobs_list_run_and_history(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    for key in list(os.environ):
        if key.startswith("CDP_HUB_"):
            monkeypatch.delenv(key)
    config = tmp_path / "cdp-hub.toml"
    config.write_text(f'''
bus = "memory"
postgres_dsn = "{pg_dsn}"
redis_url = "fakeredis://"
data_dir = "{tmp_path / 'data'}"

[jobs.birthdays]
kind = "birthday_scan"
cron = "*/30 * * * *"
timezone = "Europe/Moscow"

[jobs.segments]
kind = "segment_recompute"
cron = "0 3 * * *"
options = {{ segments = ["lapsed_customers"] }}
''', encoding="utf-8")
    assert main(["-c", str(config), "jobs", "list", "--json"]) == 0
    listed = {j["job"]: j for j in json.loads(capsys.readouterr().out)}
    assert listed["birthdays"]["kind"] == "birthday_scan" and listed["birthdays"]["last_run"] is None
    assert listed["segments"]["next_run"].endswith("03:00:00+00:00")
    assert main(["-c", str(config), "jobs", "run", "segments"]) == 0
    assert "segments: succeeded" in capsys.readouterr().out
    assert main(["-c", str(config), "jobs", "run", "birthdays", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    assert main(["-c", str(config), "jobs", "run", "nope"]) == 3  # configuration
    assert "no job 'nope'" in capsys.readouterr().err
    assert main(["-c", str(config), "jobs", "history", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(r["job"], r["status"], r["trigger"]) for r in history] == [
        ("birthdays", "succeeded", "manual"), ("segments", "succeeded", "manual")]
    assert main(["-c", str(config), "jobs", "history", "segments"]) == 0
    out = capsys.readouterr().out
    assert "segments" in out and "succeeded" in out and "birthdays" not in out
    assert main(["-c", str(config), "jobs", "list"]) == 0
    assert "last succeeded" in capsys.readouterr().out


# -- two `cdp-hub run` processes -----------------------------------------------------------------------


@pytest.mark.slow
async def test_two_run_processes_run_each_scheduled_slot_once(tmp_path: Path, pg_dsn: str, store: Store) -> None:
    config = tmp_path / "cdp-hub.toml"
    config.write_text(f'''
bus = "memory"
postgres_dsn = "{pg_dsn}"
redis_url = "fakeredis://"
data_dir = "{tmp_path / 'data'}"
poll_timeout_ms = 50

[jobs.recompute]
kind = "segment_recompute"
cron = "* * * * * */2"
options = {{ segments = ["lapsed_customers"] }}

[jobs.birthdays]
kind = "birthday_scan"
cron = "* * * * * */2"
''', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    command = [sys.executable, "-m", "cdp_hub.cli", "-c", str(config), "--log-level", "INFO", "run", "--no-http"]
    # Started once, they run beside the test until SIGTERM.
    procs = [subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)  # noqa: ASYNC220
             for log in logs]
    try:
        jobs = JobRepository(store)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            runs = await jobs.job_history(limit=1000)
            finished = Counter(r.job for r in runs if r.status == "succeeded")
            if finished["recompute"] >= 3 and finished["birthdays"] >= 3:
                break
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            await asyncio.sleep(0.5)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
    output = "\n".join(log.read_text() for log in logs)
    assert codes == [0, 0], output
    assert output.count("scheduler: recompute, birthdays") + output.count("scheduler: birthdays, recompute") == 2
    runs = await JobRepository(store).job_history(limit=1000)
    for job in ("recompute", "birthdays"):
        mine = [r for r in runs if r.job == job and r.trigger == "schedule"]
        slots = Counter(r.scheduled_for for r in mine)
        assert sum(1 for r in mine if r.status == "succeeded") >= 3, output
        assert max(slots.values()) == 1, f"{job}: a slot ran twice: {slots}"
        # The claim is exclusive: no two runs of one job overlap in time.
        spans = sorted((r.started_at, r.finished_at or r.started_at) for r in mine)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
