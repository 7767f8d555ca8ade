"""The hub: one object that builds, starts and stops every long-lived client, with one lifespan.

    Hub(settings)
     ├─ bus        KafkaBus | MemoryBus
     ├─ store      asyncpg pool (PostgreSQL / Greenplum / embedded pgserver), migrated on start
     ├─ hotstate   Redis | fakeredis
     ├─ sightings  the edge's dedupe window: hotstate, or PostgreSQL (edge.dedupe_store)
     ├─ http       one shared httpx.AsyncClient for connectors and channels
     ├─ registry   connector and channel plugins, and their configured instances
     ├─ metrics    the Prometheus registry
     └─ outages    the dependency outages this process sees (one ERROR line each, /readyz)

The stages are built and run by :mod:`cdp_hub.pipeline.build`, which hands each stage only what it uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import httpx

from cdp_hub.bus import Bus, Topics
from cdp_hub.bus.provenance import RecordSeal
from cdp_hub.config import Settings
from cdp_hub.hotstate import HotState
from cdp_hub.httpclient import shared_client
from cdp_hub.metrics import METRICS, Metrics
from cdp_hub.outages import DEPENDENCIES, Outages
from cdp_hub.plugins import PluginRegistry, get_registry
from cdp_hub.redact import collect_secrets, register_secrets
from cdp_hub.store import Store
from cdp_hub.store.sightings import SightingRepository

if TYPE_CHECKING:
    from cdp_hub.channel.base import Channel
    from cdp_hub.connector.base import Connector

__all__ = ["Hub", "SightingWindow", "create_bus"]

log = logging.getLogger(__name__)


class SightingWindow(Protocol):
    """Which ids were seen within a window: :class:`HotState` (Redis) or :class:`SightingRepository`
    (PostgreSQL) answer the same way (``edge.dedupe_store``)."""

    @property
    def dependency(self) -> str:
        """The dependency the window lives in (``"redis"`` or ``"postgres"``), as the outage board names it."""
        ...

    async def first_sightings(self, scope: str, items: Sequence[str], ttl_seconds: int) -> list[bool]: ...

    async def forget_sightings(self, scope: str, items: Sequence[str]) -> None: ...


def create_bus(settings: Settings) -> Bus:
    from cdp_hub.bus import create_bus as _create

    if settings.bus == "kafka":
        return _create("kafka", bootstrap=settings.kafka_bootstrap, client_id=settings.kafka_client_id,
                       replication_factor=settings.kafka_replication_factor,
                       default_partitions=settings.topic_partitions, compression=settings.kafka_compression,
                       producer_options={"linger_ms": settings.kafka_linger_ms})
    return _create(settings.bus, default_partitions=settings.topic_partitions)


class Hub:
    """The long-lived clients (bus, store, hot state, HTTP, plugins, metrics), with one lifespan."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bus: Bus | None = None,
        store: Store | None = None,
        hotstate: HotState | None = None,
        http: httpx.AsyncClient | None = None,
        registry: PluginRegistry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or Settings()
        register_secrets(collect_secrets(self.settings))  # log lines and errors never show them
        self.bus = bus or create_bus(self.settings)
        if self.bus.seal is None:  # a bus shared by several hubs (tests) keeps the first one's seal
            key = self.settings.record_seal_key
            self.bus.seal = RecordSeal(key.get_secret_value().encode() if key is not None else None,
                                       topics=frozenset({self.settings.topics.events}))
        self.store = store or Store.for_settings(self.settings)
        self.hotstate = hotstate or HotState(self.settings.redis_url)
        self._own_http = http is None
        self.http = http or shared_client(max_connections=self.settings.http_max_connections)
        self.registry = registry or get_registry()
        self.metrics = metrics or METRICS
        self.outages = Outages(self.metrics)
        self.metrics.known(dependencies=DEPENDENCIES, channels=self.settings.channels,
                           streams=self._configured_streams())
        """Dependency outages seen by this process (stages, HTTP edge); ``/readyz`` and the logs read it."""
        self._channels: dict[str, Channel] = {}
        self._sightings: SightingRepository | None = None
        self._started = False
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        """The hub's notion of now (scenarios, quiet hours, timers); the demo and tests may pin it."""

    def _configured_streams(self) -> list[tuple[str, str]]:
        """(instance, stream) of every enabled connector instance whose plugin is installed."""
        found: list[tuple[str, str]] = []
        for name, inst in self.settings.connectors.items():
            info = self.registry.connectors.get(inst.type) if inst.enabled else None
            stream_names = getattr(info.cls, "stream_names", None) if info is not None else None
            found.extend((name, stream) for stream in (stream_names() if callable(stream_names) else ()))
        return found

    @property
    def topics(self) -> Topics:
        return self.settings.topics

    @property
    def sightings(self) -> SightingWindow:
        """The edge's dedupe window (tracking messageIds, ids of events derived from callbacks): in Redis, or in
        PostgreSQL with ``edge.dedupe_store = "postgres"`` (Redis may then be a cache that is flushed), and with
        the default ``"auto"`` when the hot state is the in-process fakeredis, which a restart empties (and
        whose one-command-per-id Lua costs more CPU than the whole rest of the edge: bench/ingest_http.py)."""
        choice = self.settings.edge.dedupe_store
        if choice == "postgres" or (choice == "auto" and self.hotstate.backend == "fakeredis"):
            if self._sightings is None:
                self._sightings = SightingRepository(self.store)
            return self._sightings
        return self.hotstate

    async def start(self) -> None:
        if self._started:
            return
        await self.bus.start()
        if self.settings.auto_create_topics:
            await self.bus.ensure_topics(self.topics.all(), partitions=self.settings.topic_partitions)
        await self.store.start()
        if self.settings.auto_migrate:
            await self.store.migrate()
        await self.hotstate.start()
        self._started = True

    async def stop(self) -> None:
        for channel in list(self._channels.values()):
            try:
                await channel.stop()
            except Exception:
                log.exception("stopping channel %s", channel.instance)
        self._channels.clear()
        if self._own_http:
            await self.http.aclose()
        await self.hotstate.stop()
        await self.store.stop()
        await self.bus.stop()
        self._started = False

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- plugins -------------------------------------------------------------------------------------

    def connector(self, name: str, config: dict[str, Any] | None = None) -> Connector:
        """A configured connector instance (``[connectors.NAME]`` in the config), or a type by its name."""
        inst = self.settings.connectors.get(name)
        if inst is not None:
            cls = self.registry.connector(inst.type)
            return cls(config if config is not None else inst.config, instance=name, http=self.http,  # type: ignore[no-any-return]
                       normalization=self.settings.normalization)
        cls = self.registry.connector(name)
        return cls(config or {}, instance=name, http=self.http,  # type: ignore[no-any-return]
                   normalization=self.settings.normalization)

    async def channel(self, name: str) -> Channel:
        """A started channel instance (``[channels.NAME]`` in the config, or a type by its name)."""
        if name in self._channels:
            return self._channels[name]
        inst = self.settings.channels.get(name)
        if inst is not None:
            cls = self.registry.channel(inst.type)
            channel: Channel = cls(inst.config, instance=name, http=self.http)
        else:
            cls = self.registry.channel(name)
            channel = cls(self._default_channel_config(name), instance=name, http=self.http)
        await channel.start()
        self._channels[name] = channel
        return channel

    def _default_channel_config(self, name: str) -> dict[str, Any]:
        if name == "outbox":
            return {"directory": str(self.settings.data_dir / "outbox")}
        return {}
