"""Identity resolution quality on a realistic multi-source customer set with hidden truth, against PostgreSQL.

    python bench/identity_quality.py [--people 10000] [--seed 1] [--batch 500] [--rules RULES] [--no-fuzzy]

Generates the data set of ``tests/identity_data.py`` (five systems: shop, CRM, ERP/POS, loyalty, mobile
app; families sharing a phone, namesakes, e-mail changes, shared and junk e-mails and phones, store
phones typed at the till, app devices never logged in), then resolves it twice, each time on a fresh
database at ``$CDP_HUB_POSTGRES_DSN`` (default: the test server), created and dropped here:

* streaming: the resolver stage (``ResolverStage.handle`` → ``IdentityGraph``) in batches, in time order;
* bulk: ``BulkImporter`` over one JSON Lines file of canonical events per source system.

It reads each result back as a partition (event → live profile, following ``merged_into``) and prints
pairwise precision / recall / F1 against the truth, whether both partitions are identical, the
identifier-only ceiling (the best recall of any resolver that links exact normalized identifiers only),
the profiles that hold two account ids of one system (always a false merge here: each person has one
account per system), which shared values glued different people together, and the time. With fuzzy
matching on (the default), ``cdp_hub.resolver.fuzzy.match`` runs on the streaming result's profiles and
the precision of its suggestions is reported.

The resolver's quality is printed, not asserted: the bench measures, it does not gate.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# This checkout's package and the data set generator, whatever the interpreter's installed copy is.
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import asyncpg  # noqa: E402
import orjson  # noqa: E402
from identity_data import (  # noqa: E402
    ACCOUNT_KINDS,
    IdentityDataset,
    Scores,
    account_collisions,
    connected_by_identifiers,
    generate,
    identifier_ceiling,
    mixed_clusters,
    pairwise_scores,
    same_partition,
)

from cdp_hub.bus.base import Record  # noqa: E402
from cdp_hub.bus.memory import MemoryBus  # noqa: E402
from cdp_hub.config import Settings  # noqa: E402
from cdp_hub.hub import Hub  # noqa: E402
from cdp_hub.metrics import Metrics  # noqa: E402
from cdp_hub.pipeline.build import build_stage  # noqa: E402
from cdp_hub.resolver.bulk import BulkImporter  # noqa: E402
from cdp_hub.resolver.rules import IdentityRules, load_rules  # noqa: E402
from cdp_hub.store import Store  # noqa: E402

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
CATEGORY_NAMES = {
    "store_phone": "store phone typed at the till",
    "junk_email": "placeholder e-mail",
    "junk_phone": "placeholder phone",
    "family_phone": "family's shared phone",
    "shared_email": "e-mail typed by two people",
    "other": "other shared value",
}


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _hub(name: str) -> Hub:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{name}"')
    return Hub(Settings(postgres_dsn=_with_db(DSN, name), bus="memory", redis_url="fakeredis://",
                        data_dir=Path(tempfile.gettempdir()) / "cdp-bench"), bus=MemoryBus(), metrics=Metrics())


async def read_partition(store: Store, wanted: Mapping[str, Any]) -> dict[str, str]:
    """Event id -> the live profile holding it (``merged_into`` followed to the end)."""
    merged = {r["profile_id"]: r["merged_into"]
              for r in await store.fetch("SELECT profile_id, merged_into FROM profiles WHERE merged_into IS NOT NULL")}

    def live(pid: uuid.UUID) -> uuid.UUID:
        seen = 0
        while pid in merged and seen < 1000:
            pid = merged[pid]
            seen += 1
        return pid

    out = {}
    for r in await store.fetch("SELECT event_id, profile_id FROM events"):
        eid = str(r["event_id"])
        if eid in wanted:
            out[eid] = str(live(r["profile_id"]))
    return out


async def db_figures(store: Store) -> dict[str, Any]:
    """What the database says: live profiles, account ids held twice, conflicts, values blocked on the way."""
    held = await store.fetch(
        """SELECT kind, count(*) AS n FROM (
               SELECT i.profile_id, i.kind FROM identities i JOIN profiles p ON p.profile_id = i.profile_id
                WHERE p.merged_into IS NULL AND i.kind = ANY($1::text[])
                GROUP BY i.profile_id, i.kind HAVING count(*) > 1) s
            GROUP BY kind""", list(ACCOUNT_KINDS))
    conflicts = await store.fetch("SELECT rule, count(*) AS n FROM identity_conflicts GROUP BY rule ORDER BY rule")
    return {
        "profiles": int(await store.fetchval("SELECT count(*) FROM profiles WHERE merged_into IS NULL")),
        "held_twice": {r["kind"]: int(r["n"]) for r in held},
        "conflicts": {r["rule"]: int(r["n"]) for r in conflicts},
        "blocked": int(await store.fetchval("SELECT count(*) FROM blocked_identities")),
    }


async def run_streaming(ds: IdentityDataset, batch: int, rules: IdentityRules, fuzzy: bool) -> dict[str, Any]:
    name = f"bench_idq_{os.getpid()}_stream"
    hub = await _hub(name)
    values = [orjson.dumps(e) for e in ds.events]
    try:
        async with hub:
            stage = build_stage(hub, "resolver", rules=rules)
            await stage.setup()
            dead = 0
            started = time.perf_counter()
            for i in range(0, len(values), batch):
                out = await stage.handle([Record("cdp.events", 0, j, None, v)
                                          for j, v in enumerate(values[i:i + batch], i)])
                dead += len(out.dead)
            seconds = time.perf_counter() - started
            result = {"seconds": seconds, "dead": dead, "partition": await read_partition(hub.store, ds.person_of),
                      **await db_figures(hub.store)}
            if fuzzy:
                result["fuzzy"] = await fuzzy_section(hub.store, ds, result["partition"])
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result


async def run_bulk(ds: IdentityDataset, rules: IdentityRules) -> dict[str, Any]:
    name = f"bench_idq_{os.getpid()}_bulk"
    hub = await _hub(name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for source, events in ds.by_source().items():  # one export per system, canonical events
                path = Path(tmp) / f"{source}.jsonl"
                path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
                files.append(path)
            async with hub:
                started = time.perf_counter()
                summary = await BulkImporter(hub, source="migration", rules=rules).run(files)
                seconds = time.perf_counter() - started
                result = {"seconds": seconds, "dead": summary.dead, "summary": summary.as_dict(),
                          "partition": await read_partition(hub.store, ds.person_of), **await db_figures(hub.store)}
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return result


async def fuzzy_section(store: Store, ds: IdentityDataset, partition: Mapping[str, str]) -> dict[str, Any]:
    """The fuzzy matcher on the resolved profiles; a suggestion is right when both profiles are mostly the
    same person."""
    from cdp_hub.resolver.fuzzy import default_config, match
    from cdp_hub.resolver.fuzzy.store import load_records

    config = default_config()
    started = time.perf_counter()
    records = await load_records(store)
    run = match(records, config)
    seconds = time.perf_counter() - started
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for eid, pid in partition.items():
        counts[pid][ds.person_of[eid]] += 1
    main = {pid: c.most_common(1)[0][0] for pid, c in counts.items()}
    people = {p.person_id: p for p in ds.people}
    namesake = {frozenset(pair) for pair in ds.namesakes}

    def judge(pairs: list[Any]) -> dict[str, Any]:
        """Right, or why wrong: a generated namesake pair, one family, the same first and last name by
        chance, a profile that holds several people already, anything else."""
        why: Counter[str] = Counter()
        for p in pairs:
            a, b = main.get(p.a), main.get(p.b)
            if a is None or b is None:
                why["other"] += 1
            elif a == b:
                why["right"] += 1
            elif frozenset((a, b)) in namesake:
                why["namesakes"] += 1
            elif people[a].family is not None and people[a].family == people[b].family:
                why["same family"] += 1
            elif (people[a].first, people[a].last) == (people[b].first, people[b].last):
                why["same name by chance"] += 1
            elif len(counts[p.a]) > 1 or len(counts[p.b]) > 1:
                why["mixed profile"] += 1
            else:
                why["other"] += 1
        n = len(pairs)
        return {"pairs": n, "right": why.pop("right", 0), "wrong": dict(why)} | \
            {"precision": (n - sum(why.values())) / n if n else 1.0}

    # What an operator would get: the default suggestions, and auto-merge at a strict threshold (which the
    # matcher allows only with a validated estimate); the scores' own expectation next to the truth.
    auto_threshold = 0.9999
    suggested = [p for p in run.pairs if p.score >= config.suggest_threshold]
    auto = [p for p in run.pairs if p.score >= auto_threshold]
    # Accepting every suggestion: the streaming partition with the suggested profile pairs joined.
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for p in suggested:
        ra, rb = root(p.a), root(p.b)
        if ra != rb:
            parent[ra] = rb
    accepted = {eid: root(pid) for eid, pid in partition.items()}
    return {"profiles": len(records), "candidates": run.candidate_pairs, "seconds": seconds,
            "m_source": run.parameters.m_source, "validated": run.parameters.validated,
            "suggest": judge(suggested) | {"expected": sum(p.score for p in suggested) / len(suggested)
                                          if suggested else 1.0},
            "auto": judge(auto) | {"expected": sum(p.score for p in auto) / len(auto) if auto else 1.0},
            "suggest_threshold": config.suggest_threshold, "auto_threshold": auto_threshold,
            "accepted": pairwise_scores(accepted, ds.person_of)}


def fmt_scores(s: Scores) -> str:
    return (f"precision {s.precision:.4f}  recall {s.recall:.4f}  F1 {s.f1:.4f}  "
            f"({s.predicted_pairs:,} pairs linked, {s.false_pairs:,} false, {s.missed_pairs:,} of {s.true_pairs:,} "
            f"true pairs missed; {s.clusters:,} clusters)")


def glue_report(ds: IdentityDataset, partition: Mapping[str, Hashable], indent: str = "    ") -> list[str]:
    """Which shared values tie different people together in ``partition``'s mixed clusters."""
    mixed = mixed_clusters(partition, ds.person_of, ds.keys())
    if not mixed:
        return [f"{indent}no profile holds more than one person"]
    # Per kind of shared value: the profiles it appears in, the people it joins (a value held by k people of a
    # profile joins k - 1 of them to the others), and the profiles it alone glues (with their false pairs).
    profiles: Counter[str] = Counter()
    joins: Counter[str] = Counter()
    alone: Counter[str] = Counter()
    alone_false: Counter[str] = Counter()
    for m in mixed:
        cats: Counter[str] = Counter()
        for k, n in m.shared.items():
            cats[ds.category(k)] += n - 1
        cats = cats or Counter({"other": m.people - 1})
        profiles.update(cats.keys())
        joins.update(cats)
        if len(cats) == 1:
            (cat,) = cats
            alone[cat] += 1
            alone_false[cat] += m.false_pairs
    total_false = sum(m.false_pairs for m in mixed)
    several = [m for m in mixed if len({ds.category(k) for k in m.shared}) > 1]
    lines = [f"{indent}{len(mixed):,} profiles hold several people ({sum(m.people for m in mixed):,} people, "
             f"{total_false:,} false pairs); the largest: "
             + ", ".join(f"{m.records} records of {m.people} people" for m in mixed[:3])]
    lines.append(f"{indent}what ties the people together: in profiles / people joined / profiles glued by it alone "
                 "(their false pairs)")
    for cat, n in joins.most_common():
        lines.append(f"{indent}  {CATEGORY_NAMES.get(cat, cat):<30} {profiles[cat]:>5,} / {n:>5,} / "
                     f"{alone[cat]:>5,} ({alone_false[cat]:,})")
    lines.append(f"{indent}  {'several kinds together':<30} {len(several):>5,} profiles "
                 f"({sum(m.false_pairs for m in several):,} false pairs)")
    return lines


def collision_line(collisions: Mapping[str, int]) -> str:
    total = sum(collisions.values())
    return f"{total:,} (" + ", ".join(f"{k} {collisions.get(k, 0):,}" for k in ACCOUNT_KINDS) + ")"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=500, help="events per streaming batch")
    ap.add_argument("--rules", help="identity rules file (default: $CDP_HUB_IDENTITY_RULES or the defaults)")
    ap.add_argument("--no-fuzzy", action="store_true", help="skip the fuzzy matcher")
    args = ap.parse_args()
    rules = load_rules(args.rules)
    logging.getLogger("cdp_hub.resolver.fuzzy").setLevel(logging.ERROR)  # its EM verdict is printed below

    t = time.perf_counter()
    ds = generate(args.people, args.seed)
    keys = ds.keys()
    gen_seconds = time.perf_counter() - t
    truth = ds.person_of
    sources = Counter(e["source"] for e in ds.events)
    tags = Counter(tag for ts in ds.tags.values() for tag in ts)
    print(f"identity quality on {urlsplit(DSN).netloc}: {len(ds.events):,} records of {args.people:,} people "
          f"(seed {args.seed}), generated in {gen_seconds:.1f} s")
    print("  records by system: " + ", ".join(f"{s} {n:,}" for s, n in sources.items()))
    print(f"  families {len(ds.families):,} ({sum(len(f) for f in ds.families):,} people), namesake pairs "
          f"{len(ds.namesakes):,}, e-mails typed by two people {len(ds.shared_emails):,}, people with a changed "
          f"e-mail {sum(1 for p in ds.people if len(p.emails) > 1):,}")
    print("  records showing: " + ", ".join(f"{k} {v:,}" for k, v in sorted(tags.items(), key=lambda kv: -kv[1])))

    reachable = identifier_ceiling(keys, truth, ds.junk)
    ceiling = pairwise_scores(reachable, truth)
    naive = connected_by_identifiers(keys, rules.blocked_set())
    print(f"identifier-only ceiling (same-person records sharing a non-junk identifier): recall {ceiling.recall:.4f} "
          f"({ceiling.true_positive:,} of {ceiling.true_pairs:,} true pairs reachable)")
    print(f"naive connected components over shared identifiers (rules' blocked list only):\n    "
          f"{fmt_scores(pairwise_scores(naive, truth))}")

    stream = await run_streaming(ds, args.batch, rules, not args.no_fuzzy)
    bulk = await run_bulk(ds, rules)
    for label, res, extra in (
        (f"streaming resolver ({args.batch} events per batch)", stream, ""),
        ("bulk import (BulkImporter, one JSONL file per system)", bulk,
         f"; {bulk['summary']['resolved_event_by_event']:,} records resolved event by event"),
    ):
        s = pairwise_scores(res["partition"], truth)
        below = pairwise_scores(res["partition"], reachable)  # the ceiling's pairs are all true ones
        print(f"{label}: {len(ds.events) / res['seconds']:,.0f} records/s, {res['seconds']:.1f} s{extra}")
        print(f"    {fmt_scores(s)}")
        print(f"    recall of the pairs identifiers can reach: {below.recall:.4f} ({below.missed_pairs:,} of them missed)")
        print(f"    live profiles {res['profiles']:,} for {args.people:,} people; dead letters {res['dead']:,}; "
              f"conflicts {res['conflicts'] or 0}; values blocked automatically {res['blocked']:,}")
        print(f"    profiles with two account ids of one system: from their records "
              f"{collision_line(account_collisions(res['partition'], keys))}; "
              f"in the identities table {collision_line(res['held_twice'])}")
        print("\n".join(glue_report(ds, res["partition"])))
    identical = same_partition(stream["partition"], bulk["partition"])
    print(f"streaming and bulk partitions identical: {'yes' if identical else 'no'}", end="")
    if not identical:
        agree = pairwise_scores(bulk["partition"], stream["partition"])
        print(f" (bulk against streaming as truth: precision {agree.precision:.4f}, recall {agree.recall:.4f}; "
              f"records in both {len(stream['partition'].keys() & bulk['partition'].keys()):,})")
    else:
        print()
    if "fuzzy" in stream:
        f = stream["fuzzy"]
        print(f"fuzzy matcher on the streaming result's {f['profiles']:,} profiles: {f['candidates']:,} candidate "
              f"pairs, m from {f['m_source']} ({'validated' if f['validated'] else 'not validated: no auto-merge'}), "
              f"{f['seconds']:.1f} s")
        for label, key, thr in (("suggestions", "suggest", f["suggest_threshold"]),
                                ("auto-merge if enabled", "auto", f["auto_threshold"])):
            j = f[key]
            wrong = ", ".join(f"{k} {v:,}" for k, v in sorted(j["wrong"].items(), key=lambda kv: -kv[1])) or "none"
            print(f"    {label} (score >= {thr:g}): {j['pairs']:,} pairs, precision {j['precision']:.4f}, "
                  f"expected by the scores {j['expected']:.4f} ({j['right']:,} right; wrong: {wrong})")
        print(f"    streaming result with every suggestion accepted:\n        {fmt_scores(f['accepted'])}")
    print(f"  (load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    asyncio.run(main())
