"""Decoding what the hub itself wrote: an event built from its JSON without validating it again.

    record the hub produced (headers cdp-schema, cdp-producer; see cdp_hub.bus.provenance)
        ─▶ trusted_event(bytes) ─┬─ the Event, as full validation would build it from the same bytes
                                 └─ TrustedDecodeError: anything not in the hub's form ─▶ the caller validates fully

An event is validated once, where it enters the hub (connector, HTTP edge, provider callback): its identities
are normalized, its type checked, its properties checked against the type's payload model and dumped back as
JSON. What the hub then writes is already in that normal form, so each of those steps gives back what it is
given when a stage validates the record again. ``trusted_event`` runs ``Event``'s own pydantic-core schema
without them: the field types, ``extra="forbid"``, UUIDs, datetimes (to UTC, as ``Event`` does), the nested
identities, traits and context, in Rust, straight from the bytes. Measured per event (``bench/parse_once.py``;
figures in docs/scaling.md): 0.55-0.6x the CPU of full validation in a quiet process, 0.7-0.98x on the loaded
2-core machine (least for the edge's large tracking events: building the model is most of the cost either
way); a hand-written ``model_construct`` from ``orjson.loads`` measured slower than this (12 µs against 9 µs).

The one exception is ``message.decided``: the triggers stage and the campaign sender build their decisions
with ``model_construct`` and write their properties as they made them (a ``None`` reason, ``until`` as
``isoformat()``), so their payload step does run here. A new producer that builds events without validation
must write properties as the payload model dumps them, or be added to ``_PAYLOAD_STEP``.

Hub-produced intents (``cdp.message/1``) are not decoded this way: ``MessageIntent`` has no Python validators,
so its full validation is already one pydantic-core call (6.3 µs against 6.3 µs for a construct path).

``tests/test_parse_once.py`` checks on a broad generated set of events (every type, unicode, nested
properties, every identity kind), on the edge's events and on the hub's decisions that both ways give equal
models and equal JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import SchemaValidator

from cdp_hub.schema.events import Event, Identity
from cdp_hub.schema.payloads import EVENT_TYPES

__all__ = ["TrustedDecodeError", "trusted_event"]


class TrustedDecodeError(Exception):
    """The record is not in the form the hub writes: validate it fully instead (never a dead letter itself)."""


# The steps that give back what they are given for an event in the hub's form: filling a missing event id,
# checking the type, normalizing and de-duplicating identities, the payload model. The times' conversion to
# UTC stays (it is what makes the datetimes equal objects, not only equal instants).
_SKIPPED = frozenset({"_fill_event_id", "_known_type", "_unique_identities", "_normalize", "_check_payload"})
_PAYLOAD_STEP = frozenset({"message.decided"})
"""Event types whose producers write properties without the payload model (see the module doc)."""


def _without_skipped_steps(schema: Any) -> Any:
    if isinstance(schema, dict):
        kind = schema.get("type")
        if isinstance(kind, str) and kind.startswith("function-") and "schema" in schema:
            function = schema["function"]["function"]
            if getattr(function, "__name__", "") in _SKIPPED:
                return _without_skipped_steps(schema["schema"])
        return {key: value if key in ("metadata", "serialization") else _without_skipped_steps(value)
                for key, value in schema.items()}
    if isinstance(schema, list):
        return [_without_skipped_steps(item) for item in schema]
    return schema


def _trusted_validator() -> SchemaValidator:
    schema = _without_skipped_steps(Event.__pydantic_core_schema__)
    # pydantic-core reuses a complete model class's own validator for any "model" schema of that class (as
    # schema/events.py's identity validator explains); marked incomplete for this one build, Event and
    # Identity get validators made from this schema. tests/test_parse_once.py checks that it does not normalize.
    Event.__pydantic_complete__ = Identity.__pydantic_complete__ = False
    try:
        return SchemaValidator(schema)
    finally:
        Event.__pydantic_complete__ = Identity.__pydantic_complete__ = True


_TRUSTED = _trusted_validator()


def trusted_event(raw: bytes) -> Event:
    """The :class:`Event` the hub serialized as ``raw``, without the steps its producer ran already."""
    try:
        event: Event = _TRUSTED.validate_json(raw)
    except ValidationError as exc:
        raise TrustedDecodeError(str(exc)) from None
    model = EVENT_TYPES.get(event.type)
    if model is None:
        raise TrustedDecodeError(f"unknown event type {event.type!r}")
    if event.type in _PAYLOAD_STEP:
        try:
            payload = model.__pydantic_validator__.validate_python(event.properties)
        except ValidationError as exc:
            raise TrustedDecodeError(str(exc)) from None
        event.__dict__["properties"] = model.__pydantic_serializer__.to_python(payload, mode="json",
                                                                               exclude_none=True)
    return event
