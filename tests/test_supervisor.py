"""``cdp-hub run --processes auto|N``: the worker plan, and a supervised hub through the real Kafka broker whose
resolver worker is SIGKILLed mid-stream: it is started again, nothing is lost or stored twice, every new customer
gets one welcome, and SIGTERM stops every worker with exit status 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from cdp_hub.bus.events import event_message
from cdp_hub.bus.kafka import KafkaBus
from cdp_hub.cli import main
from cdp_hub.errors import ConfigurationError
from cdp_hub.schema import parse_event
from cdp_hub.store import Store
from cdp_hub.supervisor import plan_workers
from tests.conftest import topic_prefix

STAGES = ("resolver", "triggers", "delivery", "dlq")
CUSTOMERS = 200


def _args(processes: str, cores: int, **kw: bool) -> dict[str, list[str]]:
    return {w.name: w.args for w in plan_workers(processes, stages=STAGES, http_port=8080, cores=cores, **kw)}


def test_auto_is_one_worker_per_stage_and_the_dlq_worker_serves_the_api() -> None:
    plan = _args("auto", 2)
    assert list(plan) == ["dlq", "resolver", "triggers", "delivery"]
    assert plan["dlq"] == ["--stage", "dlq", "--http-port", "8080"]  # the API and the schedule
    assert plan["resolver"] == ["--stage", "resolver", "--no-scheduler", "--http-port", "8081"]
    assert plan["delivery"][-1] == "8083"


def test_auto_adds_resolver_triggers_delivery_workers_for_cores_beyond_four() -> None:
    plan = _args("auto", 8)
    assert sorted(plan) == sorted(["dlq", "resolver", "triggers", "delivery", "resolver-2", "triggers-2",
                                   "delivery-2", "resolver-3"])
    ports = [a[a.index("--http-port") + 1] for a in plan.values()]
    assert len(set(ports)) == len(ports)


def test_a_number_is_that_many_whole_pipelines() -> None:
    plan = _args("3", 2)
    assert list(plan) == ["all-1", "all-2", "all-3"]
    stage_args = [a for s in STAGES for a in ("--stage", s)]
    assert plan["all-1"] == [*stage_args, "--http-port", "8080"]
    assert plan["all-3"] == [*stage_args, "--no-scheduler", "--http-port", "8082"]


def test_no_http_and_no_scheduler_reach_every_worker() -> None:
    plan = _args("auto", 2, http=False, scheduler=False)
    assert all("--no-http" in a and "--no-scheduler" in a and "--http-port" not in a for a in plan.values())


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_a_bad_processes_value_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="--processes"):
        plan_workers(value, stages=STAGES, http_port=8080)


def test_several_processes_on_the_in_process_bus_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text('bus = "memory"\nredis_url = "fakeredis://"\n', encoding="utf-8")
    assert main(["--config", str(cfg), "run", "--processes", "2"]) == 3
    assert "bus = \"kafka\"" in capsys.readouterr().err


def _free_port(block: int = 4) -> int:
    """The first of ``block`` consecutive free ports: the supervisor gives its workers ``http_port + 1``, ``+ 2``,
    ... Drawn below the kernel's ephemeral range (32768 on), where the many client connections of a busy test
    run (Kafka, PostgreSQL, Redis) take their local ports, and clear of the fault drills' fixed ones."""
    rng = random.Random()
    while True:
        base = rng.randrange(20_000, 32_000 - block)
        if any(25_000 <= port < 30_000 for port in range(base, base + block)):  # the fault drills' services
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + block):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


def _start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    # The config file says everything; CDP_HUB_* variables of the test run would override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
    return subprocess.Popen([sys.executable, "-m", "cdp_hub.cli", "--config", str(cfg), "--log-level", "INFO",
                             "run", "--processes", "auto"], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**env, "PYTHONUNBUFFERED": "1"})


def _workers(supervisor: psutil.Process) -> dict[str, int]:
    """The supervisor's workers by the stage they run (their command line), pid each."""
    out = {}
    for child in supervisor.children():
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--stage" in cmd:
            out[cmd[cmd.index("--stage") + 1]] = child.pid
    return out


async def test_a_killed_worker_is_restarted_and_nothing_is_lost_or_sent_twice(
    tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str, store: Store
) -> None:
    prefix = topic_prefix("sup")
    port = _free_port()
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "welcome.yaml").write_text(
        "id: welcome\ntrigger: {event: profile.created}\nchannel: email\ntemplate: welcome\n"
        "once_per_profile: true\n", encoding="utf-8")
    cfg = tmp_path / "cdp-hub.toml"
    cfg.write_text(f"""
bus = "kafka"
kafka_bootstrap = "{kafka_bootstrap}"
topic_prefix = "{prefix}"
postgres_dsn = "{pg_dsn}"
redis_url = "{redis_url}"
data_dir = "{tmp_path / 'data'}"
scenarios_dir = "{scenarios}"
http_port = {port}
poll_timeout_ms = 100
batch_size = 50
shutdown_grace_seconds = "10s"

[channels.email]
type = "outbox"
config = {{ directory = "{tmp_path / 'outbox'}" }}
""", encoding="utf-8")
    now = datetime.now(UTC).isoformat()
    events = [parse_event({
        "type": etype, "source": "shop", "source_record_id": f"{c}-{k}", "occurred_at": now,
        "identities": [{"kind": "email", "value": f"sup{c}@example.ru"}],
        "properties": props})
        for c in range(CUSTOMERS)
        for k, (etype, props) in enumerate([
            ("consent.changed", {"channel": "email", "status": "opted_in", "evidence": {"method": "form"}}),
            ("product.viewed", {"sku": "sku-1"})])]
    bus = KafkaBus(kafka_bootstrap)
    await bus.start()
    await bus.ensure_topics([prefix + t for t in ("cdp.events", "cdp.profile-events", "cdp.messages", "cdp.dlq")],
                            partitions=4)
    log = tmp_path / "hub.log"
    proc = _start(cfg, log)
    supervisor = psutil.Process(proc.pid)
    loop = asyncio.get_running_loop()

    def tail() -> str:
        return log.read_text(errors="replace")[-4000:]

    async def count() -> int:
        return int(await store.fetchval("SELECT count(*) FROM events WHERE source = 'shop'"))

    try:
        deadline = loop.time() + 120
        async with httpx.AsyncClient() as client:
            while True:
                assert proc.poll() is None, tail()
                assert loop.time() < deadline, tail()
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        workers = _workers(supervisor)
        assert sorted(workers) == sorted(STAGES), workers
        half = len(events) // 2
        await bus.publish_many([event_message(prefix + "cdp.events", e) for e in events[:half]])
        while await count() < 20:
            assert loop.time() < deadline, tail()
            await asyncio.sleep(0.05)
        os.kill(workers["resolver"], signal.SIGKILL)
        await bus.publish_many([event_message(prefix + "cdp.events", e) for e in events[half:]])
        while _workers(supervisor).get("resolver") in (None, workers["resolver"]):
            assert loop.time() < deadline, tail()
            await asyncio.sleep(0.2)
        deadline = loop.time() + 120
        while not (await count() == len(events) and await store.fetchval(
                "SELECT count(*) FROM messages WHERE status = 'sent'") == CUSTOMERS):
            assert proc.poll() is None, tail()
            assert loop.time() < deadline, f"{await count()} events\n" + tail()
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything still in flight would show up as a duplicate now
        stored = [r["event_id"] for r in await store.fetch("SELECT event_id FROM events WHERE source = 'shop'")]
        assert sorted(stored) == sorted(e.event_id for e in events)
        assert await store.fetchval("SELECT count(*) FROM messages") == CUSTOMERS
        assert len(list((tmp_path / "outbox").glob("*.json"))) == CUSTOMERS
        text = log.read_text(errors="replace")
        assert "worker resolver exited with SIGKILL" in text
        assert "[worker=resolver stage=resolver" in text  # each worker's lines say which worker wrote them

        children = supervisor.children()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, tail()
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if proc.poll() is None:
            for child in supervisor.children():
                child.kill()
            proc.kill()
        await bus.stop()
