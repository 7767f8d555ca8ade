"""Attribution over the warehouse: what each scenario, campaign, variant and channel sent and earned, set-wise.

    events (one statement, read only; the resolver stores every receipt, decision and order there), read in
    one pass: receipts, assignments, control decisions and conversions, each event's fields extracted once
        message.sent/delivered/opened/clicked in [since, until)   ─▶ per message: its scenario, channel, profile,
                                                                      which stages it reached, when it reached
                                                                      the customer (first delivered or opened)
        experiment.assigned (any time before until)              ─▶ one arm per scenario and profile: the
                                                                      assignment hashed from the profile's own id
                                                                      first (a merge brings the merged-away
                                                                      profile's along), else the earliest
        message.decided decision=control in [since, until)       ─▶ control exposures (when the message would
                                                                      have gone)
        conversion events (settings.conversion_events)           ─▶ one row per profile and order (order_id, else
                                                                      the event): first time, amount (total)
    exposures ⋈ conversions on profile, exposure < conversion <= exposure + window
        ─▶ per (scenario, variant, channel) and profile: converted?, revenue (each order once)
        ─▶ per (scenario, variant, channel): sent, delivered, opened, clicked (messages), recipients, converted,
           revenue, sum of squared revenue per recipient (for the Welch interval)

Every variant has a row per channel and one over all its channels (``*``: a profile reached on two channels
counts once); control rows have the variant ``control`` and no channel; a message outside an experiment has
the variant ``none``. Statistics (rates, uplift, intervals) are computed from these sums by
:mod:`cdp_hub.reports.stats`. Plain SQL that Greenplum runs too: CTEs, ``row_number()``, ``CASE`` sums
instead of ``FILTER``, no LATERAL; an amount that is not a number (a hostile source) counts as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from cdp_hub.store.db import Store

__all__ = ["ArmFigures", "AttributionRepository"]

_RECEIPTS = ("message.sent", "message.delivered", "message.opened", "message.clicked")

_ATTRIBUTION = """
WITH base AS (
    SELECT b.event_id, b.profile_id, b.type, b.occurred_at, b.p ->> 'scenario' AS scenario,
           b.p ->> 'message_id' AS message_id, coalesce(b.p ->> 'channel', '') AS channel,
           b.p ->> 'variant' AS variant, b.p ->> 'profile_key' AS profile_key, b.p ->> 'order_id' AS order_id,
           b.p ->> 'total' AS total
      FROM (SELECT e.event_id, e.profile_id, e.type, e.occurred_at, e.body -> 'properties' AS p
              FROM events e
             WHERE e.profile_id IS NOT NULL AND e.occurred_at < $2::timestamptz + $3::interval
               AND (e.type = ANY($4::text[]) OR e.type = ANY($5::text[]) OR e.type = 'experiment.assigned'
                    OR (e.type = 'message.decided' AND e.body -> 'properties' ->> 'decision' = 'control'))
           ) b
), receipts AS (
    SELECT profile_id, type, occurred_at, scenario, message_id, channel FROM base
     WHERE type = ANY($4::text[]) AND occurred_at >= $1 AND occurred_at < $2
       AND scenario IS NOT NULL AND message_id IS NOT NULL
), assigned AS (
    SELECT scenario, profile_id, variant FROM (
        SELECT scenario, profile_id, variant,
               row_number() OVER (
                   PARTITION BY scenario, profile_id
                   ORDER BY CASE WHEN profile_key = profile_id::text THEN 0 ELSE 1 END, occurred_at, event_id) AS rank
          FROM base WHERE type = 'experiment.assigned' AND occurred_at < $2
    ) ranked WHERE rank = 1
), per_message AS (
    SELECT r.scenario, r.profile_id, r.message_id, max(r.channel) AS channel,
           max(CASE WHEN r.type = 'message.sent' THEN 1 ELSE 0 END) AS sent,
           max(CASE WHEN r.type IN ('message.delivered', 'message.opened', 'message.clicked') THEN 1 ELSE 0 END)
               AS delivered,
           max(CASE WHEN r.type IN ('message.opened', 'message.clicked') THEN 1 ELSE 0 END) AS opened,
           max(CASE WHEN r.type = 'message.clicked' THEN 1 ELSE 0 END) AS clicked,
           min(CASE WHEN r.type IN ('message.delivered', 'message.opened') THEN r.occurred_at END) AS reached_at
      FROM receipts r
     GROUP BY r.scenario, r.profile_id, r.message_id
), arms AS (
    SELECT m.*, CASE WHEN a.variant IS NULL OR a.variant = 'control' THEN 'none' ELSE a.variant END AS variant
      FROM per_message m LEFT JOIN assigned a ON a.scenario = m.scenario AND a.profile_id = m.profile_id
), funnel AS (
    SELECT scenario, variant, channel, sum(sent) AS sent, sum(delivered) AS delivered, sum(opened) AS opened,
           sum(clicked) AS clicked
      FROM arms GROUP BY scenario, variant, channel
    UNION ALL
    SELECT scenario, variant, '*', sum(sent), sum(delivered), sum(opened), sum(clicked)
      FROM arms GROUP BY scenario, variant
), exposures AS (
    SELECT scenario, variant, channel, profile_id, reached_at AS at FROM arms WHERE reached_at IS NOT NULL
    UNION ALL
    SELECT scenario, variant, '*', profile_id, reached_at FROM arms WHERE reached_at IS NOT NULL
    UNION ALL
    SELECT scenario, 'control', '', profile_id, occurred_at FROM base
     WHERE type = 'message.decided' AND occurred_at >= $1 AND occurred_at < $2 AND scenario IS NOT NULL
), orders AS (
    SELECT c.profile_id, c.order_key, min(c.occurred_at) AS at, max(c.amount) AS amount FROM (
        SELECT profile_id, occurred_at, coalesce(order_id, event_id::text) AS order_key,
               CASE WHEN total ~ '^-?[0-9]{1,15}([.][0-9]{1,6})?$' THEN total::numeric ELSE 0 END AS amount
          FROM base WHERE type = ANY($5::text[]) AND occurred_at > $1
    ) c GROUP BY c.profile_id, c.order_key
), attributed AS (
    SELECT DISTINCT x.scenario, x.variant, x.channel, x.profile_id, o.order_key, o.amount
      FROM exposures x JOIN orders o ON o.profile_id = x.profile_id
                                     AND o.at > x.at AND o.at <= x.at + $3::interval
), recipients AS (
    SELECT DISTINCT scenario, variant, channel, profile_id FROM exposures
), per_recipient AS (
    SELECT r.scenario, r.variant, r.channel, r.profile_id, count(a.order_key) AS orders,
           coalesce(sum(a.amount), 0) AS revenue
      FROM recipients r LEFT JOIN attributed a
        ON a.scenario = r.scenario AND a.variant = r.variant AND a.channel = r.channel AND a.profile_id = r.profile_id
     GROUP BY r.scenario, r.variant, r.channel, r.profile_id
), outcomes AS (
    SELECT scenario, variant, channel, count(*) AS recipients,
           sum(CASE WHEN orders > 0 THEN 1 ELSE 0 END) AS converted, sum(orders) AS orders,
           sum(revenue) AS revenue, sum(revenue * revenue) AS revenue_squares
      FROM per_recipient GROUP BY scenario, variant, channel
)
SELECT coalesce(f.scenario, o.scenario) AS scenario, coalesce(f.variant, o.variant) AS variant,
       coalesce(f.channel, o.channel) AS channel,
       coalesce(f.sent, 0) AS sent, coalesce(f.delivered, 0) AS delivered, coalesce(f.opened, 0) AS opened,
       coalesce(f.clicked, 0) AS clicked, coalesce(o.recipients, 0) AS recipients,
       coalesce(o.converted, 0) AS converted, coalesce(o.orders, 0) AS orders,
       coalesce(o.revenue, 0) AS revenue, coalesce(o.revenue_squares, 0) AS revenue_squares
  FROM funnel f FULL OUTER JOIN outcomes o
    ON o.scenario = f.scenario AND o.variant = f.variant AND o.channel = f.channel
 ORDER BY 1, 2, 3
"""


@dataclass(frozen=True, slots=True)
class ArmFigures:
    """The sums of one (scenario, variant, channel): the funnel in messages, the outcome in recipients."""

    scenario: str
    variant: str
    channel: str
    sent: int
    delivered: int
    opened: int
    clicked: int
    recipients: int
    """Distinct profiles reached (delivered or opened; for the control group: decided control)."""
    converted: int
    """Of the recipients, those with a conversion within the window after being reached."""
    orders: int
    revenue: Decimal
    revenue_squares: Decimal
    """Sum over recipients of (their attributed revenue)², for the variance of revenue per recipient."""


class AttributionRepository:
    """Reads the ``events`` table for reports and the attribution job; writes nothing."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def figures(self, since: datetime, until: datetime, *, window: timedelta,
                      conversion_events: Sequence[str]) -> list[ArmFigures]:
        """The figures of every scenario and campaign with a message or a control decision in
        ``[since, until)``; conversions up to ``window`` after each exposure count (so a report on a period
        that ended less than a window ago still sees the late ones that have happened)."""
        rows = await self.store.fetch(_ATTRIBUTION, since, until, window, list(_RECEIPTS), list(conversion_events))
        return [ArmFigures(r["scenario"], r["variant"], r["channel"], int(r["sent"]), int(r["delivered"]),
                           int(r["opened"]), int(r["clicked"]), int(r["recipients"]), int(r["converted"]),
                           int(r["orders"]), Decimal(r["revenue"]), Decimal(r["revenue_squares"]))
                for r in rows]
