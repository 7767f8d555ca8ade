"""Faults mid-stream: Kafka, PostgreSQL and Redis restarted or lost, providers hanging or failing, SIGTERM.

One `cdp-hub run` (all stages and the HTTP edge) runs against a *private* Kafka, PostgreSQL and Redis that
this module starts with ``scripts/services.sh`` on their own ports and state folder, so restarting them never
hits another test. Channels are real plugins against local servers: e-mail over SMTP (aiosmtpd), SMS over an
HTTP gateway (a local server that counts what it accepted, by Idempotency-Key).

Every case sends a wave of new customers: half before the fault, half during it (the tracking API, honouring
503 + Retry-After like the SDKs), and their orders through a connector file import (``cdp-hub ingest-file``,
re-run on failure like a scheduled job). Scenarios: a welcome e-mail per new profile (once per profile), an
order SMS, a follow-up SMS 15 s after the order (a durable timer that comes due during the fault), and the
built-in order confirmation e-mail.

After each case the test waits until every consumer group's lag is 0 and the counts are reached, then checks
the whole run so far: every accepted event stored exactly once, one profile per customer holding exactly that
customer's identities, every message sent exactly once (the SMTP server's and the gateway's own counts),
``/readyz`` failing during an infrastructure outage and ready after it without a restart, and the outage named
by one ERROR line of the outage board.

Marked ``faults`` (and ``slow``): ``make test`` runs this module as a second pytest process next to the rest
of the suite (most of its time is spent waiting for outages); alone: ``make test-faults`` or
``pytest -m faults tests/test_faults.py``. The figures (outage, recovery, counts) are printed and appended to
``$CDP_HUB_FAULTS_REPORT`` when that is set.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from cdp_hub.outages import FLAP_SECONDS

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services.sh"
TRACKING_KEY = "faults-write-key"
WAVE = int(os.environ.get("CDP_HUB_FAULTS_WAVE", "40"))  # new customers per case
OUTAGE = float(os.environ.get("CDP_HUB_FAULTS_OUTAGE", "20"))  # seconds a service is down or refusing
PROVIDER_OUTAGE = float(os.environ.get("CDP_HUB_FAULTS_PROVIDER_OUTAGE", "60"))  # hang / HTTP 500 seconds
FOLLOW_UP_DELAY = 15  # seconds from an order to its follow-up SMS (a durable timer)
RECOVERY_TIMEOUT = 240.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the private services -------------------------------------------------------------------------------


@dataclass
class Services:
    env: dict[str, str]
    kafka: str
    pg_dsn: str
    redis_url: str

    def run(self, *args: str, wait: bool = True) -> subprocess.Popen[bytes] | None:
        cmd = ["bash", str(SERVICES), *args]
        if not wait:
            return subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = subprocess.run(cmd, env=self.env, capture_output=True, timeout=180)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
        return None


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    state = Path(os.environ.get("CDP_HUB_FAULTS_SERVICES_DIR", "/tmp/cdp-hub-faults-services"))
    # Two drill runs on one machine (two checkouts, two people) would stop and kill each other's services:
    # the second waits for the first.
    lock = (state.parent / f"{state.name}.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another fault drill run holds {lock.name}; waiting for it", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield from _services(state, tmp_path_factory)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _services(state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    ports = {"CDP_HUB_KAFKA_PORT": "29092", "CDP_HUB_KAFKA_CONTROLLER_PORT": "29093",
             "CDP_HUB_POSTGRES_PORT": "25432", "CDP_HUB_REDIS_PORT": "26379"}
    env = {**os.environ, "CDP_HUB_SERVICES_DIR": str(state),
           **{k: os.environ.get(k.replace("CDP_HUB_", "CDP_HUB_FAULTS_"), v) for k, v in ports.items()}}
    up = subprocess.run(["bash", str(SERVICES), "up"], env=env, capture_output=True, timeout=300)
    assert up.returncode == 0, up.stderr.decode(errors="replace")[-3000:]
    exports = dict(re.findall(r"export (\w+)=(\S+)", up.stdout.decode()))
    # A database of this run's own, and an empty Redis: the state folder may hold an earlier run's data.
    admin_dsn = exports["CDP_HUB_POSTGRES_DSN"].rsplit("/", 1)[0] + "/postgres"
    database = f"faults_{os.getpid()}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(create())
    svc = Services(env, exports["CDP_HUB_KAFKA_BOOTSTRAP"], admin_dsn.rsplit("/", 1)[0] + "/" + database,
                   exports["CDP_HUB_REDIS_URL"])
    svc.run("flush", "redis")
    try:
        yield svc
    finally:
        subprocess.run(["bash", str(SERVICES), "down"], env=env, capture_output=True, timeout=180)


# -- the providers ---------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """Counts accepted mail by the hub's message id; ``hang`` holds DATA without an answer."""

    received: dict[str, int] = field(default_factory=dict)
    by_recipient: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        mid = str(msg["X-CDP-Message-Id"])
        with self.lock:
            self.received[mid] = self.received.get(mid, 0) + 1
            for rcpt in envelope.rcpt_tos:
                self.by_recipient.setdefault(rcpt, []).append(mid)
        return "250 OK"


class SmsGateway:
    """A local SMS gateway: ``mode`` ok | hang (no answer until the hang ends, then the connection is
    dropped) | error (HTTP 500). Counts what it accepted, once per Idempotency-Key like real gateways."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.accepted: dict[str, int] = {}  # client_ref (message id) -> accepted answers sent
        self.requests = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with gateway.lock:
                    gateway.requests += 1
                    mode = gateway.mode
                if mode == "hang":
                    gateway.released.wait(PROVIDER_OUTAGE + 30)
                    self.close_connection = True
                    return
                if mode == "error":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ref = body["client_ref"]
                with gateway.lock:
                    gateway.accepted[ref] = gateway.accepted.get(ref, 0) + 1
                    n = sum(gateway.accepted.values())
                answer = json.dumps({"id": f"g-{n}", "segments": 1}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # the hub opens up to max_concurrency connections at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_mode(self, mode: str) -> None:
        with self.lock:
            self.mode = mode
        if mode == "hang":
            self.released.clear()
        else:
            self.released.set()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()


# -- the hub and its world -------------------------------------------------------------------------------


SCENARIOS = {
    "welcome.yaml": "id: welcome\ntrigger: {event: profile.created}\nchannel: email\ntemplate: welcome\n"
                    "once_per_profile: true\n",
    "order_sms.yaml": "id: order_sms\ntrigger: {event: order.paid}\nchannel: sms\ntemplate: order_confirmation\n"
                      "category: transactional\n",
    "follow_up.yaml": f"id: follow_up\ntrigger: {{event: order.paid}}\ndelay: {FOLLOW_UP_DELAY}s\nchannel: sms\n"
                      "template: order_confirmation\ncategory: transactional\n",
}


@dataclass
class Customer:
    n: int

    @property
    def email(self) -> str:
        return f"fault{self.n}@example.ru"

    @property
    def phone(self) -> str:
        # Subscriber numbers from 100-00-00 up: customer 0 as +7916 000-00-00 would be a placeholder number
        # the resolver refuses to link (the built-in junk list), and never get an SMS.
        return f"+7916{1_000_000 + self.n:07d}"

    @property
    def user_id(self) -> str:
        return f"c{self.n}"

    def tracking(self, now: str) -> list[dict[str, Any]]:
        return [
            {"type": "identify", "messageId": f"id-{self.n}", "userId": self.user_id, "timestamp": now,
             "anonymousId": f"anon-{self.n}", "traits": {"email": self.email, "first_name": "Анна"}},
            {"type": "track", "messageId": f"pv-{self.n}", "userId": self.user_id, "timestamp": now,
             "event": "Product Viewed", "properties": {"sku": f"sku-{self.n % 7}"}},
        ]

    def order(self, now: str) -> dict[str, Any]:
        return {"id": 900000 + self.n, "name": f"#{900000 + self.n}", "email": self.email, "phone": self.phone,
                "customer": {"id": self.user_id, "email": self.email, "phone": self.phone},
                "created_at": now, "updated_at": now, "financial_status": "paid", "currency": "RUB",
                "total_price": "1990.00",
                "line_items": [{"sku": "sku-1", "title": "Кроссовки", "quantity": 1, "price": "1990.00"}]}


@dataclass
class Figures:
    case: str
    outage: float = 0.0
    recovery: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    not_ready_seconds: float = 0.0
    error_lines: int = 0

    def line(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return (f"{self.case}: outage {self.outage:.1f}s, recovery (lag 0) {self.recovery:.1f}s after it, "
                f"/readyz 503 for {self.not_ready_seconds:.1f}s, {self.error_lines} ERROR line(s); {counts}")


class World:
    """The running hub, its providers, and what the test sent so far."""

    def __init__(self, services: Services, tmp: Path) -> None:
        self.services = services
        self.tmp = tmp
        self.prefix = f"faults{os.getpid()}."
        self.smtp = SmtpSink()
        self.smtp_controller = Controller(self.smtp, hostname="127.0.0.1", port=_free_port())
        self.smtp_controller.start()
        self.sms = SmsGateway()
        self.http_port = _free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.log = tmp / "hub.log"
        self.customers: list[Customer] = []
        self.tracking_accepted: set[str] = set()
        self.orders_imported: set[int] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self._write_config()
        self.client = httpx.Client(timeout=30)

    def _write_config(self) -> Path:
        scenarios = self.tmp / "scenarios"
        scenarios.mkdir()
        for name, text in SCENARIOS.items():
            (scenarios / name).write_text(text, encoding="utf-8")
        cfg = self.tmp / "cdp-hub.toml"
        cfg.write_text(f"""
bus = "kafka"
kafka_bootstrap = "{self.services.kafka}"
topic_prefix = "{self.prefix}"
postgres_dsn = "{self.services.pg_dsn}"
redis_url = "{self.services.redis_url}"
data_dir = "{self.tmp / 'data'}"
scenarios_dir = "{scenarios}"
http_port = {self.http_port}
poll_timeout_ms = 100
batch_size = 100
log_format = "json"
edge_publish_timeout = 5.0
edge_retry_after = 2.0
shutdown_grace_seconds = 20.0
delivery_send_timeout = 5.0
delivery_retry_attempts = 2
delivery_retry_backoff = 0.2
delivery_retry_max_wait = 2.0
delivery_circuit_failures = 3
delivery_circuit_reset = 5.0

consent_policy = "opt_out"   # the cases test faults, not consent: every customer may be written to
allowed_lateness = "2s"      # the follow-up timer fires 15 s after its order, not a minute later (the default
                             # waits a minute for late cancelling events; these cases have none)

[connectors.shop]
type = "ecommerce"

[connectors.tracking]
type = "tracking"
config = {{ write_keys = ["{TRACKING_KEY}"], trust = "trusted" }}

[channels.email]
type = "smtp"
config = {{ host = "127.0.0.1", port = {self.smtp_controller.port}, start_tls = false, sender = "shop@example.ru", timeout = 10.0 }}

[channels.sms]
type = "sms_http"
config = {{ base_url = "http://127.0.0.1:{self.sms.port}", api_key = "test-key", sender = "SHOP" }}
""", encoding="utf-8")
        return cfg

    # -- the hub process ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        # The config file says everything; CDP_HUB_* variables of the test run would override it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
        return {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdp_hub.cli", "--config", str(self.config), "--log-level", "INFO", "run"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=self.env(), cwd=ROOT)
        self.wait_for(lambda: self.ready() == 200, 120, "the hub to become ready")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"the hub exited\n{self.tail()}"

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        started = time.monotonic()
        while not check():
            self.alive()
            assert time.monotonic() - started < timeout, f"timed out waiting for {what}\n{self.tail()}"
            time.sleep(0.5)
        return time.monotonic() - started

    def ready(self) -> int:
        try:
            return self.client.get(self.base + "/readyz", timeout=10).status_code
        except httpx.HTTPError:
            return 0

    # -- traffic ---------------------------------------------------------------------------------------

    def new_customers(self, count: int) -> list[Customer]:
        start = len(self.customers)
        fresh = [Customer(start + i) for i in range(count)]
        self.customers.extend(fresh)
        return fresh

    def send_tracking(self, customers: list[Customer], deadline: float = 180.0) -> int:
        """Each message until the edge accepts it (503: wait Retry-After, as the SDKs do); the 503s seen."""
        refused = 0
        now = datetime.now(UTC).isoformat()
        started = time.monotonic()
        for customer in customers:
            for message in customer.tracking(now):
                while True:
                    assert time.monotonic() - started < deadline, f"tracking never accepted\n{self.tail()}"
                    try:
                        r = self.client.post(f"{self.base}/v1/{message['type']}", json=message,
                                             auth=(TRACKING_KEY, ""))
                    except httpx.HTTPError:
                        time.sleep(1)
                        continue
                    if r.status_code == 503:
                        refused += 1
                        assert r.headers.get("Retry-After"), r.text
                        time.sleep(float(r.headers["Retry-After"]))
                        continue
                    assert r.status_code == 200, r.text
                    self.tracking_accepted.add(message["messageId"])
                    break
        return refused

    def import_orders(self, customers: list[Customer], deadline: float = 180.0) -> None:
        """The orders through the connector's file import, re-run until it succeeds (a scheduled job)."""
        now = datetime.now(UTC).isoformat()
        path = self.tmp / f"orders-{customers[0].n}.jsonl"
        path.write_text("".join(json.dumps(c.order(now), ensure_ascii=False) + "\n" for c in customers),
                        encoding="utf-8")
        started = time.monotonic()
        while True:
            done = subprocess.run(
                [sys.executable, "-m", "cdp_hub.cli", "--config", str(self.config), "ingest-file", "shop",
                 str(path), "--stream", "orders"], env=self.env(), cwd=ROOT, capture_output=True, timeout=120)
            if done.returncode == 0:
                self.orders_imported.update(900000 + c.n for c in customers)
                return
            assert time.monotonic() - started < deadline, done.stderr.decode(errors="replace")[-2000:]
            time.sleep(3)

    def wait_resolved(self, customers: list[Customer]) -> None:
        """Until the customers' profiles exist: a shop order comes after the sign-up that created the profile
        (an order racing its own sign-up through other partitions creates a second profile, merged later,
        with a welcome of its own: that is not what this module tests)."""
        emails = [c.email for c in customers]

        def resolved() -> bool:
            rows = self.query("SELECT count(*) AS n FROM identities WHERE kind = 'email' AND value = ANY($1)",
                              emails)
            return int(rows[0]["n"]) == len(emails)

        self.wait_for(resolved, RECOVERY_TIMEOUT, "the sign-ups to be resolved")

    # -- what happened ------------------------------------------------------------------------------

    def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.services.pg_dsn)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def lag(self) -> int | None:
        """The summed consumer lag from /metrics (None when the hub does not answer)."""
        try:
            text = self.client.get(self.base + "/metrics", timeout=10).text
        except httpx.HTTPError:
            return None
        values = [float(v) for v in re.findall(r'^cdp_consumer_lag\{[^}]*topic="' + re.escape(self.prefix)
                                               + r'[^"]*"[^}]*\} (\S+)$', text, re.M)]
        return int(sum(values)) if values else None

    def settled(self) -> bool:
        n = len(self.customers)
        sms = sum(1 for v in self.sms.accepted.values() if v)
        mails = len(self.smtp.received)
        if sms < 2 * n or mails < 2 * n:
            return False
        lag = self.lag()
        return lag == 0

    def check(self, figures: Figures) -> None:
        """Everything so far: events once, profiles right, every message once."""
        customers = self.customers
        rows = self.query("SELECT source, source_record_id, type, count(*) AS n FROM events "
                          "WHERE source IN ('tracking', 'shop') GROUP BY 1, 2, 3")
        stored = {(r["source"], r["source_record_id"], r["type"]): r["n"] for r in rows}
        assert all(n == 1 for n in stored.values()), [k for k, n in stored.items() if n != 1][:10]
        tracking = {rid for (src, rid, _) in stored if src == "tracking"}
        assert tracking == self.tracking_accepted, sorted(self.tracking_accepted ^ tracking)[:10]
        shop_orders = {int(rid) for (src, rid, _) in stored if src == "shop"}
        assert shop_orders == self.orders_imported
        events = self.query("SELECT type, count(*) AS n FROM events WHERE source IN ('tracking', 'shop') "
                            "GROUP BY 1")
        by_type = {r["type"]: r["n"] for r in events}
        assert by_type.get("order.paid") == len(customers), by_type
        assert by_type.get("product.viewed") == len(customers), by_type

        # Profiles: every customer's identities in one live profile, none shared with another customer.
        idents = self.query(
            """SELECT i.kind, i.value, COALESCE(p.merged_into, p.profile_id) AS pid
               FROM identities i JOIN profiles p USING (profile_id)""")
        owner = {(r["kind"], r["value"]): r["pid"] for r in idents}
        seen: dict[Any, int] = {}
        for c in customers:
            pids = {owner.get(("email", c.email)), owner.get(("phone", c.phone)),
                    owner.get(("ecom_customer_id", c.user_id)), owner.get(("anonymous_id", f"anon-{c.n}"))}
            assert len(pids) == 1 and None not in pids, (c, pids)
            pid = pids.pop()
            assert seen.setdefault(pid, c.n) == c.n, f"customers {seen[pid]} and {c.n} share profile {pid}"
        live = self.query("SELECT count(*) AS n FROM profiles WHERE merged_into IS NULL")[0]["n"]
        assert live == len(customers)

        # Messages: two e-mails per customer (welcome, order confirmation) and two SMS (order, follow-up),
        # each sent once.
        with self.smtp.lock:
            assert all(v == 1 for v in self.smtp.received.values()), {
                k: v for k, v in self.smtp.received.items() if v != 1}
            per_person = {rcpt: len(set(mids)) for rcpt, mids in self.smtp.by_recipient.items()}
        assert per_person == {c.email: 2 for c in customers}, {
            k: v for k, v in per_person.items() if v != 2}
        with self.sms.lock:
            accepted = dict(self.sms.accepted)
        assert all(v == 1 for v in accepted.values()), {k: v for k, v in accepted.items() if v != 1}
        assert len(accepted) == 2 * len(customers)
        sent = self.query("SELECT scenario, count(*) AS n FROM messages WHERE status IN ('sent', 'delivered') "
                          "GROUP BY 1")
        assert {r["scenario"]: r["n"] for r in sent} == {
            "welcome": len(customers), "order_confirmation": len(customers), "order_sms": len(customers),
            "follow_up": len(customers)}
        dead = self.query("SELECT failure_type, count(*) AS n FROM dead_letters GROUP BY 1")
        assert dead == [], [dict(r) for r in dead]
        figures.counts = {"customers": len(customers), "events": sum(stored.values()),
                          "tracking_accepted": len(self.tracking_accepted), "mails": len(self.smtp.received),
                          "sms": len(accepted), "profiles": live}

    def board_lines(self, since: int, dependency: str | None = None) -> list[dict[str, Any]]:
        """The outage board's lines since ``since`` (a log offset), about ``dependency`` or about any."""
        return [entry for entry in self.log_entries(since) if entry.get("logger") == "cdp_hub.outages"
                and (dependency is None or str(entry.get("message", "")).startswith(f"{dependency} "))]

    def board_named(self, since: int) -> set[str]:
        """The dependencies the outage board has spoken of since ``since``."""
        return {str(entry.get("message", "")).split(" ", 1)[0] for entry in self.board_lines(since)}

    def board_quiet_for(self, dependency: str) -> float:
        """Seconds since the outage board's last line about ``dependency`` (infinite when it never spoke)."""
        lines = self.board_lines(0, dependency)
        if not lines:
            return float("inf")
        said = datetime.fromisoformat(str(lines[-1]["time"]).replace("Z", "+00:00"))
        return (datetime.now(UTC) - said).total_seconds()

    def outage_open(self, dependency: str, since: int) -> bool:
        """Whether the outage board's last word on ``dependency`` since ``since`` is that it is down."""
        lines = self.board_lines(since, dependency)
        return bool(lines) and " is back " not in str(lines[-1].get("message", ""))

    def log_entries(self, since: int) -> list[dict[str, Any]]:
        entries = []
        with self.log.open("rb") as fh:
            fh.seek(since)
            for raw in fh:
                try:
                    entries.append(json.loads(raw))
                except ValueError:
                    continue
        return entries

    def error_lines(self, since: int) -> list[dict[str, Any]]:
        return [entry for entry in self.log_entries(since) if entry.get("level") in ("ERROR", "CRITICAL")]


@pytest.fixture(scope="module")
def world(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(services, tmp_path_factory.mktemp("faults"))
    w.start()
    try:
        yield w
    finally:
        w.stop()
        w.sms.stop()
        w.smtp_controller.stop()
        w.client.close()
        report = os.environ.get("CDP_HUB_FAULTS_REPORT")
        if report:
            with open(report, "a", encoding="utf-8") as fh:
                fh.writelines(f.line() + "\n" for f in FIGURES)


FIGURES: list[Figures] = []


class ReadyProbe:
    """Samples /readyz every half second in a thread while a case runs."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.samples: list[tuple[float, int, str]] = []  # (when, status, why not ready)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = httpx.Client(timeout=5)
        try:
            while not self._stop.is_set():
                try:
                    r = client.get(self.world.base + "/readyz")
                    status = r.status_code
                    why = "" if status == 200 else "; ".join(
                        f"{k}: {v}" for k, v in r.json().get("checks", {}).items() if v != "ok")
                except (httpx.HTTPError, ValueError) as exc:
                    status, why = 0, f"no answer: {type(exc).__name__}"
                self.samples.append((time.monotonic(), status, why))
                self._stop.wait(0.5)
        finally:
            client.close()

    def __enter__(self) -> ReadyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def not_ready_between(self, start: float, end: float) -> float:
        bad = [t for t, s, _ in self.samples if start <= t <= end and s != 200]
        return (max(bad) - min(bad) + 0.5) if bad else 0.0

    def reasons_between(self, start: float, end: float) -> list[str]:
        return [why for t, s, why in self.samples if start <= t <= end and s != 200]


def run_case(world: World, name: str, fault: Callable[[World], None], *, readiness_fails: bool,
             dependency: str | None) -> Figures:
    """Half a wave, the fault (with the other half sent while it lasts), then recovery and the checks."""
    world.alive()
    if dependency is not None:
        # The outage board takes a dependency failing again within FLAP_SECONDS of its recovery for the same
        # outage (no second ERROR line for one that flaps): this case's outage must be a new one. The board's
        # last word on the dependency (from any earlier case: a PostgreSQL restart, a stale connection found
        # late) must be that many seconds old. The wait comes before the first half, whose follow-up timers
        # must come due during the fault.
        while (quiet := world.board_quiet_for(dependency)) < FLAP_SECONDS:
            time.sleep(FLAP_SECONDS - quiet + 0.5)
    figures = Figures(name)
    log_start = world.log.stat().st_size
    before, during = world.new_customers(WAVE // 2), world.new_customers(WAVE - WAVE // 2)
    with ReadyProbe(world) as probe:
        world.send_tracking(before)
        world.wait_resolved(before)
        world.import_orders(before)
        sender = threading.Thread(target=lambda: (time.sleep(1), world.send_tracking(during, deadline=300)))
        fault_started = time.monotonic()
        sender.start()
        fault(world)
        fault_ended = time.monotonic()
        figures.outage = fault_ended - fault_started
        sender.join(300)
        assert not sender.is_alive()
        world.wait_resolved(during)
        world.import_orders(during)
        figures.recovery = world.wait_for(world.settled, RECOVERY_TIMEOUT, f"{name}: lag 0 and every message")
        # An outage is over when the hub says so ("<dependency> is back"), which may be after the work
        # settled (a stage that touches the dependency only now and then): every dependency the board named
        # during this case must be back.
        for named in world.board_named(log_start):
            world.wait_for(lambda named=named: not world.outage_open(named, log_start),
                           RECOVERY_TIMEOUT, f"{name}: the hub saying {named} is back")
        time.sleep(2)  # anything still in flight would show up as a duplicate now
        assert world.ready() == 200, "ready again without a restart"
        figures.not_ready_seconds = probe.not_ready_between(fault_started, fault_ended + figures.recovery)
    world.check(figures)
    errors = world.error_lines(log_start)
    figures.error_lines = len(errors)
    if readiness_fails:
        assert figures.not_ready_seconds > 0, f"{name}: /readyz never failed during the outage"
    elif dependency is not None and dependency.startswith("channel:"):
        # A provider outage never makes the hub unready. A lone probe that took too long on a loaded machine
        # is no such verdict: no answer may name the channel, and none may last as long as the outage did.
        reasons = probe.reasons_between(fault_started, fault_ended + figures.recovery)
        assert not [r for r in reasons if dependency in r or "channel" in r], reasons
        assert figures.not_ready_seconds <= 2.0, f"{name}: a provider outage made the hub unready: {reasons}"
        if reasons:
            print(f"{name}: /readyz not 200 for single probes: {reasons}")
    if dependency is not None:
        named = [e for e in errors if e["logger"] == "cdp_hub.outages" and e["message"].startswith(dependency)]
        assert len(named) == 1, [e["message"] for e in errors]
        assert len(errors) <= 3, [e["message"][:200] for e in errors]  # one per outage, not per record
    FIGURES.append(figures)
    print(figures.line())
    return figures


# -- the cases -------------------------------------------------------------------------------------------


def test_baseline_without_a_fault(world: World) -> None:
    run_case(world, "no fault", lambda w: None, readiness_fails=False, dependency=None)


def test_kafka_stopped_for_20s(world: World) -> None:
    def fault(w: World) -> None:
        w.services.run("stop", "kafka")
        time.sleep(OUTAGE)
        w.services.run("start", "kafka")

    run_case(world, "kafka stopped", fault, readiness_fails=True, dependency="kafka")


def test_kafka_killed_and_restarted(world: World) -> None:
    def fault(w: World) -> None:
        w.services.run("kill", "kafka")
        time.sleep(2)
        w.services.run("start", "kafka")

    run_case(world, "kafka SIGKILL", fault, readiness_fails=True, dependency="kafka")


def test_postgres_restarted(world: World) -> None:
    run_case(world, "postgres restart", lambda w: w.services.run("restart", "postgres"), readiness_fails=False,
             dependency=None)


def test_postgres_refuses_connections_for_20s(world: World) -> None:
    run_case(world, "postgres refusing", lambda w: w.services.run("refuse", "postgres", f"{OUTAGE:g}"),
             readiness_fails=True, dependency="postgres")


def test_redis_flushed(world: World) -> None:
    run_case(world, "redis FLUSHALL", lambda w: w.services.run("flush", "redis"), readiness_fails=False,
             dependency=None)


def test_redis_restarted_without_persistence(world: World) -> None:
    def fault(w: World) -> None:
        w.services.run("stop", "redis")
        time.sleep(5)
        w.services.run("start", "redis")

    run_case(world, "redis restart", fault, readiness_fails=True, dependency="redis")


def test_sms_provider_hangs(world: World) -> None:
    def fault(w: World) -> None:
        w.sms.set_mode("hang")
        time.sleep(PROVIDER_OUTAGE)
        w.sms.set_mode("ok")

    run_case(world, "sms provider hangs", fault, readiness_fails=False, dependency="channel:sms")


def test_sms_provider_answers_500(world: World) -> None:
    def fault(w: World) -> None:
        w.sms.set_mode("error")
        time.sleep(PROVIDER_OUTAGE)
        w.sms.set_mode("ok")

    run_case(world, "sms provider 500", fault, readiness_fails=False, dependency="channel:sms")


def test_sigterm_during_a_busy_batch(world: World) -> None:
    def fault(w: World) -> None:
        # SIGTERM while the wave is being processed: exit 0 within the grace period, then start again.
        time.sleep(1.5)
        assert w.proc is not None
        started = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        code = w.proc.wait(40)
        took = time.monotonic() - started
        assert code == 0, w.tail()
        assert took < 20.0 + 10.0, f"exit took {took:.1f}s (grace 20s)"
        w.start()

    run_case(world, "SIGTERM", fault, readiness_fails=False, dependency=None)
