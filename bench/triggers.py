"""Event → intent latency of the triggers stage through real Kafka, with 5 and with 120 scenarios loaded.

    python bench/triggers.py [--rate 2000] [--seconds 30] [--scenarios 120 --scenarios 5] [--delay 5s] [--busy]
                             [--no-floor] [--full-validation]

For each scenario count: a fresh database at ``$CDP_HUB_POSTGRES_DSN`` with 20,000 profiles (half of them gave
e-mail marketing consent), fresh topics on ``$CDP_HUB_KAFKA_BOOTSTRAP``, Redis at ``$CDP_HUB_REDIS_URL`` under a
fresh prefix. A producer process publishes profile events over eight event types at ``--rate`` events/s onto
``cdp.profile-events``; the triggers stage runs under its runner in this process.

**What is measured, and where the clock starts and stops.** The bench's own topics (``cdp.profile-events``,
``cdp.messages`` and the floor's topic) are created with ``message.timestamp.type=LogAppendTime``: the broker
stamps every record when it appends it. The latency the hub adds is

    intent's append time on cdp.messages  -  its trigger event's append time on cdp.profile-events

(for delayed scenarios minus their delay and the allowed lateness too: the earliest the event-time rules
allow). Both clocks are the broker's, so neither the load generator's batching (``linger_ms``, waiting for its
acks) nor a reader's fetch wait is in the figure: nothing reads the intents while the stage runs; every topic
is read once at the end. Two seconds of traffic before the measured run are a warm-up, left out of every
figure (the first records pay for metadata lookups and the first publish to each topic). What the load generator adds before an event is on the topic (append time minus
``occurred_at``, the producer's clock when it built the record) is printed apart, as is the client's view
(intent append minus ``occurred_at``).

**The floor.** In the same run, a process of its own runs a pass-through stage under the same runner and
settings: a consumer group on ``cdp.profile-events`` that forwards every record, unchanged in size, to a topic of
its own (no database, no Redis, no decisions). Its latency (forwarded append time minus source append time)
is what one Kafka hop through the hub's runner costs on this machine under this load; the triggers stage
cannot beat it. ``--no-floor`` leaves it out (it adds a consumer and a producer of 2,000 records/s to the
machine's load).

The catalogues (the scale check: loading scenarios must not slow the stage):

- default: five *live* scenarios (each firing for about a tenth of its type's events; one delayed by
  ``--delay``), and with more than five the rest are *variants* of them (another product set, query, cart
  size or loyalty tier, caps and priorities): their conditions are evaluated against every event of their
  type, as a retailer's catalogue is, but they select customers the generated traffic does not have. So the
  runs with 5 and with 120 do the same contact-policy work, and the difference is the cost of 115 more
  loaded scenarios. The bench prints the ratio of the two figures.
- ``--busy``: every scenario fires for about a tenth of its type's events (an event fires one or two of 120
  scenarios, ~0.5 intents and ~1.5 decisions per event): a stress test of the contact policy, not of loading.

The producer writes what the resolver writes: each event validated once, the model's JSON, the hub's headers
(``cdp-schema``, ``cdp-producer``), so the stage decodes them through the trusted fast path (parse once;
``cdp.profile-events`` is an internal topic). ``--full-validation`` also runs each scenario count with
``parse_once = false`` (every record validated again, as before) and prints the ratio of CPU per event and of
the decode step alone (5,000 records, best of three passes, CPU time).

Prints, per run: p50/p99 for immediate and delayed intents, the floor, what the load generator adds, the
stage's throughput (events it committed per second while the producer ran, and how long it took to catch up
after), its batches (events per batch, and the stage's own batch time p50/p99), the decisions by kind, the
stage's CPU per event (less sensitive to the other work on the machine than latency) and the load average
before and after. The figures include the contention for the machine's cores with Kafka, PostgreSQL and
Redis (and, on the development machine, other engineers' test runs).
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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from _topics import delete_topics  # bench/ is the script's directory
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from resolver_stream import _until

from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.bus.provenance import EVENT_SCHEMA, hub_headers
from cdp_hub.config import Settings
from cdp_hub.hotstate import HotState
from cdp_hub.hub import Hub, create_bus
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, build_stage, stage_runner
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput
from cdp_hub.schema import parse_event
from cdp_hub.store import ConsentRepository, ConsentStatement
from cdp_hub.triggers.scenario import Scenario, parse_duration

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
KAFKA = os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
REDIS = os.environ.get("CDP_HUB_REDIS_URL", "redis://127.0.0.1:16379/0")
PROFILES = 20_000
LATENESS = "1s"
WARMUP_SECONDS = 2.0
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


def produce(topic: str, pids: list[str], rate: int, seconds: float) -> tuple[int, float, float]:
    """Publish profile events onto ``topic`` at ``rate`` events/s for ``seconds`` (in a child process).
    Returns the count and the wall-clock start and end (Unix seconds) of the publishing."""

    async def go() -> tuple[int, float, float]:
        from cdp_hub.bus.kafka import KafkaBus

        bus = KafkaBus(KAFKA)
        await bus.start()
        rng = random.Random(5)
        sent = 0
        began = time.time()
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
            ended = time.time()
            await bus.stop()
        return sent, began, ended

    return asyncio.run(go())


def _produce_into(results: Any, *args: Any) -> None:
    results.put(produce(*args))


SOURCE_TS = "bench.source-ts"


class PassThrough(Stage[bytes]):
    """The floor: forwards every record (same key, same value) to another topic, with the source record's
    append time in a header. No database, no Redis: what a Kafka hop through the hub's runner costs."""

    name = "passthrough"

    def __init__(self, ctx: StageContext, source: str, target: str) -> None:
        super().__init__(ctx)
        self.source, self.target = source, target

    @property
    def topics(self) -> Sequence[str]:
        return [self.source]

    def decode(self, record: Record) -> bytes:
        return record.value

    async def process(self, batch: Sequence[Decoded[bytes]]) -> StageOutput:
        return StageOutput(messages=[
            OutgoingMessage(self.target, item.value, item.record.key,
                            ((SOURCE_TS, str(item.record.timestamp_ms).encode()),)) for item in batch])


def floor(settings_json: str, target: str, ready: Any, stop: Any, results: Any) -> None:
    """Run :class:`PassThrough` under the hub's runner with the bench's settings until ``stop`` is set (in a
    child process: it must not share the triggers stage's event loop)."""

    async def go() -> int:
        settings = Settings.model_validate_json(settings_json)
        bus = create_bus(settings)
        await bus.start()
        ctx = StageContext(topics=settings.topics, metrics=Metrics(), clock=lambda: datetime.now(UTC),
                           publish=bus.publish_many, group_prefix=settings.topic_prefix)
        runner = stage_runner(settings, PassThrough(ctx, settings.topics.profile_events, target), bus)
        task = asyncio.create_task(runner.run())
        try:
            await _until(lambda: runner.idle_polls >= 5 or task.done())
            ready.set()
            await _until(lambda: stop.is_set() or task.done())
            runner.stop()
            await task
        finally:
            await bus.stop()
        return runner.processed

    results.put(asyncio.run(go()))


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def _create_timed_topics(names: Sequence[str], partitions: int) -> None:
    """Topics whose records carry the broker's append time (``LogAppendTime``) as their timestamp."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs={"message.timestamp.type": "LogAppendTime"})
                                   for n in names])
    finally:
        await admin.close()


async def run(n_scenarios: int, *, rate: int, seconds: float, delay: str, busy: bool = False,
              with_floor: bool = True, linger_ms: int = 5, parse_once: bool = True) -> dict[str, Any]:
    name = f"bench_triggers_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    prefix = f"bt{uuid.uuid4().hex[:6]}."
    settings = Settings(bus="kafka", kafka_bootstrap=KAFKA, topic_prefix=prefix, topic_partitions=4,
                        postgres_dsn=_with_db(DSN, name), redis_url=REDIS, poll_timeout_ms=20, batch_size=250,
                        allowed_lateness=LATENESS, kafka_linger_ms=linger_ms,
                        parse_once=parse_once)  # type: ignore[arg-type]
    floor_topic = prefix + "bench.floor"
    await _create_timed_topics([settings.topics.profile_events, settings.topics.messages, floor_topic], 4)
    hub = Hub(settings, metrics=Metrics(), hotstate=HotState(REDIS, prefix=prefix))
    delay_td, lateness = parse_duration(delay), parse_duration(LATENESS)
    loaded = scenarios(n_scenarios, delay, busy=busy)
    delayed = {s.id for s in loaded if s.delay}
    ctx = multiprocessing.get_context("spawn")
    floor_stop, floor_ready, floor_results = ctx.Event(), ctx.Event(), ctx.Queue()
    floor_proc = None
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
        if with_floor:
            floor_proc = ctx.Process(target=floor, args=(settings.model_dump_json(), floor_topic, floor_ready,
                                                         floor_stop, floor_results))
            floor_proc.start()
        stage = build_stage(hub, "triggers", scenarios=loaded)
        # The decode step alone on 5,000 records as the resolver writes them: the part parse once changes,
        # best of three passes (CPU time, less sensitive to the machine's other work than the whole stage).
        samples = [Record(settings.topics.profile_events, 0, n, None, profile_event(uuid.UUID(int=n), n, rng, now),
                          hub_headers(EVENT_SCHEMA, ("cdp.type", b"x"))) for n, now in
                   ((n, datetime.now(UTC)) for n in range(5000))]
        decode_us = min(_cpu_of(lambda: [stage.decode(r) for r in samples]) for _ in range(3)) / len(samples) * 1e6
        stage._decoded = dict.fromkeys(stage._decoded, 0)  # not the traffic's: left out of cdp_stage_decoded_total
        pipeline = Pipeline(hub, stages=[stage])
        runner = pipeline.runners[0]
        running = asyncio.create_task(pipeline.run())
        # The stage has joined its group (a new group waits out the broker's initial rebalance delay) when it
        # starts polling empty; so has the floor when it says it is ready.
        await pipeline.drain(idle_polls=5, timeout=60)
        if floor_proc is not None:
            await asyncio.to_thread(floor_ready.wait, 60)
        # The producer is a process of its own, as the resolver would be: it does not share the stage's loop.
        # A second of traffic first, not counted: the first records pay for metadata lookups, the first
        # publish to each output topic and cold caches (over a second on this machine).
        produced = ctx.Queue()
        warmup = ctx.Process(target=_produce_into, args=(produced, settings.topics.profile_events,
                                                        [str(p) for p in pids], rate, WARMUP_SECONDS))
        warmup.start()
        warm_events, _, _ = await asyncio.to_thread(produced.get)
        warmup.join()
        await _until(lambda: runner.processed >= warm_events)
        await asyncio.sleep(1.0)  # the floor catches up too
        processed_before = runner.processed
        load_before = os.getloadavg()[0]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        producer = ctx.Process(target=_produce_into, args=(produced, settings.topics.profile_events,
                                                          [str(p) for p in pids], rate, seconds))
        producer.start()
        processed_at_end = 0
        while producer.is_alive():
            processed_at_end = runner.processed - processed_before
            await asyncio.sleep(0.05)
        sent, began, ended = await asyncio.to_thread(produced.get)
        producer.join()
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        caught_up = None
        while loop.time() - stopped < delay_td.total_seconds() + lateness.total_seconds() + 5.0:
            if caught_up is None and runner.processed - processed_before >= sent:
                caught_up = loop.time() - stopped
            await asyncio.sleep(0.05)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu0
        load_after = os.getloadavg()[0]
        floor_stop.set()
        pipeline.stop()
        await running
        floor_processed = await asyncio.to_thread(floor_results.get, True, 60) if floor_proc is not None else 0
        decisions = Counter({d: int(v) for (_, d), v in _decision_counts(hub).items() if v})
        batches, batch_seconds = _batch_totals(hub)
        latencies = await _latencies(hub, floor_topic if floor_proc is not None else None, delayed,
                                     (delay_td + lateness).total_seconds() * 1000, began * 1000, ended * 1000)
        return {"scenarios": n_scenarios, "events": sent, "rate": sent / max(ended - began, 1e-9),
                "throughput": processed_at_end / max(ended - began, 1e-9), "caught_up": caught_up,
                "floor_events": floor_processed, "latencies": latencies, "decisions": decisions,
                "cpu_per_event_ms": cpu / max(sent, 1) * 1000, "batch": runner.processed / max(batches, 1),
                "decode_us": decode_us, "trusted": hub.metrics.registry.get_sample_value(
                    "cdp_stage_decoded_total", {"stage": "triggers", "path": "trusted"}) or 0.0,
                "batch_ms": batch_seconds / max(batches, 1) * 1000, "warmup_events": warm_events, "load": (load_before, load_after)}
    finally:
        floor_stop.set()
        if floor_proc is not None:
            floor_proc.join(30)
        keys = [k async for k in hub.hotstate.redis.scan_iter(match=prefix + "*")] if hub.hotstate._client else []
        if keys:
            await hub.hotstate.redis.delete(*keys)
        await hub.stop()
        await delete_topics(KAFKA, prefix)
        admin = await asyncpg.connect(DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _cpu_of(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


async def _latencies(hub: Hub, floor_topic: str | None, delayed: set[str], wait_ms: float,
                     producer_start_ms: float, producer_end_ms: float) -> dict[str, list[float]]:
    """Read the topics once, after the run: latencies in seconds by kind (see the module doc). Only
    the measured traffic counts: records of the warm-up (built before ``producer_start_ms``) are left out."""
    events: dict[str, tuple[int, float]] = {}  # event id -> (append time, occurred_at), milliseconds
    generator: list[float] = []
    for record in await hub.bus.read_all(hub.topics.profile_events):
        body = orjson.loads(record.value)
        occurred = datetime.fromisoformat(body["occurred_at"]).timestamp() * 1000
        if occurred < producer_start_ms:
            continue
        events[body["event_id"]] = (record.timestamp_ms, occurred)
        generator.append((record.timestamp_ms - occurred) / 1000)
    out: dict[str, list[float]] = {"immediate": [], "delayed": [], "client": [], "generator": generator,
                                   "floor": [], "delayed_after_traffic": []}
    for record in await hub.bus.read_all(hub.topics.messages):
        intent = orjson.loads(record.value)
        if intent["trigger_event_id"] not in events:
            continue  # a warm-up event's
        appended, occurred = events[intent["trigger_event_id"]]
        if intent["scenario"] in delayed:
            ready = appended + wait_ms
            # A timer whose fire time plus lateness falls after the traffic stopped waits for the watermark
            # to move on an idle stage (idle_seconds): counted apart, it says nothing about the busy stage.
            kind = "delayed" if ready <= producer_end_ms else "delayed_after_traffic"
            out[kind].append((record.timestamp_ms - ready) / 1000)
        else:
            out["immediate"].append((record.timestamp_ms - appended) / 1000)
            out["client"].append((record.timestamp_ms - occurred) / 1000)
    if floor_topic is not None:
        for record in await hub.bus.read_all(floor_topic):
            source = record.header(SOURCE_TS)
            if source is not None and int(source) >= producer_start_ms:
                out["floor"].append((record.timestamp_ms - int(source)) / 1000)
    return out


def _batch_totals(hub: Hub) -> tuple[float, float]:
    """The triggers stage's batch count and their total seconds (its histogram)."""
    count = total = 0.0
    for metric in hub.metrics.stage_batch_seconds.collect():
        for sample in metric.samples:
            if sample.labels.get("stage") != "triggers":
                continue
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return count, total


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


def _line(label: str, values: list[float], what: str) -> str:
    return (f"  {label:<10} {len(values):>7}  p50 {pct(values, 0.5):7.1f} ms  p99 {pct(values, 0.99):7.1f} ms"
            + (f"  mean {statistics.fmean(values) * 1000:6.1f} ms" if values else "") + f"  ({what})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--scenarios", type=int, action="append")
    parser.add_argument("--delay", default="5s")
    parser.add_argument("--busy", action="store_true", help="every scenario fires (see the module doc)")
    parser.add_argument("--no-floor", action="store_true", help="leave out the pass-through floor")
    parser.add_argument("--linger-ms", type=int, default=Settings.model_fields["kafka_linger_ms"].default,
                        help="the hub's producer linger_ms (kafka_linger_ms; the load generator keeps 5)")
    parser.add_argument("--full-validation", action="store_true",
                        help="also run each scenario count with parse_once = false and print the ratio")
    args = parser.parse_args()
    results = {}
    for n in args.scenarios or [120, 5]:
        r = results[n] = await run(n, rate=args.rate, seconds=args.seconds, delay=args.delay, busy=args.busy,
                                   with_floor=not args.no_floor, linger_ms=args.linger_ms)
        if args.full_validation:
            f = await run(n, rate=args.rate, seconds=args.seconds, delay=args.delay, busy=args.busy,
                          with_floor=False, linger_ms=args.linger_ms, parse_once=False)
            print(f"{n} scenarios, full validation: {f['events']} events at {f['rate']:.0f}/s; stage CPU "
                  f"{f['cpu_per_event_ms']:.3f} ms/event; {f['batch']:.0f} events per batch")
            print(f"  parse once vs full validation: CPU per event {r['cpu_per_event_ms'] / f['cpu_per_event_ms']:.2f}x "
                  f"({r['trusted']:.0f} records decoded trusted); the decode step alone {r['decode_us']:.1f} us vs "
                  f"{f['decode_us']:.1f} us per event ({r['decode_us'] / f['decode_us']:.2f}x)")
        lat = r["latencies"]
        caught = f"{r['caught_up']:.2f} s" if r["caught_up"] is not None else "not within the wait"
        print(f"{n} scenarios{' (busy)' if args.busy else ''}: {r['events']} events at {r['rate']:.0f}/s; stage "
              f"committed {r['throughput']:.0f} events/s while they came, caught up {caught} after the last; "
              f"{r['batch']:.0f} events per batch, {r['batch_ms']:.1f} ms per batch; stage CPU "
              f"{r['cpu_per_event_ms']:.3f} ms/event; load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after")
        print("  the hub, append time to append time (broker clock):")
        print(_line("immediate", lat["immediate"], "event on cdp.profile-events -> intent on cdp.messages"))
        print(_line("delayed", lat["delayed"], f"the same beyond delay {args.delay} + lateness {LATENESS}"))
        if lat["delayed_after_traffic"]:
            print(_line("(idle)", lat["delayed_after_traffic"],
                        "delayed intents due after the traffic stopped: the watermark moves on idle_seconds"))
        if lat["floor"]:
            print(_line("floor", lat["floor"], f"pass-through stage under the same runner, "
                                               f"{r['floor_events']} records: one Kafka hop, no work"))
        print("  around it (not the hub's):")
        print(_line("generator", lat["generator"], "occurred_at -> event on the topic: the load generator's "
                                                   "batching and acks"))
        print(_line("client", lat["client"], "occurred_at -> intent on the topic, immediate scenarios"))
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
