"""Streaming identity resolution: events/s per resolver process and added latency, against real PostgreSQL.

    python bench/resolver_stream.py [--events 20000] [--batch 500 --batch 250] [--baseline-events 2000]
                                    [--full-validation]

Feeds synthetic canonical events (customers seen again and again through e-mail, phone, device, crm id;
new customers, links that merge profiles, consent changes) through ``ResolverStage.handle`` in batches, and
through the same stage one event per transaction as the naive baseline, in the same run, on a fresh
database at ``$CDP_HUB_POSTGRES_DSN`` (default: the test server). Prints events/s, p50/p99 latency per batch
(every event of a batch waits for the whole batch, so that is the added latency per event), the ratio,
and the CPU time per event of the resolver process and of its PostgreSQL backends (load-independent
figures, useful on a shared machine).
The first batch of each run is a warm-up (connection, prepared statements) and is not timed.

The records are what the hub's producers write onto ``cdp.events`` (each event validated once, as a connector or
the edge does, then ``event_message`` and the bus's seal): the stage decodes them through the trusted fast
path (parse once, docs/architecture.md). ``--full-validation`` also runs every batch size with
``parse_once = false`` (each record validated again, as before) on the same records, and prints the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from cdp_hub.bus.base import Record
from cdp_hub.bus.events import event_message
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.config import Settings
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.schema.events import parse_event

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FIRST = ["Anna", "Ivan", "Olga", "Petr", "Maria", "Sergey", "Elena", "Dmitry"]
CITIES = ["Moscow", "Kazan", "Omsk", "Tomsk", "Samara", "Perm"]


def synthetic_events(n: int, seed: int) -> list[bytes]:
    """``n`` events for about n/4 customers: each customer's identities appear over several events."""
    rng = random.Random(seed)
    people = max(1, n // 4)
    out = []
    for i in range(n):
        p = rng.randrange(people)
        idents = []
        r = rng.random()
        if r < 0.5:
            idents.append({"kind": "email", "value": f"user{p}@example.com"})
        if r > 0.3:
            idents.append({"kind": "phone", "value": f"+7916{p:07d}"})
        if rng.random() < 0.3:
            idents.append({"kind": "device_id", "value": f"dev-{p}-{rng.randrange(2)}"})
        if rng.random() < 0.1:
            idents.append({"kind": "crm_id", "value": f"C{p}"})
        kind = rng.random()
        body: dict[str, Any] = {
            "source": rng.choice(["crm", "shop", "app", "loyalty"]),
            "source_record_id": f"{seed}-{i}",
            "occurred_at": (T0 + timedelta(seconds=i)).isoformat(),
            "identities": idents,
        }
        if kind < 0.4:
            body.update(type="customer.updated",
                        traits={"first_name": FIRST[p % len(FIRST)], "city": rng.choice(CITIES)})
        elif kind < 0.7:
            body.update(type="product.viewed", properties={"sku": f"SKU{rng.randrange(500)}"})
        elif kind < 0.9:
            body.update(type="order.placed", properties={"order_id": f"o{i}", "total": "12.50", "currency": "RUB"})
        else:
            body.update(type="consent.changed",
                        properties={"channel": rng.choice(["email", "sms", "all"]),
                                    "status": rng.choice(["opted_in", "opted_out"])})
        out.append(orjson.dumps(body))
    return out


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def _fresh_db(name: str) -> str:
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _with_db(DSN, name)


async def _drop_db(name: str) -> None:
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(values: list[bytes], batch: int, label: str, *, parse_once: bool = True) -> dict[str, float]:
    name = f"bench_resolver_{os.getpid()}_{label}"
    dsn = await _fresh_db(name)
    hub = Hub(Settings(postgres_dsn=dsn, bus="memory", redis_url="fakeredis://", data_dir=Path("/tmp/cdp-bench"),
                       parse_once=parse_once),
              bus=MemoryBus(), metrics=Metrics())
    try:
        async with hub:
            stage = build_stage(hub, "resolver")
            await stage.setup()  # as the stage runner does
            # What the hub's producers write: validated once where the event entered, headers, the seal.
            written = hub.bus.sealed([event_message("cdp.events", parse_event(v)) for v in values])
            records = [Record("cdp.events", 0, i, m.key, m.value, m.headers) for i, m in enumerate(written)]
            await stage.handle(records[:batch])  # warm-up: connection, prepared statements
            # The decode step alone (no database): the part parse once changes, best of three passes.
            decode_s = min(_cpu_of(lambda: _decode_all(stage, records)) for _ in range(3))
            records = records[batch:]
            latencies = []
            backends = [r["pid"] for r in await hub.store.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]
            db_cpu0, cpu0 = _proc_cpu(backends), time.process_time()
            started = time.perf_counter()
            for i in range(0, len(records), batch):
                t = time.perf_counter()
                await stage.handle(records[i:i + batch])
                latencies.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - started
            cpu, db_cpu = time.process_time() - cpu0, _proc_cpu(backends) - db_cpu0
            profiles = await hub.store.fetchval("SELECT count(*) FROM profiles WHERE merged_into IS NULL")
            merged = await hub.store.fetchval("SELECT count(*) FROM profiles WHERE merged_into IS NOT NULL")
    finally:
        await _drop_db(name)
    latencies.sort()
    return {
        "events": len(values) - batch,
        "seconds": elapsed,
        "rate": (len(values) - batch) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "profiles": profiles,
        "merged": merged,
        "py_us": cpu / (len(values) - batch) * 1e6,
        "db_us": db_cpu / (len(values) - batch) * 1e6,
        "decode_us": decode_s / len(values) * 1e6,
        "trusted": hub.metrics.registry.get_sample_value(
            "cdp_stage_decoded_total", {"stage": "resolver", "path": "trusted"}) or 0.0,
    }


def _decode_all(stage: Any, records: list[Record]) -> None:
    for record in records:
        try:
            stage.decode(record)
        except Exception:
            continue


def _cpu_of(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


async def _until(condition: Callable[[], bool], period: float = 0.05) -> None:
    """Wait until ``condition()`` holds, checked every ``period`` seconds (a runner's count, another process's
    flag: there is no event to await)."""
    while True:
        if condition():
            return
        await asyncio.sleep(period)


def _proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these PostgreSQL backends (same machine, /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 500 and 250)")
    ap.add_argument("--baseline-events", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--full-validation", action="store_true",
                    help="also run each batch size with parse_once = false (every record validated again) and "
                         "print the ratio")
    args = ap.parse_args()
    batches = args.batch or [500, 250]
    values = synthetic_events(args.events, args.seed)
    # Same stream prefix for the baseline, so both see the same mix of new / attach / merge.
    baseline = await run(values[: args.baseline_events], 1, "naive")
    print(f"resolver stream benchmark on {urlsplit(DSN).netloc} ({uuid.uuid4().hex[:6]})")
    rows = [("naive, 1 event/tx", baseline)]
    for b in batches:
        rows.append((f"batched, {b}/tx", await run(values, b, f"b{b}")))
        if args.full_validation:
            rows.append((f"batched, {b}/tx, full", await run(values, b, f"f{b}", parse_once=False)))
    for label, r in rows:
        print(f"  {label:<20} {r['events']:>7} events  {r['rate']:>9.0f} events/s  "
              f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms per batch  "
              f"({r['profiles']} profiles, {r['merged']} merged away)")
        print(f"  {'':<20} CPU per event: resolver process {r['py_us']:.0f} us, PostgreSQL {r['db_us']:.0f} us")
    print(f"  (load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    by_label = dict(rows)
    for b in batches if args.full_validation else []:
        once, full = by_label[f"batched, {b}/tx"], by_label[f"batched, {b}/tx, full"]
        print(f"  parse once vs full validation, decode step alone: {once['decode_us']:.1f} us vs "
              f"{full['decode_us']:.1f} us per event ({once['decode_us'] / full['decode_us']:.2f}x)")
        print(f"  parse once vs full validation, {b}/tx: resolver process CPU per event {once['py_us']:.0f} us vs "
              f"{full['py_us']:.0f} us ({once['py_us'] / full['py_us']:.2f}x), with PostgreSQL "
              f"{(once['py_us'] + once['db_us']) / (full['py_us'] + full['db_us']):.2f}x; events/s "
              f"{once['rate'] / full['rate']:.2f}x ({once['trusted']:.0f} records decoded trusted)")
    for label, r in rows[1:]:
        print(f"  {label}: {r['rate'] / baseline['rate']:.1f}x the naive rate; "
              f">= 5000 events/s {'met' if r['rate'] >= 5000 else 'NOT met'}; "
              f"p99 < 50 ms {'met' if r['p99_ms'] < 50 else 'NOT met'}")


if __name__ == "__main__":
    asyncio.run(main())
