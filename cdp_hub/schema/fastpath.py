"""Canonical events as plain JSON-ready dicts, for the HTTP edge's hot path: the :class:`~cdp_hub.schema.events.Event`
model's checks and normalization without building the model.

    connector draft ─▶ event_dict(draft) ─┬─ a dict: what ``parse_event(draft).to_json()`` holds, ready for orjson
                                          └─ None: the draft is anything but the plain, valid case
                                             ─▶ the caller uses parse_event, which raises the usual error

The edge maps every tracking message to one canonical event; building and serializing the pydantic model took
half of the edge's CPU per event (bench/ingest_http.py). This module checks the same rules on the draft dict:
the type is registered, the source name and record id fit, the time is aware, every identity normalizes to a
non-empty value of at most 512 characters (no repeats; at least one), the traits and
the context pass their models, and the properties pass the type's payload model (validated and dumped as
``Event._check_payload`` does). It never *refuses* anything itself: a draft it is unsure about gives ``None``, and
the model decides. tests/test_edge_fastpath.py checks that both ways give the same event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from cdp_hub.errors import NormalizationError
from cdp_hub.schema.events import SCHEMA_VERSION, Context, Traits, deterministic_event_id_text, uuid7
from cdp_hub.schema.identities import NormalizationOptions, normalize_identity
from cdp_hub.schema.payloads import EVENT_TYPES

__all__ = ["DRAFT_KEYS", "event_dict"]

DRAFT_KEYS = frozenset({"type", "source", "source_record_id", "occurred_at", "identities", "traits",
                        "properties", "context"})
"""The keys a draft may have for the fast way; any other (``event_id``, ``profile_id``, ...) takes the model."""

_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")  # Event.source's pattern


@lru_cache(maxsize=1024)
def _valid_source(source: str) -> bool:
    """Whether ``source`` fits Event.source (asked for every event; a hub has a handful of sources)."""
    return _SOURCE.match(source) is not None

_TRAITS_VALIDATOR = Traits.__pydantic_validator__
_TRAITS_SERIALIZER = Traits.__pydantic_serializer__
_CONTEXT_VALIDATOR = Context.__pydantic_validator__
_CONTEXT_SERIALIZER = Context.__pydantic_serializer__


def _identities(value: Any, options: NormalizationOptions) -> list[dict[str, str]] | None:
    if type(value) is not list:
        return None
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for item in value:
        if type(item) is not dict or len(item) != 2:
            return None
        kind, raw = item.get("kind"), item.get("value")
        if type(kind) is not str or type(raw) is not str:
            return None
        key = normalize_identity(kind, raw, options)
        if not 0 < len(key[1]) <= 512:
            return None
        if key not in seen:  # an identity listed twice adds nothing; keep the first (as Event does)
            seen.add(key)
            out.append({"kind": key[0], "value": key[1]})
    return out


def _plain_strings(value: dict[str, Any]) -> dict[str, str] | None:
    """``value`` without its ``None`` values when every key and value is a string (or ``None``); else None."""
    out: dict[str, str] = {}
    for k, v in value.items():
        if type(v) is str:
            if type(k) is not str:
                return None
            out[k] = v
        elif v is not None or type(k) is not str:
            return None
    return out


def event_dict(draft: dict[str, Any], options: NormalizationOptions, received_at: datetime) -> dict[str, Any] | None:
    """The canonical event of ``draft`` as a JSON-ready dict (``None`` values left out, as ``Event.to_json``
    does), or ``None`` when the draft is not the plain valid case; ``parse_event`` then decides."""
    if not DRAFT_KEYS.issuperset(draft):
        return None
    typ, source, rid = draft.get("type"), draft.get("source"), draft.get("source_record_id")
    if type(typ) is not str or type(source) is not str or not _valid_source(source):
        return None
    model = EVENT_TYPES.get(typ)
    if model is None:
        return None
    if rid is not None and (type(rid) is not str or len(rid) > 256):
        return None
    occurred = draft.get("occurred_at")
    if type(occurred) is not datetime or occurred.tzinfo is None:
        return None
    traits = draft.get("traits") or {}
    properties = draft.get("properties") or {}
    context = draft.get("context") or {}
    if type(traits) is not dict or type(properties) is not dict or type(context) is not dict:
        return None
    try:
        identities = _identities(draft.get("identities", []), options)
        if not identities:  # None, or none at all (a catalogue event's case: the model's way)
            return None
        payload = model.__pydantic_validator__.validate_python(properties)
        props = model.__pydantic_serializer__.to_python(payload, mode="json", exclude_none=True)
        if traits:
            traits = _TRAITS_SERIALIZER.to_python(_TRAITS_VALIDATOR.validate_python(traits), mode="json",
                                                  exclude_none=True)
        plain = _plain_strings(context)
        if plain is None:
            plain = {k: v for k, v in _CONTEXT_SERIALIZER.to_python(
                _CONTEXT_VALIDATOR.validate_python(context), mode="json", exclude_none=True).items()
                     if v is not None}
    except (ValidationError, NormalizationError, ValueError, TypeError):
        return None
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": deterministic_event_id_text(source, rid, typ) if rid else str(uuid7()),
        "type": typ, "source": source,
        "occurred_at": occurred if occurred.tzinfo is UTC else occurred.astimezone(UTC),
        "received_at": received_at, "identities": identities, "traits": traits, "properties": props,
        "context": plain,
    }
    if rid is not None:
        event["source_record_id"] = rid
    return event
