"""Campaign commands of the ``cdp-hub`` CLI (click wiring here, the work in :mod:`cdp_hub.campaigns.runner`).

    cdp-hub campaigns validate [PATH...]        shape, segments, channels, templates: file:line: $.path: message
    cdp-hub campaigns list                      the campaigns of campaigns_dir, their schedules and latest run
    cdp-hub campaigns preview ID [--sample N]   audience size now, and the contact policy on a sample of it
    cdp-hub campaigns launch ID [--wait]        snapshot the audience, start a run (sent by `cdp-hub run`'s
                                                campaigns job, or by this process with --wait)
    cdp-hub campaigns pause|cancel RUN          takes effect within a chunk (about half a second of sending)
    cdp-hub campaigns resume RUN [--wait]
    cdp-hub campaigns status [RUN | --campaign ID] [--json]

``--wait`` sends in this process (a one-off use; Ctrl-C stops between chunks and a later ``resume --wait`` or
the daemon's campaigns job goes on from there).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, print_table
from cdp_hub.cli.progress import progress_reporter
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError

if TYPE_CHECKING:
    from cdp_hub.campaigns.model import Campaign
    from cdp_hub.campaigns.runner import CampaignRunner, RunResult, RunStatus

__all__ = ["commands"]


commands: list[click.Command] = []
campaigns = group(commands, "campaigns", "campaigns (mass communications): validate, preview, launch, control")
WAIT_HELP = "send the run in this process until it is done (a progress bar on stderr)"


def _paths(args: Args, settings: Settings) -> list[Path]:
    paths: list[Path] = list(getattr(args, "paths", None) or [])
    if not paths and settings.campaigns_dir is not None:
        paths = [settings.campaigns_dir]
    return paths


def _campaign(settings: Settings, campaign_id: str) -> Campaign:
    from cdp_hub.campaigns.checks import check_campaign_files
    from cdp_hub.triggers.cli import installed

    campaigns, problems = check_campaign_files(_paths(Args(), settings), installed(settings))
    found = {c.id: c for c in campaigns}.get(campaign_id)
    if found is None:
        known = ", ".join(sorted(c.id for c in campaigns)) or "none (set campaigns_dir)"
        raise ConfigurationError(f"no campaign {campaign_id!r} (campaigns: {known})")
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        # Any error in the deployment's campaign files stops a launch: a half-valid folder is a mistake.
        raise ConfigurationError("campaign files have errors:\n  " + "\n  ".join(errors))
    return found


@command(campaigns, "validate", help="check campaign files PATHS (files or folders; default: campaigns_dir): "
                                    "shape, segments, channels, templates")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@json_option("print the campaigns and problems as JSON")
def cmd_validate(args: Args, settings: Settings) -> int:
    from cdp_hub.campaigns.checks import check_campaign_files
    from cdp_hub.triggers.cli import installed

    paths = _paths(args, settings)
    if not paths:
        raise ConfigurationError("no campaign files: give paths or set campaigns_dir")
    found, problems = check_campaign_files(paths, installed(settings))
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        print_json({"ok": not errors, "campaigns": [c.id for c in found],
                    "problems": [{"severity": p.severity, "problem": str(p)} for p in problems]})
        return 1 if errors else 0
    for p in problems:
        print(p)
    if errors:
        print(f"{len(errors)} error(s) in {len({p.origin for p in errors})} file(s)")
        return 1
    print(f"{len(found)} campaign(s) OK")
    return 0


def _runner(hub: Any) -> CampaignRunner:
    from cdp_hub.pipeline.build import campaign_runner

    return campaign_runner(hub)


@command(campaigns, "list", help="the campaigns, their schedules and latest runs")
@json_option("print the campaigns as JSON")
async def cmd_list(args: Args, settings: Settings) -> int:
    from cdp_hub.campaigns.model import load_campaigns
    from cdp_hub.hub import Hub

    loaded = load_campaigns(_paths(args, settings))
    async with Hub(settings) as hub:
        runner = _runner(hub)
        rows = []
        for c in loaded:
            latest = await runner.campaigns.runs(c.id, limit=1)
            schedule = ("by hand" if c.schedule is None else
                        f"at {c.schedule.at.isoformat()}" if c.schedule.at is not None else
                        f"cron {c.schedule.cron} ({c.schedule.timezone})")
            rows.append({"id": c.id, "enabled": c.enabled, "segment": c.audience.segment, "channel": c.channel,
                         "rate_limit": c.rate_limit, "schedule": schedule,
                         "latest_run": str(latest[0].run_id) if latest else None,
                         "latest_status": latest[0].status if latest else None})
    if args.json:
        print_json(rows)
        return 0
    table = [(r["id"], r["segment"], r["channel"], f"{r['rate_limit']:g}/s", r["schedule"],
              (f"{r['latest_run']} {r['latest_status']}" if r["latest_run"] else "never run")
              + ("" if r["enabled"] else "  (disabled)")) for r in rows]
    print_table(("campaign", "segment", "channel", "rate", "schedule", "latest run"), table,
                plain=lambda t: f"{t[0]:<24} {t[1]:<20} {t[2]:<8} {t[3]:>10}  {t[4]:<32} {t[5]}")
    return 0


@command(campaigns, "preview", help="audience size of campaign CAMPAIGN now and the contact policy on a sample "
                                   "(sends nothing)")
@click.argument("campaign")
@click.option("--sample", type=int, default=1000, show_default=True, help="judge the consent of this many profiles")
@json_option("print the estimate as JSON")
async def cmd_preview(args: Args, settings: Settings) -> int:
    from collections import Counter

    from cdp_hub.hub import Hub

    campaign = _campaign(settings, args.campaign)
    async with Hub(settings) as hub:
        runner = _runner(hub)
        size = await runner.campaigns.audience_size(campaign.audience.segment, campaign.audience.exclude)
        sample = await runner.campaigns.audience_sample(campaign.audience.segment, campaign.audience.exclude,
                                                        max(0, args.sample))
        golden = await runner.profiles.golden_of(sample)
        states = await runner.consents.current(sample)
        verdicts: Counter[str] = Counter()
        for pid in sample:
            profile = golden.get(pid, {})
            verdicts["no_consent" if runner.consent_refusal(campaign, profile, states.get(pid, {})) else
                     "eligible"] += 1
    n = len(sample)
    eligible = round(size * verdicts["eligible"] / n) if n else 0
    out = {"campaign": campaign.id, "audience": size, "sample": n, "sample_eligible": verdicts["eligible"],
           "sample_no_consent": verdicts["no_consent"], "estimated_eligible": eligible,
           "estimated_seconds": round(eligible / campaign.rate_limit, 1)}
    if args.json:
        print_json(out)
    else:
        print(f"campaign {campaign.id}: {size} profiles in {campaign.audience.segment}"
              f"{' minus ' + ', '.join(campaign.audience.exclude) if campaign.audience.exclude else ''}")
        print(f"consent on a sample of {n}: {verdicts['eligible']} eligible, {verdicts['no_consent']} without")
        print(f"estimated: {eligible} messages, {out['estimated_seconds']}s at {campaign.rate_limit:g}/s "
              "(caps and quiet hours are judged at send time)")
    return 0


def _print_result(result: RunResult) -> None:
    print(f"run {result.run_id}: {result.status} after {result.seconds:.1f}s; "
          + ", ".join(f"{k} {v}" for k, v in sorted(result.decisions.items())))


async def _send_with_progress(runner: CampaignRunner, run_id: uuid.UUID) -> RunResult:
    """``--wait``: send the run here, with a progress bar (plain lines when not a terminal) and its ETA."""
    status = await runner.status(run_id)
    todo = None if status is None else status.pending + status.deferred
    with progress_reporter(f"campaign run {str(run_id)[:8]}", unit="profiles") as report:
        return await runner.execute(run_id, progress=lambda done, _total: report(done, todo))


@command(campaigns, "launch", help="snapshot the audience of campaign CAMPAIGN and start a run")
@click.argument("campaign")
@click.option("--wait", is_flag=True, help=WAIT_HELP)
@json_option("print the run as JSON")
async def cmd_launch(args: Args, settings: Settings) -> int:
    from cdp_hub.hub import Hub

    campaign = _campaign(settings, args.campaign)
    async with Hub(settings) as hub:
        runner = _runner(hub)
        launched = await runner.launch(campaign)
        assert launched is not None  # a launch by hand has a new run id: it always takes place
        if args.json:
            result = await _send_with_progress(runner, launched.run_id) if args.wait else None
            print_json({"run_id": str(launched.run_id), "planned": launched.planned,
                        "snapshot_seconds": launched.snapshot_seconds,
                        "result": None if result is None else {"status": result.status,
                                                               "seconds": round(result.seconds, 3),
                                                               "decisions": dict(result.decisions)}})
            return 0
        print(f"run {launched.run_id}: {launched.planned} profiles planned "
              f"(audience snapshot {launched.snapshot_seconds:.2f}s)", flush=True)
        if args.wait:
            _print_result(await _send_with_progress(runner, launched.run_id))
        else:
            print("the run is sent by `cdp-hub run` (a [jobs] entry of kind 'campaigns'), or "
                  f"`cdp-hub campaigns resume {launched.run_id} --wait`")
    return 0


@command(campaigns, "pause", help="stop sending run RUN_ID after the current chunk",
         defaults={"action": "pause", "wait": False})
@click.argument("run_id", type=click.UUID)
@json_option("print the run's status as JSON")
@command(campaigns, "cancel", help="stop run RUN_ID for good (what is not sent is never sent)",
         defaults={"action": "cancel", "wait": False})
@click.argument("run_id", type=click.UUID)
@json_option("print the run's status as JSON")
@command(campaigns, "resume", help="go on sending paused run RUN_ID (or take over one whose sender died)",
         defaults={"action": "resume"})
@click.argument("run_id", type=click.UUID)
@click.option("--wait", is_flag=True, help=WAIT_HELP)
@json_option("print the run's status as JSON")
async def cmd_control(args: Args, settings: Settings) -> int:
    from cdp_hub.hub import Hub

    async with Hub(settings) as hub:
        runner = _runner(hub)
        run = await runner.campaigns.run(args.run_id)
        if run is None:
            raise ConfigurationError(f"no campaign run {args.run_id}")
        moved = await {"pause": runner.pause, "resume": runner.resume, "cancel": runner.cancel}[args.action](
            args.run_id)
        now = await runner.campaigns.run(args.run_id)
        assert now is not None
        if not moved and not (args.action == "resume" and now.status == "sending"):
            if args.json:
                print_json({"run_id": str(args.run_id), "status": now.status, "changed": False})
            else:
                print(f"run {args.run_id} is {now.status}: cannot {args.action} it")
            return 1
        if not args.json:
            print(f"run {args.run_id}: {now.status}", flush=True)
        result = await _send_with_progress(runner, args.run_id) if args.action == "resume" and args.wait else None
        if args.json:
            print_json({"run_id": str(args.run_id), "status": now.status, "changed": True,
                        "result": None if result is None else {"status": result.status,
                                                               "seconds": round(result.seconds, 3),
                                                               "decisions": dict(result.decisions)}})
        elif result is not None:
            _print_result(result)
    return 0


def _format_status(s: RunStatus) -> str:
    d = s.as_dict()
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items())) or "none"
    delivery = ", ".join(f"{k} {v}" for k, v in sorted(s.delivery.items())) or "nothing logged yet"
    eta = d["eta_seconds"]
    return (f"campaign {d['campaign']} run {d['run_id']}: {d['status']}\n"
            f"  planned {d['planned']}, sent {d['sent']}, pending {d['pending']}, deferred {d['deferred']}\n"
            f"  skipped: {skipped}\n"
            f"  delivery: {delivery} (failed {d['failed']})\n"
            f"  rate {d['rate_limit']:g}/s, ETA {'-' if eta is None else f'{eta:.0f}s'}")


@command(campaigns, "status", help="planned, sent, skipped by reason, failed, ETA of run RUN_ID (default: the "
                                  "latest runs)")
@click.argument("run_id", required=False, type=click.UUID)
@click.option("--campaign", help="the latest runs of this campaign")
@json_option("print the status as JSON")
async def cmd_status(args: Args, settings: Settings) -> int:
    from cdp_hub.hub import Hub

    async with Hub(settings) as hub:
        runner = _runner(hub)
        if args.run_id is not None:
            ids = [args.run_id]
        else:
            ids = [r.run_id for r in await runner.campaigns.runs(args.campaign, limit=10)]
        statuses = [s for s in [await runner.status(i) for i in ids] if s is not None]
    if args.run_id is not None and not statuses:
        raise ConfigurationError(f"no campaign run {args.run_id}")
    if args.json:
        print_json([s.as_dict() for s in statuses] if args.run_id is None else statuses[0].as_dict())
    else:
        print("\n".join(_format_status(s) for s in statuses) or "no campaign runs")
    return 0
