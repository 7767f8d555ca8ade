"""Kafka producer compression, chosen by measurement: the hub's own canonical event records produced and consumed
through the real broker with each codec aiokafka can use (gzip built in; lz4, zstd, snappy through cramjam) and
with none, in the same run.

    python bench/compression.py [--events 40000] [--rounds 2] [--codec none --codec gzip ...] [--batch 250]

The records are what the events topic carries: canonical events (``cdp.event/1``, ~580 bytes of JSON on
average) built through :class:`~cdp_hub.schema.events.Event` and keyed and headed by
:func:`~cdp_hub.bus.events.event_message`, a web shop's mix (product views, screens, searches, carts, orders,
customer updates) for ~1/4 as many customers as events. Both ends are the hub's own bus,
:class:`~cdp_hub.bus.kafka.KafkaBus` (idempotent producer, ``acks=all``, ``linger_ms=5``), with only its
``compression`` (the ``kafka_compression`` setting) changed:

- the producer publishes ``--batch`` records at a time through ``publish_many`` and waits for their acks, as a
  stage publishes the output of one batch;
- the consumer, a group member started before the producer, reads them with ``getmany`` in batches of
  ``--batch`` and commits after each, as the stage runner does.

Each runs in a process of its own, on a fresh topic of 4 partitions at ``$CDP_HUB_KAFKA_BOOTSTRAP`` (default:
the test broker). Printed per codec (the median over ``--rounds``, the codecs interleaved in every round so that
the machine's load falls on all of them alike):

- events/s: records over the time from the producer's first publish to the consumer's last record;
- CPU µs/event: user + system CPU of the producer process plus the consumer process, per record (less sensitive
  to the load of a shared machine than events/s);
- bytes on the wire: the Kafka protocol bytes the producer process sent to the broker and the consumer
  process received from it over the measured span (request and response framing included; see ``_Wire``);
- each figure as a ratio to gzip's in the same round, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_message
from cdp_hub.schema.events import Event

KAFKA = os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
CODECS = ("none", "gzip", "lz4", "zstd", "snappy")  # cdp_hub.bus.kafka.COMPRESSIONS, gzip (the old default) second
ANONYMOUS = uuid.UUID("2b9c7a52-1f0e-4d7c-9a3b-5e8f6d4c2a10")
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
PRODUCTS = ["Молоко 3,2% 1 л", "Хлеб бородинский", "Сыр российский 200 г", "Кофе молотый 250 г", "Шампунь 400 мл",
            "Яблоки гала 1 кг", "Детское пюре 90 г", "Вода минеральная 1,5 л"]
PAGES = ["/c/dairy", "/c/bakery", "/p/{sku}", "/cart", "/search?q=молоко", "/promo/black-friday"]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1)",
          "ShopApp/5.2.1 (Android 14; SM-A546B)"]


def canonical_events(n: int, seed: int) -> list[OutgoingMessage]:
    """``n`` canonical event records (topic left empty: each run sets its own) for about n/4 customers."""
    rng = random.Random(seed)
    customers = max(1, n // 4)
    out = []
    for i in range(n):
        c = rng.randrange(customers)
        sku = f"SKU{rng.randrange(5000):05d}"
        name = PRODUCTS[rng.randrange(len(PRODUCTS))]
        price = Decimal(rng.randrange(4900, 159900)) / 100
        device = rng.randrange(2)  # two devices per customer: one anonymous id each
        source = "web" if device == 0 else "app"
        identities = [{"kind": "anonymous_id", "value": str(uuid.uuid5(ANONYMOUS, f"{c}/{device}"))}]
        if rng.random() < 0.3:
            identities.append({"kind": "crm_id", "value": f"C{c:08d}"})
        if rng.random() < 0.1:
            identities.append({"kind": "email", "value": f"customer{c}@example.ru"})
        context = {"ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                   "user_agent": AGENTS[2] if source == "app" else rng.choice(AGENTS[:2])}
        if source == "web":
            context["page_url"] = "https://shop.example.ru" + rng.choice(PAGES).format(sku=sku)
        else:
            context["app_version"] = "5.2.1"
        body: dict[str, Any] = {
            "source": source,
            "source_record_id": f"{seed}-{i}-{rng.getrandbits(32):08x}",
            "occurred_at": T0 + timedelta(milliseconds=i * 37),
            "received_at": T0 + timedelta(milliseconds=i * 37 + rng.randrange(20, 900)),
            "identities": identities,
            "context": context,
        }
        kind = rng.random()
        if kind < 0.45:
            body.update(type="product.viewed", properties={"sku": sku, "name": name, "price": price})
        elif kind < 0.6:
            body.update(type="screen.viewed", properties={"screen": rng.choice(["Catalog", "Cart", "Home"])})
        elif kind < 0.7:
            body.update(type="search.performed", properties={"query": rng.choice(["молоко", "кофе", "сыр"]),
                                                            "results_count": rng.randrange(200)})
        elif kind < 0.82:
            quantity = rng.randrange(1, 4)
            body.update(type="cart.updated", properties={
                "cart_id": f"cart-{c}", "currency": "RUB", "total": price * quantity,
                "items": [{"sku": sku, "name": name, "price": price, "quantity": quantity}]})
        elif kind < 0.92:
            lines = [(f"SKU{rng.randrange(5000):05d}", PRODUCTS[rng.randrange(len(PRODUCTS))],
                      Decimal(rng.randrange(4900, 59900)) / 100, rng.randrange(1, 3)) for _ in range(rng.randrange(1, 3))]
            body.update(type="order.placed", properties={
                "order_id": f"o-{seed}-{i}", "currency": "RUB", "total": sum(p * q for _, _, p, q in lines),
                "items": [{"sku": s, "name": nm, "price": p, "quantity": q} for s, nm, p, q in lines]})
        else:
            body.update(type="customer.updated", traits={"first_name": rng.choice(["Анна", "Иван", "Ольга"]),
                                                         "city": rng.choice(["Москва", "Казань", "Пермь"]),
                                                         "loyalty_tier": rng.choice(["silver", "gold"])})
        out.append(event_message("", Event.model_validate(body)))
    return out


class _Wire:
    """Kafka protocol bytes this process wrote to and read from its broker connections. aiokafka writes each
    request with one ``StreamWriter.write`` and reads each response with ``StreamReader.readexactly`` (size,
    then body); the only streams in these processes are its connections, so counting those two calls counts
    the TCP payload both ways (``/proc/self/io`` does not: socket ``send``/``recv`` are not in its counters)."""

    read = 0
    written = 0

    @classmethod
    def install(cls) -> None:
        write, readexactly = asyncio.StreamWriter.write, asyncio.StreamReader.readexactly

        def counted_write(self: asyncio.StreamWriter, data: Any) -> None:
            cls.written += len(data)
            write(self, data)

        async def counted_readexactly(self: asyncio.StreamReader, n: int) -> bytes:
            data = await readexactly(self, n)
            cls.read += len(data)
            return data

        asyncio.StreamWriter.write = counted_write  # type: ignore[method-assign]
        asyncio.StreamReader.readexactly = counted_readexactly  # type: ignore[method-assign]


def _io_bytes() -> tuple[int, int]:
    """(bytes read, bytes written) on this process's broker connections so far."""
    return _Wire.read, _Wire.written


def _bus(codec: str) -> Any:
    from cdp_hub.bus.kafka import KafkaBus

    return KafkaBus(KAFKA, client_id="bench-compression", compression=codec)


def _produce(codec: str, topic: str, messages: list[OutgoingMessage], batch: int, ready: Any, out: Any) -> None:
    _Wire.install()

    async def main() -> None:
        bus = _bus(codec)
        async with bus:
            ready.wait()
            (_, written0), cpu0, started = _io_bytes(), time.process_time(), time.monotonic()
            for i in range(0, len(messages), batch):
                await bus.publish_many([OutgoingMessage(topic, m.value, m.key, m.headers)
                                        for m in messages[i:i + batch]])
            (_, written), cpu = _io_bytes(), time.process_time()
        out.put({"started": started, "cpu": cpu - cpu0, "wire": written - written0})

    asyncio.run(main())


def _consume(codec: str, topic: str, expected: int, batch: int, ready: Any, out: Any) -> None:
    _Wire.install()

    async def main() -> None:
        bus = _bus(codec)
        async with bus:
            consumer = bus.consumer([topic], group=f"{topic}.reader")
            async with consumer:
                (read0, _), cpu0 = _io_bytes(), time.process_time()
                ready.set()
                seen = 0
                while seen < expected:
                    records = await consumer.getmany(timeout_ms=200, max_records=batch)
                    if records:
                        seen += len(records)
                        await consumer.commit()
                finished = time.monotonic()
                (read, _), cpu = _io_bytes(), time.process_time()
        out.put({"finished": finished, "cpu": cpu - cpu0, "wire": read - read0, "seen": seen})

    asyncio.run(main())


async def _create_topic(topic: str) -> None:
    bus = _bus("none")
    async with bus:
        await bus.ensure_topics([topic], partitions=4)


async def _delete_topic(topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, client_id="bench-compression")
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def run(codec: str, messages: list[OutgoingMessage], batch: int) -> dict[str, float]:
    topic = f"bench-compression-{codec}-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(topic))
    ctx = multiprocessing.get_context("fork")
    ready, produced, consumed = ctx.Event(), ctx.Queue(), ctx.Queue()
    consumer = ctx.Process(target=_consume, args=(codec, topic, len(messages), batch, ready, consumed))
    producer = ctx.Process(target=_produce, args=(codec, topic, messages, batch, ready, produced))
    consumer.start()
    producer.start()
    try:
        p, c = produced.get(timeout=600), consumed.get(timeout=600)
    finally:
        producer.join(timeout=30)
        consumer.join(timeout=30)
        asyncio.run(_delete_topic(topic))
    n = len(messages)
    return {"rate": n / (c["finished"] - p["started"]), "cpu_us": (p["cpu"] + c["cpu"]) / n * 1e6,
            "producer_us": p["cpu"] / n * 1e6, "consumer_us": c["cpu"] / n * 1e6,
            "sent_per_event": p["wire"] / n, "read_per_event": c["wire"] / n, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=250, help="records per publish and per getmany (a stage batch)")
    parser.add_argument("--codec", action="append", choices=CODECS, help="default: all of them")
    args = parser.parse_args()
    codecs = args.codec or list(CODECS)
    if "gzip" not in codecs:
        codecs.append("gzip")  # the ratios are against gzip in the same round

    messages = canonical_events(args.events, seed=13)
    sizes = [len(m.value) for m in messages]
    headers = statistics.mean(len(m.key or b"") + sum(len(k) + len(v) for k, v in m.headers) for m in messages)
    print(f"{args.events} canonical events: value {statistics.mean(sizes):.0f} bytes on average "
          f"(median {statistics.median(sizes):.0f}), key + headers {headers:.0f} bytes; batches of {args.batch}; "
          f"broker {KAFKA}; load average {os.getloadavg()[0]:.1f}")

    results: dict[str, list[dict[str, float]]] = {codec: [] for codec in codecs}
    for round_no in range(1, args.rounds + 1):
        order = codecs[round_no % len(codecs):] + codecs[:round_no % len(codecs)]  # a different one goes first
        for codec in order:
            r = run(codec, messages, args.batch)
            results[codec].append(r)
            print(f"  round {round_no} {codec:>6}: {r['rate']:8,.0f} events/s  {r['cpu_us']:6.1f} µs CPU/event "
                  f"(producer {r['producer_us']:.1f}, consumer {r['consumer_us']:.1f})  "
                  f"{r['sent_per_event']:6.1f} B/event sent, {r['read_per_event']:6.1f} read  "
                  f"load {r['load']:.1f}", flush=True)

    def median(codec: str, key: str) -> float:
        return statistics.median(r[key] for r in results[codec])

    def versus_gzip(codec: str, key: str) -> float:
        # Round by round against the gzip run of the same round, then the median of those ratios.
        return statistics.median(r[key] / g[key] for r, g in zip(results[codec], results["gzip"], strict=True))

    print(f"\nmedians over {args.rounds} round(s); ratios against gzip in the same round")
    print(f"{'codec':>7} {'events/s':>9} {'×gzip':>6} {'µs CPU/ev':>10} {'×gzip':>6} {'B/ev sent':>10} "
          f"{'×gzip':>6} {'B/ev read':>10}")
    for codec in codecs:
        print(f"{codec:>7} {median(codec, 'rate'):9,.0f} {versus_gzip(codec, 'rate'):6.2f} "
              f"{median(codec, 'cpu_us'):10.1f} {versus_gzip(codec, 'cpu_us'):6.2f} "
              f"{median(codec, 'sent_per_event'):10.1f} {versus_gzip(codec, 'sent_per_event'):6.2f} "
              f"{median(codec, 'read_per_event'):10.1f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (2 cores shared with Kafka, PostgreSQL, Redis and "
          "other work)")


if __name__ == "__main__":
    main()
