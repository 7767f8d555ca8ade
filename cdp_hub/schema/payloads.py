"""Typed payloads (``properties``) of the canonical event types, and the registry plugins extend.

Payload models allow extra fields: a source's unknown fields are kept, never silently dropped.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CATALOGUE_EVENT_TYPES",
    "EVENT_TYPES",
    "CartPayload",
    "ConsentPayload",
    "EmptyPayload",
    "ExperimentAssignedPayload",
    "LineItem",
    "MessagePayload",
    "OrderPayload",
    "Payload",
    "ProductChangePayload",
    "ProductPayload",
    "event_type_names",
    "payload_model",
    "register_event_type",
]

Money = Decimal


class Payload(BaseModel):
    """Base of every payload model. Extra fields are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class EmptyPayload(Payload):
    """For events whose information is in ``traits`` and ``identities`` only."""


class LineItem(Payload):
    sku: str
    name: str | None = None
    quantity: Decimal = Field(default=Decimal(1), ge=0)
    price: Money | None = None
    category: str | None = None


class OrderPayload(Payload):
    order_id: str
    total: Money | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    items: list[LineItem] = Field(default_factory=list)
    store_id: str | None = None
    channel: str | None = None
    status: str | None = None
    reason: str | None = None
    payment_url: str | None = Field(default=None, description="where an unpaid order can be paid")
    tracking_url: str | None = Field(default=None, description="order.shipped: the carrier's tracking page")
    carrier: str | None = None
    delivery_slot_start: datetime | None = Field(
        default=None, description="order.delivery_scheduled: when the agreed delivery window opens")
    delivery_slot_end: datetime | None = None
    warranty_until: datetime | None = Field(default=None, description="when the warranty of the order's goods ends")


class CartPayload(Payload):
    cart_id: str
    total: Money | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    items: list[LineItem] = Field(default_factory=list)
    checkout_url: str | None = None


class ProductViewedPayload(Payload):
    sku: str
    name: str | None = None
    price: Money | None = None
    category: str | None = None
    url: str | None = None


class ProductPayload(Payload):
    """``product.updated``: one product of the catalogue as a source (shop, ERP export) knows it now.

    ``availability`` maps a region or store code to the quantity on hand there; a customer's region (the
    ``region`` trait, else ``city``) picks the entry that applies to them, the sum applies to everyone else.
    ``durable`` marks goods bought once in years (a sofa, a bed): recommendations leave out the category of a
    durable the customer has just bought.
    """

    sku: str = Field(min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=500)
    category_path: list[str] = Field(default_factory=list, max_length=10,
                                     description="from the root down: ['Furniture', 'Sofas']")
    brand: str | None = Field(default=None, max_length=200)
    price: Money | None = Field(default=None, ge=0)
    old_price: Money | None = Field(default=None, ge=0, description="the crossed-out price of a sale")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    availability: dict[str, Decimal] = Field(default_factory=dict, description="region or store -> quantity")
    image_url: str | None = Field(default=None, max_length=2000)
    product_url: str | None = Field(default=None, max_length=2000)
    durable: bool | None = None
    active: bool | None = Field(default=None, description="false: withdrawn from sale, never recommended")


class ProductChangePayload(Payload):
    """``product.price_dropped`` / ``product.back_in_stock``: derived by the hub when the catalogue changes,
    one event per interested customer (who viewed the product recently and has not bought it since)."""

    sku: str
    name: str | None = None
    price: Money | None = None
    previous_price: Money | None = None
    currency: str | None = None
    image_url: str | None = None
    product_url: str | None = None
    change_id: str = Field(description="the catalogue change (one per product.updated event and kind)")


class WishlistPayload(Payload):
    """``wishlist.added``: a customer saved a product for later (the price-drop and back-in-stock audience)."""

    sku: str
    name: str | None = None
    price: Money | None = None
    url: str | None = None


class SearchPayload(Payload):
    query: str
    results_count: int | None = None


ConsentChannel = Literal["email", "sms", "push", "messenger", "all"]


class ConsentEvidence(Payload):
    """How consent was given or withdrawn: what a regulator asks to see."""

    method: Literal["form", "double_opt_in", "import", "unsubscribe", "support", "api", "merge", "other"] = "other"
    reference: str | None = Field(default=None, description="the form, import file or confirmation it came from")
    text: str | None = Field(default=None, description="the wording the customer agreed to")
    ip: str | None = None


class ConsentPayload(Payload):
    channel: ConsentChannel
    status: Literal["opted_in", "opted_out"]
    purpose: str = Field("marketing", description="marketing, transactional or service (anything else: marketing)")
    evidence: ConsentEvidence | None = None


class ConsentRequestPayload(Payload):
    """``consent.requested``: a customer asked to subscribe (a form); a confirmation message goes out."""

    channel: Literal["email", "sms", "push", "messenger"] = "email"
    purpose: Literal["marketing", "transactional", "service"] = "marketing"
    evidence: ConsentEvidence | None = None


class LoyaltyPointsPayload(Payload):
    card: str | None = None
    points: Decimal
    balance: Decimal | None = None
    reason: str | None = None
    transaction_id: str | None = None
    expires_at: datetime | None = None


class LoyaltyTierPayload(Payload):
    card: str | None = None
    from_tier: str | None = None
    to_tier: str
    direction: Literal["up", "down"] | None = Field(
        default=None, description="whether the new tier is higher or lower (the loyalty system knows its order)")


class AppPayload(Payload):
    app_id: str | None = None
    platform: Literal["ios", "android", "web", "other"] | None = None
    app_version: str | None = None
    deep_link: str | None = None


class ScreenPayload(Payload):
    screen: str
    deep_link: str | None = None


class PushTokenPayload(Payload):
    token: str
    platform: Literal["ios", "android", "web", "other"] | None = None
    previous_token: str | None = None


class MessagePayload(Payload):
    message_id: str
    channel: str
    scenario: str | None = None
    template: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    status: str | None = None
    reason: str | None = None
    permanent: bool | None = None
    url: str | None = None


Decision = Literal["sent", "deferred", "capped", "no_consent", "suppressed", "duplicate", "lost_priority",
                   "too_late", "muted", "control", "holdout"]


class DecisionPayload(Payload):
    """``message.decided``: what the contact policy decided for one scenario, profile and trigger event."""

    scenario: str
    decision: Decision
    reason: str
    message_id: str | None = None
    channel: str | None = None
    category: str | None = None
    trigger_event_id: str | None = None
    trigger_type: str | None = None
    until: datetime | None = Field(default=None, description="deferred: when the message goes instead")
    experiment: str | None = Field(default=None, description="the experiment of the scenario or campaign, if any")
    variant: str | None = Field(default=None, description="the profile's variant in it, or control")


class ExperimentAssignedPayload(Payload):
    """``experiment.assigned``: a profile's arm in a scenario's or campaign's experiment, recorded once per
    scenario, experiment and profile (a deterministic event id); what attribution compares."""

    experiment: str
    scenario: str
    variant: str = Field(description="the variant's name, or control")
    profile_key: str = Field(description="the profile id the assignment was hashed from (the surviving profile "
                             "at the time; after a later merge the survivor's own assignment wins)")


class JourneyPayload(Payload):
    """``journey.converted`` (a goal event happened) and ``journey.exited`` (an exit_on event happened): how a
    profile's entry into a journey ended, once per entry (a deterministic event id)."""

    journey: str
    entry_id: str
    step: str | None = Field(default=None, description="the step the profile was at")
    entered_at: datetime | None = None
    cause_type: str | None = Field(default=None, description="the goal or exit event's type")
    cause_event_id: str | None = None
    cause_at: datetime | None = None


class SegmentPayload(Payload):
    segment: str


class ProfileMergedPayload(Payload):
    surviving_profile_id: str
    merged_profile_ids: list[str]
    reason: str | None = None


class ProfileCreatedPayload(Payload):
    profile_id: str


class BirthdayPayload(Payload):
    """``profile.birthday``: emitted by the daily scheduler on the customer's local birthday."""

    birth_date: date | None = None
    year: int | None = Field(default=None, description="the year of this birthday (one event per year)")
    age: int | None = Field(default=None, description="the age the customer turns, when the birth year is known")


EVENT_TYPES: dict[str, type[BaseModel]] = {
    "customer.updated": EmptyPayload,
    "customer.deleted": EmptyPayload,
    "consent.changed": ConsentPayload,
    "consent.requested": ConsentRequestPayload,
    "order.placed": OrderPayload,
    "order.paid": OrderPayload,
    "order.cancelled": OrderPayload,
    "order.returned": OrderPayload,
    "order.shipped": OrderPayload,
    "order.delivery_scheduled": OrderPayload,
    "order.delivered": OrderPayload,
    "cart.updated": CartPayload,
    "product.viewed": ProductViewedPayload,
    "product.updated": ProductPayload,
    "product.price_dropped": ProductChangePayload,
    "product.back_in_stock": ProductChangePayload,
    "product.low_stock": ProductChangePayload,
    "wishlist.added": WishlistPayload,
    "search.performed": SearchPayload,
    "loyalty.points_earned": LoyaltyPointsPayload,
    "loyalty.points_redeemed": LoyaltyPointsPayload,
    "loyalty.points_expired": LoyaltyPointsPayload,
    "loyalty.tier_changed": LoyaltyTierPayload,
    "app.installed": AppPayload,
    "app.opened": AppPayload,
    "screen.viewed": ScreenPayload,
    "push.token_registered": PushTokenPayload,
    "message.sent": MessagePayload,
    "message.delivered": MessagePayload,
    "message.failed": MessagePayload,
    "message.opened": MessagePayload,
    "message.clicked": MessagePayload,
    "message.decided": DecisionPayload,
    "experiment.assigned": ExperimentAssignedPayload,
    "journey.converted": JourneyPayload,
    "journey.exited": JourneyPayload,
    "segment.entered": SegmentPayload,
    "segment.exited": SegmentPayload,
    "profile.created": ProfileCreatedPayload,
    "profile.merged": ProfileMergedPayload,
    "profile.unmerged": ProfileMergedPayload,
    "profile.birthday": BirthdayPayload,
}
CORE_EVENT_TYPES = frozenset(EVENT_TYPES)

CATALOGUE_EVENT_TYPES = frozenset({"product.updated"})
"""Events about the catalogue, not about a person: they carry no identity, never create or touch a profile,
and the resolver hands them to the catalogue step (:mod:`cdp_hub.resolver.catalogue`)."""

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def register_event_type(name: str, payload: type[BaseModel]) -> None:
    """Add an event type. Plugin types must be namespaced (``acme.gift_card_issued``) and new."""
    if not _TYPE_RE.match(name):
        raise ValueError(f"event type {name!r} must be dotted lower-case words (e.g. 'acme.thing_happened')")
    existing = EVENT_TYPES.get(name)
    if existing is not None and existing is not payload:
        raise ValueError(f"event type {name!r} is already registered with {existing.__name__}")
    EVENT_TYPES[name] = payload


def payload_model(name: str) -> type[BaseModel] | None:
    return EVENT_TYPES.get(name)


def event_type_names() -> list[str]:
    return sorted(EVENT_TYPES)


def validate_payload(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    """Validate ``properties`` against the type's payload model; return the JSON-ready dict."""
    model = EVENT_TYPES[name]
    return model.model_validate(properties).model_dump(mode="json", exclude_none=True)
