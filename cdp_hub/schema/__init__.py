"""The canonical event schema ``cdp.event/1``, identities, payload types and message intents."""

from cdp_hub.schema.events import (
    SCHEMA_VERSION,
    Context,
    Event,
    Identity,
    Traits,
    deterministic_event_id,
    parse_event,
    uuid7,
)
from cdp_hub.schema.identities import CORE_IDENTITY_KINDS, NormalizationOptions, normalize_identity
from cdp_hub.schema.messages import MessageIntent, message_id_for
from cdp_hub.schema.payloads import EVENT_TYPES, event_type_names, register_event_type

__all__ = [
    "CORE_IDENTITY_KINDS",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "Context",
    "Event",
    "Identity",
    "MessageIntent",
    "NormalizationOptions",
    "Traits",
    "deterministic_event_id",
    "event_type_names",
    "message_id_for",
    "normalize_identity",
    "parse_event",
    "register_event_type",
    "uuid7",
]
