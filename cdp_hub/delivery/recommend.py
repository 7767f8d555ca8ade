"""Recommendations in messages: loaded for a batch at once, called from templates, refreshed on a schedule.

    delivery batch ─▶ which intents' templates call recommend() ─▶ RecommendationRepository.for_profiles
        (one statement for all their profiles) ─▶ template context ``_recommendations`` (kind -> products)
        ─▶ {{ recommend("bought_together", limit=4) }} ─▶ | product_blocks (e-mail) / | product_list (SMS)

    cdp-hub recommend refresh  (cron, daily; recommend_cli.py): events ─▶ order_lines ─▶ product_pairs, product_popularity

The SQL and the filters are in :mod:`cdp_hub.store.recommendations`; this module only moves the results to
templates, as plain dicts (templates run in an immutable sandbox and see no objects of ours).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cdp_hub.config import Settings
from cdp_hub.store.recommendations import KINDS, RecommendationRepository, RecommendedProduct, RefreshResult

__all__ = ["KINDS", "pick", "refresh", "template_recommendations"]

ProductDict = dict[str, Any]


def template_recommendations(
        by_kind: Mapping[str, Sequence[RecommendedProduct]]) -> dict[str, list[ProductDict]]:
    """What templates get for one profile: every kind, each a list (empty when there is nothing to offer)."""
    return {kind: [_plain(p) for p in by_kind.get(kind, ())] for kind in KINDS}


def _plain(product: RecommendedProduct) -> ProductDict:
    return {k: v for k, v in asdict(product).items() if v is not None}


def pick(products: Sequence[ProductDict], *, limit: int = 4, max_price: Any = None,
         min_price: Any = None) -> list[ProductDict]:
    """The first ``limit`` products whose price lies in ``[min_price, max_price]`` (either bound optional)."""
    low = Decimal(str(min_price)) if min_price is not None else None
    high = Decimal(str(max_price)) if max_price is not None else None
    out = []
    for product in products:
        price = product.get("price")
        if (low is not None or high is not None) and price is None:
            continue
        if low is not None and Decimal(str(price)) < low:
            continue
        if high is not None and Decimal(str(price)) > high:
            continue
        out.append(product)
        if len(out) >= max(0, int(limit)):
            break
    return out


async def refresh(repo: RecommendationRepository, settings: Settings, *, now: datetime | None = None,
                  top_k: int = 20) -> RefreshResult:
    """Bring order lines up to date, then rebuild "bought together" and "popular" (see the store module)."""
    since = (now or datetime.now(UTC)) - timedelta(days=settings.recommend_window_days)
    result = RefreshResult()
    started = time.perf_counter()
    result.order_lines = await repo.sync_order_lines(since=since)
    result.timings["order_lines"] = time.perf_counter() - started
    started = time.perf_counter()
    result.pairs, result.popular = await repo.rebuild(since=since, min_support=settings.recommend_min_support,
                                                      top_k=top_k, damping=settings.recommend_damping)
    result.timings["pairs_and_popular"] = time.perf_counter() - started
    return result
