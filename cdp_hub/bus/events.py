"""Canonical events as bus records: the partition key and the headers every producer of events uses.

One person's events should mostly share a partition (their order matters to the resolver), so the key is
the event's strongest identity, by a fixed priority of kinds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.schema.events import Event

__all__ = ["event_dict_message", "event_key", "event_message"]

_KEY_PRIORITY = ("crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card", "email", "phone",
                 "device_id", "push_token", "anonymous_id")


def event_key(event: Event) -> bytes:
    """Partition key: the event's strongest identity, so one person's events mostly share a partition."""
    return _strongest((i.kind, i.value) for i in event.identities)


def _strongest(identities: Iterable[tuple[str, str]]) -> bytes:
    by_kind = dict(identities)  # the last identity of a kind names it
    for kind in _KEY_PRIORITY:
        if kind in by_kind:
            return f"{kind}:{by_kind[kind]}".encode()
    if not by_kind:
        raise IndexError("an event without identities has no partition key")
    kind, value = next(iter(by_kind.items()))
    return f"{kind}:{value}".encode()


def event_message(topic: str, event: Event) -> OutgoingMessage:
    """``event`` as a record for ``topic``: keyed by :func:`event_key`, type and source in headers."""
    return OutgoingMessage(topic, event.to_json(), event_key(event),
                           (("cdp.type", event.type.encode()), ("cdp.source", event.source.encode())))


def event_dict_message(topic: str, event: Mapping[str, Any]) -> OutgoingMessage:
    """:func:`event_message` for an event already checked as a JSON-ready dict (the HTTP edge's fast path,
    :mod:`cdp_hub.schema.fastpath`): the same key and headers."""
    key = _strongest((i["kind"], i["value"]) for i in event["identities"])
    return OutgoingMessage(topic, orjson.dumps(event), key,
                           (("cdp.type", event["type"].encode()), ("cdp.source", event["source"].encode())))
