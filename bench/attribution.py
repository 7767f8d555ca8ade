"""The scenario report's attribution statement on a realistic month of history, and the HTML report.

    python bench/attribution.py [--profiles 100000] [--keep]

A scratch database next to ``$CDP_HUB_POSTGRES_DSN`` (default: the test server) is migrated and seeded
set-wise with a month of one scenario's history, shaped like the retailer's cart reminder:

    every profile   experiment.assigned (cart_reminder_2026q2: 10% control, variants a and b half each of
                    the rest), a few background events (views, carts) that attribution must skip
    variants        message.sent; 97% delivered; 40% of those opened (b: 45%); 10% clicked
                    channel email (b: a quarter on sms)
    control         message.decided decision=control
    orders          order.paid 1-9 days after the message (7 of 9 inside the 7-day window): 4.6% of the
                    control group, 5.7% of a, 6.5% of b, amounts 500-20,500; 3% of customers also bought
                    two days before the message (not conversions)

then ``scenario_report`` runs over it (the one SQL statement and the statistics) and the HTML report is
written. Prints the events seeded, the report's seconds, each arm's figures, the HTML's seconds and size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdp_hub.reports.html import write_html  # noqa: E402
from cdp_hub.reports.scenarios import scenario_report  # noqa: E402
from cdp_hub.store import Store  # noqa: E402

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
START = datetime(2026, 5, 1, tzinfo=UTC)

# One INSERT per event kind over generate_series; the arm and every coin flip come from md5 of the profile
# number, so a run is reproducible. u(n, salt) is a uniform number in [0, 1).
_SEED = """
WITH p AS (
    SELECT g, md5('bench:' || g)::uuid AS pid,
           ('x' || substr(md5('arm:' || g), 1, 8))::bit(32)::bigint / 4294967296.0 AS arm_u,
           ('x' || substr(md5('flip:' || g), 1, 8))::bit(32)::bigint / 4294967296.0 AS u1,
           ('x' || substr(md5('flip2:' || g), 1, 8))::bit(32)::bigint / 4294967296.0 AS u2,
           ('x' || substr(md5('flip3:' || g), 1, 8))::bit(32)::bigint / 4294967296.0 AS u3,
           $2::timestamptz + (g % 28) * interval '1 day' + (g % 86400) * interval '1 second' AS at
      FROM generate_series(1, $1) AS g
), arms AS (
    SELECT *, CASE WHEN arm_u < 0.1 THEN 'control' WHEN arm_u < 0.55 THEN 'a' ELSE 'b' END AS arm FROM p
), rows AS (
    SELECT pid, at - interval '1 minute' AS at, 'experiment.assigned' AS type,
           jsonb_build_object('experiment', 'cart_reminder_2026q2', 'scenario', 'cart_reminder', 'variant', arm,
                              'profile_key', pid::text) AS props FROM arms
    UNION ALL
    SELECT pid, at, 'message.decided', jsonb_build_object('scenario', 'cart_reminder', 'decision', 'control',
           'reason', 'control group', 'channel', 'email') FROM arms WHERE arm = 'control'
    UNION ALL
    SELECT pid, at + s.n * interval '10 minutes', 'message.' || s.stage,
           jsonb_build_object('scenario', 'cart_reminder', 'message_id', md5('m:' || pid::text),
                              'channel', CASE WHEN arm = 'b' AND u2 < 0.25 THEN 'sms' ELSE 'email' END)
      FROM arms JOIN (VALUES (0, 'sent'), (1, 'delivered'), (2, 'opened'), (3, 'clicked')) AS s(n, stage) ON true
     WHERE arm <> 'control'
       AND (s.stage = 'sent'
            OR (s.stage = 'delivered' AND u1 < 0.97)
            OR (s.stage = 'opened' AND u1 < 0.97 * CASE WHEN arm = 'b' THEN 0.45 ELSE 0.40 END)
            OR (s.stage = 'clicked' AND u1 < 0.097))
    UNION ALL
    SELECT pid, at + (1 + (g % 9)) * interval '1 day', 'order.paid',
           jsonb_build_object('order_id', 'o' || g, 'total', (500 + (g * 7919) % 20000)::text, 'currency', 'RUB')
      FROM arms
     WHERE u3 < CASE arm WHEN 'control' THEN 0.046 WHEN 'a' THEN 0.057 ELSE 0.065 END
       AND (arm = 'control' OR u1 < 0.97)
    UNION ALL
    SELECT pid, at - interval '2 days', 'order.paid',
           jsonb_build_object('order_id', 'early' || g, 'total', '900', 'currency', 'RUB')
      FROM arms WHERE u1 > 0.97
    UNION ALL
    SELECT pid, at - interval '3 hours', t.type, jsonb_build_object('sku', 'sku' || (g % 500))
      FROM arms JOIN (VALUES ('product.viewed'), ('cart.updated'), ('product.viewed')) AS t(type) ON true
), ids AS (
    SELECT gen_random_uuid() AS id, * FROM rows
), stored AS (
    INSERT INTO event_ids (event_id, occurred_at) SELECT id, at FROM ids RETURNING event_id
)
INSERT INTO events (event_id, occurred_at, profile_id, type, source, source_record_id, received_at, body)
SELECT id, at, pid, type, 'bench', id::text, at,
       jsonb_build_object('event_id', id, 'type', type, 'source', 'bench', 'occurred_at', at,
                          'identities', jsonb_build_array(jsonb_build_object('kind', 'crm_id', 'value', pid::text)),
                          'properties', props, 'profile_id', pid)
  FROM ids
"""


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(profiles: int, keep: bool) -> None:
    name = f"bench_attribution_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        async with Store(_with_db(DSN, name), pool_size=2) as store:
            await store.migrate()
            started = time.perf_counter()
            await store.execute(_SEED, profiles, START)
            await store.execute("ANALYZE")
            seeded = time.perf_counter() - started
            events = await store.fetchval("SELECT count(*) FROM events")
            print(f"seeded {events:,} events for {profiles:,} profiles in {seeded:.1f}s")
            started = time.perf_counter()
            report = await scenario_report(store, since=START, until=START + timedelta(days=30),
                                           window=timedelta(days=7), conversion_events=["order.paid"])
            took = time.perf_counter() - started
            print(f"report (one SQL statement + statistics): {took:.2f}s")
            print(report.as_table())
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                path = write_html(report, Path(folder) / "report.html")
                size = path.stat().st_size
            print(f"HTML report: {time.perf_counter() - started:.2f}s, {size / 1024:.0f} KiB")
    finally:
        if not keep:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    asyncio.run(run(args.profiles, args.keep))


if __name__ == "__main__":
    main()
