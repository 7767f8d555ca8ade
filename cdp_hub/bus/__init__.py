"""Message bus: Kafka in production, in-process for the embedded default (same semantics).

``create_bus("memory")`` or ``create_bus("kafka", bootstrap="host:9092")`` builds either backend;
the Kafka module (and aiokafka) is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from cdp_hub.bus.base import TOPICS, Bus, Consumer, OutgoingMessage, Record, TopicPartition, Topics
from cdp_hub.errors import ConfigurationError

__all__ = [
    "BACKENDS",
    "TOPICS",
    "Bus",
    "Consumer",
    "OutgoingMessage",
    "Record",
    "TopicPartition",
    "Topics",
    "create_bus",
]

BACKENDS = ("memory", "kafka")


def create_bus(backend: str, *, bootstrap: str | None = None, **kw: Any) -> Bus:
    """A new, not yet started bus. ``kw`` goes to the backend's constructor
    (:class:`~cdp_hub.bus.memory.MemoryBus` or :class:`~cdp_hub.bus.kafka.KafkaBus`)."""
    if backend == "memory":
        from cdp_hub.bus.memory import MemoryBus

        return MemoryBus(**kw)
    if backend == "kafka":
        if not bootstrap:
            raise ConfigurationError("the kafka bus needs bootstrap servers (CDP_HUB_KAFKA_BOOTSTRAP)")
        from cdp_hub.bus.kafka import KafkaBus

        return KafkaBus(bootstrap, **kw)
    raise ConfigurationError(f"unknown bus backend {backend!r}; expected one of {', '.join(BACKENDS)}")
