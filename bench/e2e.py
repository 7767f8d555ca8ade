"""The whole pipeline's sustained throughput: ``cdp-hub run`` (one process, and ``--processes auto``) fed paced
Segment-style ``POST /v1/batch`` traffic through real Kafka, PostgreSQL and Redis, against the raw aiokafka
produce + consume ceiling on the same bytes, measured in the same run.

    python bench/e2e.py [--mode single --mode auto] [--rates 1000,1500,2000,...,5000,6000,8000] [--step 30]
                        [--users 50000] [--latency-rate 2000] [--plot e2e.png]

Traffic: ``--users`` customers, each on two devices (two ``anonymousId``), send identify (with e-mail and
phone), page, screen, Product Viewed, Product Added and Order Completed (with the e-mail in ``context.traits``,
as RudderStack's SDK sends it), 100 messages per request, every ``messageId`` new. A user's second device is
linked to the first by the identify, so profiles merge while the load runs. The hub runs the built-in scenarios
plus one transactional order thank-you (``order.placed``, no consent needed), so orders become e-mails in the
outbox channel: the event -> message path is the whole pipeline (edge, resolver, triggers, delivery).

For each mode the hub gets a fresh database, topic prefix and Redis database, and then:

1. **latency**: ``--latency-rate`` events/s for ``--step`` seconds; event -> message latency is the time from
   the edge receiving the order (``events.received_at``) to the outbox write (``messages.sent_at``), both
   stamped by the hub's clock, for every order of the step (p50/p99).
2. **the ladder**: each rate of ``--rates`` in turn for ``--step`` seconds, each from a drained pipeline
   (every group's lag 0). A rate *holds* when the edge accepted at least 99% of what was offered (no 503
   backpressure), the lag of all groups together at the end of the step was at most ``--lag-seconds``
   seconds of the Kafka records the step produced (so the stages were keeping up, not catching up), and the
   lag then returned to 0 within ``--drain`` seconds. The ladder stops at the first rate that does not hold;
   the figure reported is the highest rate that held.

While the load runs, the lag of the hub's four consumer groups (end offset minus committed offset, read from
the broker the way ``kafka-consumer-groups`` does) and the rate the resolver commits are sampled every
second; CPU seconds and RSS of every hub process (the supervisor and each worker), of the database's
PostgreSQL backends and of the Kafka broker are read from /proc at each step's start and once its work has
drained, so the figures per event are the load-independent answer on a shared machine. The plot (``--plot``) shows, per mode, the
rate offered vs accepted vs drained over time and the lag.

The raw ceiling: one process produces the hub's canonical events for the same traffic (acks=all, the hub's
default zstd compression, 4 partitions) and consumes them again, as fast as aiokafka allows. The hub's best
rate is printed as a share of it.

Services: ``$CDP_HUB_KAFKA_BOOTSTRAP``, ``$CDP_HUB_POSTGRES_DSN`` and ``$CDP_HUB_REDIS_URL`` (``scripts/services.sh
up`` prints them; default: the test servers). Redis database ``--redis-db`` (default 13) is flushed before and
after each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
from _topics import delete_topics  # bench/ is the script's directory
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from ingest_http import _backends
from resolver_stream import _drop_db, _fresh_db

KAFKA = os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
REDIS = os.environ.get("CDP_HUB_REDIS_URL", "redis://127.0.0.1:16379/0")
KEY = "wk-e2e"
PER_REQUEST = 100
GROUPS = {"resolver": "cdp.events", "triggers": "cdp.profile-events", "delivery": "cdp.messages", "dlq": "cdp.dlq"}
PARTITIONS = 4

ORDER_THANKS = """\
id: e2e_order_thanks
description: "Thank the customer for an order (transactional: no marketing consent needed)."
trigger: {event: order.placed}
channel: email
template: order_confirmation
category: transactional
max_age: 1d
"""


# -- traffic ----------------------------------------------------------------------------------------------------


class Traffic:
    """Segment-style messages of ``users`` customers on two devices each; every message id is new."""

    def __init__(self, users: int, seed: int) -> None:
        self.users = users
        self.rng = random.Random(seed)
        self.serial = 0
        self.run = uuid.uuid4().hex[:8]

    def message(self, now: str) -> dict[str, Any]:
        rng = self.rng
        u = rng.randrange(self.users)
        device = rng.randrange(2)
        self.serial += 1
        base: dict[str, Any] = {
            "anonymousId": f"a-{u}-{device}", "messageId": f"{self.run}-{self.serial}", "timestamp": now,
            "context": {"ip": "10.1.2.3", "userAgent": "Mozilla/5.0", "locale": "ru-RU"}}
        kind = rng.random()
        if kind < 0.12:
            base.update(type="identify", userId=f"u{u}", traits={
                "email": f"user{u}@example.ru", "phone": f"+7916{u:07d}", "firstName": "Анна"})
        elif kind < 0.22:
            base.update(type="track", event="Order Completed", userId=f"u{u}", properties={
                "order_id": f"o-{self.run}-{self.serial}", "total": 1299.8, "currency": "RUB",
                "products": [{"product_id": f"SKU{rng.randrange(500)}", "price": 649.9, "quantity": 2}]})
            base["context"]["traits"] = {"email": f"user{u}@example.ru"}
        elif kind < 0.52:
            base.update(type="track", event="Product Viewed",
                        properties={"product_id": f"SKU{rng.randrange(500)}", "name": "Молоко", "price": 89.9})
        elif kind < 0.62:
            base.update(type="track", event="Product Added",
                        properties={"product_id": f"SKU{rng.randrange(500)}", "price": 89.9, "quantity": 1,
                                    "cart_id": f"c-{u}"})
        elif kind < 0.92:
            base.update(type="page", name="Catalog", properties={"url": "https://shop.example.ru/c/milk"})
        else:
            base.update(type="screen", name="Cart")
            base["context"].update(app={"version": "5.2.1"}, device={"id": f"dev-{u}-{device}"})
        if device == 1 and rng.random() < 0.5 and "userId" not in base:
            base["userId"] = f"u{u}"  # the logged-in second device
        return base

    def body(self) -> bytes:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return orjson.dumps({"batch": [self.message(now) for _ in range(PER_REQUEST)], "sentAt": now})

    def messages(self, count: int) -> Iterator[dict[str, Any]]:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for _ in range(count):
            yield self.message(now)


# -- the raw ceiling ---------------------------------------------------------------------------------------------


async def raw_ceiling(records: int, users: int) -> dict[str, float]:
    """aiokafka alone: produce the hub's canonical events for this traffic and consume them, in one process."""
    from cdp_hub.connector.tracking import TrackingConnector

    connector = TrackingConnector({}, instance="web")
    traffic = Traffic(users, seed=7)
    values: list[bytes] = []
    for message in traffic.messages(records):
        values.extend(event.to_json() for event in connector.to_events(message))
    topic = f"e2e-raw-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", compression_type="zstd",
                                    linger_ms=5, max_batch_size=256 * 1024)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None, max_poll_records=2000)
        await producer.start()
        for _ in range(100):  # the new topic's leaders become known to the client
            if len(await producer.partitions_for(topic) or ()) == PARTITIONS:
                break
            await asyncio.sleep(0.1)
        await consumer.start()
        cpu0 = time.process_time()
        started = time.perf_counter()

        async def produce() -> None:
            futures = []
            for i, value in enumerate(values):
                futures.append(await producer.send(topic, value, key=str(i % 997).encode()))
            await producer.flush()
            await asyncio.gather(*futures)

        async def consume() -> None:
            seen = 0
            while seen < len(values):
                batches = await consumer.getmany(timeout_ms=500)
                seen += sum(len(b) for b in batches.values())

        await asyncio.gather(produce(), consume())
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        await producer.stop()
        await consumer.stop()
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    return {"events_per_s": len(values) / elapsed, "records": len(values), "bytes": statistics.mean(map(len, values)),
            "cpu_us": cpu / len(values) * 1e6}


# -- the hub under test -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_url(db: int) -> str:
    base = REDIS.rsplit("/", 1)[0] if REDIS.count("/") >= 3 else REDIS.rstrip("/")
    return f"{base}/{db}"


async def _flush_redis(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@dataclass
class Hub:
    mode: str
    workdir: Path
    dsn: str
    database: str
    prefix: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "hub.log"

    def write_config(self, redis_url: str) -> Path:
        scenarios = self.workdir / "scenarios"
        scenarios.mkdir(parents=True, exist_ok=True)
        (scenarios / "e2e_order_thanks.yaml").write_text(ORDER_THANKS, encoding="utf-8")
        cfg = self.workdir / "cdp-hub.toml"
        cfg.write_text(f"""
bus = "kafka"
kafka_bootstrap = "{KAFKA}"
topic_prefix = "{self.prefix}"
topic_partitions = {PARTITIONS}
postgres_dsn = "{self.dsn}"
redis_url = "{redis_url}"
data_dir = "{self.workdir / 'data'}"
scenarios_dir = "{scenarios}"
http_port = {self.port}
log_format = "text"

[connectors.web]
type = "tracking"
config = {{ write_keys = ["{KEY}"] }}

[channels.email]
type = "outbox"
config = {{ directory = "{self.workdir / 'outbox'}" }}
""", encoding="utf-8")
        return cfg

    def start(self, cfg: Path) -> None:
        # The config file says everything; CDP_HUB_* variables of the caller would override it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
        command = [sys.executable, "-m", "cdp_hub.cli", "--config", str(cfg), "--log-level", "WARNING", "run"]
        if self.mode == "auto":
            command += ["--processes", "auto"]
        self.proc = subprocess.Popen(command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**env, "PYTHONUNBUFFERED": "1"})

    def processes(self) -> dict[str, psutil.Process]:
        """The hub's processes by name: the supervisor (or the single process) and each worker by its stage."""
        assert self.proc is not None
        top = psutil.Process(self.proc.pid)
        out = {"hub" if self.mode == "single" else "supervisor": top}
        for child in top.children():
            try:
                cmd = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "--stage" in cmd:
                out[cmd[cmd.index("--stage") + 1]] = child
        return out

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise SystemExit(f"cdp-hub run ({self.mode}) exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        expected = 1 if self.mode == "single" else 5
                        if len(self.processes()) >= expected:
                            return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.3)
        raise SystemExit(f"cdp-hub run ({self.mode}) not ready in 180 s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()


class Lag:
    """Consumer lag of the hub's groups, read from the broker, and the resolver's committed position."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        self.reader = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=None, enable_auto_commit=False)
        self.tps = {g: [TopicPartition(prefix + t, p) for p in range(PARTITIONS)] for g, t in GROUPS.items()}

    async def start(self) -> None:
        await self.admin.start()
        await self.reader.start()

    async def stop(self) -> None:
        await self.reader.stop()
        await self.admin.close()

    async def read(self) -> tuple[dict[str, int], int, int]:
        """Lag per group, the resolver's committed offsets summed (its position on the events topic), and the
        end offsets of the four topics summed (every record produced so far)."""
        all_tps = [tp for tps in self.tps.values() for tp in tps]
        ends = await self.reader.end_offsets(all_tps)
        starts = await self.reader.beginning_offsets(all_tps)
        lags: dict[str, int] = {}
        resolver_position = 0
        for group, tps in self.tps.items():
            committed = await self.admin.list_consumer_group_offsets(f"{self.prefix}cdp-hub.{group}")
            total = 0
            for tp in tps:
                meta = committed.get(tp)
                offset = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
                total += max(0, ends[tp] - offset)
                if group == "resolver":
                    resolver_position += offset
            lags[group] = total
        return lags, resolver_position, sum(ends.values())


@dataclass
class Sample:
    t: float
    offered: int
    accepted: int
    lag: int
    resolver_position: int


@dataclass
class Step:
    rate: int
    seconds: float
    offered: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    end_lag: int = 0
    drained_in: float | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    cpu: dict[str, float] = field(default_factory=dict)
    holds: bool = False
    records_per_s: float = 0.0


class Load:
    """Paced POSTs of 100-message batches at a given rate; counts what was offered and accepted per second."""

    def __init__(self, url: str, traffic: Traffic) -> None:
        self.url = url
        self.traffic = traffic
        self.headers = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
                        "Content-Type": "application/json"}
        self.offered = 0
        self.accepted = 0
        self.rejected = 0
        self.errors = 0
        self.client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64,
                                                                        max_keepalive_connections=64))

    async def _post(self, body: bytes) -> None:
        try:
            response = await self.client.post(self.url + "/v1/batch", content=body, headers=self.headers)
        except httpx.TransportError:
            self.errors += PER_REQUEST
            return
        if response.status_code == 200:
            self.accepted += PER_REQUEST
        elif response.status_code in (429, 503):
            self.rejected += PER_REQUEST
        else:
            self.errors += PER_REQUEST
            print(f"    HTTP {response.status_code}: {response.text[:200]}", file=sys.stderr)

    async def run(self, rate: int, seconds: float) -> None:
        interval = PER_REQUEST / rate
        in_flight: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - start < seconds:
            due = start + sent * interval
            if due > now:
                await asyncio.sleep(due - now)
            if len(in_flight) >= 256:  # the hub is far behind: the offer is what we could post
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self._post(self.traffic.body()))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            self.offered += PER_REQUEST
            sent += 1
        if in_flight:
            await asyncio.wait(in_flight)

    async def close(self) -> None:
        await self.client.aclose()


def _cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
        return float(times.user + times.system)
    except psutil.NoSuchProcess:
        return 0.0


def _kafka_broker() -> psutil.Process | None:
    port = int(KAFKA.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    return None


class Meter:
    """CPU seconds and peak RSS of the hub's processes, its PostgreSQL backends and the broker."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.broker = _kafka_broker()
        self.rss: dict[str, float] = {}
        self._seen_backends: dict[int, float] = {}
        """The last CPU seconds seen of every backend of the hub's database, also of those gone since: the pools
        close idle connections, and a sum over the backends alive at each end of a step lost their CPU."""
        self._reused = 0.0

    async def sample_backends(self) -> float:
        """CPU seconds of every backend the hub's database has had since the meter began (sampled each second
        during a step, so a backend that leaves takes at most a second of its CPU with it)."""
        for pid, cpu in (await _backends(self.hub.dsn)).items():
            before = self._seen_backends.get(pid, 0.0)
            if cpu < before:  # the pid was taken by a new backend: keep the old one's total
                self._reused += before
            self._seen_backends[pid] = cpu
        return self._reused + sum(self._seen_backends.values())

    async def snapshot(self) -> dict[str, float]:
        out = {name: _cpu(p) for name, p in self.hub.processes().items()}
        out["postgresql"] = await self.sample_backends()
        if self.broker is not None:
            out["kafka"] = _cpu(self.broker)
        out["bench"] = time.process_time()
        return out

    def sample_rss(self) -> None:
        for name, proc in self.hub.processes().items():
            try:
                mb = proc.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
            self.rss[name] = max(self.rss.get(name, 0.0), mb)


async def wait_drained(lag: Lag, seconds: float) -> float | None:
    """Seconds until every group's lag is 0, or None if it is not within ``seconds``."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        lags, _, _ = await lag.read()
        if sum(lags.values()) == 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.25)
    return None


async def run_step(hub: Hub, load: Load, lag: Lag, meter: Meter, rate: int, seconds: float,
                   samples: list[Sample], t0: float, args: argparse.Namespace) -> Step:
    """``rate`` events/s for ``seconds``, from a drained pipeline; CPU is counted until the step's work is
    drained again (or the drain time is up), so it is the CPU of the step's own events."""
    step = Step(rate, seconds)
    if await wait_drained(lag, 120) is None:
        raise SystemExit(f"{hub.mode}: the lag of the previous step did not return to 0 in 120 s")
    offered0, accepted0, rejected0, errors0 = load.offered, load.accepted, load.rejected, load.errors
    _, _, produced0 = await lag.read()
    cpu0 = await meter.snapshot()
    step.started_at = datetime.now(UTC)
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            lags, position, _ = await lag.read()
            meter.sample_rss()
            await meter.sample_backends()
            samples.append(Sample(time.perf_counter() - t0, load.offered, load.accepted, sum(lags.values()), position))
            try:
                await asyncio.wait_for(done.wait(), 1.0)
            except TimeoutError:
                pass

    task = asyncio.create_task(sampler())
    await load.run(rate, seconds)
    step.ended_at = datetime.now(UTC)
    lags, _, produced1 = await lag.read()
    step.end_lag = sum(lags.values())
    records_per_s = (produced1 - produced0) / seconds
    step.drained_in = await wait_drained(lag, args.drain)
    cpu1 = await meter.snapshot()
    done.set()
    await task
    step.offered = load.offered - offered0
    step.accepted = load.accepted - accepted0
    step.rejected = load.rejected - rejected0
    step.errors = load.errors - errors0
    step.cpu = {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1}
    step.records_per_s = records_per_s
    step.holds = (step.accepted >= 0.99 * step.offered and step.errors == 0
                  and step.end_lag <= records_per_s * args.lag_seconds and step.drained_in is not None)
    return step


async def latency(dsn: str, since: datetime, until: datetime) -> dict[str, float]:
    """Event -> message latency of the orders the edge received in [since, until): p50, p99 and the count."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT extract(epoch FROM m.sent_at - e.received_at) AS seconds
               FROM messages m JOIN events e ON e.event_id = m.trigger_event_id
               WHERE m.status = 'sent' AND m.scenario = 'e2e_order_thanks'
                 AND e.received_at >= $1 AND e.received_at < $2""", since, until)
        orders = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = 'order.placed' AND received_at >= $1 AND received_at < $2",
            since, until)
    finally:
        await conn.close()
    values = sorted(float(r["seconds"]) for r in rows)
    if not values:
        return {"count": 0, "orders": float(orders), "p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"count": len(values), "orders": float(orders), "p50_ms": 1000 * statistics.median(values),
            "p99_ms": 1000 * values[min(len(values) - 1, int(len(values) * 0.99))]}


def _describe(step: Step) -> str:
    drained = f"lag 0 after {step.drained_in:.1f} s" if step.drained_in is not None else "lag did not return to 0"
    return (f"{step.rate:6,d} events/s offered: {step.accepted / step.seconds:7,.0f} accepted/s"
            f"{f', {step.rejected:,} refused (503)' if step.rejected else ''}"
            f"{f', {step.errors:,} errors' if step.errors else ''}; {step.records_per_s:,.0f} Kafka records/s, "
            f"lag at the end {step.end_lag:,}, {drained}"
            f" -> {'holds' if step.holds else 'does not hold'}")


def _cpu_line(step: Step) -> str:
    events = max(1, step.accepted)
    parts = [f"{name} {seconds / events * 1e6:.0f}" for name, seconds in sorted(step.cpu.items(), key=lambda kv: -kv[1])
             if seconds > 0]
    hub_total = sum(v for k, v in step.cpu.items() if k not in ("postgresql", "kafka", "bench"))
    total = hub_total + step.cpu.get("postgresql", 0.0) + step.cpu.get("kafka", 0.0)
    return (f"      CPU us/event: {', '.join(parts)}; hub {hub_total / events * 1e6:.0f}, with PostgreSQL and Kafka "
            f"{total / events * 1e6:.0f}")


async def measure_mode(mode: str, args: argparse.Namespace, t_offset: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"cdp-e2e-{mode}-"))
    database = f"bench_e2e_{os.getpid()}_{mode}"
    dsn = await _fresh_db(database)
    redis_url = _redis_url(args.redis_db)
    await _flush_redis(redis_url)
    hub = Hub(mode, workdir, dsn, database, f"e2e{uuid.uuid4().hex[:6]}.", _free_port())
    hub.start(hub.write_config(redis_url))
    samples: list[Sample] = []
    steps: list[Step] = []
    result: dict[str, Any] = {"mode": mode, "samples": samples, "steps": steps}
    lag = Lag(hub.prefix)
    load = Load(f"http://127.0.0.1:{hub.port}", Traffic(args.users, seed=11))
    try:
        await hub.wait_ready()
        await lag.start()
        meter = Meter(hub)
        t0 = time.perf_counter() - t_offset
        print(f"  {mode}: {', '.join(f'{n} pid {p.pid}' for n, p in hub.processes().items())}")
        # Warm up: the first profiles, topics' leaders, the hub's caches and plans.
        warm = await run_step(hub, load, lag, meter, min(500, args.latency_rate), 5, samples, t0, args)
        print(f"    warm-up    {_describe(warm)}")
        step = await run_step(hub, load, lag, meter, args.latency_rate, args.step, samples, t0, args)
        await asyncio.sleep(2)
        result["latency"] = await latency(dsn, step.started_at, step.ended_at)
        lat = result["latency"]
        print(f"    latency    {_describe(step)}")
        print(f"      event -> message: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
              f"({lat['count']:,} messages of {int(lat['orders']):,} orders)")
        print(_cpu_line(step))
        steps.append(step)
        for rate in args.rates:
            step = await run_step(hub, load, lag, meter, rate, args.step, samples, t0, args)
            steps.append(step)
            print(f"    ladder     {_describe(step)}  (load average {os.getloadavg()[0]:.1f})")
            print(_cpu_line(step))
            if not step.holds:
                break
        result["rss"] = dict(meter.rss)
        result["t_end"] = time.perf_counter() - t0
        print("      peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(meter.rss.items())))
    finally:
        await load.close()
        await lag.stop()
        hub.stop()
        await delete_topics(KAFKA, hub.prefix)
        await _drop_db(database)
        await _flush_redis(redis_url)
        shutil.rmtree(workdir, ignore_errors=True)
    held = [s.rate for s in steps if s.holds]
    result["best"] = max(held) if held else 0
    return result


def _rates(samples: list[Sample], attr: str) -> list[float]:
    """Per-second rate of a counter between successive samples."""
    return [(getattr(b, attr) - getattr(a, attr)) / max(1e-3, b.t - a.t) for a, b in itertools.pairwise(samples)]


def plot(results: list[dict[str, Any]], path: Path, ceiling: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(11, 4.2 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results, strict=True):
        samples: list[Sample] = result["samples"]
        ts = [s.t for s in samples[1:]]

        ax.plot(ts, _rates(samples, "offered"), label="offered (events/s)", color="#888888")
        ax.plot(ts, _rates(samples, "accepted"), label="accepted by the edge", color="#1f77b4")
        ax.plot(ts, _rates(samples, "resolver_position"), label="drained by the resolver (records/s)",
                color="#2ca02c")
        ax.axhline(ceiling * 0.25, linestyle=":", color="#d62728", label="25% of the raw aiokafka ceiling")
        ax.set_ylabel("events/s")
        ax.set_xlabel("seconds")
        ax.set_title(f"cdp-hub run{' --processes auto' if result['mode'] == 'auto' else ''}: "
                     f"best sustained {result['best']:,} events/s")
        lag_ax = ax.twinx()
        lag_ax.fill_between([s.t for s in samples], [s.lag for s in samples], color="#ff7f0e", alpha=0.25,
                            label="consumer lag, all groups (records)")
        lag_ax.set_ylabel("lag (records)")
        lines, labels = ax.get_legend_handles_labels()
        more, more_labels = lag_ax.get_legend_handles_labels()
        ax.legend(lines + more, labels + more_labels, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


async def main_async(args: argparse.Namespace) -> None:
    print(f"cdp-hub end to end: /v1/batch ({PER_REQUEST} messages per request), {args.users:,} users on two "
          f"devices, Kafka {KAFKA} ({PARTITIONS} partitions), {os.cpu_count()} cores")
    raw = await raw_ceiling(args.raw_records, args.users)
    print(f"raw aiokafka produce + consume, one process, acks=all, zstd: {raw['events_per_s']:,.0f} events/s "
          f"({raw['records']:,} canonical events of {raw['bytes']:.0f} bytes on average, "
          f"{raw['cpu_us']:.0f} us CPU per event)")
    results = []
    for mode in args.mode:
        print(f"mode {mode}: cdp-hub run{' --processes auto' if mode == 'auto' else ''}")
        results.append(await measure_mode(mode, args, 0.0))
    print("summary:")
    for result in results:
        lat = result.get("latency", {})
        goal = 5000 if result["mode"] == "auto" else 2500
        print(f"  {result['mode']:6s}: {result['best']:6,} events/s sustained (goal {goal:,}), "
              f"{result['best'] / raw['events_per_s']:.0%} of the raw ceiling {raw['events_per_s']:,.0f} (goal 25%); "
              f"event -> message at {args.latency_rate:,}/s p50 {lat.get('p50_ms', float('nan')):.0f} ms, "
              f"p99 {lat.get('p99_ms', float('nan')):.0f} ms (goal p99 < 250 ms)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.plot:
        plot(results, Path(args.plot), raw["events_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", action="append", choices=["single", "auto"],
                        help="cdp-hub run in one process, or --processes auto (default: both)")
    parser.add_argument("--rates", default="1000,1500,2000,2500,3000,3500,4000,4500,5000,6000,8000",
                        help="the ladder of offered events/s, comma-separated")
    parser.add_argument("--step", type=float, default=30.0, help="seconds at each rate")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds the lag may take to return to 0")
    parser.add_argument("--lag-seconds", type=float, default=1.0,
                        help="largest lag (all groups) at a step's end that still holds, in seconds of the "
                        "Kafka records the step produced")
    parser.add_argument("--latency-rate", type=int, default=2000, help="events/s of the latency step")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--raw-records", type=int, default=60_000, help="tracking messages of the raw ceiling")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--plot", default="e2e.png", help="PNG to write ('' for none)")
    args = parser.parse_args()
    args.mode = args.mode or ["single", "auto"]
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
