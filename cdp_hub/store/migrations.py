"""Versioned SQL migrations, one dialect source for PostgreSQL and Greenplum.

Files live in ``cdp_hub/store/migrations/NNNN_name.sql`` and are applied in order, each in its own
transaction, under an advisory lock, recorded in ``schema_migrations``; applying twice is a no-op.

The SQL is PostgreSQL with Greenplum-only clauses in marker comments::

    CREATE TABLE profiles (...) /*gp: DISTRIBUTED BY (profile_id) */;

For ``dialect="greenplum"`` the marker becomes the clause; for PostgreSQL it stays a comment. A
``/*pg: ... */`` marker works the other way round (PostgreSQL-only SQL).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg

__all__ = ["Migration", "apply_migrations", "load_migrations", "render_sql"]

Dialect = Literal["postgres", "greenplum"]
_GP = re.compile(r"/\*gp:(.*?)\*/", re.S)
_PG = re.compile(r"/\*pg:(.*?)\*/", re.S)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x0CD9_0001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def render_sql(sql: str, dialect: Dialect) -> str:
    if dialect == "greenplum":
        return _PG.sub("", _GP.sub(lambda m: m.group(1).strip(), sql))
    return _GP.sub("", _PG.sub(lambda m: m.group(1).strip(), sql))


def load_migrations() -> list[Migration]:
    out = []
    folder = resources.files("cdp_hub.store") / "migrations"
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return out


async def apply_migrations(conn: asyncpg.Connection, dialect: Dialect = "postgres") -> list[Migration]:
    """Apply the pending migrations; return the ones applied now."""
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now()
           )""" + (" DISTRIBUTED BY (version)" if dialect == "greenplum" else "")
    )
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in load_migrations():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(render_sql(mig.sql, dialect))
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version, mig.name, mig.checksum,
                )
            applied_now.append(mig)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
