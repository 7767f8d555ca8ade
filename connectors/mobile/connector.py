"""Mobile-app connector: batches uploaded by the shop's mobile SDK (AppMetrica/Firebase-like).

The app buffers events and uploads them in batches; one batch is one source record::

    {"batch_id": "...", "sent_at": "...",
     "app": {"id": "ru.shop.app", "version": "5.2.1"},
     "device": {"id": "...", "platform": "android", "os_version": "14", "model": "...", "locale": "ru-RU"},
     "user": {"customer_id": "123", "phone": "...", "email": "..."},          # after login; optional
     "events": [{"id": "<uuid>", "name": "app_open", "ts": "...", "params": {...}}, ...]}

===============  ======================================  ==================================================
event ``name``   ``params``                               canonical event
===============  ======================================  ==================================================
app_install      referrer, deep_link, campaign            ``app.installed``
app_open         deep_link, from_push, push_id            ``app.opened``
deep_link        url                                      ``app.opened`` with ``deep_link`` (and the UTM
                                                          campaign in ``context.campaign``)
screen_view      screen, previous_screen                  ``screen.viewed``
push_token       token, previous_token                    ``push.token_registered`` (a refresh names the
                                                          previous token, so the old one can be retired)
product_view     sku, name, price, category               ``product.viewed``
search           query, results_count                     ``search.performed``
add_to_wishlist  sku, name, price                         ``wishlist.added``
===============  ======================================  ==================================================

The app has no cart or order of its own (the shop's API keeps them: the e-commerce connector sends those), so
this connector sends no ``cart.updated`` or ``order.*``.

Push only: the app (or its backend) POSTs batches to ``/v1/webhooks/{instance}``, signed with the default
scheme (``X-Cdp-Signature: sha256=<hex HMAC of "{timestamp}.{body}">``, ``X-Cdp-Timestamp``).

:meth:`MobileConnector.split` cuts a batch into one record per event (with the batch's device, app and user),
so one malformed event goes to the dead-letter queue and the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field

from cdp_hub.connector.base import Connector, ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import add_identity, parse_datetime, parse_decimal, require, text
from cdp_hub.connector.rest import WebhookOptions
from cdp_hub.errors import SchemaViolation

__all__ = ["MobileConfig", "MobileConnector"]

_PLATFORMS = {"android": "android", "ios": "ios", "ipados": "ios", "web": "web"}
_BATCH_KEYS = ("batch_id", "app", "device", "user", "sent_at")


class MobileConfig(WebhookOptions):
    """Options of the mobile-app connector."""

    unknown_events: Literal["dlq", "skip"] = Field(
        "dlq", description="what to do with an event name the connector does not map: dead-letter it or skip it"
    )


class MobileConnector(Connector):
    """Mobile app SDK batches: installs, opens, screen views, push tokens, deep links."""

    name: ClassVar[str] = "mobile"
    title: ClassVar[str] = "Mobile app"
    config_model: ClassVar[type[ConnectorConfig]] = MobileConfig
    record_id_field: ClassVar[str | None] = "id"
    config: MobileConfig

    def record_id(self, record: SourceRecord) -> str | None:
        return text(record.get("id")) or text(record.get("batch_id"))

    def split(self, record: SourceRecord, *, stream: str | None = None) -> list[SourceRecord]:
        """One record per event of a batch, each carrying the batch's ``app``, ``device`` and ``user``."""
        events = record.get("events")
        if not isinstance(events, list):
            return [record]
        shared = {k: record[k] for k in _BATCH_KEYS if k in record}
        return [{**shared, **e} if isinstance(e, Mapping) else {**shared, "event": e} for e in events]

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        if isinstance(record.get("events"), list):  # a whole batch (without split)
            out: list[dict[str, Any]] = []
            for i, part in enumerate(self.split(record)):
                try:
                    out.extend(self._event(part))
                except SchemaViolation as exc:
                    exc.field = f"events.{i}.{exc.field}" if exc.field else f"events.{i}"
                    raise
            return out
        return self._event(record)

    def _event(self, ev: SourceRecord) -> list[dict[str, Any]]:
        device = ev.get("device") or {}
        app = ev.get("app") or {}
        user = ev.get("user") or {}
        params: Mapping[str, Any] = ev.get("params") or {}
        name = str(require(ev, "name"))
        ids: list[dict[str, str]] = []
        add_identity(ids, "device_id", device.get("id"))
        add_identity(ids, "ecom_customer_id", user.get("customer_id"))
        add_identity(ids, "phone", user.get("phone"))
        add_identity(ids, "email", user.get("email"))
        if not ids:
            raise SchemaViolation("event has no device.id and no user", field="device.id")
        platform = _PLATFORMS.get(str(device.get("platform", "")).lower(), "other" if device else None)
        version = text(app.get("version"))
        context: dict[str, Any] = {"channel": "mobile", "app_version": version,
                                   "locale": text(device.get("locale")),
                                   "os": " ".join(filter(None, (text(device.get("platform")),
                                                                text(device.get("os_version"))))) or None,
                                   "device_model": text(device.get("model"))}
        app_props = {"app_id": text(app.get("id")), "platform": platform, "app_version": version}
        props: dict[str, Any]
        if name == "app_install":
            event_type = "app.installed"
            props = {**app_props, "deep_link": text(params.get("deep_link")),
                     "referrer": text(params.get("referrer"))}
            context["campaign"] = text(params.get("campaign")) or _campaign(params.get("deep_link"))
        elif name in ("app_open", "deep_link"):
            event_type = "app.opened"
            link = text(params.get("url") if name == "deep_link" else params.get("deep_link"))
            props = {**app_props, "deep_link": link, "from_push": params.get("from_push"),
                     "push_id": text(params.get("push_id"))}
            context["campaign"] = _campaign(link)
        elif name == "screen_view":
            event_type = "screen.viewed"
            screen = text(params.get("screen"))
            if screen is None:
                raise SchemaViolation("params.screen: a screen view names no screen", field="params.screen")
            props = {"screen": screen, "previous_screen": text(params.get("previous_screen")),
                     "deep_link": text(params.get("deep_link"))}
        elif name == "push_token":
            event_type = "push.token_registered"
            token = text(params.get("token"))
            if token is None:
                raise SchemaViolation("params.token: a push token event has no token", field="params.token")
            add_identity(ids, "push_token", token)
            props = {"token": token, "platform": platform, "previous_token": text(params.get("previous_token"))}
        elif name == "product_view":
            event_type = "product.viewed"
            props = {"sku": text(require(ev, "params.sku")), "name": text(params.get("name")),
                     "price": parse_decimal(params.get("price"), field="params.price"),
                     "category": text(params.get("category"))}
        elif name == "add_to_wishlist":
            event_type = "wishlist.added"
            props = {"sku": text(require(ev, "params.sku")), "name": text(params.get("name")),
                     "price": parse_decimal(params.get("price"), field="params.price")}
        elif name == "search":
            event_type = "search.performed"
            props = {"query": text(require(ev, "params.query")), "results_count": params.get("results_count")}
        else:
            if self.config.unknown_events == "skip":
                return []
            raise SchemaViolation(f"name: unmapped app event {name!r} (set unknown_events='skip' to ignore)",
                                  field="name", value=name)
        # The SDK's event id names the event; never the batch id (a batch holds many events of one type).
        return [{
            "type": event_type, "source_record_id": text(require(ev, "id")),
            "occurred_at": parse_datetime(require(ev, "ts"), field="ts"),
            "identities": ids, "properties": props, "context": context,
        }]


def _campaign(link: Any) -> str | None:
    """The ``utm_campaign`` of a deep link, if it has one."""
    if not isinstance(link, str) or "utm_campaign" not in link:
        return None
    values = parse_qs(urlsplit(link).query).get("utm_campaign")
    return values[0] if values else None
