"""The HTTP edge's throughput: accepted events/s and p50/p99 latency of ``POST /v1/batch`` (100 tracking messages
per request), on the embedded default (in-process bus, fakeredis) and on Kafka, against a raw uvicorn endpoint
that reads the body and drops it, in the same run.

    python bench/ingest_http.py [--requests 400] [--concurrency 8] [--rounds 3] [--bus memory --bus kafka] [--gzip]

Each server runs in a process of its own (uvicorn, one worker), the load generator (httpx) in this one, so the
server's figure is one process's. Messages are all distinct (no dedupe hits): identify, track (Order Completed
with products, Product Viewed), page and screen for ~1/4 as many users, as a web shop's SDKs send them.
PostgreSQL (``$CDP_HUB_POSTGRES_DSN``, default: the test server; each hub gets a fresh database) holds the
embedded default's dedupe window (``edge.dedupe_store = "auto"``: PostgreSQL when Redis is the in-process
fakeredis), so the CPU of the hub's PostgreSQL connections is counted with the server's. Kafka is
``$CDP_HUB_KAFKA_BOOTSTRAP`` (default: the test broker) with a fresh topic prefix, Redis ``$CDP_HUB_REDIS_URL``
(the dedupe window there) for the Kafka run. The first 20 requests of each run warm up and are not timed.

The edge must not be the pipeline's bottleneck: one edge process should accept at least three times what one
resolver process resolves. Both are measured here, in the same run on the same machine, on the very events the
edge accepted: the resolver with bench/resolver_stream.py's harness (``ResolverStage.handle`` in batches of 250 on
a fresh database, no bus: the embedded edge is compared with it) and, with ``--bus kafka``, the resolver stage as
the pipeline runs it (under the hub's runner, batches of 250, reading the edge's records from Kafka and publishing
its own there, a fresh database; the Kafka edge is compared with it, and with the harness too).
On a shared machine wall-clock rates move with the load, so the CPU time per event of the edge's server process
and of the resolver (its process plus its PostgreSQL backends) is printed too, and the ratio of those is the
load-independent answer. Every round measures all of them again, one after the other, and prints the edge's
events/s, the resolver's and their ratio with the load average; the summary gives the medians of the rounds.
The resolver decodes the events as the hub wrote them through the trusted fast path (parse once);
``--full-validation`` also runs it with ``parse_once = false`` (each event validated again, as before).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import multiprocessing
import os
import random
import signal
import socket
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from _topics import delete_topics  # bench/ is the script's directory
from resolver_stream import _drop_db, _fresh_db, _proc_cpu, _until

KEY = "wk-bench"
WARMUP = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bodies(requests: int, per_request: int, seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    users = max(1, requests * per_request // 4)
    out = []
    for r in range(requests):
        batch = []
        for m in range(per_request):
            u = rng.randrange(users)
            base: dict[str, Any] = {"userId": f"u{u}", "anonymousId": f"a-{u}", "messageId": f"{seed}-{r}-{m}",
                                    "timestamp": "2026-11-20T10:00:00.000Z", "sentAt": "2026-11-20T10:00:01.000Z",
                                    "context": {"ip": "10.1.2.3", "userAgent": "Mozilla/5.0", "locale": "ru-RU",
                                                "page": {"url": "https://shop.example.ru/c/milk"}}}
            kind = rng.random()
            if kind < 0.2:
                base.update(type="identify", traits={"email": f"user{u}@example.ru", "phone": f"+7916{u:07d}",
                                                     "firstName": "Анна"})
            elif kind < 0.35:
                base.update(type="track", event="Order Completed", properties={
                    "order_id": f"o-{r}-{m}", "total": 1299.8, "currency": "RUB",
                    "products": [{"product_id": f"SKU{rng.randrange(500)}", "price": 89.9, "quantity": 2}]})
            elif kind < 0.7:
                base.update(type="track", event="Product Viewed",
                            properties={"product_id": f"SKU{rng.randrange(500)}", "name": "Молоко", "price": 89.9})
            elif kind < 0.9:
                base.update(type="page", name="Catalog", properties={"url": "https://shop.example.ru/c/milk"})
            else:
                base.update(type="screen", name="Cart", context={"app": {"version": "5.2.1"},
                                                                 "device": {"id": f"dev-{u}"}})
            batch.append(base)
        out.append(batch)
    return out


# -- the servers (each in a process of its own) ------------------------------------------------------------


def _serve_hub(bus: str, port: int, dsn: str) -> None:
    import uvicorn

    from cdp_hub.config import ConnectorInstance, Settings
    from cdp_hub.daemon import create_app, settle_heap
    from cdp_hub.hotstate import HotState
    from cdp_hub.hub import Hub

    values: dict[str, Any] = {
        "bus": bus, "postgres_dsn": dsn,
        "redis_url": "fakeredis://" if bus == "memory" else os.environ.get("CDP_HUB_REDIS_URL",
                                                                          "redis://127.0.0.1:16379/0"),
        "kafka_bootstrap": os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
        "topic_prefix": f"bench{uuid.uuid4().hex[:8]}." if bus == "kafka" else "",
        "connectors": {"web": ConnectorInstance(type="tracking", config={"write_keys": [KEY]})},
    }

    async def main() -> None:
        settings = Settings(**values)
        # Keys of this run's own in a shared Redis (the dedupe window of the Kafka run), deleted at the end.
        hotstate = HotState(settings.redis_url, prefix=f"bench{uuid.uuid4().hex[:8]}:")
        async with Hub(settings, hotstate=hotstate) as hub:
            settle_heap(settings)  # as `cdp-hub run` does once its hub has started
            server = uvicorn.Server(uvicorn.Config(create_app(hub), host="127.0.0.1", port=port,
                                                   log_level="warning", lifespan="off", access_log=False))
            # SIGTERM (the bench's terminate()) ends serve() and then the cleanup below: uvicorn's own handling
            # raises the signal again once serve() returns, which killed the process before it (and left every
            # run's dedupe keys in the shared Redis for the window's 7 days).
            server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, setattr, server, "should_exit", True)
            try:
                await server.serve()
            finally:
                await _drop_keys(hotstate)
                if settings.topic_prefix:
                    await delete_topics(settings.kafka_bootstrap, settings.topic_prefix)

    asyncio.run(main())


async def _drop_keys(hotstate: Any) -> None:
    """Delete a run's keys (its own prefix) from the shared Redis."""
    keys = [k async for k in hotstate.redis.scan_iter(match=hotstate.prefix + "*")]
    for start in range(0, len(keys), 1000):
        await hotstate.redis.delete(*keys[start:start + 1000])


async def _drop(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app: read the body, answer 200, keep nothing (the floor any edge stands on)."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"success":true}'})


def _serve_raw(port: int) -> None:
    import uvicorn

    uvicorn.run(_drop, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False)


# -- the load -------------------------------------------------------------------------------------------


async def _wait(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                await client.options(url + "/v1/batch")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise SystemExit(f"no server at {url}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backends(dsn: str | None) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to the database of ``dsn`` (the hub's pool)."""
    if dsn is None:
        return {}
    conn = await asyncpg.connect(dsn)
    try:
        pids = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    finally:
        await conn.close()
    return {pid: _proc_cpu([pid]) for pid in pids}


async def load(url: str, payloads: list[bytes], per_request: int, concurrency: int,
               gzipped: bool, server_pid: int, dsn: str | None) -> dict[str, float]:
    headers = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
               "Content-Type": "application/json"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    latencies: list[float] = []
    accepted = 0
    queue = list(enumerate(payloads))
    queue.reverse()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while queue:
            i, body = queue.pop()
            started = time.perf_counter()
            response = await client.post(url + "/v1/batch", content=body, headers=headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            if i >= WARMUP:
                latencies.append(elapsed)
                accepted += int(response.json().get("accepted", per_request))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        warm = [queue.pop() for _ in range(min(WARMUP, len(queue)))]
        for _, body in warm:
            await client.post(url + "/v1/batch", content=body, headers=headers)
        db0 = await _backends(dsn)
        cpu0 = _cpu_seconds(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = _cpu_seconds(server_pid) - cpu0
        db = sum(now - db0.get(pid, 0.0) for pid, now in (await _backends(dsn)).items())
    latencies.sort()
    return {"events_per_s": accepted / wall, "requests_per_s": len(latencies) / wall,
            "cpu_us_per_event": (cpu + db) / max(1, accepted) * 1e6,
            "db_us_per_event": db / max(1, accepted) * 1e6,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


def run(target: str, args: argparse.Namespace, payloads: list[bytes]) -> dict[str, float]:
    port = _free_port()
    database = f"bench_edge_{os.getpid()}_{target}"
    dsn = None if target == "raw" else asyncio.run(_fresh_db(database))
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_serve_raw if target == "raw" else _serve_hub,
                       args=(port,) if target == "raw" else (target, port, dsn), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait(url))
        assert proc.pid is not None
        return asyncio.run(load(url, payloads, args.per_request, args.concurrency, args.gzip, proc.pid, dsn))
    finally:
        proc.terminate()
        proc.join(20)
        if dsn is not None:
            asyncio.run(_drop_db(database))


def _round(args: argparse.Namespace, buses: list[str], number: int) -> dict[str, dict[str, float]]:
    """One round: the raw endpoint, the hub on each bus, then the resolver on the events the edge took."""
    results: dict[str, dict[str, float]] = {}
    messages: list[list[dict[str, Any]]] = []
    for seed, target in enumerate(["raw", *buses]):
        batches = bodies(args.requests + WARMUP, args.per_request, 1000 * number + seed + int(time.time()))
        messages = messages or batches
        raw = [orjson.dumps({"batch": b, "sentAt": "2026-11-20T10:00:01.000Z"}) for b in batches]
        payloads = [gzip.compress(p) for p in raw] if args.gzip else raw
        results[target] = run(target, args, payloads)
        r = results[target]
        print(f"  {NAMES[target]:38s} {r['events_per_s']:9,.0f} events/s  {r['requests_per_s']:7,.1f} req/s  "
              f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  server CPU {r['cpu_us_per_event']:5.0f} us/event"
              + (f" ({r['db_us_per_event']:.0f} of it PostgreSQL)" if target != "raw" else ""))
    events = _canonical_events(messages)  # the events the edge made of them, for every resolver run
    runs = [("resolver", lambda: _resolver(events, parse_once=True)),
            *([("resolver-full", lambda: _resolver(events, parse_once=False))] if args.full_validation else []),
            *([("resolver-kafka", lambda: _resolver_on_kafka(events))] if "kafka" in buses else [])]
    for target, measure in runs:
        resolver = asyncio.run(measure())
        cpu = resolver["py_us"] + resolver["db_us"]
        results[target] = {"events_per_s": resolver["rate"], "cpu_us_per_event": cpu}
        latency = f"{'':33s}"  # the resolver stage on Kafka has no per-batch clock here
        if "p50_ms" in resolver:
            results[target].update(p50_ms=resolver["p50_ms"], p99_ms=resolver["p99_ms"])
            latency = f"p50 {resolver['p50_ms']:7.1f} ms  p99 {resolver['p99_ms']:7.1f} ms  "
        print(f"  {NAMES[target]:38s} {resolver['rate']:9,.0f} events/s  {latency}CPU {cpu:5.0f} us/event "
              f"({resolver['py_us']:.0f} process + {resolver['db_us']:.0f} PostgreSQL)")
    load1 = os.getloadavg()[0]
    results["load"] = {"load1": load1}
    ratios = "; ".join(f"{bus} {results[bus]['events_per_s'] / results[RESOLVER_OF[bus]]['events_per_s']:.1f}x"
                       for bus in buses)
    print(f"  round {number}: edge / resolver events/s: {ratios}  (load average {load1:.1f} on {os.cpu_count()} cores)")
    return results


RESOLVER_OF = {"memory": "resolver", "kafka": "resolver-kafka"}
"""The resolver each edge is compared with: the one on the same bus. With Kafka, the pipeline's resolver reads its
records from the broker and publishes its own there; the bus-less harness leaves that work out."""

NAMES = {"raw": "raw uvicorn, accept and drop", "memory": "hub, embedded default (memory bus)",
         "kafka": "hub, Kafka", "resolver": "resolver, batches of 250 (same events)",
         "resolver-kafka": "resolver stage, Kafka in and out (same)",
         "resolver-full": "resolver, the same, full validation"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--per-request", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement; medians are reported")
    parser.add_argument("--bus", action="append", choices=["memory", "kafka"])
    parser.add_argument("--gzip", action="store_true", help="gzip the bodies (as RudderStack's SDK does)")
    parser.add_argument("--full-validation", action="store_true",
                        help="also run the resolver with parse_once = false (each event validated again, as before)")
    args = parser.parse_args()
    buses = args.bus or ["memory", "kafka"]
    print(f"POST /v1/batch, {args.per_request} messages per request, {args.requests} requests "
          f"({WARMUP} warm-up), {args.concurrency} in flight{', gzip' if args.gzip else ''}; {args.rounds} rounds")
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number}")
        rounds.append(_round(args, buses, number))

    def median(target: str, key: str) -> float:
        return statistics.median(r[target][key] for r in rounds)

    print(f"medians of {len(rounds)} rounds (load average {statistics.median(r['load']['load1'] for r in rounds):.1f} "
          f"on {os.cpu_count()} cores):")
    resolvers = ["resolver", *(["resolver-kafka"] if "kafka" in buses else []),
                 *(["resolver-full"] if args.full_validation else [])]
    for target in ["raw", *buses, *resolvers]:
        latency = (f"p50 {median(target, 'p50_ms'):7.1f} ms  p99 {median(target, 'p99_ms'):7.1f} ms"
                   if "p50_ms" in rounds[0][target] else f"{'':30s}")
        print(f"  {NAMES[target]:38s} {median(target, 'events_per_s'):9,.0f} events/s  {latency}"
              f"  CPU {median(target, 'cpu_us_per_event'):5.0f} us/event")
    for bus in buses:
        against = RESOLVER_OF[bus]
        ratio = statistics.median(r[bus]["events_per_s"] / r[against]["events_per_s"] for r in rounds)
        cpu = statistics.median(r[against]["cpu_us_per_event"] / r[bus]["cpu_us_per_event"] for r in rounds)
        raw = statistics.median(r[bus]["events_per_s"] / r["raw"]["events_per_s"] for r in rounds)
        print(f"  {bus}: edge {median(bus, 'events_per_s'):,.0f} events/s, {NAMES[against]} "
              f"{median(against, 'events_per_s'):,.0f} events/s: {ratio:.1f}x the resolver's events/s (median of the "
              f"rounds' ratios; goal 3x); {cpu:.1f}x by CPU per event; {raw:.0%} of the raw endpoint's rate")
        if against != "resolver":
            bare = statistics.median(r[bus]["events_per_s"] / r["resolver"]["events_per_s"] for r in rounds)
            print(f"  {bus}: against the bus-less resolver harness {bare:.1f}x (its Kafka reads and writes left out)")
    if args.full_validation:
        cpu = statistics.median(r["resolver"]["cpu_us_per_event"] / r["resolver-full"]["cpu_us_per_event"]
                                for r in rounds)
        rate = statistics.median(r["resolver"]["events_per_s"] / r["resolver-full"]["events_per_s"] for r in rounds)
        print(f"  resolver, parse once vs full validation: {cpu:.2f}x the CPU per event, {rate:.2f}x the events/s")


def _canonical_events(batches: list[list[dict[str, Any]]]) -> list[Any]:
    """The canonical events of these tracking messages, as the edge's source maps them."""
    from cdp_hub.connector.tracking import TrackingConnector

    connector = TrackingConnector({}, instance="web")
    return [event for batch in batches for m in batch for event in connector.to_events(m)]


async def _resolver(events: list[Any], *, parse_once: bool = True) -> dict[str, float]:
    """The resolver on these events (bench/resolver_stream.py's harness: the records as the hub writes them,
    decoded through the trusted fast path unless ``parse_once`` is false)."""
    from resolver_stream import run as run_resolver

    values = [event.to_json() for event in events]
    return await run_resolver(values, 250, "edge" if parse_once else "edge_full", parse_once=parse_once)


async def _resolver_on_kafka(events: list[Any]) -> dict[str, float]:
    """The resolver as the pipeline runs it: one stage under the hub's runner, reading the edge's records from
    Kafka and publishing its own (resolved events, profile events) there, on a fresh database, topic prefix and
    Redis prefix. The records are on the topic before the stage starts; the clock starts once the stage has
    joined its group and taken its first batch (the group's join delay is not the resolver's) and stops when it
    has taken them all. CPU: this process (the stage alone runs in it meanwhile) and its PostgreSQL backends."""
    from cdp_hub.bus.events import event_message
    from cdp_hub.config import Settings
    from cdp_hub.hotstate import HotState
    from cdp_hub.hub import Hub
    from cdp_hub.metrics import Metrics
    from cdp_hub.pipeline.build import Pipeline, build_stage

    database = f"bench_edge_{os.getpid()}_resolver_kafka"
    dsn = await _fresh_db(database)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings(bus="kafka", kafka_bootstrap=os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
                        topic_prefix=prefix, postgres_dsn=dsn, batch_size=250,
                        redis_url=os.environ.get("CDP_HUB_REDIS_URL", "redis://127.0.0.1:16379/0"))
    hotstate = HotState(settings.redis_url, prefix=prefix.replace(".", ":"))
    hub = Hub(settings, metrics=Metrics(), hotstate=hotstate)
    try:
        async with hub:
            await hub.bus.publish_many([event_message(settings.topics.events, e) for e in events])
            pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver")])
            runner = pipeline.runners[0]
            running = asyncio.create_task(pipeline.run())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            await _until(lambda: runner.processed > 0 or loop.time() > deadline, 0.005)
            first, db0, cpu0, started = runner.processed, await _backends(dsn), time.process_time(), loop.time()
            await _until(lambda: runner.processed >= len(events) or loop.time() > deadline or running.done(), 0.005)
            elapsed, cpu = loop.time() - started, time.process_time() - cpu0
            db = sum(now - db0.get(pid, 0.0) for pid, now in (await _backends(dsn)).items())
            done = runner.processed - first
            pipeline.stop()
            await running
            await _drop_keys(hotstate)
    finally:
        await delete_topics(settings.kafka_bootstrap, prefix)
        await _drop_db(database)
    if done < len(events) - first:
        raise SystemExit(f"resolver on Kafka: {done} of {len(events) - first} events within 120 s")
    return {"rate": done / elapsed, "py_us": cpu / done * 1e6, "db_us": db / done * 1e6}


if __name__ == "__main__":
    main()
