"""The catalogue step of the resolver: product events update the catalogue and never touch a profile.

    product.updated (no person identity) ─▶ ProductRepository.apply (products, product_changes)
        ─▶ price_dropped / back_in_stock / low_stock changes ─▶ ProductRepository.interested (recent viewers and
           wishers, not buyers; low_stock: who has it in a cart)
        ─▶ one product.price_dropped / back_in_stock / low_stock event per interested profile ─▶ [cdp.profile-events]

Catalogue events arrive on ``cdp.events`` like every other event (connectors need no second path), but they
are about a product, not a person: they carry no identity, so the identity graph never sees them and no
profile is created for them. What a customer may want to hear of a change is derived here as an event of
that customer's profile (``profile_id`` set, the identities of their last view of the product), so the
triggers stage treats it like any other profile event. Ids are deterministic (change + profile), and a
replayed batch finds its changes in ``product_changes`` again, so a crash between the database commit and the
publish re-emits the same events instead of losing them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from cdp_hub.schema.events import Event
from cdp_hub.schema.payloads import CATALOGUE_EVENT_TYPES
from cdp_hub.store.products import ProductChange, ProductRepository, ProductUpdate

__all__ = ["CATALOGUE_SOURCE", "CatalogueStep", "derived_event_id", "is_catalogue_event"]

CATALOGUE_SOURCE = "cdp-hub"
DERIVED_NAMESPACE = uuid.UUID("3a9e5b1c-7d2f-5a8b-9c4e-1f6a2b3c4d5e")


def is_catalogue_event(event: Event) -> bool:
    return event.type in CATALOGUE_EVENT_TYPES


def derived_event_id(change_id: uuid.UUID, profile_id: uuid.UUID) -> uuid.UUID:
    """The id of the event telling ``profile_id`` of catalogue change ``change_id``."""
    return uuid.uuid5(DERIVED_NAMESPACE, f"{change_id}:{profile_id}")


class CatalogueStep:
    """Applies a batch's catalogue events and derives the per-customer events of what changed."""

    def __init__(self, products: ProductRepository, *, interest_days: int = 30,
                 audience_limit: int = 100_000, low_stock: int = 0) -> None:
        self.products = products
        self.interest_days = interest_days
        self.audience_limit = audience_limit
        self.low_stock = low_stock

    async def apply(self, events: Sequence[Event]) -> list[Event]:
        """Update the catalogue from ``events``; return the derived profile events (in change order)."""
        updates = [ProductUpdate.from_payload(e.event_id, e.occurred_at, e.source, e.properties)
                   for e in events if e.type == "product.updated"]
        changes = await self.products.apply(updates, low_stock=self.low_stock)
        if not changes or self.audience_limit == 0:
            return []
        by_event = {e.event_id: e for e in events}
        out = []
        for change, profile_id, identities in await self.products.interested(
                changes, days=self.interest_days, limit_per_change=self.audience_limit):
            if not identities:
                continue
            out.append(self._event(change, profile_id, identities, by_event.get(change.event_id)))
        return out

    @staticmethod
    def _event(change: ProductChange, profile_id: uuid.UUID, identities: list[dict[str, str]],
               update: Event | None) -> Event:
        product: dict[str, Any] = update.properties if update is not None else {}
        props: dict[str, Any] = {
            "sku": change.sku, "change_id": str(change.change_id),
            # format "f": the database hands back 30000 as Decimal("3E+4")
            "price": format(change.price, "f") if change.price is not None else None,
            "previous_price": format(change.previous_price, "f") if change.previous_price is not None else None,
        }
        for key in ("name", "currency", "image_url", "product_url"):
            if product.get(key) is not None:
                props[key] = product[key]
        return Event.model_validate({
            "event_id": derived_event_id(change.change_id, profile_id),
            "type": f"product.{change.kind}",
            "source": CATALOGUE_SOURCE,
            "source_record_id": str(change.change_id),
            "occurred_at": change.occurred_at,
            "identities": identities,
            "properties": {k: v for k, v in props.items() if v is not None},
            "profile_id": profile_id,
        })
