"""Decoding what the hub itself wrote: an event or intent built from its JSON without validating it again.

    record the hub produced (header cdp-schema, cdp-producer; see cdp_hub.bus.provenance)
        ─▶ orjson.loads ─▶ trusted_event(dict) / trusted_intent(dict) ─┬─ the model, built as it was written
                                                                       └─ TrustedDecodeError: anything unexpected
                                                                          ─▶ the caller validates fully

An event is validated once, where it enters the hub (connector, HTTP edge, provider callback): its identities
are normalized, its properties checked against the type's payload model and dumped back as JSON. What the hub
then writes is already in that normal form, so validating it again in every stage gives the same model at
~10x the cost (``bench/triggers.py --full-validation``). These functions build the models the way
``model_construct`` does (``__dict__`` and the fields set, no validators), converting only what JSON cannot
carry: UUIDs, datetimes (to UTC, as ``Event`` does) and the birth date. They check the shape as they go
(required keys, key names, string fields, a registered type) and raise :class:`TrustedDecodeError` for
anything else: they never decide that a record is bad, the full validation does.

They are for records of the hub's own producers only: a stage asks :class:`cdp_hub.bus.provenance.RecordTrust`
first. ``tests/test_parse_once.py`` checks on a broad generated set of events (every type, unicode, nested
properties, every identity kind) that both ways give equal models and equal JSON.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from cdp_hub.schema.events import SCHEMA_VERSION, Context, Event, Identity, Traits
from cdp_hub.schema.messages import MessageIntent
from cdp_hub.schema.payloads import EVENT_TYPES

__all__ = ["TrustedDecodeError", "trusted_event", "trusted_intent"]


class TrustedDecodeError(Exception):
    """The record is not in the form the hub writes: validate it fully instead (never a dead letter itself)."""


_new = object.__new__
_set = object.__setattr__
_UUID = uuid.UUID
_fromisoformat = datetime.fromisoformat

_EVENT_KEYS = frozenset(Event.model_fields)
_EVENT_REQUIRED = ("event_id", "type", "source", "occurred_at", "received_at")
_TRAIT_FIELDS = dict.fromkeys(Traits.model_fields)  # every declared trait, None unless given
_CONTEXT_FIELDS = dict.fromkeys(Context.model_fields)
_INTENT_KEYS = frozenset(MessageIntent.model_fields)
_INTENT_REQUIRED = ("message_id", "profile_id", "scenario", "channel", "template", "created_at")
_INTENT_STRINGS = ("message_id", "profile_id", "scenario", "channel", "template")
_CATEGORIES = frozenset({"marketing", "transactional", "service"})
_GENDERS = frozenset({"female", "male", "other"})


def _model(cls: type[Any], fields: dict[str, Any], fields_set: set[str], extra: dict[str, Any] | None) -> Any:
    """What ``cls.model_construct`` leaves: ``fields`` as ``__dict__``, no validator run."""
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", extra)
    _set(obj, "__pydantic_private__", None)
    return obj


def _utc(value: Any) -> datetime:
    if type(value) is not str:
        raise TrustedDecodeError("a time is not a string")
    out = _fromisoformat(value)
    if out.tzinfo is None:
        raise TrustedDecodeError("a time without its zone")  # the hub writes aware times only
    return out if out.tzinfo is UTC else out.astimezone(UTC)


def _aware(value: Any) -> datetime:
    """A time as pydantic gives it to a model that keeps the zone (MessageIntent): equal, zone kept."""
    if type(value) is not str:
        raise TrustedDecodeError("a time is not a string")
    return _fromisoformat(value)


def _identities(value: Any) -> list[Identity]:
    if type(value) is not list:
        raise TrustedDecodeError("identities is not a list")
    out = []
    for item in value:
        if type(item) is not dict or len(item) != 2:
            raise TrustedDecodeError("an identity is not {kind, value}")
        kind, raw = item.get("kind"), item.get("value")
        if type(kind) is not str or type(raw) is not str or not raw:
            raise TrustedDecodeError("an identity is not {kind, value}")
        out.append(_model(Identity, {"kind": kind, "value": raw}, {"kind", "value"}, None))
    return out


def _plain(cls: type[Any], defaults: dict[str, None], value: Any) -> Any:
    """Traits or Context (declared string fields, extra keys kept as they are)."""
    if type(value) is not dict:
        raise TrustedDecodeError(f"{cls.__name__.lower()} is not an object")
    fields: dict[str, Any] = dict(defaults)
    extra: dict[str, Any] = {}
    for key, item in value.items():
        if key in defaults:
            if item is not None and type(item) is not str:
                raise TrustedDecodeError(f"{key} is not a string")
            fields[key] = item
        else:
            extra[key] = item
    return _model(cls, fields, set(value), extra)


def _traits(value: Any) -> Traits:
    traits: Traits = _plain(Traits, _TRAIT_FIELDS, value)
    fields = traits.__dict__
    birth = fields["birth_date"]
    if birth is not None:
        fields["birth_date"] = date.fromisoformat(birth)
    if fields["gender"] is not None and fields["gender"] not in _GENDERS:
        raise TrustedDecodeError("gender is not one of the model's")
    return traits


def trusted_event(data: Any) -> Event:
    """The :class:`Event` the hub serialized as ``data`` (the record's JSON, loaded), without validation."""
    if type(data) is not dict or not _EVENT_KEYS.issuperset(data):
        raise TrustedDecodeError("not an event object of this schema")
    get = data.get
    if get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise TrustedDecodeError("another schema version")
    for key in _EVENT_REQUIRED:
        if key not in data:
            raise TrustedDecodeError(f"{key} missing")
    typ, source, rid = data["type"], data["source"], get("source_record_id")
    properties = get("properties", {})
    if (typ not in EVENT_TYPES or type(source) is not str or (rid is not None and type(rid) is not str)
            or type(properties) is not dict):
        raise TrustedDecodeError("type, source, source_record_id or properties not as the hub writes them")
    profile = get("profile_id")
    try:
        fields = {
            "schema_version": SCHEMA_VERSION,
            "event_id": _UUID(data["event_id"]),
            "type": typ,
            "source": source,
            "source_record_id": rid,
            "occurred_at": _utc(data["occurred_at"]),
            "received_at": _utc(data["received_at"]),
            "identities": _identities(get("identities", [])),
            "traits": _traits(get("traits", {})),
            "properties": properties,
            "context": _plain(Context, _CONTEXT_FIELDS, get("context", {})),
            "profile_id": None if profile is None else _UUID(profile),
        }
    except (TypeError, ValueError, AttributeError) as exc:  # a UUID, time or date that does not parse
        raise TrustedDecodeError(str(exc)) from None
    fields_set = set(data)
    fields_set.add("properties")  # Event._check_payload sets it on every validated event
    event: Event = _model(Event, fields, fields_set, None)
    return event


def trusted_intent(data: Any) -> MessageIntent:
    """The :class:`MessageIntent` the hub serialized as ``data``, without validation."""
    if type(data) is not dict or not _INTENT_KEYS.issuperset(data):
        raise TrustedDecodeError("not an intent object of this schema")
    get = data.get
    if get("schema_version", "cdp.message/1") != "cdp.message/1":
        raise TrustedDecodeError("another schema version")
    for key in _INTENT_REQUIRED:
        if key not in data:
            raise TrustedDecodeError(f"{key} missing")
    for key in _INTENT_STRINGS:
        if type(data[key]) is not str:
            raise TrustedDecodeError(f"{key} is not a string")
    fallbacks, variables, trigger = get("fallbacks", []), get("vars", {}), get("trigger_event")
    locale, trigger_id, category = get("locale"), get("trigger_event_id"), get("category", "marketing")
    if (type(fallbacks) is not list or any(type(f) is not str for f in fallbacks) or type(variables) is not dict
            or (trigger is not None and type(trigger) is not dict) or (locale is not None and type(locale) is not str)
            or (trigger_id is not None and type(trigger_id) is not str) or category not in _CATEGORIES):
        raise TrustedDecodeError("a field is not as the hub writes it")
    expires = get("expires_at")
    try:
        fields = {
            "schema_version": "cdp.message/1",
            "message_id": data["message_id"],
            "profile_id": data["profile_id"],
            "scenario": data["scenario"],
            "channel": data["channel"],
            "fallbacks": fallbacks,
            "template": data["template"],
            "locale": locale,
            "trigger_event_id": trigger_id,
            "trigger_event": trigger,
            "vars": variables,
            "category": category,
            "created_at": _aware(data["created_at"]),
            "expires_at": None if expires is None else _aware(expires),
        }
    except (TypeError, ValueError) as exc:
        raise TrustedDecodeError(str(exc)) from None
    intent: MessageIntent = _model(MessageIntent, fields, set(data), None)
    return intent
