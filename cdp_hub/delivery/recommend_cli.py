"""``cdp-hub recommend ...``: rebuild the recommendation tables, show what a customer would be offered.

    recommend refresh [--top N]     events ─▶ order_lines ─▶ product_pairs, product_popularity (run daily)
    recommend show PROFILE_ID       each kind's products for one profile, as templates would get them
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, store_for
from cdp_hub.config import Settings
from cdp_hub.delivery.recommend import refresh
from cdp_hub.store.recommendations import RecommendationRepository

__all__ = ["commands"]


commands: list[click.Command] = []
recommend = group(commands, "recommend", "product recommendations: refresh, show a customer's")


@command(recommend, "refresh", help="rebuild order lines, 'bought together' and 'popular' from the events")
@click.option("--top", type=int, default=20, show_default=True, help="partners kept per product")
@json_option("print the counts and timings as JSON")
async def cmd_refresh(args: Args, settings: Settings) -> int:
    async with store_for(settings) as store:
        result = await refresh(RecommendationRepository(store), settings, top_k=args.top)
    if args.json:
        print_json({"order_lines": result.order_lines, "pairs": result.pairs, "popular": result.popular,
                    "timings": result.timings})
        return 0
    print(f"order lines updated: {result.order_lines}; bought-together pairs: {result.pairs}; "
          f"popular rows: {result.popular}; took "
          + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    return 0


@command(recommend, "show", help="what templates would get for profile PROFILE_ID")
@click.argument("profile_id", type=click.UUID)
@click.option("--limit", type=int, default=4, show_default=True, help="products shown per kind")
@json_option("print the products of each kind as JSON")
async def cmd_show(args: Args, settings: Settings) -> int:
    async with store_for(settings) as store:
        recs = await RecommendationRepository(store).for_profiles([args.profile_id], now=datetime.now(UTC))
    if args.json:
        print_json({kind: [{"sku": p.sku, "name": p.name, "price": p.price} for p in products[:args.limit]]
                    for kind, products in recs[args.profile_id].items()})
        return 0
    for kind, products in recs[args.profile_id].items():
        shown = ", ".join(f"{p.sku} {p.name or ''} {p.price if p.price is not None else ''}".strip()
                          for p in products[:args.limit])
        print(f"{kind:<16} {shown or '(nothing)'}")
    return 0
