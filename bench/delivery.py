"""Delivery throughput: messages/s of one delivery process against a local provider with 50 ms latency.

    python bench/delivery.py [--messages 20000] [--baseline-messages 100] [--latency 0.05]

A simulated SMS gateway runs in a separate process on 127.0.0.1 (a small asyncio HTTP/1.1 server that
answers every request after ``--latency`` seconds, keeps connections alive, and counts requests and TCP
connections). One delivery process (``DeliveryStage`` under the real ``StageRunner``, in-process bus,
real PostgreSQL at ``$CDP_HUB_POSTGRES_DSN`` for the send log and profiles, the ``sms_http`` channel
plugin over httpx) delivers ``--messages`` intents; every message goes through the send log, the profile
lookup, the template, the provider and a ``message.sent`` receipt.

Runs, in the same process and against the same server:
  naive      one message at a time, one request per message, a new TCP connection per request
  no-reuse   512 messages in flight, --pool (16) requests in flight, a new TCP connection per request
  pooled     the same, over --pool keep-alive connections (reused)
  sharded    one request per message, --sharded-pool (128) in flight over the hub's shared client, whose
             connections are spread over pools of 8 (cdp_hub.httpclient)
  batched    a whole stage batch in flight, --max-batch (100) messages per request (the gateway's batch
             endpoint, ``max_batch`` in the channel config), over the same --pool keep-alive connections

Requests in flight stay at a small pool on purpose: httpx/httpcore 1.0 spends CPU superlinearly in the number
of pooled connections (about 1 ms per request at 512 connections on this kind of machine), so past a few
dozen connections more concurrency buys nothing; batching is what lifts one process past 2,000 messages/s.

Prints messages/s, requests and TCP connections per run, and the ratio to the naive baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.config import Settings
from cdp_hub.httpclient import shared_client
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline
from cdp_hub.schema.messages import MessageIntent, message_id_for

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")


# -- the simulated provider (its own process) --------------------------------------------------------------

class _ProviderProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: every request is answered 201 after the configured latency."""

    stats = {"requests": 0, "connections": 0}
    latency = 0.05

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""
        self.stats["connections"] += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4:end]
            self.buffer = self.buffer[end:]
            path = head.split(" ", 2)[1]
            asyncio.get_running_loop().create_task(self._answer(path, body))

    async def _answer(self, path: str, request: bytes) -> None:
        if path == "/stats":
            body = orjson.dumps(self.stats)
        elif path.endswith("/batch"):  # the gateway's batch endpoint: one result per message
            self.stats["requests"] += 1
            refs = [m["client_ref"] for m in orjson.loads(request)["messages"]]
            await asyncio.sleep(self.latency)
            body = orjson.dumps({"results": [{"client_ref": ref, "id": f"g-{ref}"} for ref in refs]})
        else:
            self.stats["requests"] += 1
            await asyncio.sleep(self.latency)
            body = orjson.dumps({"id": f"g-{self.stats['requests']}", "segments": 1})
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)


def _serve(port: int, latency: float, ready: multiprocessing.synchronize.Event) -> None:
    async def main() -> None:
        _ProviderProtocol.latency = latency
        server = await asyncio.get_running_loop().create_server(_ProviderProtocol, "127.0.0.1", port, backlog=2048)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the delivery process ----------------------------------------------------------------------------------

async def fresh_database() -> str:
    name = f"bench_delivery_{os.getpid()}"
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(DSN)._replace(path="/" + name))


async def drop_database(dsn: str) -> None:
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(dsn).path.lstrip("/")}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed_profiles(hub: Hub, n: int) -> list[str]:
    ids = [uuid.uuid4() for _ in range(n)]
    async with hub.store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO profiles (profile_id, golden) SELECT p, g::jsonb FROM unnest($1::uuid[], $2::text[]) AS x(p, g)",
            ids, [orjson.dumps({"first_name": f"Client {i}", "locale": "ru"}).decode() for i in range(n)])
        await conn.copy_records_to_table(
            "identities", columns=["kind", "value", "profile_id"],
            records=[("phone", f"+7916{i:07d}", pid) for i, pid in enumerate(ids)])
    return [str(pid) for pid in ids]


async def run(label: str, *, dsn: str, data_dir: Path, port: int, profiles: list[str], messages: int,
              concurrency: int, requests: int, keepalive: bool, max_batch: int = 1,
              batch_size: int = 500, sharded: bool = False) -> dict[str, float]:
    """``concurrency`` messages in flight, at most ``requests`` gateway requests in flight (the pool size)."""
    settings = Settings(
        bus="memory", postgres_dsn=dsn, redis_url="fakeredis://", data_dir=data_dir, poll_timeout_ms=20,
        batch_size=batch_size, delivery_concurrency=concurrency,
        channels={"sms": {"type": "sms_http", "config": {
            "base_url": f"http://127.0.0.1:{port}", "api_key": "bench", "sender": "Bench",
            "max_concurrency": requests, "max_batch": max_batch}}},
    )
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests if keepalive else 0)
    # sharded: the hub's own client (cdp_hub.httpclient), connections spread over pools of 8.
    http = shared_client(max_connections=requests) if sharded else httpx.AsyncClient(limits=limits, timeout=30.0)
    hub = Hub(settings, bus=MemoryBus(), http=http, metrics=Metrics())
    async with hub:
        await hub.channel("sms")
        run_id = uuid.uuid4().hex
        payloads = [
            MessageIntent(message_id=message_id_for("bench", f"{run_id}-{i}", profiles[i % len(profiles)]),
                          profile_id=profiles[i % len(profiles)], scenario="bench", channel="sms",
                          template="welcome", category="transactional").model_dump_json().encode()
            for i in range(messages)
        ]
        for i in range(0, len(payloads), 1000):
            await hub.bus.publish_many([OutgoingMessage(hub.topics.messages, p, p[-40:])
                                        for p in payloads[i:i + 1000]])
        before = await _stats(port)
        started = time.perf_counter()
        pipeline = Pipeline(hub, ["delivery"])
        task = asyncio.create_task(pipeline.run())
        while pipeline.processed < messages:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        pipeline.stop()
        await task
        after = await _stats(port)
        sent = await hub.store.fetchval("SELECT count(*) FROM messages WHERE scenario = 'bench' AND status = 'sent' "
                                        "AND message_id = ANY($1::text[])",
                                        [orjson.loads(p)["message_id"] for p in payloads])
        receipts = len(await hub.bus.read_all(hub.topics.events))
    await http.aclose()
    if sent != messages or receipts != messages:
        raise SystemExit(f"{label}: {sent} sent and {receipts} receipts for {messages} messages")
    result = {"messages": messages, "seconds": elapsed, "rate": messages / elapsed,
              "requests": after["requests"] - before["requests"],
              "connections": after["connections"] - before["connections"] - 1}  # minus the /stats call
    print(f"{label:<11} {messages:>7} msgs {elapsed:>7.2f} s {result['rate']:>9.1f} msg/s "
          f"{result['requests']:>7} requests {result['connections']:>6} TCP connections", flush=True)
    return result


async def _stats(port: int) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        data: dict[str, int] = (await client.get(f"http://127.0.0.1:{port}/stats")).json()
        return data


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    ready = multiprocessing.get_context("spawn").Event()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, args.latency, ready),
                                                          daemon=True)
    server.start()
    if not ready.wait(10):
        raise SystemExit("the simulated provider did not start")
    dsn = await fresh_database()
    try:
        with TemporaryDirectory() as tmp:
            setup = Hub(Settings(postgres_dsn=dsn, redis_url="fakeredis://", data_dir=Path(tmp)),
                        bus=MemoryBus(), metrics=Metrics())
            async with setup:
                profiles = await seed_profiles(setup, min(args.messages, 10000))
            print(f"provider latency {args.latency * 1000:.0f} ms; delivery concurrency {args.concurrency}; "
                  f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs", flush=True)
            common = {"dsn": dsn, "data_dir": Path(tmp), "port": port, "profiles": profiles}
            naive = await run("naive", messages=args.baseline_messages, concurrency=1, requests=1, keepalive=False,
                              **common)
            no_reuse = await run("no-reuse", messages=args.messages // 8, concurrency=args.concurrency,
                                 requests=args.pool, keepalive=False, **common)
            pooled = await run("pooled", messages=args.messages // 8, concurrency=args.concurrency,
                               requests=args.pool, keepalive=True, **common)
            # One request per message, 128 in flight over the hub's sharded client (16 pools of 8).
            sharded = await run("sharded", messages=args.messages // 4, concurrency=args.concurrency,
                                requests=args.sharded_pool, keepalive=True, sharded=True, **common)
            # A whole stage batch in flight, so that all of its gateway requests go out together.
            batched = await run("batched", messages=args.messages, concurrency=max(args.concurrency, args.batch_size),
                                requests=args.pool, keepalive=True, max_batch=args.max_batch,
                                batch_size=args.batch_size, **common)
            print(f"batched / naive: {batched['rate'] / naive['rate']:.0f}x   "
                  f"sharded / naive: {sharded['rate'] / naive['rate']:.0f}x   "
                  f"sharded / pooled: {sharded['rate'] / pooled['rate']:.1f}x   "
                  f"pooled / naive: {pooled['rate'] / naive['rate']:.0f}x   "
                  f"pooled / no-reuse: {pooled['rate'] / no_reuse['rate']:.2f}x   "
                  f"requests per TCP connection: pooled {pooled['requests'] / max(pooled['connections'], 1):.0f}, "
                  f"batched {batched['requests'] / max(batched['connections'], 1):.0f}")
    finally:
        await drop_database(dsn)
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--baseline-messages", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=512, help="messages in flight")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--pool", type=int, default=16, help="keep-alive connections (requests in flight)")
    parser.add_argument("--sharded-pool", type=int, default=128,
                        help="connections of the sharded run (one request per message)")
    parser.add_argument("--max-batch", type=int, default=100, help="messages per gateway request (batched run)")
    parser.add_argument("--batch-size", type=int, default=2000, help="intents per stage batch (batched run)")
    asyncio.run(main(parser.parse_args()))
