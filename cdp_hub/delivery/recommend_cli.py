"""``cdp-hub recommend ...``: rebuild the recommendation tables, show what a customer would be offered.

    recommend refresh [--top N]     events ─▶ order_lines ─▶ product_pairs, product_popularity (run daily)
    recommend show PROFILE_ID       each kind's products for one profile, as templates would get them
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime

from cdp_hub.cli.helpers import SubParsers, command_group, store_for
from cdp_hub.config import Settings
from cdp_hub.delivery.recommend import refresh
from cdp_hub.store.recommendations import RecommendationRepository

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    s = command_group(sub, "recommend", "product recommendations: refresh, show a customer's")
    r = s.add_parser("refresh", help="rebuild order lines, 'bought together' and 'popular' from the events")
    r.add_argument("--top", type=int, default=20, help="partners kept per product (default 20)")
    r.set_defaults(handler=cmd_refresh)
    sh = s.add_parser("show", help="what templates would get for a profile")
    sh.add_argument("profile_id", type=uuid.UUID)
    sh.add_argument("--limit", type=int, default=4)
    sh.set_defaults(handler=cmd_show)


async def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    async with store_for(settings) as store:
        result = await refresh(RecommendationRepository(store), settings, top_k=args.top)
    print(f"order lines updated: {result.order_lines}; bought-together pairs: {result.pairs}; "
          f"popular rows: {result.popular}; took "
          + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async with store_for(settings) as store:
        recs = await RecommendationRepository(store).for_profiles([args.profile_id], now=datetime.now(UTC))
    for kind, products in recs[args.profile_id].items():
        shown = ", ".join(f"{p.sku} {p.name or ''} {p.price if p.price is not None else ''}".strip()
                          for p in products[:args.limit])
        print(f"{kind:<16} {shown or '(nothing)'}")
    return 0
