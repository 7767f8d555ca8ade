"""The canonical event, schema ``cdp.event/1``.

Every connector turns its source records into these; every stage after ingestion reads only these.

    source record --(connector.normalize)--> Event --(validate: pydantic)--> JSON on [cdp.events]
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, Literal, cast

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import SchemaValidator, core_schema

from cdp_hub.errors import NormalizationError, SchemaViolation
from cdp_hub.schema.identities import DEFAULT_OPTIONS, NormalizationOptions, normalize_identity
from cdp_hub.schema.payloads import CATALOGUE_EVENT_TYPES, EVENT_TYPES

__all__ = [
    "SCHEMA_VERSION",
    "Context",
    "Event",
    "Identity",
    "Traits",
    "deterministic_event_id",
    "deterministic_event_id_text",
    "parse_event",
    "uuid7",
]

SCHEMA_VERSION: Literal["cdp.event/1"] = "cdp.event/1"
EVENT_NAMESPACE = uuid.UUID("6f1c2f4e-3c1b-5d0a-9a57-2b1f0c7de0a1")


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes
# RFC 4122 variant (0b10) and version 5 bits, applied to the first 128 bits of the SHA-1 digest as uuid5 does.
_V5_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V5_SET = (5 << 76) | (0x8000 << 48)
_UUID_NEW = object.__new__
_UUID_SET = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _uuid_from_int(value: int) -> uuid.UUID:
    # What uuid.UUID(int=value) stores, without its keyword dispatch and range checks (value is 128 bits by
    # construction); an event id is made for every event on the hot path (bench/normalize.py).
    out: uuid.UUID = _UUID_NEW(uuid.UUID)
    _UUID_SET(out, "int", value)
    _UUID_SET(out, "is_safe", _SAFE_UNKNOWN)
    return out


def deterministic_event_id(source: str, source_record_id: str, event_type: str) -> uuid.UUID:
    """UUIDv5 of source + source record id + type: re-ingesting the same record yields the same id.

    Byte for byte ``uuid.uuid5(EVENT_NAMESPACE, name)`` (tests/test_sdk_speedups.py checks it), computed
    without the stdlib's per-call import and UUID constructor, which took 60% of its time.
    """
    name = f"{source}\x1f{source_record_id}\x1f{event_type}".encode()
    digest = hashlib.sha1(_NAMESPACE_BYTES + name).digest()  # SHA-1: RFC 4122 defines version 5 on it
    out: uuid.UUID = _UUID_NEW(uuid.UUID)  # _uuid_from_int() written out: two ids per paid order
    _UUID_SET(out, "int", int.from_bytes(digest[:16], "big") & _V5_CLEAR | _V5_SET)
    _UUID_SET(out, "is_safe", _SAFE_UNKNOWN)
    return out


_VARIANT_HEX = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def deterministic_event_id_text(source: str, source_record_id: str, event_type: str) -> str:
    """``str(deterministic_event_id(...))`` without the UUID object: the HTTP edge writes the id as text only
    (tests/test_edge_fastpath.py checks that both agree)."""
    h = hashlib.sha1(_NAMESPACE_BYTES + f"{source}\x1f{source_record_id}\x1f{event_type}".encode()).hexdigest()
    # Version 5 is the 13th hex digit; the RFC 4122 variant sets the top two bits of the 17th (_VARIANT_HEX).
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_HEX[h[16]]}{h[17:20]}-{h[20:32]}"


def uuid7() -> uuid.UUID:
    """A time-ordered random UUID (RFC 9562 version 7)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return _uuid_from_int(value)


def _options(info: ValidationInfo) -> NormalizationOptions:
    ctx = info.context
    if isinstance(ctx, dict):
        opts = ctx.get("normalization")
        if isinstance(opts, NormalizationOptions):
            return opts
    return DEFAULT_OPTIONS


class Identity(BaseModel):
    """One identifier of a person, normalized (see :mod:`cdp_hub.schema.identities`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="email, phone, crm_id, ecom_customer_id, erp_customer_id, loyalty_card, "
                      "device_id, push_token, anonymous_id, or a plugin's kind")
    value: str = Field(min_length=1, max_length=512)

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and isinstance(data.get("kind"), str) and isinstance(data.get("value"), str):
            kind, value = normalize_identity(data["kind"], data["value"], _options(info))
            return {"kind": kind, "value": value}
        return data


def _normalized_identities_validator() -> SchemaValidator | None:
    """Validator of a list of :class:`Identity` from values already normalized: Identity's own schema (field types,
    lengths, ``extra="forbid"``) without the ``_normalize`` step; ``None`` if pydantic builds the schema another way.
    """
    schema: dict[str, Any] = dict(Identity.__pydantic_core_schema__)
    inner = schema.get("schema")
    if schema.get("type") != "model" or not isinstance(inner, dict) or inner.get("type") != "function-before":
        return None
    schema.pop("ref", None)
    schema["schema"] = inner["schema"]
    # pydantic-core reuses a complete model class's own validator (with _normalize) for any "model" schema of
    # that class; marked incomplete for this one build, the class gets a validator made from this schema.
    # tests/test_sdk_speedups.py checks that it does not normalize.
    Identity.__pydantic_complete__ = False
    try:
        return SchemaValidator(core_schema.list_schema(cast(core_schema.ModelSchema, schema)))
    finally:
        Identity.__pydantic_complete__ = True


_NORMALIZED_IDENTITIES = _normalized_identities_validator()


def _normalized_identities(value: Any, options: NormalizationOptions) -> list[Identity] | None:
    """The fast path of ``Event.identities``: normalized, validated and without repeats, or ``None``.

    For the usual input, a list of ``{"kind": str, "value": str}`` dicts, the identities are normalized in one
    Python call per event instead of one :meth:`Identity._normalize` call per identity (bench/normalize.py),
    then validated against Identity's own field schema. Anything else, and any item that fails, gives ``None``:
    the item-by-item way then raises the same error, with the item's position, as it always has.
    """
    if type(value) is not list or not value or _NORMALIZED_IDENTITIES is None:
        return None
    normalized = []
    seen = set()
    try:
        for item in value:
            if type(item) is not dict:
                return None
            kind, raw = item.get("kind"), item.get("value")
            if type(kind) is not str or type(raw) is not str:
                return None
            key = normalize_identity(kind, raw, options)
            if key not in seen:  # an identity listed twice adds nothing; keep the first
                seen.add(key)
                normalized.append({"kind": key[0], "value": key[1]})
        identities: list[Identity] = _NORMALIZED_IDENTITIES.validate_python(normalized)
    except Exception:  # a normalizer's or a field's error: reported by the item-by-item way
        return None
    return identities


class Traits(BaseModel):
    """Profile attributes a source asserts. Unknown traits are kept."""

    model_config = ConfigDict(extra="allow")

    first_name: str | None = None
    last_name: str | None = None
    middle_name: str | None = None
    full_name: str | None = None
    birth_date: date | None = None
    gender: Literal["female", "male", "other"] | None = None
    city: str | None = None
    address: str | None = None
    postal_code: str | None = None
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    locale: str | None = None
    timezone: str | None = None
    loyalty_tier: str | None = None


class Context(BaseModel):
    """Where and how the event happened."""

    model_config = ConfigDict(extra="allow")

    channel: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    app_version: str | None = None
    locale: str | None = None
    page_url: str | None = None
    campaign: str | None = None
    store_id: str | None = None


class Event(BaseModel):
    """A canonical event. ``event_id`` is derived from the source record when the source has ids."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cdp.event/1"] = SCHEMA_VERSION
    event_id: uuid.UUID
    type: str = Field(description="a registered event type, e.g. order.placed")
    source: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$", description="the connector instance")
    source_record_id: str | None = Field(default=None, max_length=256)
    occurred_at: datetime
    received_at: datetime = Field(default_factory=partial(datetime.now, UTC))
    identities: list[Identity] = Field(
        default_factory=list, validate_default=True,
        description="at least one for an event about a person; none for a catalogue event (product.updated)")
    traits: Traits = Field(default_factory=Traits)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: Context = Field(default_factory=Context)
    profile_id: uuid.UUID | None = Field(default=None, description="set by the resolver")

    @model_validator(mode="before")
    @classmethod
    def _fill_event_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("event_id"):
            data = dict(data)
            rid, src, typ = data.get("source_record_id"), data.get("source"), data.get("type")
            if rid and isinstance(src, str) and isinstance(typ, str):
                data["event_id"] = deterministic_event_id(src, str(rid), typ)
            else:
                data["event_id"] = uuid7()
        return data

    @field_validator("identities", mode="wrap")
    @classmethod
    def _unique_identities(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                           info: ValidationInfo) -> list[Identity]:
        identities = _normalized_identities(value, _options(info))
        if identities is not None:
            return identities
        identities = handler(value)
        if not identities:
            # `type` is declared before `identities`, so it is validated (or missing if it failed) here.
            if info.data.get("type") in CATALOGUE_EVENT_TYPES:
                return []
            raise ValueError("an event about a person needs at least one identity")
        # An identity listed twice adds nothing; keep the first.
        if len(identities) > 1:
            seen: set[tuple[str, str]] = set()
            unique = []
            for ident in identities:
                key = (ident.kind, ident.value)
                if key not in seen:
                    seen.add(key)
                    unique.append(ident)
            identities = unique
        return identities

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise ValueError(f"unknown event type {value!r}")
        return value

    @field_validator("occurred_at", "received_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        # A timestamp without a zone is taken as UTC; connectors for local-time sources convert first.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _check_payload(self) -> Event:
        model = EVENT_TYPES[self.type]
        try:
            # The core validator/serializer directly: the same as model_validate()/model_dump() without their
            # Python wrappers, which showed in the connector benchmark's profile (bench/normalize.py).
            payload = model.__pydantic_validator__.validate_python(self.properties)
        except ValidationError as exc:
            # Not a ValueError: pydantic lets it through, and it keeps the "properties." path prefix.
            raise schema_violation_from(
                exc, source=self.source, record_id=self.source_record_id, prefix="properties"
            ) from None
        # What `self.properties = ...` does, without pydantic's __setattr__ dispatch.
        self.__dict__["properties"] = model.__pydantic_serializer__.to_python(payload, mode="json", exclude_none=True)
        self.__pydantic_fields_set__.add("properties")
        return self

    def identity(self, kind: str) -> str | None:
        for ident in self.identities:
            if ident.kind == kind:
                return ident.value
        return None

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)

    @classmethod
    def from_json(cls, raw: bytes | str, *, context: dict[str, Any] | None = None) -> Event:
        return cls.model_validate_json(raw, context=context)


def _loc(loc: tuple[int | str, ...], prefix: str = "") -> str:
    path = ".".join(str(part) for part in (prefix, *loc) if part != "")
    return path or "<record>"


def schema_violation_from(
    exc: ValidationError, *, source: str | None, record_id: str | None, prefix: str = ""
) -> SchemaViolation | NormalizationError:
    """One record error naming every offending field and its value.

    A :class:`NormalizationError` raised inside a validator comes back as such (with the field's full path),
    anything else as a :class:`SchemaViolation`.
    """
    errors = exc.errors(include_url=False)
    for err in errors:
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, NormalizationError):
            field = _loc(err["loc"], prefix)
            if original.field and original.field not in field:
                field = f"{field}.{original.field}"
            return NormalizationError(
                f"{field}: {original.reason}", field=field, value=original.value, record_id=record_id, source=source
            )
    parts = []
    for err in errors[:5]:
        parts.append(f"{_loc(err['loc'], prefix)}: {err['msg']} (got {err.get('input')!r:.80})")
    first_loc: tuple[int | str, ...] = tuple(errors[0]["loc"]) if errors else ()
    first_input = errors[0].get("input") if errors else None
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return SchemaViolation(
        "; ".join(parts) + more,
        field=_loc(first_loc, prefix),
        value=first_input,
        record_id=record_id,
        source=source,
    )


def parse_event(
    data: dict[str, Any] | bytes | str,
    *,
    options: NormalizationOptions | None = None,
) -> Event:
    """Validate a canonical event; raise a :class:`~cdp_hub.errors.RecordError` naming field and record."""
    context = {"normalization": options or DEFAULT_OPTIONS}
    if type(data) is not dict and isinstance(data, bytes | str):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SchemaViolation(f"not JSON: {exc}", field="<record>") from exc
        if not isinstance(data, dict):
            raise SchemaViolation("an event must be a JSON object", field="<record>", value=data)
    try:
        # Event.model_validate() without its Python wrapper (one call per event: bench/normalize.py).
        event: Event = Event.__pydantic_validator__.validate_python(data, context=context)
    except ValidationError as exc:
        raise schema_violation_from(exc, source=data.get("source"), record_id=data.get("source_record_id")) from exc
    return event
