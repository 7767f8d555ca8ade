"""asyncpg pool with a lifecycle, plus the embedded PostgreSQL (pgserver) for the zero-install default."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg

from cdp_hub.errors import ConfigurationError
from cdp_hub.lifecycle import AsyncLifecycle
from cdp_hub.store.migrations import Dialect, Migration, apply_migrations

__all__ = ["Store", "embedded_dsn", "open_store"]


def embedded_dsn(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir/pg`` and return its DSN."""
    try:
        import pgserver
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "postgres_dsn='embedded' needs the embedded extra: pip install 'cdp-hub[embedded]'"
        ) from None
    path = (data_dir / "pg").resolve()
    path.mkdir(parents=True, exist_ok=True)
    # "stop": the server stops when the last process using it exits; the data stays in data_dir.
    server = pgserver.get_server(str(path), cleanup_mode="stop")  # type: ignore[attr-defined]
    return str(server.get_uri())


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Store(AsyncLifecycle):
    """The database. ``start()`` opens the pool, ``stop()`` closes it; ``migrate()`` applies migrations."""

    def __init__(self, dsn: str, *, dialect: Dialect = "postgres", pool_size: int = 10,
                 data_dir: Path | None = None) -> None:
        self._dsn = dsn
        self.dialect: Dialect = dialect
        self._pool_size = pool_size
        self._data_dir = data_dir or Path(".cdp-hub")
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Store is not started")
        return self._pool

    @property
    def dsn(self) -> str:
        return self._dsn

    async def start(self) -> None:
        if self._pool is not None:
            return
        if self._dsn == "embedded":
            self._dsn = await asyncio.to_thread(embedded_dsn, self._data_dir)
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, init=_init_connection, command_timeout=120
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigurationError(
                f"cannot connect to PostgreSQL ({type(exc).__name__}: {exc}); is it running? "
                "For tests: scripts/services.sh up"
            ) from exc

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate(self) -> list[Migration]:
        async with self.pool.acquire() as conn:
            return await apply_migrations(conn, self.dialect)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self.pool.execute(sql, *args)
        return status


async def open_store(dsn: str, *, dialect: Dialect = "postgres", migrate: bool = True, **kw: Any) -> Store:
    store = Store(dsn, dialect=dialect, **kw)
    await store.start()
    if migrate:
        await store.migrate()
    return store
