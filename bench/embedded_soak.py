"""Soak of the embedded mode: does ``cdp-hub run`` on the in-process bus keep a flat memory over 1M events?

    python bench/embedded_soak.py [--events 1000000] [--customers 20000] [--batch 1000] [--in-flight 20000]

Starts ``cdp-hub run`` (every stage and the HTTP server, ``bus = "memory"``, fakeredis, a fresh database on
``$CDP_HUB_POSTGRES_DSN``) as a child process. It then POSTs ``product.viewed`` events to ``/v1/events`` in
batches. The feeder holds at most ``--in-flight`` events that the resolver has not processed yet (read from
``cdp_stage_records_total`` on ``/metrics``), so the backlog stays bounded and any growth is retention, not
queueing. The RSS of the child is sampled throughout. The "before" figure is taken after a warm-up of 5% of the
events (imports, connection pools, prepared statements, caches filled); the "after" figure is taken once
every event is processed.

Before retention (the bus kept its whole log) the RSS grew by about 2 KB per event, 949 MB after 425,000
events. With retention the RSS levels off once the backlog of ``--in-flight`` events is reached (the first few
tens of thousands of events) and stays flat: ``growth_second_half_mb`` (between half the events and the end)
is the figure to watch, and it does not depend on ``--events``.

Throughput is the resolver's against PostgreSQL, in the same process as the HTTP edge and the other stages.
It was 165 events/s on a shared, loaded 2-core machine, so a million events take about 100 minutes there;
``--events 200000`` shows the same flat line in about 20.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
PROCESSED = re.compile(r'^cdp_stage_records_total\{stage="(\w+)"\} ([0-9.e+]+)$', re.M)


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SOURCE_KEY = "soak-source-key"


def events(start: int, count: int, customers: int) -> list[dict[str, object]]:
    """``product.viewed`` by returning customers (an e-mail each), so profiles stay bounded and the work
    per event is the resolver's common case: a known identity."""
    return [{"type": "product.viewed", "source": "site", "source_record_id": f"soak-{i}",
             "occurred_at": "2026-06-01T09:00:00Z",
             "identities": [{"kind": "email", "value": f"soak{i % customers}@example.com"}],
             "properties": {"sku": f"SKU-{i % 500}"}} for i in range(start, start + count)]


async def processed(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {stage: float(n) for stage, n in PROCESSED.findall(text)}


async def soak(args: argparse.Namespace) -> dict[str, object]:
    name = f"bench_soak_{os.getpid()}"
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{name}"')
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cdp-hub-soak-"))
    config = workdir / "cdp-hub.toml"
    config.write_text(f'''
bus = "memory"
postgres_dsn = "{_with_db(DSN, name)}"
redis_url = "fakeredis://"
data_dir = "{workdir / 'data'}"
http_port = {port}
log_level = "ERROR"

# The events' source system and its key (`/v1/events` refuses requests without one).
[event_sources.site]
keys = ["{SOURCE_KEY}"]

# The built-in scenarios message new customers: outbox channels write them to files, as in `cdp-hub demo`.
[channels.email]
type = "outbox"
config = {{ directory = "{workdir / 'outbox' / 'email'}" }}
[channels.sms]
type = "outbox"
config = {{ directory = "{workdir / 'outbox' / 'sms'}", kind = "sms", address_kind = "phone" }}
[channels.push]
type = "outbox"
config = {{ directory = "{workdir / 'outbox' / 'push'}", kind = "push", address_kind = "push_token" }}
''', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
    env["PYTHONPATH"] = str(ROOT)
    # Popen returns at once; the one child lives for the whole soak (psutil reads its RSS).
    child = subprocess.Popen([sys.executable, "-m", "cdp_hub.cli", "-c", str(config), "run"],  # noqa: ASYNC220
                             env=env, stdout=subprocess.DEVNULL)
    proc = psutil.Process(child.pid)
    samples: list[tuple[int, float]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {SOURCE_KEY}"}) as client:
            for _ in range(600):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if child.poll() is not None:
                    raise SystemExit(f"cdp-hub run exited with {child.returncode}")
                await asyncio.sleep(0.1)
            warmup = max(args.batch, args.events // 20)
            sent = 0
            rss_before = None
            rss_half = None
            started = time.perf_counter()
            t_warm = started
            next_report = started + 10
            while True:
                if child.poll() is not None:
                    raise SystemExit(f"cdp-hub run exited with {child.returncode}")
                done = await processed(client)
                resolved = int(done.get("resolver", 0))
                if rss_before is None and resolved >= warmup:
                    rss_before = proc.memory_info().rss
                    t_warm = time.perf_counter()
                if rss_half is None and resolved >= args.events // 2:
                    rss_half = proc.memory_info().rss
                if resolved >= args.events:
                    break
                if sent < args.events and sent - resolved < args.in_flight:
                    n = min(args.batch, args.events - sent)
                    resp = await client.post("/v1/events", json={"batch": events(sent, n, args.customers)})
                    if resp.status_code == 503:  # the edge sheds load (edge.max_backlog): as a client should
                        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                        continue
                    resp.raise_for_status()
                    sent += n
                else:
                    await asyncio.sleep(0.05)
                if time.perf_counter() >= next_report:
                    next_report += 10
                    rss = proc.memory_info().rss
                    samples.append((resolved, rss / 2**20))
                    print(f"  {resolved:>9,} processed, {sent:>9,} sent, RSS {rss / 2**20:7.1f} MB", flush=True)
            elapsed = time.perf_counter() - t_warm
            # Let the other stages finish the last batches before the final sample.
            for _ in range(600):
                done = await processed(client)
                if done.get("triggers", 0) >= args.events:
                    break
                await asyncio.sleep(0.1)
            rss_after = proc.memory_info().rss
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)
    assert rss_before is not None and rss_half is not None
    peak = max([rss_after / 2**20, *(mb for _, mb in samples)])
    return {"events": args.events, "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_half_mb": round(rss_half / 2**20, 1), "rss_after_mb": round(rss_after / 2**20, 1),
            "rss_peak_mb": round(peak, 1), "growth_mb": round((rss_after - rss_before) / 2**20, 1),
            "growth_second_half_mb": round((rss_after - rss_half) / 2**20, 1),
            "events_per_s_after_warmup": round((args.events - warmup) / elapsed),
            "exit_status": child.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per POST")
    parser.add_argument("--in-flight", type=int, default=20_000, help="most events sent but not yet resolved")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    for key, value in result.items():
        print(f"{key:<28} {value}")


if __name__ == "__main__":
    main()
