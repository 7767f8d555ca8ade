"""Canonical events as bus records: the partition key and the headers every producer of events uses.

One person's events should mostly share a partition (their order matters to the resolver), so the key is
the event's strongest identity, by a fixed priority of kinds; a catalogue event, which names no person, is
keyed by its product's SKU.
"""

from __future__ import annotations

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.schema.events import Event

__all__ = ["event_key", "event_message"]

_KEY_PRIORITY = ("crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card", "email", "phone",
                 "device_id", "push_token", "anonymous_id")


def event_key(event: Event) -> bytes:
    """Partition key: the event's strongest identity, so one person's events mostly share a partition."""
    by_kind = {i.kind: i.value for i in event.identities}
    for kind in _KEY_PRIORITY:
        if kind in by_kind:
            return f"{kind}:{by_kind[kind]}".encode()
    if not event.identities:
        # A catalogue event (product.updated) is about a product: one product's versions share a partition.
        sku = event.properties.get("sku")
        return f"sku:{sku}".encode() if isinstance(sku, str) else f"event:{event.event_id}".encode()
    first = event.identities[0]
    return f"{first.kind}:{first.value}".encode()


def event_message(topic: str, event: Event) -> OutgoingMessage:
    """``event`` as a record for ``topic``: keyed by :func:`event_key`, type and source in headers."""
    return OutgoingMessage(topic, event.to_json(), event_key(event),
                           (("cdp.type", event.type.encode()), ("cdp.source", event.source.encode())))
