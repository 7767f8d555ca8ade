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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cdp_hub.bus.base import TOPICS, Topics
from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.identities import NormalizationOptions

__all__ = ["ChannelInstance", "ConnectorInstance", "Settings", "load_settings"]


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDP_HUB_", env_nested_delimiter="__", extra="forbid")

    bus: Literal["memory", "kafka"] = Field("memory", description="memory: in-process; kafka: real brokers")
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_client_id: str = "cdp-hub"
    kafka_replication_factor: int = 1
    topic_prefix: str = ""
    topic_partitions: int = 4

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
    admin_token: SecretStr | None = Field(None, description="bearer token for /v1/profiles and /v1/dlq")

    auto_migrate: bool = Field(True, description="apply pending migrations at start (else: `cdp-hub migrate`)")
    auto_create_topics: bool = Field(True, description="create missing topics at start")
    stage_stuck_seconds: float = Field(300.0, description="/healthz fails when a stage made no progress this long")
    edge_publish_timeout: float = Field(
        10.0, gt=0, description="seconds the HTTP edge waits for the bus to take a request's events; then 503")
    edge_retry_after: float = Field(5.0, gt=0, description="Retry-After (seconds) of the edge's 503 answers")
    shutdown_grace_seconds: float = Field(
        30.0, gt=0, description="on SIGTERM, seconds the stages get to finish their batches; work still running "
        "then is left uncommitted (replayed after the restart) and the process exits 0")
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
    scenarios_dir: Path | None = None
    segments_dir: Path | None = Field(
        None, description="the deployment's segment YAML files; a file with a built-in's id replaces it"
    )

    # Delivery (cdp_hub.delivery): templates, locale defaults, concurrency and retries.
    templates_dir: Path | None = Field(None, description="the deployment's templates; built-ins are the fallback")
    default_locale: str = Field("ru", description="locale of a customer whose profile has none")
    default_currency: str = Field("RUB", description="currency of the money filter when a template names none")
    unsubscribe_url: str | None = Field(
        None, description="List-Unsubscribe link for marketing e-mail; {message_id}, {profile_id}, {channel}"
    )
    delivery_concurrency: int = Field(512, description="messages sent at once by one delivery process")
    delivery_retry_attempts: int = Field(4, description="tries per channel on transient errors (429, 5xx)")
    delivery_retry_backoff: float = Field(0.5, description="first backoff in seconds; doubles, with jitter")
    delivery_retry_max_wait: float = Field(30.0, description="longest wait between tries, Retry-After included")
    delivery_send_timeout: float = Field(
        30.0, gt=0, description="seconds one send may take before it counts as a transient failure")
    delivery_circuit_failures: int = Field(
        5, ge=1, description="transient failures in a row that open a channel instance's circuit breaker")
    delivery_circuit_reset: float = Field(
        30.0, gt=0, description="seconds an open circuit waits before one trial send (half-open)")

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
