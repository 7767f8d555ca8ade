"""Migrations on real PostgreSQL, the embedded PostgreSQL, and the Greenplum dialect's DDL."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from cdp_hub.store import Store, apply_migrations, load_migrations, render_sql


async def test_migrations_are_recorded_and_idempotent(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        # The per-test database comes migrated; applying again changes nothing.
        assert await apply_migrations(conn) == []
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in load_migrations()]
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        assert {"profiles", "identities", "events", "messages", "connector_state", "dead_letters"} <= tables
    finally:
        await conn.close()


async def test_fresh_database_migrates_from_zero(pg_server: str) -> None:
    import uuid

    name = f"z_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = pg_server.rsplit("/", 1)[0] + "/" + name
        async with Store(dsn) as store:
            first = await store.migrate()
            assert [m.version for m in first] == [m.version for m in load_migrations()]
            assert await store.migrate() == []
            # Events are partitioned by time and replays are no-ops.
            await store.execute(
                """INSERT INTO events (event_id, occurred_at, type, source, received_at, body)
                   VALUES (gen_random_uuid(), '2026-05-01', 'order.placed', 's', now(), '{}')""")
            part = await store.fetchval("SELECT tableoid::regclass::text FROM events")
            assert part == "events_y2026"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def test_embedded_postgres_works() -> None:
    import asyncio
    import shutil
    import tempfile

    # As root, pgserver runs PostgreSQL as its own user, which must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="cdp-hub-embedded-"))
    folder.chmod(0o755)

    async def go() -> int:
        async with Store("embedded", data_dir=folder) as store:
            await store.migrate()
            return int(await store.fetchval("SELECT count(*) FROM schema_migrations"))

    try:
        assert asyncio.run(go()) == len(load_migrations())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*?)\n\)\s*(.*?);", re.S)


def _greenplum_tables() -> list[tuple[str, str, str]]:
    out = []
    for mig in load_migrations():
        sql = render_sql(mig.sql, "greenplum")
        out.extend((m.group(1), m.group(2), m.group(3)) for m in _CREATE.finditer(sql))
    return out


def test_greenplum_ddl_distributes_every_table_and_keys_include_the_distribution_key() -> None:
    tables = _greenplum_tables()
    assert len(tables) >= 8
    for name, body, tail in tables:
        dist = re.search(r"DISTRIBUTED BY \(([^)]*)\)", tail)
        assert dist, f"{name}: no DISTRIBUTED BY in the Greenplum DDL"
        dist_cols = {c.strip() for c in dist.group(1).split(",")}
        for key in re.findall(r"(?:PRIMARY KEY|UNIQUE)\s*\(([^)]*)\)", body):
            cols = {c.strip() for c in key.split(",")}
            assert dist_cols <= cols, f"{name}: unique key ({key}) lacks distribution key {dist_cols}"


def test_postgres_ddl_has_no_greenplum_clauses() -> None:
    for mig in load_migrations():
        sql = render_sql(mig.sql, "postgres")
        assert "DISTRIBUTED BY" not in sql
        assert "appendoptimized" not in sql


def test_events_table_is_append_optimized_columnar_on_greenplum() -> None:
    events = [t for t in _greenplum_tables() if t[0] == "events"]
    assert events and "appendoptimized=true" in events[0][2] and "orientation=column" in events[0][2]


@pytest.mark.parametrize("forbidden", ["MERGE INTO", "NULLS NOT DISTINCT", "JSON_TABLE"])
def test_migrations_avoid_syntax_greenplum_7_lacks(forbidden: str) -> None:
    for mig in load_migrations():
        assert forbidden not in mig.sql.upper(), f"{mig.name} uses {forbidden}"
