"""``cdp-hub demo``: the whole pipeline on generated retail data, embedded (no servers).

    demo_data.generate() ─▶ five connectors ─▶ [cdp.events] ─▶ resolver ─▶ triggers ─▶ delivery ─▶ outbox
    (in-process bus, embedded PostgreSQL via pgserver, fakeredis)

The clock is pinned to noon in Moscow so quiet hours never hold the demo's messages back. Marketing goes
only to customers whose generated records gave consent (opt-in is the default policy).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cdp_hub.config import ChannelInstance, Settings
from cdp_hub.connector.ingest import Ingestor, IngestResult
from cdp_hub.metrics import Metrics
from cdp_hub.store import DeadLetterRepository, EventRepository, MessageRepository, ProfileRepository

__all__ = ["demo_settings", "print_summary", "run_demo"]


def demo_settings(data_dir: Path) -> Settings:
    outbox = data_dir / "outbox"
    return Settings(
        bus="memory",
        postgres_dsn="embedded",
        redis_url="fakeredis://",
        data_dir=data_dir,
        poll_timeout_ms=50,
        # The demo plays 60 days of generated history as if it were live, so its welcomes show; a deployment
        # keeps the 24h default, and a history import mutes triggers (cdp-hub ingest-file --mute-triggers).
        max_trigger_age="90d",
        channels={
            "email": ChannelInstance(type="outbox", config={"directory": str(outbox / "email")}),
            "sms": ChannelInstance(type="outbox", config={"directory": str(outbox / "sms"), "kind": "sms",
                                                          "address_kind": "phone"}),
            "push": ChannelInstance(type="outbox", config={"directory": str(outbox / "push"), "kind": "push",
                                                           "address_kind": "push_token"}),
        },
    )


def _noon_moscow() -> datetime:
    today = datetime.now(ZoneInfo("Europe/Moscow")).date()
    return datetime.combine(today, dtime(12, 0), ZoneInfo("Europe/Moscow")).astimezone(UTC)


async def run_demo(*, customers: int = 1000, seed: int = 7, data_dir: Path | None = None) -> dict[str, Any]:
    from cdp_hub.demo.data import generate
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import Pipeline

    started = time.perf_counter()
    temporary = data_dir is None
    root = data_dir or Path(tempfile.mkdtemp(prefix="cdp-hub-demo-"))
    if temporary:
        root.chmod(0o755)  # as root, the embedded PostgreSQL runs as its own user and must reach it
    hub = Hub(demo_settings(root), metrics=Metrics())
    pinned = _noon_moscow()
    offset = pinned - datetime.now(UTC)
    hub.clock = lambda: datetime.now(UTC) + offset
    try:
        async with hub:
            data = await asyncio.to_thread(generate, customers, seed)
            pipeline = Pipeline(hub)
            stages = asyncio.create_task(pipeline.run())
            ingestor = Ingestor(hub)
            ingested: dict[str, IngestResult] = {}
            for connector_type, records in data.items():
                connector = hub.connector(connector_type)
                ingested[connector_type] = await ingestor.ingest(connector, records)
            await pipeline.drain(idle_polls=4, timeout=300)
            pipeline.stop()
            await stages
            summary = await _summary(hub, ingested)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    summary["customers"] = customers
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


async def _summary(hub: Any, ingested: dict[str, IngestResult]) -> dict[str, Any]:
    store = hub.store
    events = await EventRepository(store).count_by_source_and_type()
    profile_repo = ProfileRepository(store)
    profiles = await profile_repo.count_live()
    merged = await profile_repo.count_merged_away()
    identities = await profile_repo.count_identities()
    messages = await MessageRepository(store).status_counts()
    dlq = await DeadLetterRepository(store).counts()
    sample = await DeadLetterRepository(store).first_error()
    return {
        "records_in": {k: v.records for k, v in ingested.items()},
        "events_by_source_and_type": [dict(r) for r in events],
        "events_total": sum(r["n"] for r in events),
        "profiles": profiles,
        "profiles_merged_away": merged,
        "identities": identities,
        "messages_by_channel_and_status": messages,
        "messages_total": sum(r["n"] for r in messages),
        "dlq_by_stage_and_type": dlq,
        "dlq_total": sum(r["n"] for r in dlq),
        "dlq_example": sample,
    }


def print_summary(s: dict[str, Any]) -> None:
    print(f"cdp-hub demo: {s['customers']} customers, {sum(s['records_in'].values())} source records, "
          f"{s['seconds']} s\n")
    print("Source records by connector:")
    for k, v in s["records_in"].items():
        print(f"  {k:<12} {v:>7}")
    print("\nEvents by source and type:")
    for r in s["events_by_source_and_type"]:
        print(f"  {r['source']:<18} {r['type']:<24} {r['n']:>7}")
    print(f"  {'total':<43} {s['events_total']:>7}")
    print(f"\nProfiles (golden records): {s['profiles']}  (merged away: {s['profiles_merged_away']}, "
          f"identities: {s['identities']})")
    print("\nMessages by channel and status:")
    for r in s["messages_by_channel_and_status"]:
        print(f"  {r['channel']:<12} {r['status']:<12} {r['n']:>7}")
    print(f"  {'total':<25} {s['messages_total']:>7}")
    print(f"\nDead-letter queue: {s['dlq_total']}")
    for r in s["dlq_by_stage_and_type"]:
        print(f"  {r['stage']:<12} {r['failure_type']:<22} {r['n']:>7}")
    if s["dlq_example"]:
        print(f"  e.g. {s['dlq_example']}")
