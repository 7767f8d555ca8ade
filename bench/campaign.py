"""Planning and sending a campaign to 100,000 and 1,000,000 profiles through the real Kafka broker.

    python bench/campaign.py [--profiles 100000,1000000] [--rate 100000] [--keep] [--baseline DIR]

For each size, in a process of its own (so its peak RSS is its own): a scratch database next to
``$CDP_HUB_POSTGRES_DSN`` (default: the test server) is seeded set-wise (tests/campaign_data.py: one e-mail
identity, a golden record and consent per profile; 10% excluded by a segment, about a third without consent),
then

  snapshot   ``CampaignRunner.launch``: the run row and INSERT ... SELECT of the audience (one transaction)
  send       ``CampaignRunner.execute`` at ``--rate`` (default high enough that the sender is the limit): the
             contact policy per chunk (golden records, consent, caps in Redis), message intents and
             message.decided events through Kafka (``$CDP_HUB_KAFKA_BOOTSTRAP``, acks=all), each chunk recorded

Prints the audience snapshot's seconds, the planning seconds (the contact policy and the records of every
chunk, inside the send), the send's seconds, intents/s (goal: >= 5,000/s), decisions/s, the sender's CPU
seconds (and intents per CPU second: what one process does with a core of its own), the CPU per intent of the
sender, of the run's PostgreSQL backends, of the Redis server and of the Kafka broker (the last two
server-wide) and what their sum allows on this machine's cores, the peak RSS of the process and the load
average (the machine is shared: compare figures at similar load; the CPU figures move less with it). The topics and the
database are dropped after.

``--baseline DIR``: a copy of another version of the code (e.g. ``git archive <commit> | tar -x -C DIR``) is
measured the same way in the same run, each size right before the current code, and the ratio of the two
intents/s is printed: on a shared machine, the only fair comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
CODE = Path(os.environ.get("CDP_HUB_BENCH_CODE") or ROOT)
"""Whose cdp_hub (and tests/campaign_data.py) is measured: this checkout, or ``--baseline``'s."""
sys.path.insert(0, str(CODE))

from cdp_hub.campaigns.model import CAMPAIGN_FILES  # noqa: E402
from cdp_hub.config import Settings  # noqa: E402
from cdp_hub.hotstate import HotState  # noqa: E402
from cdp_hub.hub import Hub  # noqa: E402
from cdp_hub.metrics import Metrics  # noqa: E402
from cdp_hub.pipeline.build import campaign_runner  # noqa: E402
from tests.campaign_data import EXCLUDED, SEGMENT, eligible, in_audience, seed  # noqa: E402

DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
KAFKA = os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
REDIS = os.environ.get("CDP_HUB_REDIS_URL", "redis://127.0.0.1:16379/0")


def _with_db(dsn: str, db: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + db))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process on this machine (/proc); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid_listening(port: int) -> int | None:
    """The pid of the local process listening on ``port`` (the broker), from /proc; None when not found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


class _ServiceCpu:
    """CPU seconds of the services while the campaign is sent: this database's PostgreSQL backends (exact), the
    Redis server (INFO cpu) and the Kafka broker process (both server-wide: whatever else uses them counts)."""

    def __init__(self, hub: Any, redis: Any) -> None:
        self.hub, self.redis = hub, redis
        self.broker = _pid_listening(int(KAFKA.rsplit(":", 1)[1]))

    async def sample(self) -> dict[str, Any]:
        pids = [r["pid"] for r in await self.hub.store.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'")]  # the hub's pool (autovacuum of the seeded tables is not)
        info = await self.redis.info("cpu")
        return {"postgres": {pid: _proc_cpu(pid) for pid in pids},
                "redis": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
                "kafka": _proc_cpu(self.broker) if self.broker else 0.0}

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        """CPU seconds between two samples; PostgreSQL's per backend (a connection the pool opened meanwhile
        counts whole, one it closed is not seen: the seeding connections' CPU must not count)."""
        backends = sum(cpu - before["postgres"].get(pid, 0.0) for pid, cpu in after["postgres"].items())
        return {"postgres": backends, "redis": after["redis"] - before["redis"],
                "kafka": after["kafka"] - before["kafka"]}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one(profiles: int, rate: float, keep: bool, policy: bool) -> None:
    name = f"bench_campaign_{uuid.uuid4().hex[:8]}"
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    await _admin(f'CREATE DATABASE "{name}"')
    hotstate = HotState(REDIS, prefix=f"bench{uuid.uuid4().hex[:6]}:")
    # The contact policy a retailer runs: caps across all marketing (counters in Redis) and the campaign's own.
    caps: dict[str, Any] = {"marketing_caps": {"1d": 2, "7d": 5}} if policy else {}
    settings = Settings(postgres_dsn=_with_db(DSN, name), bus="kafka", kafka_bootstrap=KAFKA,  # type: ignore[call-arg]
                        topic_prefix=prefix, redis_url=REDIS, topic_partitions=4, **caps)
    try:
        async with Hub(settings, metrics=Metrics(), hotstate=hotstate) as hub:
            started = time.perf_counter()
            await seed(hub.store, profiles, tag="bench")
            await hub.store.execute("ANALYZE")
            seeded = time.perf_counter() - started
            rss_before = _rss_mb()
            definition: dict[str, Any] = {"id": "bench", "audience": {"segment": SEGMENT, "exclude": [EXCLUDED]},
                                          "channel": "email", "template": "welcome", "rate_limit": rate}
            if policy:  # its own cap, and quiet hours judged for everyone (in a window the run is not in)
                quiet_from = datetime.now(UTC) + timedelta(hours=3)
                definition |= {"frequency_cap": {"max": 2, "per": "7d"},
                               "quiet_hours": {"start": f"{quiet_from:%H}:00", "end": f"{quiet_from.hour + 1:02d}:00"
                                               if quiet_from.hour < 23 else "00:30"}}
            campaign = CAMPAIGN_FILES.parse(definition, origin="bench")
            runner = campaign_runner(hub)
            planning = 0.0
            plan_chunk = runner._plan_chunk

            async def timed_plan(*args: Any, **kwargs: Any) -> Any:
                nonlocal planning
                begun = time.perf_counter()
                try:
                    return await plan_chunk(*args, **kwargs)
                finally:
                    planning += time.perf_counter() - begun

            runner._plan_chunk = timed_plan  # type: ignore[method-assign]
            launched = await runner.launch(campaign)
            assert launched is not None
            services = _ServiceCpu(hub, hotstate.redis)
            before = await services.sample()
            started, cpu_started = time.perf_counter(), time.process_time()
            result = await runner.execute(launched.run_id)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            after = await services.sample()
            spent = services.spent(before, after)
            want = sum(1 for g in range(1, profiles + 1) if eligible(g))
            planned = sum(1 for g in range(1, profiles + 1) if in_audience(g))
            assert result.status == "done" and result.sent == want and launched.planned == planned, result
            decided = sum(result.decisions.values())
            load = os.getloadavg()
            figures = {"code": "baseline" if CODE != ROOT else "current", "profiles": profiles,
                       "audience": launched.planned, "seed_s": seeded, "snapshot_s": launched.snapshot_seconds,
                       "planning_s": planning, "send_s": seconds, "intents_per_s": result.sent / seconds,
                       "decisions_per_s": decided / seconds, "cpu_s": cpu, "intents_per_cpu_s": result.sent / cpu,
                       "peak_rss_mb": _rss_mb(), "rss_before_mb": rss_before, "load": load[0],
                       "cpu_us_per_intent": {"sender": cpu / result.sent * 1e6,
                                             **{k: v / result.sent * 1e6 for k, v in spent.items()}}}
            per_intent = figures["cpu_us_per_intent"]
            total = sum(per_intent.values())
            figures["cpu_us_per_intent_total"] = total
            print(f"{figures['code']:<8} profiles {profiles:>9,}  audience {launched.planned:>9,}  "
                  f"seed {seeded:6.1f}s  snapshot {launched.snapshot_seconds:6.2f}s  planning {planning:6.1f}s  "
                  f"send {seconds:6.1f}s  intents/s {result.sent / seconds:8,.0f}  "
                  f"decisions/s {decided / seconds:8,.0f}  "
                  f"sender CPU {cpu:5.1f}s ({result.sent / cpu:,.0f} intents per CPU second)  "
                  f"peak RSS {_rss_mb():6.0f} MB (before launch {rss_before:.0f})  "
                  f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
            print("         CPU per intent: " + ", ".join(f"{k} {v:.0f} µs" for k, v in per_intent.items())
                  + f"; total {total:.0f} µs (Redis and Kafka server-wide), so {os.cpu_count()} cores would "
                  f"send at most {(os.cpu_count() or 1) / total * 1e6:,.0f} intents/s", flush=True)
            print("RESULT " + json.dumps(figures), flush=True)
            await hotstate.redis.delete(*[k async for k in hotstate.redis.scan_iter(match=hotstate.prefix + "*")]
                                        or ["-"])
    finally:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            existing = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if existing:
                await admin.delete_topics(existing)
        finally:
            await admin.close()
        if not keep:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _child(size: int, rate: float, keep: bool, policy: bool, code: Path | None) -> dict[str, Any]:
    """One size in a process of its own (its peak RSS is its own); its figures."""
    cmd = [sys.executable, __file__, "--one", str(size), "--rate", str(rate)] + (["--keep"] if keep else [])
    cmd += ["--no-policy"] if not policy else []
    env = {**os.environ, "CDP_HUB_BENCH_CODE": str(code) if code is not None else ""}
    done = subprocess.run(cmd, check=True, env=env, stdout=subprocess.PIPE, text=True)
    figures: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            figures = json.loads(line.removeprefix("RESULT "))
        else:
            print(line, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default="100000,1000000", help="comma-separated audience sizes")
    parser.add_argument("--rate", type=float, default=100_000, help="the campaign's rate limit (messages/s)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--no-policy", dest="policy", action="store_false",
                        help="no caps and no quiet hours (by default: marketing caps, a campaign cap, quiet hours)")
    parser.add_argument("--baseline", type=Path, help="a copy of other code to measure first, for the ratio")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        asyncio.run(one(args.one, args.rate, args.keep, args.policy))
        return
    print(f"campaign bench: Kafka {KAFKA}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    summary = []
    for size in (int(s) for s in args.profiles.split(",")):
        base = _child(size, args.rate, args.keep, args.policy, args.baseline.resolve()) if args.baseline else None
        now = _child(size, args.rate, args.keep, args.policy, None)
        summary.append((size, base, now))
    print("\nprofiles    snapshot  planning  intents/s  peak RSS  load   vs baseline (intents/s, same run)")
    for size, base, now in summary:
        ratio = f"{now['intents_per_s'] / base['intents_per_s']:.2f}x ({base['intents_per_s']:,.0f}/s)" if base else "-"
        print(f"{size:>9,}  {now['snapshot_s']:7.2f}s  {now['planning_s']:7.1f}s  {now['intents_per_s']:9,.0f}  "
              f"{now['peak_rss_mb']:5.0f} MB  {now['load']:4.1f}   {ratio}")


if __name__ == "__main__":
    main()
