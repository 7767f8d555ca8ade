"""The tracking API's messages (identify/track/page/screen/alias/batch) as a connector.

Web and mobile SDKs of the widely used tracking HTTP protocol send JSON messages like::

    {"type": "track", "event": "Order Completed", "userId": "7100000042", "anonymousId": "a-1",
     "messageId": "m-1", "timestamp": "2026-11-12T11:03:05Z",
     "properties": {"order_id": "5001", "total": 1299.8, "currency": "RUB", "products": [...]},
     "context": {"ip": "...", "userAgent": "...", "app": {"version": "5.2.1"}, "device": {"id": "..."}}}

:data:`MESSAGE_SCHEMA` checks the raw JSON at the edge (jsonschema: the error names the JSON path and the
offending value); :class:`TrackingConnector` maps a message to canonical events:

============  =======================================================================================
identify      ``customer.updated``: userId, anonymousId, traits.email/phone as identities; other traits
              (from ``traits`` and from ``context.traits``, where some SDKs put them; ``traits`` wins)
track         by ``event`` name: the e-commerce spec's "Order Completed" -> ``order.placed``, "Order
              Refunded" -> ``order.returned``, "Order Cancelled" -> ``order.cancelled``, "Product Viewed"
              -> ``product.viewed``, "Product Added"/"Cart Viewed"/"Checkout Started" -> ``cart.updated``,
              "Products Searched" -> ``search.performed``, "Application Installed"/"Opened" ->
              ``app.installed``/``app.opened``, "Deep Link Opened" -> ``app.opened``; a canonical name
              (``order.placed``) passes through; anything else goes to the DLQ (or is skipped by config)
page          ``screen.viewed`` with ``kind: page`` (the page name or path as the screen)
screen        ``screen.viewed``
alias         ``customer.updated`` naming both previousId and userId, which links them
group         ``customer.updated`` with the trait ``group_id`` (and ``group_name`` from the group's traits)
============  =======================================================================================

``messageId`` becomes the source record id, so a retried request is the same event (the HTTP edge,
:mod:`cdp_hub.edge.tracking`, also drops a messageId it has seen within its dedupe window, and corrects the
message time for the client's clock before this connector maps it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from cdp_hub.connector.base import Connector, ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import add_identity, gender, parse_date, parse_datetime, parse_decimal, text
from cdp_hub.errors import SchemaViolation
from cdp_hub.hookspecs import hookimpl
from cdp_hub.schema.payloads import EVENT_TYPES

__all__ = ["BATCH_SCHEMA", "MESSAGE_SCHEMA", "TrackingConfig", "TrackingConnector", "cdp_hub_register_connectors"]

_ID = {"type": ["string", "number"], "minLength": 1, "maxLength": 256}
_TIME = {"type": "string", "minLength": 1, "maxLength": 64}
_COMMON: dict[str, Any] = {
    "messageId": {"type": "string", "minLength": 1, "maxLength": 256},
    "userId": {"anyOf": [_ID, {"type": "null"}]},
    "anonymousId": {"anyOf": [_ID, {"type": "null"}]},
    "timestamp": _TIME, "originalTimestamp": _TIME, "sentAt": _TIME, "receivedAt": _TIME,
    "context": {"type": "object"},
    "integrations": {"type": "object"},
}
_NEEDS_ID = {"anyOf": [{"required": ["userId"], "properties": {"userId": _ID}},
                       {"required": ["anonymousId"], "properties": {"anonymousId": _ID}}]}


def _kind(name: str, props: dict[str, Any], required: list[str], extra: list[Any] | None = None) -> dict[str, Any]:
    then: dict[str, Any] = {"properties": props, "required": required}
    if extra:  # an empty allOf is not valid JSON Schema (OpenAPI tools refuse it)
        then["allOf"] = extra
    return {"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then}


MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tracking message",
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["identify", "track", "page", "screen", "alias", "group"]}, **_COMMON},
    "allOf": [
        _kind("identify", {"traits": {"type": "object"}}, [], [_NEEDS_ID]),
        _kind("track", {"event": {"type": "string", "minLength": 1, "maxLength": 200},
                        "properties": {"type": "object"}}, ["event"], [_NEEDS_ID]),
        _kind("page", {"name": {"type": ["string", "null"]}, "properties": {"type": "object"}}, [], [_NEEDS_ID]),
        _kind("screen", {"name": {"type": "string", "minLength": 1}, "properties": {"type": "object"}}, ["name"],
              [_NEEDS_ID]),
        _kind("alias", {"previousId": _ID, "userId": _ID}, ["previousId", "userId"]),
        _kind("group", {"groupId": _ID, "traits": {"type": "object"}}, ["groupId"], [_NEEDS_ID]),
    ],
}
"""JSON Schema of one message (a ``/v1/batch`` body holds ``{"batch": [message, ...]}``)."""

BATCH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["batch"],
    "properties": {"batch": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "object"}},
                   "context": {"type": "object"}, "sentAt": _TIME},
}

_TRACK_EVENTS: dict[str, str] = {
    "order completed": "order.placed", "order placed": "order.placed", "order paid": "order.paid",
    "order cancelled": "order.cancelled", "order refunded": "order.returned", "order returned": "order.returned",
    "product viewed": "product.viewed", "product added": "cart.updated", "product removed": "cart.updated",
    "cart viewed": "cart.updated", "checkout started": "cart.updated", "products searched": "search.performed",
    "application installed": "app.installed", "application opened": "app.opened",
    "deep link opened": "app.opened",
}
_TRAITS = {"firstName": "first_name", "first_name": "first_name", "lastName": "last_name",
           "last_name": "last_name", "name": "full_name", "city": "city", "timezone": "timezone"}
_IDENTITY_TRAITS = frozenset({"email", "phone", "birthday", "gender", "address", "firstName", "first_name",
                              "lastName", "last_name", "name", "city", "timezone", "id"})


class TrackingConfig(ConnectorConfig):
    """Options of a tracking-API source (``[connectors.web] type = "tracking"``)."""

    write_keys: list[SecretStr] = Field(default_factory=list, description="keys SDKs send as the basic-auth "
                                        "user name or as writeKey; requests with another key are refused")
    trust: Literal["public", "trusted"] = Field(
        "public", description="public: the key ships in web pages or apps (may opt people out, never in); "
        "trusted: a server-side system that keeps the key secret")
    allowed_events: list[str] | None = Field(
        None, description="canonical event types this source may send (default: all but internal ones)")
    user_id_kind: str = Field("ecom_customer_id", description="identity kind of userId (your site's login id)")
    unknown_events: Literal["dlq", "skip"] = Field("dlq", description="a track event with no mapping: "
                                                   "dead-letter it, or skip it")


class TrackingConnector(Connector):
    """Tracking API (identify/track/page/screen/alias/batch) for web and mobile SDKs."""

    name: ClassVar[str] = "tracking"
    title: ClassVar[str] = "Tracking API"
    config_model: ClassVar[type[ConnectorConfig]] = TrackingConfig
    record_id_field: ClassVar[str | None] = "messageId"
    config: TrackingConfig

    def split(self, record: SourceRecord, *, stream: str | None = None) -> list[SourceRecord]:
        """A ``{"batch": [...]}`` body is one record per message (batch-level context merged in)."""
        batch = record.get("batch")
        if not isinstance(batch, list):
            return [record]
        shared = record.get("context") or {}
        return [{**m, "context": {**shared, **(m.get("context") or {})}} if shared else m for m in batch]

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        kind = record.get("type")
        ctx: Mapping[str, Any] = record.get("context") or {}
        ids = self._identities(record, ctx)
        # The HTTP edge has already put the clock-corrected time into ``timestamp``; other callers (a replay
        # from the DLQ, a file of messages) get the message's own time.
        when = record.get("timestamp") or record.get("originalTimestamp") or record.get("receivedAt")
        occurred = parse_datetime(when, field="timestamp") if when else datetime.now(UTC)
        context = self._context(ctx)
        props: Mapping[str, Any] = record.get("properties") or {}
        base: dict[str, Any] = {"occurred_at": occurred, "identities": ids, "context": context}
        if record.get("messageId") is not None:
            base["source_record_id"] = text(record["messageId"])
        # base is this message's own dict: each kind completes it in place (no copy per message).
        if kind == "identify":
            base["type"], base["traits"] = "customer.updated", self._traits(_all_traits(record, ctx))
            return [base]
        if kind == "group":
            group: Mapping[str, Any] = record.get("traits") or {}
            traits = {"group_id": text(record.get("groupId")), "group_name": text(group.get("name"))}
            base["type"], base["traits"] = "customer.updated", {k: v for k, v in traits.items() if v}
            return [base]
        if kind == "alias":
            base["type"], base["properties"] = "customer.updated", {"alias_of": text(record.get("previousId"))}
            return [base]
        if kind in ("page", "screen"):
            name = text(record.get("name")) or text(props.get("name"))
            url = text(props.get("url")) or text((ctx.get("page") or {}).get("url"))
            if kind == "page":
                context["channel"] = context.get("channel") or "web"
                context["page_url"] = url
                name = name or (urlsplit(url).path if url else None) or "/"
            out = {k: v for k, v in props.items() if k not in ("name", "url")}
            out["screen"], out["kind"], out["url"] = name, kind, url
            base["type"], base["properties"] = "screen.viewed", out
            return [base]
        if kind == "track":
            return self._track(str(record.get("event")), props, base)
        raise SchemaViolation(f"type: unsupported message type {kind!r}", field="type", value=kind)

    def _identities(self, record: SourceRecord, ctx: Mapping[str, Any]) -> list[dict[str, str]]:
        # An absent value adds nothing: most of the six are absent from most messages, so they are skipped
        # here rather than in add_identity (this runs for every message the HTTP edge takes).
        ids: list[dict[str, str]] = []
        kind = record.get("type")
        if (value := record.get("userId")) is not None:
            add_identity(ids, self.config.user_id_kind, value)
        if (value := record.get("previousId") if kind == "alias" else record.get("anonymousId")) is not None:
            add_identity(ids, "anonymous_id", value)
        traits = _all_traits(record, ctx) if kind != "group" else (ctx.get("traits") or {})
        if traits and isinstance(traits, Mapping):
            if (value := traits.get("email")) is not None:
                add_identity(ids, "email", value)
            if (value := traits.get("phone")) is not None:
                add_identity(ids, "phone", value)
        if device := ctx.get("device"):
            add_identity(ids, "device_id", device.get("id"))
            add_identity(ids, "push_token", device.get("token"))
        if not ids:
            raise SchemaViolation("a message needs userId or anonymousId", field="userId")
        return ids

    @staticmethod
    def _traits(traits: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for src, dst in _TRAITS.items():
            if value := text(traits.get(src)):
                out[dst] = value
        address = traits.get("address")
        if isinstance(address, Mapping):
            if city := text(address.get("city")):
                out["city"] = city
            if postal := text(address.get("postalCode") or address.get("postal_code")):
                out["postal_code"] = postal
            country = text(address.get("country"))
            if country and len(country) == 2:
                out["country"] = country.upper()
        birth = parse_date(traits.get("birthday"), field="traits.birthday") if traits.get("birthday") else None
        if birth is not None:
            out["birth_date"] = birth
        if g := gender(traits.get("gender")):
            out["gender"] = g
        for key, value in traits.items():  # custom traits are kept
            if key not in _IDENTITY_TRAITS and key not in out and isinstance(value, str | int | float | bool):
                out[key] = value
        return out

    @staticmethod
    def _context(ctx: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical context: only the values present (in this key order), none of them ``None``."""
        out: dict[str, Any] = {}
        app = ctx.get("app")
        if app or ctx.get("device"):
            out["channel"] = "mobile"
        if (value := text(ctx.get("ip"))) is not None:
            out["ip"] = value
        if (value := text(ctx.get("userAgent"))) is not None:
            out["user_agent"] = value
        if app and (value := text(app.get("version"))) is not None:
            out["app_version"] = value
        if (value := text(ctx.get("locale"))) is not None:
            out["locale"] = value
        campaign = ctx.get("campaign")
        if campaign and isinstance(campaign, Mapping) and (value := text(campaign.get("name"))) is not None:
            out["campaign"] = value
        return out

    def _track(self, event: str, props: Mapping[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
        canonical = event if event in EVENT_TYPES else _TRACK_EVENTS.get(event.strip().lower())
        if canonical is None:
            if self.config.unknown_events == "skip":
                return []
            raise SchemaViolation(f"event: no canonical event type for {event!r} (map it, or set "
                                  "unknown_events='skip')", field="event", value=event)
        if event in EVENT_TYPES:
            base["type"], base["properties"] = canonical, dict(props)
            return [base]
        p = dict(props)
        if canonical.startswith("order."):
            payload: dict[str, Any] = {
                "order_id": text(_first(p, "order_id", "checkout_id")),
                "total": parse_decimal(_first(p, "total", "revenue"), field="properties.total"),
                "currency": text(p.pop("currency", None)), "items": _products(p.pop("products", None))}
            if payload["order_id"] is None:
                raise SchemaViolation("properties.order_id: required for order events", field="properties.order_id")
        elif canonical == "cart.updated":
            payload = {"cart_id": text(_first(p, "cart_id", "checkout_id")),
                       "total": parse_decimal(_first(p, "value", "total"), field="properties.total"),
                       "currency": text(p.pop("currency", None)), "items": _products(p.pop("products", None))}
            if payload["cart_id"] is None:
                raise SchemaViolation("properties.cart_id: required for cart events", field="properties.cart_id")
            if not payload["items"] and p.get("sku"):
                payload["items"] = _products([p])
            payload["action"] = event.strip().lower().replace(" ", "_")
        elif canonical == "product.viewed":
            # The e-commerce spec names a product by product_id or sku; a page that sends neither still names
            # it (by name): better a product keyed by its name than a lost view.
            sku = text(_first(p, "sku", "product_id", "id"))
            name = text(p.pop("name", None))
            if sku is None and name is None:
                raise SchemaViolation("properties.product_id: a product view needs product_id, sku or name",
                                      field="properties.product_id")
            payload = {"sku": sku or name, "name": name,
                       "price": parse_decimal(p.pop("price", None), field="properties.price"),
                       "category": text(p.pop("category", None)), "url": text(p.pop("url", None))}
        elif canonical == "search.performed":
            payload = {"query": text(p.pop("query", None))}
        else:  # app.installed / app.opened
            payload = {"deep_link": text(_first(p, "url", "deep_link")),
                       "app_version": text(p.pop("version", None))}
        payload.update({k: v for k, v in p.items() if k not in payload})
        base["type"], base["properties"] = canonical, payload
        return [base]


def _first(props: dict[str, Any], *keys: str) -> Any:
    """Pop ``keys`` from ``props``; the first value that is present (0 and "" are values, unlike with ``or``)."""
    found: Any = None
    for key in keys:
        value = props.pop(key, None)
        if found is None and value is not None:
            found = value
    return found


def _all_traits(record: SourceRecord, ctx: Mapping[str, Any]) -> Mapping[str, Any]:
    """The message's traits: ``context.traits`` (where some SDKs put identify traits), overlaid by ``traits``
    (read-only: with one of them only, that one itself)."""
    shared, own = ctx.get("traits"), record.get("traits")
    if not isinstance(shared, Mapping) or not shared:
        return own if isinstance(own, Mapping) else {}
    if not isinstance(own, Mapping) or not own:
        return shared
    return {**shared, **own}


def _products(products: Any) -> list[dict[str, Any]]:
    items = []
    for i, prod in enumerate(products or ()):
        if not isinstance(prod, Mapping):
            raise SchemaViolation(f"properties.products.{i}: not an object", field=f"properties.products.{i}")
        sku = text(prod.get("sku")) or text(prod.get("product_id"))
        if sku is None:
            raise SchemaViolation(f"properties.products.{i}: no sku or product_id",
                                  field=f"properties.products.{i}.sku")
        item: dict[str, Any] = {"sku": sku, "name": text(prod.get("name")),
                                "quantity": 1 if prod.get("quantity") is None else prod.get("quantity"),
                                "price": parse_decimal(prod.get("price"), field=f"properties.products.{i}.price"),
                                "category": text(prod.get("category"))}
        items.append({k: v for k, v in item.items() if v is not None})
    return items


@hookimpl
def cdp_hub_register_connectors(register: Callable[[type[Any]], None]) -> None:
    """The tracking API is a connector type like the others (so its dead letters can be replayed)."""
    register(TrackingConnector)
