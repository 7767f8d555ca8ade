"""What a sender from outside may send: trust levels, internal event types, consent, event times.

    event dict from a request ─▶ strip_profile_id (dropped and logged: only the resolver assigns profiles)
    Event ─▶ SourcePolicy.admit:
              internal type (profile.*, message.*, segment.*, journey.*, experiment.*,
                             product.price_dropped, product.back_in_stock, product.low_stock)  ─▶ PolicyViolation (DLQ)
              catalogue event (product.updated) from a ``public`` source    ─▶ PolicyViolation (DLQ)
              type outside the source's allow-list                         ─▶ PolicyViolation (DLQ)
              consent.changed granting consent from a ``public`` source    ─▶ PolicyViolation (DLQ)
    message times ─▶ event_time: timestamp + (receivedAt - sentAt), then a sanity window around the receive
                     time; outside it, the receive time is used and the event says so

A ``public`` source's key ships inside web pages and apps, so anyone can send with it: such a source may
record an opt-out (withdrawing consent must always be possible) but never grant marketing consent; that takes
the double opt-in confirmation. Nor may it change the catalogue: a product.updated with a price of 1 would
tell every recent viewer of the product that its price dropped. A ``trusted`` source is a server-side system that keeps its key secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cdp_hub.connector.mapping import parse_datetime
from cdp_hub.errors import PolicyViolation, RecordError
from cdp_hub.schema.events import Event
from cdp_hub.schema.payloads import CATALOGUE_EVENT_TYPES

from .limits import excerpt

__all__ = ["INTERNAL_PREFIXES", "INTERNAL_TYPES", "ClockWindow", "SourcePolicy", "Trust", "event_time", "strip_profile_id"]

log = logging.getLogger(__name__)

Trust = Literal["public", "trusted"]
INTERNAL_PREFIXES = ("profile.", "message.", "segment.", "journey.", "experiment.")
"""Event types the hub makes itself; never accepted from outside (an outside ``experiment.assigned`` would move
a customer into another arm of a report)."""
INTERNAL_TYPES = frozenset({"product.price_dropped", "product.back_in_stock", "product.low_stock"})
"""Single event types the hub derives itself (from catalogue changes); never accepted from outside either."""


def strip_profile_id(item: MutableMapping[str, Any], *, source: str) -> None:
    """Drop a ``profile_id`` a sender put on an event: profiles are assigned by the resolver from identities,
    and trusting a sender's id would let it write into anyone's profile."""
    if item.pop("profile_id", None) is not None:
        log.warning("dropped a profile_id sent by source %s (only the resolver assigns profiles)", source)


@dataclass(frozen=True)
class SourcePolicy:
    """The rules for one source: its trust level and, when given, the event types it may send."""

    source: str
    trust: Trust
    allowed_types: frozenset[str] | None = None

    @classmethod
    def of(cls, source: str, trust: Trust, allowed: Iterable[str] | None) -> SourcePolicy:
        return cls(source, trust, frozenset(allowed) if allowed is not None else None)

    def check(self, event_type: str, properties: Mapping[str, Any], record_id: str | None) -> None:
        """Raise :class:`PolicyViolation` unless this source may send an event of ``event_type`` with these
        ``properties`` (the edge's fast path checks its event dicts with this, :meth:`admit` its models)."""
        rid = record_id
        if event_type.startswith(INTERNAL_PREFIXES) or event_type in INTERNAL_TYPES:
            raise PolicyViolation(f"type: {event_type!r} is an internal event type; the hub creates it, no "
                                  "sender may", field="type", value=event_type, record_id=rid, source=self.source)
        if self.allowed_types is not None and event_type not in self.allowed_types:
            raise PolicyViolation(f"type: source {self.source} may not send {event_type!r} (its allowed_types: "
                                  f"{', '.join(sorted(self.allowed_types)) or 'none'})", field="type",
                                  value=event_type, record_id=rid, source=self.source)
        if (self.trust == "public" and event_type == "consent.changed"
                and properties.get("status") != "opted_out"):
            raise PolicyViolation("properties.status: a public source may record an opt-out but cannot grant "
                                  "consent; consent is recorded by the double opt-in confirmation",
                                  field="properties.status", value=properties.get("status"),
                                  record_id=rid, source=self.source)
        if self.trust == "public" and event_type in CATALOGUE_EVENT_TYPES:
            raise PolicyViolation(f"type: a public source cannot change the catalogue ({event_type}); send it "
                                  "from a trusted source or a connector", field="type", value=event_type,
                                  record_id=rid, source=self.source)

    def admit(self, event: Event, *, record_id: str | None = None) -> Event:
        """``event`` when this source may send it; else raise :class:`PolicyViolation`."""
        self.check(event.type, event.properties, record_id or event.source_record_id)
        if event.profile_id is not None:  # never set by the parsers here; a belt to strip_profile_id's braces
            event = event.model_copy(update={"profile_id": None})
        return event


@dataclass(frozen=True)
class ClockWindow:
    """How far from the receive time an event time may be before it is not believed."""

    max_past: timedelta
    max_future: timedelta


def _time(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_datetime(value, field=field)
    except RecordError:
        raise
    except (ValueError, OverflowError, TypeError):
        raise RecordError(f"{field}: not a time: {excerpt(value, 60)}", field=field) from None


def event_time(message: Mapping[str, Any], received_at: datetime, window: ClockWindow, *,
               batch_sent_at: Any = None) -> tuple[datetime, str | None]:
    """The time a tracking message happened, and a flag when the client's time was not believed.

    ``timestamp`` (else ``originalTimestamp``) is moved by the client's clock error, ``receivedAt - sentAt``
    (``sentAt`` of the message, else of the batch), as the tracking protocol defines. A result more than
    ``window.max_past`` before or ``window.max_future`` after the receive time is replaced by the receive time
    (flag ``"outside_window"``); no time at all is the receive time (no flag).
    """
    raw = message.get("timestamp") or message.get("originalTimestamp")
    stamped = _time(raw, "timestamp")
    if stamped is None:
        return received_at, None
    sent = _time(message.get("sentAt") or batch_sent_at, "sentAt")
    try:
        corrected = stamped + (received_at - sent) if sent is not None else stamped
    except OverflowError:
        return received_at, "outside_window"
    if not (received_at - window.max_past <= corrected <= received_at + window.max_future):
        return received_at, "outside_window"
    return corrected.astimezone(UTC), None
