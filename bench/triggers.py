"""Event → intent latency of the triggers stage through real Kafka, with 5 and with 120 scenarios loaded.

    python bench/triggers.py [--rate 2000] [--seconds 30] [--scenarios 120 --scenarios 5] [--delay 5s] [--busy]
                             [--full-validation]

For each scenario count: a fresh database at ``$CDP_HUB_POSTGRES_DSN`` with 20,000 profiles (half of them gave
e-mail marketing consent), fresh topics on ``$CDP_HUB_KAFKA_BOOTSTRAP``, Redis at ``$CDP_HUB_REDIS_URL`` under a
fresh prefix. A producer publishes profile events over eight event types at ``--rate`` events/s onto
``cdp.profile-events`` (occurred_at = the publish time); the triggers stage runs under its runner; a consumer
reads ``cdp.messages``. Latency per intent: its arrival minus its trigger's occurred_at, and for delayed
scenarios minus occurred_at + delay + allowed_lateness (the earliest the event-time rules allow).

The catalogues (the scale check: loading scenarios must not slow the stage):

- default: five *live* scenarios (each firing for about a tenth of its type's events; one delayed by
  ``--delay``), and with more than five the rest are *variants* of them (another product set, query, cart
  size or loyalty tier, caps and priorities): their conditions are evaluated against every event of their
  type, as a retailer's catalogue is, but they select customers the generated traffic does not have. So the
  runs with 5 and with 120 do the same contact-policy work, and the difference is the cost of 115 more
  loaded scenarios. The bench prints the ratio of the two figures.
- ``--busy``: every scenario fires for about a tenth of its type's events (an event fires one or two of 120
  scenarios, ~0.5 intents and ~1.5 decisions per event): a stress test of the contact policy, not of loading.

Prints, per run, p50/p99 for immediate and delayed intents, the decisions by kind, the stage's CPU per event
(less sensitive to the other work on the machine than latency) and the load average before and after.

The producer runs in a process of its own; the stage and the intent reader share one process (and the
machine's cores with Kafka, PostgreSQL and Redis): the figures include that contention.

The producer writes what the resolver writes: each event validated once, the model's JSON, the hub's headers
(``cdp-schema``, ``cdp-producer``), so the stage decodes them through the trusted fast path (parse once;
``cdp.profile-events`` is an internal topic). ``--full-validation`` also runs each scenario count with
``parse_once = false`` (every record validated again, as before) and prints the ratio of CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.bus.provenance import EVENT_SCHEMA, hub_headers
from cdp_hub.config import Settings
from cdp_hub.hotstate import HotState
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, build_stage
from cdp_hub.schema import MessageIntent, parse_event
from cdp_hub.store import ConsentRepository, ConsentStatement
from cdp_hub.triggers.scenario import Scenario, parse_duration

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
KAFKA = os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
REDIS = os.environ.get("CDP_HUB_REDIS_URL", "redis://127.0.0.1:16379/0")
PROFILES = 20_000
LATENESS = "1s"
TYPES = ["product.viewed", "search.performed", "cart.updated", "app.opened", "screen.viewed",
         "loyalty.points_earned", "order.placed", "customer.updated"]
CITIES = ["Москва", "Казань", "Омск", "Томск", "Самара", "Пермь"]


def scenarios(n: int, delay: str, seed: int = 11, *, busy: bool = False) -> list[Scenario]:
    """``n`` generated scenarios over eight event types (see the module doc): the first five live, the rest
    variants that never select the generated traffic, unless ``busy`` (then all of them live)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        etype = TYPES[i % len(TYPES)]
        live = busy or i < 5
        doc: dict[str, Any] = {"id": f"s{i:03d}", "trigger": {"event": etype}, "channel": "email",
                               "template": "welcome", "priority": rng.choice([0, 0, 0, 5, 10])}
        # A variant's values come from ranges the producer does not draw from (SKU100+, q10+, tier10+, carts
        # of 2,000 and more): the condition is evaluated in full and fails.
        base = 0 if live else 100 + 10 * i
        if etype == "product.viewed":
            condition = {"field": "event.properties.sku", "op": "in",
                         "value": [f"SKU{base + j}" for j in rng.sample(range(100), 10)]}
        elif etype == "cart.updated":
            condition = {"field": "event.properties.total", "op": "gte", "value": 1800 if live else 2000 + i}
        elif etype == "search.performed":
            condition = {"field": "event.properties.query", "op": "eq", "value": f"q{base + rng.randrange(10)}"}
        else:
            condition = {"field": "profile.loyalty_tier", "op": "eq", "value": f"tier{base + rng.randrange(10)}"}
        doc["conditions"] = [condition]
        if i % 5 == 4:
            doc["delay"] = delay
            if etype == "cart.updated":
                doc["hold_until"] = {"key": "event.properties.cart_id"}
                doc["cancel_on"] = ["order.placed"]
        if rng.random() < 0.2:
            doc["frequency_cap"] = {"max": 5, "per": "1d", "scope": "scenario"}
        if etype == "order.placed":
            doc["category"] = "transactional"
        out.append(Scenario.model_validate(doc))
    return out


def profile_event(pid: uuid.UUID, n: int, rng: random.Random, now: datetime) -> bytes:
    etype = rng.choice(TYPES)
    props: dict[str, Any] = {}
    if etype == "product.viewed":
        props = {"sku": f"SKU{rng.randrange(100)}"}
    elif etype == "search.performed":
        props = {"query": f"q{rng.randrange(10)}"}
    elif etype == "cart.updated":
        props = {"cart_id": f"c{pid.hex[:6]}", "total": str(rng.randrange(2000))}
    elif etype == "loyalty.points_earned":
        props = {"points": "10"}
    elif etype == "order.placed":
        props = {"order_id": f"o{n}"}
    elif etype in ("app.opened", "screen.viewed"):
        props = {"screen": "home"} if etype == "screen.viewed" else {}
    body = {"schema_version": "cdp.event/1", "event_id": str(uuid.uuid4()), "type": etype, "source": "bench",
            "source_record_id": f"b{n}", "occurred_at": now.isoformat(), "received_at": now.isoformat(),
            "identities": [{"kind": "email", "value": f"p{pid.hex[:10]}@example.ru"}], "properties": props,
            "profile_id": str(pid)}
    return parse_event(body).to_json()  # validated once, written as the resolver writes it


def produce(topic: str, pids: list[str], rate: int, seconds: float) -> int:
    """Publish profile events onto ``topic`` at ``rate`` events/s for ``seconds`` (in a child process)."""

    async def go() -> int:
        from cdp_hub.bus.kafka import KafkaBus

        bus = KafkaBus(KAFKA)
        await bus.start()
        rng = random.Random(5)
        sent = 0
        started = time.perf_counter()
        try:
            while time.perf_counter() - started < seconds:
                due = int((time.perf_counter() - started) * rate) - sent
                if due > 0:
                    now = datetime.now(UTC)
                    batch = []
                    for _ in range(due):
                        pid = uuid.UUID(rng.choice(pids))
                        value = profile_event(pid, sent, rng, now)
                        etype = orjson.loads(value)["type"].encode()
                        batch.append(OutgoingMessage(topic, value, str(pid).encode(),
                                                     hub_headers(EVENT_SCHEMA, ("cdp.type", etype))))
                        sent += 1
                    await bus.publish_many(batch)
                await asyncio.sleep(0.005)
        finally:
            await bus.stop()
        return sent

    return asyncio.run(go())


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def run(n_scenarios: int, *, rate: int, seconds: float, delay: str, busy: bool = False,
              parse_once: bool = True) -> dict[str, Any]:
    name = f"bench_triggers_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    prefix = f"bt{uuid.uuid4().hex[:6]}."
    settings = Settings(bus="kafka", kafka_bootstrap=KAFKA, topic_prefix=prefix, topic_partitions=4,
                        postgres_dsn=_with_db(DSN, name), redis_url=REDIS, poll_timeout_ms=20, batch_size=250,
                        allowed_lateness=LATENESS, parse_once=parse_once)  # type: ignore[arg-type]
    hub = Hub(settings, metrics=Metrics(), hotstate=HotState(REDIS, prefix=prefix))
    delay_td, lateness = parse_duration(delay), parse_duration(LATENESS)
    loaded = scenarios(n_scenarios, delay, busy=busy)
    delayed = {s.id for s in loaded if s.delay}
    try:
        await hub.start()
        rng = random.Random(5)
        pids = [uuid.uuid4() for _ in range(PROFILES)]
        await hub.store.execute(
            "INSERT INTO profiles (profile_id, golden) SELECT p, jsonb_build_object('city', c, 'loyalty_tier', t) "
            "FROM unnest($1::uuid[], $2::text[], $3::text[]) AS x(p, c, t)", pids, [rng.choice(CITIES) for _ in pids],
            [f"tier{rng.randrange(10)}" for _ in pids])
        await ConsentRepository(hub.store).record([
            ConsentStatement(p, "email", "marketing", "opted_in", datetime(2026, 1, 1, tzinfo=UTC), "bench",
                             uuid.uuid4()) for p in pids[: PROFILES // 2]])
        stage = build_stage(hub, "triggers", scenarios=loaded)
        # The decode step alone on 5,000 records as the resolver writes them: the part parse once changes,
        # best of three passes (CPU time, less sensitive to the machine's other work than the whole stage).
        samples = [Record(settings.topics.profile_events, 0, n, None, profile_event(uuid.UUID(int=n), n, rng, now),
                          hub_headers(EVENT_SCHEMA, ("cdp.type", b"x"))) for n, now in
                   ((n, datetime.now(UTC)) for n in range(5000))]
        decode_us = min(_cpu_of(lambda: [stage.decode(r) for r in samples]) for _ in range(3)) / len(samples) * 1e6
        stage._decoded = dict.fromkeys(stage._decoded, 0)  # not the traffic's: left out of cdp_stage_decoded_total
        pipeline = Pipeline(hub, stages=[stage])
        runner = asyncio.create_task(pipeline.run())
        latencies: dict[str, list[float]] = {"immediate": [], "delayed": []}
        consumer = hub.bus.consumer([hub.topics.messages], group=f"{prefix}bench")
        await consumer.start()
        stop = asyncio.Event()

        async def consume() -> None:
            while not stop.is_set():
                for record in await consumer.getmany(timeout_ms=50, max_records=1000):
                    arrived = datetime.now(UTC)
                    intent = MessageIntent.model_validate_json(record.value)
                    occurred = datetime.fromisoformat((intent.trigger_event or {})["occurred_at"])
                    if intent.scenario in delayed:
                        latencies["delayed"].append((arrived - occurred - delay_td - lateness).total_seconds())
                    else:
                        latencies["immediate"].append((arrived - occurred).total_seconds())

        reader = asyncio.create_task(consume())
        # The stage has joined its group (a new group waits out the broker's initial rebalance delay) when it
        # starts polling empty.
        await pipeline.drain(idle_polls=5, timeout=60)
        load_before = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
        # The producer is a process of its own, as the resolver would be: it does not share the stage's loop.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            sent = await asyncio.to_thread(pool.apply, produce, (settings.topics.profile_events, [str(p) for p in pids],
                                                                rate, seconds))
        achieved = sent / seconds
        await asyncio.sleep(delay_td.total_seconds() + lateness.total_seconds() + 5.0)
        cpu = (resource.getrusage(resource.RUSAGE_SELF).ru_utime
               + resource.getrusage(resource.RUSAGE_SELF).ru_stime - cpu0)
        stop.set()
        await reader
        pipeline.stop()
        await runner
        await consumer.stop()
        decisions = Counter({
            d: int(v) for (s, d), v in _decision_counts(hub).items() if v})
        batches = sum(s.value for m in hub.metrics.stage_batch_seconds.collect() for s in m.samples
                      if s.name.endswith("_count"))
        trusted = hub.metrics.registry.get_sample_value(
            "cdp_stage_decoded_total", {"stage": "triggers", "path": "trusted"}) or 0.0
        return {"scenarios": n_scenarios, "events": sent, "rate": achieved, "latencies": latencies, "trusted": trusted,
                "decode_us": decode_us,
                "decisions": decisions, "cpu_per_event_ms": cpu / max(sent, 1) * 1000,
                "batch": sent / max(batches, 1), "load": (load_before, os.getloadavg()[0])}
    finally:
        keys = [k async for k in hub.hotstate.redis.scan_iter(match=prefix + "*")] if hub.hotstate._client else []
        if keys:
            await hub.hotstate.redis.delete(*keys)
        await hub.stop()
        admin = await asyncpg.connect(DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _cpu_of(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def _decision_counts(hub: Hub) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for metric in hub.metrics.trigger_decisions.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["scenario"], sample.labels["decision"])
                out[key] = out.get(key, 0) + sample.value
    agg: dict[tuple[str, str], float] = {}
    for (_, d), v in out.items():
        agg[("*", d)] = agg.get(("*", d), 0) + v
    return agg


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--scenarios", type=int, action="append")
    parser.add_argument("--delay", default="5s")
    parser.add_argument("--busy", action="store_true", help="every scenario fires (see the module doc)")
    parser.add_argument("--full-validation", action="store_true",
                        help="also run each scenario count with parse_once = false and print the ratio")
    args = parser.parse_args()
    results = {}
    full: dict[int, dict[str, Any]] = {}
    for n in args.scenarios or [120, 5]:
        r = results[n] = await run(n, rate=args.rate, seconds=args.seconds, delay=args.delay, busy=args.busy)
        if args.full_validation:
            f = full[n] = await run(n, rate=args.rate, seconds=args.seconds, delay=args.delay, busy=args.busy,
                                    parse_once=False)
            print(f"{n} scenarios, full validation: {f['events']} events at {f['rate']:.0f}/s; stage CPU "
                  f"{f['cpu_per_event_ms']:.3f} ms/event; {f['batch']:.0f} events per batch")
            print(f"  parse once vs full validation: CPU per event {r['cpu_per_event_ms'] / f['cpu_per_event_ms']:.2f}x "
                  f"({r['trusted']:.0f} records decoded trusted); the decode step alone {r['decode_us']:.1f} us vs "
                  f"{f['decode_us']:.1f} us per event ({r['decode_us'] / f['decode_us']:.2f}x)")
        lat = r["latencies"]
        print(f"{n} scenarios{' (busy)' if args.busy else ''}: {r['events']} events at {r['rate']:.0f}/s; "
              f"stage (and intent reader) CPU {r['cpu_per_event_ms']:.3f} ms/event; {r['batch']:.0f} events per "
              f"batch; load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after")
        for kind in ("immediate", "delayed"):
            values = lat[kind]
            what = "event → intent" if kind == "immediate" else f"beyond delay {args.delay} + lateness {LATENESS}"
            print(f"  {kind:<9} {len(values):>7} intents  p50 {pct(values, 0.5):7.1f} ms  p99 "
                  f"{pct(values, 0.99):7.1f} ms  ({what})"
                  + (f"  mean {statistics.fmean(values) * 1000:.1f} ms" if values else ""))
        print("  decisions: " + ", ".join(f"{d} {v}" for d, v in sorted(r["decisions"].items())))
    if len(results) >= 2:
        most, fewest = max(results), min(results)
        a, b = results[most], results[fewest]
        print(f"{most} vs {fewest} scenarios (1.00 = no slower; the goal is within 1.10):")
        for kind in ("immediate", "delayed"):
            for q in (0.5, 0.99):
                print(f"  {kind:<9} p{int(q * 100):<2} {pct(a['latencies'][kind], q) / pct(b['latencies'][kind], q):5.2f}")
        print(f"  CPU per event {a['cpu_per_event_ms'] / b['cpu_per_event_ms']:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
