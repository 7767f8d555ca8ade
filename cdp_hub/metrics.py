"""Prometheus metrics of the hub (served on ``/metrics`` by the daemon).

Every registry carries the process, platform and garbage-collector collectors (RSS, CPU, open file
descriptors, GC runs), and no ``_created`` series (they doubled every counter and histogram). Series for the
label values the hub knows in advance (its stages, failure types, dependencies, configured channels and
connectors, HTTP routes) exist from the start at zero (:meth:`Metrics.known`), so a dashboard shows 0 rather
than "no data" and ``rate()`` sees the first error.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

__all__ = ["METRICS", "Metrics"]

disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All metrics in one registry, so tests and several hubs in one process do not collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if r is not REGISTRY:  # the default registry has these already; a registry of our own gets its own
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.events_ingested = Counter(
            "cdp_events_ingested", "Canonical events published to cdp.events", ["source", "type"], registry=r
        )
        self.dlq = Counter("cdp_dlq_records", "Records sent to the dead-letter queue",
                           ["stage", "failure_type"], registry=r)
        self.stage_records = Counter("cdp_stage_records", "Records processed by a stage", ["stage"], registry=r)
        self.stage_batch_seconds = Histogram(
            "cdp_stage_batch_seconds", "Time to process one batch, commit included", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stage_event_latency = Histogram(
            "cdp_stage_event_latency_seconds", "From a record's publish to its stage being done with it", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stage_errors = Counter("cdp_stage_errors", "Batches that failed and were retried",
                                    ["stage"], registry=r)
        self.stage_record_bugs = Counter(
            "cdp_stage_record_bugs", "Records dead-lettered by an unexpected exception (a bug, not bad input)",
            ["stage"], registry=r,
        )
        self.stage_decoded = Counter(
            "cdp_stage_decoded", "Records a stage decoded, by path: trusted (the hub's own, not validated again) "
            "or validated (the full model)", ["stage", "path"], registry=r,
        )
        self.stage_last_progress = Gauge(
            "cdp_stage_last_progress_timestamp_seconds",
            "When a stage last finished a poll (idle, or a batch committed)", ["stage"], registry=r,
        )
        self.consumer_lag = Gauge("cdp_consumer_lag", "Records behind the end of the topic",
                                  ["stage", "topic", "partition"], registry=r)
        self.messages = Counter("cdp_messages", "Messages by channel and status", ["channel", "status"], registry=r)
        self.trigger_decisions = Counter(
            "cdp_trigger_decisions", "Contact-policy decisions by scenario and decision (sent, deferred, capped, "
            "no_consent, suppressed, duplicate, lost_priority, too_late, muted)", ["scenario", "decision"], registry=r)
        self.timers_held = Gauge(
            "cdp_trigger_timers_held", "1 while the triggers stage holds due timers because the resolver is behind "
            "(resolver_backlog_holds_timers)", registry=r)
        self.delivery_decisions = Counter(
            "cdp_delivery_decisions", "Messages refused at send time by scenario and decision (no_consent: consent "
            "withdrawn or a purpose blocked since the intent; suppressed: every address hard-bounced)",
            ["scenario", "decision"], registry=r)
        # Marketers' view (deploy/grafana/cdp-hub-marketing.json): labels are scenario and campaign ids, variant
        # names and channel instances from the configuration, never a profile.
        self.scenario_sends = Counter(
            "cdp_scenario_sends", "Messages decided sent, by scenario (campaign:<id> for a campaign), experiment "
            "variant (none outside an experiment) and channel", ["scenario", "variant", "channel"], registry=r)
        self.experiment_controls = Counter(
            "cdp_experiment_controls", "Messages not sent because the profile is in the experiment's control group",
            ["scenario"], registry=r)
        self.journey_entries = Counter(
            "cdp_journey_entries", "Profiles that entered a journey, by journey (scenario) and experiment arm "
            "(a variant, control, holdout; none without an experiment)", ["scenario", "arm"], registry=r)
        self.journey_steps = Counter(
            "cdp_journey_steps", "Steps journeys took (a send reached, a branch or split taken, a wait or wait_for "
            "ended), by journey (scenario), step and kind", ["scenario", "step", "kind"], registry=r)
        self.journey_finished = Counter(
            "cdp_journey_finished", "Journey entries that ended, by journey (scenario) and how (completed, "
            "converted: a goal, exited: an exit_on event, control: the control group)", ["scenario", "status"], registry=r)
        self.attributed_recipients = Gauge(
            "cdp_attribution_recipients", "Profiles reached (delivered or opened; control: assigned) in the "
            "attribution job's last period, by scenario, variant (control for the control group) and channel",
            ["scenario", "variant", "channel"], registry=r)
        self.attributed_conversions = Gauge(
            "cdp_attribution_conversions", "Of those, profiles that converted within the attribution window",
            ["scenario", "variant", "channel"], registry=r)
        self.attributed_revenue = Gauge(
            "cdp_attribution_revenue", "Revenue of the conversions attributed, in the orders' currency units",
            ["scenario", "variant", "channel"], registry=r)
        self.attributed_uplift = Gauge(
            "cdp_attribution_uplift", "Conversion-rate uplift of a variant over the control group, in percentage "
            "points, with its 95% interval (bound: estimate, low, high)", ["scenario", "variant", "bound"],
            registry=r)
        self.attribution_last_run = Gauge(
            "cdp_attribution_last_run_timestamp_seconds", "When the attribution job last updated these gauges",
            registry=r)
        self.profiles_created = Counter("cdp_profiles_created", "Profiles created by the resolver", registry=r)
        self.profiles_merged = Counter("cdp_profiles_merged", "Profiles merged into another", registry=r)
        self.profile_events_omitted = Counter(
            "cdp_profile_events_omitted", "Events the resolver stored but did not pass on to cdp.profile-events "
            "(profile_events_omit), by type", ["type"], registry=r)
        self.outages = Counter("cdp_outages", "Dependency outages seen (kafka, postgres, redis)", ["dependency"],
                               registry=r)
        self.outage = Gauge("cdp_outage", "1 while a dependency is down (kafka, postgres, redis)", ["dependency"],
                            registry=r)
        self.stage_paused = Gauge(
            "cdp_stage_paused", "1 while a stage waits for a dependency (its batch retried, not committed)",
            ["stage", "dependency"], registry=r)
        self.channel_circuit = Gauge(
            "cdp_channel_circuit_open", "1 while a channel instance's circuit breaker is open (sends wait)",
            ["channel"], registry=r)
        self.http_unavailable = Counter(
            "cdp_http_unavailable", "Requests answered 503 because the events could not be made durable",
            ["route", "dependency"], registry=r)
        self.http_dedupe_skipped = Counter(
            "cdp_http_dedupe_skipped", "Tracking messages accepted without the edge's dedupe window (Redis down; "
            "the events table drops a repeat by its event id)", ["dependency"], registry=r)
        self.http_requests = Counter("cdp_http_requests", "HTTP requests served", ["route", "status"], registry=r)
        self.http_request_seconds = Histogram(
            "cdp_http_request_seconds", "Time to answer an HTTP request, by route", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.http_in_flight = Gauge("cdp_http_in_flight", "HTTP intake requests being handled now", registry=r)
        self.http_shed = Counter(
            "cdp_http_shed", "Intake requests answered 503 at once: too many in flight (overloaded) or too many "
            "accepted events not yet processed on the in-process bus (backlogged)", ["route", "reason"], registry=r)
        self.channel_send_seconds = Histogram(
            "cdp_channel_send_seconds", "Time of one send to a channel's provider (each try), by channel instance",
            ["channel"], buckets=_LATENCY_BUCKETS, registry=r)
        self.sync_records = Counter("cdp_sync_records", "Records read from a source by a sync",
                                    ["connector", "stream"], registry=r)
        self.sync_pages = Counter("cdp_sync_pages", "Pages read from a source by a sync", ["connector", "stream"],
                                  registry=r)
        self.sync_errors = Counter("cdp_sync_errors", "Syncs that failed", ["connector", "stream"], registry=r)
        self.sync_last_success = Gauge(
            "cdp_sync_last_success_timestamp_seconds", "When a stream's last sync succeeded (alert on staleness)",
            ["connector", "stream"], registry=r)
        self.sync_lag = Gauge(
            "cdp_sync_lag_seconds", "How far the stream's checkpoint is behind now, at the end of its last sync",
            ["connector", "stream"], registry=r)

    def known(self, *, stages: Iterable[str] = (), failure_types: Iterable[str] = (),
              dependencies: Iterable[str] = (), channels: Iterable[str] = (), routes: Iterable[str] = (),
              streams: Iterable[tuple[str, str]] = ()) -> None:
        """Create the series of label values known in advance, at zero (idempotent)."""
        failure_types = tuple(failure_types)
        for stage in stages:
            for family in (self.stage_records, self.stage_errors, self.stage_record_bugs, self.stage_batch_seconds,
                           self.stage_event_latency):
                family.labels(stage)
            for failure_type in failure_types:
                self.dlq.labels(stage, failure_type)
        for dependency in dependencies:
            self.outages.labels(dependency)
            self.outage.labels(dependency)
        for channel in channels:
            self.channel_send_seconds.labels(channel)
            self.channel_circuit.labels(channel)
            for status in ("sent", "failed", "deferred"):
                self.messages.labels(channel, status)
        for route in routes:
            self.http_request_seconds.labels(route)
        for connector, stream in streams:  # "connector", not "instance": Prometheus's target label is that
            for family in (self.sync_records, self.sync_pages, self.sync_errors):
                family.labels(connector, stream)


METRICS = Metrics()
