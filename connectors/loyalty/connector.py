"""Loyalty connector: a loyalty-programme platform (cards, points, tiers).

Record shapes (the platform's REST API; webhooks send the same objects):

============  ====================================================  ============================================
stream        record                                                 events
============  ====================================================  ============================================
cards         ``{card_number, status, issued_at, updated_at, phone,   ``customer.updated``: the card linked to the
              holder{first_name, last_name, birth_date, email,       phone (and email), tier and holder traits
              gender}, tier, balance}``
transactions  ``{transaction_id, card_number, type: accrual|          ``loyalty.points_earned`` / ``_redeemed`` /
              redemption|expiration|adjustment, points,              ``_expired``; an adjustment by its sign
              balance_after, created_at, receipt_id?, store_id?,
              expires_at?}``
tier_changes  ``{id, card_number, old_level, new_level,              ``loyalty.tier_changed`` with ``direction``
              changed_at, reason?}``                                 (``up``/``down``) from the configured
                                                                     ``tiers`` order
============  ====================================================  ============================================

Points earned with an expiry date (``expires_at``) carry it on ``loyalty.points_earned``: the catalogue's
``points_expiring`` scenario reminds the customer a week before. The programme's tiers, lowest first, are the
``tiers`` option (``["Базовый", "Серебряный", "Золотой"]``, compared without regard to case): a tier change gets
``direction: up`` or ``down`` from it, and a tier the list does not name is a record error (field
``new_level`` or ``old_level``, the change's id) that goes to the dead-letter queue while the rest of the page
goes on. Without ``tiers`` the connector cannot tell an upgrade from a downgrade and sends no ``direction``; a
first tier (no ``old_level``) or the same tier again has none either.

Pull: page-number pagination (``page``/``per_page``, ``meta.total_pages``), API key in ``X-Api-Key``.
Push: webhooks signed with the default scheme, topic in ``X-Loyalty-Event``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from pydantic import Field, field_validator

from cdp_hub.connector.base import ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import (
    add_identity,
    gender,
    parse_date,
    parse_datetime,
    parse_decimal,
    require,
    text,
)
from cdp_hub.connector.pagination import PageNumberPaginator
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream
from cdp_hub.connector.webhooks import WebhookSpec
from cdp_hub.errors import SchemaViolation

__all__ = ["Cards", "LoyaltyConfig", "LoyaltyConnector", "TierChanges", "Transactions"]

_EARN = frozenset({"accrual", "earn", "bonus", "welcome"})
_REDEEM = frozenset({"redemption", "redeem", "write_off", "spend"})
_EXPIRE = frozenset({"expiration", "expire", "burn"})


class LoyaltyConfig(HttpConnectorConfig):
    """Options of the loyalty connector."""

    base_url: str = Field("http://localhost:8084", description="base URL of the loyalty platform's API")
    tiers: list[str] = Field(
        default_factory=list, description="the programme's tiers from the lowest to the highest "
        "(['Базовый', 'Серебряный', 'Золотой']): loyalty.tier_changed gets direction up/down from this order "
        "and a tier not listed is a record error; empty: no direction")

    @field_validator("tiers")
    @classmethod
    def _distinct_tiers(cls, tiers: list[str]) -> list[str]:
        seen: set[str] = set()
        for tier in tiers:
            key = tier.strip().casefold()
            if not key:
                raise ValueError("a tier name is empty")
            if key in seen:
                raise ValueError(f"tier {tier!r} is listed twice")
            seen.add(key)
        return tiers


class _LoyaltyStream(RestStream):
    records_path = "data"
    paginator = PageNumberPaginator(page_param="page", size_param="per_page", total_pages_path="meta.total_pages")


class Cards(_LoyaltyStream):
    name = "cards"
    path = "/api/v1/cards"
    primary_key = "card_number"
    cursor_field = "updated_at"
    cursor_param = "updated_since"


class Transactions(_LoyaltyStream):
    name = "transactions"
    path = "/api/v1/transactions"
    primary_key = "transaction_id"
    cursor_field = "created_at"
    cursor_param = "created_since"


class TierChanges(_LoyaltyStream):
    name = "tier_changes"
    path = "/api/v1/tier-changes"
    cursor_field = "changed_at"
    cursor_param = "changed_since"


class LoyaltyConnector(HttpConnector):
    """Loyalty platform: cards linked to phones, points earned/redeemed/expired, tier changes."""

    name: ClassVar[str] = "loyalty"
    title: ClassVar[str] = "Loyalty programme"
    config_model: ClassVar[type[ConnectorConfig]] = LoyaltyConfig
    record_id_field: ClassVar[str | None] = "transaction_id"
    streams = (Cards, Transactions, TierChanges)
    config: LoyaltyConfig
    webhook = WebhookSpec(topic_header="X-Loyalty-Event",
                          topics={"card.issued": "cards", "card.updated": "cards",
                                  "transaction.created": "transactions", "tier.changed": "tier_changes"})

    def record_id(self, record: SourceRecord) -> str | None:
        return text(record.get("transaction_id")) or text(record.get("id")) or text(record.get("card_number"))

    def stream_of(self, record: SourceRecord) -> str:
        """Which stream a record belongs to, from its shape."""
        if "transaction_id" in record:
            return "transactions"
        if "new_level" in record:
            return "tier_changes"
        return "cards"

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        stream = stream or self.stream_of(record)
        if stream == "transactions":
            return self._transaction(record)
        if stream == "cards":
            return self._card(record)
        if stream == "tier_changes":
            return self._tier(record)
        raise SchemaViolation(f"unknown loyalty stream {stream!r}", field="<stream>", value=stream)

    def _card(self, card: SourceRecord) -> list[dict[str, Any]]:
        number = text(require(card, "card_number"))
        holder = card.get("holder") or {}
        updated = card.get("updated_at") or require(card, "issued_at")
        ids: list[dict[str, str]] = []
        add_identity(ids, "loyalty_card", number)
        add_identity(ids, "phone", card.get("phone") or holder.get("phone"))
        add_identity(ids, "email", holder.get("email"))
        traits: dict[str, Any] = {}
        for key in ("first_name", "last_name", "middle_name", "city"):
            if value := text(holder.get(key)):
                traits[key] = value
        birth = parse_date(holder.get("birth_date"), field="holder.birth_date")
        if birth is not None:
            traits["birth_date"] = birth
        if g := gender(holder.get("gender")):
            traits["gender"] = g
        if tier := text(card.get("tier")):
            traits["loyalty_tier"] = tier
        if status := text(card.get("status")):
            traits["loyalty_card_status"] = status
        balance = parse_decimal(card.get("balance"), field="balance")
        if balance is not None:
            traits["loyalty_balance"] = str(balance)
        return [{
            "type": "customer.updated", "source_record_id": f"card/{number}@{updated}",
            "occurred_at": parse_datetime(updated, field="updated_at"), "identities": ids, "traits": traits,
            "properties": {"card_issued_at": text(card.get("issued_at"))}, "context": {"channel": "loyalty"},
        }]

    def _transaction(self, txn: SourceRecord) -> list[dict[str, Any]]:
        kind = str(require(txn, "type")).lower()
        points = parse_decimal(require(txn, "points"), field="points")
        assert points is not None
        if kind in _EARN or (kind == "adjustment" and points > 0):
            event_type = "loyalty.points_earned"
        elif kind in _REDEEM or (kind == "adjustment" and points < 0):
            event_type = "loyalty.points_redeemed"
        elif kind in _EXPIRE:
            event_type = "loyalty.points_expired"
        else:
            raise SchemaViolation(f"type: unknown transaction type {kind!r}", field="type", value=kind)
        card = text(require(txn, "card_number"))
        ids: list[dict[str, str]] = []
        add_identity(ids, "loyalty_card", card)
        add_identity(ids, "phone", txn.get("phone"))
        props: dict[str, Any] = {
            "card": card, "points": abs(points), "transaction_id": text(txn.get("transaction_id")),
            "balance": parse_decimal(txn.get("balance_after"), field="balance_after"),
            "reason": text(txn.get("reason")) or kind, "order_id": text(txn.get("receipt_id")),
        }
        if expires := txn.get("expires_at"):
            props["expires_at"] = parse_datetime(expires, field="expires_at")
        return [{
            "type": event_type, "occurred_at": parse_datetime(require(txn, "created_at"), field="created_at"),
            "identities": ids, "properties": props,
            "context": {"channel": "loyalty", "store_id": text(txn.get("store_id"))},
        }]

    @cached_property
    def _tier_ranks(self) -> dict[str, int]:
        """Each configured tier's position, lowest first, by its name without regard to case."""
        return {t.strip().casefold(): n for n, t in enumerate(self.config.tiers)}

    def _tier_rank(self, change: SourceRecord, field: str) -> int | None:
        """The position of the record's tier in the configured order (``None``: no tier, or no order known)."""
        tier = text(change.get(field))
        if tier is None or not self.config.tiers:
            return None
        rank = self._tier_ranks.get(tier.casefold())
        if rank is None:
            raise SchemaViolation(f"{field}: unknown tier {tier!r}; the programme's tiers (option tiers) are "
                                  f"{', '.join(self.config.tiers)}", field=field, value=tier)
        return rank

    def _tier(self, change: SourceRecord) -> list[dict[str, Any]]:
        card = text(require(change, "card_number"))
        to_tier = text(require(change, "new_level"))
        when = require(change, "changed_at")
        new_rank, old_rank = self._tier_rank(change, "new_level"), self._tier_rank(change, "old_level")
        direction = None
        if new_rank is not None and old_rank is not None and new_rank != old_rank:
            direction = "up" if new_rank > old_rank else "down"
        return [{
            "type": "loyalty.tier_changed",
            "source_record_id": text(change.get("id")) or f"{card}/tier/{to_tier}@{when}",
            "occurred_at": parse_datetime(when, field="changed_at"),
            "identities": [{"kind": "loyalty_card", "value": card}],
            "traits": {"loyalty_tier": to_tier},
            "properties": {"card": card, "from_tier": text(change.get("old_level")), "to_tier": to_tier,
                           "direction": direction, "reason": text(change.get("reason"))},
            "context": {"channel": "loyalty"},
        }]
