"""What each kind of scheduled job does: the one implementation the scheduler, ``cdp-hub jobs run`` and the
Airflow operators call.

    sync               options: instance (required), stream, full_refresh   ─▶ connector/sync.py
    segment_recompute  options: segments (ids; default every segment)        ─▶ segments/engine.py
    birthday_scan      no options                                            ─▶ segments/daily.py
    edge_sightings_purge  no options: expired rows of the PostgreSQL dedupe window ─▶ store/sightings.py
    campaigns          no options: launch the campaigns whose schedule slot   ─▶ campaigns/runner.py
                       is due, then send every run without a live sender
    attribution        options: since (default 30d): the scenario report's    ─▶ reports/scenarios.py
                       figures into the marketers' Prometheus gauges

Each takes the started hub, the job's options and ``settle`` (see :mod:`cdp_hub.pipeline.embedded`: on the
in-process bus it waits until the stages of this process have stored what the job published; before a sync
checkpoint, a segment membership or a birthday is recorded). It returns a JSON-able summary, which the
run's row in ``job_runs`` keeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cdp_hub.durations import parse_duration
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import birthday_scheduler, campaign_runner, segment_engine
from cdp_hub.pipeline.embedded import Settle, settled_publish
from cdp_hub.store.sightings import SightingRepository

__all__ = ["JOB_KINDS", "JobFunction", "check_options", "run_job_kind"]

JobFunction = Callable[[Hub, Mapping[str, Any], Settle], Awaitable[dict[str, Any]]]

_OPTIONS: dict[str, set[str]] = {
    "sync": {"instance", "stream", "full_refresh"},
    "segment_recompute": {"segments"},
    "birthday_scan": set(),
    "edge_sightings_purge": set(),
    "campaigns": set(),
    "attribution": {"since"},
}


def check_options(job: str, kind: str, options: Mapping[str, Any], *, connectors: Mapping[str, Any]) -> None:
    """Fail at start, naming the job and the option, on what a run would only find out later."""
    if kind not in _OPTIONS:
        raise ConfigurationError(f"job {job}: unknown kind {kind!r} (one of {', '.join(JOB_KINDS)})")
    unknown = sorted(set(options) - _OPTIONS[kind])
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[kind])) or "none"
        raise ConfigurationError(f"job {job}: unknown option(s) {', '.join(unknown)} for kind {kind} "
                                 f"(options: {allowed})")
    if kind == "sync":
        instance = options.get("instance")
        if not isinstance(instance, str) or not instance:
            raise ConfigurationError(f"job {job}: a sync job needs options.instance, a [connectors.NAME]")
        if instance not in connectors:
            raise ConfigurationError(f"job {job}: options.instance {instance!r} is not a configured connector "
                                     f"(configured: {', '.join(sorted(connectors)) or 'none'})")
    if kind == "segment_recompute":
        segments = options.get("segments", [])
        if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
            raise ConfigurationError(f"job {job}: options.segments must be a list of segment ids")


async def run_sync(hub: Hub, options: Mapping[str, Any], settle: Settle) -> dict[str, Any]:
    from cdp_hub.connector.sync import sync

    connector = hub.connector(str(options["instance"]))
    try:
        results = await sync(hub, connector, stream=options.get("stream"),
                             full_refresh=bool(options.get("full_refresh", False)), settle=settle)
    finally:
        await connector.aclose()
    streams = [r.summary() for r in results]
    return {"instance": options["instance"], "records": sum(s["records"] for s in streams),
            "events": sum(s["events"] for s in streams), "dead_letters": sum(s["dead_letters"] for s in streams),
            "streams": streams}


async def run_segment_recompute(hub: Hub, options: Mapping[str, Any], settle: Settle) -> dict[str, Any]:
    engine = segment_engine(hub, publish=settled_publish(hub, settle))
    ids = list(options.get("segments") or sorted(engine.segments))
    for sid in ids:
        engine.segment(sid)  # unknown ids fail before any work
    out: dict[str, Any] = {}
    for sid in ids:
        r = await engine.recompute(sid)
        out[sid] = {"entered": r.entered, "exited": r.exited, "members": r.members}
    return {"segments": out}


async def run_birthday_scan(hub: Hub, options: Mapping[str, Any], settle: Settle) -> dict[str, Any]:
    scan = await birthday_scheduler(hub, publish=settled_publish(hub, settle)).run()
    return {"found": scan.found, "published": scan.published, "skipped": scan.skipped}


async def run_edge_sightings_purge(hub: Hub, options: Mapping[str, Any], settle: Settle) -> dict[str, Any]:
    """Delete the expired rows of the PostgreSQL dedupe window (``edge.dedupe_store = "postgres"``)."""
    return {"deleted": await SightingRepository(hub.store).purge_expired()}


async def run_campaigns(hub: Hub, options: Mapping[str, Any], settle: Settle) -> dict[str, Any]:
    """Launch the due scheduled campaigns (each slot once, whatever the number of processes), then send every
    sending run no live sender holds: new ones, resumed ones, and those of a sender that died."""
    from cdp_hub.campaigns.model import load_campaigns

    runner = campaign_runner(hub, publish=settled_publish(hub, settle))
    campaigns = load_campaigns([hub.settings.campaigns_dir] if hub.settings.campaigns_dir else [])
    launched = await runner.launch_due(campaigns, hub.clock())
    results = await runner.execute_runnable()
    return {"launched": [str(run.run_id) for run in launched],
            "runs": {str(r.run_id): {"status": r.status, **r.decisions} for r in results}}


async def run_attribution(hub: Hub, options: Mapping[str, Any], settle: Settle) -> dict[str, Any]:
    """Compute the scenario report over the last ``since`` (default 30d) and set the attribution gauges
    (``cdp_attribution_*``) for the configured scenarios and campaigns only: label values come from the
    configuration, never from data. The gauges live in the process that ran the job (a dashboard takes the
    max over processes)."""
    from cdp_hub.campaigns.model import load_campaigns
    from cdp_hub.reports.scenarios import parse_since, publish_metrics, scenario_report
    from cdp_hub.triggers.scenario import load_scenarios

    settings = hub.settings
    now = hub.clock()
    since = parse_since(str(options.get("since", "30d")), now)
    known: dict[str, list[str]] = {}
    for scenario in load_scenarios([settings.scenarios_dir] if settings.scenarios_dir else []):
        known[scenario.id] = [v.name for v in scenario.experiment.variants] if scenario.experiment else []
    for campaign in load_campaigns([settings.campaigns_dir] if settings.campaigns_dir else []):
        known[campaign.scenario] = [v.name for v in campaign.experiment.variants] if campaign.experiment else []
    report = await scenario_report(hub.store, since=since, until=now,
                                   window=parse_duration(settings.attribution_window),
                                   conversion_events=settings.conversion_events, scenarios=sorted(known))
    published = publish_metrics(report, hub.metrics, known=known, now=now.timestamp())
    return {"since": since.isoformat(), "scenarios": len(report.scenarios), "rows": published}


JOB_KINDS: dict[str, JobFunction] = {
    "sync": run_sync,
    "segment_recompute": run_segment_recompute,
    "birthday_scan": run_birthday_scan,
    "edge_sightings_purge": run_edge_sightings_purge,
    "campaigns": run_campaigns,
    "attribution": run_attribution,
}


async def run_job_kind(hub: Hub, kind: str, options: Mapping[str, Any], settle: Settle) -> dict[str, Any]:
    """Run one job of ``kind`` now (no claim, no record: :class:`~cdp_hub.jobs.scheduler.JobRunner` does that)."""
    if kind not in JOB_KINDS:
        raise ConfigurationError(f"unknown job kind {kind!r} (one of {', '.join(JOB_KINDS)})")
    return await JOB_KINDS[kind](hub, options, settle)
