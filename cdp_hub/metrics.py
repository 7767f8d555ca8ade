"""Prometheus metrics of the hub (served on ``/metrics`` by the daemon)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["METRICS", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All metrics in one registry, so tests and several hubs in one process do not collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.profiles_created = Counter("cdp_profiles_created", "Profiles created by the resolver", registry=r)
        self.profiles_merged = Counter("cdp_profiles_merged", "Profiles merged into another", registry=r)
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


METRICS = Metrics()
