"""Amplification: how many bus records one tracking event becomes on its way through the whole pipeline.

    python bench/amplification.py [--requests 40] [--per-request 100] [--seed 3] [--pass-all] [--echo-cost]

The embedded hub (in-process bus, fakeredis, a fresh database at ``$CDP_HUB_POSTGRES_DSN``, default: the test
server) with the demo's settings (outbox channels for e-mail, SMS and push; the clock pinned to noon in Moscow,
as in ``cdp-hub demo``), the opt-out consent policy (tracked visitors gave no consent) and, besides the built-in
scenarios (welcome, ...), two that tracking traffic triggers: an order receipt on ``order.placed``
(transactional, e-mail then SMS) and a follow-up on ``product.viewed`` (marketing, e-mail, push, SMS; at most
one a day per customer). Most tracked visitors have no address, so most intents find none. Segment-style
tracking traffic (bench/ingest_http.py's bodies: identify, Order Completed, Product Viewed, page, screen, ~1/4 as
many users as messages, so most users are anonymous and have no address) goes through the tracking connector's
mapping onto ``cdp.events``, as the HTTP edge puts it there; resolver, triggers, delivery and the DLQ stage run
until the pipeline is idle. Every record any producer publishes is counted by topic and type (the ``cdp.type``
header, or the topic's kind); the figures are records per tracking event, and the CPU time of the hub's
process per tracking event (every stage and fakeredis) and of the PostgreSQL backends of its pool.

``--pass-all`` sets ``profile_events_omit = []``: the resolver passes every event on to ``cdp.profile-events``,
as before that setting existed (the same tree, both ways). ``--echo-cost`` then hands the run's decisions, as
the resolver passed them on before, to a triggers stage of its own in batches of ``batch_size`` and prints
the CPU they cost it and its PostgreSQL backends: what the default saves in that stage (the resolver's
publishing and the broker's work for them not included).

It runs against whichever ``cdp_hub`` is on the path, so the same script measures an older tree too
(``PYTHONPATH=/path/to/old/tree python bench/amplification.py``): docs/scaling.md has both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from ingest_http import _backends, bodies  # bench/ is the script's directory
from resolver_stream import _drop_db, _fresh_db

from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.bus.events import event_message
from cdp_hub.bus.provenance import EVENT_SCHEMA, hub_headers
from cdp_hub.connector.tracking import TrackingConnector
from cdp_hub.demo.run import demo_settings
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, build_stage
from cdp_hub.store import MessageRepository


async def measure(requests: int, per_request: int, seed: int,
                  pass_all: bool = False, echo_cost: bool = False,
                  ) -> tuple[int, Counter[tuple[str, str]], float, float, float, tuple[int, float, float] | None]:
    name = f"bench_amplification_{os.getpid()}"
    dsn = await _fresh_db(name)
    root = Path(tempfile.mkdtemp(prefix="cdp-amplification-"))
    scenarios = root / "scenarios"
    scenarios.mkdir()
    (scenarios / "order_receipt.yaml").write_text(
        "id: order_receipt\ntrigger: {event: order.placed}\nchannel: email\nfallbacks: [sms]\n"
        "template: order_confirmation\ncategory: transactional\n")
    (scenarios / "browse_followup.yaml").write_text(
        "id: browse_followup\ntrigger: {event: product.viewed}\nchannel: email\nfallbacks: [push, sms]\n"
        "template: welcome\ncategory: marketing\nfrequency_cap: {max: 1, per: 1d}\n")
    update: dict[str, object] = {"postgres_dsn": dsn, "scenarios_dir": scenarios, "consent_policy": "opt_out"}
    if pass_all:
        update["profile_events_omit"] = []
    settings = demo_settings(root).model_copy(update=update)
    hub = Hub(settings, metrics=Metrics())
    noon = datetime.combine(datetime.now(ZoneInfo("Europe/Moscow")).date(), dtime(12, 0),
                            ZoneInfo("Europe/Moscow")).astimezone(UTC)
    offset = noon - datetime.now(UTC)
    hub.clock = lambda: datetime.now(UTC) + offset
    counted: Counter[tuple[str, str]] = Counter()
    decisions: list[bytes] = []
    echo: tuple[int, float, float] | None = None
    try:
        async with hub:
            publish_many = hub.bus.publish_many

            async def counting(messages: Sequence[OutgoingMessage]) -> None:
                for m in messages:
                    kind = dict(m.headers).get("cdp.type", b"").decode() or "-"
                    if kind == "message.decided":
                        kind += ":" + str(orjson.loads(m.value)["properties"]["decision"])
                    counted[(m.topic, kind)] += 1
                    if m.topic == hub.topics.events and kind.startswith("message.decided"):
                        decisions.append(m.value)
                await publish_many(messages)

            hub.bus.publish_many = counting  # type: ignore[method-assign]
            pipeline = Pipeline(hub)
            stages = asyncio.create_task(pipeline.run())
            connector = TrackingConnector({}, instance="web")
            now = hub.clock()
            tracking = 0
            db_started = await _backends(dsn)
            started, cpu_started = time.perf_counter(), time.process_time()
            for batch in bodies(requests, per_request, seed):
                messages = []
                for message in batch:
                    message["timestamp"] = message["sentAt"] = now.isoformat()  # live traffic: triggers fire
                    for event in connector.to_events(message):
                        messages.append(event_message(hub.topics.events, event))
                tracking += len(messages)
                await hub.bus.publish_many(messages)
            await pipeline.drain(idle_polls=4, timeout=600)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            db = sum(now - db_started.get(pid, 0.0) for pid, now in (await _backends(dsn)).items())
            pipeline.stop()
            await stages
            if echo_cost:
                echo = await _echo_cost(hub, dsn, decisions)
            for row in await MessageRepository(hub.store).status_counts():
                counted[("send log", f"{row['channel']} {row['status']}")] += row["n"]
    finally:
        await _drop_db(name)
    for (topic, kind) in list(counted):
        if topic == hub.topics.events and not kind.startswith(("message.", "experiment.")):
            counted[(topic, "tracking and other source events")] += counted.pop((topic, kind))
    return tracking, counted, seconds, cpu, db, echo


async def _echo_cost(hub: Hub, dsn: str, decisions: list[bytes]) -> tuple[int, float, float]:
    """``(records, hub CPU seconds, PostgreSQL CPU seconds)`` of a triggers stage reading ``decisions`` as the
    resolver published them on cdp.profile-events (keyed by profile, spread over the partitions)."""
    stage = build_stage(hub, "triggers")
    headers = hub_headers(EVENT_SCHEMA, ("cdp.type", b"message.decided"))
    partitions = hub.settings.topic_partitions
    records = [Record(hub.topics.profile_events, i % partitions, i, None, value, headers)
               for i, value in enumerate(decisions)]
    size = hub.settings.batch_size
    db_started = await _backends(dsn)
    cpu_started = time.process_time()
    for i in range(0, len(records), size):
        out = await stage.handle(records[i:i + size])
        assert not out.dead and not [m for m in out.messages if m.topic == hub.topics.messages]
    cpu = time.process_time() - cpu_started
    db = sum(now - db_started.get(pid, 0.0) for pid, now in (await _backends(dsn)).items())
    return len(records), cpu, db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--per-request", type=int, default=100)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--pass-all", action="store_true", help="profile_events_omit = []: every event on to "
                        "cdp.profile-events")
    parser.add_argument("--echo-cost", action="store_true", help="the CPU the run's decisions cost a triggers "
                        "stage that reads them")
    args = parser.parse_args()
    tracking, counted, seconds, cpu, db, echo = asyncio.run(
        measure(args.requests, args.per_request, args.seed, args.pass_all, args.echo_cost))
    import cdp_hub

    print(f"{tracking} tracking events through the pipeline in {seconds:.1f} s; CPU per tracking event: hub "
          f"{cpu / tracking * 1e3:.2f} ms, PostgreSQL {db / tracking * 1e3:.2f} ms (cdp_hub from "
          f"{Path(cdp_hub.__file__).parent}; load average "
          f"{os.getloadavg()[0]:.1f}{'; --pass-all' if args.pass_all else ''})")
    by_topic: Counter[str] = Counter()
    for (topic, kind), n in sorted(counted.items()):
        by_topic[topic] += n
        print(f"  {topic:<20} {kind:<34} {n:>7}  {n / tracking:5.2f} per tracking event")
    for topic, n in sorted(by_topic.items()):
        if topic == "send log":
            continue
        print(f"  {topic:<20} {'(all)':<34} {n:>7}  {n / tracking:5.2f} per tracking event")
    total = sum(n for (topic, _), n in counted.items() if topic.startswith("cdp.") and not topic.endswith("dlq"))
    print(f"  records per tracking event (dead letters not counted): {total / tracking:.2f}")
    if echo is not None:
        n, hub_cpu, db_cpu = echo
        print(f"  the {n} decisions read back by a triggers stage: hub {hub_cpu / n * 1e6:.0f} µs, PostgreSQL "
              f"{db_cpu / n * 1e6:.0f} µs per decision; {hub_cpu / tracking * 1e6:.0f} + {db_cpu / tracking * 1e6:.0f} µs "
              f"per tracking event")


if __name__ == "__main__":
    main()
