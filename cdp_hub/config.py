"""Configuration: a TOML file plus ``CDP_HUB_*`` environment variables (the environment wins over the file;
arguments given in code win over both).

    cdp-hub --config cdp-hub.toml ...        or   CDP_HUB_CONFIG=cdp-hub.toml
    CDP_HUB_BUS=kafka  CDP_HUB_KAFKA_BOOTSTRAP=10.0.0.5:9092  CDP_HUB_POSTGRES_DSN=postgresql://...

Nested values use ``__``: ``CDP_HUB_CONNECTORS__SHOP__TYPE=ecommerce``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cdp_hub.bus.base import TOPICS, Topics
from cdp_hub.durations import DurationText, Seconds, parse_duration
from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.identities import NormalizationOptions

__all__ = ["ChannelInstance", "ConnectorInstance", "EdgeSettings", "EventSource", "JobConfig", "Settings",
           "load_settings"]



class ConnectorInstance(BaseModel):
    """One configured connector: its type (the plugin name) and the type's own options."""

    model_config = ConfigDict(extra="forbid")

    type: str
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class ChannelInstance(BaseModel):
    """One configured channel (e.g. ``email`` of type ``smtp``) and its options."""

    model_config = ConfigDict(extra="forbid")

    type: str
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class JobConfig(BaseModel):
    """One scheduled job (``[jobs.NAME]``): what it runs, when (cron in a time zone) and its options.

    ``kind`` is ``sync`` (options: ``instance``, ``stream``, ``full_refresh``), ``segment_recompute``
    (options: ``segments``, a list of ids; default every segment), ``birthday_scan`` (no options) or
    ``campaigns`` (no options: launch due scheduled campaigns, send the runs; docs/campaigns.md) or
    ``attribution`` (options: ``since``, default 30d: the marketers' gauges from the scenario report;
    docs/reports.md).
    ``cron`` has five fields (minute hour day month weekday), or six with seconds last.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sync", "segment_recompute", "birthday_scan", "edge_sightings_purge", "campaigns", "attribution"]
    cron: str
    timezone: str = "UTC"
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r} (five fields: minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_is_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Moscow)") from None
        return value


class EventSource(BaseModel):
    """A system allowed to POST canonical events to ``/v1/events`` (``[event_sources.<name>]``).

    The section name is the events' ``source``: a request with one of ``keys`` may only send events of that
    source. ``trust`` says who holds the key: ``trusted`` for a server-side system that keeps it secret,
    ``public`` for a key that ships to browsers or apps (see docs/http-api.md, "Trust levels").
    """

    model_config = ConfigDict(extra="forbid")

    keys: list[SecretStr] = Field(default_factory=list, description="keys the system sends as `Authorization: "
                                  "Bearer <key>` (several during a rotation; none: the source accepts nothing)")
    trust: Literal["public", "trusted"] = "trusted"
    allowed_types: list[str] | None = Field(None, description="canonical event types this source may send "
                                            "(default: every type that is not internal)")


class EdgeSettings(BaseModel):
    """Limits and protocol options of the HTTP edge (``[edge]``; ``CDP_HUB_EDGE__MAX_BODY_BYTES=...``)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body on any route, "
                                "and largest body after gzip inflation (413 beyond)")
    max_batch_messages: int = Field(1000, ge=1, description="messages per /v1/batch or /v1/events request")
    max_depth: int = Field(32, ge=4, description="deepest JSON nesting accepted (400 beyond)")
    timestamp_max_past_days: float = Field(
        5 * 365, gt=0, description="an event time further back is replaced by the receive time (and flagged)")
    timestamp_max_future_seconds: Seconds = Field(
        600, ge=0, description="an event time further ahead, after clock-skew correction, is replaced by the "
        "receive time (and flagged)")
    dedupe_window_seconds: int = Field(7 * 24 * 3600, ge=0, description="a tracking messageId seen again "
                                       "within this window is acknowledged and dropped (0: off)")
    dedupe_store: Literal["auto", "redis", "postgres"] = Field(
        "auto", description="where the dedupe window lives: redis (lost if Redis is flushed), postgres (table "
        "edge_sightings, survives a Redis flush; the edge_sightings_purge job deletes expired rows), or auto: "
        "postgres when redis_url is fakeredis:// (the in-process Redis forgets everything at a restart), else redis")
    cors_origins: list[str] = Field(default_factory=list, description="browser origins allowed to call the "
                                    "tracking routes (`https://shop.example.ru`, or `*`)")
    cors_max_age: int = Field(600, ge=0, description="seconds a browser may cache a preflight answer")
    max_in_flight: int = Field(256, ge=1, description="intake requests (events, tracking, webhooks) handled at "
                               "once by one process; more are answered 503 with Retry-After at once")
    max_backlog: int = Field(50_000, ge=0, description="in-process bus only: accepted events not yet processed "
                             "by every stage; beyond it intake answers 503 with Retry-After (0: no limit)")
    overload_retry_after: Seconds = Field(1.0, gt=0, description="Retry-After of those 503 answers")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDP_HUB_", env_nested_delimiter="__", extra="forbid")

    bus: Literal["memory", "kafka"] = Field("memory", description="memory: in-process; kafka: real brokers")
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_client_id: str = "cdp-hub"
    kafka_replication_factor: int = 1
    kafka_compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = Field(
        "zstd", description="codec of the records the hub produces (consumers read every codec): zstd has gzip's "
        "size at about half its CPU (bench/compression.py); none only where the network is free (loopback); "
        "zstd needs Kafka 2.1 or later on the brokers and on every other reader of the topics")
    kafka_linger_ms: int = Field(
        5, ge=0, description="how long the producer holds a batch open for more records (aiokafka linger_ms) when "
        "they are published one at a time; a stage's batch output and an edge request's events (publish_many) "
        "leave at once, their caller waits for the acks anyway. 0 made the triggers stage slower (bench/triggers.py)")
    topic_prefix: str = ""
    topic_partitions: int = 4
    parse_once: bool = Field(
        True, description="stages decode records the hub itself produced without validating them again "
        "(docs/architecture.md, \"Trust boundary\"); false validates every record in every stage, as before")
    record_seal_key: SecretStr | None = Field(
        None, description="MAC key with which hub processes seal the records they publish; a stage trusts a "
        "record on the raw events topic only with a valid seal. Unset: a random key per process (cdp-hub run "
        "--processes shares one with its workers); set the same key in every process of a deployment whose "
        "stages run apart (Kubernetes), or the resolver validates the edge's events again")

    # repr=False: a DSN or URL may carry a password; printing the settings must not show it.
    postgres_dsn: str = Field("embedded", repr=False,
                              description="a PostgreSQL/Greenplum DSN, or 'embedded' (pgserver)")
    postgres_pool_size: int = 10
    dialect: Literal["postgres", "greenplum"] = "postgres"

    redis_url: str = Field("fakeredis://", repr=False,
                           description="redis://host:port/db, or 'fakeredis://' (in-process)")

    data_dir: Path = Field(Path(".cdp-hub"), description="embedded database, outbox and other local state")
    default_phone_region: str = "RU"
    gmail_remove_dots: bool = False

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the admin API (/v1/profiles, /v1/dlq); without one the admin API is "
        "closed and `cdp-hub run` listens on loopback only")
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    event_sources: dict[str, EventSource] = Field(
        default_factory=dict, description="systems allowed to POST canonical events to /v1/events, by source name")

    auto_migrate: bool = Field(True, description="apply pending migrations at start (else: `cdp-hub migrate`)")
    auto_create_topics: bool = Field(True, description="create missing topics at start")
    stage_stuck_seconds: Seconds = Field(300.0, description="/healthz fails when a stage made no progress this long")
    edge_publish_timeout: Seconds = Field(
        10.0, gt=0, description="seconds the HTTP edge waits for the bus to take a request's events; then 503")
    edge_retry_after: Seconds = Field(5.0, gt=0, description="Retry-After (seconds) of the edge's 503 answers")
    shutdown_grace_seconds: Seconds = Field(
        30.0, gt=0, description="on SIGTERM, seconds the stages get to finish their batches; work still running "
        "then is left uncommitted (replayed after the restart) and the process exits 0")
    gc_gen0_threshold: int = Field(
        10_000, ge=0, description="the garbage collector's first threshold in `cdp-hub run` (Python's default "
        "is 700; 0 keeps it): a request or batch allocates thousands of short-lived containers, and collecting "
        "every 700 of them cost the HTTP edge ~12% of its CPU per event (bench/ingest_http.py); the start-up "
        "heap is frozen out of the collector's way as well")
    log_level: str = Field("WARNING", description="DEBUG, INFO, WARNING, ERROR (the --log-level flag wins)")
    log_format: Literal["text", "json"] = "text"

    http_max_connections: int = Field(
        128, description="outgoing HTTP connections of one process (connectors, channels), in pools of 8")

    batch_size: int = Field(250, description="records per stage batch: 250 keeps the resolver's p99 under 50 ms")
    poll_timeout_ms: int = 200
    stage_halt_dead_batches: int = Field(
        5, ge=0, description="a stage stops with an error after this many batches in a row in which every record "
        "was dead-lettered (0: never), so a broken deployment does not drain a topic into the DLQ")
    stage_halt_dead_records: int = Field(
        100, ge=0, description="... and only once those batches hold at least this many records, so a trickle of "
        "junk does not stop a stage")

    connectors: dict[str, ConnectorInstance] = Field(default_factory=dict)
    channels: dict[str, ChannelInstance] = Field(default_factory=dict)
    jobs: dict[str, JobConfig] = Field(
        default_factory=dict, description="scheduled jobs ([jobs.NAME]), run by the scheduler in `cdp-hub run`")
    scheduler_enabled: bool = Field(
        True, description="run the [jobs] schedule in `cdp-hub run` (any number of processes: each slot runs once)")
    scenarios_dir: Path | None = None
    segments_dir: Path | None = Field(
        None, description="the deployment's segment YAML files; a file with a built-in's id replaces it"
    )
    campaigns_dir: Path | None = Field(
        None, description="the deployment's campaign YAML files (docs/campaigns.md)")
    campaign_lease: str = Field(
        "30s", description="a campaign run whose sender has not checked in for this long is taken over by "
        "another process (a crashed sender resumes there)")

    # Triggers (cdp_hub.triggers): consent, replays, event time and the contact policy (docs/scenarios.md).
    consent_policy: Literal["opt_in", "opt_out"] = Field(
        "opt_in", description="opt_in: marketing goes only to a channel with recorded consent (38-FZ art. 18); "
        "opt_out: to every channel not opted out, where the law allows it")
    max_trigger_age: DurationText = Field(
        "24h", description="no marketing scenario fires for an event older than this (event time); a scenario's "
        "max_age overrides it")
    allowed_lateness: DurationText = Field(
        "1m", description="timers wait this long past their fire time for late events (an order that cancels "
        "a cart reminder); a trigger arriving later than this after its send time is dropped as too_late")
    mute_triggers: bool = Field(
        False, description="profiles and segments update, no scenario fires (replays, backfills); decided muted")
    resolver_backlog_holds_timers: int = Field(
        5000, ge=0, description="delayed triggers and journey waits do not fire while the resolver (this "
        "deployment's, same topic_prefix) has more than this many records of cdp.events not committed: a "
        "catch-up after an outage still holds the events (orders) that may cancel them; 0: never held")
    resolver_random_page_cost: float | None = Field(
        1.1, ge=0, description="the planner's random_page_cost inside the resolver's batch transactions (dialect "
        "postgres): a batch probes a few hundred keys into indexes that are in memory, and at the server default "
        "(4) the planner reads tables of tens of thousands of rows whole instead (docs/operations.md, \"Query "
        "plans\"); null keeps the server's. Other statements (segments, reports) always plan at the server's")
    profile_events_omit: list[str] = Field(
        ["message.decided"], description="event types the resolver stores but does not pass on to "
        "cdp.profile-events, because the triggers stage reads none of them (the contact policy's own decisions, by "
        "default): the triggers stage refuses to start while a scenario or journey triggers, cancels, waits, "
        "exits or converts on one. Every process of a deployment needs the same list (docs/scaling.md, "
        "\"Amplification\"); [] passes every event on, as before")
    priority_window: DurationText = Field(
        "1h", description="marketing scenarios firing for one profile within this window compete on priority")
    marketing_caps: dict[str, int] = Field(
        default_factory=dict, description="messages per profile across every marketing scenario, by window "
        "(e.g. {\"1d\" = 2, \"7d\" = 5})")
    channel_caps: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="marketing messages per profile on one channel, by window "
        "(e.g. {sms = {\"7d\" = 2}})")
    consent_link_secret: SecretStr | None = Field(
        None, description="HMAC key signing double opt-in confirmation links (required to send them)")
    consent_link_ttl: DurationText = Field("72h", description="how long a double opt-in confirmation link is valid")
    public_url: str | None = Field(
        None, description="the hub's public base URL, for links in messages (double opt-in confirmation)")

    # Experiments and attribution (docs/experiments.md, docs/reports.md).
    holdout_share: float = Field(
        0.0, ge=0.0, le=0.5, description="the global holdout: this share of profiles (e.g. 0.05) gets no marketing "
        "message at all, decided holdout (reason global_holdout); transactional and service still go")
    holdout_salt: str = Field(
        "cdp-hub-holdout", min_length=1, description="chooses who is in the global holdout; a new salt is a new "
        "holdout group (keep it for as long as the measurement runs)")
    conversion_events: list[str] = Field(
        default_factory=lambda: ["order.paid"], min_length=1,
        description="event types that count as a conversion in reports (revenue: properties.total); an order "
        "counts once by its order_id, so [\"order.paid\", \"order.placed\"] is fine")
    attribution_window: DurationText = Field(
        "7d", description="a conversion counts for a message delivered or opened, or a control assignment, "
        "within this long before it")

    # Delivery (cdp_hub.delivery): templates, locale defaults, concurrency and retries.
    templates_dir: Path | None = Field(None, description="the deployment's templates; built-ins are the fallback")
    default_locale: str = Field("ru", description="locale of a customer whose profile has none")
    default_currency: str = Field("RUB", description="currency of the money filter when a template names none")
    unsubscribe_url: str | None = Field(
        None, description="List-Unsubscribe link for marketing e-mail; {message_id}, {profile_id}, {channel}"
    )
    delivery_concurrency: int = Field(512, description="messages sent at once by one delivery process")
    delivery_retry_attempts: int = Field(4, description="tries per channel on transient errors (429, 5xx)")
    delivery_retry_backoff: Seconds = Field(0.5, description="first backoff in seconds; doubles, with jitter")
    delivery_retry_max_wait: Seconds = Field(30.0, description="longest wait between tries, Retry-After included")
    delivery_send_timeout: Seconds = Field(
        30.0, gt=0, description="seconds one send may take before it counts as a transient failure")
    delivery_circuit_failures: int = Field(
        5, ge=1, description="transient failures in a row that open a channel instance's circuit breaker")
    delivery_circuit_reset: Seconds = Field(
        30.0, gt=0, description="seconds an open circuit waits before one trial send (half-open)")

    # Catalogue and recommendations (cdp_hub.resolver.catalogue, cdp_hub.store.recommendations).
    catalogue_interest_days: int = Field(
        30, ge=1, description="a price drop or return to stock is told to customers who viewed the product this "
        "many days before it (and have not bought it since)")
    catalogue_audience_limit: int = Field(
        100_000, ge=0, description="most customers told of one catalogue change (the latest viewers first)")
    catalogue_low_stock: int = Field(
        3, ge=0, description="a product whose stock falls to this many (and not 0) is a product.low_stock event for "
        "the customers with it in a cart (0: never)")
    recommend_window_days: int = Field(
        365, ge=1, description="orders this recent feed 'bought together' and 'popular' (cdp-hub recommend refresh)")
    recommend_min_support: int = Field(
        3, ge=1, description="orders two products must share to count as bought together")
    recommend_damping: float = Field(
        0.15, ge=0, le=1, description="popularity correction of 'bought together': 0 ranks partners by how often "
        "they were bought with the product, 0.5 is the cosine, 1 ranks them by lift")

    @field_validator("log_level")
    @classmethod
    def _level_is_known(cls, value: str) -> str:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        if value.upper() not in levels:
            raise ValueError(f"{value!r} is not one of {', '.join(levels)}")
        return value.upper()

    @field_validator("profile_events_omit")
    @classmethod
    def _merges_are_passed_on(cls, value: list[str]) -> list[str]:
        # The triggers stage moves timers, caps and journey positions to the survivor on profile.merged,
        # whatever the scenarios say: that record is never optional.
        if "profile.merged" in value:
            raise ValueError("profile.merged cannot be omitted: the triggers stage follows merges on it")
        return list(dict.fromkeys(value))

    @field_validator("marketing_caps")
    @classmethod
    def _cap_windows_are_durations(cls, value: dict[str, int]) -> dict[str, int]:
        for window in value:
            parse_duration(window, field=f"window {window!r}")
        return value

    @field_validator("channel_caps")
    @classmethod
    def _channel_cap_windows_are_durations(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for channel, caps in value.items():
            for window in caps:
                parse_duration(window, field=f"{channel}: window {window!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: arguments given in code, then the environment, then the config file.
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))

    @property
    def topics(self) -> Topics:
        return TOPICS.with_prefix(self.topic_prefix) if self.topic_prefix else TOPICS

    @property
    def resolver_probe_cost(self) -> float | None:
        """``resolver_random_page_cost`` where it applies: PostgreSQL. Greenplum's planners price on their own
        scale (the legacy planner's default is 100; GPORCA ignores the setting)."""
        return self.resolver_random_page_cost if self.dialect == "postgres" else None

    @property
    def normalization(self) -> NormalizationOptions:
        return NormalizationOptions(
            default_region=self.default_phone_region, gmail_remove_dots=self.gmail_remove_dots
        )


M = TypeVar("M", bound=BaseModel)


def validate_options(model: type[M], options: M | Mapping[str, Any] | None, *, where: str) -> M:
    """A plugin's options as its pydantic model; errors name the fields, never the values (secrets)."""
    if isinstance(options, model):
        return options
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        raise ConfigurationError(f"{where}: {_field_problems(exc)}") from None


def _field_problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False))


_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("cdp_hub_config_file", default=None)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The parsed TOML file of :func:`load_settings`: below the environment, which overrides it."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (``path``, else ``$CDP_HUB_CONFIG``, else ``./cdp-hub.toml`` if present)."""
    file = path or os.environ.get("CDP_HUB_CONFIG")
    if file is None and Path("cdp-hub.toml").exists():
        file = "cdp-hub.toml"
    data: dict[str, Any] = {}
    if file is not None:
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigurationError(f"config file not found: {file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file {file}: {exc}") from None
    token = _FILE_DATA.set(data)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # Name the fields, never the values: a value may be a secret.
        where = f" in {file}" if file else ""
        raise ConfigurationError(f"invalid configuration{where}: {_field_problems(exc)}") from None
    finally:
        _FILE_DATA.reset(token)
