"""Segment recomputation in PostgreSQL vs a naive per-profile evaluation in Python, in the same run.

    python bench/segments.py [--profiles 200000] [--events 1000000] [--sample 2000] [--keep]

Builds a scratch database next to ``$CDP_HUB_POSTGRES_DSN`` (default: the test server) with ``--profiles``
profiles (golden: city, birth date, e-mail consent; one e-mail identity each) and ``--events`` events over
two years (order.paid with a total, cart.updated, product.viewed, spread at random over the profiles),
generated in SQL. Then, for three segments (an aggregate over a window, a "last occurrence" segment and a
mix of traits and a count):

  sql            the compiled member query alone (one statement), and a full ``SegmentEngine.recompute``:
                 the diff, ``segment.entered`` events for every member (in-process bus), the membership
                 and the Redis cache (fakeredis); then a second recompute with nothing changed
  naive          per profile: fetch its golden record and its events, evaluate ``Segment.evaluate`` in
                 Python (what a per-profile rules engine does), on a random sample of ``--sample``
                 profiles; extrapolated to all profiles

Prints seconds, profiles/s and the ratio naive/sql, and checks that both agree on the sample.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cdp_hub.config import Settings
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import segment_engine
from cdp_hub.segments import EventFact, Segment, compile_segment, parse_segment

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

SEGMENTS: list[dict[str, Any]] = [
    {"id": "vip", "all": [{"aggregate": "sum", "event": "order.paid", "property": "total", "within": "365d",
                           "op": "gte", "value": 50000}]},
    {"id": "lapsed_customers", "all": [{"aggregate": "last", "event": "order.paid", "older_than": "90d"}]},
    {"id": "moscow_active_subscribers", "all": [
        {"trait": "city", "op": "in", "value": ["Москва", "Санкт-Петербург"]},
        {"trait": "consent.email", "op": "eq", "value": "opted_in"},
        {"aggregate": "count", "event": "product.viewed", "within": "30d", "op": "gte", "value": 1},
    ]},
]

# (statement, which of profiles/events/now it binds as $1, $2, $3)
GENERATE: list[tuple[str, int]] = [
    ("SELECT setseed(0.42)", 0),
    ("""INSERT INTO profiles (profile_id, golden)
       SELECT md5('p' || i)::uuid,
              jsonb_build_object(
                'city', (ARRAY['Москва','Санкт-Петербург','Казань','Новосибирск','Тверь'])[1 + i % 5],
                'birth_date', to_char(date '1950-01-01' + (i * 37) % 20000, 'YYYY-MM-DD'),
                'consent', jsonb_build_object('email', CASE WHEN i % 3 = 0 THEN 'opted_out' ELSE 'opted_in' END))
         FROM generate_series(1, $1::int) AS i""", 1),
    ("""INSERT INTO identities (kind, value, profile_id)
       SELECT 'email', 'c' || i || '@example.ru', md5('p' || i)::uuid FROM generate_series(1, $1::int) AS i""", 1),
    ("""INSERT INTO events (event_id, occurred_at, profile_id, type, source, source_record_id, received_at, body)
       SELECT md5('e' || j)::uuid, x.at, md5('p' || x.p)::uuid, x.t, 'shop', 'e' || j, x.at,
              jsonb_build_object('type', x.t, 'source', 'shop', 'occurred_at', x.at,
                                 'properties', jsonb_build_object('order_id', 'o' || j,
                                                                  'total', round((random() * 20000)::numeric, 2)::text))
         FROM generate_series(1, $2::int) AS j,
              LATERAL (SELECT $3::timestamptz - random() * interval '730 days' AS at,
                              1 + floor(random() * $1::int)::int AS p,
                              (ARRAY['order.paid','order.paid','cart.updated','product.viewed','product.viewed'])
                                [1 + floor(random() * 5)::int] AS t,
                              j AS jj) AS x""", 3),
    ("ANALYZE profiles", 0), ("ANALYZE identities", 0), ("ANALYZE events", 0),
]


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def naive(hub: Hub, segment: Segment, sample: list[Any]) -> tuple[float, set[Any]]:
    """Per profile: two queries and a Python evaluation. Returns seconds and the members in the sample."""
    inside: set[Any] = set()
    started = time.perf_counter()
    for pid in sample:
        golden = await hub.store.fetchval("SELECT golden FROM profiles WHERE profile_id = $1", pid)
        rows = await hub.store.fetch(
            "SELECT type, occurred_at, body -> 'properties' AS properties FROM events WHERE profile_id = $1", pid)
        facts = [EventFact(r["type"], r["occurred_at"], r["properties"] or {}) for r in rows]
        if segment.evaluate(golden or {}, facts, NOW):
            inside.add(pid)
    return time.perf_counter() - started, inside


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    name = f"cdp_hub_bench_segments_{os.getpid()}"
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        with TemporaryDirectory() as tmp:
            settings = Settings(postgres_dsn=_with_db(DSN, name), bus="memory", redis_url="fakeredis://",
                                data_dir=Path(tmp))
            async with Hub(settings, metrics=Metrics()) as hub:
                hub.clock = lambda: NOW
                print(f"generating {args.profiles:,} profiles and {args.events:,} events in PostgreSQL ...")
                t0 = time.perf_counter()
                for sql, n_params in GENERATE:
                    await hub.store.execute(sql, *[args.profiles, args.events, NOW][:n_params])
                print(f"  generated in {time.perf_counter() - t0:.1f} s\n")

                segments = [parse_segment(s, origin="bench") for s in SEGMENTS]
                engine = segment_engine(hub, segments)
                all_ids = [r["profile_id"] for r in await hub.store.fetch("SELECT profile_id FROM profiles")]
                sample = random.Random(7).sample(all_ids, min(args.sample, len(all_ids)))
                header = (f"{'segment':<26} {'members':>8} {'query s':>8} {'recompute s':>11} {'rerun s':>8} "
                          f"{'naive s/sample':>14} {'naive s (all, est.)':>19} {'÷recompute':>10} {'÷rerun':>7}")
                print(header)
                print("-" * len(header))
                for segment in segments:
                    sql, params = compile_segment(segment, NOW).members_sql()
                    t0 = time.perf_counter()
                    member_rows = await hub.store.fetch(sql, *params)
                    query_s = time.perf_counter() - t0
                    in_sql = {r["profile_id"] for r in member_rows}

                    t0 = time.perf_counter()
                    first = await engine.recompute(segment.id)
                    recompute_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    second = await engine.recompute(segment.id)
                    rerun_s = time.perf_counter() - t0
                    assert first.entered == len(in_sql) and (second.entered, second.exited) == (0, 0)

                    naive_s, in_naive = await naive(hub, segment, sample)
                    sample_sql = in_sql.intersection(sample)
                    if in_naive != sample_sql:
                        print(f"MISMATCH in {segment.id}: naive {len(in_naive)} vs sql {len(sample_sql)}")
                        return 1
                    naive_all = naive_s / len(sample) * len(all_ids)
                    print(f"{segment.id:<26} {len(in_sql):>8,} {query_s:>8.2f} {recompute_s:>11.2f} {rerun_s:>8.2f} "
                          f"{naive_s:>14.2f} {naive_all:>19.1f} {naive_all / recompute_s:>9.1f}x {naive_all / rerun_s:>6.1f}x")
                print(f"\nnaive: {len(sample):,} sampled profiles, per profile 2 queries + Segment.evaluate; "
                      f"its members agree with SQL on the sample.\nrecompute: diff + segment.entered for every "
                      f"member (published to the in-process bus) + membership + cache; rerun: nothing changed.\n"
                      f"ratios = naive (extrapolated to {len(all_ids):,} profiles) / recompute, and / rerun.")
    finally:
        if not args.keep:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
