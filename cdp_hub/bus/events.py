"""Canonical events as bus records: the partition key and the headers every producer of events uses.

One person's events should mostly share a partition (their order matters to the resolver), so the key is
the event's strongest identity, by a fixed priority of kinds; a catalogue event, which names no person, is
keyed by its product's SKU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.provenance import EVENT_SCHEMA, hub_headers
from cdp_hub.schema.events import Event

__all__ = ["event_dict_message", "event_key", "event_message"]

_KEY_PRIORITY = ("crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card", "email", "phone",
                 "device_id", "push_token", "anonymous_id")


def event_key(event: Event) -> bytes:
    """Partition key: the event's strongest identity, so one person's events mostly share a partition."""
    if not event.identities:
        # A catalogue event (product.updated) is about a product: one product's versions share a partition.
        sku = event.properties.get("sku")
        return f"sku:{sku}".encode() if isinstance(sku, str) else f"event:{event.event_id}".encode()
    return _strongest((i.kind, i.value) for i in event.identities)


_RANK = {kind: rank for rank, kind in enumerate(_KEY_PRIORITY)}
_UNRANKED = len(_KEY_PRIORITY)


def _strongest(identities: Iterable[tuple[str, str]]) -> bytes:
    # The kind first in _KEY_PRIORITY, the last identity of that kind; with no ranked kind, the first identity
    # of the first kind, again its last value (what a {kind: value} dict of them gives).
    best_rank, best_kind, best_value = _UNRANKED + 1, "", ""
    first_kind = None
    for kind, value in identities:
        rank = _RANK.get(kind, _UNRANKED)
        if rank == _UNRANKED:
            if first_kind is None:
                first_kind = kind
            elif kind != first_kind:
                continue
        if rank <= best_rank:
            best_rank, best_kind, best_value = rank, kind, value
    if best_rank > _UNRANKED:
        raise IndexError("an event without identities has no partition key")
    return f"{best_kind}:{best_value}".encode()


def event_message(topic: str, event: Event) -> OutgoingMessage:
    """``event`` as a record for ``topic``: keyed by :func:`event_key`, type and source in headers, marked as
    the hub's own (validated) event (:func:`~cdp_hub.bus.provenance.hub_headers`)."""
    return OutgoingMessage(topic, event.to_json(), event_key(event),
                           hub_headers(EVENT_SCHEMA, ("cdp.type", event.type.encode()),
                                       ("cdp.source", event.source.encode())))


def event_dict_message(topic: str, event: Mapping[str, Any]) -> OutgoingMessage:
    """:func:`event_message` for an event already checked as a JSON-ready dict (the HTTP edge's fast path,
    :mod:`cdp_hub.schema.fastpath`): the same key and headers."""
    identities = event["identities"]
    if len(identities) == 1:  # one identity (an anonymous page view): it is the key, whatever its kind
        only = identities[0]
        key = f"{only['kind']}:{only['value']}".encode()
    else:
        key = _strongest([(i["kind"], i["value"]) for i in identities])
    # Times as the model writes them ("Z"): the resolver stores these bytes with the profile spliced in.
    return OutgoingMessage(topic, orjson.dumps(event, option=orjson.OPT_UTC_Z), key,
                           _event_headers(event["type"], event["source"]))


_HEADERS: dict[tuple[str, str], tuple[tuple[str, bytes], ...]] = {}


def _event_headers(event_type: str, source: str) -> tuple[tuple[str, bytes], ...]:
    """The headers of an event record of this type and source, built once per pair (a hub has a few hundred;
    the cache stops growing at 4,096 so odd senders cannot grow it without bound)."""
    found = _HEADERS.get((event_type, source))
    if found is None:
        found = hub_headers(EVENT_SCHEMA, ("cdp.type", event_type.encode()), ("cdp.source", source.encode()))
        if len(_HEADERS) < 4096:
            _HEADERS[(event_type, source)] = found
    return found
