"""Fuzzy matching over the store: a full run against an incremental run on 1% changed profiles, in PostgreSQL.

    python bench/fuzzy_store_scale.py [--dsn postgresql://postgres@127.0.0.1:15432/postgres] [--profiles 160000]
                                      [--changed 0.01] [--seed 3] [--repeat 1]

Creates a scratch database (dropped at the end), loads ``--profiles`` generated customers
(``bench/fuzzy_scale.py``'s generator: golden records plus phone and e-mail identities) by COPY, and runs
``suggest_merges(store, config, incremental=True)``: the first is a full run (it reads every live profile,
matches, stores the suggestions and writes the matcher's index); then ``--changed`` of the profiles get a new
``updated_at`` (an edit that left the values as they were, so a full run's pairs stay the reference) and the
next run is incremental (the changed profiles prepared, their neighbourhood read from ``matcher_keys`` /
``matcher_profiles``). Prints both times, the ratio, and whether the incremental run stored exactly the full
run's suggestions that involve a changed profile. ``--repeat`` touches and runs the incremental again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from fuzzy_scale import people  # noqa: E402

from cdp_hub.resolver.fuzzy import default_config, suggest_merges  # noqa: E402
from cdp_hub.store import Store, open_store  # noqa: E402

_GOLDEN = {"given_name": "first_name", "surname": "last_name", "middle_name": "middle_name", "birth_date": "birth_date",
           "city": "city"}


async def run(args: argparse.Namespace) -> int:
    scratch = f"cdp_hub_fuzzy_bench_{os.getpid()}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{scratch}"')
    base, _, _ = args.dsn.rpartition("/")
    try:
        store = await open_store(f"{base}/{scratch}")
        try:
            return await _bench(store, args)
        finally:
            await store.stop()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
        await admin.close()


async def _bench(store: Store, args: argparse.Namespace) -> int:
    records = people(args.profiles, args.seed)
    ids = [uuid.uuid4() for _ in records]
    profiles = [(pid, {trait: getattr(r, name) for name, trait in _GOLDEN.items() if getattr(r, name)})
                for pid, r in zip(ids, records, strict=True)]
    owner: dict[tuple[str, str], uuid.UUID] = {}  # an identity belongs to one profile: the first one keeps it
    for pid, r in zip(ids, records, strict=True):
        for kind in ("phone", "email"):
            value = getattr(r, kind)
            if value:
                owner.setdefault((kind, value), pid)
    identities = [(kind, value, pid) for (kind, value), pid in owner.items()]
    t0 = time.perf_counter()
    async with store.pool.acquire() as conn:
        for start in range(0, len(profiles), 10_000):
            chunk = profiles[start : start + 10_000]
            await conn.execute("INSERT INTO profiles (profile_id, golden) SELECT * FROM unnest($1::uuid[], $2::jsonb[])",
                               [p for p, _ in chunk], [g for _, g in chunk])
        await conn.copy_records_to_table("identities", columns=("kind", "value", "profile_id"), records=identities)
        await conn.execute("ANALYZE profiles")
        await conn.execute("ANALYZE identities")
    print(f"loaded {len(profiles):,} profiles and {len(identities):,} identities in {time.perf_counter() - t0:.1f} s")
    config = default_config()
    t0 = time.perf_counter()
    full = await suggest_merges(store, config, incremental=True)
    full_seconds = time.perf_counter() - t0
    assert full.run is not None and full.compared is None
    index_rows = await store.fetchval("SELECT count(*) FROM matcher_keys")
    print(f"full run: {full.profiles:,} profiles, {full.candidate_pairs:,} candidate pairs, {full.suggestions:,} "
          f"suggestions in {full_seconds:.1f} s (matching {full.run.seconds['total']:.1f} s; the rest reading the "
          f"profiles, storing suggestions and the index: {index_rows:,} key rows)")
    rng = random.Random(args.seed + 1)
    times: list[float] = []
    for _ in range(args.repeat):
        changed = rng.sample(ids, max(1, int(len(ids) * args.changed)))
        await store.execute("UPDATE profiles SET updated_at = now() WHERE profile_id = ANY($1::uuid[])", changed)
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        inc = await suggest_merges(store, config, incremental=True)
        times.append(time.perf_counter() - t0)
        assert inc.run is not None and inc.compared == len(changed)
        touched = {str(p) for p in changed}
        wanted = {(p.a, p.b) for p in full.run.pairs if p.a in touched or p.b in touched}
        found = {(p.a, p.b) for p in inc.run.pairs}
        print(f"incremental: {len(changed):,} changed, neighbourhood {inc.run.neighbourhood:,} profiles, "
              f"{inc.candidate_pairs:,} candidate pairs, {times[-1]:.2f} s; full run's suggestions touching a "
              f"changed profile found: {len(wanted & found):,} of {len(wanted):,}, other: {len(found - wanted):,}")
        print(f"  phases: {', '.join(f'{k} {v:.3f}' for k, v in inc.run.seconds.items())}; suggest_merges "
              f"outside the matcher (previous run, changed profiles, storing the pairs): "
              f"{times[-1] - inc.run.seconds['total']:.3f} s")
    median = statistics.median(times)
    print(f"incremental median {median:.2f} s = {100 * median / full_seconds:.1f}% of the full run (goal <= 5%)")
    print(f"  (load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:15432/postgres",
                    help="a database to connect to for creating and dropping the scratch database")
    ap.add_argument("--profiles", type=int, default=160_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    logging.getLogger("cdp_hub.resolver.fuzzy").setLevel(logging.ERROR)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
