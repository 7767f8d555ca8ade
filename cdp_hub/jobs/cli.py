"""``cdp-hub jobs``: the configured ``[jobs]``, running one by hand, and the record of runs.

    jobs list [--json]                       each job: kind, cron and zone, next slot, last run
    jobs run NAME [--json]                   run now (skipped when a run of it is live in any process)
    jobs history [NAME] [--limit N] [--json] runs, newest first: status, duration, error

On the in-process bus ``jobs run`` runs the stages in this process until what the job published is stored
(:func:`cdp_hub.pipeline.embedded.downstream`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, print_table, store_for
from cdp_hub.config import Settings

__all__ = ["EXIT_SKIPPED", "commands"]

# Exit status of `jobs run` when another run holds the job (not a failure of this one, not a success).
EXIT_SKIPPED = 75


commands: list[click.Command] = []
jobs = group(commands, "jobs", "scheduled jobs ([jobs.NAME]): list, run now, history")


@command(jobs, "list", help="configured jobs: kind, schedule, next slot, last run")
@json_option("print JSON")
async def cmd_list(args: Args, settings: Settings) -> int:
    from cdp_hub.jobs.kinds import check_options
    from cdp_hub.jobs.scheduler import next_slot
    from cdp_hub.store import JobRepository

    for name, job in settings.jobs.items():
        check_options(name, job.kind, job.options, connectors=settings.connectors)
    now = datetime.now(UTC)
    async with store_for(settings, pool_size=2) as store:
        if settings.auto_migrate:
            await store.migrate()
        last = await JobRepository(store).last_job_runs()
    rows: list[dict[str, Any]] = []
    for name, job in sorted(settings.jobs.items()):
        run = last.get(name)
        rows.append({"job": name, "kind": job.kind, "cron": job.cron, "timezone": job.timezone,
                     "enabled": job.enabled, "options": job.options,
                     "next_run": next_slot(job, now).isoformat() if job.enabled else None,
                     "last_run": run.as_dict() if run else None})
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no jobs configured ([jobs.NAME] tables in the config)")
    table = []
    for r in rows:
        last_run = r["last_run"]
        when = "never run" if last_run is None else (
            f"last {last_run['status']} at {last_run['started_at'][:19]}"
            + (f" in {last_run['seconds']:.1f}s" if last_run["seconds"] is not None else ""))
        table.append((r["job"], r["kind"], r["cron"], r["timezone"],
                      f"next {r['next_run'][:19]}" if r["enabled"] else "disabled", when))
    print_table(("job", "kind", "cron", "time zone", "next", "last run"), table,
                plain=lambda t: f"{t[0]:<22} {t[1]:<18} {t[2]:<16} {t[3]:<16} {t[4]:<26} {t[5]}")
    return 0


@command(jobs, "run", help="run job NAME (a [jobs.NAME] of the config) now: recorded in the history; skipped "
                         "(exit 75) if a run of it is live")
@click.argument("name")
@json_option("print the outcome as JSON")
async def cmd_run(args: Args, settings: Settings) -> int:
    from cdp_hub.hub import Hub
    from cdp_hub.jobs.scheduler import JobRunner
    from cdp_hub.pipeline.embedded import downstream

    async with Hub(settings) as hub, downstream(hub) as settle:
        runner = JobRunner(hub, settle=settle)
        outcome = await runner.run(args.name, trigger="manual")
    if args.json:
        print_json(outcome.__dict__)
    elif outcome.status == "skipped":
        print(f"{outcome.job}: skipped: a run of it is in progress (cdp-hub jobs history {outcome.job})")
    elif outcome.status == "failed":
        print(f"{outcome.job}: failed after {outcome.seconds:.1f}s: {outcome.error}")
    else:
        print(f"{outcome.job}: succeeded in {outcome.seconds:.1f}s: {outcome.result}")
    return {"succeeded": 0, "failed": 1}.get(outcome.status, EXIT_SKIPPED)


@command(jobs, "history", help="runs of job NAME (default: every job), newest first")
@click.argument("name", required=False)
@click.option("--limit", type=int, default=20, show_default=True, help="most runs to show")
@json_option("print JSON")
async def cmd_history(args: Args, settings: Settings) -> int:
    from cdp_hub.store import JobRepository

    async with store_for(settings, pool_size=2) as store:
        if settings.auto_migrate:
            await store.migrate()
        runs = await JobRepository(store).job_history(args.name, limit=args.limit)
    if args.json:
        print_json([r.as_dict() for r in runs])
        return 0
    table = [(f"{r.started_at:%Y-%m-%d %H:%M:%S}", r.job, r.status,
              f"{r.seconds:8.1f}s" if r.seconds is not None else "        -",
              r.trigger + (f" slot {r.scheduled_for:%Y-%m-%d %H:%M:%S}" if r.scheduled_for else ""), r.host,
              r.error or "") for r in runs]
    print_table(("started", "job", "status", "took", "trigger", "host", "error"), table,
                plain=lambda t: f"{t[0]}  {t[1]:<22} {t[2]:<10} {t[3]}  {t[4]}  {t[5]}"
                                + (f"\n    {t[6]}" if t[6] else ""))
    if not runs:
        print("no runs recorded")
    return 0
