"""Shared fixtures: the real PostgreSQL, Redis and Kafka started by ``scripts/services.sh up``.

A missing service is a test failure with a hint, never a silent skip. Each test gets its own database
(cloned from a migrated template, so it is fast) and its own Redis key prefix and Kafka topic prefix.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cdp_hub.config import Settings
from cdp_hub.hotstate import HotState
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.store import Store, apply_migrations

PG_DSN = os.environ.get("CDP_HUB_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:15432/cdp_hub")
REDIS_URL = os.environ.get("CDP_HUB_REDIS_URL", "redis://127.0.0.1:16379/0")
KAFKA_BOOTSTRAP = os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
HINT = "start the test services first: eval \"$(scripts/services.sh up)\" (or run `make test`)"
# One template per test session, so concurrent sessions on one server do not trip over each other.
TEMPLATE_DB = f"cdp_hub_tpl_{os.getpid()}"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require(service: str, hostport: str) -> None:
    host, _, port = hostport.rpartition(":")
    if not _reachable(host or "127.0.0.1", int(port)):
        pytest.fail(f"{service} is not reachable at {hostport}: {HINT}", pytrace=False)


def _with_db(dsn: str, db: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + db))


@pytest.fixture(scope="session")
def pg_server() -> str:
    require("PostgreSQL", urlsplit(PG_DSN).netloc.rpartition("@")[2])
    return PG_DSN


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    """A database with every migration applied, cloned by each test (once per session, per worker)."""

    async def build() -> None:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(_with_db(pg_server, TEMPLATE_DB))
        try:
            await apply_migrations(conn, "postgres")
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(build())
    yield TEMPLATE_DB
    asyncio.run(drop())


@pytest.fixture
async def pg_dsn(pg_server: str, pg_template: str) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database of this test's own; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await admin.close()
    yield _with_db(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[Store]:
    s = Store(pg_dsn, pool_size=5)
    await s.start()
    await s.migrate()
    yield s
    await s.stop()


@pytest.fixture
def redis_url() -> str:
    require("Redis", urlsplit(REDIS_URL).netloc)
    return REDIS_URL


def _test_hotstate(redis_url: str) -> HotState:
    """Real Redis under a key prefix of this test's own."""
    return HotState(redis_url, prefix=f"t{uuid.uuid4().hex[:10]}:")


async def _drop_keys(hs: HotState) -> None:
    keys = [k async for k in hs.redis.scan_iter(match=hs.prefix + "*")]
    if keys:
        await hs.redis.delete(*keys)


@pytest.fixture
async def hotstate(redis_url: str) -> AsyncIterator[HotState]:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    hs = HotState(redis_url, prefix=prefix)
    await hs.start()
    yield hs
    keys = [k async for k in hs.redis.scan_iter(match=prefix + "*")]
    if keys:
        await hs.redis.delete(*keys)
    await hs.stop()


@pytest.fixture
def kafka_bootstrap() -> str:
    require("Kafka", KAFKA_BOOTSTRAP)
    return KAFKA_BOOTSTRAP


_TOPIC_PREFIXES: set[str] = set()
"""The Kafka topic prefixes this test process handed out: their topics are deleted when it ends."""


def topic_prefix(kind: str = "t") -> str:
    """A Kafka topic prefix of one test's own (``<kind><hex>.``). Its topics are deleted when this test process
    ends (each xdist worker deletes its own, so a second session on the same broker keeps its topics): a
    long-lived development broker otherwise collects tens of thousands of partitions over repeated runs, and
    then takes minutes to load them when it restarts."""
    prefix = f"{kind}{uuid.uuid4().hex[:8]}."
    _TOPIC_PREFIXES.add(prefix)
    return prefix


async def _delete_topics(bootstrap: str, prefixes: tuple[str, ...]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        for i in range(0, len(mine), 200):
            await admin.delete_topics(mine[i:i + 200], timeout_ms=30_000)
    finally:
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
def _topics_deleted_at_the_end() -> Iterator[None]:
    yield
    host, _, port = KAFKA_BOOTSTRAP.rpartition(":")
    if not _TOPIC_PREFIXES or not _reachable(host, int(port)):
        return
    import threading

    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_delete_topics(KAFKA_BOOTSTRAP, tuple(_TOPIC_PREFIXES)))
        except Exception as exc:  # cleaning up must not fail a green session; say so instead
            failure.append(exc)

    worker = threading.Thread(target=run)  # a loop of its own, whatever pytest-asyncio left running
    worker.start()
    worker.join(120)
    if failure:
        print(f"\nnote: the test topics were not all deleted: {failure[0]!r}")


def hub_settings(tmp_path: Path, *, bus: str = "memory", pg_dsn: str, redis_url: str,
                 kafka_bootstrap: str | None = None, **extra: object) -> Settings:
    """Settings for a test hub on the real services; Kafka topics get a per-test prefix."""
    values: dict[str, object] = {
        "bus": bus,
        "postgres_dsn": pg_dsn,
        "redis_url": redis_url,
        "data_dir": tmp_path / "data",
        "poll_timeout_ms": 50,
        "topic_partitions": 4,
    }
    if bus == "kafka":
        values["kafka_bootstrap"] = kafka_bootstrap
        values["topic_prefix"] = topic_prefix()
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "kafka"])
def bus_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def hub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    """A started hub on the in-process bus, real PostgreSQL and real Redis."""
    h = Hub(hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url), metrics=Metrics(),
            hotstate=_test_hotstate(redis_url))
    await h.start()
    yield h
    await _drop_keys(h.hotstate)
    await h.stop()


@pytest.fixture
async def kafka_hub(tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str) -> AsyncIterator[Hub]:
    """A started hub on the real Kafka broker, real PostgreSQL and real Redis."""
    h = Hub(hub_settings(tmp_path, bus="kafka", pg_dsn=pg_dsn, redis_url=redis_url,
                         kafka_bootstrap=kafka_bootstrap), metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await h.start()
    yield h
    await _drop_keys(h.hotstate)
    await h.stop()


@pytest.fixture
def repo_root() -> Iterator[Path]:
    yield Path(__file__).resolve().parent.parent
