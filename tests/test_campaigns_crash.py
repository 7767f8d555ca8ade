"""SIGKILL a campaign sender mid-send and start it again: a 50,000-profile segment (seeded set-wise), real
Kafka, PostgreSQL and Redis, the `cdp-hub campaigns` command as an operator runs it. Every eligible profile
gets exactly one message id (the delivery stage's send log makes a re-published intent one send), none
outside the audience, none without consent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from cdp_hub.bus.kafka import KafkaBus
from cdp_hub.schema.messages import message_id_for
from cdp_hub.store import Store
from tests.campaign_data import EXCLUDED, SEGMENT, eligible, profile_id, seed
from tests.conftest import topic_prefix

PROFILES = 50_000
RATE = 4000
CHUNK = 2000


def _config(tmp_path: Path, pg_dsn: str, redis_url: str, bootstrap: str, prefix: str) -> Path:
    segments = tmp_path / "segments"
    segments.mkdir()
    for sid in (SEGMENT, EXCLUDED):  # membership is seeded; the definitions only have to exist
        (segments / f"{sid}.yaml").write_text(f"id: {sid}\nall:\n  - {{trait: city, op: eq, value: x}}\n")
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "spring.yaml").write_text(f"""
id: spring_sale
audience: {{segment: {SEGMENT}, exclude: [{EXCLUDED}]}}
channel: email
template: welcome
rate_limit: {RATE}
""")
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text(f"""
bus = "kafka"
kafka_bootstrap = "{bootstrap}"
topic_prefix = "{prefix}"
postgres_dsn = "{pg_dsn}"
redis_url = "{redis_url}"
data_dir = "{tmp_path / 'data'}"
segments_dir = "{segments}"
campaigns_dir = "{campaigns}"
campaign_lease = "2s"

[channels.email]
type = "outbox"
config = {{ directory = "{tmp_path / 'outbox'}" }}
""")
    return cfg


def _cli(cfg: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
    return subprocess.Popen([sys.executable, "-m", "cdp_hub.cli", "--config", str(cfg), "campaigns", *args],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
async def test_sigkill_mid_send_resumes_and_sends_nobody_twice(
    tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str, store: Store
) -> None:
    prefix = topic_prefix("camp")
    cfg = _config(tmp_path, pg_dsn, redis_url, kafka_bootstrap, prefix)
    log = tmp_path / "campaign.log"
    await seed(store, PROFILES, tag="kill", extra=5000)

    proc = _cli(cfg, log, "launch", "spring_sale", "--wait")
    deadline = time.monotonic() + 60
    run_id = None
    sent = 0
    while sent < 4000:  # two chunks and more: kill it in the middle of the run
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        run_id = run_id or await store.fetchval("SELECT run_id FROM campaign_runs")
        if run_id is not None:
            sent = await store.fetchval(
                "SELECT count(*) FROM campaign_audience WHERE run_id = $1 AND status = 'sent'", run_id)
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert run_id is not None
    assert await store.fetchval("SELECT status FROM campaign_runs WHERE run_id = $1", run_id) == "sending"
    pending = await store.fetchval(
        "SELECT count(*) FROM campaign_audience WHERE run_id = $1 AND status = 'pending'", run_id)
    assert pending > 0, "killed before the end"

    # The operator (or the daemon's campaigns job) resumes it; the dead sender's lease runs out first.
    proc = _cli(cfg, log, "resume", str(run_id), "--wait")
    assert proc.wait(120) == 0, log.read_text(errors="replace")[-3000:]
    assert "done" in log.read_text(errors="replace")

    want = {profile_id("kill", g) for g in range(1, PROFILES + 1) if eligible(g)}
    scenario = "campaign:spring_sale"
    ids: dict[str, set[str]] = defaultdict(set)
    records = 0
    bus = KafkaBus(kafka_bootstrap)
    await bus.start()
    try:
        consumer = bus.consumer([prefix + "cdp.messages"], group=f"check-{uuid.uuid4().hex[:6]}")
        await consumer.start()
        try:
            quiet = 0
            while quiet < 3:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                quiet = 0 if batch else quiet + 1
                for record in batch:
                    intent = orjson.loads(record.value)
                    records += 1
                    ids[intent["profile_id"]].add(intent["message_id"])
        finally:
            await consumer.stop()
    finally:
        await bus.stop()

    assert {uuid.UUID(p) for p in ids} == want, "every eligible profile, none outside the audience or consent"
    assert all(len(m) == 1 for m in ids.values()), "one message id per profile"
    for pid, mids in list(ids.items())[:100]:
        assert mids == {message_id_for(scenario, str(run_id), pid)}
    # A chunk published before the kill and not yet recorded goes out again with the same ids (at most one
    # chunk): the delivery stage's send log turns each repeat into a no-op.
    assert records - len(want) <= CHUNK
    done = await store.fetch(
        "SELECT status, count(*) AS n FROM campaign_audience WHERE run_id = $1 GROUP BY status", run_id)
    assert {r["status"]: r["n"] for r in done} == {
        "sent": len(want), "skipped": sum(1 for g in range(1, PROFILES + 1) if g % 10 and not eligible(g))}
