"""Product recommendations, computed set-wise in SQL: ``order_lines``, ``product_pairs``, ``product_popularity``.

Two halves:

    on a schedule (cdp-hub recommend refresh), over the warehouse:
        events (order.placed in the window) ─▶ order_lines (one row per order and SKU, the buyer's region)
        order_lines ─▶ product_pairs       "bought together": co-occurrence in orders, cosine score, lift,
                                           minimum support, the best ``top_k`` partners per SKU
        order_lines ─▶ product_popularity  orders per SKU, per region and overall ('')

    when messages are rendered, for the batch's profiles at once (one statement):
        their recent events (views, carts, orders) + products + the two tables above
        ─▶ per profile and kind, the best ``per_kind`` products that pass the filters

The kinds: ``viewed`` (viewed recently, not bought since), ``cart`` (the latest cart, if no order came after
it, with current prices and availability), ``bought_together`` (partners of the cart, the latest order and
the recent views), ``similar`` (same category, price within ±30% of a viewed or carted product), ``popular``
(most ordered in the customer's region, in their favourite category). Every kind but ``cart`` leaves out what
is inactive or not available in the customer's region (the ``region`` trait, else ``city``; a product that
states no availability counts as available); every kind but ``cart`` and ``viewed`` leaves out what the
customer bought in the window or has in the cart; and no kind offers a durable product (a sofa) in the
category of a durable the customer bought in the window: no second sofa next week.

Every statement is plain SQL that Greenplum runs as well: no MERGE, no LATERAL, rebuilds as DELETE + INSERT
in one transaction (readers see the old rows until it commits).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cdp_hub.store.db import Store
from cdp_hub.store.migrations import render_sql

__all__ = ["KINDS", "RecommendationRepository", "RecommendedProduct", "RefreshResult"]

KINDS = ("viewed", "cart", "bought_together", "similar", "popular")


@dataclass(frozen=True, slots=True)
class RecommendedProduct:
    """One recommended product as templates see it (``product.name``, ``product.price``, ...)."""

    sku: str
    kind: str
    score: float
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    price: Decimal | None = None
    old_price: Decimal | None = None
    currency: str | None = None
    image_url: str | None = None
    product_url: str | None = None
    quantity: Decimal | None = None  # in the cart: how many


@dataclass
class RefreshResult:
    """What a refresh wrote, and how long each part took (seconds)."""

    order_lines: int = 0
    pairs: int = 0
    popular: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class RecommendationRepository:
    """Owns ``order_lines``, ``product_pairs`` and ``product_popularity``; reads events, profiles, products."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the scheduled half --------------------------------------------------------------------------

    async def sync_order_lines(self, *, since: datetime) -> int:
        """Bring ``order_lines`` up to date with the order events since ``since`` (and drop older lines).

        Idempotent: a line is keyed by its order event and SKU; a line whose buyer was merged into another
        profile (or moved region) is updated, the others are left alone.
        """
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM order_lines WHERE ordered_at < $1", since)
            status = await conn.execute(
                """INSERT INTO order_lines (order_event_id, sku, profile_id, ordered_at, region)
                   SELECT DISTINCT ON (e.event_id, item->>'sku') e.event_id, item->>'sku', e.profile_id,
                          e.occurred_at, COALESCE(p.golden->>'region', p.golden->>'city', '')
                   FROM events e
                   CROSS JOIN jsonb_array_elements(
                       CASE WHEN jsonb_typeof(e.body->'properties'->'items') = 'array'
                            THEN e.body->'properties'->'items' ELSE '[]'::jsonb END) AS item
                   LEFT JOIN profiles p ON p.profile_id = e.profile_id
                   WHERE e.type = 'order.placed' AND e.occurred_at >= $1 AND item->>'sku' IS NOT NULL
                   ON CONFLICT (order_event_id, sku) DO UPDATE
                       SET profile_id = EXCLUDED.profile_id, region = EXCLUDED.region
                       WHERE (order_lines.profile_id, order_lines.region)
                             IS DISTINCT FROM (EXCLUDED.profile_id, EXCLUDED.region)""", since)
        return int(status.split()[-1])

    async def rebuild(self, *, since: datetime, min_support: int, top_k: int = 20, max_basket: int = 50,
                      damping: float = 0.15, work_mem: str = "256MB") -> tuple[int, int]:
        """Recompute ``product_pairs`` and ``product_popularity`` from the order lines since ``since``.

        Orders of more than ``max_basket`` distinct SKUs (a wholesale basket) are left out of the pairs: they
        would add pairs quadratically and say little about what goes together.

        ``damping`` is the popularity correction of the score ``together / (orders(a)^(1-d) · orders(b)^d)``:
        0 ranks a product's partners by how often they were bought with it (the staples of every basket
        first), 0.5 is the cosine, 1 ranks them by lift (rare partners first). The pairs are counted over
        integer item numbers in temporary tables (hashing two integers instead of two strings), with
        ``work_mem`` raised for this transaction so the aggregation stays in memory
        (bench/recommend.py: 1,000,000 orders).
        """
        def sql(statement: str) -> str:
            return render_sql(statement, self.store.dialect)

        if not re.fullmatch(r"[0-9]+[kMG]B", work_mem):
            raise ValueError(f"work_mem: not a size such as 256MB: {work_mem!r}")
        async with self.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL work_mem = '{work_mem}'")
            await conn.execute(sql(
                """CREATE TEMP TABLE rec_items ON COMMIT DROP AS
                   SELECT sku, (row_number() OVER (ORDER BY sku))::int AS item, orders FROM (
                       SELECT sku, count(*) AS orders FROM order_lines WHERE ordered_at >= $1 GROUP BY sku) s
                   /*gp: DISTRIBUTED BY (item) */""").replace("$1", _literal(since)))
            # One row per order: its items as an array. Pairs come from the arrays (below), not from a
            # self-join of the lines, which costs about twice as much.
            await conn.execute(sql(
                """CREATE TEMP TABLE rec_baskets ON COMMIT DROP AS
                   SELECT array_agg(i.item) AS items
                   FROM order_lines l JOIN rec_items i ON i.sku = l.sku
                   WHERE l.ordered_at >= $1
                   GROUP BY l.order_event_id HAVING count(*) <= $2
                   /*gp: DISTRIBUTED RANDOMLY */""").replace("$1", _literal(since))
                .replace("$2", str(int(max_basket))))
            total = await conn.fetchval("SELECT count(*) FROM rec_baskets")
            await conn.execute("DELETE FROM product_pairs")
            # Each item of a basket with each item after it (unnest and generate_subscripts in the select
            # list step together), counted per unordered pair, kept from min_support on, both directions.
            pairs = await conn.execute(
                """INSERT INTO product_pairs (sku, other_sku, together, score, lift)
                   WITH half AS (
                       SELECT least(a, b) AS a, greatest(a, b) AS b, count(*) AS together FROM (
                           SELECT a, unnest(items[pos + 1:]) AS b FROM (
                               SELECT items, unnest(items) AS a, generate_subscripts(items, 1) AS pos
                               FROM rec_baskets WHERE cardinality(items) > 1) x) y
                       GROUP BY 1, 2 HAVING count(*) >= $1),
                   pairs AS (SELECT a AS item, b AS other, together FROM half
                             UNION ALL SELECT b, a, together FROM half),
                   ranked AS (
                       SELECT p.item, p.other, p.together,
                              p.together / (power(ia.orders::float8, 1 - $4::float8) * power(ib.orders::float8, $4::float8))
                                  AS score,
                              p.together::float8 * $3 / (ia.orders::float8 * ib.orders) AS lift,
                              row_number() OVER (PARTITION BY p.item
                                                 ORDER BY p.together / power(ib.orders::float8, $4::float8) DESC,
                                                          p.other) AS n
                       FROM pairs p JOIN rec_items ia ON ia.item = p.item JOIN rec_items ib ON ib.item = p.other)
                   SELECT ia.sku, ib.sku, r.together, r.score, r.lift
                   FROM ranked r JOIN rec_items ia ON ia.item = r.item JOIN rec_items ib ON ib.item = r.other
                   WHERE r.n <= $2""",
                min_support, top_k, float(total or 0), float(damping))
            await conn.execute("DELETE FROM product_popularity")
            # Orders per SKU, per region and over all regions ('') in one pass.
            popular = await conn.execute(
                """INSERT INTO product_popularity (region, sku, orders)
                   SELECT COALESCE(region, ''), sku, count(*) FROM order_lines
                   WHERE ordered_at >= $1
                   GROUP BY GROUPING SETS ((region, sku), (sku))
                   HAVING region IS NULL OR region <> ''""", since)
        return int(pairs.split()[-1]), int(popular.split()[-1])

    # -- the half at render time ---------------------------------------------------------------------

    async def for_profiles(self, profile_ids: Sequence[uuid.UUID], *, now: datetime, per_kind: int = 12,
                           activity_days: int = 90) -> dict[uuid.UUID, dict[str, list[RecommendedProduct]]]:
        """The recommendations of each profile, per kind (a kind with nothing to offer is an empty list)."""
        out: dict[uuid.UUID, dict[str, list[RecommendedProduct]]] = {
            pid: {kind: [] for kind in KINDS} for pid in profile_ids}
        if not profile_ids:
            return out
        rows = await self.store.fetch(_FOR_PROFILES, list(profile_ids), now - timedelta(days=activity_days),
                                      per_kind)
        for r in rows:
            out[r["profile_id"]][r["kind"]].append(RecommendedProduct(
                sku=r["sku"], kind=r["kind"], score=float(r["score"]), name=r["name"], category=r["category"],
                brand=r["brand"], price=r["price"], old_price=r["old_price"], currency=r["currency"],
                image_url=r["image_url"], product_url=r["product_url"], quantity=r["quantity"]))
        return out

    async def pairs_of(self, sku: str) -> list[dict[str, Any]]:
        """The stored partners of ``sku``, best first (admin, tests)."""
        rows = await self.store.fetch(
            "SELECT other_sku, together, score, lift FROM product_pairs WHERE sku = $1 ORDER BY score DESC", sku)
        return [dict(r) for r in rows]


_FOR_PROFILES = """
WITH act AS (
    SELECT e.profile_id, e.type, e.occurred_at, e.body->'properties' AS props
    FROM events e
    WHERE e.profile_id = ANY($1::uuid[]) AND e.occurred_at >= $2
      AND e.type IN ('product.viewed', 'cart.updated', 'order.placed')),
lines AS (
    SELECT a.profile_id, a.type, a.occurred_at, item->>'sku' AS sku,
           CASE WHEN (item->>'quantity') ~ '^[0-9]+(\\.[0-9]+)?$' THEN (item->>'quantity')::numeric END AS quantity
    FROM act a CROSS JOIN jsonb_array_elements(
        CASE WHEN jsonb_typeof(a.props->'items') = 'array' THEN a.props->'items' ELSE '[]'::jsonb END) AS item
    WHERE a.type IN ('cart.updated', 'order.placed') AND item->>'sku' IS NOT NULL),
bought AS (SELECT profile_id, sku, max(occurred_at) AS at FROM lines WHERE type = 'order.placed' GROUP BY 1, 2),
last_order AS (SELECT profile_id, max(occurred_at) AS at FROM act WHERE type = 'order.placed' GROUP BY 1),
last_cart AS (SELECT profile_id, max(occurred_at) AS at FROM act WHERE type = 'cart.updated' GROUP BY 1),
cart AS (
    SELECT l.profile_id, l.sku, max(l.occurred_at) AS at, max(l.quantity) AS quantity
    FROM lines l JOIN last_cart c ON c.profile_id = l.profile_id AND c.at = l.occurred_at
    LEFT JOIN last_order o ON o.profile_id = l.profile_id
    WHERE l.type = 'cart.updated' AND (o.at IS NULL OR o.at < c.at)
    GROUP BY 1, 2),
viewed AS (
    SELECT v.profile_id, v.sku, v.at FROM (
        SELECT profile_id, props->>'sku' AS sku, max(occurred_at) AS at FROM act
        WHERE type = 'product.viewed' AND props->>'sku' IS NOT NULL GROUP BY 1, 2) v
    LEFT JOIN bought b ON b.profile_id = v.profile_id AND b.sku = v.sku
    WHERE b.at IS NULL OR b.at < v.at),
seeds AS (
    SELECT profile_id, sku, max(weight) AS weight FROM (
        SELECT profile_id, sku, 3.0 AS weight FROM cart
        UNION ALL SELECT b.profile_id, b.sku, 2.0 FROM bought b
                  JOIN last_order o ON o.profile_id = b.profile_id AND o.at = b.at
        UNION ALL SELECT profile_id, sku, 1.0 FROM viewed) s
    GROUP BY 1, 2),
region AS (
    SELECT profile_id, COALESCE(golden->>'region', golden->>'city', '') AS region
    FROM profiles WHERE profile_id = ANY($1::uuid[])),
favourite AS (
    SELECT profile_id, category FROM (
        SELECT s.profile_id, p.category,
               row_number() OVER (PARTITION BY s.profile_id ORDER BY sum(s.weight) DESC, p.category) AS n
        FROM (SELECT profile_id, sku, 1.0 AS weight FROM bought UNION ALL SELECT profile_id, sku, weight FROM seeds) s
        JOIN products p ON p.sku = s.sku WHERE p.category IS NOT NULL
        GROUP BY s.profile_id, p.category) f
    WHERE n = 1),
cand AS (
    SELECT profile_id, 'viewed' AS kind, sku, extract(epoch FROM at)::float8 AS score, NULL::numeric AS quantity
    FROM viewed
    UNION ALL
    SELECT profile_id, 'cart', sku, extract(epoch FROM at)::float8, quantity FROM cart
    UNION ALL
    SELECT s.profile_id, 'bought_together', pp.other_sku, sum(s.weight * pp.score), NULL
    FROM seeds s JOIN product_pairs pp ON pp.sku = s.sku GROUP BY s.profile_id, pp.other_sku
    UNION ALL
    SELECT s.profile_id, 'similar', p2.sku, max(s.weight) * 1e9 + COALESCE(max(pop.orders), 0), NULL
    FROM seeds s
    JOIN products p1 ON p1.sku = s.sku AND p1.category IS NOT NULL AND p1.price IS NOT NULL
    JOIN products p2 ON p2.category = p1.category AND p2.sku <> p1.sku
         AND p2.price BETWEEN p1.price * 0.7 AND p1.price * 1.3
    LEFT JOIN product_popularity pop ON pop.region = '' AND pop.sku = p2.sku
    WHERE s.weight <> 2.0
    GROUP BY s.profile_id, p2.sku
    UNION ALL
    SELECT r.profile_id, 'popular', pop.sku, max(pop.orders + CASE WHEN pop.region = r.region THEN 1e9 ELSE 0 END), NULL
    FROM region r
    JOIN product_popularity pop ON pop.region IN (r.region, '')
    JOIN products p ON p.sku = pop.sku
    LEFT JOIN favourite f ON f.profile_id = r.profile_id
    WHERE f.category IS NULL OR p.category = f.category
    GROUP BY r.profile_id, pop.sku),
kept AS (
    SELECT c.profile_id, c.kind, c.sku, c.score, c.quantity, p.name, p.category, p.brand, p.price, p.old_price,
           p.currency, p.image_url, p.product_url,
           row_number() OVER (PARTITION BY c.profile_id, c.kind ORDER BY c.score DESC, c.sku) AS n
    FROM cand c
    JOIN products p ON p.sku = c.sku
    LEFT JOIN region r ON r.profile_id = c.profile_id
    WHERE (c.kind = 'cart' OR (p.active AND (p.availability = '{}'::jsonb
                OR COALESCE((p.availability->>COALESCE(r.region, ''))::numeric, p.stock_total) > 0)))
      AND (c.kind IN ('cart', 'viewed') OR NOT EXISTS (
                SELECT 1 FROM bought b WHERE b.profile_id = c.profile_id AND b.sku = c.sku
                UNION ALL SELECT 1 FROM cart k WHERE k.profile_id = c.profile_id AND k.sku = c.sku))
      AND (c.kind = 'cart' OR NOT p.durable OR NOT EXISTS (
                SELECT 1 FROM bought b JOIN products bp ON bp.sku = b.sku
                WHERE b.profile_id = c.profile_id AND bp.durable AND bp.category = p.category)))
SELECT * FROM kept WHERE n <= $3 ORDER BY profile_id, kind, n
"""


def _literal(at: datetime) -> str:
    """A timestamp as an SQL literal: CREATE TABLE ... AS takes no parameters (an aware datetime formats
    as ISO 8601 with its offset, digits and signs only)."""
    return f"'{at.isoformat()}'::timestamptz"
