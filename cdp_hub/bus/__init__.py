"""Message bus: Kafka in production, in-process for the embedded default (same semantics)."""

from cdp_hub.bus.base import TOPICS, Bus, Consumer, OutgoingMessage, Record, TopicPartition, Topics

__all__ = ["TOPICS", "Bus", "Consumer", "OutgoingMessage", "Record", "TopicPartition", "Topics"]
