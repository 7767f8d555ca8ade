"""SIGKILL `cdp-hub run` in the middle of a stream through the real Kafka broker, start it again:
no event is lost and none is written twice; every new customer gets exactly one welcome message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cdp_hub.bus.events import event_message
from cdp_hub.bus.kafka import KafkaBus
from cdp_hub.schema import Event, parse_event
from cdp_hub.store import Store
from tests.conftest import topic_prefix

CUSTOMERS = 400
EVENTS_PER_CUSTOMER = 4


def _config(tmp_path: Path, pg_dsn: str, redis_url: str, bootstrap: str, prefix: str) -> Path:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    # Quiet hours would postpone the welcome depending on when the test runs: this run has none.
    (scenarios / "welcome.yaml").write_text(
        "id: welcome\ntrigger: {event: profile.created}\nchannel: email\ntemplate: welcome\n"
        "once_per_profile: true\n", encoding="utf-8")
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text(f"""
bus = "kafka"
kafka_bootstrap = "{bootstrap}"
topic_prefix = "{prefix}"
postgres_dsn = "{pg_dsn}"
redis_url = "{redis_url}"
data_dir = "{tmp_path / 'data'}"
scenarios_dir = "{scenarios}"
poll_timeout_ms = 100
batch_size = 200

[channels.email]
type = "outbox"
config = {{ directory = "{tmp_path / 'outbox'}" }}
""", encoding="utf-8")
    return cfg


def _start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cdp_hub.cli", "--config", str(cfg), "--log-level", "INFO", "run", "--no-http"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=_env())


def _env() -> dict[str, str]:
    # The config file says everything; CDP_HUB_* variables of the test run would override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
    return {**env, "PYTHONUNBUFFERED": "1"}


async def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str, store: Store
) -> None:
    prefix = topic_prefix("crash")
    cfg = _config(tmp_path, pg_dsn, redis_url, kafka_bootstrap, prefix)
    log = tmp_path / "hub.log"
    now = datetime.now(UTC).isoformat()
    events = []
    for c in range(CUSTOMERS):
        # Each customer signs up with e-mail marketing consent (opt-in is the default policy), then browses.
        kinds = ("consent.changed", "customer.updated", "product.viewed", "search.performed")
        for k, etype in enumerate(kinds[:EVENTS_PER_CUSTOMER]):
            props = {"sku": f"sku-{k}"} if etype == "product.viewed" else (
                {"query": "кроссовки"} if etype == "search.performed" else (
                    {"channel": "email", "status": "opted_in", "evidence": {"method": "form"}}
                    if etype == "consent.changed" else {}))
            events.append(parse_event({
                "type": etype, "source": "shop", "source_record_id": f"{c}-{k}", "occurred_at": now,
                "identities": [{"kind": "email", "value": f"crash{c}@example.ru"}], "properties": props}))
    expected = {e.event_id for e in events}

    bus = KafkaBus(kafka_bootstrap)
    await bus.start()
    topics = [prefix + t for t in ("cdp.events", "cdp.profile-events", "cdp.messages", "cdp.dlq")]
    await bus.ensure_topics(topics, partitions=4)
    proc = _start(cfg, log)
    try:
        async def produce(chunk: list[Event]) -> None:
            await bus.publish_many([event_message(prefix + "cdp.events", e) for e in chunk])

        async def count() -> int:
            return int(await store.fetchval("SELECT count(*) FROM events WHERE source = 'shop'"))

        half = len(events) // 2
        for i in range(0, half, 100):
            await produce(events[i:i + 100])
        # Kill it hard while it is working through the stream.
        deadline = asyncio.get_running_loop().time() + 90
        while await count() < 100:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert asyncio.get_running_loop().time() < deadline, log.read_text(errors="replace")[-3000:]
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = await count()
        for i in range(half, len(events), 100):
            await produce(events[i:i + 100])

        proc = _start(cfg, log)
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            done = await count() == len(events) and await store.fetchval(
                "SELECT count(*) FROM messages WHERE status = 'sent'") == CUSTOMERS
            if done:
                break
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert asyncio.get_running_loop().time() < deadline, (
                f"stuck: {await count()} events, killed at {killed_at}\n" + log.read_text(errors="replace")[-3000:])
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything still in flight would show up as a duplicate now

        stored = {r["event_id"] for r in await store.fetch("SELECT event_id FROM events WHERE source = 'shop'")}
        assert stored == expected  # nothing lost
        assert await store.fetchval("SELECT count(*) FROM events WHERE source = 'shop'") == len(events)
        assert await store.fetchval("SELECT count(*) FROM profiles") == CUSTOMERS
        assert await store.fetchval("SELECT count(*) FROM messages") == CUSTOMERS  # one welcome each
        sent = await store.fetchval("SELECT count(*) FROM events WHERE type = 'message.sent'")
        assert sent == CUSTOMERS
        assert len(list((tmp_path / "outbox").glob("*.json"))) == CUSTOMERS
        assert 0 < killed_at < len(events)

        # SIGTERM is a graceful stop: the current batches finish, offsets are committed, exit code 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await bus.stop()
