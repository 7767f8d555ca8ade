"""CRM connector: a HubSpot/amoCRM/Bitrix24-like CRM.

Record shapes:

=============  ===============================================  ================================================
stream         record                                            events
=============  ===============================================  ================================================
contacts       ``{id, properties{email, phone, mobilephone,      ``customer.updated`` with traits; plus
               firstname, lastname, city, date_of_birth,         ``customer.deleted`` when ``archived``;
               gender, hs_email_optout, hs_merged_object_ids,    ``consent.changed`` (email opt-out) when
               ...}, createdAt, updatedAt, archived}``           ``hs_email_optout`` is true; a merge notice
                                                                 (below) when ``hs_merged_object_ids`` is set
subscriptions  ``{id, contactId, channel: EMAIL|SMS|PUSH,        ``consent.changed`` (opted_in / opted_out)
               status: SUBSCRIBED|UNSUBSCRIBED, timestamp,
               subscriptionType, email?, phone?}``
webhooks       ``{eventId, subscriptionType: contact.merge|      merge notice / ``customer.deleted`` /
               contact.deletion|contact.privacyDeletion|         ``customer.updated``
               contact.propertyChange, objectId,
               primaryObjectId, mergedObjectIds, occurredAt,
               propertyName, propertyValue}``
=============  ===============================================  ================================================

**Merges done in the CRM** arrive as a ``customer.updated`` event identified by the surviving contact's
``crm_id`` with ``properties.merged_identities = [{"kind": "crm_id", "value": <merged id>}, ...]``: the CRM,
an authority on its own contacts, says these records are one person. The resolver treats this as an explicit
merge instruction (its rule "two different crm_ids never merge automatically" is about inference, not about
the CRM's own decision).

Pull: ``contacts`` (``updatedAfter``) and ``subscriptions`` (``occurredAfter``), both with cursor-token
pagination (``paging.next.after``), bearer token or OAuth2 client credentials. Push: webhook arrays signed
like HubSpot's v3 scheme (base64 HMAC-SHA256 of method + URL + body + timestamp in
``X-Crm-Signature-V3``, the timestamp in ms in ``X-Crm-Request-Timestamp``).

Custom contact properties (anything not listed in ``_CONTACT_KNOWN``) are kept as traits under their own name.

The CRM keeps people and their consents, not orders, carts, views or loyalty accounts: the events the retail
scenario catalogue starts from (orders, shipments, carts, searches, wishes, points, tiers) come from the shop,
the ERP, the loyalty platform and the app, never from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from cdp_hub.connector.base import ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import add_identity, gender, parse_date, parse_datetime, require, text
from cdp_hub.connector.pagination import CursorPaginator
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream
from cdp_hub.connector.webhooks import WebhookSpec
from cdp_hub.errors import SchemaViolation

__all__ = ["Contacts", "CrmConfig", "CrmConnector", "Subscriptions"]

_CONTACT_KNOWN = frozenset({
    "email", "phone", "mobilephone", "firstname", "lastname", "middlename", "city", "date_of_birth",
    "birthdate", "gender", "hs_email_optout", "hs_merged_object_ids", "createdate", "lastmodifieddate",
    "hs_object_id", "zip", "country", "address", "hs_language", "hs_timezone",
})
_CONSENT_CHANNELS = {"EMAIL": "email", "SMS": "sms", "PUSH": "push", "ALL": "all"}
_CONSENT_STATUS = {
    "SUBSCRIBED": "opted_in", "OPT_IN": "opted_in", "OPTED_IN": "opted_in",
    "UNSUBSCRIBED": "opted_out", "OPT_OUT": "opted_out", "OPTED_OUT": "opted_out",
}
_TRUE = frozenset({"true", "1", "yes", "да"})


class CrmConfig(HttpConnectorConfig):
    """Options of the CRM connector."""

    base_url: str = Field("http://localhost:8082", description="base URL of the CRM's REST API")


class Contacts(RestStream):
    name = "contacts"
    path = "/crm/v3/objects/contacts"
    records_path = "results"
    cursor_field = "updatedAt"
    cursor_param = "updatedAfter"
    params = {"sort": "updatedAt", "archived": "include"}
    paginator = CursorPaginator(token_path="paging.next.after", param="after", size_param="limit")


class Subscriptions(RestStream):
    name = "subscriptions"
    path = "/communication-preferences/v3/events"
    records_path = "results"
    cursor_field = "timestamp"
    cursor_param = "occurredAfter"
    paginator = CursorPaginator(token_path="paging.next.after", param="after", size_param="limit")


class CrmConnector(HttpConnector):
    """CRM (HubSpot/amoCRM-like): contacts with traits, consents, merges and deletions."""

    name: ClassVar[str] = "crm"
    title: ClassVar[str] = "CRM"
    config_model: ClassVar[type[ConnectorConfig]] = CrmConfig
    record_id_field: ClassVar[str | None] = "id"
    streams = (Contacts, Subscriptions)
    webhook = WebhookSpec(signature_header="X-Crm-Signature-V3", timestamp_header="X-Crm-Request-Timestamp",
                          signed_payload="{method}{url}{body}{timestamp}", encoding="base64", prefix="")

    def record_id(self, record: SourceRecord) -> str | None:
        return text(record.get("id")) or text(record.get("eventId"))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str = "",
                      now: datetime | None = None) -> tuple[str | None, list[SourceRecord]]:
        """CRM webhooks are arrays of change notifications: always the ``webhooks`` stream."""
        _, records = super().parse_webhook(headers, body, method=method, url=url, now=now)
        return "webhooks", records

    def stream_of(self, record: SourceRecord) -> str:
        """Which stream a record belongs to, from its shape."""
        if "subscriptionType" in record and "eventId" in record:
            return "webhooks"
        if "properties" in record:
            return "contacts"
        return "subscriptions"

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        stream = stream or self.stream_of(record)
        if stream == "contacts":
            return self._contact(record)
        if stream == "subscriptions":
            return self._subscription(record)
        if stream == "webhooks":
            return self._webhook(record)
        raise SchemaViolation(f"unknown CRM stream {stream!r}", field="<stream>", value=stream)

    # -- streams -------------------------------------------------------------------------------------

    def _contact(self, contact: SourceRecord) -> list[dict[str, Any]]:
        cid = text(require(contact, "id"))
        props: Mapping[str, Any] = contact.get("properties") or {}
        updated = contact.get("updatedAt") or props.get("lastmodifieddate") or require(contact, "createdAt")
        occurred = parse_datetime(updated, field="updatedAt")
        ids: list[dict[str, str]] = []
        add_identity(ids, "crm_id", cid)
        add_identity(ids, "email", props.get("email"))
        phone, mobile = text(props.get("phone")), text(props.get("mobilephone"))
        add_identity(ids, "phone", mobile or phone)
        if phone and mobile and phone != mobile:
            add_identity(ids, "phone", phone)
        context = {"channel": "crm"}

        if contact.get("archived"):
            when = contact.get("archivedAt") or updated
            return [{"type": "customer.deleted", "source_record_id": f"{cid}/deleted",
                     "occurred_at": parse_datetime(when, field="archivedAt"), "identities": ids,
                     "properties": {"reason": "archived in CRM"}, "context": context}]

        traits: dict[str, Any] = {}
        for src, dst in (("firstname", "first_name"), ("lastname", "last_name"), ("middlename", "middle_name"),
                         ("city", "city"), ("zip", "postal_code"), ("address", "address"),
                         ("hs_language", "locale"), ("hs_timezone", "timezone")):
            if value := text(props.get(src)):
                traits[dst] = value
        birth = parse_date(props.get("date_of_birth") or props.get("birthdate"), field="properties.date_of_birth")
        if birth is not None:
            traits["birth_date"] = birth
        if g := gender(props.get("gender")):
            traits["gender"] = g
        country = text(props.get("country"))
        if country and len(country) == 2:
            traits["country"] = country.upper()
        for key, value in props.items():
            if key not in _CONTACT_KNOWN and not key.startswith("hs_") and value not in (None, ""):
                traits.setdefault(key, value)

        events: list[dict[str, Any]] = [{
            "type": "customer.updated", "source_record_id": f"{cid}@{updated}", "occurred_at": occurred,
            "identities": ids, "traits": traits, "context": context,
        }]
        if str(props.get("hs_email_optout", "")).lower() in _TRUE:
            events.append({"type": "consent.changed", "source_record_id": f"{cid}/email_optout@{updated}",
                           "occurred_at": occurred, "identities": ids,
                           "properties": {"channel": "email", "status": "opted_out"}, "context": context})
        merged = [m.strip() for m in str(props.get("hs_merged_object_ids") or "").split(";")
                  if m.strip() and m.strip() != cid]
        if merged:
            events.append(self._merge(cid or "", merged, occurred, ids))
        return events

    @staticmethod
    def _merge(survivor: str, merged: list[str], occurred: Any, ids: list[dict[str, str]]) -> dict[str, Any]:
        merged = sorted(set(merged) - {survivor})
        return {
            "type": "customer.updated", "source_record_id": f"{survivor}/merge/{'+'.join(merged)}",
            "occurred_at": occurred, "identities": ids,
            "properties": {"merged_identities": [{"kind": "crm_id", "value": m} for m in merged]},
            "context": {"channel": "crm"},
        }

    def _subscription(self, sub: SourceRecord) -> list[dict[str, Any]]:
        raw_channel = str(require(sub, "channel")).upper()
        channel = _CONSENT_CHANNELS.get(raw_channel)
        if channel is None:
            raise SchemaViolation(f"channel: unknown consent channel {raw_channel!r} (EMAIL, SMS, PUSH, ALL)",
                                  field="channel", value=raw_channel)
        raw_status = str(require(sub, "status")).upper()
        status = _CONSENT_STATUS.get(raw_status)
        if status is None:
            if raw_status in ("NOT_SUBSCRIBED", "PENDING"):
                return []  # no decision by the customer yet: nothing to record
            raise SchemaViolation(f"status: unknown consent status {raw_status!r}", field="status",
                                  value=raw_status)
        ids: list[dict[str, str]] = []
        add_identity(ids, "crm_id", sub.get("contactId"))
        add_identity(ids, "email", sub.get("email"))
        add_identity(ids, "phone", sub.get("phone"))
        if not ids:
            raise SchemaViolation("subscription names no contact", field="contactId")
        props = {"channel": channel, "status": status,
                 "purpose": text(sub.get("subscriptionType")) or "marketing",
                 "legal_basis": text(sub.get("legalBasis")), "via": text(sub.get("source")),
                 "evidence": {"method": "api", "reference": f"{self.instance}:subscription:{sub.get('id')}",
                              "text": text(sub.get("legalBasis"))}}
        return [{"type": "consent.changed", "identities": ids, "properties": props,
                 "occurred_at": parse_datetime(require(sub, "timestamp"), field="timestamp"),
                 "context": {"channel": "crm"}}]

    def _webhook(self, hook: SourceRecord) -> list[dict[str, Any]]:
        kind = str(hook.get("subscriptionType"))
        occurred = parse_datetime(require(hook, "occurredAt"), field="occurredAt")
        context = {"channel": "crm"}
        if kind == "contact.merge":
            survivor = text(hook.get("newObjectId") or hook.get("primaryObjectId"))
            if survivor is None:
                raise SchemaViolation("merge names no primaryObjectId", field="primaryObjectId")
            merged = [text(m) or "" for m in hook.get("mergedObjectIds") or ()]
            return [self._merge(survivor, [m for m in merged if m], occurred,
                                [{"kind": "crm_id", "value": survivor}])]
        object_id = text(require(hook, "objectId"))
        ids = [{"kind": "crm_id", "value": object_id or ""}]
        if kind in ("contact.deletion", "contact.privacyDeletion"):
            reason = "privacy deletion (GDPR/152-FZ)" if kind == "contact.privacyDeletion" else "deleted in CRM"
            return [{"type": "customer.deleted", "source_record_id": f"{object_id}/deleted",
                     "occurred_at": occurred, "identities": ids,
                     "properties": {"reason": reason, "privacy": kind == "contact.privacyDeletion"},
                     "context": context}]
        if kind == "contact.propertyChange":
            prop, value = text(hook.get("propertyName")), hook.get("propertyValue")
            contact = {"id": object_id, "updatedAt": hook["occurredAt"], "properties": {prop: value}}
            events = self._contact(contact)
            for event in events:  # one change per webhook: name the event after the webhook, not the contact
                event["source_record_id"] = f"{object_id}/change/{text(hook.get('eventId'))}/{event['type']}"
            return events
        if kind == "contact.creation":
            return [{"type": "customer.updated", "source_record_id": f"{object_id}/created",
                     "occurred_at": occurred, "identities": ids, "context": context}]
        raise SchemaViolation(f"unsupported CRM webhook {kind!r}", field="subscriptionType", value=kind)
