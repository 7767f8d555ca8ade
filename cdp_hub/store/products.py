"""The product catalogue (``products``) and the changes it went through (``product_changes``).

    product.updated events of a batch ─▶ ProductRepository.apply (one transaction)
        ─ last version per SKU; older than the stored one ─▶ ignored (a late or replayed update)
        ─ price lower than before          ─▶ product_changes: price_dropped
        ─ stock was 0, now above 0          ─▶ product_changes: back_in_stock
        ─ stock fell to the low-stock level ─▶ product_changes: low_stock (``low_stock`` > 0: the threshold)
        ─ upsert products; return the changes of the batch's events (also those a replay made before)
    changes ─▶ ProductRepository.interested ─▶ (change, profile) for each customer who viewed or wished for
        the SKU (low_stock: who has it in a cart) in the window before the change and has not ordered it since

A change id is deterministic (the update's event id and the kind), so applying a batch twice records each
change once, and a replayed batch still returns the changes it made the first time. A partial update (an ERP
export with price and stock only) keeps the fields it does not name.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from cdp_hub.store.db import Store

__all__ = ["CHANGE_NAMESPACE", "ProductChange", "ProductRepository", "ProductUpdate", "change_id_for"]

CHANGE_NAMESPACE = uuid.UUID("0e7d1c44-9b6a-5f0e-8c3d-2a4b6c8d0e1f")


def change_id_for(event_id: uuid.UUID, kind: str) -> uuid.UUID:
    """The id of the catalogue change ``kind`` that the product.updated event ``event_id`` caused."""
    return uuid.uuid5(CHANGE_NAMESPACE, f"{event_id}:{kind}")


@dataclass(frozen=True, slots=True)
class ProductUpdate:
    """One ``product.updated`` event as the table takes it (``None``: the source did not say; keep)."""

    event_id: uuid.UUID
    occurred_at: datetime
    source: str
    sku: str
    name: str | None = None
    category_path: tuple[str, ...] | None = None
    brand: str | None = None
    price: Decimal | None = None
    old_price: Decimal | None = None
    currency: str | None = None
    availability: dict[str, Decimal] | None = None
    image_url: str | None = None
    product_url: str | None = None
    durable: bool | None = None
    active: bool | None = None

    @classmethod
    def from_payload(cls, event_id: uuid.UUID, occurred_at: datetime, source: str,
                     props: dict[str, Any]) -> ProductUpdate:
        """From a validated ``ProductPayload`` dumped as JSON (decimals as strings)."""
        def dec(key: str) -> Decimal | None:
            value = props.get(key)
            return Decimal(str(value)) if value is not None else None

        availability = props.get("availability")
        path = props.get("category_path")
        return cls(
            event_id=event_id, occurred_at=occurred_at, source=source, sku=str(props["sku"]),
            name=props.get("name"), category_path=tuple(path) if path else None, brand=props.get("brand"),
            price=dec("price"), old_price=dec("old_price"), currency=props.get("currency"),
            availability={str(k): Decimal(str(v)) for k, v in availability.items()} if availability else None,
            image_url=props.get("image_url"), product_url=props.get("product_url"),
            durable=props.get("durable"), active=props.get("active"))


@dataclass(frozen=True, slots=True)
class ProductChange:
    """A price drop or a return to stock of one SKU, as recorded in ``product_changes``."""

    change_id: uuid.UUID
    event_id: uuid.UUID
    sku: str
    kind: str  # "price_dropped" | "back_in_stock" | "low_stock"
    price: Decimal | None
    previous_price: Decimal | None
    occurred_at: datetime


class ProductRepository:
    """Owns ``products`` and ``product_changes``; reads ``events`` to find who is interested in a change."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(self, updates: Sequence[ProductUpdate], *, low_stock: int = 0) -> list[ProductChange]:
        """Apply a batch of updates in one transaction; return the changes of their events (see module doc).
        ``low_stock``: a total stock falling from above this to between 1 and this is a ``low_stock`` change
        (0: none)."""
        if not updates:
            return []
        latest: dict[str, ProductUpdate] = {}
        # Several versions of one SKU in a batch fold into one, oldest first: what the newest names wins,
        # what only an older one names is kept (as if they had been applied one by one).
        for u in sorted(updates, key=lambda u: (u.occurred_at, str(u.event_id))):
            have = latest.get(u.sku)
            latest[u.sku] = u if have is None else replace(
                have, **{f.name: getattr(u, f.name) for f in fields(u) if getattr(u, f.name) is not None})
        rows = sorted(latest.values(), key=lambda u: u.sku)  # one lock order for concurrent batches
        async with self.store.pool.acquire() as conn, conn.transaction():
            before = {r["sku"]: r for r in await conn.fetch(
                """SELECT sku, price, stock_total, updated_at FROM products
                   WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE""", [u.sku for u in rows])}
            newer = [u for u in rows if u.sku not in before or before[u.sku]["updated_at"] <= u.occurred_at]
            changes: list[ProductChange] = []
            for u in newer:
                old = before.get(u.sku)
                if old is None:
                    continue  # a new product: nothing dropped, nothing came back
                if u.price is not None and old["price"] is not None and u.price < old["price"]:
                    changes.append(ProductChange(change_id_for(u.event_id, "price_dropped"), u.event_id, u.sku,
                                                 "price_dropped", u.price, old["price"], u.occurred_at))
                if u.availability is not None and old["stock_total"] <= 0 < sum(u.availability.values()):
                    changes.append(ProductChange(change_id_for(u.event_id, "back_in_stock"), u.event_id, u.sku,
                                                 "back_in_stock", u.price if u.price is not None else old["price"],
                                                 None, u.occurred_at))
                if (low_stock > 0 and u.availability is not None
                        and 0 < sum(u.availability.values()) <= low_stock < old["stock_total"]):
                    changes.append(ProductChange(change_id_for(u.event_id, "low_stock"), u.event_id, u.sku,
                                                 "low_stock", u.price if u.price is not None else old["price"],
                                                 None, u.occurred_at))
            if newer:
                await self._upsert(conn, newer)
            if changes:
                await conn.execute(
                    """INSERT INTO product_changes (change_id, event_id, sku, kind, price, previous_price, occurred_at)
                       SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::numeric[],
                                            $6::numeric[], $7::timestamptz[])
                       ON CONFLICT (change_id) DO NOTHING""",
                    [c.change_id for c in changes], [c.event_id for c in changes], [c.sku for c in changes],
                    [c.kind for c in changes], [c.price for c in changes], [c.previous_price for c in changes],
                    [c.occurred_at for c in changes])
            recorded = await conn.fetch(
                """SELECT change_id, event_id, sku, kind, price, previous_price, occurred_at FROM product_changes
                   WHERE event_id = ANY($1::uuid[]) ORDER BY occurred_at, sku, kind""",
                list({u.event_id for u in updates}))
        return [ProductChange(**dict(r)) for r in recorded]

    @staticmethod
    async def _upsert(conn: Any, updates: Sequence[ProductUpdate]) -> None:
        """New SKUs inserted, then every SKU updated with what its update names (two plain statements rather
        than an upsert with per-field conditions: the same on PostgreSQL and on Greenplum)."""
        columns = (
            [u.sku for u in updates], [u.name for u in updates],
            [orjson.dumps(list(u.category_path)).decode() if u.category_path else None for u in updates],
            [u.brand for u in updates], [u.price for u in updates], [u.old_price for u in updates],
            [u.currency for u in updates],
            [orjson.dumps({k: str(v) for k, v in u.availability.items()}).decode()
             if u.availability is not None else None for u in updates],
            [sum(u.availability.values(), Decimal(0)) if u.availability is not None else None for u in updates],
            [u.image_url for u in updates], [u.product_url for u in updates], [u.durable for u in updates],
            [u.active for u in updates], [u.source for u in updates], [u.event_id for u in updates],
            [u.occurred_at for u in updates])
        source = """unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[], $7::text[],
                           $8::text[], $9::numeric[], $10::text[], $11::text[], $12::bool[], $13::bool[], $14::text[],
                           $15::uuid[], $16::timestamptz[])
                    AS u(sku, name, path, brand, price, old_price, currency, avail, stock, image_url, product_url,
                         durable, active, source, event_id, at)"""
        await conn.execute(
            f"""INSERT INTO products (sku, updated_at) SELECT u.sku, u.at FROM {source}
                ON CONFLICT (sku) DO NOTHING""", *columns)
        await conn.execute(
            f"""UPDATE products p SET
                    name = COALESCE(u.name, p.name),
                    category_path = CASE WHEN u.path IS NULL THEN p.category_path
                                         ELSE ARRAY(SELECT jsonb_array_elements_text(u.path::jsonb)) END,
                    category = COALESCE(u.path::jsonb->>(jsonb_array_length(u.path::jsonb) - 1), p.category),
                    brand = COALESCE(u.brand, p.brand),
                    price = COALESCE(u.price, p.price),
                    old_price = CASE WHEN u.price IS NULL THEN p.old_price ELSE u.old_price END,
                    currency = COALESCE(u.currency, p.currency),
                    availability = COALESCE(u.avail::jsonb, p.availability),
                    stock_total = COALESCE(u.stock, p.stock_total),
                    image_url = COALESCE(u.image_url, p.image_url),
                    product_url = COALESCE(u.product_url, p.product_url),
                    durable = COALESCE(u.durable, p.durable),
                    active = COALESCE(u.active, p.active),
                    source = u.source, event_id = u.event_id, updated_at = u.at
                FROM {source}
                WHERE p.sku = u.sku AND p.updated_at <= u.at""", *columns)

    async def interested(self, changes: Sequence[ProductChange], *, days: int,
                         limit_per_change: int) -> list[tuple[ProductChange, uuid.UUID, list[dict[str, str]]]]:
        """For each change, the customers who viewed or wished for its SKU (a ``low_stock`` change: who put it in
        a cart) in the ``days`` before it and have not ordered it since (at most ``limit_per_change``, the
        latest first), each with the identities of that last event (what the derived event carries)."""
        if not changes:
            return []
        by_id = {c.change_id: c for c in changes}
        rows = await self.store.fetch(
            """WITH c AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $6::text[])
                          AS c(change_id, sku, at, kind)),
               viewers AS (
                   SELECT c.change_id, c.sku, e.profile_id, max(e.occurred_at) AS viewed_at,
                          (array_agg(e.body->'identities' ORDER BY e.occurred_at DESC))[1] AS identities
                   FROM c JOIN events e
                        ON ((c.kind <> 'low_stock' AND e.type IN ('product.viewed', 'wishlist.added')
                             AND (e.body->'properties'->>'sku') = c.sku)
                            OR (c.kind = 'low_stock' AND e.type = 'cart.updated'
                                AND e.body->'properties'->'items' @> jsonb_build_array(jsonb_build_object('sku', c.sku))))
                        AND e.occurred_at >= c.at - make_interval(days => $4) AND e.occurred_at <= c.at
                   WHERE e.profile_id IS NOT NULL
                   GROUP BY c.change_id, c.sku, e.profile_id),
               ranked AS (
                   SELECT v.*, row_number() OVER (PARTITION BY v.change_id ORDER BY v.viewed_at DESC) AS n
                   FROM viewers v
                   WHERE NOT EXISTS (
                       SELECT 1 FROM events o
                       WHERE o.profile_id = v.profile_id AND o.type = 'order.placed' AND o.occurred_at >= v.viewed_at
                         AND o.body->'properties'->'items' @> jsonb_build_array(jsonb_build_object('sku', v.sku))))
               SELECT change_id, profile_id, identities FROM ranked WHERE n <= $5
               ORDER BY change_id, viewed_at DESC""",
            [c.change_id for c in changes], [c.sku for c in changes], [c.occurred_at for c in changes],
            days, limit_per_change, [c.kind for c in changes])
        out = []
        for r in rows:
            ids = r["identities"]
            identities = orjson.loads(ids) if isinstance(ids, str | bytes) else (ids or [])
            out.append((by_id[r["change_id"]], r["profile_id"], identities))
        return out

    async def get(self, skus: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of ``skus`` (admin, tests)."""
        rows = await self.store.fetch("SELECT * FROM products WHERE sku = ANY($1::text[])", list(skus))
        return {r["sku"]: dict(r) for r in rows}
